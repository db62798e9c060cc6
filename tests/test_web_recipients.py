"""The user page's recipient features without script: a scheduled notification's send time and
reason, the Cancel button, and the preferences form (saved, refused beside its fields, CSRF)."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import functions_framework
import pytest

from common.hosting import FunctionRouter
from common.model import CANCELLED, SCHEDULED, SUPPRESSED, utcnow
from common.runtime import set_service
from tests.support.auth import ADMIN_HEADERS, AuthClient, auth_test_client
from tests.support.services import installed_service
from tests.support.states import make_sent

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def service(settings):
    service = installed_service(settings)
    yield service
    set_service(None)
    service.store.close()


@pytest.fixture(scope="module")
def app():
    return functions_framework.create_app("http_web", str(ROOT / "functions" / "http_web.py"))


@pytest.fixture
def client(app, service):
    return auth_test_client(app)


@pytest.fixture(scope="module")
def router():
    return FunctionRouter()


@pytest.fixture
def api(router, service):
    return AuthClient(router, credentials=None)


def token_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def schedule(service, user_id="alice", hours=2):
    send_at = (utcnow() + timedelta(hours=hours)).replace(microsecond=0)
    when = send_at.isoformat().replace("+00:00", "Z")
    payload = {"user_id": user_id, "type": "in_app", "message": "later", "send_at": when}
    notification = service.submit(payload)
    assert notification.status == SCHEDULED
    return notification


def cancel(client, notification_id, user_id="alice", token=True):
    data = {"action": "cancel", "notification_id": notification_id}
    if token:
        data["csrf_token"] = token_of(client.get(f"/users/{user_id}").text)
    return client.post(f"/users/{user_id}", data=data)


def save_preferences(client, user_id="ann", **fields):
    data = {
        "action": "preferences",
        "csrf_token": token_of(client.get(f"/users/{user_id}").text),
        "channel-email": "on",
        "channel-in_app": "on",
        "timezone": "Europe/Paris",
        "quiet_start": "22:00",
        "quiet_end": "07:00",
        "quiet_days": ["mon", "tue"],
        "cat-new-name": "Marketing",
        "cat-new-email": "off",
        "cat-new-sms": "",
        "cat-new-in_app": "on",
    }
    data.update(fields)
    return client.post(f"/users/{user_id}", data={k: v for k, v in data.items() if v is not None})


def api_preferences(api, user_id="ann"):
    """What the JSON API (http_preferences) gives back, asked as the admin."""
    reply = api.get(f"/users/{user_id}/preferences", headers=ADMIN_HEADERS)
    assert reply.status_code == 200
    return reply.get_json()


# -- scheduled notifications and cancelling ----------------------------------------------------


def test_a_scheduled_notification_shows_when_it_goes_and_a_cancel_button(client, service):
    scheduled = schedule(service)
    html = client.get("/users/alice").text
    row = html[html.index(f'data-id="{scheduled.id}"') :].split("</tr>")[0]
    iso = scheduled.send_at.isoformat().replace("+00:00", "Z")
    assert f'<time datetime="{iso}" data-utc>' in row
    assert scheduled.send_at.strftime("%d %b %Y, %H:%M:%S UTC") in row
    assert ">Scheduled<" in row
    cancel_form = row[row.index("data-cancel-form") - 60 :]
    assert 'value="cancel"' in cancel_form and " hidden" not in cancel_form.split(">")[0]
    assert "Cancel notification" in row


def test_the_send_time_is_also_on_the_users_own_clock(client, service):
    service.preferences.put("alice", {"timezone": "Asia/Tokyo", "channels": {}}, utcnow())
    scheduled = schedule(service)
    local = scheduled.send_at.astimezone(ZoneInfo("Asia/Tokyo"))
    assert f"({local:%H:%M, %d %b %Y} Asia/Tokyo)" in client.get("/users/alice").text


def test_cancel_cancels_and_says_so(client, service):
    scheduled = schedule(service)
    reply = cancel(client, scheduled.id)
    assert reply.status_code == 303
    assert "cancelled=" + scheduled.id in reply.headers["Location"]
    stored = service.store.get(scheduled.id)
    assert stored.status == CANCELLED
    page = client.get(reply.headers["Location"]).text
    assert f"<code>{scheduled.id[:8]}</code> was cancelled" in page
    assert "cancelled by request" in page  # its status_reason, on its row


def test_cancelling_a_sent_one_is_a_409_with_the_reason(client, service):
    sent = service.submit({"user_id": "alice", "type": "in_app", "message": "hi"})
    make_sent(service.store, sent.id)
    reply = cancel(client, sent.id)
    assert reply.status_code == 409
    assert "too late to cancel" in reply.text
    assert service.store.get(sent.id).status != CANCELLED


def test_a_sent_row_offers_no_cancel(client, service):
    sent = service.submit({"user_id": "alice", "type": "in_app", "message": "hi"})
    make_sent(service.store, sent.id)
    html = client.get("/users/alice").text
    row = html[html.index(f'data-id="{sent.id}"') :].split("</tr>")[0]
    assert re.search(r'class="cancel-form" data-cancel-form hidden', row)


def test_cancel_needs_the_token_and_the_right_user(client, service):
    scheduled = schedule(service)
    assert cancel(client, scheduled.id, token=False).status_code == 403
    assert cancel(client, scheduled.id, user_id="bob").status_code == 404
    assert service.store.get(scheduled.id).status == SCHEDULED


def test_a_suppressed_row_says_why(client, service):
    service.preferences.put("alice", {"channels": {"in_app": False}}, utcnow())
    suppressed = service.submit({"user_id": "alice", "type": "in_app", "message": "hi"})
    assert suppressed.status == SUPPRESSED
    html = client.get("/users/alice").text
    assert ">Suppressed<" in html
    assert "the recipient turned off in_app" in html


# -- preferences -------------------------------------------------------------------------------


def test_preferences_saved_on_the_page_are_what_the_api_gives_back(client, api):
    reply = save_preferences(client)
    assert reply.status_code == 303
    assert reply.headers["Location"].endswith("saved=preferences#preferences")
    assert api_preferences(api) == {
        "channels": {"email": True, "sms": False, "in_app": True},
        "categories": {"marketing": {"email": False, "in_app": True}},
        "timezone": "Europe/Paris",
        "quiet_hours": {"start": "22:00", "end": "07:00", "days": ["mon", "tue"]},
    }
    page = client.get(reply.headers["Location"]).text
    assert "Preferences saved." in page
    assert 'value="Europe/Paris"' in page and 'name="cat-0-name" value="marketing"' in page


def test_the_form_shows_the_stored_preferences_and_a_second_save_keeps_them(client, service):
    save_preferences(client)
    html = client.get("/users/ann").text
    assert re.search(r'id="pref-channel-sms" name="channel-sms" value="on">', html)  # unticked
    assert 'id="pref-day-mon" name="quiet_days" value="mon" checked' in html
    assert 'id="pref-quiet_start" name="quiet_start" type="time" value="22:00"' in html
    # The existing row edited, no new row: the override changes and nothing else does.
    fields = {"cat-new-name": "", "cat-new-email": "", "cat-new-in_app": ""}
    fields.update({"cat-0-name": "marketing", "cat-0-email": "on", "cat-0-in_app": "on"})
    assert save_preferences(client, **fields).status_code == 303
    stored = service.preferences.get("ann")
    assert stored["categories"] == {"marketing": {"email": True, "in_app": True}}
    # Every channel back on "Follow channel": the row goes.
    fields.update({"cat-0-email": "", "cat-0-in_app": ""})
    assert save_preferences(client, **fields).status_code == 303
    assert service.preferences.get("ann")["categories"] == {}


def test_a_bad_time_zone_is_a_400_beside_its_field_and_nothing_is_stored(client, service):
    reply = save_preferences(client, timezone="Mars/Olympus")
    assert reply.status_code == 400
    assert "Nothing was saved" in reply.text
    error = re.search(r'id="pref-timezone-error">.*?</p>', reply.text, re.S).group(0)
    assert "Mars/Olympus" in error
    assert 'value="Mars/Olympus"' in reply.text  # what was typed comes back
    assert 'aria-invalid="true" aria-describedby="pref-timezone-error"' in reply.text
    assert service.preferences.get("ann") is None


def test_quiet_hours_and_category_problems_stand_beside_their_fields(client, service):
    reply = save_preferences(client, quiet_end="", **{"cat-new-name": "no spaces!"})
    assert reply.status_code == 400
    assert 'id="pref-quiet_end-error"' in reply.text
    assert re.search(r'id="pref-cat-new-error">.*?is not a category name', reply.text, re.S)
    assert service.preferences.get("ann") is None


def test_saving_preferences_needs_the_token(client, service):
    data = {"action": "preferences", "timezone": "Europe/Paris", "channel-email": "on"}
    reply = client.post("/users/ann", data=data)
    assert reply.status_code == 403
    assert "This form has expired" in reply.text
    assert service.preferences.get("ann") is None


def test_an_unknown_action_changes_nothing(client, service):
    token = token_of(client.get("/users/ann").text)
    reply = client.post("/users/ann", data={"action": "delete", "csrf_token": token})
    assert reply.status_code == 400


def test_the_new_statuses_have_labels_on_the_dashboard_and_the_filter(client, service):
    schedule(service)
    dashboard = client.get("/dashboard").text
    for label in ("Scheduled", "Cancelled", "Suppressed"):
        assert f'<span class="badge-label">{label}</span>' in dashboard
    assert 'data-stat="by_status.scheduled">1<' in dashboard
    listing = client.get("/users/alice?status=scheduled")
    assert listing.status_code == 200 and ">later<" in listing.text
