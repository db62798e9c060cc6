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

from common.queue.base import MessageHandler, NotificationQueue, StopSignal

log = logging.getLogger(__name__)


class MemoryQueue(NotificationQueue):
    def __init__(self, dead_letter_limit: int = 10_000):
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
        while not stop.is_set():
            notification_id = self.get(timeout=0.2)
            if notification_id is None:
                continue
            try:
                handler(notification_id)
            except Exception:
                # Nothing was recorded (store down): keep the message, and do not spin.
                log.exception("notification=%s event=deliver_failed requeued=true", notification_id)
                self._messages.put(notification_id)
                stop.wait(1.0)
