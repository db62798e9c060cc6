"""The embedded queue: a thread-safe in-process queue, for a runner with nothing installed.

Messages live only as long as the process; the store stays the source of truth, and the sweep
requeues what a restart dropped.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from common.queue.base import MessageHandler, NotificationQueue, StopSignal

log = logging.getLogger(__name__)


class MemoryQueue(NotificationQueue):
    def __init__(self, workers: int = 8, dead_letter_limit: int = 10_000):
        self.workers = workers
        self._messages: queue.Queue[str] = queue.Queue()
        # A bounded record of dead letters, so that /stats can show a depth like the broker's.
        self.dead_letters: deque[dict] = deque(maxlen=dead_letter_limit)
        self._lock = threading.Lock()

    def publish(self, ids: Sequence[str]) -> None:
        for notification_id in ids:
            self._messages.put(notification_id)

    def publish_dead_letter(self, notification: dict) -> None:
        with self._lock:
            self.dead_letters.append(json.loads(json.dumps(notification, default=str)))

    def depths(self) -> dict[str, int]:
        return {"messages": self._messages.qsize(), "dead_letters": len(self.dead_letters)}

    def get(self, timeout: float) -> str | None:
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
                notification_id = self.get(timeout=0.2)
                if notification_id is None:
                    slots.release()
                    continue
                pool.submit(self._deliver_one, handler, notification_id, stop, slots)

    def _deliver_one(self, handler, notification_id: str, stop: StopSignal, slots) -> None:
        try:
            handler(notification_id)
        except Exception:
            # Nothing was recorded (store down): keep the message, and do not spin.
            log.exception("notification=%s event=deliver_failed requeued=true", notification_id)
            self._messages.put(notification_id)
            stop.wait(1.0)
        finally:
            slots.release()
