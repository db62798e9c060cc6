"""The use cases, without HTTP or a broker: retries, dead letters, sweep, manual retry, fencing.

Every test runs on both stores (the `store` fixture: SQLite, and MongoDB on mongomock or a real
server). The channel is a scripted stand-in for email so that each outcome can be forced; the
real channels are tested against a real SMTP server and a Twilio-compatible endpoint in their
own files, and in-app notifications take their real one-write path (InAppChannel).
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from common.channels.base import Channel, DeliveryResult
from common.channels.in_app import InAppChannel
from common.config import load_settings
from common.errors import Conflict, IdempotencyConflict, NotFound, StoreUnavailable, ValidationError
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


class ScriptedChannel(Channel):
    """Returns the queued results in order, then `sent`."""

    notification_type = "email"

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

    def publish(self, ids, timeout=None, background=False, traceparents=None):
        if self.down:
            raise QueueUnavailable("broker down")
        super().publish(ids, traceparents=traceparents)

    def publish_dead_letter(self, notification):
        if self.down:
            raise QueueUnavailable("broker down")
        super().publish_dead_letter(notification)


@pytest.fixture
def settings(settings_env):
    # No jitter here, so the schedule can be asserted to the millisecond (jitter has its test).
    return load_settings({**settings_env, "RETRY_JITTER": "0"})


@pytest.fixture
def channel():
    return ScriptedChannel()


@pytest.fixture
def clock():
    return Clock()


def make_service(settings, store, channel, clock, queue=None):
    channels = {"in_app": InAppChannel(), "email": channel, "sms": channel}
    return NotificationService(settings, store, queue or MemoryQueue(), channels, clock=clock)


@pytest.fixture
def service(settings, store, channel, clock):
    return make_service(settings, store, channel, clock)


def submit(service, **extra):
    payload = {
        "user_id": "u1",
        "notification_type": "email",
        "email": "ann@example.com",
        "message": "hi",
        **extra,
    }
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
    with pytest.raises(ValidationError) as caught:
        submit(service, message="half a pair: \ud800")
    assert "message" in caught.value.fields
    with pytest.raises(ValidationError) as caught:
        submit(service, subject="nul\x00")
    assert "subject" in caught.value.fields
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


def test_broker_down_leaves_pending_and_the_sweep_publishes_later(settings, store, channel, clock):
    queue = BrokenQueue()
    service = make_service(settings, store, channel, clock, queue)
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
    service.store.claim(notification.id, now, now + timedelta(seconds=5), "dead-worker")
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
    payload = {
        "user_id": "u1",
        "notification_type": "sms",
        "phone": "+14155550123",
        "message": "hi",
    }
    first = service.submit(payload, idempotency_key="form-123")
    again = service.submit({**payload, "message": "  hi "}, idempotency_key="form-123")
    assert again.id == first.id and again.duplicate and not first.duplicate
    drain(service)
    assert channel.delivered == [first.id]
    assert service.stats()["total"] == 1


def test_an_idempotency_key_reused_for_another_message_is_a_conflict(service, channel):
    payload = {"user_id": "u1", "notification_type": "in_app", "message": "first"}
    first = service.submit(payload, idempotency_key="order-7")
    with pytest.raises(IdempotencyConflict) as caught:
        service.submit({**payload, "message": "second"}, idempotency_key="order-7")
    assert caught.value.http_status == 422 and first.id in caught.value.fields["Idempotency-Key"]
    assert service.get(first.id).message == "first" and service.stats()["total"] == 1


def test_batch_reports_each_item_and_keeps_the_valid_ones(service):
    results = service.submit_batch(
        {
            "notifications": [
                {"user_id": "u1", "notification_type": "in_app", "message": "a"},
                {"user_id": "u1", "notification_type": "email", "message": "b"},
                {"user_id": "u2", "notification_type": "in_app", "message": "c"},
                {"user_id": "u2", "notification_type": "in_app", "message": "\ud800"},
            ]
        }
    )
    assert [("id" in r) for r in results] == [True, False, True, False]
    assert "message" in results[3]["fields"]  # one bad item rejects only itself
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
    assert stats["by_type"]["email"] == 2 and stats["total"] == 2
    assert stats["queue"] == {"messages": 0, "dead_letters": 1}


def test_listing_validates_its_filters(service):
    with pytest.raises(ValidationError) as caught:
        service.list_for_user("u1", notification_type="fax", status="lost", limit="0", cursor="%%")
    assert set(caught.value.fields) == {"type", "status", "limit", "cursor"}


def test_in_app_is_delivered_in_one_write_and_only_once(service, channel, clock):
    note = submit(service, notification_type="in_app")
    mail = submit(service, notification_type="email", email="a@b.co")
    service.queue.publish([note.id])  # a duplicate message
    assert drain(service) == [SENT, SENT, "skipped"]
    assert service.get(note.id).sent_at == clock.now and service.get(note.id).lease_until is None
    assert service.get(note.id).attempts == 0  # no claim was needed
    assert channel.delivered == [mail.id]  # email still goes through its channel


# -- fencing: a worker that lost its claim records nothing ---------------------------------


def test_a_worker_whose_claim_was_taken_over_records_nothing(service, channel, clock, caplog):
    """The slow worker's lease expires mid-send; the sweep and a second worker take over and
    send. The slow worker's late outcome must neither overwrite nor undo the second's."""
    notification = submit(service)
    service.queue.get(timeout=0)
    outcomes: list[str] = []

    def slow_then_taken_over(n):
        channel.deliver = lambda n: DeliveryResult.sent("second worker")  # the next attempt
        clock.advance(service.settings.lease_seconds + 1)  # this worker stalls past its lease
        assert service.sweep().requeued == 1
        outcomes.extend(drain(service))  # another worker claims and sends
        return DeliveryResult.transient("first worker timed out late")

    channel.deliver = slow_then_taken_over
    with caplog.at_level("INFO", logger="notifications"):
        assert service.deliver(notification.id) == "lease_lost"
    assert outcomes == [SENT]
    stored = service.get(notification.id)
    assert stored.status == SENT and stored.last_error is None and stored.attempts == 2
    assert f"notification={notification.id} event=lease_lost" in caplog.text
    assert caplog.text.count(f"notification={notification.id} event=sent") == 1


def test_the_lease_is_renewed_while_a_slow_send_is_in_flight(settings_env, store):
    """Real time: a send that takes three leases keeps its claim; nobody else can take it."""
    import threading
    import time

    settings = load_settings({**settings_env, "LEASE_SECONDS": "0.3"})
    release = threading.Event()
    slow = ScriptedChannel()
    slow.deliver = lambda n: (release.wait(5), DeliveryResult.sent("slow"))[1]
    service = make_service(settings, store, slow, utcnow)
    notification = submit(service)
    service.queue.get(timeout=0)
    worker = threading.Thread(target=service.deliver, args=(notification.id,))
    worker.start()
    time.sleep(1.0)  # more than three leases
    now = utcnow()
    assert store.claim(notification.id, now, now + timedelta(seconds=1), "intruder") is None
    assert service.sweep().requeued == 0
    release.set()
    worker.join(5)
    assert service.get(notification.id).status == SENT


# -- nothing stuck --------------------------------------------------------------------------


def test_a_queued_notification_whose_message_was_lost_is_republished(service, clock):
    notification = submit(service)
    service.queue.get(timeout=0)  # the message is gone (purged queue, crashed publisher)
    assert service.sweep().requeued == 0  # recently queued: its message is probably on its way
    clock.advance(service.settings.stale_queued_seconds + 1)
    assert service.sweep().requeued == 1
    assert drain(service) == [SENT] and service.get(notification.id).status == SENT


def test_one_sweep_recovers_more_than_one_batch(settings_env, store, channel, clock):
    settings = load_settings({**settings_env, "SWEEP_BATCH_SIZE": "3"})
    service = make_service(settings, store, channel, clock, BrokenQueue())
    for _ in range(25):
        submit(service)
    service.queue.down = False
    clock.advance(settings.pending_grace_seconds + 1)
    assert service.sweep().requeued == 25
    assert drain(service) == [SENT] * 25


def test_retry_delays_are_spread_by_the_jitter(settings_env, store, channel, clock):
    settings = load_settings({**settings_env, "RETRY_SCHEDULE": "100", "RETRY_JITTER": "0.2"})
    service = make_service(settings, store, channel, clock)
    channel.script = [DeliveryResult.transient("busy")] * 40
    delays = set()
    for _ in range(40):
        notification = submit(service)
        drain(service)
        waited = service.get(notification.id).next_retry_time - clock.now
        assert timedelta(seconds=80) <= waited <= timedelta(seconds=120)
        delays.add(waited)
    assert len(delays) > 30  # not one synchronised burst


def test_a_dead_letter_copy_waits_for_the_broker_and_is_published_once(
    settings, store, channel, clock
):
    queue = BrokenQueue()
    queue.down = False
    service = make_service(settings, store, channel, clock, queue)
    channel.script = [DeliveryResult.permanent("550 no such user")]
    notification = submit(service)
    queue.down = True  # the broker goes away just before the notification gives up
    assert drain(service) == [FAILED_PERMANENTLY]
    assert list(queue.dead_letters) == [] and service.get(notification.id).dead_lettered_at is None
    assert service.sweep().dead_letters == 0  # still down
    queue.down = False
    assert service.sweep().dead_letters == 1
    assert service.sweep().dead_letters == 0
    assert [d["id"] for d in queue.dead_letters] == [notification.id]
    assert "550 no such user" in queue.dead_letters[0]["dead_letter_reason"]


# -- the store decides the reply ------------------------------------------------------------


class MarkQueuedFails:
    """A store whose pending -> queued write fails after the publish was confirmed."""

    def __init__(self, store):
        self._store = store

    def __getattr__(self, name):
        return getattr(self._store, name)

    def mark_queued(self, ids, now):
        raise StoreUnavailable("the store went away after the publish")


def test_accepted_stays_accepted_when_marking_it_queued_fails(settings, store, channel, clock):
    service = make_service(settings, MarkQueuedFails(store), channel, clock)
    notification = submit(service)  # no exception: the row was committed
    assert notification.status == PENDING
    assert drain(service) == [SENT]  # the confirmed message still delivers it


def test_a_provider_setup_problem_is_logged_for_the_operator(service, channel, caplog):
    channel.script = [DeliveryResult.transient("535 bad credentials", setup_problem=True)]
    notification = submit(service)
    with caplog.at_level("WARNING", logger="notifications"):
        assert drain(service) == [RETRY_SCHEDULED]
    assert f"notification={notification.id} event=provider_setup_problem" in caplog.text


def test_batch_items_carry_their_own_idempotency_keys(service):
    item = {"user_id": "u1", "notification_type": "in_app", "message": "a"}
    first = service.submit_batch([{**item, "idempotency_key": "k1"}])
    again = service.submit_batch(
        [
            {**item, "idempotency_key": "k1"},
            {**item, "message": "other", "idempotency_key": "k1"},
            {**item, "idempotency_key": "k2"},
        ]
    )
    assert again[0]["id"] == first[0]["id"] and again[0]["duplicate"] is True
    assert "idempotency_key" in again[1]["fields"] and "id" not in again[1]
    assert again[2]["status"] == QUEUED
    assert service.stats()["total"] == 2
