"""The API docs page (/schema/swagger) in a real browser: Swagger UI renders from assets the
service serves itself, nothing is fetched from another host, and the page's strict
Content-Security-Policy (scripts and styles from 'self' only) blocks nothing it needs."""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from testkit.live_server import LiveClient

playwright = pytest.importorskip("playwright.async_api")

# Debian's chromium package; Playwright cannot download its own browsers here, and
# scripts/test installs the package where it is missing.
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="chromium is not installed (apt-get install chromium)"
)

DOCS = "/schema/swagger"

# Records every Content-Security-Policy violation the page reports, before any script of it runs.
RECORD_CSP_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations.push(`${event.violatedDirective} ${event.blockedURI}`);
});
"""


async def test_swagger_ui_renders_from_the_service_alone_without_csp_violations(client: LiveClient) -> None:
    requested: list[str] = []
    console_errors: list[str] = []
    async with playwright.async_playwright() as browser_driver:
        # Playwright passes --no-sandbox itself (chromium_sandbox defaults to off), which
        # chromium needs when the tests run as root.
        browser = await browser_driver.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = await browser.new_page()
            await page.add_init_script(RECORD_CSP_VIOLATIONS)
            page.on("request", lambda request: requested.append(request.url))
            page.on("console", lambda message: console_errors.append(message.text) if message.type == "error" else None)

            response = await page.goto(f"{client.base_url}{DOCS}")
            assert response is not None
            assert response.status == 200
            # The operations list: Swagger UI has loaded the document and rendered it.
            await page.wait_for_selector(".opblock-summary-path", timeout=20_000)
            paths = await page.locator(".opblock-summary-path").all_inner_texts()
            violations = await page.evaluate("window.__cspViolations")
        finally:
            await browser.close()

    assert any("/api/v1/auth/login" in path for path in paths), paths
    assert requested, "the browser made no request at all"
    foreign = [url for url in requested if urlsplit(url).hostname != "127.0.0.1"]
    assert foreign == [], "the docs page fetched from another host"
    assert violations == []
    assert [error for error in console_errors if "Content Security Policy" in error] == []


async def test_docs_page_policy_allows_only_the_services_own_scripts_and_styles(client: LiveClient) -> None:
    response = await client.get(DOCS)

    assert response.status_code == 200
    policy = {
        directive.split()[0]: directive.split()[1:]
        for directive in response.headers["content-security-policy"].split(";")
        if directive.strip()
    }
    assert policy["default-src"] == ["'none'"]
    assert policy["script-src"] == ["'self'"]
    assert policy["style-src"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert "https://" not in response.text, "the page names no other host"
    asset = await client.get("/schema/assets/swagger-ui-bundle.js")
    assert asset.status_code == 200
    assert asset.headers["content-type"].startswith("text/javascript")
    # Only what the page loads: not the dist's demo page (it points at a petstore elsewhere).
    assert (await client.get("/schema/assets/index.html")).status_code == 404
