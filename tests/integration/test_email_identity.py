"""One account per email, whatever its letter case or Unicode spelling (finding 4 of #12).

Each address has one canonical key (NFKC, then case folding, computed in Python:
app/accounts/validation.py:email_key) with a unique index. Before it, uniqueness and
login leaned on the database's lower(), which folds only ASCII under the C collation
(CloudNativePG's default, and SQLite's only behaviour) and never maps "ß" to "ss" anywhere.
Every test runs on the suite's PostgreSQL, on a PostgreSQL database with the C collation,
and on the embedded SQLite default.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app.main import create_app
from testkit.live_server import LiveClient, serve
from testkit.postgres import migrate
from tests.conftest import make_settings
from tests.integration.helpers import AUTH, ME, PASSWORD, USERS, assert_problem, bearer, login, register

C_LOCALE_DATABASE = "user_service_test_c_locale"
TABLES = "users, auth_sessions, refresh_tokens, login_throttle, outbox_messages, account_tokens"


@dataclass
class Backend:
    client: LiveClient
    db: AsyncEngine


async def _execute_autocommit(url: str, *statements: str) -> None:
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            for statement in statements:
                await conn.execute(text(statement))
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
def c_locale_database(database_url: str) -> Iterator[str]:
    """A database on the test server created as CloudNativePG creates one by default
    (collation and ctype C), migrated by the same command as the suite's."""
    import anyio

    server = make_url(database_url)
    maintenance = server.set(database="postgres").render_as_string(hide_password=False)
    url = server.set(database=C_LOCALE_DATABASE).render_as_string(hide_password=False)
    drop = f"DROP DATABASE IF EXISTS {C_LOCALE_DATABASE} WITH (FORCE)"
    create = f"CREATE DATABASE {C_LOCALE_DATABASE} TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'"
    anyio.run(_execute_autocommit, maintenance, drop, create)
    migrate(url)
    yield url
    anyio.run(_execute_autocommit, maintenance, drop)


@pytest.fixture(params=["postgresql", "postgresql-c-locale", "sqlite"])
async def backend(
    request: pytest.FixtureRequest,
    clean_database: str,
    c_locale_database: str,
    signing_key_file: Path,
    tmp_path: Path,
) -> AsyncIterator[Backend]:
    if request.param == "postgresql":
        url = clean_database  # truncated after the test by its fixture
    elif request.param == "postgresql-c-locale":
        url = c_locale_database
    else:
        url = f"sqlite+aiosqlite:///{tmp_path}/embedded.sqlite3"  # migrated when the app starts
    engine = create_async_engine(url)
    try:
        async with serve(create_app(make_settings(url, signing_key_file))) as client:
            yield Backend(client, engine)
    finally:
        if request.param == "postgresql-c-locale":
            async with engine.begin() as conn:
                await conn.execute(text(f"TRUNCATE {TABLES} CASCADE"))
        await engine.dispose()


async def registered(backend: Backend, username: str, email: str) -> dict[str, Any]:
    response = await register(backend.client, username, email=email)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("\u00c4NNE@example.com", "\u00e4nne@example.com"),  # the finding: Ä and ä
        ("A\u0308NNE@example.com", "\u00e4nne@example.com"),  # decomposed (NFD) Ä
        ("boss@example.com", "bo\u00df@example.com"),  # ß folds to ss
        ("bo\u00df@example.com", "BOSS@example.com"),
        ("\u03a3\u039f\u03a6\u0399\u0391@example.com", "\u03c3\u03bf\u03c6\u03b9\u03b1@example.com"),  # ΣΟΦΙΑ, σοφια
    ],
)
async def test_an_address_that_differs_only_by_case_or_unicode_spelling_is_taken(
    backend: Backend, first: str, second: str
) -> None:
    await registered(backend, "first_owner", first)
    problem = assert_problem(await register(backend.client, "second_owner", email=second), 409)
    assert [e["field"] for e in problem["errors"]] == ["email"]


async def test_concurrent_registrations_of_one_address_in_several_spellings_give_one_account(
    backend: Backend,
) -> None:
    spellings = ["boss@example.com", "BO\u00df@example.com", "bo\u00df@example.com", "Boss@EXAMPLE.com"]

    async def attempt(i: int) -> tuple[int, list[str]]:
        # Distinct usernames: only the email key's unique index can refuse the losers.
        response = await register(backend.client, f"racer{i:02d}", email=spellings[i % len(spellings)])
        fields = [e["field"] for e in response.json().get("errors", [])] if response.status_code == 409 else []
        return response.status_code, fields

    outcomes = await asyncio.gather(*(attempt(i) for i in range(12)))

    assert sorted(status for status, _ in outcomes) == [201] + [409] * 11
    assert [fields for status, fields in outcomes if status == 409] == [["email"]] * 11
    async with backend.db.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM users"))).scalar_one() == 1


async def moved_by_link(backend: Backend, tokens: dict[str, Any], new_email: str) -> None:
    """Ask for an email change and confirm it with the link from the queued mail (read from
    the outbox: these backends deliver no mail)."""
    from tests.integration.mail_flows import LINK

    asked = await backend.client.post(
        f"{ME}/email", headers=bearer(tokens), json={"new_email": new_email, "current_password": PASSWORD}
    )
    assert asked.status_code == 202, asked.text
    body = await queued_mail(backend, "email_change_confirm", new_email)
    [(_, token)] = LINK.findall(body)
    confirmed = await backend.client.post(f"{AUTH}/email-change/confirm", json={"token": token})
    assert confirmed.status_code == 204, confirmed.text


async def queued_mail(backend: Backend, kind: str, recipient: str, within: float = 10.0) -> str:
    """The text of the mail of ``kind`` queued for ``recipient`` (written after the 202)."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        async with backend.db.connect() as conn:
            found = (
                await conn.execute(
                    text("SELECT text_body FROM outbox_messages WHERE kind = :kind AND recipient = :to"),
                    {"kind": kind, "to": recipient},
                )
            ).scalar_one_or_none()
        if found is not None:
            return str(found)
        assert asyncio.get_running_loop().time() < deadline, f"no {kind} mail for {recipient}"
        await asyncio.sleep(0.05)


async def test_moving_to_another_spelling_of_the_same_address_is_confirmed_and_stays_taken(backend: Backend) -> None:
    owner = await registered(backend, "boss_owner", "boss@example.com")
    tokens = (await login(backend.client, "boss_owner")).json()

    # boß@ may be another mailbox than boss@: the new spelling proves itself with the link.
    await moved_by_link(backend, tokens, "bo\u00df@example.com")

    me = (await backend.client.get(ME, headers=bearer(tokens))).json()
    assert (me["email"], me["is_verified"]) == ("bo\u00df@example.com", True)
    # Neither spelling is free for anyone else, at registration or by an email change.
    for spelling in ["boss@example.com", "BOSS@example.com", "bo\u00df@example.com"]:
        problem = assert_problem(await register(backend.client, "boss_rival", email=spelling), 409)
        assert [e["field"] for e in problem["errors"]] == ["email"]
    rival = (await login(backend.client, (await registered(backend, "rival", "rival@example.com"))["username"])).json()
    taken = await backend.client.post(
        f"{ME}/email", headers=bearer(rival), json={"new_email": "Boss@example.com", "current_password": PASSWORD}
    )
    assert taken.status_code == 202  # the same answer as for a free address...
    # ...but the owner is told, and no link exists that could move the rival there.
    assert "already belongs to your account" in await queued_mail(backend, "email_change_taken", "bo\u00df@example.com")
    async with backend.db.connect() as conn:
        assert (
            await conn.execute(text("SELECT count(*) FROM account_tokens WHERE new_email IS NOT NULL"))
        ).scalar_one() == 1
    # And every spelling still logs the owner in.
    for spelling in ["boss@example.com", "BO\u00df@EXAMPLE.com", "BOSS@example.com"]:
        logged_in = await login(backend.client, spelling)
        assert logged_in.status_code == 200, (spelling, logged_in.text)
        me = (await backend.client.get(ME, headers=bearer(logged_in.json()))).json()
        assert me["id"] == owner["id"]


async def test_moving_to_a_really_different_address_frees_the_old_one(backend: Backend) -> None:
    await registered(backend, "anne_owner", "\u00c4NNE@example.com")
    tokens = (await login(backend.client, "anne_owner")).json()
    await moved_by_link(backend, tokens, "anna@example.com")
    me = (await backend.client.get(ME, headers=bearer(tokens))).json()
    assert (me["email"], me["is_verified"]) == ("anna@example.com", True)
    # The old address is free again, in any spelling.
    assert (await register(backend.client, "anne_again", email="\u00e4nne@example.com")).status_code == 201


@pytest.mark.parametrize(
    "spelling",
    [
        "\u00e4nne@example.com",  # lower case, composed (NFC)
        "A\u0308NNE@example.com",  # upper case, decomposed (NFD)
        "a\u0308nne@EXAMPLE.COM",
        "\uff21\u0308\uff2e\uff2e\uff25@example.com",  # full-width letters (NFKC folds them)
    ],
)
async def test_login_by_email_accepts_any_case_or_normalisation_form(backend: Backend, spelling: str) -> None:
    owner = await registered(backend, "anne", "\u00c4NNE@example.com")
    response = await login(backend.client, spelling)
    assert response.status_code == 200, response.text
    me = await backend.client.get(ME, headers=bearer(response.json()))
    assert me.json()["id"] == owner["id"]


async def test_the_admin_search_finds_an_email_by_any_letter_case(backend: Backend) -> None:
    await registered(backend, "searcher", "searcher@example.com")
    async with backend.db.begin() as conn:  # by name: SQLite stores the id as 16 bytes
        await conn.execute(text("UPDATE users SET role = 'admin' WHERE username = 'searcher'"))
    admin = bearer((await login(backend.client, "searcher")).json())
    wanted = await registered(backend, "jurgen", "J\u00dcRGEN.stra\u00dfe@example.com")
    for q in ["j\u00fcrgen", "J\u00dcRGEN", "strasse"]:
        response = await backend.client.get(USERS, params={"q": q}, headers=admin)
        assert response.status_code == 200, response.text
        assert [item["id"] for item in response.json()["items"]] == [wanted["id"]], q


async def test_every_stored_key_is_the_canonical_form_of_its_address(backend: Backend) -> None:
    from app.accounts.validation import email_key

    for index, address in enumerate(["\u00c4NNE@example.com", "bo\u00df@Example.com", "Plain@example.com"]):
        await registered(backend, f"keyed{index}", address)
    tokens = (await login(backend.client, "keyed2")).json()
    await moved_by_link(backend, tokens, "\u00d8YSTEIN@example.com")
    async with backend.db.connect() as conn:
        rows = (await conn.execute(text("SELECT email, email_key FROM users"))).all()
    assert len(rows) == 3
    assert all(row.email_key == email_key(row.email) for row in rows)
    assert {row.email_key for row in rows} == {"\u00e4nne@example.com", "boss@example.com", "\u00f8ystein@example.com"}
