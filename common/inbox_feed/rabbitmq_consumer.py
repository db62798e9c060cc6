"""The RabbitMQ feed's consuming side: one supervised thread with an exclusive, auto-delete,
server-named queue bound to the fanout exchange, handing each change to this process's hub.

Changes published while no queue of ours was bound (before the first connection, or while it
was away) never reach us, so after every connection the subscriptions get a RESYNC: they
read the store again from their last event id.
"""

from __future__ import annotations

import logging
import threading
import time

import pika

from common.inbox_feed.base import EVERY_USER, RESYNC, InboxChange
from common.inbox_feed.codec import MalformedChange, decode_changes
from common.inbox_feed.hub import InboxHub
from common.inbox_feed.supervised import SupervisedThread

log = logging.getLogger("notifications.inbox_feed")

# The broker keeps at most this many changes for a process that reads too slowly; beyond that
# the oldest go (the hub's own bound turns a backlog into a RESYNC anyway).
MAX_QUEUED_AT_BROKER = 10_000


class FeedConsumer:
    def __init__(self, parameters: pika.URLParameters, exchange: str, hub: InboxHub):
        self.parameters = parameters
        self.exchange = exchange
        self.hub = hub
        self.thread = SupervisedThread("inbox-feed-consumer", self._session)
        self.connections = 0  # sessions that got as far as consuming
        self.received = 0
        self.malformed = 0
        # The live connection, while there is one (for health checks, and for the tests to
        # drop it with `connection.add_callback_threadsafe(connection.close)`).
        self.connection: pika.BlockingConnection | None = None
        self.consuming = threading.Event()  # set while a queue of ours is bound

    def start(self) -> None:
        self.thread.start()

    def close(self, timeout: float) -> None:
        self.thread.close(timeout)

    def _session(self, stop: threading.Event) -> None:
        connection = pika.BlockingConnection(self.parameters)
        self.connection = connection
        try:
            channel = connection.channel()
            channel.exchange_declare(self.exchange, exchange_type="fanout", durable=True)
            declared = channel.queue_declare(
                "",
                exclusive=True,
                auto_delete=True,
                arguments={"x-max-length": MAX_QUEUED_AT_BROKER},
            )
            queue_name = declared.method.queue
            channel.queue_bind(queue_name, self.exchange)
            channel.basic_consume(queue_name, self._on_message, auto_ack=True)
            self.connections += 1
            self.consuming.set()
            log.info(
                "event=inbox_feed_consuming exchange=%s queue=%s connections=%d",
                self.exchange,
                queue_name,
                self.connections,
            )
            self.hub.deliver(InboxChange(EVERY_USER, RESYNC, int(time.time() * 1000)))
            while not stop.is_set():
                connection.process_data_events(time_limit=0.2)
        finally:
            self.consuming.clear()
            self.connection = None
            try:
                if connection.is_open:
                    connection.close()
            except Exception:  # noqa: BLE001 - it is going away either way
                pass

    def _on_message(self, _channel, _method, _properties, body: bytes) -> None:
        try:
            changes = decode_changes(body)
        except MalformedChange as error:
            self.malformed += 1
            # Neither the body nor a part of it: a notification's content stays out of logs.
            log.warning(
                "event=inbox_feed_malformed exchange=%s bytes=%d error=%s",
                self.exchange,
                len(body),
                error,
            )
            return
        for change in changes:
            self.received += 1
            try:
                self.hub.deliver(change)
            except Exception:  # noqa: BLE001 - one change must not cost the connection
                log.exception("user=%s event=inbox_feed_deliver_failed", change.user_id)
