"""A daemon thread that runs one session (a broker connection's life) again and again until
stopped: whatever a session raises is logged and the next one starts after a bounded backoff,
so a broker outage or a bug never leaves the feed silently dead."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("notifications.inbox_feed")

MIN_BACKOFF = 0.5
MAX_BACKOFF = 5.0


class SupervisedThread:
    def __init__(self, name: str, session: Callable[[threading.Event], None]):
        """`session(stop)` does the work until `stop` is set, or raises."""
        self.name = name
        self.session = session
        self.stop = threading.Event()
        self.restarts = 0
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._supervise, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def close(self, timeout: float) -> None:
        self.stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _supervise(self) -> None:
        backoff = MIN_BACKOFF
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                self.session(self.stop)
                backoff = MIN_BACKOFF  # returned of its own accord: start it again, calmly
            except Exception as error:  # noqa: BLE001 - restart whatever it was, and say so
                self.restarts += 1
                self.last_error = repr(error)
                if self.stop.is_set():
                    break
                if time.monotonic() - started > 2 * MAX_BACKOFF:
                    backoff = MIN_BACKOFF  # it ran well for a while: this is a fresh failure
                log.warning(
                    "event=inbox_feed_restart thread=%s restarts=%d error=%r retry_in=%.1fs",
                    self.name,
                    self.restarts,
                    error,
                    backoff,
                )
            self.stop.wait(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)
        log.info("event=inbox_feed_thread_stopped thread=%s", self.name)
