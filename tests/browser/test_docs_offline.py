"""#27: /docs renders with every request to anywhere but the service refused, as on
a machine with no internet (before: Swagger UI from a CDN, a blank page offline)."""

from __future__ import annotations

import pytest
from playwright.async_api import Route, async_playwright, expect

from service.settings import Settings
from tests.browser.test_message_page import launch
from tests.support.serving import serving

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90)]


async def test_the_api_docs_render_offline_with_a_favicon() -> None:
    async with serving(Settings(_env_file=None)) as server, async_playwright() as p:
        browser = await launch(p)
        page = await browser.new_page()
        outside: list[str] = []

        async def only_the_service(route: Route) -> None:
            if route.request.url.startswith(server.base):
                await route.continue_()
            else:
                outside.append(route.request.url)
                await route.abort()

        await page.route("**/*", only_the_service)
        await page.goto(f"{server.base}/docs")
        await expect(page.locator(".swagger-ui .info .title")).to_contain_text(
            "ses-tracker", timeout=10_000
        )
        await expect(page.locator(".opblock-tag").first).to_be_visible()
        icon = await page.request.get(f"{server.base}/favicon.ico")
        assert icon.ok
        assert outside == [], outside
        await browser.close()
