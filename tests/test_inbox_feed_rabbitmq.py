"""The inbox feed across processes, on the real broker: two RabbitInboxFeed instances stand
for two processes sharing one fanout exchange (a name of each test's own)."""

from __future__ import annotations

import asyncio
import time
import uuid

import pika
import pytest

from common.inbox_feed import CREATED, EVERY_USER, RESYNC, UPDATED, InboxChange, StreamEnded
from common.inbox_feed.rabbitmq import RabbitInboxFeed

UNREACHABLE = "amqp://guest:guest@127.0.0.1:1/%2F"


@pytest.fixture
def exchange(rabbit_url):
    name = f"test_inbox_{uuid.uuid4().hex[:8]}"
    yield name
    connection = pika.BlockingConnection(pika.URLParameters(rabbit_url))
    connection.channel().exchange_delete(name)
    connection.close()


@pytest.fixture
def feeds(rabbit_url, exchange):
    """Process A and process B."""
    made = [RabbitInboxFeed(rabbit_url, exchange), RabbitInboxFeed(rabbit_url, exchange)]
    yield made
    for feed in made:
        feed.close()


def change(user: str, n: int, kind: str = CREATED) -> InboxChange:
    return InboxChange(user, kind, 1_000 + n, {"id": f"n{n}", "user_id": user})


async def consuming(*feeds: RabbitInboxFeed) -> None:
    for feed in feeds:
        assert await asyncio.to_thread(feed.consumer.consuming.wait, 10), "no consumer"


async def next_changes(subscription, quiet: float = 0.3) -> list[InboxChange]:
    """Everything that arrives until `quiet` seconds pass without a change."""
    got = []
    while (item := await subscription.next(quiet)) is not None:
        got.append(item)
    return got


async def wait_for(predicate, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def test_a_change_made_in_one_process_reaches_every_stream_once(feeds):
    a, b = feeds

    async def scenario():
        on_a, on_b, other = a.subscribe("ann"), b.subscribe("ann"), b.subscribe("bob")
        await consuming(a, b)
        # Bound only now: what passed before is covered by a RESYNC.
        for subscription in (on_a, on_b, other):
            assert [c.kind for c in await next_changes(subscription, 0.2)] == [RESYNC]

        a.publish(change("ann", 1))
        a.publish(change("ann", 2, UPDATED))
        assert await next_changes(on_b) == [change("ann", 1), change("ann", 2, UPDATED)]
        assert await next_changes(on_a) == [change("ann", 1), change("ann", 2, UPDATED)]
        assert await next_changes(other, 0.05) == []

    asyncio.run(scenario())


def test_after_its_connection_drops_a_process_reconnects_and_its_streams_resync(feeds):
    a, b = feeds

    async def scenario():
        on_b = b.subscribe("ann")
        await consuming(b)
        await next_changes(on_b, 0.2)
        connection = b.consumer_connection
        connection.add_callback_threadsafe(connection.close)  # as if the broker dropped it
        await wait_for(lambda: b.consumer.connections == 2 and b.consumer.consuming.is_set())
        [resync] = await next_changes(on_b)
        assert (resync.kind, resync.user_id) == (RESYNC, EVERY_USER)
        assert b.consumer_connection is not connection

        a.publish(change("ann", 3))
        assert await next_changes(on_b) == [change("ann", 3)]

    asyncio.run(scenario())


def test_changes_a_publisher_lost_are_made_up_for_by_a_resync(feeds, caplog):
    a, b = feeds

    async def scenario():
        on_b = b.subscribe("ann")
        await consuming(b)
        await next_changes(on_b, 0.2)
        a.publish(change("ann", 1))
        assert await next_changes(on_b) == [change("ann", 1)]
        a.publisher.drops.drop(change("ann", 2), "test")  # as a full backlog would
        a.publish(change("ann", 3))
        got = await next_changes(on_b)
        assert (got[0].kind, got[0].user_id) == (RESYNC, EVERY_USER)
        # The change after it is shown by the store read the RESYNC leads to, or comes next.
        assert got[1:] in ([], [change("ann", 3)])
        assert "event=inbox_feed_recovered dropped=1" in caplog.text

    asyncio.run(scenario())


def test_a_malformed_message_is_logged_and_dropped(feeds, rabbit_url, exchange, caplog):
    a, b = feeds

    async def scenario():
        on_b = b.subscribe("ann")
        await consuming(b)
        await next_changes(on_b, 0.2)
        connection = pika.BlockingConnection(pika.URLParameters(rabbit_url))
        channel = connection.channel()
        for body in (b"\x00garbage", b'{"user_id": "ann", "kind": "created", "at_ms": 1}'):
            channel.basic_publish(exchange, "", body)
        connection.close()
        a.publish(change("ann", 4))
        assert await next_changes(on_b) == [change("ann", 4)]  # the consumer carried on
        assert b.consumer.malformed == 2
        assert caplog.text.count("event=inbox_feed_malformed") == 2
        assert "garbage" not in caplog.text  # a body's content stays out of the logs

    asyncio.run(scenario())


def test_a_publish_with_the_broker_unreachable_returns_at_once_and_is_logged(exchange, caplog):
    feed = RabbitInboxFeed(UNREACHABLE, exchange, connect_timeout=1.0)
    try:
        started = time.monotonic()
        for n in range(50):
            feed.publish(change("ann", n))
        assert time.monotonic() - started < 0.1
        deadline = time.monotonic() + 5
        while "event=inbox_feed_dropped" not in caplog.text:
            assert time.monotonic() < deadline, "the lost publish was not logged"
            time.sleep(0.02)
        time.sleep(0.2)
        assert caplog.text.count("event=inbox_feed_dropped") == 1  # once per burst
        assert "user=ann" in caplog.text
    finally:
        started = time.monotonic()
        feed.close()
    assert time.monotonic() - started < 3
    assert not feed.publisher.thread.is_alive()


def test_close_ends_the_streams_at_once_and_stops_the_threads(feeds):
    a, _ = feeds

    async def scenario():
        subscription = a.subscribe("ann")
        await consuming(a)
        a.publish(change("ann", 1))
        waiting = asyncio.ensure_future(next_changes(subscription, 30))
        await asyncio.sleep(0.3)
        started = time.monotonic()
        await asyncio.to_thread(a.close)
        with pytest.raises(StreamEnded):
            await waiting
        assert time.monotonic() - started < 2
        with pytest.raises(StreamEnded):
            await a.subscribe("bob").next(5)

    asyncio.run(scenario())
    assert not a.consumer.thread.is_alive() and not a.publisher.thread.is_alive()
    assert a.consumer_connection is None
