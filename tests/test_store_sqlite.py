"""What only the embedded SQLite store has to get right: a file locked by another process,
a file deleted under the running service, and a file written by an older version."""

from __future__ import annotations

import sqlite3
import time

import pytest

from common.errors import StoreUnavailable
from common.model import Notification
from common.store.sqlite import FILE_CHECK_INTERVAL, SqliteStore


def note(**extra) -> Notification:
    return Notification(user_id="u1", notification_type="in_app", message="hi", **extra)


def test_a_locked_file_is_refused_within_the_timeout_not_after_a_minute(tmp_path):
    store = SqliteStore(tmp_path / "n.db", timeout=0.5)
    other = sqlite3.connect(tmp_path / "n.db", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")  # another process holds the file
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as caught:
            store.add(note())
        assert time.monotonic() - started < 1.5 and "locked" in caught.value.message
        with pytest.raises(StoreUnavailable):
            store.add_many([note(), note()])
    finally:
        other.execute("ROLLBACK")
        other.close()
    kept = note()
    store.add(kept)  # works again once the lock is gone
    assert store.get(kept.id) is not None


def test_a_file_deleted_under_the_service_is_detected_not_written_into_the_void(tmp_path):
    path = tmp_path / "n.db"
    store = SqliteStore(path)
    store.add(note())
    for leftover in tmp_path.glob("n.db*"):
        leftover.unlink()
    time.sleep(FILE_CHECK_INTERVAL + 0.1)
    with pytest.raises(StoreUnavailable) as caught:
        store.add(note())
    assert "removed or replaced" in caught.value.message
    with pytest.raises(StoreUnavailable):
        store.ping()  # readiness fails too
    assert not path.exists()  # nothing was written anywhere


def test_a_file_from_an_older_version_gains_the_new_columns(tmp_path):
    path = tmp_path / "n.db"
    old = sqlite3.connect(path)
    old.executescript(
        """CREATE TABLE notifications (
            id TEXT PRIMARY KEY, user_id TEXT NOT NULL, notification_type TEXT NOT NULL,
            message TEXT NOT NULL, email TEXT, phone TEXT, subject TEXT, status TEXT NOT NULL,
            retry_count INTEGER NOT NULL DEFAULT 0, max_retries INTEGER NOT NULL DEFAULT 5,
            last_error TEXT, next_retry_time INTEGER, lease_until INTEGER,
            created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, sent_at INTEGER);
        INSERT INTO notifications VALUES
            ('gave-up', 'u1', 'in_app', 'm', NULL, NULL, NULL, 'failed_permanently',
             5, 5, 'e', NULL, NULL, 1000, 2000, NULL);"""
    )
    old.close()
    store = SqliteStore(path)
    migrated = store.get("gave-up")
    assert migrated.attempts == 0 and migrated.claim_token is None
    # Its dead-letter copy was tried by the older version: not published a second time.
    assert migrated.dead_lettered_at is not None and store.dead_letters_due() == []
    assert migrated.transactional is False  # the column's default, read back as a bool
    assert (migrated.category, migrated.send_at, migrated.cancel_key) == (None, None, None)
    assert migrated.status_reason is None
    # The new columns and their indexes work on the migrated file.
    held = note(status="scheduled", send_at=migrated.created_at, cancel_key="k", category="c")
    store.add(held)
    assert store.get(held.id) == held and store.count_with_cancel_key("k") == 1
    assert [n.id for n in store.cancel_by_key("k", held.created_at, "withdrawn")] == [held.id]
    # The inbox's columns: no state, no data; and they work (with their indexes) once there.
    assert (migrated.seen_at, migrated.read_at, migrated.archived_at) == (None, None, None)
    assert migrated.data is None and migrated.title is None
    assert store.inbox_counts("u1") == {"total": 2, "unread": 2, "unseen": 2}
    read = store.mark("gave-up", "read", held.created_at)
    assert read.read_at == read.seen_at == held.created_at
    rich = note(data={"order": 7}, title="t", action_url="/o/7")
    store.add(rich)
    assert store.get(rich.id) == rich
    assert store.mark_all("u1", "seen", held.created_at) == 2


def test_the_sweep_and_cancel_by_key_use_indexes_not_a_scan_of_history(tmp_path):
    store = SqliteStore(tmp_path / "n.db")
    plans = []
    connection = store._connection()
    run = store._write

    def explaining(sql, params=()):
        plans.extend(row[3] for row in connection.execute(f"EXPLAIN QUERY PLAN {sql}", params))
        return run(sql, params)

    store._write = explaining
    now = note().created_at
    store.claim_due(now, pending_before=now, queued_before=now)
    store.cancel_by_key("k", now, "withdrawn")
    reads = ("status=? AND send_at<?", "cancel_key=?")
    assert all(any(read in plan for plan in plans) for read in reads), plans
    assert not any(plan.startswith("SCAN notifications") for plan in plans), plans


def test_the_inbox_counts_are_answered_from_indexes(tmp_path):
    """Each count reads its own partial index, never the user's history; so do the listing's
    inbox filters (the user's index, in order) and the bulk actions."""
    store = SqliteStore(tmp_path / "n.db")
    store.add_many([note() for _ in range(20)])
    connection = store._connection()
    plans: list[str] = []
    read = store._read

    def explaining(sql, params=()):
        plans.extend(row[3] for row in connection.execute(f"EXPLAIN QUERY PLAN {sql}", params))
        return read(sql, params)

    store._read = explaining
    store.inbox_counts("u1", "in_app")
    searches = [plan for plan in plans if " notifications " in f"{plan} "]
    assert len(searches) == 3, plans
    for index, plan in zip(("live", "unread", "unseen"), searches, strict=True):
        assert f"USING INDEX ix_inbox_{index}" in plan or "USING COVERING INDEX" in plan, plans
    plans.clear()
    store.list_for_user("u1", read=False, category="c", archived="false")
    assert plans == ["SEARCH notifications USING INDEX ix_user_created (user_id=?)"], plans
    assert not any(plan.startswith("SCAN") for plan in plans)
