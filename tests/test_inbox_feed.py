"""The inbox feed in one process: the hub's fan-out to asyncio subscriptions (from any thread,
bounded per reader, ended on close), the messages' decoding, and what the service and the
delivery publish when a user's inbox changes."""

from __future__ import annotations

import asyncio
import gc
import json
import threading
import time
import tracemalloc
from datetime import timedelta

import pytest

from common.channels.in_app import InAppChannel
from common.inbox_feed import (
    CREATED,
    EVERY_USER,
    RESYNC,
    UPDATED,
    InboxChange,
    InboxHub,
    LocalInboxFeed,
    StreamEnded,
)
from common.inbox_feed.codec import (
    MAX_BATCH,
    MalformedChange,
    decode_change,
    decode_changes,
    encode_change,
    encode_changes,
)
from common.inbox_feed.hub import MAX_PENDING
from common.queue.memory import MemoryQueue
from common.runtime import get_inbox_feed, set_service
from common.service import NotificationService


def change(user: str, n: int = 0, kind: str = UPDATED) -> InboxChange:
    snapshot = None if kind == RESYNC else {"id": f"n{n}", "user_id": user}
    return InboxChange(user, kind, 1_000 + n, snapshot)


def from_another_thread(function, *args) -> None:
    thread = threading.Thread(target=function, args=args)
    thread.start()
    thread.join(5)


# -- the hub -------------------------------------------------------------------------------


def test_a_change_from_another_thread_reaches_that_users_subscriber_only():
    async def scenario():
        hub = InboxHub()
        ann, bob = hub.subscribe("ann"), hub.subscribe("bob")
        waiting = asyncio.ensure_future(ann.next(5))
        await asyncio.sleep(0.01)
        started = time.monotonic()
        from_another_thread(hub.deliver, change("ann", 1))
        got = await waiting
        assert got == change("ann", 1)
        assert time.monotonic() - started < 1  # woken, not found at the timeout
        assert await bob.next(0.05) is None
        assert await ann.next(0.05) is None  # once only

    asyncio.run(scenario())


def test_an_overflowing_reader_gets_one_resync_instead_of_its_backlog():
    async def scenario():
        hub = InboxHub()
        slow, other = hub.subscribe("ann"), hub.subscribe("bob")
        from_another_thread(lambda: [hub.deliver(change("ann", i)) for i in range(MAX_PENDING * 3)])
        hub.deliver(change("bob", 1))
        await asyncio.sleep(0.05)
        got = await slow.next(1)
        assert got.kind == RESYNC and got.user_id == "ann" and got.notification is None
        assert await slow.next(0.05) is None  # the backlog is gone, and so is what came after
        assert (await other.next(1)).notification["id"] == "n1"  # others are untouched
        hub.deliver(change("ann", 7))  # after reading the RESYNC, changes come one by one
        assert (await slow.next(1)).notification["id"] == "n7"

    asyncio.run(scenario())


def test_a_resync_for_every_user_reaches_every_subscription():
    async def scenario():
        hub = InboxHub()
        subscriptions = [hub.subscribe(user) for user in ("ann", "bob", "ann")]
        from_another_thread(hub.deliver, InboxChange(EVERY_USER, RESYNC, 5))
        for subscription in subscriptions:
            assert (await subscription.next(1)).kind == RESYNC
            assert await subscription.next(0.02) is None

    asyncio.run(scenario())


def test_close_ends_waiting_and_later_reads_at_once():
    async def scenario():
        hub = InboxHub()
        first, second = hub.subscribe("ann"), hub.subscribe("bob")
        waiting = asyncio.ensure_future(first.next(30))
        await asyncio.sleep(0.01)
        started = time.monotonic()
        from_another_thread(hub.close)
        with pytest.raises(StreamEnded):
            await waiting
        assert time.monotonic() - started < 1
        with pytest.raises(StreamEnded):
            await second.next(30)
        with pytest.raises(StreamEnded):
            await hub.subscribe("carol").next(30)

    asyncio.run(scenario())


def test_next_returns_none_after_its_timeout_and_a_closed_subscription_gets_nothing():
    async def scenario():
        hub = InboxHub()
        subscription = hub.subscribe("ann")
        started = time.monotonic()
        assert await subscription.next(0.1) is None
        assert 0.08 < time.monotonic() - started < 1
        subscription.close()
        subscription.close()  # idempotent
        hub.deliver(change("ann"))
        assert hub.count() == 0
        assert await subscription.next(0.05) is None

    asyncio.run(scenario())


def test_a_thousand_subscriptions_take_little_memory():
    async def scenario():
        hub = InboxHub()
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        subscriptions = [hub.subscribe(f"user-{i}") for i in range(1000)]
        waits = [asyncio.ensure_future(s.next(5)) for s in subscriptions]
        await asyncio.sleep(0.05)
        used = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        hub.deliver(InboxChange(EVERY_USER, RESYNC, 1))
        assert all(r.kind == RESYNC for r in await asyncio.gather(*waits))
        return used

    used = asyncio.run(scenario())
    assert used < 10_000_000, f"1,000 waiting subscriptions took {used / 1e6:.1f} MB"


def test_the_local_feed_delivers_within_the_process():
    async def scenario():
        feed = LocalInboxFeed()
        subscription = feed.subscribe("ann")
        from_another_thread(feed.publish, change("ann", 3))
        assert (await subscription.next(1)).notification["id"] == "n3"
        feed.close()
        with pytest.raises(StreamEnded):
            await subscription.next(1)
        feed.publish(change("ann", 4))  # after close: nothing to tell, and no error

    asyncio.run(scenario())


# -- the messages --------------------------------------------------------------------------


def test_a_change_survives_the_wire():
    for sent in (change("ann", 1, CREATED), InboxChange(EVERY_USER, RESYNC, 9)):
        assert decode_change(encode_change(sent)) == sent
        assert decode_changes(encode_change(sent)) == [sent]


def test_a_batch_survives_the_wire_in_order_and_a_bad_item_spoils_it():
    sent = [change(f"user{n}", n, CREATED if n % 2 else UPDATED) for n in range(MAX_BATCH)]
    assert decode_changes(encode_changes(sent)) == sent
    too_many = json.dumps([json.loads(encode_change(sent[0]))] * (MAX_BATCH + 1)).encode()
    good, bad = json.loads(encode_change(sent[0])), {"user_id": "ann", "kind": "deleted"}
    for body in (b"[]", too_many, json.dumps([good, bad]).encode()):
        with pytest.raises(MalformedChange):
            decode_changes(body)


@pytest.mark.parametrize(
    "body",
    [
        b"\xff\xfe",
        b"not json",
        b"[1, 2]",
        b'{"user_id": "", "kind": "updated", "at_ms": 1, "notification": {}}',
        b'{"user_id": "ann", "kind": "deleted", "at_ms": 1, "notification": {}}',
        b'{"user_id": "ann", "kind": "updated", "at_ms": true, "notification": {}}',
        b'{"user_id": "ann", "kind": "updated", "at_ms": "1", "notification": {}}',
        b'{"user_id": "ann", "kind": "created", "at_ms": 1, "notification": null}',
        b'{"user_id": "*", "kind": "created", "at_ms": 1, "notification": {}}',
        b'{"user_id": "ann", "kind": "resync", "at_ms": 1}' + b" " * 1_000_000,
    ],
)
def test_a_malformed_message_is_refused(body):
    with pytest.raises(MalformedChange):
        decode_change(body)


# -- who publishes -------------------------------------------------------------------------


class RecordingFeed:
    def __init__(self, fail: bool = False):
        self.published: list[InboxChange] = []
        self.fail = fail

    def publish(self, change: InboxChange) -> None:
        if self.fail:
            raise RuntimeError("feed down")
        self.published.append(change)

    def subscribe(self, user_id):  # pragma: no cover - not used here
        raise NotImplementedError

    def close(self) -> None:
        pass


def make_service(settings, store, feed):
    channels = {"in_app": InAppChannel()}
    return NotificationService(settings, store, MemoryQueue(), channels, inbox_feed=feed)


def in_app(service, user="ann", **extra):
    payload = {"user_id": user, "notification_type": "in_app", "message": "hi", **extra}
    return service.submit(payload)


def test_inbox_actions_publish_what_changed(settings, store):
    feed = RecordingFeed()
    service = make_service(settings, store, feed)
    first, second = in_app(service), in_app(service)
    for notification in (first, second):
        service.deliver(notification.id)

    marked = service.mark(first.id, "read")
    [published] = feed.published
    assert (published.user_id, published.kind) == ("ann", UPDATED)
    assert published.notification == marked.to_dict()
    assert published.notification["read_at"] is not None
    assert published.at_ms == int(marked.inbox_changed_at.timestamp() * 1000)

    feed.published.clear()
    before = int(time.time() * 1000)
    assert service.mark_all("ann", "read") == 1
    [published] = feed.published
    assert (published.user_id, published.kind, published.notification) == ("ann", RESYNC, None)
    assert before - 1000 <= published.at_ms <= int(time.time() * 1000) + 1000

    feed.published.clear()
    assert service.mark_all("ann", "read") == 0  # nothing changed: nothing to tell
    assert service.mark_all("bob", "seen") == 0
    assert feed.published == []


def test_cancelling_an_in_app_notification_publishes_it(settings, store):
    feed = RecordingFeed()
    service = make_service(settings, store, feed)
    later = (service.clock() + timedelta(hours=1)).isoformat()
    scheduled = in_app(service, send_at=later)
    cancelled = service.cancel(scheduled.id)
    [published] = feed.published
    assert (published.kind, published.notification["status"]) == (UPDATED, cancelled.status)
    service.cancel(scheduled.id)  # cancelled already: nothing changed
    assert len(feed.published) == 1


def test_a_failing_feed_never_fails_the_action(settings, store, caplog):
    service = make_service(settings, store, RecordingFeed(fail=True))
    notification = in_app(service)
    service.deliver(notification.id)
    assert service.mark(notification.id, "archive").archived_at is not None
    assert service.mark_all("ann", "read") == 1
    assert "event=inbox_feed_publish_failed kind=resync" in caplog.text
    assert "user=ann" in caplog.text


@pytest.fixture
def wired(settings):
    from tests.support.services import installed_service

    service = installed_service(settings)
    yield service
    set_service(None)


def test_an_in_app_delivery_reaches_the_users_stream_through_the_real_service(wired):
    async def scenario():
        feed = get_inbox_feed()
        assert feed is wired.inbox_feed
        ann, bob = feed.subscribe("ann"), feed.subscribe("bob")
        sent = await asyncio.to_thread(in_app, wired, "ann")
        email = await asyncio.to_thread(
            wired.submit,
            {
                "user_id": "ann",
                "notification_type": "email",
                "email": "a@example.com",
                "message": "m",
            },
        )
        while (queued := wired.queue.get(timeout=0)) is not None:
            if queued == sent.id:  # the email would need an SMTP server: not the point here
                await asyncio.to_thread(wired.deliver, queued)
        created = await ann.next(2)
        assert (created.kind, created.user_id) == (CREATED, "ann")
        assert created.notification["id"] == sent.id
        assert created.notification["status"] == "sent"
        assert await ann.next(0.1) is None  # the acceptance is not shown; the email is not in it
        assert await bob.next(0.01) is None

        await asyncio.to_thread(wired.mark, sent.id, "seen")
        updated = await ann.next(2)
        assert updated.kind == UPDATED and updated.notification["seen_at"] is not None
        assert email.id != sent.id
        set_service(None)  # the runner stopping: open streams end
        with pytest.raises(StreamEnded):
            await ann.next(5)

    asyncio.run(scenario())
