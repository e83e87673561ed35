"""User service: accounts, argon2 login, JWTs and roles."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("user-service")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
