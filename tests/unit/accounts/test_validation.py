"""Usernames, emails and full names as docs/api.md ("Validation that users expect") describes them."""

from __future__ import annotations

import unicodedata

import pytest

from app.accounts.validation import (
    email_key,
    normalize_email,
    normalize_full_name,
    normalize_login_identifier,
    normalize_username,
    username_problems,
)
from app.errors import FieldError


def full_width(text: str) -> str:
    """The full-width (U+FF01-U+FF5E) form of printable ASCII, as an East Asian keyboard types it."""
    return "".join(chr(ord(ch) + 0xFEE0) if "!" <= ch <= "~" else ch for ch in text)


def username_ok(raw: str) -> bool:
    return username_problems(normalize_username(raw)) == []


# --------------------------------------------------------------------------- usernames


@pytest.mark.parametrize(
    ("raw", "folded"),
    [
        ("\uff41\uff4c\uff49\uff43\uff45", "alice"),  # full-width letters, spelled out
        (full_width("Alice_07"), "Alice_07"),  # full-width capital, underscore and digits
        (full_width("bob.smith-2"), "bob.smith-2"),  # full-width full stop and hyphen-minus
        ("  carol  ", "carol"),
    ],
)
def test_full_width_usernames_fold_to_ascii_and_pass(raw: str, folded: str) -> None:
    assert normalize_username(raw) == folded
    assert username_problems(folded) == []


@pytest.mark.parametrize(("length", "ok"), [(2, False), (3, True), (32, True), (33, False)])
def test_username_length_boundaries(length: int, ok: bool) -> None:
    assert username_ok("a" * length) is ok


def test_full_width_username_length_is_counted_after_folding() -> None:
    assert username_ok(full_width("a") * 32)
    assert not username_ok(full_width("a") * 33)


@pytest.mark.parametrize(
    "raw",
    [
        "alice smith",  # inner space
        "alice@example",  # at sign
        "josé",  # a letter outside ASCII
        "Юлия",  # Cyrillic
        "名前です",  # CJK
        "ali+ce",
        "alice!",
        "al/ice",
        "alice\u200bbob",  # zero-width space
        "alice\nbob",
        "",
        "   ",
    ],
)
def test_usernames_outside_the_allowed_characters_fail(raw: str) -> None:
    problems = username_problems(normalize_username(raw))
    assert problems == [FieldError("username", problems[0].message)]
    assert "3-32" in problems[0].message


@pytest.mark.parametrize("raw", ["a.b", "under_score", "dash-name", "MiXeD.Case_9-0", "123"])
def test_allowed_punctuation_and_digits_pass(raw: str) -> None:
    assert username_ok(raw)


def test_trailing_newline_does_not_sneak_past_the_pattern() -> None:
    # Checked without normalisation: "$" must not accept a final newline.
    assert username_problems("alice\n") != []


# --------------------------------------------------------------------------- emails


@pytest.mark.parametrize(
    "raw",
    [
        "not-an-email",
        "@example.com",
        "alice@",
        "alice@localhost",
        "alice smith@example.com",
        "alice..smith@example.com",
        "alice@exa mple.com",
        "alice@@example.com",
        "",
        "alice@" + "d" * 250 + ".com",  # longer than any address may be
        "a" * 65 + "@example.com",  # RFC 5321: at most 64 characters before the @
    ],
)
def test_invalid_email_is_a_field_error_on_email(raw: str) -> None:
    normalized, problems = normalize_email(raw)
    assert normalized is None
    assert len(problems) == 1
    assert problems[0].field == "email"
    assert problems[0].message


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Alice@Example.COM", "Alice@example.com"),
        ("bob@EXAMPLE.org", "bob@example.org"),
        ("  carol@Example.Net  ", "carol@example.net"),
        ("dave@BÜCHER.de", "dave@bücher.de"),
    ],
)
def test_valid_email_gets_a_lower_case_domain(raw: str, expected: str) -> None:
    normalized, problems = normalize_email(raw)
    assert problems == []
    assert normalized == expected


def test_a_64_character_local_part_is_accepted() -> None:
    normalized, problems = normalize_email("a" * 64 + "@example.com")
    assert problems == []
    assert normalized == "a" * 64 + "@example.com"


def test_email_validation_does_not_need_the_domain_to_exist() -> None:
    normalized, problems = normalize_email("someone@no-such-domain-for-tests.example.org")
    assert problems == []
    assert normalized == "someone@no-such-domain-for-tests.example.org"


# --------------------------------------------------------------------------- email keys


@pytest.mark.parametrize(
    ("spellings", "key"),
    [
        (["\u00c4NNE@example.com", "\u00e4nne@example.com", "A\u0308NNE@example.com"], "\u00e4nne@example.com"),
        (["boss@example.com", "bo\u00df@example.com", "BOSS@example.com", "BO\u1e9e@example.com"], "boss@example.com"),
        (["\u03a3\u039f\u03a6\u039f\u03a3@example.com", "\u03c3\u03bf\u03c6\u03bf\u03c2@example.com"], None),
        ([full_width("Kiwi") + "@example.com", "kiwi@example.com", "\u212aiwi@example.com"], "kiwi@example.com"),
    ],
)
def test_every_spelling_of_an_address_has_one_key(spellings: list[str], key: str | None) -> None:
    keys = {email_key(spelling) for spelling in spellings}
    assert len(keys) == 1
    assert key is None or keys == {key}


@pytest.mark.parametrize("raw", ["\u01f0@example.com", "\u0130stanbul@example.com", "\u1f88@example.com"])
def test_a_key_is_in_normal_form_and_its_own_key(raw: str) -> None:
    # Case folding can decompose (U+01F0 folds to j and a combining caron): the key is
    # normalised again, so it is stable whatever form it is computed from.
    key = email_key(raw)
    assert email_key(key) == key
    assert email_key(unicodedata.normalize("NFD", raw)) == key


def test_different_addresses_keep_different_keys() -> None:
    assert email_key("anne@example.com") != email_key("anna@example.com")
    assert email_key("\u00e4nne@example.com") != email_key("anne@example.com")  # folding keeps accents


def test_a_login_by_email_is_looked_up_by_its_key() -> None:
    assert normalize_login_identifier("  BO\u00df@Example.COM ") == "boss@example.com"
    assert normalize_login_identifier("Alice") == "Alice"  # usernames: compared by lower() in SQL


# --------------------------------------------------------------------------- full name


@pytest.mark.parametrize(
    "raw", ["Ada\x00Lovelace", "Ada\nLovelace", "Ada\tLovelace", "Ada\x1b[31m", "Ada\u202eecalevoL"]
)
def test_full_name_with_control_characters_is_refused(raw: str) -> None:
    name, problems = normalize_full_name(raw)
    assert name is None
    assert [p.field for p in problems] == ["full_name"]


def test_full_name_longer_than_200_is_refused() -> None:
    name, problems = normalize_full_name("x" * 201)
    assert name is None
    assert [p.field for p in problems] == ["full_name"]
    assert "200" in problems[0].message


def test_full_name_of_200_characters_is_kept() -> None:
    assert normalize_full_name("x" * 200) == ("x" * 200, [])


@pytest.mark.parametrize("raw", ["", " ", "   \u3000  ", "\u00a0"])
def test_whitespace_only_full_name_becomes_none(raw: str) -> None:
    assert normalize_full_name(raw) == (None, [])


def test_missing_full_name_stays_none() -> None:
    assert normalize_full_name(None) == (None, [])


def test_full_name_is_trimmed_and_keeps_its_letters() -> None:
    assert normalize_full_name("  Zoë Ångström-Øre  ") == ("Zoë Ångström-Øre", [])


def test_full_name_is_nfc_normalised() -> None:
    decomposed = "Zoe\u0308"  # "e" followed by a combining diaeresis
    assert normalize_full_name(decomposed) == ("Zoë", [])
