"""Outbound webhooks end to end: notifications delivered through the service (in-app, or email
to the real SMTP server) and their events POSTed to a real receiver on 127.0.0.1, which checks
every request with `standardwebhooks`. Retries run on a still clock moved past each retry time,
through the service's sweep, as the cron would run it."""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import timedelta

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from common.config import load_settings
from common.hosting import HTTP_FUNCTIONS, FunctionRouter
from common.model import SENT, utcnow
from common.notification_events import EventBus
from common.runtime import set_service
from common.webhooks.records import SENDING
from common.webhooks.service import Webhooks
from common.webhooks.store import make_webhook_store
from tests.support.auth import AuthClient
from tests.support.services import installed_service
from tests.support.smtp_server import REJECT, TEMPFAIL
from tests.support.webhook_receiver import Received, WebhookReceiver

ALL_EVENTS = [
    "notification.sent",
    "notification.delivered",
    "notification.failed",
    "notification.retry_scheduled",
    "notification.suppressed",
]
IN_APP = {"user_id": "ann", "notification_type": "in_app", "message": "your code is 1234"}


# Only the functions these tests call (webhooks, and API keys for a non-admin key): the others
# are no part of this and may be mid-change.
USED = ("http_webhooks.py", "http_access.py")


def webhook_router() -> FunctionRouter:
    return FunctionRouter([spec for spec in HTTP_FUNCTIONS if spec.source in USED])


class StillClock:
    def __init__(self):
        self.now = utcnow()

    def __call__(self):
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock():
    return StillClock()


@pytest.fixture
def receiver():
    with WebhookReceiver() as receiver:
        yield receiver


@pytest.fixture
def make_service(settings_env, clock):
    """Install a service with webhooks (and these extra settings); closed afterwards."""
    made = []

    def make(**extra):
        env = {
            **settings_env,
            "WEBHOOK_ALLOW_PRIVATE": "true",
            "WEBHOOK_RETRY_SCHEDULE": "5,30,120",
            **{k: str(v) for k, v in extra.items()},
        }
        settings = load_settings(env)
        webhooks = Webhooks(settings, make_webhook_store(settings), clock)
        made.append(webhooks)
        return installed_service(
            settings, clock=clock, webhooks=webhooks, events=EventBus([webhooks])
        )

    yield make
    for webhooks in made:
        webhooks.close()
    set_service(None)


@pytest.fixture
def service(make_service):
    return make_service()


def register(service, receiver, events=ALL_EVENTS) -> dict:
    return service.webhooks.register({"url": receiver.url, "events": events})


def send(service, payload=IN_APP) -> str:
    """Submit and deliver one notification; its id."""
    notification = service.submit(payload)
    while (queued := service.queue.get(timeout=0)) is not None:
        service.deliver(queued)
    return notification.id


def verified(request: Received, secret: str) -> dict:
    return Webhook(secret).verify(request.body, request.headers)


def log_of(service, endpoint_id) -> list[dict]:
    return service.webhooks.deliveries(endpoint_id, 100, None)[0]


def wait_until(check, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, "the background dispatcher did not get there"
        time.sleep(0.02)
    return found


def settled(service, endpoint_id, attempts: int) -> list[dict]:
    """The log, once every delivery has had `attempts` attempts and none is being sent."""

    def done():
        items, _ = service.webhooks.store.list_deliveries(endpoint_id, 100, None)
        ready = all(d.attempts >= attempts and d.status != SENDING for d in items)
        return items and ready and log_of(service, endpoint_id)

    return wait_until(done)


def test_each_event_is_signed_and_received_once(service, receiver):
    hook = register(service, receiver)
    other = register(service, receiver, events=["notification.failed"])

    notification_id = send(service)

    [request] = receiver.wait_for(1)
    body = verified(request, hook["secret"])
    assert request.path == "/hooks" and request.headers["content-type"] == "application/json"
    assert body["type"] == "notification.sent"
    assert body["data"]["id"] == notification_id and body["data"]["status"] == SENT
    assert body["data"]["user_id"] == "ann" and body["data"]["provider"] == "in_app"
    assert "message" not in body["data"] and "1234" not in request.body.decode()
    [logged] = settled(service, hook["id"], 1)
    assert logged["id"] == request.webhook_id
    assert (logged["status"], logged["attempts"], logged["last_status_code"]) == (
        "succeeded",
        1,
        200,
    )
    assert logged["delivered_at"] and logged["event_type"] == "notification.sent"
    assert service.sweep().webhooks == 0
    assert len(receiver.received) == 1 and log_of(service, other["id"]) == []


def test_failures_at_the_smtp_server_are_events_without_the_address(
    make_service, receiver, smtp_server
):
    service = make_service(**smtp_server.env())
    hook = register(service, receiver, ["notification.failed", "notification.retry_scheduled"])
    email = {"user_id": "bob", "notification_type": "email", "email": "bob@example.com"}

    smtp_server.mode = TEMPFAIL
    later_id = send(service, {**email, "message": "one"})
    smtp_server.mode = REJECT
    failed_id = send(service, {**email, "message": "two"})

    bodies = [verified(r, hook["secret"]) for r in receiver.wait_for(2)]
    by_type = {b["type"]: b["data"] for b in bodies}
    assert by_type["notification.retry_scheduled"]["id"] == later_id
    failed = by_type["notification.failed"]
    assert failed["id"] == failed_id and failed["provider"] == "smtp"
    assert failed["error_code"].startswith("5") and failed["last_error"]
    for request in receiver.received:
        assert (
            "bob@example.com" not in request.body.decode()
            and "email" not in json.loads(request.body)["data"]
        )


def test_a_receiver_that_was_down_gets_every_event_exactly_once(service, receiver, clock):
    hook = register(service, receiver, ["notification.sent"])
    receiver.down()
    for _ in range(3):
        send(service)
    first = settled(service, hook["id"], 1)
    assert {d["status"] for d in first} == {"pending"}
    assert "could not connect" in first[0]["last_error"]

    clock.advance(5)  # the first retry: still down
    assert service.sweep().webhooks == 3
    assert {d["attempts"] for d in log_of(service, hook["id"])} == {2}

    receiver.up()
    clock.advance(29)  # not due yet
    assert service.sweep().webhooks == 0
    clock.advance(1)
    assert service.sweep().webhooks == 3

    clock.advance(10_000)
    assert service.sweep().webhooks == 0
    received = receiver.wait_for(3)
    assert len(received) == 3
    assert Counter(r.webhook_id for r in received) == {d["id"]: 1 for d in first}
    for request in received:
        verified(request, hook["secret"])
    assert {(d["status"], d["attempts"]) for d in log_of(service, hook["id"])} == {("succeeded", 3)}


def test_a_timed_out_attempt_is_made_again(make_service, receiver, clock):
    service = make_service(WEBHOOK_TIMEOUT="0.3")
    hook = register(service, receiver)
    receiver.answer_with(200, delay=1.0)
    send(service)
    [logged] = settled(service, hook["id"], 1)
    assert logged["status"] == "pending" and logged["last_error"] == "timed out after 0.3s"

    receiver.answer_with(204)
    clock.advance(5)
    assert service.sweep().webhooks == 1
    # At least once: the receiver saw the timed-out attempt too, under the same webhook-id.
    assert {r.webhook_id for r in receiver.wait_for(2)} == {logged["id"]}
    assert log_of(service, hook["id"])[0]["status"] == "succeeded"


def test_a_replay_sends_the_same_webhook_again(service, receiver):
    hook = register(service, receiver)
    send(service)
    [first] = receiver.wait_for(1)
    [logged] = settled(service, hook["id"], 1)

    reply = AuthClient(webhook_router()).post(f"/webhook-deliveries/{logged['id']}/replay")

    assert reply.status_code == 202, reply.get_json()
    assert reply.get_json()["id"] == logged["id"]
    second = receiver.wait_for(2)[1]
    assert second.webhook_id == first.webhook_id and second.body == first.body
    assert verified(second, hook["secret"]) == verified(first, hook["secret"])
    assert settled(service, hook["id"], 2)[0]["status"] == "succeeded"


def test_during_a_rotation_both_secrets_verify(make_service, receiver, clock):
    service = make_service(WEBHOOK_SECRET_GRACE_SECONDS="60")
    hook = register(service, receiver)
    rotated = service.webhooks.rotate_secret(hook["id"])
    send(service)

    [during] = receiver.wait_for(1)
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    assert verified(during, hook["secret"]) == verified(during, rotated["secret"])

    clock.advance(61)
    send(service)
    after = receiver.wait_for(2)[1]
    verified(after, rotated["secret"])
    with pytest.raises(WebhookVerificationError):
        verified(after, hook["secret"])


def test_an_endpoint_failing_too_often_is_disabled(make_service, receiver, clock):
    service = make_service(WEBHOOK_FAILURE_LIMIT="3")
    hook = register(service, receiver)
    receiver.answer_with(500)
    for _ in range(3):
        send(service)

    disabled = wait_until(
        lambda: (shown := service.webhooks.get(hook["id"]))["enabled"] is False and shown
    )
    assert disabled["disabled_reason"] == "HTTP 500" and disabled["disabled_at"]
    send(service)  # after the disabling: not even stored for it
    clock.advance(10_000)
    service.sweep()
    assert len(receiver.wait_for(3)) == 3
    time.sleep(0.2)  # give a wrongly kicked attempt the chance to show up
    assert len(receiver.received) == 3
    logged = log_of(service, hook["id"])
    assert len(logged) == 3 and {d["status"] for d in logged} == {"failed"}
    assert (
        AuthClient(webhook_router())
        .post(f"/webhook-deliveries/{logged[0]['id']}/replay")
        .status_code
        == 409
    )

    receiver.answer_with(200)
    assert AuthClient(webhook_router()).post(f"/webhooks/{hook['id']}/enable").status_code == 200
    send(service)
    verified(receiver.wait_for(4)[3], hook["secret"])


def test_a_slow_receiver_does_not_hold_up_a_delivery(service, receiver):
    register(service, receiver)
    receiver.answer_with(200, delay=2.0)

    notification_id = send(service)

    # The notification is sent while the receiver has not answered yet.
    assert receiver.answered == []
    assert service.get(notification_id).status == SENT
    assert len(receiver.wait_answered(1, timeout=10)) == 1
