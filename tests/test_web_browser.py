"""The web interface end to end: headless Chromium against the real runner (in-process queue).

Email is pointed at a port where nothing listens, so email notifications fail, retry and give
up: that is how the retrying and failed states and the retry button are seen for real.

UPDATE_SCREENSHOTS=1 writes the README's screenshots to docs/screenshots/ (otherwise they go to
a temporary folder, so that the run still checks every page renders at both widths).
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.support.auth import ADMIN_HEADERS
from tests.support.browser import (  # noqa: F401  (fixtures)
    DESKTOP,
    PHONE,
    browser_page_fixture,
    chromium_fixture,
    log_in,
    watch_for_problems,
)
from tests.support.runner import free_port, running_service

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
PAGES = ("/", "/send-notification", "/users/alice", "/dashboard", "/message-templates")
LIVE = 15_000  # ms: the longest a live update may take here


@pytest.fixture(scope="module")
def base_url(tmp_path_factory):
    env = {
        "DATA_DIR": str(tmp_path_factory.mktemp("web-data")),
        "SWEEP_INTERVAL": "0.5",
        "MAIL_SERVER": "127.0.0.1",
        "MAIL_PORT": str(free_port()),  # nothing listens: every email fails (transient)
        "MAIL_DEFAULT_SENDER": "notify@example.com",
        "MAIL_TIMEOUT": "2",
        "MAX_RETRIES": "1",
        "RETRY_SCHEDULE": "0.5",
    }
    with running_service(env) as url:
        yield url


def api(base_url: str, path: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        base_url + path, data=data, headers={"Content-Type": "application/json", **ADMIN_HEADERS}
    )
    with urllib.request.urlopen(request, timeout=5) as reply:
        return json.load(reply)


def new_user() -> str:
    return f"user-{uuid.uuid4().hex[:8]}"


def fill_form(page, user_id: str, kind: str, message: str, **fields: str) -> None:
    page.fill("#f-user_id", user_id)
    page.click(f"label[for=f-type-{kind}]")
    for name, value in fields.items():
        page.fill(f"#f-{name}", value)
    page.fill("#f-message", message)


def test_send_an_in_app_notification_and_watch_it_reach_sent(browser_page, base_url):
    page, user = browser_page, new_user()
    page.goto(f"{base_url}/send-notification")
    fill_form(page, user, "in_app", "Your order has shipped")
    page.click("main button[type=submit]")

    page.wait_for_selector("#result")
    assert "Notification accepted" in page.inner_text("#result h2")
    notification_id = page.inner_text("[data-live-notification] code[data-field=id]")
    assert re.fullmatch(r"[0-9a-f-]{36}", notification_id)
    status = page.locator("[data-live-notification] [role=status] .badge")
    status.and_(page.locator("[data-status=sent]")).wait_for(timeout=LIVE)
    assert status.inner_text() == "Sent"
    assert api(base_url, f"/notifications/{notification_id}")["status"] == "sent"
    assert page.problems == []


def test_a_bad_email_is_shown_beside_the_field(browser_page, base_url):
    page, user = browser_page, new_user()
    page.goto(f"{base_url}/send-notification")
    fill_form(page, user, "email", "Hello <b>there</b>", email="not-an-email")
    page.click("main button[type=submit]")

    error = page.locator("#f-email-error")
    error.wait_for()
    assert "must be a valid email address" in error.inner_text()
    field = page.locator(".field", has=page.locator("#f-email"))
    assert field.locator("#f-email-error").count() == 1  # beside its own field
    assert page.get_attribute("#f-email", "aria-invalid") == "true"
    assert page.input_value("#f-email") == "not-an-email"
    assert page.input_value("#f-message") == "Hello <b>there</b>"
    assert page.input_value("#f-user_id") == user
    assert page.is_checked("#f-type-email")
    assert api(base_url, f"/users/{user}/notifications")["notifications"] == []


def test_the_users_page_finds_the_notification(browser_page, base_url):
    page, user = browser_page, new_user()
    sent = api(base_url, "/notifications", {"user_id": user, "type": "in_app", "message": "Hi!"})
    page.goto(base_url)
    page.fill("#home-user-id", user)
    page.press("#home-user-id", "Enter")
    page.wait_for_url(f"{base_url}/users/{user}")

    row = page.locator(f"tr[data-id='{sent['id']}']")
    assert "Hi!" in row.inner_text()
    row.locator(".badge[data-status=sent]").wait_for(timeout=LIVE)
    assert row.locator("[data-field=retry_count]").inner_text() == "0 of 1"


def test_fields_that_do_not_apply_are_hidden(browser_page, base_url):
    page = browser_page
    page.goto(f"{base_url}/send-notification")
    for kind, shown, hidden in (
        ("in_app", [], ["#f-email", "#f-subject", "#f-phone"]),
        ("email", ["#f-email", "#f-subject"], ["#f-phone"]),
        ("sms", ["#f-phone"], ["#f-email", "#f-subject"]),
    ):
        page.click(f"label[for=f-type-{kind}]")
        for selector in shown:
            assert page.is_visible(selector), f"{selector} hidden for {kind}"
        for selector in hidden:
            assert page.is_hidden(selector), f"{selector} shown for {kind}"


def test_a_failing_email_shows_retrying_then_failed_with_its_error(browser_page, base_url):
    page, user = browser_page, new_user()
    page.goto(f"{base_url}/send-notification")
    fill_form(page, user, "email", "Welcome!", email="ann@example.com", subject="Hi")
    page.click("main button[type=submit]")

    panel = page.locator("[data-live-notification]")
    panel.locator(".badge[data-status=failed_permanently]").wait_for(timeout=LIVE)
    assert "cannot reach 127.0.0.1" in panel.locator("[data-field=last_error]").inner_text()
    assert panel.locator("[data-field=retry_count]").inner_text() == "1 of 1"
    assert page.get_attribute("[data-live-notification]", "data-status") == "failed_permanently"


def test_the_retry_button_requeues_a_failed_notification(browser_page, base_url):
    page, user = browser_page, new_user()
    body = {"user_id": user, "type": "email", "email": "ann@example.com", "message": "x"}
    notification_id = api(base_url, "/notifications", body)["id"]
    page.goto(f"{base_url}/users/{user}")
    row = page.locator(f"tr[data-id='{notification_id}']")
    row.locator(".badge[data-status=failed_permanently]").wait_for(timeout=LIVE)

    button = row.get_by_role("button", name=re.compile("Retry"))
    button.focus()
    page.keyboard.press("Enter")
    row.locator("[data-row-note]", has_text="Queued again").wait_for()
    assert "Queued again" in page.inner_text("#user-notice")
    # retried from scratch: it runs again and, the mail server still being down, fails again
    row.locator(".badge[data-status=failed_permanently]").wait_for(timeout=LIVE)
    assert page.url == f"{base_url}/users/{user}"  # no navigation: the JSON API did it


def test_a_retry_that_is_not_allowed_shows_the_reason(browser_page, base_url):
    page, user = browser_page, new_user()
    body = {"user_id": user, "type": "in_app", "message": "x"}
    notification_id = api(base_url, "/notifications", body)["id"]
    page.goto(f"{base_url}/users/{user}")
    row = page.locator(f"tr[data-id='{notification_id}']")
    row.locator(".badge[data-status=sent]").wait_for(timeout=LIVE)
    assert row.locator("[data-retry-form]").is_hidden()  # nothing to retry
    # A page older than the notification's last change still offers the button: the API says no.
    row.locator("[data-retry-form]").evaluate("form => form.hidden = false")
    row.get_by_role("button", name=re.compile("Retry")).click()
    note = row.locator("[data-row-note].bad")
    note.wait_for()
    assert "already sent" in note.inner_text()


def test_a_double_click_sends_once(browser_page, base_url):
    page, user = browser_page, new_user()
    page.goto(f"{base_url}/send-notification")
    fill_form(page, user, "in_app", "only once")
    page.dblclick("main button[type=submit]")
    page.wait_for_selector("#result")
    assert len(api(base_url, f"/users/{user}/notifications")["notifications"]) == 1


def test_keyboard_only(browser_page, base_url):
    page, user = browser_page, new_user()
    page.goto(f"{base_url}/send-notification")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip-link"
    for _ in range(15):  # through the nav to the first field
        if page.evaluate("document.activeElement.id") == "f-user_id":
            break
        page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "f-user_id"
    page.keyboard.type(user)
    page.keyboard.press("Tab")  # the type radios: arrows choose
    page.keyboard.press("ArrowRight")
    assert page.is_checked("#f-type-email") and page.is_visible("#f-email")
    page.keyboard.press("ArrowRight")
    assert page.is_checked("#f-type-sms") and page.is_hidden("#f-email")
    page.keyboard.press("Tab")
    page.keyboard.type("+14155550123")
    page.keyboard.press("Tab")
    page.keyboard.type("Sent with the keyboard")
    page.keyboard.press("Tab")
    assert "Send notification" in page.evaluate("document.activeElement.textContent")
    page.keyboard.press("Enter")
    page.locator("#result .badge[data-status=sent]").wait_for(timeout=LIVE)


def test_the_dashboard_refreshes_by_itself(browser_page, base_url):
    page = browser_page
    page.goto(f"{base_url}/dashboard")
    total = page.locator(".stat-strip [data-stat=total]")
    before = int(total.inner_text().replace(",", ""))
    api(base_url, "/notifications", {"user_id": new_user(), "type": "in_app", "message": "x"})
    page.wait_for_function(
        "n => Number(document.querySelector('.stat-strip [data-stat=total]')"
        ".textContent.replace(/\\D/g, '')) > n",
        arg=before,
        timeout=LIVE,
    )
    assert page.is_visible("[data-live-note]")


def test_the_form_works_without_javascript(chromium, base_url):
    context = chromium.new_context(java_script_enabled=False, viewport=DESKTOP)
    try:
        page, user = context.new_page(), new_user()
        log_in(page, base_url)  # the login form works without script too
        page.goto(f"{base_url}/send-notification")
        fill_form(page, user, "sms", "no script", phone="12")
        page.click("main button[type=submit]")
        assert "E.164" in page.inner_text("#f-phone-error")
        page.fill("#f-phone", "+14155550123")
        page.click("main button[type=submit]")
        assert "Notification accepted" in page.inner_text("#result h2")
        assert page.is_hidden("#f-email")  # hidden by CSS alone
    finally:
        context.close()


@pytest.mark.parametrize("path", PAGES)
def test_every_page_fits_a_360_px_screen_and_loads_nothing_from_elsewhere(chromium, base_url, path):
    context = chromium.new_context(viewport={"width": 360, "height": 740})
    try:
        page = context.new_page()
        log_in(page, base_url)
        problems = watch_for_problems(page)  # a CSP violation shows up here
        requested: list[str] = []
        page.on("request", lambda request: requested.append(request.url))
        page.goto(base_url + path)
        page.wait_for_load_state("networkidle")
        assert page.evaluate("document.documentElement.scrollWidth") <= 360
        assert page.is_visible("nav[aria-label=Main]")
        assert requested and all(url.startswith(base_url) for url in requested), requested
        assert problems == []
    finally:
        context.close()


def test_screenshots(chromium, tmp_path):
    """The README's pictures: every page at 1280 px, and the form at phone width, from a
    service of their own with the default retry schedule (the pages show it)."""
    folder = ROOT / "docs" / "screenshots" if os.environ.get("UPDATE_SCREENSHOTS") else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    env = {
        "SWEEP_INTERVAL": "0.5",
        "MAIL_SERVER": "127.0.0.1",
        "MAIL_PORT": str(free_port()),  # the email fails and waits for its retry
        "MAIL_DEFAULT_SENDER": "notify@example.com",
    }
    with running_service(env) as base_url:
        _take_screenshots(chromium, base_url, folder)
    for name in ("home", "users", "dashboard", "send-notification", "phone-send-notification"):
        assert (folder / f"{name}.png").stat().st_size > 10_000


def _take_screenshots(chromium, base_url: str, folder: Path) -> None:
    user = "alice"
    for body in (
        {"type": "in_app", "message": "Your order #1042 has shipped and arrives on Thursday."},
        {"type": "sms", "phone": "+14155550123", "message": "Your verification code is 482913"},
        {"type": "email", "email": "alice@example.com", "subject": "Welcome", "message": "Hi!"},
        {"type": "in_app", "message": "Bob commented on your photo."},
    ):
        api(base_url, "/notifications", {"user_id": user, **body})
        time.sleep(0.05)
    time.sleep(1.5)  # the email's first attempt fails

    context = chromium.new_context(viewport=DESKTOP, locale="en-GB", timezone_id="UTC")
    phone = chromium.new_context(
        viewport=PHONE, locale="en-GB", timezone_id="UTC", device_scale_factor=2
    )
    try:
        page = context.new_page()
        log_in(page, base_url)
        shots = {"home.png": "/", "users.png": f"/users/{user}", "dashboard.png": "/dashboard"}
        for name, path in shots.items():
            page.goto(base_url + path)
            page.wait_for_timeout(600)  # the first live refresh
            page.screenshot(path=folder / name, full_page=True)
        page.goto(f"{base_url}/send-notification")
        fill_form(page, user, "email", "Your invoice is ready.", email="alice@example")
        page.click("main button[type=submit]")
        page.screenshot(path=folder / "send-notification-error.png", full_page=True)
        page.fill("#f-email", "alice@example.com")
        page.click("label[for=f-type-in_app]")
        page.click("main button[type=submit]")
        page.locator("#result .badge[data-status=sent]").wait_for(timeout=LIVE)
        page.screenshot(path=folder / "send-notification.png", full_page=True)

        small = phone.new_page()
        log_in(small, base_url)
        small.goto(f"{base_url}/send-notification")
        small.click("label[for=f-type-email]")
        small.screenshot(path=folder / "phone-send-notification.png", full_page=True)
    finally:
        context.close()
        phone.close()


# -- notification templates -------------------------------------------------------------------

TEMPLATE_KEY = "browser_welcome"


def ensure_template(base_url: str) -> str:
    """A template of this test module's own (the runner may have imported others at start)."""
    document = {
        "key": TEMPLATE_KEY,
        "description": "Made by the browser tests",
        "default_locale": "en",
        "variables": {
            "type": "object",
            "properties": {"name": {"type": "string", "minLength": 1}},
            "required": ["name"],
        },
        "locales": {
            "en": {
                "email": {"subject": "Welcome, {{ name }}", "text": "Hi {{ name }}."},
                "in_app": {"title": "Welcome", "body": "Hi {{ name }}, welcome aboard"},
            },
        },
    }
    listed = api(base_url, "/templates")["templates"]
    if not any(t["key"] == TEMPLATE_KEY for t in listed):
        api(base_url, "/templates", document)
    return TEMPLATE_KEY


def test_edit_a_template_with_a_live_preview_and_save_a_new_version(browser_page, base_url):
    page, key = browser_page, ensure_template(base_url)
    before = api(base_url, f"/templates/{key}")["version"]
    page.goto(base_url)
    page.click("nav >> text=Templates")
    page.click(f"a[href='/message-templates/{key}']")
    page.wait_for_url(f"{base_url}/message-templates/{key}")

    # the preview follows the sample data by itself, through the page's preview route
    page.fill("#f-sample_data", '{"name": "Grace"}')
    body = page.locator("[data-channel=in_app] pre[data-part=body]")
    body.filter(has_text="Hi Grace, welcome aboard").wait_for(timeout=LIVE)
    page.fill("#f-sample_data", "{}")
    page.locator("[data-problems]", has_text="required").wait_for(timeout=LIVE)
    page.fill("#f-sample_data", "{oops")
    page.locator("#f-sample_data-error", has_text="not valid JSON").wait_for(timeout=LIVE)

    # and the editor as typed: an unsaved subject shows, and nothing is saved
    page.fill("#f-sample_data", '{"name": "Grace"}')
    page.fill("#f-locales-en-email-subject", "Hello there, {{ name }}")
    subject = page.locator("[data-channel=email] pre[data-part=subject]")
    subject.filter(has_text="Hello there, Grace").wait_for(timeout=LIVE)
    assert api(base_url, f"/templates/{key}")["version"] == before

    page.fill("#f-locales-en-in_app-body", "Hello {{ name }}, good to see you")
    page.click("main button[value=save]")
    page.wait_for_url(f"{base_url}/message-templates/{key}?saved={before + 1}")
    versions = page.locator(".versions li[data-version]")
    assert versions.first.get_attribute("data-version") == str(before + 1)
    assert versions.count() == before + 1
    assert "Hello Ada, good to see you" in page.inner_text("[data-channel=in_app]")
    assert page.problems == []


def test_send_a_notification_from_a_template(browser_page, base_url):
    page, user, key = browser_page, new_user(), ensure_template(base_url)
    page.goto(f"{base_url}/send-notification")
    page.fill("#f-user_id", user)
    page.select_option("#f-template", key)
    assert page.is_hidden("#f-message") and page.is_hidden("[data-template-use]")
    page.fill(f"#f-var-{key}-name", "Lin")
    page.click("main button[type=submit]")

    page.wait_for_selector("#result")
    page.locator("#result .badge[data-status=sent]").wait_for(timeout=LIVE)
    notification_id = page.inner_text("[data-live-notification] code[data-field=id]")
    stored = api(base_url, f"/notifications/{notification_id}")
    assert stored["status"] == "sent" and stored["template"] == key
    assert "Lin" in stored["message"]  # rendered when accepted (the other test may edit it)
    assert page.problems == []


# -- a recipient's preferences and scheduled notifications -----------------------------------


def test_edit_preferences_on_the_users_page(browser_page, base_url):
    page, user = browser_page, new_user()
    page.goto(f"{base_url}/users/{user}")
    page.click("#preferences summary")
    page.uncheck("#pref-channel-sms")
    page.fill("#pref-timezone", "Europe/Paris")
    page.fill("#pref-quiet_start", "22:00")
    page.fill("#pref-quiet_end", "07:00")
    page.check("#pref-day-sat")
    page.check("#pref-day-sun")
    page.fill("#pref-cat-new-name", "marketing")
    page.select_option("select[name=cat-new-email]", "off")
    page.click("#preferences button[type=submit]")

    page.wait_for_url(re.compile(r"saved=preferences"))
    assert "Preferences saved." in page.inner_text("#user-notice")
    summary = page.inner_text("[data-preferences-summary]")
    assert "Europe/Paris" in summary and "quiet 22:00–07:00" in summary
    assert api(base_url, f"/users/{user}/preferences") == {
        "channels": {"email": True, "sms": False, "in_app": True},
        "categories": {"marketing": {"email": False}},
        "timezone": "Europe/Paris",
        "quiet_hours": {"start": "22:00", "end": "07:00", "days": ["sat", "sun"]},
    }

    # A bad time zone: the section opens again with the error beside the field.
    page.click("#preferences summary")
    page.fill("#pref-timezone", "Mars/Olympus")
    page.click("#preferences button[type=submit]")
    error = page.locator("#pref-timezone-error")
    error.wait_for()
    assert "Mars/Olympus" in error.inner_text()
    assert page.get_attribute("#pref-timezone", "aria-invalid") == "true"
    assert api(base_url, f"/users/{user}/preferences")["timezone"] == "Europe/Paris"
    assert page.problems == []


def test_cancel_a_scheduled_notification_by_clicking(browser_page, base_url):
    page, user = browser_page, new_user()
    send_at = (datetime.now(UTC) + timedelta(hours=3)).replace(microsecond=0)
    iso = send_at.isoformat().replace("+00:00", "Z")
    body = {"user_id": user, "type": "in_app", "message": "Later", "send_at": iso}
    notification_id = api(base_url, "/notifications", body)["id"]
    page.goto(f"{base_url}/users/{user}")
    row = page.locator(f"tr[data-id='{notification_id}']")
    assert row.locator(".badge").inner_text() == "Scheduled"
    when = row.locator("[data-field=send_at] time")
    assert when.get_attribute("datetime") == iso
    assert send_at.strftime("%H:%M:%S UTC") in when.inner_text()  # the script keeps UTC text

    row.get_by_role("button", name=re.compile("Cancel")).click()
    page.wait_for_url(re.compile(r"cancelled="))
    assert "was cancelled" in page.inner_text("#user-notice")
    row = page.locator(f"tr[data-id='{notification_id}']")
    assert row.locator(".badge").inner_text() == "Cancelled"
    assert row.locator("[data-cancel-form]").is_hidden()
    assert "cancelled by request" in row.locator("[data-field=status_reason]").inner_text()
    assert api(base_url, f"/notifications/{notification_id}")["status"] == "cancelled"
    assert page.problems == []


def test_the_dashboard_chart_of_the_last_hour_updates_live(browser_page, base_url):
    """A send shows up in the chart (accepted and sent lines, latency) without a reload."""
    page = browser_page
    page.goto(f"{base_url}/dashboard")
    assert page.is_hidden("[data-activity-off]"), "the runner records no activity"
    chart = page.locator("svg[data-chart=counts]")
    assert chart.get_attribute("role") == "img"
    assert "accepted" in page.text_content("#counts-chart-desc")
    total = page.locator("[data-activity-total=sent]")
    before = int(total.inner_text().replace(",", ""))
    summary_before = page.text_content("#counts-chart-desc")
    page.evaluate("window.notReloaded = true")
    sent = api(
        base_url, "/notifications", {"user_id": new_user(), "type": "in_app", "message": "x"}
    )
    page.wait_for_function(
        "n => Number(document.querySelector('[data-activity-total=sent]')"
        ".textContent.replace(/\\D/g, '')) > n",
        arg=before,
        timeout=LIVE,
    )
    assert api(base_url, f"/notifications/{sent['id']}")["status"] == "sent"
    assert page.evaluate("window.notReloaded") is True
    # Redrawn from the new numbers (the line's shape may not change: the y axis rescales).
    assert page.text_content("#counts-chart-desc") != summary_before
    assert page.get_attribute("[data-series=sent]", "d").startswith("M")
    assert page.get_attribute("[data-series=p50]", "d").startswith("M")
    assert page.locator("svg[data-chart=counts] [data-x-ticks] text").count() == 5
    assert page.problems == []
