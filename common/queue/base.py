"""The queue port: carries notification ids (never the notification itself) to the deliverers."""

from __future__ import annotations

import json
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

from common.errors import Unavailable

# A consumer hands each message to this; it returns once the outcome is stored and raises when
# nothing could be recorded (the message must then go back on the queue).
MessageHandler = Callable[[str], None]


class QueueUnavailable(Unavailable):
    """The broker could not be reached or did not confirm a publish."""


def encode_message(notification_id: str) -> bytes:
    return json.dumps({"notification_id": notification_id}).encode()


def decode_message(body: bytes) -> str:
    """The notification id in a queue message; ValueError for anything else."""
    data = json.loads(body)
    notification_id = data.get("notification_id") if isinstance(data, dict) else None
    if not isinstance(notification_id, str) or not notification_id:
        raise ValueError("message has no notification_id")
    return notification_id


class NotificationQueue(ABC):
    @abstractmethod
    def publish(self, ids: Sequence[str]) -> None:
        """Queue these ids; returns only once the queue has taken all of them (confirmed).

        Raises QueueUnavailable otherwise: then none should be counted as queued.
        """

    @abstractmethod
    def publish_dead_letter(self, notification: dict) -> None:
        """Put a notification that gave up on the dead-letter queue, as JSON."""

    @abstractmethod
    def depths(self) -> dict[str, int] | None:
        """Messages waiting in the main and dead-letter queues, where the backend can tell."""

    @abstractmethod
    def consume(self, handler: MessageHandler, stop: StopSignal) -> None:
        """Feed messages to `handler` until `stop` is set; ack each after the handler returns."""

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
