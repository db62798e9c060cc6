"""The dashboard's last hour, delivery receipts and webhook health: server-rendered SVG with
the numbers of notifications sent through the service (with the activity recorder on its
EventBus), and the JSON that app.js redraws from (GET /dashboard/activity)."""

from __future__ import annotations

import re
from pathlib import Path

import functions_framework
import pytest

from common.activity import ActivityRecorder
from common.activity_store import SqliteActivityStore
from common.notification_events import EventBus
from common.runtime import set_service
from tests.support.auth import ADMIN_KEY, auth_test_client
from tests.support.services import installed_service

ROOT = Path(__file__).resolve().parents[1]
IN_APP = {"user_id": "alice", "notification_type": "in_app", "message": "hello"}


@pytest.fixture(scope="module")
def app():
    return functions_framework.create_app("http_web", str(ROOT / "functions" / "http_web.py"))


@pytest.fixture
def recorder(settings):
    store = SqliteActivityStore(settings.data_dir / "activity.db")
    recorder = ActivityRecorder(store)
    yield recorder
    recorder.close()
    store.close()


@pytest.fixture
def service(settings, recorder):
    service = installed_service(settings, events=EventBus([recorder]))
    service.activity = recorder  # as the runtime wires it
    yield service
    set_service(None)
    service.store.close()


@pytest.fixture
def client(app, service):
    return auth_test_client(app)


def send_and_deliver(service, accepted: int, delivered: int) -> None:
    sent = [service.submit(IN_APP) for _ in range(accepted)]
    for notification in sent[:delivered]:
        assert service.deliver(notification.id) == "sent"


class FakeWebhooks:
    def __init__(self, endpoints=None, error=None):
        self.endpoints, self.error = endpoints or [], error

    def list(self):
        if self.error:
            raise self.error
        return self.endpoints


def test_the_page_draws_the_last_hour_from_what_was_sent(client, service):
    send_and_deliver(service, accepted=3, delivered=2)
    html = client.get("/dashboard").text
    assert re.search(r'data-activity-total="accepted">3<', html)
    assert re.search(r'data-activity-total="sent">2<', html)
    assert re.search(r'data-activity-total="failed">0<', html)
    for series in ("accepted", "sent", "failed", "p50", "p99"):
        path = re.search(rf'data-series="{series}" d="([^"]*)"', html).group(1)
        assert path.startswith("M"), series
    assert html.count(" L") > 100  # 60 minutes a line
    # Labelled for screen readers, with the numbers in words.
    assert 'role="img" aria-labelledby="counts-chart-title counts-chart-desc"' in html
    assert re.search(r"<desc [^>]*>Last hour, per minute, .*3 accepted, 2 sent, 0 failed", html)
    assert "p50 " in html and "Activity is not recorded" in html
    assert re.search(r"<p [^>]*data-activity-off hidden>", html)
    assert "<script>" not in html and "http://" not in html.replace('"http://www.w3', "")


def test_the_json_gives_sixty_minutes_and_the_same_chart(client, service):
    send_and_deliver(service, accepted=2, delivered=2)
    reply = client.get("/dashboard/activity")
    assert reply.status_code == 200 and reply.mimetype == "application/json"
    activity = reply.get_json()["activity"]
    assert activity["recorded"] and activity["available"]
    minutes = activity["minutes"]
    assert len(minutes) == 60 and minutes[-1]["minute"].endswith(":00Z")
    assert sum(m["accepted"] for m in minutes) == 2 and sum(m["sent"] for m in minutes) == 2
    sending = [m for m in minutes if m["sent"]]
    assert all(0 < m["p50_ms"] <= m["p99_ms"] < 10_000 for m in sending)
    assert activity["totals"] == {"accepted": 2, "sent": 2, "failed": 0}
    chart = activity["chart"]
    assert set(chart["counts"]["paths"]) == {"accepted", "sent", "failed"}
    assert [t["label"] for t in chart["counts"]["y_ticks"]] == ["0", "1", "2"]
    assert len(chart["x_ticks"]) == 5
    assert chart["latency"]["y_ticks"][0]["label"] == "1 ms"
    html = client.get("/dashboard").text
    assert chart["counts"]["paths"]["accepted"] in html  # the page drew the same geometry


def test_failures_outnumbering_sends_are_shaded(client, service):
    from common.web_dashboard import chart

    points = [
        {"minute": f"2026-01-01T10:{i:02d}:00Z", "accepted": 5, "sent": 0 if i > 50 else 5}
        | {"failed": 5 if i > 50 else 0, "p50_ms": None, "p99_ms": None}
        for i in range(60)
    ]
    bands = chart(points)["counts"]["alerts"]
    assert len(bands) == 9


def test_without_recorded_activity_the_page_says_so(app, client, service):
    del service.activity
    html = client.get("/dashboard").text
    assert re.search(r"<p class=\"muted\" data-activity-off>Activity is not recorded", html)
    assert client.get("/dashboard/activity").get_json()["activity"] == {"recorded": False}


def test_receipts_and_webhook_health(client, service, monkeypatch):
    counts = {"delivered": 4, "undelivered": 1, None: 2}
    monkeypatch.setattr(service.store, "count_by_delivery_status", lambda: counts, raising=False)
    service.webhooks = FakeWebhooks(
        [
            {"id": "w1", "url": "https://a.example/hook", "events": ["notification.sent"]}
            | {"disabled_at": None, "failures_in_a_row": 0},
            {"id": "w2", "url": "https://b.example/<hook>", "events": []}
            | {"disabled_at": "2026-01-01T00:00:00Z", "disabled_reason": "20 failures"}
            | {"failures_in_a_row": 20, "last_error": "HTTP 500"},
        ]
    )
    html = client.get("/dashboard").text
    assert re.search(r'data-receipt="delivered"><td>delivered</td><td [^>]*>4<', html)
    assert re.search(r'data-receipt="not_reported"><td>not reported</td><td [^>]*>2<', html)
    assert "https://b.example/&lt;hook&gt;" in html
    row = re.search(r'<tr data-webhook="w2">.*?</tr>', html).group(0)
    assert "Disabled" in row and "20 failures" in row and ">20<" in row and "HTTP 500" in row
    data = client.get("/dashboard/activity").get_json()
    assert data["receipts"]["counts"][0] == {"status": "delivered", "count": 4}
    assert [e["enabled"] for e in data["webhooks"]["endpoints"]] == [True, False]

    service.webhooks = FakeWebhooks(error=OSError("down"))
    html = client.get("/dashboard").text
    assert "Webhooks are not available in this deployment right now" in html


def test_without_webhooks_or_receipts_the_panels_say_so(client, service):
    service.webhooks = None
    html = client.get("/dashboard").text
    assert re.search(r"<p class=\"muted\" data-webhooks-off>Webhooks are not available", html)
    if not hasattr(service.store, "count_by_delivery_status"):
        assert re.search(r"data-receipts-off>Delivery receipts are not counted", html)


def test_the_json_needs_a_login_and_a_session_is_enough(app, service):
    browser = auth_test_client(app, credentials=None)
    refused = browser.get("/dashboard/activity")
    assert refused.status_code == 303 and refused.headers["Location"].startswith("/login")
    form = browser.get("/login").text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
    logged_in = browser.post("/login", data={"csrf_token": csrf, "api_key": ADMIN_KEY})
    assert logged_in.status_code == 303
    reply = browser.get("/dashboard/activity")
    assert reply.status_code == 200 and reply.get_json()["activity"]["recorded"]
