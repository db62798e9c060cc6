"""Scheduling and cancelling through the API the runner serves: `send_at`, `cancel_key`,
POST /notifications/<id>/cancel and POST /notifications/cancel, with their errors, and who may
call them; preferences set through the API change what a send becomes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.support.auth import AuthClient
from tests.support.services import client_fixture, router_fixture, service_fixture  # noqa: F401


def days_ahead(days: int, hour: int = 9) -> str:
    """A send_at within MAX_SCHEDULE_DAYS of now, with an offset."""
    day = datetime.now(UTC) + timedelta(days=days)
    return day.replace(hour=hour, minute=0, second=0, microsecond=0).isoformat()


def send(client, **extra):
    body = {"user_id": "ann", "type": "email", "email": "ann@example.com", "message": "hi"}
    reply = client.post("/notifications", json={**body, **extra})
    assert reply.status_code == 201, reply.get_json()
    return reply.get_json()


def key_with(client, *scopes: str) -> str:
    reply = client.post("/api-keys", json={"name": "app", "scopes": list(scopes)})
    assert reply.status_code == 201, reply.get_json()
    return reply.get_json()["key"]


def test_send_at_is_stored_as_scheduled_and_shown(client):
    day = (datetime.now(UTC) + timedelta(days=3)).date().isoformat()
    sent = send(client, send_at=f"{day}T09:00:00+01:00", cancel_key="order-7")
    assert sent["status"] == "scheduled"
    shown = client.get(f"/notifications/{sent['id']}").get_json()
    assert shown["send_at"] == f"{day}T08:00:00Z" and shown["cancel_key"] == "order-7"


def test_bad_scheduling_input_is_a_400_naming_the_field(client, service):
    for bad in ({"send_at": "tomorrow"}, {"send_at": "2099-01-01T09:00:00"}):
        reply = client.post(
            "/notifications",
            json={"user_id": "ann", "type": "in_app", "message": "x", **bad},
        )
        assert reply.status_code == 400 and "send_at" in reply.get_json()["fields"]
    reply = client.post(
        "/notifications",
        json={"user_id": "ann", "type": "in_app", "message": "x", "cancel_key": ""},
    )
    assert reply.status_code == 400 and "cancel_key" in reply.get_json()["fields"]
    assert service.stats()["total"] == 0


def test_cancel_one_then_409_once_it_was_sent(client, service):
    later = send(client, send_at=days_ahead(2))
    reply = client.post(f"/notifications/{later['id']}/cancel")
    assert reply.status_code == 200 and reply.get_json()["status"] == "cancelled"
    assert client.post(f"/notifications/{later['id']}/cancel").status_code == 200

    now = client.post(
        "/notifications", json={"user_id": "ann", "type": "in_app", "message": "now"}
    ).get_json()
    service.deliver(now["id"])
    refused = client.post(f"/notifications/{now['id']}/cancel")
    assert refused.status_code == 409 and "sent" in refused.get_json()["error"]
    missing = client.post("/notifications/00000000-0000-4000-8000-000000000000/cancel")
    assert missing.status_code == 404


def test_cancel_by_key_cancels_each_waiting_one(client, service):
    first = send(client, send_at=days_ahead(2), cancel_key="order-1")
    second = send(client, send_at=days_ahead(3), cancel_key="order-1")
    reply = client.post("/notifications/cancel", json={"cancel_key": "order-1"})
    body = reply.get_json()
    assert reply.status_code == 200 and body["cancelled"] == 2
    assert sorted(body["ids"]) == sorted([first["id"], second["id"]])
    unknown = client.post("/notifications/cancel", json={"cancel_key": "order-404"})
    assert unknown.status_code == 404
    bad = client.post("/notifications/cancel", json={"cancel_key": 7})
    assert bad.status_code == 400 and "cancel_key" in bad.get_json()["fields"]

    done = client.post(
        "/notifications",
        json={"user_id": "ann", "type": "in_app", "message": "x", "cancel_key": "order-2"},
    ).get_json()
    service.deliver(done["id"])
    late = client.post("/notifications/cancel", json={"cancel_key": "order-2"})
    assert late.status_code == 409


def test_cancelling_needs_the_send_scope(client):
    later = send(client, send_at=days_ahead(2), cancel_key="k")
    reader = AuthClient(client.application, credentials=key_with(client, "read"))
    assert reader.post(f"/notifications/{later['id']}/cancel").status_code == 403
    assert reader.post("/notifications/cancel", json={"cancel_key": "k"}).status_code == 403
    sender = AuthClient(client.application, credentials=key_with(client, "send"))
    assert sender.post(f"/notifications/{later['id']}/cancel").status_code == 200


def test_preferences_set_through_the_api_suppress_a_send(client):
    reply = client.put(
        "/users/ann/preferences", json={"categories": {"marketing": {"email": False}}}
    )
    assert reply.status_code == 200, reply.get_json()
    suppressed = send(client, category="marketing")
    assert suppressed["status"] == "suppressed"
    assert "marketing" in suppressed["notification"]["status_reason"]
    assert send(client, category="orders")["status"] in ("queued", "pending")
