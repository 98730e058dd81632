"""The service page in a real browser: Playwright driving Debian's Chromium (installed by CI)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import nbdl
from nbdl.testing import LocalServer

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: Set to a path to save the screenshot the README shows (docs/service.png).
SCREENSHOT = os.environ.get("NBDL_SCREENSHOT")

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs Debian's chromium at /usr/bin/chromium ('apt-get install chromium'; "
    "make test installs it)",
)


async def test_page_adds_urls_and_shows_live_progress(tmp_path: Path, server: LocalServer) -> None:
    """URLs pasted on the page are added; their bars move and every row ends completed."""
    playwright_api = pytest.importorskip("playwright.async_api")
    urls = [
        server.url("/data/large-dataset.tar", size=6_000_000, rate=2_500_000),
        server.url("/data/images.zip", size=3_000_000, rate=1_500_000),
        server.url("/data/labels.csv", size=20_000),
        server.url("/data/missing.bin", fail="404"),
    ]
    async with (
        await nbdl.serve(tmp_path / "dl", max_workers=3) as svc,
        playwright_api.async_playwright() as driver,
    ):
        browser = await driver.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1200, "height": 560})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on(
                "console",
                lambda msg: errors.append(msg.text) if msg.type == "error" else None,
            )
            await page.goto(svc.url)
            assert page.url == f"{svc.base_url}/"  # the token left the address bar
            await page.get_by_label("URLs, one per line").fill("\n".join(urls))
            await page.get_by_role("button", name="Add", exact=True).click()
            await page.wait_for_selector("#rows tr[data-status='in_progress']", timeout=10_000)
            moving = page.locator("#rows tr[data-status='in_progress'] progress")
            await page.wait_for_function(
                "() => [...document.querySelectorAll('#rows progress')]"
                ".some(b => b.value > 0.3 && b.value < 0.95)",
                timeout=10_000,
            )
            assert await moving.count() >= 1
            if SCREENSHOT:
                await page.screenshot(path=SCREENSHOT)
            await page.screenshot(path=str(tmp_path / "moving.png"))
            await page.wait_for_function(
                "() => document.querySelectorAll('#rows tr[data-status=\"completed\"]').length"
                " === 3",
                timeout=20_000,
            )
            failed = page.locator("#rows tr[data-status='failed']")
            assert await failed.count() == 1
            assert "404" in await failed.inner_text()
            totals = page.locator("#totals")
            assert await totals.get_attribute("aria-live") == "polite"
            await page.wait_for_function(
                "() => document.querySelector('#totals').textContent.includes('3 completed')",
                timeout=5_000,
            )
            # Retry from the page (the server answers 404 only to the first request).
            await failed.get_by_role("button", name="Retry missing.bin").click()
            await page.wait_for_function(
                "() => document.querySelectorAll('#rows tr[data-status=\"completed\"]').length"
                " === 4",
                timeout=10_000,
            )
            assert errors == []
        finally:
            await browser.close()
    for name, size in (("large-dataset.tar", 6_000_000), ("images.zip", 3_000_000)):
        assert (svc.dest / name).stat().st_size == size
