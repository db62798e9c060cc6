"""The embedded queue: a thread-safe in-process queue, for a runner with nothing installed.

Messages live only as long as the process; the store stays the source of truth, and the sweep
requeues what a restart dropped.
"""

from __future__ import annotations

import json
import queue
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

from common import tracing
from common.queue.base import (
    FAILED_HANDLING_PAUSE,
    MessageHandler,
    NotificationQueue,
    StopSignal,
    poison_reason,
)

# (notification id, failed handlings so far, traceparent or None)
Message = tuple[str, int, str | None]


class MemoryQueue(NotificationQueue):
    def __init__(
        self, workers: int = 8, dead_letter_limit: int = 10_000, max_handling_failures: int = 5
    ):
        self.workers = workers
        self.max_handling_failures = max_handling_failures
        self._messages: queue.Queue[Message] = queue.Queue()
        # A bounded record of dead letters, so that /stats can show a depth like the broker's.
        self.dead_letters: deque[dict] = deque(maxlen=dead_letter_limit)
        self._lock = threading.Lock()

    def publish(
        self,
        ids: Sequence[str],
        timeout: float | None = None,
        background: bool = False,
        traceparents: Mapping[str, str] | None = None,
    ) -> None:
        traceparents = traceparents or {}
        for notification_id in ids:
            self._messages.put((notification_id, 0, traceparents.get(notification_id)))

    def publish_dead_letter(self, notification: dict) -> None:
        with self._lock:
            self.dead_letters.append(json.loads(json.dumps(notification, default=str)))

    def depths(self, timeout: float | None = None) -> dict[str, int]:
        return {"messages": self._messages.qsize(), "dead_letters": len(self.dead_letters)}

    def get(self, timeout: float) -> str | None:
        """Take the next message's notification id (as a consumer would), or None."""
        message = self._next(timeout)
        return message[0] if message else None

    def _next(self, timeout: float) -> Message | None:
        try:
            return self._messages.get(timeout=timeout)
        except queue.Empty:
            return None

    def consume(self, handler: MessageHandler, stop: StopSignal) -> None:
        """Deliver on `workers` threads, so that one slow provider does not hold up the rest;
        on stop, finish what is in flight."""
        slots = threading.BoundedSemaphore(self.workers)
        with ThreadPoolExecutor(self.workers, thread_name_prefix="deliver") as pool:
            while not stop.is_set():
                if not slots.acquire(timeout=0.2):
                    continue
                message = self._next(timeout=0.2)
                if message is None:
                    slots.release()
                    continue
                pool.submit(self._deliver_one, handler, message, stop, slots)

    def _deliver_one(self, handler, message: Message, stop: StopSignal, slots) -> None:
        notification_id, failures, traceparent = message
        with tracing.traced(traceparent):  # the failure's log lines are traced too
            try:
                handler(notification_id)
            except Exception as error:  # nothing was recorded: keep the message, up to a limit
                failures += 1
                limit = self.max_handling_failures
                reason = poison_reason(notification_id, failures, error, limit)
                if reason:
                    self.publish_dead_letter(
                        {"notification_id": notification_id, "dead_letter_reason": reason}
                    )
                else:
                    stop.wait(FAILED_HANDLING_PAUSE)
                    self._messages.put((notification_id, failures, traceparent))
            finally:
                slots.release()
