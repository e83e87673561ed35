"""The account pages in a real browser (chromium), opened from the links in mails that a real
SMTP server on loopback received: a person verifies an address and resets a password with
nothing but the pages, under their strict CSP, without a request leaving 127.0.0.1 and
without the token in the address ever going out as a Referer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.settings import Settings
from testkit.smtp_server import SmtpServer
from tests.integration.browser import BrowserRecord, csp_violations, local_browser_page, requires_chromium
from tests.integration.helpers import AUTH, ME, bearer, login, register
from tests.integration.mail_flows import (
    LINK,
    LINK_BASE,
    MailedService,
    body_text,
    mailed_service,
    settings_with_mail,
    smtp,  # noqa: F401 - the fixture
)

pytestmark = requires_chromium

VERIFY_PAGE = "/account/verify-email"
RESET_PAGE = "/account/reset-password"
NEW_PASSWORD = "saffron-glacier-64-otter"
# Long enough for the form's minlength, and among the most common passwords: the server says no.
COMMON_PASSWORD = "password1"


@pytest.fixture
async def service(settings: Settings, signing_key_file: Path, smtp: SmtpServer) -> AsyncIterator[MailedService]:  # noqa: F811
    async with mailed_service(settings_with_mail(settings, signing_key_file, smtp)) as client:
        yield MailedService(client, smtp)


async def link_in_mail(service: MailedService, address: str, page: str, nth: int = 1) -> str:
    """The link to ``page`` in the ``nth`` such mail to ``address``, as the person would open
    it: the mail's links start with a public base URL that here is a made-up host, so the
    link is opened on the live server instead (same path, same token)."""
    token = await service.link_to(address, page, nth=nth)
    links = [
        f"{url}?token={found}"
        for mail in service.smtp.received
        if address in mail.recipients
        for url, found in LINK.findall(body_text(mail))
        if found == token
    ]
    assert links, f"no link to {page} in the mails to {address}"
    assert links[0].startswith(LINK_BASE)
    return links[0].replace(LINK_BASE, str(service.client.base_url).rstrip("/"), 1)


def assert_stayed_local_and_quiet(record: BrowserRecord, violations: list[str], token: str) -> None:
    assert record.requested, "the browser made no request at all"
    assert record.blocked == [], "the page tried to reach another host"
    assert violations == []
    assert record.csp_console_errors() == []
    assert [referer for referer in record.referers if token in referer] == [], "the token left as a Referer"


async def test_a_person_verifies_their_address_from_the_mail(service: MailedService) -> None:
    assert (await register(service.client, "browsing")).status_code == 201
    tokens = (await login(service.client, "browsing")).json()
    link = await link_in_mail(service, "browsing@example.com", VERIFY_PAGE)
    token = link.rpartition("token=")[2]

    async with local_browser_page() as (page, record):
        opened = await page.goto(link)
        assert opened is not None
        assert opened.status == 200
        await page.get_by_role("heading", name="Confirm your email address").wait_for()
        # The stylesheet applied: the service's own file, allowed by the page's CSP.
        assert await page.locator("main").evaluate("element => getComputedStyle(element).maxWidth") != "none"

        async with page.expect_navigation() as navigation:
            await page.get_by_role("button", name="Confirm my email address").click()
        answered = await navigation.value
        assert answered is not None
        assert answered.status == 200
        await page.get_by_role("heading", name="Your email address is verified").wait_for()
        assert "token" not in page.url
        violations = await csp_violations(page)

    assert_stayed_local_and_quiet(record, violations, token)
    account = (await service.client.get(ME, headers=bearer(tokens))).json()
    assert account["is_verified"] is True


async def test_a_person_resets_their_password_from_the_mail(service: MailedService) -> None:
    assert (await register(service.client, "forgot")).status_code == 201
    old_session = (await login(service.client, "forgot")).json()
    requested = await service.client.post(f"{AUTH}/password-reset/request", json={"email": "forgot@example.com"})
    assert requested.status_code == 202
    link = await link_in_mail(service, "forgot@example.com", RESET_PAGE)
    token = link.rpartition("token=")[2]

    async with local_browser_page() as (page, record):
        opened = await page.goto(link)
        assert opened is not None
        assert opened.status == 200
        await page.get_by_role("heading", name="Choose a new password").wait_for()

        await page.get_by_label("New password", exact=True).fill(COMMON_PASSWORD)
        await page.get_by_label("New password again").fill(COMMON_PASSWORD)
        async with page.expect_navigation() as navigation:
            await page.get_by_role("button", name="Set my new password").click()
        refused = await navigation.value
        assert refused is not None
        assert refused.status == 422
        alert = page.get_by_role("alert")
        await alert.wait_for()
        assert "The new password is too common; choose a less predictable password." in await alert.inner_text()

        # The same form, the link still good: now a password the policy accepts.
        await page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
        await page.get_by_label("New password again").fill(NEW_PASSWORD)
        async with page.expect_navigation() as navigation:
            await page.get_by_role("button", name="Set my new password").click()
        done = await navigation.value
        assert done is not None
        assert done.status == 200
        await page.get_by_role("heading", name="Your password has been changed").wait_for()
        assert "token" not in page.url
        violations = await csp_violations(page)

    assert_stayed_local_and_quiet(record, violations, token)
    assert (await login(service.client, "forgot", NEW_PASSWORD)).status_code == 200
    refreshed = await service.client.post(f"{AUTH}/refresh", json={"refresh_token": old_session["refresh_token"]})
    assert refreshed.status_code == 401
