"""The dashboard's activity: the recorder's minute counts and latency buckets, p50/p99 from the
buckets, flushes that add up across processes, on SQLite and on MongoDB (mongomock in CI)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from common.activity import (
    BOUNDS_MS,
    BUCKETS,
    ActivityRecorder,
    MinuteCounts,
    bucket_of,
    minute_of,
    percentile_ms,
)
from common.activity_store import MongoActivityStore, SqliteActivityStore
from common.notification_events import (
    ACCEPTED,
    DELIVERED,
    FAILED,
    RETRY_SCHEDULED,
    SENT,
    NotificationEvent,
)
from tests.support.mongo import mongo_database

NOW = datetime.now(UTC).replace(second=30, microsecond=0)


def event(kind: str, at: datetime = NOW, latency: float = 0.2, send_at=None):
    notification = SimpleNamespace(
        id="n1", created_at=at - timedelta(seconds=latency), send_at=send_at
    )
    return NotificationEvent(kind, notification, at)


@pytest.fixture(params=["sqlite", "mongo"])
def activity_store(request, tmp_path):
    if request.param == "sqlite":
        store = SqliteActivityStore(tmp_path / "activity.db")
        yield store
        store.close()
    else:
        with mongo_database() as (client, name):
            yield MongoActivityStore(client, name)


class ManualClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# -- buckets and percentiles -------------------------------------------------------------------


def test_buckets_are_log_spaced_from_10_ms_to_an_hour():
    assert BOUNDS_MS[0] == 10 and BOUNDS_MS[-1] == 3_600_000 and BUCKETS == 25
    ratios = [b / a for a, b in zip(BOUNDS_MS, BOUNDS_MS[1:], strict=False)]
    assert all(1.6 < r < 1.9 for r in ratios)
    assert bucket_of(0) == 0 and bucket_of(10) == 0 and bucket_of(11) == 1
    assert bucket_of(3_600_000) == 23 and bucket_of(5_000_000) == 24


def test_p50_and_p99_come_from_the_buckets_within_a_bucket():
    buckets = [0] * BUCKETS
    buckets[bucket_of(200)] = 98  # 98 fast sends
    buckets[bucket_of(30_000)] = 2  # 2 slow ones
    p50, p99 = percentile_ms(buckets, 0.5), percentile_ms(buckets, 0.99)
    assert BOUNDS_MS[bucket_of(200) - 1] <= p50 <= BOUNDS_MS[bucket_of(200)]
    assert BOUNDS_MS[bucket_of(30_000) - 1] <= p99 <= BOUNDS_MS[bucket_of(30_000)]
    assert percentile_ms([0] * BUCKETS, 0.5) is None
    only_slow = [0] * BUCKETS
    only_slow[-1] = 1
    assert percentile_ms(only_slow, 0.99) == 3_600_000


# -- the recorder ------------------------------------------------------------------------------


def test_the_recorder_counts_per_minute_and_flushes_every_five_seconds(activity_store):
    clock = ManualClock()
    recorder = ActivityRecorder(activity_store, monotonic=clock)
    previous = NOW - timedelta(minutes=1)
    recorder.notify([event(ACCEPTED, previous), event(ACCEPTED), event(ACCEPTED)])
    recorder.notify([event(SENT, latency=0.25), event(FAILED), event(RETRY_SCHEDULED)])
    recorder.notify([event(DELIVERED)])  # not a chart line
    assert sum(p["accepted"] for p in activity_store.last_hour(NOW)) == 0  # not flushed yet

    clock.now = 5.0
    recorder.notify([event(SENT, latency=0.3)])  # the first event after 5 s flushes
    points = activity_store.last_hour(NOW)
    assert len(points) == 60
    assert points[-1]["minute"] == NOW.replace(second=0).isoformat().replace("+00:00", "Z")
    last, before = points[-1], points[-2]
    assert (before["accepted"], before["sent"], before["failed"]) == (1, 0, 0)
    assert (last["accepted"], last["sent"], last["failed"]) == (2, 2, 1)
    assert 161 <= last["p50_ms"] <= 281 and 281 <= last["p99_ms"] <= 491
    assert before["p50_ms"] is None and before["p99_ms"] is None
    recorder.close()


def test_flush_and_close_write_at_once_and_the_timer_flushes_by_itself(activity_store):
    recorder = ActivityRecorder(activity_store, flush_seconds=0.1)
    recorder.notify([event(ACCEPTED)])
    deadline = datetime.now(UTC) + timedelta(seconds=5)
    while activity_store.last_hour(NOW)[-1]["accepted"] == 0 and datetime.now(UTC) < deadline:
        pass
    assert activity_store.last_hour(NOW)[-1]["accepted"] == 1  # the daemon timer's flush

    manual = ActivityRecorder(activity_store, flush_seconds=3600)
    manual.notify([event(ACCEPTED)])
    manual.flush()
    assert activity_store.last_hour(NOW)[-1]["accepted"] == 2
    manual.notify([event(FAILED)])
    manual.close()
    assert activity_store.last_hour(NOW)[-1]["failed"] == 1
    recorder.close()


def test_two_processes_add_to_the_same_minutes(activity_store):
    """Two recorders on one store, as two deliverers on one database: the counts sum."""
    one = ActivityRecorder(activity_store, flush_seconds=3600)
    two = ActivityRecorder(activity_store, flush_seconds=3600)
    one.notify([event(ACCEPTED), event(SENT, latency=0.05)])
    two.notify([event(ACCEPTED), event(SENT, latency=0.05), event(SENT, latency=20)])
    one.close()
    two.close()
    one.notify([event(SENT, latency=0.05)])  # after close: kept until the next flush
    one.flush()
    last = activity_store.last_hour(NOW)[-1]
    assert (last["accepted"], last["sent"]) == (2, 4)
    assert last["p50_ms"] <= 53 and last["p99_ms"] >= 13_820  # the buckets were merged


def test_a_scheduled_notification_is_late_only_from_when_it_was_due(activity_store):
    recorder = ActivityRecorder(activity_store, flush_seconds=3600)
    due = NOW - timedelta(seconds=0.1)
    recorder.notify([event(SENT, latency=3000, send_at=due)])
    recorder.close()
    assert activity_store.last_hour(NOW)[-1]["p99_ms"] <= 161


def test_a_store_outage_keeps_the_counts_for_the_next_flush(activity_store, monkeypatch):
    recorder = ActivityRecorder(activity_store, flush_seconds=3600)
    recorder.notify([event(ACCEPTED)])

    def down(counts, now=None):
        raise OSError("down")

    monkeypatch.setattr(activity_store, "add", down)
    recorder.flush()  # logged, not raised
    monkeypatch.undo()
    recorder.flush()
    assert activity_store.last_hour(NOW)[-1]["accepted"] == 1


def test_rows_older_than_two_hours_are_pruned(activity_store):
    old = minute_of(NOW - timedelta(hours=3))
    recent = minute_of(NOW - timedelta(minutes=90))
    activity_store.add({old: MinuteCounts(accepted=5), recent: MinuteCounts(accepted=7)}, NOW)
    assert activity_store._read(old, old) == {}
    assert activity_store._read(recent, recent)[recent].accepted == 7
