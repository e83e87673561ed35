"""The account pages' CSRF cookie: Secure wherever the pages are reached over HTTPS, plain
only for development and tests on loopback; scoped to the pages and hidden from scripts."""

from __future__ import annotations

from pydantic import HttpUrl

from app.accounts.pages import CSRF_COOKIE, PAGES_PATH, csrf_config
from app.settings import Environment, MailSettings, Settings


def _settings(environment: Environment, link_base_url: str) -> Settings:
    # model_copy skips validation: production's other requirements (a database, a key) are
    # beside the point here.
    mail = MailSettings(link_base_url=HttpUrl(link_base_url))
    return Settings().model_copy(update={"environment": environment, "mail": mail})


def test_the_cookie_is_secure_in_production_and_behind_https_links() -> None:
    assert csrf_config(_settings(Environment.PRODUCTION, "http://127.0.0.1:8000"), "s").cookie_secure is True
    assert csrf_config(_settings(Environment.DEVELOPMENT, "https://accounts.example.com"), "s").cookie_secure is True


def test_the_cookie_is_plain_on_a_loopback_development_server() -> None:
    assert csrf_config(_settings(Environment.DEVELOPMENT, "http://127.0.0.1:8000"), "s").cookie_secure is False
    assert csrf_config(_settings(Environment.TEST, "http://127.0.0.1:8000"), "s").cookie_secure is False


def test_the_cookie_is_scoped_to_the_pages_strict_and_http_only() -> None:
    config = csrf_config(_settings(Environment.DEVELOPMENT, "http://127.0.0.1:8000"), "the-secret")

    assert (config.cookie_name, config.cookie_path) == (CSRF_COOKIE, PAGES_PATH)
    assert config.cookie_samesite == "strict"
    assert config.cookie_httponly is True
    assert config.secret == "the-secret"
