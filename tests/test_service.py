"""The use cases, without HTTP or a broker: retries, dead letters, sweep, manual retry.

The channel here is a scripted stand-in so that each outcome can be forced; the real channels
are tested against a real SMTP server and a Twilio-compatible endpoint in their own files.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from common.channels.base import Channel, DeliveryResult
from common.errors import Conflict, NotFound, ValidationError
from common.model import (
    FAILED_PERMANENTLY,
    PENDING,
    QUEUED,
    RETRY_SCHEDULED,
    SENDING,
    SENT,
    utcnow,
)
from common.queue.base import QueueUnavailable
from common.queue.memory import MemoryQueue
from common.service import NotificationService
from common.store.sqlite import SqliteStore


class ScriptedChannel(Channel):
    """Returns the queued results in order, then `sent`."""

    notification_type = "in_app"

    def __init__(self):
        self.script: list[DeliveryResult] = []
        self.delivered: list[str] = []

    def deliver(self, notification):
        self.delivered.append(notification.id)
        return self.script.pop(0) if self.script else DeliveryResult.sent("ok")


class Clock:
    def __init__(self):
        self.now = utcnow()

    def __call__(self):
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class BrokenQueue(MemoryQueue):
    def __init__(self):
        super().__init__()
        self.down = True

    def publish(self, ids):
        if self.down:
            raise QueueUnavailable("broker down")
        super().publish(ids)


@pytest.fixture
def channel():
    return ScriptedChannel()


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def service(tmp_path, settings, channel, clock):
    store = SqliteStore(tmp_path / "n.db")
    channels = {"in_app": channel, "email": channel, "sms": channel}
    return NotificationService(settings, store, MemoryQueue(), channels, clock=clock)


def submit(service, **extra):
    payload = {"user_id": "u1", "notification_type": "in_app", "message": "hi", **extra}
    return service.submit(payload)


def drain(service) -> list[str]:
    """Deliver everything waiting on the in-process queue, as the consumer would."""
    outcomes = []
    while (notification_id := service.queue.get(timeout=0)) is not None:
        outcomes.append(service.deliver(notification_id))
    return outcomes


def test_submit_stores_then_queues(service):
    notification = submit(service)
    assert notification.status == QUEUED
    assert service.get(notification.id).status == QUEUED
    assert drain(service) == [SENT]
    stored = service.get(notification.id)
    assert stored.status == SENT and stored.sent_at is not None


def test_invalid_input_stores_nothing(service):
    with pytest.raises(ValidationError):
        service.submit({"user_id": "u1", "notification_type": "email", "message": "x"})
    assert service.stats()["total"] == 0


def test_a_duplicate_message_never_sends_twice(service, channel):
    notification = submit(service)
    service.queue.publish([notification.id])  # the broker may deliver twice
    assert drain(service) == [SENT, "skipped"]
    assert channel.delivered == [notification.id]


def test_transient_failures_follow_the_schedule_then_dead_letter(service, channel, clock):
    channel.script = [DeliveryResult.transient("451 try later")] * 6
    notification = submit(service)
    schedule = service.settings.retry_schedule
    for attempt in range(1, 6):
        assert drain(service) == [RETRY_SCHEDULED]
        stored = service.get(notification.id)
        assert stored.retry_count == attempt and stored.last_error == "451 try later"
        assert stored.next_retry_time == clock.now + timedelta(seconds=schedule[attempt - 1])
        assert service.sweep().requeued == 0  # not due yet
        clock.advance(schedule[attempt - 1])
        assert service.sweep().requeued == 1
    assert drain(service) == [FAILED_PERMANENTLY]
    stored = service.get(notification.id)
    assert stored.status == FAILED_PERMANENTLY and stored.retry_count == 5
    assert [d["id"] for d in service.queue.dead_letters] == [notification.id]
    assert len(channel.delivered) == 6  # the first attempt and five retries


def test_a_permanent_failure_does_not_retry(service, channel):
    channel.script = [DeliveryResult.permanent("Twilio error 21211: invalid 'To'")]
    notification = submit(service)
    assert drain(service) == [FAILED_PERMANENTLY]
    stored = service.get(notification.id)
    assert stored.retry_count == 0 and "21211" in stored.last_error
    assert len(service.queue.dead_letters) == 1


def test_a_channel_that_raises_is_a_transient_failure(service, channel):
    def explode(notification):
        raise RuntimeError("bug")

    channel.deliver = explode
    notification = submit(service)
    assert drain(service) == [RETRY_SCHEDULED]
    assert "RuntimeError" in service.get(notification.id).last_error


def test_broker_down_leaves_pending_and_the_sweep_publishes_later(
    tmp_path, settings, channel, clock
):
    queue = BrokenQueue()
    service = NotificationService(
        settings, SqliteStore(tmp_path / "n.db"), queue, {"in_app": channel}, clock=clock
    )
    notification = submit(service)
    assert notification.status == PENDING
    clock.advance(settings.pending_grace_seconds + 1)
    assert service.sweep().publish_failed == 1  # still down: back to pending, not lost
    assert service.get(notification.id).status == PENDING
    queue.down = False
    clock.advance(settings.pending_grace_seconds + 1)
    assert service.sweep().requeued == 1
    assert drain(service) == [SENT]


def test_each_requeue_is_logged_with_its_notification(service, channel, clock, caplog):
    channel.script = [DeliveryResult.transient("timeout")]
    notification = submit(service)
    drain(service)
    clock.advance(service.settings.retry_schedule[0])
    with caplog.at_level("INFO", logger="notifications"):
        service.sweep()
    assert f"notification={notification.id} event=requeued retry=1/5" in caplog.text


def test_an_expired_claim_is_requeued(service, clock):
    notification = submit(service)
    service.queue.get(timeout=0)
    now = clock()
    service.store.claim_for_delivery(notification.id, now, now + timedelta(seconds=5))
    assert service.get(notification.id).status == SENDING  # the worker died here
    clock.advance(6)
    assert service.sweep().requeued == 1
    assert drain(service) == [SENT]


def test_manual_retry_restarts_a_failed_notification_with_a_fresh_budget(service, channel):
    channel.script = [DeliveryResult.permanent("550 no such user")]
    notification = submit(service)
    drain(service)
    retried = service.retry(notification.id)
    assert retried.status == QUEUED and retried.retry_count == 0
    assert drain(service) == [SENT]
    with pytest.raises(Conflict):
        service.retry(notification.id)  # already sent
    with pytest.raises(NotFound):
        service.retry("no-such-id")


def test_manual_retry_refuses_one_in_flight(service):
    notification = submit(service)
    with pytest.raises(Conflict):
        service.retry(notification.id)


def test_idempotency_key_returns_the_first_notification(service, channel):
    payload = {"user_id": "u1", "notification_type": "in_app", "message": "hi"}
    first = service.submit(payload, idempotency_key="form-123")
    again = service.submit(payload, idempotency_key="form-123")
    assert again.id == first.id and again.duplicate and not first.duplicate
    drain(service)
    assert channel.delivered == [first.id]
    assert service.stats()["total"] == 1


def test_batch_reports_each_item_and_keeps_the_valid_ones(service):
    results = service.submit_batch(
        {
            "notifications": [
                {"user_id": "u1", "notification_type": "in_app", "message": "a"},
                {"user_id": "u1", "notification_type": "email", "message": "b"},
                {"user_id": "u2", "notification_type": "in_app", "message": "c"},
            ]
        }
    )
    assert [("id" in r) for r in results] == [True, False, True]
    assert results[1]["fields"] == {"email": "is required for an email notification"}
    assert all(r["status"] == QUEUED for r in results if "id" in r)
    assert drain(service) == [SENT, SENT]


def test_stats_count_every_status_and_type(service, channel):
    channel.script = [DeliveryResult.permanent("bad")]
    submit(service)
    submit(service)
    drain(service)
    stats = service.stats()
    assert stats["by_status"][FAILED_PERMANENTLY] == 1 and stats["by_status"][SENT] == 1
    assert stats["by_type"]["in_app"] == 2 and stats["total"] == 2
    assert stats["queue"] == {"messages": 0, "dead_letters": 1}


def test_listing_validates_its_filters(service):
    with pytest.raises(ValidationError) as caught:
        service.list_for_user("u1", notification_type="fax", status="lost", limit="0", cursor="%%")
    assert set(caught.value.fields) == {"type", "status", "limit", "cursor"}


def test_in_app_is_delivered_in_one_write_and_only_once(tmp_path, settings, clock):
    from common.channels.in_app import InAppChannel

    scripted = ScriptedChannel()
    channels = {"in_app": InAppChannel(), "email": scripted, "sms": scripted}
    service = NotificationService(
        settings, SqliteStore(tmp_path / "n.db"), MemoryQueue(), channels, clock=clock
    )
    note = submit(service)
    mail = submit(service, notification_type="email", email="a@b.co")
    service.queue.publish([note.id])  # a duplicate message
    assert drain(service) == [SENT, SENT, "skipped"]
    assert service.get(note.id).sent_at == clock.now and service.get(note.id).lease_until is None
    assert scripted.delivered == [mail.id]  # email still goes through its channel
