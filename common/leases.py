"""The leases of the sends in flight: one thread per process renews each claim while its send
runs, so a slow provider never lets a healthy worker's claim expire, and a dead worker's claim
expires within one lease (common/delivery.py holds the claims)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from common.store.base import NotificationStore

log = logging.getLogger("notifications")


class LeaseKeeper:
    """One thread per process that renews the leases of the sends in flight."""

    def __init__(
        self, store: NotificationStore, lease_seconds: float, clock: Callable[[], datetime]
    ):
        self.store = store
        self.lease = timedelta(seconds=lease_seconds)
        self.interval = lease_seconds / 3
        self.clock = clock
        self._held: dict[tuple[str, str], threading.Event] = {}  # (id, token) -> lost
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @contextmanager
    def holding(self, notification_id: str, token: str) -> Iterator[threading.Event]:
        """Renew this claim until the block ends; the event is set if the claim was lost."""
        lost = threading.Event()
        with self._lock:
            self._held[(notification_id, token)] = lost
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)
                self._thread.start()
        try:
            yield lost
        finally:
            with self._lock:
                self._held.pop((notification_id, token), None)

    def _run(self) -> None:
        pause = threading.Event()  # never set: a plain interruptible sleep
        while not pause.wait(self.interval):
            with self._lock:
                held = list(self._held.items())
            for (notification_id, token), lost in held:
                self._renew(notification_id, token, lost)

    def _renew(self, notification_id: str, token: str, lost: threading.Event) -> None:
        try:
            kept = self.store.extend_lease(notification_id, token, self.clock() + self.lease)
        except Exception as error:  # noqa: BLE001 - the store is down: try again next round
            log.warning(
                "notification=%s event=lease_renewal_failed error=%s", notification_id, error
            )
            return
        with self._lock:
            still_sending = (notification_id, token) in self._held
        if not kept and still_sending and not lost.is_set():
            lost.set()
            log.warning("notification=%s event=lease_lost during=send", notification_id)
