"""The inbox feed across processes: changes go through a RabbitMQ fanout exchange
(settings.inbox_exchange), so a change made in one process (a deliverer, an API call) reaches
the streams another one holds.

Publishing never waits (see rabbitmq_publisher). Consuming starts with the first subscription,
so a process that never holds a stream (a deployed queue_deliver function) consumes nothing.
A publishing process gets its own changes back through its queue, so they are not also
delivered locally: every stream sees each change once.
"""

from __future__ import annotations

import logging
import threading

import pika

from common.inbox_feed.base import InboxChange, Subscription
from common.inbox_feed.hub import InboxHub
from common.inbox_feed.rabbitmq_consumer import FeedConsumer
from common.inbox_feed.rabbitmq_publisher import FeedPublisher

log = logging.getLogger("notifications.inbox_feed")

HEARTBEAT_SECONDS = 5


def feed_parameters(url: str, connect_timeout: float) -> pika.URLParameters:
    """As common/queue/rabbitmq.py connects: bounded set-up, short heartbeats."""
    parameters = pika.URLParameters(url)
    parameters.socket_timeout = connect_timeout
    parameters.stack_timeout = connect_timeout
    parameters.heartbeat = HEARTBEAT_SECONDS
    parameters.blocked_connection_timeout = 30
    return parameters


class RabbitInboxFeed:
    def __init__(
        self,
        url: str,
        exchange: str = "notifications.inbox",
        *,
        connect_timeout: float = 3.0,
        hub: InboxHub | None = None,
    ):
        self.exchange = exchange
        self.connect_timeout = connect_timeout
        self.hub = hub or InboxHub()
        parameters = feed_parameters(url, connect_timeout)
        self.publisher = FeedPublisher(parameters, exchange)
        self.consumer = FeedConsumer(parameters, exchange, self.hub)
        self._lock = threading.Lock()
        self._consumer_started = False
        self._closed = False

    def publish(self, change: InboxChange) -> None:
        try:
            self.publisher.publish(change)
        except Exception:  # noqa: BLE001 - never fail the caller (the delivery path)
            log.exception("user=%s event=inbox_feed_dropped kind=%s", change.user_id, change.kind)

    def subscribe(self, user_id: str) -> Subscription:
        subscription = self.hub.subscribe(user_id)
        if not self._consumer_started:
            with self._lock:
                if not self._consumer_started and not self._closed:
                    self._consumer_started = True
                    self.consumer.start()
        return subscription

    @property
    def consumer_connection(self) -> pika.BlockingConnection | None:
        """The consumer's live connection, if any (thread-safe use only:
        `add_callback_threadsafe`)."""
        return self.consumer.connection

    def close(self) -> None:
        """End every stream at once, then stop both threads (each within a bounded time)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.hub.close()
        # A thread may be in the middle of a connection set-up, bounded by connect_timeout.
        self.publisher.close(self.connect_timeout + 1)
        self.consumer.close(self.connect_timeout + 1)
