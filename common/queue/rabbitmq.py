"""RabbitMQ through pika: durable queues, persistent messages, publisher confirms.

Publishing goes through one asynchronous connection shared by every thread (see
`rabbitmq_publisher`: concurrent publishes share their confirm round trips). pika's
BlockingConnection is not thread-safe, so the small connection that reads queue depths is used
under a lock, and the consumer owns its own connection on its own thread. Deliveries run on
worker threads and are acked through `add_callback_threadsafe`, the connection's only
thread-safe method, so that a slow SMTP server never starves the consumer's heartbeats.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import pika
import pika.exceptions

from common.queue.base import (
    MessageHandler,
    NotificationQueue,
    QueueUnavailable,
    StopSignal,
    decode_message,
    encode_message,
)
from common.queue.rabbitmq_publisher import ConfirmingPublisher

log = logging.getLogger(__name__)

PERSISTENT = pika.BasicProperties(
    content_type="application/json", delivery_mode=pika.DeliveryMode.Persistent
)
# Everything pika raises when a connection or channel is gone or refuses us.
CONNECTION_ERRORS = (pika.exceptions.AMQPError, OSError)


class RabbitQueue(NotificationQueue):
    def __init__(
        self,
        url: str,
        *,
        queue_name: str = "notifications",
        dead_letter_queue: str = "notifications_dlq",
        prefetch_count: int = 32,
        workers: int = 8,
        connect_timeout: float = 5.0,
    ):
        self.parameters = pika.URLParameters(url)
        self.parameters.socket_timeout = connect_timeout
        self.parameters.blocked_connection_timeout = 30
        self.queue_name = queue_name
        self.dead_letter_queue = dead_letter_queue
        self.prefetch_count = prefetch_count
        self.workers = workers
        self._publisher = ConfirmingPublisher(
            self.parameters,
            lambda: (self.queue_name, self.dead_letter_queue),
            PERSISTENT,
            connect_timeout=connect_timeout,
            confirm_timeout=self.parameters.blocked_connection_timeout,
        )
        # depths() and ping() use a blocking connection of their own, under this lock.
        self._lock = threading.Lock()
        self._connection: pika.BlockingConnection | None = None
        self._channel = None

    # -- publishing (through the confirming publisher's own connection) ----------------------

    def publish(self, ids: Sequence[str]) -> None:
        if ids:
            self._publisher.publish(self.queue_name, [encode_message(i) for i in ids])

    def publish_dead_letter(self, notification: dict) -> None:
        body = json.dumps(notification, default=str).encode()
        self._publisher.publish(self.dead_letter_queue, [body])

    # -- queue depths (a blocking connection used under a lock) ------------------------------

    def _declare(self, channel) -> None:
        channel.queue_declare(self.queue_name, durable=True)
        channel.queue_declare(self.dead_letter_queue, durable=True)

    def _count(self) -> dict[str, int]:
        if self._channel is None or not self._channel.is_open:
            self._connection = pika.BlockingConnection(self.parameters)
            self._channel = self._connection.channel()
            self._declare(self._channel)
        main = self._channel.queue_declare(self.queue_name, passive=True)
        dead = self._channel.queue_declare(self.dead_letter_queue, passive=True)
        return {"messages": main.method.message_count, "dead_letters": dead.method.message_count}

    def depths(self) -> dict[str, int] | None:
        # Between /stats calls this connection sits idle and nobody services its heartbeats,
        # so the broker may have dropped it: one fresh connection is tried before giving up.
        with self._lock:
            for _ in range(2):
                try:
                    return self._count()
                except CONNECTION_ERRORS:
                    self._close_depth_connection()
            return None

    def _close_depth_connection(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except CONNECTION_ERRORS:
                pass

    def ping(self) -> None:
        if self.depths() is None:
            raise QueueUnavailable(f"RabbitMQ at {self.parameters.host}:{self.parameters.port}")

    def close(self) -> None:
        self._publisher.close()
        with self._lock:
            self._close_depth_connection()

    # -- consuming --------------------------------------------------------------------------

    def consume(self, handler: MessageHandler, stop: StopSignal) -> None:
        """Consume until `stop`; reconnect with backoff whenever the connection drops."""
        backoff = 0.5
        with ThreadPoolExecutor(self.workers, thread_name_prefix="deliver") as pool:
            while not stop.is_set():
                try:
                    self._consume_once(handler, stop, pool)
                    backoff = 0.5
                except CONNECTION_ERRORS as error:
                    log.warning(
                        "event=consumer_disconnected error=%r retry_in=%.1fs", error, backoff
                    )
                    stop.wait(backoff)
                    backoff = min(backoff * 2, 15.0)

    def _consume_once(self, handler: MessageHandler, stop: StopSignal, pool) -> None:
        connection = pika.BlockingConnection(self.parameters)
        in_flight: set = set()
        idle = threading.Condition()
        try:
            channel = connection.channel()
            self._declare(channel)
            channel.basic_qos(prefetch_count=self.prefetch_count)

            finished: deque[tuple[int, bool]] = deque()  # (tag, ok), filled by workers
            settling = [False]  # a settle_finished call is scheduled; guarded by `idle`

            def settle_finished() -> None:
                # Runs on the connection's thread (scheduled by add_callback_threadsafe). One
                # wake-up settles whatever finished meanwhile, acking with `multiple` where
                # every earlier delivery is settled too.
                with idle:
                    settling[0] = False
                batch = []
                while finished:
                    batch.append(finished.popleft())
                if not batch:
                    return
                with idle:
                    in_flight.difference_update(tag for tag, _ in batch)
                    oldest_open = min(in_flight, default=None)
                if channel.is_open:
                    for tag, ok in batch:
                        if not ok:
                            channel.basic_nack(tag, requeue=True)
                    acks = sorted(tag for tag, ok in batch if ok)
                    below = [t for t in acks if oldest_open is None or t < oldest_open]
                    if below:
                        channel.basic_ack(below[-1], multiple=True)
                    for tag in acks[len(below) :]:
                        channel.basic_ack(tag)
                with idle:
                    idle.notify_all()

            def work(tag: int, body: bytes) -> None:
                ok = True
                try:
                    handler(decode_message(body))
                except ValueError:
                    log.error("event=malformed_message body=%r dropped=true", body[:200])
                except Exception:
                    log.exception("event=deliver_failed requeued=true")
                    stop.wait(1.0)  # nothing was stored: back off before the redelivery
                    ok = False
                finished.append((tag, ok))  # acked only now: the outcome is stored
                with idle:
                    if settling[0]:
                        return  # the scheduled call will take this one too
                    settling[0] = True
                try:
                    connection.add_callback_threadsafe(settle_finished)
                except CONNECTION_ERRORS:
                    pass  # connection gone: the broker redelivers the unacked message

            def on_message(_channel, method, _properties, body: bytes) -> None:
                with idle:
                    in_flight.add(method.delivery_tag)
                pool.submit(work, method.delivery_tag, body)

            consumer_tag = channel.basic_consume(self.queue_name, on_message)
            log.info(
                "event=consumer_started queue=%s prefetch=%d", self.queue_name, self.prefetch_count
            )
            while not stop.is_set():
                connection.process_data_events(time_limit=0.2)
            channel.basic_cancel(consumer_tag)
            # Finish what is in flight: keep servicing the connection until every ack is sent.
            while True:
                with idle:
                    if not in_flight:
                        break
                connection.process_data_events(time_limit=0.1)
        finally:
            if connection.is_open:
                try:
                    connection.close()
                except CONNECTION_ERRORS:
                    pass
