"""What makes a password acceptable: NIST SP 800-63B length rules, no username inside,
not among the most common passwords, and (optionally) not in a known breach."""

from __future__ import annotations

import hashlib
import logging
import unicodedata
from functools import lru_cache

import httpx
from zxcvbn.frequency_lists import FREQUENCY_LISTS

from app.errors import FieldError, InvalidInput
from app.observability.tracing import propagation_headers
from app.settings import PasswordSettings

logger = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def common_passwords() -> frozenset[str]:
    """The 30,000 most common passwords from zxcvbn's frequency lists (maintained upstream)."""
    return frozenset(word.lower() for word in FREQUENCY_LISTS["passwords"])


def normalize_password(password: str) -> str:
    # NIST SP 800-63B 5.1.1.2: normalise Unicode so the same password typed on two
    # keyboards hashes the same.
    return unicodedata.normalize("NFKC", password)


def password_problems(
    password: str, *, username: str | None, settings: PasswordSettings, field: str = "password"
) -> list[FieldError]:
    """Every rule the (already NFKC-normalised) password breaks, as field errors."""
    problems: list[FieldError] = []
    if len(password) < settings.min_length:
        problems.append(FieldError(field, f"must be at least {settings.min_length} characters"))
    elif len(password) > settings.max_length:
        problems.append(FieldError(field, f"must be at most {settings.max_length} characters"))
    elif username and username.lower() in password.lower():
        problems.append(FieldError(field, "must not contain the username"))
    elif password.lower() in common_passwords():
        problems.append(FieldError(field, "is too common; choose a less predictable password"))
    return problems


class BreachedPasswordChecker:
    """Pwned Passwords range API (k-anonymity: only 5 hex chars of the SHA-1 leave the host).

    Fails open: a slow or unreachable API must not stop people from registering.
    """

    def __init__(self, settings: PasswordSettings) -> None:
        self._enabled = settings.pwned_check_enabled
        self._url = str(settings.pwned_api_url)
        self._client = httpx.AsyncClient(timeout=settings.pwned_timeout_seconds) if self._enabled else None

    async def is_breached(self, password: str) -> bool:
        if self._client is None:
            return False
        digest = hashlib.sha1(password.encode(), usedforsecurity=False).hexdigest().upper()
        prefix, suffix = digest[:5], digest[5:]
        try:
            headers = {"Add-Padding": "true", **propagation_headers()}
            response = await self._client.get(self._url + prefix, headers=headers)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            logger.warning("breached-password check skipped: %s", type(exc).__name__)
            return False
        for line in response.text.splitlines():
            candidate, _, count = line.partition(":")
            if candidate.strip() == suffix and count.strip() not in {"", "0"}:
                return True
        return False

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()


async def validate_new_password(
    password: str,
    *,
    username: str | None,
    settings: PasswordSettings,
    breach_checker: BreachedPasswordChecker,
    field: str = "password",
) -> str:
    """Return the normalised password, or raise InvalidInput naming ``field``."""
    normalized = normalize_password(password)
    problems = password_problems(normalized, username=username, settings=settings, field=field)
    if not problems and await breach_checker.is_breached(normalized):
        problems.append(FieldError(field, "appears in a known data breach; choose another password"))
    if problems:
        raise InvalidInput(errors=problems)
    return normalized
