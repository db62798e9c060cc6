"""The RabbitMQ feed's publishing side: callers drop changes on a bounded in-memory backlog and
return at once (publishing happens on the delivery path); one supervised thread owns a
BlockingConnection and publishes them to the fanout exchange.

A change that cannot be published (backlog full, broker away) is dropped, logged once per
burst, and owed: the first publish after a burst is a RESYNC for every user, so every stream in
every process reads the store again and misses nothing.
"""

from __future__ import annotations

import logging
import queue
import threading
import time

import pika

from common.inbox_feed.base import EVERY_USER, RESYNC, InboxChange
from common.inbox_feed.codec import MAX_BATCH, encode_changes
from common.inbox_feed.supervised import SupervisedThread

log = logging.getLogger("notifications.inbox_feed")

MAX_BACKLOG = 2000
JSON = pika.BasicProperties(content_type="application/json")
# On close, what is still queued gets this long to go out.
FLUSH_SECONDS = 0.5
# Publishes are not confirmed: those this recent when the connection fails may be lost.
RECENT_SECONDS = 2.0


class DropLog:
    """Counts dropped changes; logs the first of a burst and, once publishing works again, how
    many the burst lost. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.dropped = 0  # in the current burst
        self.total = 0
        self.owe_resync = False

    def drop(self, change: InboxChange, reason: str) -> None:
        with self._lock:
            first = self.dropped == 0
            self.dropped += 1
            self.total += 1
            self.owe_resync = True
        if first:
            log.warning(
                "user=%s event=inbox_feed_dropped kind=%s reason=%s "
                "(further drops are counted until publishing works again)",
                change.user_id,
                change.kind,
                reason,
            )

    def published(self) -> None:
        if not self.dropped:
            return
        with self._lock:
            dropped, self.dropped = self.dropped, 0
        if dropped:
            log.warning("event=inbox_feed_recovered dropped=%d", dropped)


class FeedPublisher:
    def __init__(self, parameters: pika.URLParameters, exchange: str):
        self.parameters = parameters
        self.exchange = exchange
        self.backlog: queue.Queue[InboxChange] = queue.Queue(MAX_BACKLOG)
        self.drops = DropLog()
        self.thread = SupervisedThread("inbox-feed-publisher", self._session)
        self._started = False
        self._lock = threading.Lock()
        self._last_sent = float("-inf")

    def publish(self, change: InboxChange) -> None:
        """Never waits: the change is published by the publisher thread, or dropped."""
        if not self._started:
            self._start()
        if self.thread.stop.is_set():
            self.drops.drop(change, "closed")
            return
        try:
            self.backlog.put_nowait(change)
        except queue.Full:
            self.drops.drop(change, "backlog_full")

    def close(self, timeout: float) -> None:
        self.thread.close(timeout)

    def _start(self) -> None:
        with self._lock:
            if not self._started:
                self._started = True
                self.thread.start()

    def _session(self, stop: threading.Event) -> None:
        try:
            connection = pika.BlockingConnection(self.parameters)
        except Exception:
            self._drop_backlog("broker_unreachable")  # stale by the time the broker is back
            raise
        batch: list[InboxChange] = []
        try:
            channel = connection.channel()
            channel.exchange_declare(self.exchange, exchange_type="fanout", durable=True)
            log.info("event=inbox_feed_publisher_connected exchange=%s", self.exchange)
            while not stop.is_set():
                batch = self._next_batch()
                if not batch:
                    connection.process_data_events(time_limit=0)  # heartbeats
                if self.drops.owe_resync:  # before what follows the loss
                    self.drops.owe_resync = False
                    resync = InboxChange(EVERY_USER, RESYNC, int(time.time() * 1000))
                    self._send(channel, [resync])
                if batch:
                    self._send(channel, batch)
                    batch = []
            self._flush(channel)
        except Exception:
            for change in batch:
                self.drops.drop(change, "publish_failed")
            if time.monotonic() - self._last_sent < RECENT_SECONDS:
                # Unconfirmed publishes just before the failure may be lost too.
                self.drops.owe_resync = True
            raise
        finally:
            _close_quietly(connection)

    def _next_batch(self) -> list[InboxChange]:
        """What waits now, up to MAX_BATCH, in order (waiting up to 0.2 s for the first)."""
        try:
            batch = [self.backlog.get(timeout=0.2)]
        except queue.Empty:
            return []
        while len(batch) < MAX_BATCH:
            try:
                batch.append(self.backlog.get_nowait())
            except queue.Empty:
                break
        return batch

    def _send(self, channel, changes: list[InboxChange]) -> None:
        channel.basic_publish(self.exchange, "", encode_changes(changes), JSON)
        self._last_sent = time.monotonic()
        self.drops.published()

    def _flush(self, channel) -> None:
        deadline = time.monotonic() + FLUSH_SECONDS
        while time.monotonic() < deadline:
            batch = []
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self.backlog.get_nowait())
                except queue.Empty:
                    break
            if not batch:
                return
            self._send(channel, batch)

    def _drop_backlog(self, reason: str) -> None:
        while True:
            try:
                change = self.backlog.get_nowait()
            except queue.Empty:
                return
            self.drops.drop(change, reason)


def _close_quietly(connection) -> None:
    try:
        if connection.is_open:
            connection.close()
    except Exception:  # noqa: BLE001 - it is going away either way
        pass
