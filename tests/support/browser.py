"""Headless Chromium for end-to-end tests, driven by Playwright (the Python package only: the
browser is Debian's `chromium`, never one that `playwright install` downloads).

A missing browser FAILS the test, it never skips it: CI must run these.

    from tests.support.browser import browser_page_fixture, chromium_fixture  # noqa: F401

    @pytest.mark.browser
    def test_home(browser_page, base_url):
        browser_page.goto(base_url)

A browser cannot send a bearer key with a page navigation: `log_in(page, base_url)` signs in
through the login page, as a person does; `browser_page` is signed in already when the test
module has a `base_url` fixture.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.support.auth import ADMIN_KEY

CHROMIUM_PATH = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
INSTALL_HINT = (
    "install Debian's Chromium and fonts: "
    "`apt-get install -y --no-install-recommends chromium fonts-dejavu-core fonts-liberation`, "
    "and the Python driver: `pip install playwright` (do not run `playwright install`); "
    "or point CHROMIUM_PATH at another Chromium binary"
)
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
ASSET_TYPES = {"stylesheet", "script", "image", "font", "media"}


def launch_chromium(playwright):
    """Chromium from CHROMIUM_PATH (default /usr/bin/chromium), headless, with no network
    chatter of its own; pytest.fail (not skip) when it is missing or does not start."""
    if not Path(CHROMIUM_PATH).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM_PATH}: {INSTALL_HINT}", pytrace=False)
    try:
        return playwright.chromium.launch(
            executable_path=CHROMIUM_PATH, headless=True, args=CHROMIUM_ARGS
        )
    except Exception as error:  # the message is the point: say how to fix it
        pytest.fail(f"Chromium at {CHROMIUM_PATH} did not start: {error}\n{INSTALL_HINT}")


@pytest.fixture(scope="module", name="chromium")
def chromium_fixture() -> Iterator:
    """One headless Chromium (a playwright Browser) per test module. Not per session: while
    playwright's sync API is open its event loop runs in the main thread, and the later
    modules' own asyncio.run() (the inbox stream's tests) would refuse to start."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(f"the playwright package is missing: {INSTALL_HINT}", pytrace=False)
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        yield browser
        browser.close()


def log_in(page, base_url: str) -> None:
    """Sign in as the admin through the login page: the key in the `api_key` field, submit,
    and wait until the browser has left /login."""
    page.goto(base_url + "/login")
    page.fill("input[name=api_key]", ADMIN_KEY)
    page.click("main button[type=submit]")
    page.wait_for_url(lambda url: urlsplit(url).path.rstrip("/") != "/login")
    page.wait_for_load_state("networkidle")  # nothing of the login page still in flight


def watch_for_problems(page) -> list[str]:
    """Script errors, console errors (CSP violations among them) and page resources (CSS,
    scripts, images, fonts) that failed, as they happen; a 4xx page or fetch is not a problem."""
    problems: list[str] = []

    def console(message) -> None:
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            problems.append(f"console: {message.text}")

    def response(reply) -> None:
        if reply.status >= 400 and reply.request.resource_type in ASSET_TYPES:
            problems.append(f"{reply.status} for {reply.url}")

    page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    page.on("console", console)
    page.on("response", response)
    page.on("requestfailed", lambda request: problems.append(f"failed: {request.url}"))
    return problems


@pytest.fixture(name="browser_page")
def browser_page_fixture(chromium, request) -> Iterator:
    """A fresh page (own cookies) 1280x800, UTC, en-GB, signed in as the admin at the module's
    `base_url` (if it has one), closed after the test; what went wrong in it (see
    watch_for_problems) is collected in `page.problems`."""
    context = chromium.new_context(viewport=DESKTOP, locale="en-GB", timezone_id="UTC")
    context.set_default_timeout(10_000)
    page = context.new_page()
    if "base_url" in request.fixturenames:
        log_in(page, request.getfixturevalue("base_url"))
    page.problems = watch_for_problems(page)
    yield page
    context.close()
