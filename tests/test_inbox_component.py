"""The embeddable `<notify-inbox>` end to end: headless Chromium on the demo page
(/inbox/demo) of the real runner, the bell's stream live.

Two tabs of one user's inbox: a notification sent through the API appears in both; reading
it in one clears the badge in the other; a stream dropped (through the element's test hook
`_dropStreamForTest`, as a lost connection would) while two more are sent comes back with a
new ticket and `last_event_id`, and shows both (nothing missed). Also: the keyboard, the
notification's text as text only, the demo page's own test form, and that no request leaves
the service's origin.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from tests.support.auth import ADMIN_HEADERS
from tests.support.browser import (  # noqa: F401  (fixtures)
    DESKTOP,
    chromium_fixture,
    log_in,
    watch_for_problems,
)
from tests.support.runner import running_service

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parent.parent
LIVE = 15_000  # ms: the longest a live change may take to show here
BELL = "notify-inbox button.bell"  # playwright's CSS goes into open shadow roots


@pytest.fixture(scope="module")
def base_url(tmp_path_factory):
    env = {
        "DATA_DIR": str(tmp_path_factory.mktemp("inbox-data")),
        "AUTH_SECRET": "inbox-component-test-secret-0123456789",
        "SWEEP_INTERVAL": "0.5",
        "STREAM_HEARTBEAT_SECONDS": "2",
    }
    with running_service(env) as url:
        yield url


@pytest.fixture(name="context")
def context_fixture(chromium, base_url):
    """A signed-in browser (one cookie jar: its pages are tabs of one browser), recording
    every request its pages make."""
    context = chromium.new_context(viewport=DESKTOP, locale="en-GB", timezone_id="UTC")
    context.set_default_timeout(LIVE)
    context.requested = []
    context.on("request", lambda request: context.requested.append(request.url))
    log_in(context.new_page(), base_url)
    yield context
    context.close()


def open_demo(context, base_url: str, user_id: str):
    page = context.new_page()
    page.problems = watch_for_problems(page)
    page.goto(f"{base_url}/inbox/demo?user_id={user_id}")
    page.wait_for_function("() => customElements.get('notify-inbox') !== undefined")
    return page


def wait_streaming(page) -> None:
    """Until the element's stream is open (EventSource.OPEN)."""
    page.wait_for_function(
        "() => { const e = document.querySelector('notify-inbox');"
        " return !!e._source && e._source.readyState === 1; }"
    )


def wait_unread(page, count: int) -> None:
    label = f"Notifications, {count} unread" if count else "Notifications, none unread"
    page.wait_for_function(
        "label => document.querySelector('notify-inbox').shadowRoot"
        ".querySelector('button.bell').getAttribute('aria-label') === label",
        arg=label,
    )
    badge = page.locator("notify-inbox .badge")
    if count:
        assert badge.inner_text() == str(count)
    else:
        assert badge.is_hidden()


def wait_listed(page, message: str):
    item = page.locator("notify-inbox li", has_text=message)
    item.wait_for(state="attached")
    return item


def send_in_app(base_url: str, user_id: str, message: str, **fields) -> str:
    body = {"user_id": user_id, "notification_type": "in_app", "message": message, **fields}
    reply = requests.post(f"{base_url}/notifications", json=body, headers=ADMIN_HEADERS, timeout=10)
    assert reply.status_code == 201, reply.text
    return reply.json()["id"]


def new_user() -> str:
    return f"inbox-{uuid.uuid4().hex[:8]}"


def other_than_closed_streams(page) -> list[str]:
    return [
        p for p in page.problems if not ("/notifications/stream?" in p and p.startswith("failed"))
    ]


def only_own_origin(context, base_url: str) -> list[str]:
    own = urlsplit(base_url).netloc
    return [url for url in context.requested if urlsplit(url).netloc != own]


def test_two_tabs_stay_in_step_and_a_dropped_stream_misses_nothing(context, base_url):
    user = new_user()
    first, second = open_demo(context, base_url, user), open_demo(context, base_url, user)
    for tab in (first, second):
        wait_streaming(tab)
        wait_unread(tab, 0)

    send_in_app(base_url, user, "Your order shipped", title="Order 42")
    for tab in (first, second):
        wait_unread(tab, 1)
        assert wait_listed(tab, "Your order shipped").get_attribute("class") == "unread"

    first.click(BELL)
    first.locator("notify-inbox li", has_text="Order 42").get_by_role(
        "button", name="Mark read: Order 42"
    ).click()
    wait_unread(second, 0)  # read in one tab: the other's badge clears
    second.locator("notify-inbox li.read", has_text="Order 42").wait_for(state="attached")

    second.evaluate("document.querySelector('notify-inbox')._dropStreamForTest()")
    send_in_app(base_url, user, "Missed one", title="While away 1")
    send_in_app(base_url, user, "Missed two", title="While away 2")
    wait_unread(first, 2)
    second.wait_for_timeout(1000)
    assert second.locator("notify-inbox li", has_text="While away").count() == 0  # really down
    second.evaluate("document.querySelector('notify-inbox')._resumeStreamForTest()")
    wait_streaming(second)
    wait_unread(second, 2)
    for title in ("While away 1", "While away 2"):
        wait_listed(second, title)
    assert second.locator("notify-inbox li").count() == 3

    assert first.problems == []
    assert other_than_closed_streams(second) == []  # only the stream the test dropped failed
    assert len(second.problems) == 1
    assert only_own_origin(context, base_url) == []


def test_the_keyboard_opens_moves_and_closes_and_text_stays_text(context, base_url):
    user = new_user()
    send_in_app(base_url, user, "first message", title="<img src=x onerror=alert(1)>")
    send_in_app(base_url, user, "second message", title="Order 7", action_url="/orders/7")
    page = open_demo(context, base_url, user)
    wait_unread(page, 2)

    for _ in range(40):  # Tab from the top of the page until the bell has the focus
        page.keyboard.press("Tab")
        if page.evaluate(
            "() => document.activeElement.tagName === 'NOTIFY-INBOX'"
            " && document.activeElement.shadowRoot.activeElement.classList.contains('bell')"
        ):
            break
    else:
        pytest.fail("Tab never reached the bell")
    bell = page.locator(BELL)
    assert bell.get_attribute("aria-haspopup") and bell.get_attribute("aria-expanded") == "false"

    page.keyboard.press("Enter")
    assert bell.get_attribute("aria-expanded") == "true"
    panel = page.locator("notify-inbox [role=dialog]")
    assert panel.is_visible()
    focused_item = "() => document.querySelector('notify-inbox').shadowRoot.activeElement.closest('li')?.textContent || ''"
    assert "second message" in page.evaluate(focused_item)  # newest first, focused
    page.keyboard.press("ArrowDown")
    assert "first message" in page.evaluate(focused_item)
    page.keyboard.press("ArrowUp")
    assert "second message" in page.evaluate(focused_item)

    title = page.locator("notify-inbox li", has_text="first message").locator(".title")
    assert title.inner_text() == "<img src=x onerror=alert(1)>"
    assert page.locator("notify-inbox img").count() == 0
    link = page.locator("notify-inbox li", has_text="second message").locator("a.title")
    assert link.get_attribute("href") == "/orders/7"  # a path on the application's own site

    page.keyboard.press("Escape")
    assert panel.is_hidden()
    assert bell.get_attribute("aria-expanded") == "false"
    assert page.evaluate(
        "() => document.querySelector('notify-inbox').shadowRoot.activeElement.classList.contains('bell')"
    )
    assert page.problems == []
    assert only_own_origin(context, base_url) == []


def test_the_demo_form_sends_a_test_that_the_bell_shows(context, base_url, tmp_path):
    user = new_user()
    page = open_demo(context, base_url, user)
    wait_streaming(page)
    page.fill("#f-demo-title", "Demo title")
    page.fill("#f-demo-message", "Sent from the demo form")
    page.click("form.stack-form button[type=submit]")
    page.wait_for_url(lambda url: "sent=1" in url)
    wait_unread(page, 1)
    wait_listed(page, "Sent from the demo form")
    page.click(BELL)
    # UPDATE_SCREENSHOTS=1 writes the README's picture of the open bell.
    folder = ROOT / "docs" / "screenshots" if os.environ.get("UPDATE_SCREENSHOTS") else tmp_path
    page.screenshot(path=folder / "inbox-demo.png")
    page.locator("notify-inbox").get_by_role("button", name="Mark all read").click()
    wait_unread(page, 0)
    assert other_than_closed_streams(page) == []  # the form's navigation closes the first


def test_the_demo_page_needs_a_session(chromium, base_url):
    context = chromium.new_context()
    try:
        page = context.new_page()
        page.goto(f"{base_url}/inbox/demo?user_id=alice")
        assert urlsplit(page.url).path == "/login"
    finally:
        context.close()


def test_the_user_page_shows_each_ones_inbox_state_and_follows_it_live(context, base_url):
    user = new_user()
    ids = {
        name: send_in_app(base_url, user, f"{name} one")
        for name in ("fresh", "seen", "read", "gone")
    }
    for name, action in (("seen", "seen"), ("read", "read"), ("gone", "archive")):
        reply = requests.post(
            f"{base_url}/notifications/{ids[name]}/{action}", headers=ADMIN_HEADERS, timeout=10
        )
        assert reply.status_code == 200, reply.text
    page = context.new_page()
    page.goto(f"{base_url}/users/{user}")

    def state(name: str):
        return page.locator(f'tr[data-id="{ids[name]}"] [data-field=inbox_state]')

    expected = {"fresh": "unread", "seen": "seen", "read": "read", "gone": "archived"}
    for name, shown in expected.items():
        assert state(name).get_attribute("data-inbox") == shown, name
    assert state("read").inner_text().startswith("Read")
    assert state("read").locator("time").count() == 1  # since when
    assert state("gone").inner_text().startswith("Archived")  # archived ones stay listed here

    requests.post(
        f"{base_url}/notifications/{ids['fresh']}/read", headers=ADMIN_HEADERS, timeout=10
    )
    page.wait_for_function(
        'id => document.querySelector(`tr[data-id="${id}"] [data-field=inbox_state]`)'
        ".getAttribute('data-inbox') === 'read'",
        arg=ids["fresh"],
    )
