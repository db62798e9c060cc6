"""The embedded store: one SQLite file (stdlib sqlite3, WAL), nothing to install.

Times are stored as integer milliseconds since the epoch (UTC), so comparisons are exact.
Each thread gets its own connection; SQLite serialises writers, which makes every
`UPDATE ... RETURNING` an atomic claim.

Within one process, writes are combined: a thread that wants to write queues its statement,
and whichever thread holds the write lock runs every queued statement in one transaction. Under
load this turns many small commits (and as many lock and GIL hand-overs, which cost far more
than the writes) into few; each statement still succeeds or fails on its own. Without our own
lock, threads would meet SQLite's busy handler, which waits by sleeping 1, 2, 5 ... 100 ms.
"""

from __future__ import annotations

import sqlite3
import threading
from collections import deque
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common.errors import DuplicateId
from common.model import (
    PENDING,
    QUEUED,
    RETRY_SCHEDULED,
    SENDING,
    Notification,
)
from common.store.base import Cursor, NotificationStore, Page, clamp_limit

TIME_FIELDS = ("next_retry_time", "lease_until", "created_at", "updated_at", "sent_at")
COLUMNS = (
    "id",
    "user_id",
    "notification_type",
    "message",
    "email",
    "phone",
    "subject",
    "status",
    "retry_count",
    "max_retries",
    "last_error",
) + TIME_FIELDS

SCHEMA = """
CREATE TABLE IF NOT EXISTS notifications (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    notification_type TEXT NOT NULL,
    message TEXT NOT NULL,
    email TEXT,
    phone TEXT,
    subject TEXT,
    status TEXT NOT NULL,
    retry_count INTEGER NOT NULL DEFAULT 0,
    max_retries INTEGER NOT NULL DEFAULT 5,
    last_error TEXT,
    next_retry_time INTEGER,
    lease_until INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    sent_at INTEGER
);
CREATE INDEX IF NOT EXISTS ix_user_created ON notifications (user_id, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS ix_status_next_retry ON notifications (status, next_retry_time);
CREATE INDEX IF NOT EXISTS ix_status_lease ON notifications (status, lease_until);
CREATE INDEX IF NOT EXISTS ix_status_updated ON notifications (status, updated_at);
CREATE INDEX IF NOT EXISTS ix_type ON notifications (notification_type);
"""


def to_millis(value: datetime | None) -> int | None:
    if value is None:
        return None
    return round(value.timestamp() * 1000)


def from_millis(value: int | None) -> datetime | None:
    if value is None:
        return None
    return datetime.fromtimestamp(value / 1000, tz=UTC)


def _row_values(notification: Notification) -> tuple:
    return tuple(
        to_millis(getattr(notification, name))
        if name in TIME_FIELDS
        else getattr(notification, name)
        for name in COLUMNS
    )


def _to_notification(row: sqlite3.Row) -> Notification:
    data = {name: row[name] for name in COLUMNS}
    for name in TIME_FIELDS:
        data[name] = from_millis(data[name])
    return Notification(**data)


class _Write:
    """One statement waiting for the write lock, and what it returned once run."""

    __slots__ = ("sql", "params", "rows", "count", "error", "done")

    def __init__(self, sql: str, params: Sequence[Any]):
        self.sql = sql
        self.params = params
        self.rows: list[sqlite3.Row] = []
        self.count = 0
        self.error: BaseException | None = None
        self.done = False


def _column_value(name: str, value: Any) -> Any:
    if name not in COLUMNS or name == "id":
        raise ValueError(f"unknown or immutable field {name!r}")
    return to_millis(value) if name in TIME_FIELDS else value


class SqliteStore(NotificationStore):
    def __init__(self, path: Path | str):
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._writes: deque[_Write] = deque()
        self._connection().executescript(SCHEMA)

    def _connection(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(
                self.path, timeout=30, isolation_level=None, check_same_thread=False
            )
            connection.row_factory = sqlite3.Row
            connection.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode is durable against process crashes, loses at most the last
            # transactions on power loss, and avoids one fsync per insert.
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute("PRAGMA busy_timeout=30000")
            self._local.connection = connection
            with self._connections_lock:
                self._connections.append(connection)
        return connection

    def _write(self, sql: str, params: Sequence[Any] = ()) -> tuple[list[sqlite3.Row], int]:
        """Run one write (with what other threads queued meanwhile): (rows returned, changed)."""
        job = _Write(sql, params)
        self._writes.append(job)
        with self._write_lock:
            if not job.done:  # else an earlier holder of the lock ran it with its own
                self._run_writes(self._connection())
        if job.error is not None:
            raise job.error
        return job.rows, job.count

    def _run_writes(self, connection: sqlite3.Connection) -> None:
        """Under the write lock: every queued statement, in one transaction when several."""
        jobs: list[_Write] = []
        while self._writes:
            jobs.append(self._writes.popleft())
        grouped = len(jobs) > 1
        try:
            if grouped:
                connection.execute("BEGIN IMMEDIATE")
            for index, job in enumerate(jobs):
                try:
                    cursor = connection.execute(job.sql, job.params)
                    # Read under the lock: the statement (and its autocommit) ends only then.
                    job.rows, job.count = cursor.fetchall(), cursor.rowcount
                except sqlite3.Error as error:
                    job.error = error  # SQLite undoes this statement only...
                    if grouped and not connection.in_transaction:
                        # ...unless it rolled back the whole transaction (disk full, I/O).
                        for earlier in jobs[:index]:
                            earlier.error = earlier.error or error
                        grouped = False
            if grouped:
                connection.execute("COMMIT")
        except BaseException as error:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            for job in jobs:
                job.error = job.error or error
            raise
        finally:
            for job in jobs:
                job.done = True

    def add(self, notification: Notification) -> None:
        placeholders = ",".join("?" * len(COLUMNS))
        try:
            self._write(
                f"INSERT INTO notifications ({','.join(COLUMNS)}) VALUES ({placeholders})",
                _row_values(notification),
            )
        except sqlite3.IntegrityError as error:
            raise DuplicateId(notification.id) from error

    def add_many(self, notifications: Sequence[Notification]) -> None:
        if not notifications:
            return
        connection = self._connection()
        placeholders = ",".join("?" * len(COLUMNS))
        rows = [_row_values(n) for n in notifications]
        with self._write_lock:
            connection.execute("BEGIN IMMEDIATE")
            try:
                connection.executemany(
                    f"INSERT INTO notifications ({','.join(COLUMNS)}) VALUES ({placeholders})",
                    rows,
                )
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise

    def get(self, notification_id: str) -> Notification | None:
        row = (
            self._connection()
            .execute("SELECT * FROM notifications WHERE id = ?", (notification_id,))
            .fetchone()
        )
        return _to_notification(row) if row else None

    def list_for_user(
        self,
        user_id: str,
        *,
        notification_type: str | None = None,
        status: str | None = None,
        limit: int = 50,
        cursor: Cursor | None = None,
    ) -> Page:
        limit = clamp_limit(limit)
        where, params = ["user_id = ?"], [user_id]
        if notification_type:
            where.append("notification_type = ?")
            params.append(notification_type)
        if status:
            where.append("status = ?")
            params.append(status)
        if cursor:
            where.append("(created_at < ? OR (created_at = ? AND id < ?))")
            millis = to_millis(cursor.created_at)
            params += [millis, millis, cursor.id]
        rows = (
            self._connection()
            .execute(
                f"SELECT * FROM notifications WHERE {' AND '.join(where)} "
                "ORDER BY created_at DESC, id DESC LIMIT ?",
                (*params, limit + 1),
            )
            .fetchall()
        )
        items = [_to_notification(row) for row in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            last = items[-1]
            next_cursor = Cursor(last.created_at, last.id).encode()
        return Page(items, next_cursor)

    def update_if(
        self,
        notification_id: str,
        expected: Iterable[str],
        changes: dict[str, Any],
        *,
        types: Iterable[str] | None = None,
    ) -> Notification | None:
        expected = list(expected)
        assignments = ", ".join(f"{name} = ?" for name in changes)
        values = [_column_value(name, value) for name, value in changes.items()]
        condition = f"status IN ({','.join('?' * len(expected))})"
        parameters = [*values, notification_id, *expected]
        if types is not None:
            types = list(types)
            condition += f" AND notification_type IN ({','.join('?' * len(types))})"
            parameters += types
        rows = self._write(
            f"UPDATE notifications SET {assignments} WHERE id = ? AND {condition} RETURNING *",
            tuple(parameters),
        )[0]
        return _to_notification(rows[0]) if rows else None

    def move_status(
        self, ids: Sequence[str], from_status: str, to_status: str, updated_at: datetime
    ) -> int:
        moved = 0
        # SQLite limits bound parameters; 900 per statement stays well inside it.
        for start in range(0, len(ids), 900):
            chunk = ids[start : start + 900]
            _, count = self._write(
                f"UPDATE notifications SET status = ?, updated_at = ? "
                f"WHERE status = ? AND id IN ({','.join('?' * len(chunk))})",
                (to_status, to_millis(updated_at), from_status, *chunk),
            )
            moved += count
        return moved

    def claim_for_delivery(
        self, notification_id: str, now: datetime, lease_until: datetime
    ) -> Notification | None:
        rows = self._write(
            "UPDATE notifications SET status = ?, lease_until = ?, updated_at = ? "
            "WHERE id = ? AND (status IN (?, ?) OR (status = ? AND lease_until <= ?)) "
            "RETURNING *",
            (
                SENDING,
                to_millis(lease_until),
                to_millis(now),
                notification_id,
                PENDING,
                QUEUED,
                SENDING,
                to_millis(now),
            ),
        )[0]
        return _to_notification(rows[0]) if rows else None

    def claim_due(
        self,
        now: datetime,
        *,
        pending_before: datetime,
        queued_before: datetime | None = None,
        limit: int = 500,
    ) -> list[Notification]:
        now_ms = to_millis(now)
        # Each branch is its own indexed range scan; the UNION keeps the cost proportional to
        # what is due, not to what is stored.
        branches = [
            "SELECT id FROM notifications WHERE status = ? AND next_retry_time <= ?",
            "SELECT id FROM notifications WHERE status = ? AND updated_at <= ?",
            "SELECT id FROM notifications WHERE status = ? AND lease_until <= ?",
        ]
        params: list[Any] = [
            RETRY_SCHEDULED,
            now_ms,
            PENDING,
            to_millis(pending_before),
            SENDING,
            now_ms,
        ]
        if queued_before is not None:
            branches.append("SELECT id FROM notifications WHERE status = ? AND updated_at <= ?")
            params += [QUEUED, to_millis(queued_before)]
        selected = " UNION ALL ".join(f"SELECT * FROM ({b} LIMIT {int(limit)})" for b in branches)
        rows = self._write(
            "UPDATE notifications SET status = ?, updated_at = ?, lease_until = NULL "
            f"WHERE id IN (SELECT id FROM ({selected}) LIMIT ?) RETURNING *",
            (QUEUED, now_ms, *params, int(limit)),
        )[0]
        return [_to_notification(row) for row in rows]

    def _count_by(self, column: str) -> dict[str, int]:
        rows = (
            self._connection()
            .execute(f"SELECT {column}, COUNT(*) FROM notifications GROUP BY {column}")
            .fetchall()
        )
        return {row[0]: row[1] for row in rows}

    def count_by_status(self) -> dict[str, int]:
        return self._count_by("status")

    def count_by_type(self) -> dict[str, int]:
        return self._count_by("notification_type")

    def ping(self) -> None:
        self._connection().execute("SELECT 1").fetchone()

    def close(self) -> None:
        with self._connections_lock:
            for connection in self._connections:
                connection.close()
            self._connections.clear()
        self._local = threading.local()
