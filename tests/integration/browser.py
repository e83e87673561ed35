"""A real browser for the tests of pages the service serves (the API docs, the account
pages): Debian's chromium driven by Playwright, held to 127.0.0.1, with every
Content-Security-Policy violation and every request it makes on record."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest

if TYPE_CHECKING:
    from playwright.async_api import ConsoleMessage, Page, Request, Route

# Debian's chromium package; Playwright cannot download its own browsers here, and
# scripts/test installs the package where it is missing.
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
LOCAL_HOST = "127.0.0.1"

requires_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="chromium is not installed (apt-get install chromium)"
)

# Records every Content-Security-Policy violation the page reports, before any script of it
# runs (an init script is the browser's own: the page's CSP does not apply to it).
RECORD_CSP_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations.push(`${event.violatedDirective} ${event.blockedURI}`);
});
"""


@dataclass
class BrowserRecord:
    """What the browser did: every URL it requested (with the Referer it sent, if any), the
    ones it was stopped from fetching because they left 127.0.0.1, and its console errors."""

    requested: list[str] = field(default_factory=list)
    referers: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    def csp_console_errors(self) -> list[str]:
        return [error for error in self.console_errors if "Content Security Policy" in error]


async def csp_violations(page: Page) -> list[str]:
    violations: list[str] = await page.evaluate("window.__cspViolations")
    return violations


@asynccontextmanager
async def local_browser_page() -> AsyncIterator[tuple[Page, BrowserRecord]]:
    """A fresh chromium page whose requests to any host but 127.0.0.1 are aborted."""
    from playwright.async_api import async_playwright

    record = BrowserRecord()

    async def only_local(route: Route) -> None:
        url = route.request.url
        if urlsplit(url).hostname == LOCAL_HOST:
            await route.continue_()
        else:
            record.blocked.append(url)
            await route.abort("blockedbyclient")

    def on_request(request: Request) -> None:
        record.requested.append(request.url)
        if referer := request.headers.get("referer"):
            record.referers.append(referer)

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            record.console_errors.append(message.text)

    async with async_playwright() as driver:
        # Playwright passes --no-sandbox itself (chromium_sandbox defaults to off), which
        # chromium needs when the tests run as root.
        browser = await driver.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            context = await browser.new_context()
            await context.route("**/*", only_local)
            page = await context.new_page()
            await page.add_init_script(RECORD_CSP_VIOLATIONS)
            page.on("request", on_request)
            page.on("console", on_console)
            yield page, record
        finally:
            await browser.close()
