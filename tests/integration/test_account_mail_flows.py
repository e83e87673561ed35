"""Email verification, password reset and email change end to end: through HTTP, a real
SMTP server on loopback, and the links read out of the mails that arrived."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.settings import Settings
from testkit.smtp_server import SmtpServer
from tests.integration.helpers import AUTH, ME, PASSWORD, assert_problem, bearer, login, register
from tests.integration.mail_flows import (
    MailedService,
    body_html,
    body_text,
    mailed_service,
    settings_with_mail,
    smtp,  # noqa: F401 - the fixture
)

NEW_PASSWORD = "copper-meadow-58-kestrel"
VERIFY_PAGE = "/account/verify-email"
RESET_PAGE = "/account/reset-password"
CHANGE_PAGE = "/account/confirm-email-change"


@pytest.fixture
async def service(settings: Settings, signing_key_file: Path, smtp: SmtpServer) -> AsyncIterator[MailedService]:  # noqa: F811
    async with mailed_service(settings_with_mail(settings, signing_key_file, smtp)) as client:
        yield MailedService(client, smtp)


async def signed_in(service: MailedService, username: str) -> dict[str, Any]:
    assert (await register(service.client, username)).status_code == 201
    response = await login(service.client, username)
    assert response.status_code == 200, response.text
    tokens: dict[str, Any] = response.json()
    return tokens


async def me(service: MailedService, tokens: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = (await service.client.get(ME, headers=bearer(tokens))).json()
    return body


async def stored_count(db: AsyncEngine, sql: str, **params: Any) -> int:
    async with db.connect() as conn:
        return int((await conn.execute(text(sql), params)).scalar_one())


# --- Verification ---------------------------------------------------------------------


async def test_registration_mails_a_link_that_verifies_the_address_once(service: MailedService) -> None:
    tokens = await signed_in(service, "verifier")
    [mail] = await service.mails_to("verifier@example.com")
    assert mail.message["Subject"] == "Confirm your email address"
    assert "verifier" in body_text(mail)
    token = await service.link_to("verifier@example.com", VERIFY_PAGE)
    assert f"{VERIFY_PAGE}?token={token}" in body_html(mail)
    assert (await me(service, tokens))["is_verified"] is False

    confirmed = await service.client.post(f"{AUTH}/verify-email/confirm", json={"token": token})
    assert confirmed.status_code == 204, confirmed.text
    assert (await me(service, tokens))["is_verified"] is True
    again = assert_problem(await service.client.post(f"{AUTH}/verify-email/confirm", json={"token": token}), 400)
    assert again["type"].endswith("/invalid-token")


async def test_a_verification_request_mails_a_new_link_and_none_once_verified(service: MailedService) -> None:
    tokens = await signed_in(service, "asker")
    await service.mails_to("asker@example.com", 1)
    requested = await service.client.post(f"{AUTH}/verify-email/request", headers=bearer(tokens))
    assert requested.status_code == 202, requested.text
    second = await service.link_to("asker@example.com", VERIFY_PAGE, nth=2)
    first = await service.link_to("asker@example.com", VERIFY_PAGE, nth=1)
    assert first != second
    assert (await service.client.post(f"{AUTH}/verify-email/confirm", json={"token": second})).status_code == 204
    # The other link settled with it.
    assert_problem(await service.client.post(f"{AUTH}/verify-email/confirm", json={"token": first}), 400)

    verified = await service.client.post(f"{AUTH}/verify-email/request", headers=bearer(tokens))
    assert verified.status_code == 202
    await service.no_more_mail_to("asker@example.com", already=2)


async def test_a_verification_request_needs_a_signed_in_caller(service: MailedService) -> None:
    assert_problem(await service.client.post(f"{AUTH}/verify-email/request"), 401)


# --- Password reset -------------------------------------------------------------------


async def test_a_password_reset_sets_the_password_and_ends_every_session(service: MailedService) -> None:
    tokens = await signed_in(service, "forgetful")
    other = (await login(service.client, "forgetful")).json()
    answer = await service.client.post(f"{AUTH}/password-reset/request", json={"email": "Forgetful@Example.com"})
    assert answer.status_code == 202
    token = await service.link_to("forgetful@example.com", RESET_PAGE)

    reset = await service.client.post(
        f"{AUTH}/password-reset/confirm", json={"token": token, "new_password": NEW_PASSWORD}
    )
    assert reset.status_code == 204, reset.text
    for session in (tokens, other):
        refreshed = await service.client.post(f"{AUTH}/refresh", json={"refresh_token": session["refresh_token"]})
        assert_problem(refreshed, 401)
        assert_problem(await service.client.get(ME, headers=bearer(session)), 401)
    assert_problem(await login(service.client, "forgetful"), 401)
    fresh = await login(service.client, "forgetful", NEW_PASSWORD)
    assert fresh.status_code == 200
    # The link reached the account's address: it is verified now.
    assert (await me(service, fresh.json()))["is_verified"] is True
    reused = await service.client.post(
        f"{AUTH}/password-reset/confirm", json={"token": token, "new_password": "another-good-pass-71"}
    )
    assert_problem(reused, 400)


async def test_a_weak_new_password_is_refused_without_spending_the_link(service: MailedService) -> None:
    await signed_in(service, "weakling")
    await service.client.post(f"{AUTH}/password-reset/request", json={"email": "weakling@example.com"})
    token = await service.link_to("weakling@example.com", RESET_PAGE)
    weak = await service.client.post(f"{AUTH}/password-reset/confirm", json={"token": token, "new_password": "short"})
    problem = assert_problem(weak, 422)
    assert [e["field"] for e in problem["errors"]] == ["new_password"]
    assert (await login(service.client, "weakling")).status_code == 200  # unchanged
    good = await service.client.post(
        f"{AUTH}/password-reset/confirm", json={"token": token, "new_password": NEW_PASSWORD}
    )
    assert good.status_code == 204


async def test_a_reset_request_for_an_unknown_address_answers_the_same_and_sends_nothing(
    service: MailedService,
) -> None:
    await signed_in(service, "known")
    await service.mails_to("known@example.com")  # the verification mail
    known = await service.client.post(f"{AUTH}/password-reset/request", json={"email": "known@example.com"})
    unknown = await service.client.post(f"{AUTH}/password-reset/request", json={"email": "nobody@example.com"})
    assert (known.status_code, unknown.status_code) == (202, 202)
    assert known.json() == unknown.json()
    assert sorted(known.headers.keys()) == sorted(unknown.headers.keys())
    await service.mails_to("known@example.com", 2)
    await service.no_more_mail_to("nobody@example.com", already=0)


async def test_a_reset_clears_the_login_throttle(service: MailedService) -> None:
    await signed_in(service, "locked_out")
    statuses = [(await login(service.client, "locked_out", "not-the-password-1")).status_code for _ in range(8)]
    assert statuses[-1] == 429, statuses
    await service.client.post(f"{AUTH}/password-reset/request", json={"email": "locked_out@example.com"})
    token = await service.link_to("locked_out@example.com", RESET_PAGE)
    reset = await service.client.post(
        f"{AUTH}/password-reset/confirm", json={"token": token, "new_password": NEW_PASSWORD}
    )
    assert reset.status_code == 204
    assert (await login(service.client, "locked_out", NEW_PASSWORD)).status_code == 200


async def test_an_inactive_account_gets_no_reset_mail(service: MailedService, db_engine: AsyncEngine) -> None:
    await signed_in(service, "sleeper")
    await service.mails_to("sleeper@example.com")
    async with db_engine.begin() as conn:
        await conn.execute(text("UPDATE users SET is_active = false WHERE username = 'sleeper'"))
    answer = await service.client.post(f"{AUTH}/password-reset/request", json={"email": "sleeper@example.com"})
    assert answer.status_code == 202
    await service.no_more_mail_to("sleeper@example.com", already=1)


async def test_a_malformed_address_is_a_validation_error(service: MailedService) -> None:
    problem = assert_problem(
        await service.client.post(f"{AUTH}/password-reset/request", json={"email": "not an address"}), 422
    )
    assert [e["field"] for e in problem["errors"]] == ["email"]


# --- Email change ---------------------------------------------------------------------


async def test_an_email_change_takes_effect_only_when_the_new_address_confirms(service: MailedService) -> None:
    tokens = await signed_in(service, "nomad")
    answer = await service.client.post(
        f"{ME}/email", headers=bearer(tokens), json={"new_email": "nomad.new@example.com", "current_password": PASSWORD}
    )
    assert answer.status_code == 202, answer.text
    token = await service.link_to("nomad.new@example.com", CHANGE_PAGE)
    notices = await service.mails_to("nomad@example.com", 2)  # verification, then the notice
    assert "nomad.new@example.com" in body_text(notices[1])
    assert (await me(service, tokens))["email"] == "nomad@example.com"  # nothing yet

    confirmed = await service.client.post(f"{AUTH}/email-change/confirm", json={"token": token})
    assert confirmed.status_code == 204, confirmed.text
    account = await me(service, tokens)
    assert (account["email"], account["is_verified"]) == ("nomad.new@example.com", True)
    assert (await login(service.client, "nomad.new@example.com")).status_code == 200
    assert_problem(await login(service.client, "nomad@example.com"), 401)
    assert_problem(await service.client.post(f"{AUTH}/email-change/confirm", json={"token": token}), 400)


async def test_an_email_change_to_a_taken_address_answers_the_same_and_tells_its_owner(
    service: MailedService, db_engine: AsyncEngine
) -> None:
    await signed_in(service, "owner")
    tokens = await signed_in(service, "prober")
    free = await service.client.post(
        f"{ME}/email", headers=bearer(tokens), json={"new_email": "free@example.com", "current_password": PASSWORD}
    )
    taken = await service.client.post(
        f"{ME}/email", headers=bearer(tokens), json={"new_email": "OWNER@example.com", "current_password": PASSWORD}
    )
    assert (free.status_code, taken.status_code) == (202, 202)
    assert free.json() == taken.json()
    mails = await service.mails_to("owner@example.com", 2)  # verification, then the warning
    assert mails[1].message["Subject"] == "Someone tried to use this address"
    assert "/account/" not in body_text(mails[1])
    # No token was issued for the taken address, only for the free one.
    assert await stored_count(db_engine, "SELECT count(*) FROM account_tokens WHERE new_email IS NOT NULL") == 1
    assert (await me(service, tokens))["email"] == "prober@example.com"


async def test_an_email_change_needs_the_current_password(service: MailedService) -> None:
    tokens = await signed_in(service, "guarded")
    wrong = await service.client.post(
        f"{ME}/email", headers=bearer(tokens), json={"new_email": "x@example.com", "current_password": "not-it-at-all"}
    )
    assert assert_problem(wrong, 400)["type"].endswith("/wrong-current-password")
    await service.no_more_mail_to("x@example.com", already=0)


async def test_an_email_change_to_the_accounts_own_address_is_a_validation_error(service: MailedService) -> None:
    tokens = await signed_in(service, "samesame")
    problem = assert_problem(
        await service.client.post(
            f"{ME}/email",
            headers=bearer(tokens),
            json={"new_email": "samesame@example.com", "current_password": PASSWORD},
        ),
        422,
    )
    assert [e["field"] for e in problem["errors"]] == ["new_email"]


async def test_a_confirmation_for_an_address_taken_meanwhile_is_a_conflict(service: MailedService) -> None:
    tokens = await signed_in(service, "slowpoke")
    await service.client.post(
        f"{ME}/email", headers=bearer(tokens), json={"new_email": "contested@example.com", "current_password": PASSWORD}
    )
    token = await service.link_to("contested@example.com", CHANGE_PAGE)
    assert (await register(service.client, "quick", email="Contested@example.com")).status_code == 201
    conflict = assert_problem(await service.client.post(f"{AUTH}/email-change/confirm", json={"token": token}), 409)
    assert [e["field"] for e in conflict["errors"]] == ["email"]
    assert (await me(service, tokens))["email"] == "slowpoke@example.com"


async def test_patch_me_no_longer_changes_the_email(service: MailedService) -> None:
    tokens = await signed_in(service, "patcher")
    problem = assert_problem(
        await service.client.patch(ME, headers=bearer(tokens), json={"email": "elsewhere@example.com"}), 422
    )
    assert [e["field"] for e in problem["errors"]] == ["email"]
    assert (await me(service, tokens))["email"] == "patcher@example.com"


async def test_an_internationalised_address_gets_its_mail(service: MailedService) -> None:
    """RFC 6531: registration accepts jürgen@…, so its mail must leave (SMTPUTF8) with the
    local part intact, not as an encoded word no server would deliver."""
    assert (await register(service.client, "jurgen", email="j\u00fcrgen@example.com")).status_code == 201
    [mail] = await service.mails_to("j\u00fcrgen@example.com")
    assert mail.message["To"] == "j\u00fcrgen@example.com"
    token = await service.link_to("j\u00fcrgen@example.com", VERIFY_PAGE)
    assert (await service.client.post(f"{AUTH}/verify-email/confirm", json={"token": token})).status_code == 204


async def test_mail_asked_for_while_the_server_refuses_arrives_once_when_it_recovers(service: MailedService) -> None:
    service.smtp.refuse_for(3)
    names = [f"patient{i}" for i in range(5)]
    for name in names:
        assert (await register(service.client, name)).status_code == 201
        answer = await service.client.post(f"{AUTH}/password-reset/request", json={"email": f"{name}@example.com"})
        assert answer.status_code == 202
    assert service.smtp.received == []
    for name in names:  # a verification and a reset each, once
        await service.mails_to(f"{name}@example.com", 2, within=30)
    await service.no_more_mail_to(names[0] + "@example.com", already=2)
    assert service.smtp.refusals > 0
    ids = [mail.message_id for mail in service.smtp.received]
    assert len(ids) == len(set(ids)) == 10
    token = await service.link_to("patient3@example.com", RESET_PAGE)
    reset = await service.client.post(
        f"{AUTH}/password-reset/confirm", json={"token": token, "new_password": NEW_PASSWORD}
    )
    assert reset.status_code == 204
