"""The account pages the links in mails open (/account/...), over real HTTP: opening a page
spends nothing, its form (CSRF-protected, the token in a hidden field) does the work,
errors are pages in words with the status the API gives them, the headers keep the token
in the address from leaking, and neither logs nor spans ever see it."""

from __future__ import annotations

import io
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.container import container_of
from app.errors import HashingCapacityExceeded
from app.main import create_app
from app.observability.logging import configure_logging
from app.settings import LogFormat, LoggingSettings, Settings
from testkit.live_server import serve
from testkit.smtp_server import SmtpServer
from tests.integration.helpers import AUTH, ME, PASSWORD, bearer, login, register
from tests.integration.mail_flows import (
    MailedService,
    settings_with_mail,
    smtp,  # noqa: F401 - the fixture
)

VERIFY_PAGE = "/account/verify-email"
RESET_PAGE = "/account/reset-password"
CHANGE_PAGE = "/account/confirm-email-change"
NEW_PASSWORD = "lantern-orchard-93-pebble"
PAGES_POLICY = {
    "default-src": ["'none'"],
    "style-src": ["'self'"],
    "form-action": ["'self'"],
    "base-uri": ["'none'"],
    "frame-ancestors": ["'none'"],
}


@dataclass
class Pages(MailedService):
    """The service with real mail, its log lines captured and its spans kept in memory."""

    logs: io.StringIO = field(default_factory=io.StringIO)
    spans: InMemorySpanExporter = field(default_factory=InMemorySpanExporter)

    async def open(self, page: str, token: str | None) -> httpx.Response:
        return await self.client.get(page, params={"token": token} if token is not None else None)

    async def submit(self, opened: httpx.Response, **fields: str) -> httpx.Response:
        """Post the page's form as a browser would: its hidden fields plus ``fields``, to
        its action, with the cookie the page set (the client's cookie jar)."""
        form = form_of(opened.text)
        return await self.client.post(form.action, data={**form.hidden, **fields})

    async def signed_in(self, username: str) -> dict[str, Any]:
        assert (await register(self.client, username)).status_code == 201
        tokens: dict[str, Any] = (await login(self.client, username)).json()
        return tokens

    async def live_link(self, page: str, username: str) -> str:
        """A token of a link to ``page`` that could be used now, mailed to a new account."""
        tokens = await self.signed_in(username)
        address = f"{username}@example.com"
        if page == RESET_PAGE:
            await self.client.post(f"{AUTH}/password-reset/request", json={"email": address})
        elif page == CHANGE_PAGE:
            address = f"{username}.new@example.com"
            body = {"new_email": address, "current_password": PASSWORD}
            assert (await self.client.post(f"{ME}/email", headers=bearer(tokens), json=body)).status_code == 202
        return await self.link_to(address, page)

    async def me(self, tokens: dict[str, Any]) -> dict[str, Any]:
        account: dict[str, Any] = (await self.client.get(ME, headers=bearer(tokens))).json()
        return account


@dataclass
class Form:
    action: str
    hidden: dict[str, str]


def form_of(html: str) -> Form:
    (action,) = re.findall(r'<form method="post" action="([^"]*)">', html)
    hidden = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', html))
    return Form(action=action, hidden=hidden)


def assert_page(response: httpx.Response, status: int, *words: str) -> None:
    """An HTML page (never problem+json) with ``status`` that says ``words``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/html"), response.headers["content-type"]
    text = " ".join(response.text.split())
    for phrase in words:
        assert phrase in text, f"{phrase!r} not in {text}"


@pytest.fixture
async def pages(settings: Settings, signing_key_file: Path, smtp: SmtpServer) -> AsyncIterator[Pages]:  # noqa: F811
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = create_app(settings_with_mail(settings, signing_key_file, smtp), tracer_provider=provider)
    logs = io.StringIO()
    # The production pipeline at its most talkative (SQL included), written to a buffer.
    configure_logging(LoggingSettings(level="DEBUG", format=LogFormat.JSON, sql_level="INFO"), stream=logs)
    try:
        async with serve(app) as client:
            yield Pages(client, smtp, logs=logs, spans=exporter)
    finally:
        configure_logging(LoggingSettings(format=LogFormat.JSON))


# --- Verification ---------------------------------------------------------------------


async def test_opening_the_verification_page_spends_nothing_and_its_button_verifies(pages: Pages) -> None:
    tokens = await pages.signed_in("clicker")
    token = await pages.link_to("clicker@example.com", VERIFY_PAGE)

    scanned = await pages.client.head(VERIFY_PAGE, params={"token": token})  # a link checker's HEAD
    assert (scanned.status_code, scanned.content) == (200, b"")
    first = await pages.open(VERIFY_PAGE, token)
    second = await pages.open(VERIFY_PAGE, token)  # a mail scanner got there first
    assert_page(second, 200, "Confirm your email address")
    assert (await pages.me(tokens))["is_verified"] is False
    form = form_of(first.text)
    # The token goes in the form, not in its action URL.
    assert form.action == VERIFY_PAGE
    assert form.hidden["token"] == token
    assert form.hidden["_csrf_token"]

    confirmed = await pages.submit(second)
    assert_page(confirmed, 200, "Your email address is verified")
    assert (await pages.me(tokens))["is_verified"] is True
    assert_page(await pages.submit(second), 400, "This link cannot be used", "already been used")
    assert_page(await pages.open(VERIFY_PAGE, token), 400, "This link cannot be used", "already been used")


async def test_the_csrf_cookie_is_scoped_to_the_pages_and_invisible_to_scripts(pages: Pages) -> None:
    opened = await pages.open(VERIFY_PAGE, "any-token")
    cookie = opened.headers["set-cookie"]
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}

    assert cookie.startswith("account_csrf=")
    assert "Path=/account" in cookie
    assert {"httponly", "samesite"} <= attributes
    assert "samesite=strict" in cookie.lower()
    # Plain http on loopback in tests: a Secure cookie would never come back.
    assert "secure" not in attributes
    # The API sets no cookie and needs none (its JSON endpoints are bearer-token).
    pages.client.cookies.clear()
    api = await pages.client.post(f"{AUTH}/verify-email/confirm", json={"token": "x"})
    assert api.status_code == 400
    assert "set-cookie" not in api.headers


# --- Headers ---------------------------------------------------------------------------


@pytest.mark.parametrize("page", [VERIFY_PAGE, CHANGE_PAGE])
async def test_pages_carry_a_strict_policy_no_referrer_and_no_store(pages: Pages, page: str) -> None:
    response = await pages.open(page, await pages.live_link(page, "strict" + page.rsplit("-", 1)[-1]))

    assert_page(response, 200)
    policy = {
        directive.split()[0]: directive.split()[1:]
        for directive in response.headers["content-security-policy"].split(";")
        if directive.strip()
    }
    assert policy == PAGES_POLICY
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-frame-options"] == "DENY"
    assert "<script" not in response.text
    assert "style=" not in response.text
    assert "://" not in response.text, "the page names no other host"
    (stylesheet,) = re.findall(r'<link rel="stylesheet" href="([^"]+)">', response.text)
    css = await pages.client.get(stylesheet)
    assert css.status_code == 200
    assert css.headers["content-type"].startswith("text/css")
    assert "set-cookie" not in css.headers


async def test_the_pages_are_not_in_the_api_document(pages: Pages) -> None:
    document = (await pages.client.get("/schema/openapi.json")).json()
    assert [path for path in document["paths"] if path.startswith("/account")] == []


# --- CSRF ------------------------------------------------------------------------------


async def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(pages: Pages) -> None:
    tokens = await pages.signed_in("forged")
    token = await pages.link_to("forged@example.com", VERIFY_PAGE)
    csrf = form_of((await pages.open(VERIFY_PAGE, token)).text).hidden["_csrf_token"]

    # The cookie, but no CSRF field: what another site's form would send, were it not SameSite.
    no_field = await pages.client.post(VERIFY_PAGE, data={"token": token})
    assert_page(no_field, 403, "This form could not be accepted", "nothing was changed")
    # The field, but no cookie.
    pages.client.cookies.clear()
    no_cookie = await pages.client.post(VERIFY_PAGE, data={"token": token, "_csrf_token": csrf})
    assert_page(no_cookie, 403, "This form could not be accepted")
    # A field and a cookie that are each well signed, but not a pair.
    await pages.open(VERIFY_PAGE, token)  # a new cookie
    mismatched = await pages.client.post(VERIFY_PAGE, data={"token": token, "_csrf_token": csrf})
    assert_page(mismatched, 403)
    assert (await pages.me(tokens))["is_verified"] is False

    confirmed = await pages.submit(await pages.open(VERIFY_PAGE, token))
    assert_page(confirmed, 200, "Your email address is verified")


async def test_another_replica_accepts_the_form_a_first_one_rendered(
    pages: Pages,
    settings: Settings,
    signing_key_file: Path,
    smtp: SmtpServer,  # noqa: F811
) -> None:
    """Behind a load balancer the POST may reach another process: the CSRF secret is derived
    from the signing key they share, not made up per process."""
    tokens = await pages.signed_in("balanced")
    token = await pages.link_to("balanced@example.com", VERIFY_PAGE)
    opened = await pages.open(VERIFY_PAGE, token)
    form = form_of(opened.text)

    async with serve(create_app(settings_with_mail(settings, signing_key_file, smtp))) as replica:
        replica.cookies.set("account_csrf", pages.client.cookies["account_csrf"])
        posted = await replica.post(form.action, data=form.hidden)
    assert_page(posted, 200, "Your email address is verified")
    assert (await pages.me(tokens))["is_verified"] is True


# --- Password reset ---------------------------------------------------------------------


async def test_a_reset_page_spends_nothing_refuses_weak_passwords_in_words_then_resets(pages: Pages) -> None:
    await pages.signed_in("resetter")
    await pages.client.post(f"{AUTH}/password-reset/request", json={"email": "resetter@example.com"})
    token = await pages.link_to("resetter@example.com", RESET_PAGE)

    await pages.open(RESET_PAGE, token)
    opened = await pages.open(RESET_PAGE, token)
    assert_page(opened, 200, "Choose a new password", "At least 8 characters")
    assert form_of(opened.text).action == RESET_PAGE

    mismatch = await pages.submit(opened, new_password=NEW_PASSWORD, new_password_again=NEW_PASSWORD + "x")
    assert_page(mismatch, 422, "Your password was not changed", "The two passwords are not the same.")
    short = await pages.submit(mismatch, new_password="short", new_password_again="short")
    assert_page(short, 422, "The new password must be at least 8 characters.")
    common = await pages.submit(short, new_password="password1", new_password_again="password1")
    assert_page(common, 422, "The new password is too common; choose a less predictable password.")
    assert "password1" not in common.text.replace("new_password", ""), "no password is echoed back"
    assert (await login(pages.client, "resetter")).status_code == 200  # nothing changed yet

    done = await pages.submit(common, new_password=NEW_PASSWORD, new_password_again=NEW_PASSWORD)
    assert_page(done, 200, "Your password has been changed", "Sign in again with your new password")
    assert (await login(pages.client, "resetter", NEW_PASSWORD)).status_code == 200
    assert (await login(pages.client, "resetter")).status_code == 401
    assert_page(await pages.open(RESET_PAGE, token), 400, "This link cannot be used")


async def test_a_busy_service_shows_a_page_and_leaves_the_link_usable(
    pages: Pages, monkeypatch: pytest.MonkeyPatch
) -> None:
    await pages.signed_in("patient")
    await pages.client.post(f"{AUTH}/password-reset/request", json={"email": "patient@example.com"})
    token = await pages.link_to("patient@example.com", RESET_PAGE)
    opened = await pages.open(RESET_PAGE, token)
    hasher = container_of(pages.client.app).hasher

    def full(operation: str) -> None:
        raise HashingCapacityExceeded(retry_after_seconds=3)

    monkeypatch.setattr(hasher, "ensure_capacity", full)
    busy = await pages.submit(opened, new_password=NEW_PASSWORD, new_password_again=NEW_PASSWORD)
    assert_page(busy, 503, "The service is busy", "your link still works")
    assert busy.headers["retry-after"] == "3"
    monkeypatch.undo()

    done = await pages.submit(opened, new_password=NEW_PASSWORD, new_password_again=NEW_PASSWORD)
    assert_page(done, 200, "Your password has been changed")


# --- Email change -----------------------------------------------------------------------


async def test_the_email_change_page_moves_the_account_only_when_its_button_is_pressed(pages: Pages) -> None:
    tokens = await pages.signed_in("mover")
    body = {"new_email": "mover.new@example.com", "current_password": PASSWORD}
    assert (await pages.client.post(f"{ME}/email", headers=bearer(tokens), json=body)).status_code == 202
    token = await pages.link_to("mover.new@example.com", CHANGE_PAGE)

    await pages.open(CHANGE_PAGE, token)
    opened = await pages.open(CHANGE_PAGE, token)
    assert_page(opened, 200, "Confirm your new email address")
    assert (await pages.me(tokens))["email"] == "mover@example.com"

    assert_page(await pages.submit(opened), 200, "Your email address has changed")
    assert (await pages.me(tokens))["email"] == "mover.new@example.com"


async def test_an_address_taken_meanwhile_is_a_page_saying_so(pages: Pages) -> None:
    tokens = await pages.signed_in("late")
    body = {"new_email": "wanted@example.com", "current_password": PASSWORD}
    await pages.client.post(f"{ME}/email", headers=bearer(tokens), json=body)
    token = await pages.link_to("wanted@example.com", CHANGE_PAGE)
    opened = await pages.open(CHANGE_PAGE, token)
    assert (await register(pages.client, "early", email="wanted@example.com")).status_code == 201

    taken = await pages.submit(opened)
    assert_page(taken, 409, "This address is already in use", "your address was not changed")
    assert (await pages.me(tokens))["email"] == "late@example.com"


# --- Dead links and malformed requests --------------------------------------------------


@pytest.mark.parametrize("page", [VERIFY_PAGE, RESET_PAGE, CHANGE_PAGE])
async def test_a_dead_or_missing_token_is_a_page_in_words_with_status_400(
    pages: Pages, page: str, db_engine: AsyncEngine
) -> None:
    # Every page checks its token on opening (spending nothing), and again when its button
    # or form is used (a link that died in between).
    opened = await pages.open(page, "not-a-token-we-ever-issued")
    assert_page(opened, 400, "This link cannot be used", "has expired", "Ask for a new one")
    assert "<form" not in opened.text
    live = await pages.open(page, await pages.live_link(page, "dying" + page.rsplit("-", 1)[-1]))
    async with db_engine.begin() as conn:  # the link expires while the page is open
        await conn.execute(text("UPDATE account_tokens SET expires_at = now() - interval '1 minute'"))
    fields = {"new_password": NEW_PASSWORD, "new_password_again": NEW_PASSWORD} if page == RESET_PAGE else {}
    assert_page(await pages.submit(live, **fields), 400, "This link cannot be used", "has expired")
    assert_page(await pages.open(page, None), 400, "This link cannot be used")
    assert_page(await pages.open(page, ""), 400, "This link cannot be used")


async def test_malformed_and_oversized_forms_are_pages_too(pages: Pages) -> None:
    opened = await pages.open(VERIFY_PAGE, await pages.live_link(VERIFY_PAGE, "malformed"))
    hidden = form_of(opened.text).hidden
    incomplete = await pages.client.post(VERIFY_PAGE, data={"_csrf_token": hidden["_csrf_token"]})
    # The API's status for a body that breaks its schema, in words.
    assert_page(incomplete, 422, "This request could not be read")
    oversized = await pages.client.post(VERIFY_PAGE, data={**hidden, "padding": "x" * 100_000})
    assert_page(oversized, 413, "This form is too large")
    assert_page(await pages.open(VERIFY_PAGE, "t" * 600), 422, "This request could not be read")


async def test_unknown_pages_and_methods_under_account_are_pages_and_the_api_keeps_its_problems(
    pages: Pages,
) -> None:
    assert_page(await pages.client.get("/account/verify-mail"), 404, "Page not found")
    assert_page(await pages.client.put(VERIFY_PAGE, data={"token": "x"}), 405, "This page cannot be used this way")
    # HEAD is the GET without content (a link checker's), whatever the GET answers.
    for path in (VERIFY_PAGE, "/account/verify-mail"):
        got = await pages.client.get(path, params={"token": "x"})
        head = await pages.client.head(path, params={"token": "x"})
        assert (head.status_code, head.content) == (got.status_code, b""), path
        assert head.headers["content-type"].startswith("text/html"), path
    api = await pages.client.get("/api/v1/nothing-here")
    assert api.status_code == 404
    assert api.headers["content-type"].startswith("application/problem+json")


# --- The token in the address leaves no trace -------------------------------------------


async def test_no_log_line_and_no_span_holds_a_links_token(pages: Pages) -> None:
    await pages.signed_in("discreet")
    await pages.client.post(f"{AUTH}/password-reset/request", json={"email": "discreet@example.com"})
    verify_token = await pages.link_to("discreet@example.com", VERIFY_PAGE)
    reset_token = await pages.link_to("discreet@example.com", RESET_PAGE)
    pages.spans.clear()

    opened = await pages.open(RESET_PAGE, reset_token)
    await pages.submit(opened, new_password="short", new_password_again="short")
    await pages.submit(opened, new_password=NEW_PASSWORD, new_password_again=NEW_PASSWORD)
    await pages.submit(await pages.open(VERIFY_PAGE, verify_token))
    await pages.open(RESET_PAGE, reset_token)  # spent now: the 400 page

    lines = [json.loads(line) for line in pages.logs.getvalue().splitlines() if line.strip()]
    access = [
        line for line in lines if line.get("event") == "request" and line.get("http_route", "").startswith("/account")
    ]
    assert {(line["http_method"], line["http_route"], line["http_status"]) for line in access} >= {
        ("GET", RESET_PAGE, 200),
        ("POST", RESET_PAGE, 422),
        ("POST", RESET_PAGE, 200),
        ("POST", VERIFY_PAGE, 200),
        ("GET", RESET_PAGE, 400),
    }
    for secret in (reset_token, verify_token, NEW_PASSWORD):
        assert secret not in pages.logs.getvalue()

    servers = [span for span in pages.spans.get_finished_spans() if span.kind is SpanKind.SERVER]
    opened_spans = [span for span in servers if span.name == f"GET {RESET_PAGE}"]
    assert opened_spans, [span.name for span in servers]
    attributes = dict(opened_spans[0].attributes or {})
    address = str(attributes.get("http.url") or attributes.get("url.query"))
    assert "token=[REDACTED]" in address, attributes
    for span in pages.spans.get_finished_spans():
        for value in (span.attributes or {}).values():
            assert reset_token not in str(value), span.name
            assert verify_token not in str(value), span.name
