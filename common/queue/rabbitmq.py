"""RabbitMQ through pika: durable queues, persistent messages, publisher confirms.

Publishing goes through one asynchronous connection shared by every thread (see
`rabbitmq_publisher`: concurrent publishes share their confirm round trips). pika's
BlockingConnection is not thread-safe, so the small connection that reads queue depths is used
under a lock, and the consumer owns its own connection on its own thread. Deliveries run on
worker threads and are acked through `add_callback_threadsafe`, the connection's only
thread-safe method, so that a slow SMTP server never starves the consumer's heartbeats.

Short heartbeats and a bounded connection set-up (stack_timeout) let every connection notice a
broker that froze or stopped answering within seconds, not minutes.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import pika
import pika.exceptions

from common import tracing
from common.queue.base import (
    FAILED_HANDLING_PAUSE,
    MalformedMessage,
    MessageHandler,
    NotificationQueue,
    QueueUnavailable,
    StopSignal,
    decode_delivery,
    encode_message,
    poison_letter,
    poison_reason,
)
from common.queue.rabbitmq_publisher import ConfirmingPublisher

log = logging.getLogger(__name__)

PERSISTENT = pika.BasicProperties(
    content_type="application/json", delivery_mode=pika.DeliveryMode.Persistent
)
# Everything pika raises when a connection or channel is gone or refuses us.
CONNECTION_ERRORS = (pika.exceptions.AMQPError, OSError)
HEARTBEAT_SECONDS = 5
# The consumer reconnects after this long at most, so a broker that is back is used promptly.
MAX_RECONNECT_BACKOFF = 5.0


def traced_properties(traceparent: str | None) -> pika.BasicProperties | None:
    """PERSISTENT with the message's trace context as a header; None when it has none."""
    if not traceparent:
        return None
    return pika.BasicProperties(
        content_type=PERSISTENT.content_type,
        delivery_mode=PERSISTENT.delivery_mode,
        headers={tracing.HEADER: traceparent},
    )


def traceparent_of(properties) -> str | None:
    """The valid trace context a consumed message carries, else None."""
    headers = getattr(properties, "headers", None) or {}
    return tracing.parse_traceparent(headers.get(tracing.HEADER))


class RabbitQueue(NotificationQueue):
    def __init__(
        self,
        url: str,
        *,
        queue_name: str = "notifications",
        dead_letter_queue: str = "notifications_dlq",
        prefetch_count: int = 32,
        workers: int = 8,
        connect_timeout: float = 3.0,
        publish_timeout: float = 1.5,
        max_handling_failures: int = 5,
    ):
        self.parameters = pika.URLParameters(url)
        self.parameters.socket_timeout = connect_timeout
        self.parameters.stack_timeout = connect_timeout
        self.parameters.heartbeat = HEARTBEAT_SECONDS
        self.parameters.blocked_connection_timeout = 30
        self.queue_name = queue_name
        self.dead_letter_queue = dead_letter_queue
        self.prefetch_count = prefetch_count
        self.workers = workers
        self.publish_timeout = publish_timeout
        self.max_handling_failures = max_handling_failures
        self._publisher = ConfirmingPublisher(
            self.parameters,
            lambda: (self.queue_name, self.dead_letter_queue),
            PERSISTENT,
            publish_timeout=publish_timeout,
        )
        # depths() and ping() use a blocking connection of their own, on one thread of their
        # own, so a caller can stop waiting for a broker that does not answer.
        self._connection: pika.BlockingConnection | None = None
        self._channel = None
        self._depth_thread = ThreadPoolExecutor(1, thread_name_prefix="rabbitmq-depths")
        self._depth_lock = threading.Lock()
        self._depth_call: Future | None = None
        self._on_connected: list[Callable[[], None]] = []

    # -- publishing (through the confirming publisher's own connection) ----------------------

    def publish(
        self,
        ids: Sequence[str],
        timeout: float | None = None,
        background: bool = False,
        traceparents: Mapping[str, str] | None = None,
    ) -> None:
        if ids:
            bodies = [encode_message(i) for i in ids]
            found = traceparents or {}
            properties = [traced_properties(found.get(i)) for i in ids] if found else None
            self._publisher.publish(self.queue_name, bodies, timeout, background, properties)

    def publish_dead_letter(self, notification: dict) -> None:
        body = json.dumps(notification, default=str).encode()
        self._publisher.publish(self.dead_letter_queue, [body])

    def _requeue_with_failures(
        self, notification_id: str, failures: int, traceparent: str | None
    ) -> None:
        body = encode_message(notification_id, failures)
        properties = [traced_properties(traceparent)]
        self._publisher.publish(
            self.queue_name, [body], 5.0, background=True, properties=properties
        )

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

    def _count_with_retry(self) -> dict[str, int] | None:
        # Between /stats calls this connection sits idle and nobody services its heartbeats,
        # so the broker may have dropped it: one fresh connection is tried before giving up.
        for _ in range(2):
            try:
                return self._count()
            except Exception:  # noqa: BLE001 - any failure means "unknown", and a reconnect
                self._close_depth_connection()
        return None

    def depths(self, timeout: float | None = None) -> dict[str, int] | None:
        """None when the broker does not answer within `timeout`; while an earlier call is
        still stuck on a silent broker, None at once (no second thread, no second socket)."""
        with self._depth_lock:
            call = self._depth_call
            if call is None or call.done():
                call = self._depth_call = self._depth_thread.submit(self._count_with_retry)
            elif timeout is not None:
                return None
        try:
            return call.result(timeout)
        except FutureTimeout:
            return None

    def _close_depth_connection(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except CONNECTION_ERRORS:
                pass

    def ping(self, timeout: float | None = 5.0) -> None:
        if self.depths(timeout) is None:
            raise QueueUnavailable(f"RabbitMQ at {self.parameters.host}:{self.parameters.port}")

    def close(self) -> None:
        self._publisher.close()
        self._depth_thread.submit(self._close_depth_connection)
        self._depth_thread.shutdown(wait=False)

    def on_connected(self, callback: Callable[[], None]) -> None:
        self._on_connected.append(callback)

    # -- consuming --------------------------------------------------------------------------

    def consume(self, handler: MessageHandler, stop: StopSignal) -> None:
        """Consume until `stop`; reconnect with backoff whenever the connection drops, for any
        reason (pika raises more than AMQPError: AMQPConnectorStackTimeout is not one)."""
        backoff = 0.5
        with ThreadPoolExecutor(self.workers, thread_name_prefix="deliver") as pool:
            while not stop.is_set():
                try:
                    self._consume_once(handler, stop, pool)
                    backoff = 0.5
                except Exception as error:  # noqa: BLE001 - reconnect whatever it was
                    log.warning(
                        "event=consumer_disconnected error=%r retry_in=%.1fs", error, backoff
                    )
                    stop.wait(backoff)
                    backoff = min(backoff * 2, MAX_RECONNECT_BACKOFF)

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

            def work(tag: int, body: bytes, traceparent: str | None) -> None:
                with tracing.traced(traceparent):  # the handler's log lines, and ours
                    ok = self._handle(handler, body, stop, traceparent)
                finished.append((tag, ok))  # acked only now: the outcome is stored
                with idle:
                    if settling[0]:
                        return  # the scheduled call will take this one too
                    settling[0] = True
                try:
                    connection.add_callback_threadsafe(settle_finished)
                except CONNECTION_ERRORS:
                    pass  # connection gone: the broker redelivers the unacked message

            def on_message(_channel, method, properties, body: bytes) -> None:
                with idle:
                    in_flight.add(method.delivery_tag)
                pool.submit(work, method.delivery_tag, body, traceparent_of(properties))

            consumer_tag = channel.basic_consume(self.queue_name, on_message)
            log.info(
                "event=consumer_started queue=%s prefetch=%d", self.queue_name, self.prefetch_count
            )
            for callback in self._on_connected:
                callback()
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

    def _handle(
        self, handler: MessageHandler, body: bytes, stop: StopSignal, traceparent: str | None
    ) -> bool:
        """Handle one message; True to ack it, False to have the broker redeliver it.

        A malformed message, or one whose handling failed max_handling_failures times, goes to
        the dead-letter queue with the reason; an earlier failure puts a copy back on the queue
        with the count raised (classic queues keep no count of their own)."""
        try:
            notification_id, failures = decode_delivery(body)
        except MalformedMessage as error:
            log.error("event=malformed_message body=%r error=%s", body[:200], error)
            return self._dead_letter(body, f"malformed message: {error}")
        try:
            handler(notification_id)
            return True
        except Exception as error:  # noqa: BLE001 - nothing was recorded: count the failure
            failures += 1
            reason = poison_reason(notification_id, failures, error, self.max_handling_failures)
            if reason:
                return self._dead_letter(body, reason)
            stop.wait(FAILED_HANDLING_PAUSE)
            try:
                self._requeue_with_failures(notification_id, failures, traceparent)
                return True
            except QueueUnavailable:
                return False  # the broker redelivers the original

    def _dead_letter(self, body: bytes, reason: str) -> bool:
        try:
            self.publish_dead_letter(poison_letter(body, reason))
            return True
        except QueueUnavailable as error:
            log.error("event=dead_letter_failed reason=%s error=%s", reason, error)
            return False
