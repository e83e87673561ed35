"""Normalisation and rules for usernames, emails and names (docs/api.md, "Validation")."""

from __future__ import annotations

import re
import unicodedata

from email_validator import EmailNotValidError, validate_email

from app.errors import FieldError

USERNAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{3,32}$")
FULL_NAME_MAX = 200


def normalize_username(raw: str) -> str:
    # NFKC folds full-width and compatibility forms onto ASCII (full-width "Alice" -> "Alice").
    return unicodedata.normalize("NFKC", raw).strip()


def username_problems(username: str) -> list[FieldError]:
    if not USERNAME_PATTERN.fullmatch(username):
        return [FieldError("username", "must be 3-32 characters of ASCII letters, digits, '_', '.' or '-'")]
    return []


def has_control_characters(text: str) -> bool:
    return any(unicodedata.category(ch) in {"Cc", "Cf"} for ch in text)


def normalize_email(raw: str) -> tuple[str | None, list[FieldError]]:
    """Return the normalised address, or the problem with it. No DNS look-up happens.

    NFKC first, as for usernames, so that a full-width address and its ASCII twin are one
    account (and login by email normalises the same way).
    """
    raw = unicodedata.normalize("NFKC", raw)
    try:
        # strict: RFC 5321 limits too (64 characters before the @), which mail servers enforce.
        result = validate_email(raw.strip(), check_deliverability=False, strict=True)
    except EmailNotValidError as exc:
        return None, [FieldError("email", str(exc))]
    if len(result.normalized) > 320:
        return None, [FieldError("email", "must be at most 320 characters")]
    return result.normalized, []


def email_key(address: str) -> str:
    """The one key an address is known by: unique in the database (``users.email_key``) and
    what registration, login by email and the "same address" test compare.

    NFKC, then full Unicode case folding, computed here rather than by the database's
    lower(), which folds only ASCII under the C collation (CloudNativePG's default, and
    SQLite's only behaviour) and folds "ß" to nothing anywhere. Folding is deliberately
    wider than lower-casing: "boß" and "boss" are one key, as "ÄNNE" and "änne" are. The
    final NFKC is Unicode's NFKC_Casefold: folding can leave a string unnormalised
    ("ǰ" folds to "j" and a combining caron), and a key in normal form is its own key.
    """
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", address).casefold())


def normalize_login_identifier(raw: str) -> str | None:
    """What a login names, in the form the account is found by: the email's key
    (``email_key``) for anything that contains "@" (usernames cannot), else the username
    normalised as registration stored it; None if it cannot name any account (control
    characters, which the database would refuse)."""
    if has_control_characters(raw):
        return None
    if "@" in raw:
        email, _ = normalize_email(raw)
        # An address that no longer passes validation may still be stored (a rule changed
        # since it registered): its key is still worth a look-up.
        return email_key(email if email is not None else raw.strip())
    return normalize_username(raw)


def normalize_full_name(raw: str | None) -> tuple[str | None, list[FieldError]]:
    if raw is None:
        return None, []
    name = unicodedata.normalize("NFC", raw).strip()
    if len(name) > FULL_NAME_MAX:
        return None, [FieldError("full_name", f"must be at most {FULL_NAME_MAX} characters")]
    if has_control_characters(name):
        return None, [FieldError("full_name", "must not contain control characters")]
    return name or None, []
