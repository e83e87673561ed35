# Test cases for the rules in python.yml: `semgrep scan --test .semgrep/` (scripts/scan
# semgrep-test) requires a finding on the line after each `ruleid:` comment and none after
# each `ok:` comment. Deliberately insecure code: never imported, not part of any package,
# and excluded from ruff by .semgrep/ruff.toml.
import asyncio
import os
import pickle
import random
import secrets
import ssl
import subprocess

import httpx
import jwt
import pydantic
import sqlalchemy
import yaml
from litestar import Litestar
from pydantic import SecretStr
from sqlalchemy import text

ALGORITHM = "EdDSA"


def tokens(token: str, key: object) -> None:
    # ruleid: jwt-decode-without-algorithms
    jwt.decode(token, key)
    # ruleid: jwt-decode-without-algorithms
    jwt.decode(token, key, audience="user-service")
    # ok: jwt-decode-without-algorithms
    jwt.decode(token, key, algorithms=[ALGORITHM], audience="user-service")

    # ruleid: jwt-algorithms-include-none
    jwt.decode(token, key, algorithms=["EdDSA", "none"])
    # ruleid: jwt-algorithms-include-none
    jwt.encode({"sub": "x"}, None, algorithm="none")
    # ok: jwt-algorithms-include-none
    jwt.encode({"sub": "x"}, key, algorithm="EdDSA")

    # ruleid: jwt-signature-verification-disabled
    jwt.decode(token, key, algorithms=[ALGORITHM], options={"verify_signature": False})
    # ok: jwt-signature-verification-disabled
    jwt.decode(token, key, algorithms=[ALGORITHM], options={"require": ["exp", "sub"]})


def tls() -> None:
    # ruleid: tls-verification-disabled
    httpx.get("https://example.invalid", verify=False)
    # ruleid: tls-verification-disabled
    httpx.AsyncClient(verify=False)
    # ok: tls-verification-disabled
    httpx.AsyncClient(verify="/etc/ssl/certs/ca-certificates.crt")
    # ruleid: tls-verification-disabled
    context = ssl._create_unverified_context()
    # ruleid: tls-verification-disabled
    context.verify_mode = ssl.CERT_NONE
    # ruleid: tls-verification-disabled
    context.check_hostname = False
    # ok: tls-verification-disabled
    context = ssl.create_default_context()


def processes(name: str) -> None:
    # ruleid: subprocess-with-shell
    subprocess.run(f"pg_dump {name}", shell=True, check=True)
    # ruleid: subprocess-with-shell
    os.system("pg_dump " + name)
    # ruleid: subprocess-with-shell
    asyncio.create_subprocess_shell("pg_dump " + name)
    # ok: subprocess-with-shell
    subprocess.run(["pg_dump", name], check=True)


async def sql(conn: object, name: str, column: str) -> None:
    # ruleid: sql-text-built-from-strings
    text(f"SELECT * FROM users WHERE username = '{name}'")
    # ruleid: sql-text-built-from-strings
    sqlalchemy.text("SELECT * FROM users WHERE username = '" + name + "'")
    # ruleid: sql-text-built-from-strings
    text("SELECT {} FROM users".format(column))
    # ruleid: sql-text-built-from-strings
    text("SELECT * FROM users WHERE username = '%s'" % name)
    # ruleid: sql-text-built-from-strings
    await conn.exec_driver_sql(f"DROP TABLE {name}")
    # ruleid: sql-text-built-from-strings
    await conn.fetch(f"SELECT * FROM users WHERE username = '{name}'")
    # ok: sql-text-built-from-strings
    text("SELECT * FROM users WHERE username = :name").bindparams(name=name)
    # ok: sql-text-built-from-strings
    await conn.fetch("SELECT * FROM users WHERE username = $1", name)


def guard(user_role: str) -> None:
    # ruleid: assert-in-service-code
    assert user_role == "admin", "admins only"
    # ok: assert-in-service-code
    if user_role != "admin":
        raise PermissionError("admins only")


def identifiers() -> str:
    # ruleid: insecure-random-in-service-code
    token = str(random.getrandbits(128))
    # ruleid: insecure-random-in-service-code
    rng = random.Random(42)
    # ok: insecure-random-in-service-code
    token = secrets.token_urlsafe(32)
    return token + str(rng)


# ruleid: hardcoded-private-key
SIGNING_KEY = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEI"
# ok: hardcoded-private-key
PUBLIC_KEY = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA"


def secrets_in_code(settings_class: type, key_file: str) -> None:
    # ruleid: hardcoded-secret-setting
    SecretStr("hunter2-but-longer")
    # ruleid: hardcoded-secret-setting
    pydantic.SecretStr("hunter2-but-longer")
    # ruleid: hardcoded-secret-setting
    settings_class(signing_key="not-a-real-key")
    # ok: hardcoded-secret-setting
    SecretStr("")
    # ok: hardcoded-secret-setting
    SecretStr(os.environ["USER_SERVICE_ADMIN_PASSWORD"])
    # ok: hardcoded-secret-setting
    settings_class(signing_key_file=key_file)


def deserialise(blob: bytes, document: str) -> None:
    # ruleid: unsafe-deserialisation
    pickle.loads(blob)
    # ruleid: unsafe-deserialisation
    yaml.load(document)
    # ruleid: unsafe-deserialisation
    yaml.load(document, Loader=yaml.Loader)
    # ok: unsafe-deserialisation
    yaml.load(document, Loader=yaml.SafeLoader)
    # ok: unsafe-deserialisation
    yaml.safe_load(document)


def application(debug: bool) -> None:
    # ruleid: litestar-debug-enabled
    Litestar(route_handlers=[], debug=True)
    # ok: litestar-debug-enabled
    Litestar(route_handlers=[], debug=debug)
