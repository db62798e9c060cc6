"""Publisher confirms for many threads at once, without one round trip per message.

With pika's BlockingConnection in confirm mode, each `basic_publish` waits for its own confirm,
so publishers queue up behind a lock and pay a round trip each (about 2.7k messages/s on
loopback). Here one thread owns an asynchronous connection (SelectConnection); callers hand it
their messages and wait for their own confirms. Whatever arrived from concurrent callers is
published back to back, and the broker confirms it with few (often `multiple`) acks, so twenty
callers cost about one round trip, not twenty. A publish still returns only once every one of
its messages is confirmed.

Every wait is bounded by the caller's deadline, and nobody waits while holding a lock: with the
broker refusing, dropping packets or frozen, each caller gives up by its own deadline, at most
one connection attempt is under way at a time, and a failed one is not retried for a moment, so
a broker outage costs neither threads nor connections.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

import pika
import pika.spec

from common.queue.base import QueueUnavailable

log = logging.getLogger(__name__)


class _Batch:
    """The messages of one `publish` call; settled on the connection's thread only."""

    __slots__ = ("routing_key", "bodies", "properties", "pending", "refused", "lost", "done")

    def __init__(
        self,
        routing_key: str,
        bodies: Sequence[bytes],
        properties: Sequence[pika.BasicProperties | None] | None = None,
    ):
        self.routing_key = routing_key
        self.bodies = bodies
        self.properties = properties  # per message; None (or a None entry): the link's own
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
        # When the broker last showed it is alive to our publishes: a confirm, or the moment
        # messages started waiting on an idle link. Read by callers to spot a silent broker.
        self.last_progress = time.monotonic()
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
        if self.waiting and not self.unconfirmed:
            self.last_progress = time.monotonic()
        try:
            while self.waiting:
                batch = self.waiting.popleft()
                for index, body in enumerate(batch.bodies):
                    self.tag += 1
                    self.unconfirmed.append([self.tag, batch, batch.routing_key, body, False])
                    properties = batch.properties[index] if batch.properties else None
                    # mandatory: an unroutable message is returned, not confirmed silently.
                    publish(
                        "", batch.routing_key, body, properties or self.properties, mandatory=True
                    )
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
        self.last_progress = time.monotonic()
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

    def stalled(self, after: float) -> bool:
        """Messages wait and the broker has confirmed nothing for `after` seconds."""
        return bool(self.unconfirmed) and time.monotonic() - self.last_progress > after

    def abandon(self, reason: str) -> None:
        """Stop using this link now (it stopped confirming): fail what waits on it, and drop
        the socket without the closing handshake a frozen broker would never answer."""
        self._shut(ConnectionError(reason))
        connection = self.connection
        if connection is None:
            return

        def drop() -> None:
            # pika has no public way to drop a connection without the Close/CloseOk round
            # trip; _adapter_disconnect aborts the transport, which ends the ioloop.
            disconnect = getattr(connection, "_adapter_disconnect", None)
            try:
                if disconnect is not None and not connection.is_closed:
                    disconnect()
                elif not (connection.is_closing or connection.is_closed):
                    connection.close()
            except Exception:  # noqa: BLE001 - already going away
                connection.ioloop.stop()

        try:
            connection.ioloop.add_callback_threadsafe(drop)
        except Exception:  # noqa: BLE001 - the loop has stopped already
            pass


# After a failed connection attempt, callers fail at once for this long instead of each
# starting another attempt: a refused broker costs no connection storm.
RECONNECT_PAUSE = 1.0
# A broker that confirms nothing for this long while messages wait is taken for stalled
# (frozen, packets dropped): its callers answer at once instead of holding every request
# thread for the whole PUBLISH_TIMEOUT. A healthy broker confirms within milliseconds, and
# under load confirms keep arriving; a false alarm only costs a reconnect, and the sweep
# publishes what was left pending.
STALL_SECONDS = 0.25
# How often a waiting caller looks for a stall.
STALL_CHECK = 0.05


class ConfirmingPublisher:
    """Thread-safe: `publish` returns once the broker confirmed every message, else raises
    QueueUnavailable by the caller's deadline."""

    def __init__(
        self,
        parameters: pika.URLParameters,
        queues: Callable[[], Sequence[str]],
        properties: pika.BasicProperties,
        *,
        publish_timeout: float = 1.5,
    ):
        self.parameters = parameters
        self.queues = queues
        self.properties = properties
        self.publish_timeout = publish_timeout
        self._lock = threading.Lock()  # guards _link and _retry_at; never held while waiting
        self._link: _Link | None = None
        self._retry_at = 0.0
        self._last_error: BaseException | None = None
        # Set when a connection attempt failed or a link stalled; cleared by the next link that
        # opens. Meanwhile no request waits for a connection: sends answer at once (as pending)
        # while one attempt at a time runs; background callers (the sweep) still wait for it.
        self._outage = False

    @property
    def connection(self):
        """The current connection (tests use it to cut the socket)."""
        return self._link.connection if self._link else None

    def _link_for(self, deadline: float, background: bool = False) -> _Link:
        """The open link, or a new one (at most one connecting at a time), ready by `deadline`.

        During an outage only a `background` caller waits for a connection: it is the one
        that must get through once the broker is back, and no request is waiting on it."""
        while True:
            with self._lock:
                link = self._link
                closing = link is not None and link.closed and link.thread.is_alive()
                if link is None or (link.closed and not closing):
                    if time.monotonic() < self._retry_at:
                        raise QueueUnavailable(f"RabbitMQ unreachable: {self._last_error!r}")
                    link = self._link = _Link(self.parameters, self.queues(), self.properties)
            if not closing:
                break
            if self._outage and not background:
                raise QueueUnavailable("RabbitMQ connection is being closed; try again")
            # The last connection is still winding down: one thread, one socket at a time.
            left = deadline - time.monotonic()
            if left <= 0:
                raise QueueUnavailable("RabbitMQ connection is being closed; try again")
            link.thread.join(min(left, 0.1))
        wait = 0.0 if self._outage and not background else max(0.0, deadline - time.monotonic())
        if not link.ready.wait(wait):
            self._outage = True  # the others need not wait for it too
            raise QueueUnavailable("RabbitMQ did not open a connection in time")
        if link.closed:
            with self._lock:
                self._last_error = link.error
                self._retry_at = time.monotonic() + RECONNECT_PAUSE
                self._outage = True
            raise QueueUnavailable(f"RabbitMQ unreachable: {link.error!r}")
        self._outage = False
        return link

    def publish(
        self,
        routing_key: str,
        bodies: Sequence[bytes],
        timeout: float | None = None,
        background: bool = False,
        properties: Sequence[pika.BasicProperties | None] | None = None,
    ) -> None:
        """`properties`: one per body, for messages that need their own (headers); a None
        entry, or None for all, sends the publisher's default properties."""
        if not bodies:
            return
        deadline = time.monotonic() + (timeout or self.publish_timeout)
        for attempt in (1, 2):
            batch = _Batch(routing_key, bodies, properties)
            link = self._link_for(deadline, background)
            if not link.submit(batch):
                batch.lose(link.error)
            elif not self._confirmed(batch, link, deadline):
                # A broker that stops confirming (frozen, packets dropped) makes everyone
                # wait: drop the link, so the next callers fail fast until one connects.
                self._outage = True
                link.abandon("no publisher confirm in time")
                raise QueueUnavailable("RabbitMQ did not confirm in time")
            if batch.refused:
                raise QueueUnavailable(f"broker refused the message: {batch.refused}")
            if batch.lost is None:
                return
            # The connection dropped (perhaps while idle): reconnect once, then give up.
            if attempt == 2 or time.monotonic() >= deadline:
                raise QueueUnavailable(f"RabbitMQ unreachable: {batch.lost!r}")

    @staticmethod
    def _confirmed(batch: _Batch, link: _Link, deadline: float) -> bool:
        """Wait for the batch's confirms until the deadline, or until the link stalls."""
        stall = min(STALL_SECONDS, max(0.0, deadline - time.monotonic()))
        while not batch.done.wait(min(STALL_CHECK, max(0.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline or link.stalled(stall):
                return False
        return True

    def close(self) -> None:
        with self._lock:
            link, self._link = self._link, None
        if link is not None:
            link.close()
