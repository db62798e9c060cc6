"""The queue port: carries notification ids (never the notification itself) to the deliverers."""

from __future__ import annotations

import json
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence

from common.errors import Unavailable

# A consumer hands each message to this; it returns once the outcome is stored and raises when
# nothing could be recorded (the message must then go back on the queue). It runs in the
# message's trace context (common.tracing), so its log lines carry the sender's trace id.
MessageHandler = Callable[[str], None]

log = logging.getLogger("notifications.queue")


class QueueUnavailable(Unavailable):
    """The broker could not be reached or did not confirm a publish."""


class MalformedMessage(ValueError):
    """A queue message that names no notification: no handling can ever succeed."""


def encode_message(notification_id: str, failures: int = 0) -> bytes:
    """A queue message; `failures` counts the handlings that raised (poison detection)."""
    data: dict = {"notification_id": notification_id}
    if failures:
        data["failures"] = failures
    return json.dumps(data).encode()


def decode_message(body: bytes) -> str:
    """The notification id in a queue message; MalformedMessage for anything else."""
    return decode_delivery(body)[0]


def decode_delivery(body: bytes) -> tuple[str, int]:
    """(notification id, failed handlings so far) from a queue message."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise MalformedMessage("message is not JSON") from None
    notification_id = data.get("notification_id") if isinstance(data, dict) else None
    if not isinstance(notification_id, str) or not notification_id:
        raise MalformedMessage("message has no notification_id")
    failures = data.get("failures", 0)
    if not isinstance(failures, int) or isinstance(failures, bool) or failures < 0:
        failures = 0
    return notification_id, failures


# Seconds a worker waits after a failed handling before the message is back on the queue, so
# that a store that is down is not hammered.
FAILED_HANDLING_PAUSE = 1.0


def poison_reason(
    notification_id: str, failures: int, error: BaseException, limit: int
) -> str | None:
    """After the `failures`-th failed handling of a message (nothing could be recorded): the
    reason to dead-letter it once `limit` is reached, else None (it goes back on the queue).
    The one rule both queues follow, logged the same way."""
    log.error(
        "notification=%s event=deliver_failed failures=%d/%d",
        notification_id,
        failures,
        limit,
        exc_info=error,
    )
    if failures < limit:
        return None
    reason = f"handling failed {failures} times: {error!r}"[:500]
    log.error("notification=%s event=poison_message %s", notification_id, reason)
    return reason


def poison_letter(body: bytes, reason: str) -> dict:
    """What the dead-letter queue gets for a message that could not be handled."""
    try:
        notification_id: str | None = decode_message(body)
    except MalformedMessage:
        notification_id = None
    return {
        "notification_id": notification_id,
        "dead_letter_reason": reason,
        "message": body[:2000].decode("utf-8", "replace"),
    }


class NotificationQueue(ABC):
    @abstractmethod
    def publish(
        self,
        ids: Sequence[str],
        timeout: float | None = None,
        background: bool = False,
        traceparents: Mapping[str, str] | None = None,
    ) -> None:
        """Queue these ids; returns only once the queue has taken all of them (confirmed).

        Raises QueueUnavailable otherwise, within `timeout` seconds: then none should be
        counted as queued (though some may still arrive: a duplicate is harmless).
        `background`: no request waits on this call (the sweep), so while the broker is
        known to be down it still waits for a reconnection instead of failing at once.
        `traceparents`: the W3C trace context of each id that has one, carried with its
        message (an AMQP header) and made current while the consumer's handler runs.
        """

    @abstractmethod
    def publish_dead_letter(self, notification: dict) -> None:
        """Put a notification that gave up on the dead-letter queue, as JSON."""

    @abstractmethod
    def depths(self, timeout: float | None = None) -> dict[str, int] | None:
        """Messages waiting in the main and dead-letter queues; None when the backend cannot
        tell within `timeout` seconds."""

    @abstractmethod
    def consume(self, handler: MessageHandler, stop: StopSignal) -> None:
        """Feed messages to `handler` until `stop` is set; ack each after the handler returns.

        A handler that raises leaves its message queued again with its failures counted; after
        `max_handling_failures` the message goes to the dead-letter queue with the reason.
        A malformed message goes there at once."""

    def on_connected(self, callback: Callable[[], None]) -> None:  # noqa: B027
        """Call `callback` each time the consumer (re)connects after losing the broker."""

    def ping(self) -> None:  # noqa: B027 - the in-process queue is always there
        """Raise if the queue cannot be reached."""

    def close(self) -> None:  # noqa: B027
        pass


class StopSignal:
    """A threading.Event by another name, so that consumers do not depend on the runner."""

    def __init__(self):
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._event.wait(timeout)
