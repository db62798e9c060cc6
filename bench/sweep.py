"""Sweep cost: time to requeue 1,000 due notifications when 20k, 100k or 1M are stored.

Each store is built straight into a SQLite file (one big transaction, indexes made after), with
1,000 due rows (half `retry_scheduled` retries, half `scheduled` sends whose send_at has come),
10,000 `scheduled` sends not due yet, 1% retries not yet due, and the rest sent.
`NotificationService.sweep()` then runs against a real RabbitMQ queue; the due rows are reset
between repetitions.
"""

from __future__ import annotations

import random
import sqlite3
import time
import uuid
from datetime import timedelta
from pathlib import Path

from bench.harness import RABBITMQ_URL, Workspace, median
from bench.report import Row
from common.config import Settings
from common.model import utcnow
from common.queue.rabbitmq import RabbitQueue
from common.service import NotificationService
from common.store.sqlite import COLUMNS, INDEXES_ON_ADDED, SCHEMA, SqliteStore, to_millis

DUE = 1000
SCHEDULED_WAITING = 10_000  # scheduled sends not due yet, in every size
TABLE = SCHEMA.split(";")[0]


def build(path: Path, total: int) -> list[str]:
    """Write `total` notifications; return the ids of the DUE ones."""
    rng = random.Random(total)
    now = to_millis(utcnow())
    due_at, later = now - 60_000, now + 3_600_000
    not_due = max(100, total // 100)
    send_later = now + 7 * 86_400_000
    due_ids: list[str] = []
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(TABLE)
    placeholders = ",".join("?" * len(COLUMNS))
    insert = f"INSERT INTO notifications ({','.join(COLUMNS)}) VALUES ({placeholders})"
    picked = rng.sample(range(total), DUE + SCHEDULED_WAITING + not_due)
    due_positions = set(picked[:DUE])
    waiting_positions = set(picked[DUE : DUE + SCHEDULED_WAITING])
    positions = set(picked)
    chunk: list[tuple] = []
    db.execute("BEGIN")
    for i in range(total):
        notification_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        created = now - (total - i) * 10
        send_at = None
        if i in due_positions:
            due_ids.append(notification_id)
            status, retry, next_time, sent = "retry_scheduled", 1, due_at, None
            if len(due_ids) % 2:  # half of the due ones are scheduled sends
                status, retry, next_time, send_at = "scheduled", 0, None, due_at
        elif i in waiting_positions:
            status, retry, next_time, sent, send_at = "scheduled", 0, None, None, send_later
        elif i in positions:
            status, retry, next_time, sent = "retry_scheduled", 1, later, None
        else:
            status, retry, next_time, sent = "sent", 0, None, created + 20
        row = {
            "id": notification_id,
            "user_id": f"user-{i % 5000}",
            "notification_type": "in_app",
            "message": "hello",
            "status": status,
            "retry_count": retry,
            "max_retries": 5,
            "attempts": retry,
            "next_retry_time": next_time,
            "created_at": created,
            "updated_at": created,
            "sent_at": sent,
            "send_at": send_at,
            "transactional": 0,
        }
        chunk.append(tuple(row.get(column) for column in COLUMNS))
        if len(chunk) == 100_000:
            db.executemany(insert, chunk)
            chunk.clear()
    db.executemany(insert, chunk)
    db.execute("COMMIT")
    db.executescript(SCHEMA + INDEXES_ON_ADDED)  # the indexes, built once over the whole table
    db.execute("ANALYZE")
    db.close()
    return due_ids


def _reset(path: Path, due_ids: list[str]) -> None:
    due_at = to_millis(utcnow() - timedelta(minutes=1))
    with sqlite3.connect(path, isolation_level=None) as db:
        db.execute("BEGIN")
        db.executemany(
            "UPDATE notifications SET status = CASE WHEN send_at IS NULL "
            "THEN 'retry_scheduled' ELSE 'scheduled' END, next_retry_time = CASE WHEN send_at "
            "IS NULL THEN ? END, lease_until = NULL WHERE id = ?",
            [(due_at, i) for i in due_ids],
        )
        db.execute("COMMIT")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def measure(total: int, repetitions: int) -> dict:
    space = Workspace(f"sweep_{total}")
    try:
        build_started = time.perf_counter()
        due_ids = build(space.db_path, total)
        build_seconds = time.perf_counter() - build_started
        settings = Settings(rabbitmq_url=RABBITMQ_URL, queue_name=space.queue, dlq_name=space.dlq)
        queue = RabbitQueue(RABBITMQ_URL, queue_name=space.queue, dead_letter_queue=space.dlq)
        store = SqliteStore(space.db_path)
        service = NotificationService(settings, store, queue, channels={})
        queue.ping()  # the publisher's connection, opened once as in the runner
        times, requeued = [], []
        for repetition in range(repetitions + 1):
            _reset(space.db_path, due_ids)
            started = time.perf_counter()
            report = service.sweep()
            elapsed = time.perf_counter() - started
            if repetition:  # the first is a warm-up
                times.append(elapsed)
                requeued.append(report.requeued)
        queue.close()
        store.close()
        return {
            "stored": total,
            "build_seconds": build_seconds,
            "seconds": times,
            "median_ms": median(times) * 1000,
            "requeued": requeued,
        }
    finally:
        space.cleanup()


def run(sizes: list[int], repetitions: int) -> dict:
    results = {size: measure(size, repetitions) for size in sizes}
    smallest, largest = min(sizes), max(sizes)
    base = results[smallest]["median_ms"]
    rows = []
    for size in sizes:
        result = results[size]
        ratio = result["median_ms"] / base
        complete = all(n == DUE for n in result["requeued"])
        rows.append(
            Row(
                f"sweep: requeue {DUE:,} due with {size:,} stored, {SCHEDULED_WAITING:,} scheduled",
                f"{result['median_ms']:.0f} ms" + ("" if complete else " (INCOMPLETE)"),
                f"{base:.0f} ms at {smallest:,}" if size != smallest else "—",
                f"{ratio:.2f}" if size != smallest else "—",
                "≤ 2.0 of smallest" if size == largest and size != smallest else "—",
                (ratio <= 2 and complete) if size == largest and size != smallest else None,
            ).to_dict()
        )
    return {"rows": rows, "raw": {str(k): v for k, v in results.items()}}
