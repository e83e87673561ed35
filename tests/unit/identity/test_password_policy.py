"""Password rules (NIST SP 800-63B length, username, common list, NFKC) and the breach check.

The breach check only ever talks to a tiny HTTP server of our own on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from app.errors import InvalidInput
from app.identity.password_policy import (
    BreachedPasswordChecker,
    common_passwords,
    normalize_password,
    password_problems,
    validate_new_password,
)
from app.settings import PasswordSettings

DEFAULTS = PasswordSettings()
STRONG_PATTERN = "zq7Kx!mB-vR2"


def full_width(text: str) -> str:
    """The full-width (U+FF01-U+FF5E) form of printable ASCII, as an East Asian keyboard types it."""
    return "".join(chr(ord(ch) + 0xFEE0) if "!" <= ch <= "~" else ch for ch in text)


def strong(length: int) -> str:
    """A password of exactly ``length`` characters that breaks no rule but the length ones."""
    return (STRONG_PATTERN * (length // len(STRONG_PATTERN) + 1))[:length]


def sha1_hex(password: str) -> str:
    return hashlib.sha1(password.encode(), usedforsecurity=False).hexdigest().upper()


def messages(problems: list[object]) -> str:
    return " | ".join(str(getattr(p, "message", p)) for p in problems)


# --------------------------------------------------------------------------- length


@pytest.mark.parametrize(("length", "ok"), [(7, False), (8, True), (256, True), (257, False)])
def test_length_boundaries(length: int, ok: bool) -> None:
    problems = password_problems(strong(length), username=None, settings=DEFAULTS)
    assert (problems == []) is ok
    if not ok:
        assert [p.field for p in problems] == ["password"]


def test_length_messages_say_what_is_wrong() -> None:
    [too_short] = password_problems(strong(7), username=None, settings=DEFAULTS)
    [too_long] = password_problems(strong(257), username=None, settings=DEFAULTS)
    assert "8" in too_short.message
    assert "least" in too_short.message
    assert "256" in too_long.message
    assert "most" in too_long.message


def test_length_counts_characters_not_bytes() -> None:
    # Eight characters that are 16+ bytes in UTF-8: long enough.
    assert password_problems("éàüöçñßø", username=None, settings=DEFAULTS) == []
    # Seven of them: too short, however many bytes.
    assert password_problems("éàüöçñß", username=None, settings=DEFAULTS) != []
    # 256 two-byte characters (512 bytes) are still within the limit of 256 characters.
    assert password_problems(("é7ü-Kñ!ß" * 40)[:256], username=None, settings=DEFAULTS) == []


def test_length_limits_come_from_settings() -> None:
    settings = PasswordSettings(min_length=12, max_length=20)
    assert password_problems(strong(11), username=None, settings=settings) != []
    assert password_problems(strong(12), username=None, settings=settings) == []
    assert password_problems(strong(20), username=None, settings=settings) == []
    assert password_problems(strong(21), username=None, settings=settings) != []


# --------------------------------------------------------------------------- username


@pytest.mark.parametrize("password", ["alice-secret-99", "my-ALICE-pass77", "xxAlIcExx-2024", "alice123alice"])
def test_password_containing_the_username_is_refused(password: str) -> None:
    [problem] = password_problems(password, username="Alice", settings=DEFAULTS)
    assert problem.field == "password"
    assert "username" in problem.message


def test_password_equal_to_the_username_is_refused() -> None:
    assert password_problems("longusername", username="LongUserName", settings=DEFAULTS) != []


def test_password_without_the_username_is_fine() -> None:
    assert password_problems(strong(16), username="alice", settings=DEFAULTS) == []
    assert password_problems("alic-e-secret-99", username="alice", settings=DEFAULTS) == []


# --------------------------------------------------------------------------- common list


def test_common_list_is_large() -> None:
    assert len(common_passwords()) >= 10_000


@pytest.mark.parametrize("password", ["password1", "qwerty123", "iloveyou", "trustno1", "baseball1", "1qaz2wsx"])
def test_common_password_is_refused(password: str) -> None:
    assert password in common_passwords()
    [problem] = password_problems(password, username=None, settings=DEFAULTS)
    assert problem.field == "password"
    assert "common" in problem.message


@pytest.mark.parametrize("password", ["PASSWORD1", "Qwerty123", "IloveYou"])
def test_common_list_is_case_insensitive(password: str) -> None:
    assert password_problems(password, username=None, settings=DEFAULTS) != []


def test_uncommon_password_passes() -> None:
    assert strong(12).lower() not in common_passwords()
    assert password_problems(strong(12), username=None, settings=DEFAULTS) == []


# --------------------------------------------------------------------------- normalisation


def test_nfkc_folds_full_width_forms() -> None:
    assert full_width("19") == "\uff11\uff19"
    assert normalize_password(full_width("123456789")) == "123456789"
    assert normalize_password(full_width("password1")) == "password1"


@pytest.mark.anyio
@pytest.mark.parametrize("typed", [full_width("123456789"), full_width("password1"), full_width("qwerty123")])
async def test_full_width_common_password_is_refused(typed: str) -> None:
    assert typed.lower() not in common_passwords()  # only the folded form is listed
    checker = BreachedPasswordChecker(DEFAULTS)
    with pytest.raises(InvalidInput) as caught:
        await validate_new_password(typed, username=None, settings=DEFAULTS, breach_checker=checker)
    assert "common" in caught.value.errors[0].message


@pytest.mark.anyio
async def test_validate_new_password_returns_the_normalised_password() -> None:
    checker = BreachedPasswordChecker(DEFAULTS)
    result = await validate_new_password(
        full_width("zq7Kx!mB-vR2"), username=None, settings=DEFAULTS, breach_checker=checker
    )
    assert result == STRONG_PATTERN


@pytest.mark.anyio
async def test_full_width_username_inside_password_is_refused() -> None:
    checker = BreachedPasswordChecker(DEFAULTS)
    with pytest.raises(InvalidInput):
        await validate_new_password(
            full_width("bobby") + "-secret-77", username="bobby", settings=DEFAULTS, breach_checker=checker
        )


# --------------------------------------------------------------------------- validate_new_password


@pytest.mark.anyio
@pytest.mark.parametrize("field_name", ["password", "new_password"])
@pytest.mark.parametrize("password", ["short", "password1", strong(300), "carol-is-my-name"])
async def test_invalid_input_names_the_field(field_name: str, password: str) -> None:
    checker = BreachedPasswordChecker(DEFAULTS)
    with pytest.raises(InvalidInput) as caught:
        await validate_new_password(
            password, username="carol", settings=DEFAULTS, breach_checker=checker, field=field_name
        )
    assert caught.value.errors
    assert {error.field for error in caught.value.errors} == {field_name}
    assert password not in str(caught.value)
    assert all(password not in error.message for error in caught.value.errors)


@pytest.mark.anyio
async def test_acceptable_password_is_returned() -> None:
    checker = BreachedPasswordChecker(DEFAULTS)
    password = strong(20)
    assert await validate_new_password(password, username="carol", settings=DEFAULTS, breach_checker=checker) == (
        password
    )


# --------------------------------------------------------------------------- breach check server


@dataclass
class RangeServer:
    """A stand-in for the Pwned Passwords range API on 127.0.0.1."""

    base_url: str = ""
    mode: str = "ok"  # "ok", "error" or "hang"
    body: str = ""
    paths: list[str] = field(default_factory=list)
    padding_headers: list[str | None] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def range_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[RangeServer]:
    # httpx honours proxy variables; none of them may route our requests elsewhere.
    for name in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"]:
        monkeypatch.delenv(name, raising=False)
    state = RangeServer()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.paths.append(self.path)
            state.padding_headers.append(self.headers.get("Add-Padding"))
            if state.mode == "hang":
                state.release.wait(10)
                return
            status = 500 if state.mode == "error" else 200
            payload = ("oops" if state.mode == "error" else state.body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            with contextlib.suppress(OSError):
                self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:
            """Quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    state.base_url = f"http://127.0.0.1:{server.server_address[1]}/range/"
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def enabled(server: RangeServer, **overrides: object) -> PasswordSettings:
    return PasswordSettings.model_validate({"pwned_check_enabled": True, "pwned_api_url": server.base_url, **overrides})


BREACHED = "correct horse battery staple"
PADDED = "tr0ub4dor&3-padding-only"
CLEAN = "nobody-ever-used-this-1"


def range_body(prefix: str) -> str:
    lines = [f"{'0' * 30}{i:05X}:{i + 1}" for i in range(3)]  # unrelated suffixes
    for password, count in [(BREACHED, 3861493), (PADDED, 0)]:
        digest = sha1_hex(password)
        if digest[:5] == prefix:
            lines.append(f"{digest[5:]}:{count}")
    return "\r\n".join(lines)


@pytest.mark.anyio
async def test_disabled_check_never_calls_out(range_server: RangeServer) -> None:
    settings = PasswordSettings(pwned_api_url=range_server.base_url)
    assert settings.pwned_check_enabled is False  # the default
    checker = BreachedPasswordChecker(settings)
    try:
        assert await checker.is_breached("password") is False
    finally:
        await checker.aclose()
    assert range_server.paths == []


@pytest.mark.anyio
async def test_only_the_five_character_prefix_leaves_the_host(range_server: RangeServer) -> None:
    digest = sha1_hex(BREACHED)
    range_server.body = range_body(digest[:5])
    checker = BreachedPasswordChecker(enabled(range_server))
    try:
        assert await checker.is_breached(BREACHED) is True
    finally:
        await checker.aclose()

    assert range_server.paths == [f"/range/{digest[:5]}"]
    for path in range_server.paths:
        assert digest not in path.upper()
        assert digest[5:] not in path.upper()
        assert BREACHED.replace(" ", "%20") not in path
    assert range_server.padding_headers == ["true"]


@pytest.mark.anyio
async def test_padding_entry_with_count_zero_is_not_a_breach(range_server: RangeServer) -> None:
    digest = sha1_hex(PADDED)
    range_server.body = range_body(digest[:5])
    assert f"{digest[5:]}:0" in range_server.body
    checker = BreachedPasswordChecker(enabled(range_server))
    try:
        assert await checker.is_breached(PADDED) is False
    finally:
        await checker.aclose()
    assert range_server.paths == [f"/range/{digest[:5]}"]


@pytest.mark.anyio
async def test_unlisted_password_is_not_a_breach(range_server: RangeServer) -> None:
    range_server.body = range_body(sha1_hex(CLEAN)[:5])
    checker = BreachedPasswordChecker(enabled(range_server))
    try:
        assert await checker.is_breached(CLEAN) is False
    finally:
        await checker.aclose()
    assert len(range_server.paths) == 1


@pytest.mark.anyio
async def test_server_error_fails_open(range_server: RangeServer) -> None:
    range_server.mode = "error"
    checker = BreachedPasswordChecker(enabled(range_server))
    try:
        assert await checker.is_breached(BREACHED) is False
    finally:
        await checker.aclose()
    assert len(range_server.paths) == 1


@pytest.mark.anyio
async def test_timeout_fails_open(range_server: RangeServer) -> None:
    range_server.mode = "hang"
    checker = BreachedPasswordChecker(enabled(range_server, pwned_timeout_seconds=0.2))
    try:
        assert await checker.is_breached(BREACHED) is False
    finally:
        range_server.release.set()
        await checker.aclose()
    assert len(range_server.paths) == 1


@pytest.mark.anyio
async def test_breached_password_is_refused_by_validation(range_server: RangeServer) -> None:
    range_server.body = range_body(sha1_hex(BREACHED)[:5])
    settings = enabled(range_server)
    checker = BreachedPasswordChecker(settings)
    try:
        with pytest.raises(InvalidInput) as caught:
            await validate_new_password(
                BREACHED, username=None, settings=settings, breach_checker=checker, field="new_password"
            )
    finally:
        await checker.aclose()
    [error] = caught.value.errors
    assert error.field == "new_password"
    assert "breach" in error.message


@pytest.mark.anyio
async def test_breach_check_is_skipped_for_passwords_the_local_rules_refuse(range_server: RangeServer) -> None:
    settings = enabled(range_server)
    checker = BreachedPasswordChecker(settings)
    try:
        with pytest.raises(InvalidInput):
            await validate_new_password("password1", username=None, settings=settings, breach_checker=checker)
    finally:
        await checker.aclose()
    assert range_server.paths == []
