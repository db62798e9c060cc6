"""Publisher confirms for many threads at once, without one round trip per message.

With pika's BlockingConnection in confirm mode, each `basic_publish` waits for its own confirm,
so publishers queue up behind a lock and pay a round trip each (about 2.7k messages/s on
loopback). Here one thread owns an asynchronous connection (SelectConnection); callers hand it
their messages and wait for their own confirms. Whatever arrived from concurrent callers is
published back to back, and the broker confirms it with few (often `multiple`) acks, so twenty
callers cost about one round trip, not twenty. A publish still returns only once every one of
its messages is confirmed.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence

import pika
import pika.spec

from common.queue.base import QueueUnavailable

log = logging.getLogger(__name__)


class _Batch:
    """The messages of one `publish` call; settled on the connection's thread only."""

    __slots__ = ("routing_key", "bodies", "pending", "refused", "lost", "done")

    def __init__(self, routing_key: str, bodies: Sequence[bytes]):
        self.routing_key = routing_key
        self.bodies = bodies
        self.pending = len(bodies)
        self.refused: str | None = None  # nacked or unroutable: do not retry
        self.lost: BaseException | None = None  # the connection went away: retry once
        self.done = threading.Event()

    def settle(self, refused: str | None = None) -> None:
        if refused and not self.refused:
            self.refused = refused
        self.pending -= 1
        if self.pending <= 0:
            self.done.set()

    def lose(self, error: BaseException | None) -> None:
        self.lost = error or ConnectionError("connection closed")
        self.done.set()


class _Link:
    """One SelectConnection with a confirming channel, run by its own thread until it closes."""

    def __init__(self, parameters: pika.URLParameters, queues: Sequence[str], properties):
        self.parameters = parameters
        self.queues = list(queues)
        self.properties = properties
        self.ready = threading.Event()
        self.closed = False
        self.error: BaseException | None = None
        self.lock = threading.Lock()
        self.waiting: deque[_Batch] = deque()
        # [delivery tag, batch, routing key, body, returned] in publishing order.
        self.unconfirmed: deque[list] = deque()
        self.tag = 0
        self.connection: pika.SelectConnection | None = None
        self.channel = None
        self.thread = threading.Thread(target=self._run, name="rabbitmq-publisher", daemon=True)
        self.thread.start()

    # -- the connection's thread -----------------------------------------------------------

    def _run(self) -> None:
        try:
            self.connection = pika.SelectConnection(
                self.parameters,
                on_open_callback=self._on_open,
                on_open_error_callback=self._on_open_error,
                on_close_callback=self._on_closed,
            )
            self.connection.ioloop.start()
        except Exception as error:  # noqa: BLE001 - whatever it was, the link is gone
            self._shut(error)

    def _on_open(self, connection) -> None:
        connection.channel(on_open_callback=self._on_channel)

    def _on_channel(self, channel) -> None:
        self.channel = channel
        channel.add_on_close_callback(self._on_channel_closed)
        channel.add_on_return_callback(self._on_return)
        self._declare(list(self.queues))

    def _declare(self, remaining: list[str]) -> None:
        if remaining:
            self.channel.queue_declare(
                remaining[0], durable=True, callback=lambda _frame: self._declare(remaining[1:])
            )
        else:
            self.channel.confirm_delivery(self._on_confirm, callback=lambda _frame: self._ready())

    def _ready(self) -> None:
        self.ready.set()
        self._flush()

    def _on_open_error(self, connection, error: BaseException) -> None:
        self._shut(error)
        connection.ioloop.stop()

    def _on_closed(self, connection, reason: BaseException) -> None:
        self._shut(reason)
        connection.ioloop.stop()

    def _on_channel_closed(self, _channel, reason: BaseException) -> None:
        self._shut(reason)
        if self.connection is not None and not (
            self.connection.is_closing or self.connection.is_closed
        ):
            self.connection.close()

    def _shut(self, error: BaseException | None) -> None:
        """Closed for good: every message not yet confirmed is reported lost."""
        with self.lock:
            self.closed = True
            self.error = self.error or error
            batches = list(self.waiting) + [entry[1] for entry in self.unconfirmed]
            self.waiting.clear()
            self.unconfirmed.clear()
        for batch in batches:
            batch.lose(error)
        self.ready.set()

    def _flush(self) -> None:
        """Publish everything handed over since the last flush, back to back."""
        if not self.ready.is_set() or self.closed:
            return
        publish = self.channel.basic_publish
        try:
            while self.waiting:
                batch = self.waiting.popleft()
                for body in batch.bodies:
                    self.tag += 1
                    self.unconfirmed.append([self.tag, batch, batch.routing_key, body, False])
                    # mandatory: an unroutable message is returned, not confirmed silently.
                    publish("", batch.routing_key, body, self.properties, mandatory=True)
        except Exception as error:  # noqa: BLE001 - channel or socket gone mid-publish
            self._shut(error)

    def _on_return(self, _channel, method, _properties, body: bytes) -> None:
        # The broker sends basic.return before the ack of the same message.
        for entry in self.unconfirmed:
            if not entry[4] and entry[2] == method.routing_key and entry[3] == body:
                entry[4] = True
                entry[1].refused = f"unroutable: {method.reply_text}"
                return

    def _on_confirm(self, frame) -> None:
        method = frame.method
        refused = "nacked by the broker" if isinstance(method, pika.spec.Basic.Nack) else None
        tag = method.delivery_tag
        unconfirmed = self.unconfirmed
        if method.multiple:
            while unconfirmed and unconfirmed[0][0] <= tag:
                unconfirmed.popleft()[1].settle(refused)
            return
        for index, entry in enumerate(unconfirmed):
            if entry[0] == tag:
                del unconfirmed[index]
                entry[1].settle(refused)
                return

    # -- any thread ------------------------------------------------------------------------

    def submit(self, batch: _Batch) -> bool:
        with self.lock:
            if self.closed:
                return False
            self.waiting.append(batch)
        try:
            self.connection.ioloop.add_callback_threadsafe(self._flush)
        except Exception:  # noqa: BLE001 - the loop stopped: _shut has failed the batch
            pass
        return True

    def close(self, timeout: float = 5.0) -> None:
        connection = self.connection
        if connection is not None and not self.closed:
            try:
                connection.ioloop.add_callback_threadsafe(
                    lambda: connection.is_open and connection.close()
                )
            except Exception:  # noqa: BLE001
                pass
        self.thread.join(timeout)


class ConfirmingPublisher:
    """Thread-safe: `publish` returns once the broker confirmed every message, else raises."""

    def __init__(
        self,
        parameters: pika.URLParameters,
        queues: Callable[[], Sequence[str]],
        properties: pika.BasicProperties,
        *,
        connect_timeout: float = 5.0,
        confirm_timeout: float = 30.0,
    ):
        self.parameters = parameters
        self.queues = queues
        self.properties = properties
        self.connect_timeout = connect_timeout
        self.confirm_timeout = confirm_timeout
        self._lock = threading.Lock()
        self._link: _Link | None = None

    @property
    def connection(self):
        """The current connection (tests use it to cut the socket)."""
        return self._link.connection if self._link else None

    def _current_link(self) -> _Link:
        with self._lock:
            link = self._link
            if link is None or link.closed:
                link = _Link(self.parameters, self.queues(), self.properties)
                if not link.ready.wait(self.connect_timeout * 2 + 1) or link.closed:
                    link.close(timeout=1)
                    raise QueueUnavailable(f"RabbitMQ unreachable: {link.error!r}")
                self._link = link
            return link

    def publish(self, routing_key: str, bodies: Sequence[bytes]) -> None:
        if not bodies:
            return
        for attempt in (1, 2):
            batch = _Batch(routing_key, bodies)
            link = self._current_link()
            if not link.submit(batch):
                batch.lose(link.error)
            elif not batch.done.wait(self.confirm_timeout):
                raise QueueUnavailable(f"RabbitMQ did not confirm within {self.confirm_timeout}s")
            if batch.refused:
                raise QueueUnavailable(f"broker refused the message: {batch.refused}")
            if batch.lost is None:
                return
            # The connection dropped (perhaps while idle): reconnect once, then give up.
            if attempt == 2:
                raise QueueUnavailable(f"RabbitMQ unreachable: {batch.lost!r}")

    def close(self) -> None:
        with self._lock:
            link, self._link = self._link, None
        if link is not None:
            link.close()
