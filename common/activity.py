"""The dashboard's activity per minute (accepted, sent, failed, delivery latency), counted in
memory by each process and added to a shared ActivityStore every few seconds.

Counting here rather than scanning the notifications keeps the chart cheap at any rate, and
adding (never overwriting) lets every process that accepts or delivers contribute to one chart.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from common.notification_events import ACCEPTED, FAILED, SENT, NotificationEvent

log = logging.getLogger("notifications.activity")

# Upper bounds (ms) of the latency buckets: 24 log-spaced steps from 10 ms to 1 h, then one
# bucket for anything slower. Fixed, so that every process's buckets add up.
BOUNDS_MS: tuple[int, ...] = tuple(round(10 * (360_000 ** (i / 23))) for i in range(24))
BUCKETS = len(BOUNDS_MS) + 1
FLUSH_SECONDS = 5.0
KEEP = timedelta(hours=2)


def minute_of(moment: datetime) -> int:
    """The minute `moment` falls in, as epoch seconds of its start (UTC)."""
    return int(moment.timestamp()) // 60 * 60


def minute_iso(minute: int) -> str:
    return datetime.fromtimestamp(minute, UTC).isoformat().replace("+00:00", "Z")


def bucket_of(latency_ms: float) -> int:
    return bisect.bisect_left(BOUNDS_MS, latency_ms)


def percentile_ms(buckets: Sequence[int], q: float) -> float | None:
    """The q-quantile (0 < q <= 1) of the latencies counted in `buckets`, interpolated on a
    log scale inside its bucket (so within one bucket's width); None when there are none."""
    total = sum(buckets)
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for index, count in enumerate(buckets):
        if count and seen + count >= rank:
            if index == len(BOUNDS_MS):  # slower than the last bound: say the bound
                return float(BOUNDS_MS[-1])
            low = BOUNDS_MS[index - 1] if index else 1.0
            share = (rank - seen) / count
            return round(low * (BOUNDS_MS[index] / low) ** share, 1)
        seen += count
    return float(BOUNDS_MS[-1])


@dataclass
class MinuteCounts:
    """One minute's additions, not yet flushed (or, read back, the stored sum)."""

    accepted: int = 0
    sent: int = 0
    failed: int = 0
    buckets: list[int] = field(default_factory=lambda: [0] * BUCKETS)

    def add(self, other: MinuteCounts) -> None:
        self.accepted += other.accepted
        self.sent += other.sent
        self.failed += other.failed
        self.buckets = [a + b for a, b in zip(self.buckets, other.buckets, strict=True)]


def latency_ms(event: NotificationEvent) -> float:
    notification = event.notification
    # A scheduled notification is late only from when it was due, not from when it was made.
    start = max(notification.created_at, notification.send_at or notification.created_at)
    return max(0.0, (event.at - start).total_seconds() * 1000)


class ActivityRecorder:
    """An EventBus listener that counts per minute and adds the counts to `store` at most
    every `flush_seconds` (on the next event, or from a daemon timer); `close()` flushes."""

    def __init__(
        self,
        store,
        flush_seconds: float = FLUSH_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self.store = store
        self.flush_seconds = flush_seconds
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._pending: dict[int, MinuteCounts] = {}
        self._last_flush = monotonic()
        self._stop = threading.Event()
        self._timer: threading.Thread | None = None

    def notify(self, events: Sequence[NotificationEvent]) -> None:
        with self._lock:
            for event in events:
                self._count(event)
            due = self._monotonic() - self._last_flush >= self.flush_seconds
        self._start_timer()
        if due:
            self.flush()

    def _count(self, event: NotificationEvent) -> None:
        if event.type not in (ACCEPTED, SENT, FAILED):
            return
        counts = self._pending.setdefault(minute_of(event.at), MinuteCounts())
        if event.type == ACCEPTED:
            counts.accepted += 1
        elif event.type == FAILED:
            counts.failed += 1
        else:
            counts.sent += 1
            counts.buckets[bucket_of(latency_ms(event))] += 1

    def flush(self) -> None:
        """Add what was counted since the last flush to the store. Kept for the next flush
        when the store is down, so an outage of the store loses no counts (up to KEEP)."""
        with self._lock:
            pending, self._pending = self._pending, {}
            self._last_flush = self._monotonic()
        if not pending:
            return
        try:
            self.store.add(pending)
        except Exception as error:  # noqa: BLE001 - counting must never break a delivery
            log.warning("event=activity_flush_failed error=%s", error)
            oldest = minute_of(datetime.now(UTC) - KEEP)
            with self._lock:
                for minute, counts in pending.items():
                    if minute >= oldest:
                        self._pending.setdefault(minute, MinuteCounts()).add(counts)

    def last_hour(self, now: datetime) -> list[dict]:
        """The store's last hour, with this process's latest counts in it."""
        self.flush()
        return self.store.last_hour(now)

    def _start_timer(self) -> None:
        if self._timer is not None or self._stop.is_set():
            return
        with self._lock:
            if self._timer is not None:
                return
            self._timer = threading.Thread(
                target=self._run_timer, name="activity-flush", daemon=True
            )
        self._timer.start()

    def _run_timer(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            self.flush()

    def close(self) -> None:
        """Stop the timer and flush (the store stays open: its owner closes it)."""
        self._stop.set()
        self.flush()


def point(minute: int, counts: MinuteCounts | None) -> dict:
    """One chart point as ActivityStore.last_hour returns it."""
    counts = counts or MinuteCounts()
    return {
        "minute": minute_iso(minute),
        "accepted": counts.accepted,
        "sent": counts.sent,
        "failed": counts.failed,
        "p50_ms": percentile_ms(counts.buckets, 0.5),
        "p99_ms": percentile_ms(counts.buckets, 0.99),
    }


def hour_minutes(now: datetime) -> list[int]:
    """The 60 minutes of the last hour, oldest first, ending with the current one."""
    last = minute_of(now)
    return [last - 60 * back for back in range(59, -1, -1)]
