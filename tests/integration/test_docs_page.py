"""The API docs page (/schema/swagger) in a real browser: Swagger UI renders from assets the
service serves itself, nothing is fetched from another host, and the page's strict
Content-Security-Policy (scripts and styles from 'self' only) blocks nothing it needs."""

from __future__ import annotations

from testkit.live_server import LiveClient
from tests.integration.browser import csp_violations, local_browser_page, requires_chromium

pytestmark = requires_chromium

DOCS = "/schema/swagger"


async def test_swagger_ui_renders_from_the_service_alone_without_csp_violations(client: LiveClient) -> None:
    async with local_browser_page() as (page, record):
        response = await page.goto(f"{client.base_url}{DOCS}")
        assert response is not None
        assert response.status == 200
        # The operations list: Swagger UI has loaded the document and rendered it.
        await page.wait_for_selector(".opblock-summary-path", timeout=20_000)
        paths = await page.locator(".opblock-summary-path").all_inner_texts()
        violations = await csp_violations(page)

    assert any("/api/v1/auth/login" in path for path in paths), paths
    assert record.requested, "the browser made no request at all"
    assert record.blocked == [], "the docs page tried to fetch from another host"
    assert violations == []
    assert record.csp_console_errors() == []


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
