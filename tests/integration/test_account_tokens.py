"""Misusing a mailed link: every way a token can be wrong is the same 400, and nothing
changes. Tokens are single use, bound to their purpose and to the account state they
were issued against, and stored only as a hash."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.settings import Settings
from testkit.smtp_server import SmtpServer
from tests.integration.helpers import AUTH, ME, PASSWORD, USERS, assert_problem, bearer, login, register
from tests.integration.mail_flows import (
    MailedService,
    mailed_service,
    settings_with_mail,
    smtp,  # noqa: F401 - the fixture
)

NEW_PASSWORD = "copper-meadow-58-kestrel"
OTHER_PASSWORD = "saffron-harbor-27-quill"
VERIFY_PAGE = "/account/verify-email"
RESET_PAGE = "/account/reset-password"
CHANGE_PAGE = "/account/confirm-email-change"


@pytest.fixture
async def service(settings: Settings, signing_key_file: Path, smtp: SmtpServer) -> AsyncIterator[MailedService]:  # noqa: F811
    async with mailed_service(settings_with_mail(settings, signing_key_file, smtp)) as client:
        yield MailedService(client, smtp)


async def signed_in(service: MailedService, username: str) -> dict[str, Any]:
    assert (await register(service.client, username)).status_code == 201
    tokens: dict[str, Any] = (await login(service.client, username)).json()
    return tokens


async def account(service: MailedService, tokens: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = (await service.client.get(ME, headers=bearer(tokens))).json()
    return body


async def reset_link(service: MailedService, username: str, nth: int = 1) -> str:
    answer = await service.client.post(f"{AUTH}/password-reset/request", json={"email": f"{username}@example.com"})
    assert answer.status_code == 202
    return await service.link_to(f"{username}@example.com", RESET_PAGE, nth)


async def change_link(service: MailedService, tokens: dict[str, Any], new_email: str, nth: int = 1) -> str:
    answer = await service.client.post(
        f"{ME}/email", headers=bearer(tokens), json={"new_email": new_email, "current_password": PASSWORD}
    )
    assert answer.status_code == 202, answer.text
    return await service.link_to(new_email, CHANGE_PAGE, nth)


def invalid(response: Any) -> None:
    problem = assert_problem(response, 400)
    assert problem["type"].endswith("/invalid-token")


async def confirm_reset(service: MailedService, token: str, password: str = NEW_PASSWORD) -> Any:
    return await service.client.post(f"{AUTH}/password-reset/confirm", json={"token": token, "new_password": password})


async def test_a_token_of_another_purpose_is_refused_everywhere_else(service: MailedService) -> None:
    tokens = await signed_in(service, "purposeful")
    verify = await service.link_to("purposeful@example.com", VERIFY_PAGE)
    invalid(await confirm_reset(service, verify))
    invalid(await service.client.post(f"{AUTH}/email-change/confirm", json={"token": verify}))
    reset = await reset_link(service, "purposeful")
    invalid(await service.client.post(f"{AUTH}/verify-email/confirm", json={"token": reset}))
    assert (await account(service, tokens))["is_verified"] is False
    assert (await login(service.client, "purposeful")).status_code == 200
    # Refused elsewhere, still good where it belongs.
    assert (await service.client.post(f"{AUTH}/verify-email/confirm", json={"token": verify})).status_code == 204


async def test_an_expired_token_is_refused(service: MailedService, db_engine: AsyncEngine) -> None:
    tokens = await signed_in(service, "latecomer")
    token = await service.link_to("latecomer@example.com", VERIFY_PAGE)
    async with db_engine.begin() as conn:
        await conn.execute(text("UPDATE account_tokens SET expires_at = now() - interval '1 second'"))
    invalid(await service.client.post(f"{AUTH}/verify-email/confirm", json={"token": token}))
    assert (await account(service, tokens))["is_verified"] is False


async def test_a_reset_link_dies_when_the_password_changes_by_another_route(service: MailedService) -> None:
    tokens = await signed_in(service, "changer")
    token = await reset_link(service, "changer")
    changed = await service.client.put(
        f"{ME}/password", headers=bearer(tokens), json={"current_password": PASSWORD, "new_password": OTHER_PASSWORD}
    )
    assert changed.status_code == 204
    invalid(await confirm_reset(service, token))
    assert (await login(service.client, "changer", OTHER_PASSWORD)).status_code == 200
    assert_problem(await login(service.client, "changer", NEW_PASSWORD), 401)


async def test_confirming_one_reset_link_ends_the_others(service: MailedService) -> None:
    await signed_in(service, "twice")
    first = await reset_link(service, "twice", 1)
    second = await reset_link(service, "twice", 2)
    assert (await confirm_reset(service, second)).status_code == 204
    invalid(await confirm_reset(service, first, OTHER_PASSWORD))
    assert (await login(service.client, "twice", NEW_PASSWORD)).status_code == 200


async def test_an_email_change_link_dies_when_the_email_changes_otherwise(service: MailedService) -> None:
    tokens = await signed_in(service, "wanderer")
    to_a = await change_link(service, tokens, "a.home@example.com")
    to_b = await change_link(service, tokens, "b.home@example.com")
    assert (await service.client.post(f"{AUTH}/email-change/confirm", json={"token": to_b})).status_code == 204
    invalid(await service.client.post(f"{AUTH}/email-change/confirm", json={"token": to_a}))
    assert (await account(service, tokens))["email"] == "b.home@example.com"


async def test_a_verification_link_dies_when_the_email_changes(service: MailedService) -> None:
    tokens = await signed_in(service, "fickle")
    verify = await service.link_to("fickle@example.com", VERIFY_PAGE)
    move = await change_link(service, tokens, "fickle.new@example.com")
    assert (await service.client.post(f"{AUTH}/email-change/confirm", json={"token": move})).status_code == 204
    invalid(await service.client.post(f"{AUTH}/verify-email/confirm", json={"token": verify}))


async def test_a_reset_link_dies_when_the_email_changes(service: MailedService) -> None:
    """A reset mailed to the old address must not reset an account that has moved away."""
    tokens = await signed_in(service, "mover")
    reset = await reset_link(service, "mover")
    move = await change_link(service, tokens, "mover.new@example.com")
    assert (await service.client.post(f"{AUTH}/email-change/confirm", json={"token": move})).status_code == 204
    invalid(await confirm_reset(service, reset))
    assert (await login(service.client, "mover")).status_code == 200


async def test_links_of_a_deleted_or_deactivated_account_are_dead_for_good(
    service: MailedService, db_engine: AsyncEngine
) -> None:
    admin = await signed_in(service, "boss")
    async with db_engine.begin() as conn:
        await conn.execute(text("UPDATE users SET role = 'admin' WHERE username = 'boss'"))
    admin = (await login(service.client, "boss")).json()
    await signed_in(service, "doomed")
    await signed_in(service, "paused")
    doomed_reset = await reset_link(service, "doomed")
    paused_reset = await reset_link(service, "paused")
    paused_verify = await service.link_to("paused@example.com", VERIFY_PAGE)
    users = {u["username"]: u["id"] for u in (await service.client.get(USERS, headers=bearer(admin))).json()["items"]}

    assert (await service.client.delete(f"{USERS}/{users['doomed']}", headers=bearer(admin))).status_code == 204
    invalid(await confirm_reset(service, doomed_reset))
    off = await service.client.patch(f"{USERS}/{users['paused']}", headers=bearer(admin), json={"is_active": False})
    assert off.status_code == 200
    invalid(await confirm_reset(service, paused_reset))
    # Reactivation does not bring old links back.
    on = await service.client.patch(f"{USERS}/{users['paused']}", headers=bearer(admin), json={"is_active": True})
    assert on.status_code == 200
    invalid(await confirm_reset(service, paused_reset))
    invalid(await service.client.post(f"{AUTH}/verify-email/confirm", json={"token": paused_verify}))
    assert (await login(service.client, "paused")).status_code == 200


async def test_unknown_and_malformed_tokens_are_refused_alike(service: MailedService) -> None:
    for token in ["", "x", "A" * 43, "not a token at all", "\u00e9" * 40]:
        invalid(await service.client.post(f"{AUTH}/verify-email/confirm", json={"token": token}))
        invalid(await confirm_reset(service, token))
    too_long = await service.client.post(f"{AUTH}/verify-email/confirm", json={"token": "A" * 600})
    assert_problem(too_long, 422)


async def test_two_concurrent_confirmations_of_one_link_succeed_once(service: MailedService) -> None:
    await signed_in(service, "racer")
    token = await reset_link(service, "racer")
    answers = await asyncio.gather(*(confirm_reset(service, token) for _ in range(6)))
    assert sorted(a.status_code for a in answers) == [204] + [400] * 5


async def test_only_a_hash_of_each_token_is_stored(service: MailedService, db_engine: AsyncEngine) -> None:
    await signed_in(service, "hashed")
    token = await service.link_to("hashed@example.com", VERIFY_PAGE)
    assert len(token) >= 43  # 256 bits, base64url
    async with db_engine.connect() as conn:
        rows = (await conn.execute(text("SELECT * FROM account_tokens"))).mappings().all()
    assert len(rows) == 1
    assert all(token not in str(value) for value in rows[0].values())
