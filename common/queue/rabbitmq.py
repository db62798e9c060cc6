"""RabbitMQ through pika: durable queues, persistent messages, publisher confirms.

pika's BlockingConnection is not thread-safe, so the publisher's connection is used under a
lock and the consumer owns its own connection on its own thread. Deliveries run on worker
threads and are acked through `add_callback_threadsafe`, the connection's only thread-safe
method, so that a slow SMTP server never starves the consumer's heartbeats.
"""

from __future__ import annotations

import json
import logging
import threading
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
        self._lock = threading.Lock()
        self._connection: pika.BlockingConnection | None = None
        self._channel = None

    # -- publishing -------------------------------------------------------------------------

    def _open_channel(self):
        connection = pika.BlockingConnection(self.parameters)
        channel = connection.channel()
        self._declare(channel)
        channel.confirm_delivery()
        return connection, channel

    def _declare(self, channel) -> None:
        channel.queue_declare(self.queue_name, durable=True)
        channel.queue_declare(self.dead_letter_queue, durable=True)

    def _publish_bodies(self, routing_key: str, bodies: Sequence[bytes]) -> None:
        """Publish under the lock; reconnect once if the connection dropped while idle."""
        with self._lock:
            for attempt in (1, 2):
                try:
                    if self._channel is None or not self._channel.is_open:
                        self._close_publisher()
                        self._connection, self._channel = self._open_channel()
                    for body in bodies:
                        # mandatory: an unroutable message is an error, not a silent confirm.
                        self._channel.basic_publish(
                            "", routing_key, body, properties=PERSISTENT, mandatory=True
                        )
                    return
                except (pika.exceptions.UnroutableError, pika.exceptions.NackError) as error:
                    raise QueueUnavailable(f"broker refused the message: {error!r}") from error
                except CONNECTION_ERRORS as error:
                    self._close_publisher()
                    if attempt == 2:
                        raise QueueUnavailable(f"RabbitMQ unreachable: {error!r}") from error

    def _close_publisher(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except CONNECTION_ERRORS:
                pass

    def publish(self, ids: Sequence[str]) -> None:
        if ids:
            self._publish_bodies(self.queue_name, [encode_message(i) for i in ids])

    def publish_dead_letter(self, notification: dict) -> None:
        body = json.dumps(notification, default=str).encode()
        self._publish_bodies(self.dead_letter_queue, [body])

    def depths(self) -> dict[str, int] | None:
        try:
            with self._lock:
                if self._channel is None or not self._channel.is_open:
                    self._connection, self._channel = self._open_channel()
                main = self._channel.queue_declare(self.queue_name, passive=True)
                dead = self._channel.queue_declare(self.dead_letter_queue, passive=True)
            return {
                "messages": main.method.message_count,
                "dead_letters": dead.method.message_count,
            }
        except CONNECTION_ERRORS:
            with self._lock:
                self._close_publisher()
            return None

    def ping(self) -> None:
        if self.depths() is None:
            raise QueueUnavailable(f"RabbitMQ at {self.parameters.host}:{self.parameters.port}")

    def close(self) -> None:
        with self._lock:
            self._close_publisher()

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

            def settle(tag: int, ok: bool) -> None:
                # Runs on the connection's thread (scheduled by add_callback_threadsafe).
                if channel.is_open:
                    if ok:
                        channel.basic_ack(tag)
                    else:
                        channel.basic_nack(tag, requeue=True)
                with idle:
                    in_flight.discard(tag)
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
                try:
                    connection.add_callback_threadsafe(lambda: settle(tag, ok))
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
