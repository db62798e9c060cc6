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

import json
import logging
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common.errors import DuplicateId, StoreUnavailable
from common.lifecycle import CANCEL, CLAIM, REQUEUE, Move, cancelled
from common.model import (
    FAILED_PERMANENTLY,
    PENDING,
    QUEUED,
    RETRY_SCHEDULED,
    SCHEDULED,
    SENDING,
    Notification,
)
from common.sqlite_files import ThreadConnections
from common.store import sqlite_inbox
from common.store.base import (
    DUPLICATE,
    INSERTED,
    Cursor,
    NotificationStore,
    Page,
    clamp_limit,
)

log = logging.getLogger("notifications.store")

TIME_FIELDS = (
    "next_retry_time",
    "lease_until",
    "created_at",
    "updated_at",
    "sent_at",
    "dead_lettered_at",
    "send_at",
    "delivery_status_at",
    "seen_at",
    "read_at",
    "archived_at",
    "inbox_updated_at",
)
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
    "attempts",
    "claim_token",
    "request_hash",
    "template",
    "template_version",
    "locale",
    "html",
    "title",
    "action_url",
    "category",
    "transactional",
    "cancel_key",
    "status_reason",
    "provider_message_id",
    "delivery_status",
    "delivery_error_code",
    "traceparent",
    "data",
) + TIME_FIELDS
DATA_INDEX = COLUMNS.index("data")  # stored as JSON text

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
    sent_at INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    claim_token TEXT,
    request_hash TEXT,
    dead_lettered_at INTEGER,
    template TEXT,
    template_version INTEGER,
    locale TEXT,
    html TEXT,
    title TEXT,
    action_url TEXT,
    category TEXT,
    transactional INTEGER NOT NULL DEFAULT 0,
    send_at INTEGER,
    cancel_key TEXT,
    status_reason TEXT,
    provider_message_id TEXT,
    delivery_status TEXT,
    delivery_error_code TEXT,
    delivery_status_at INTEGER,
    traceparent TEXT,
    data TEXT,
    seen_at INTEGER,
    read_at INTEGER,
    archived_at INTEGER,
    inbox_updated_at INTEGER
);
CREATE INDEX IF NOT EXISTS ix_user_created ON notifications (user_id, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS ix_status_next_retry ON notifications (status, next_retry_time);
CREATE INDEX IF NOT EXISTS ix_status_lease ON notifications (status, lease_until);
CREATE INDEX IF NOT EXISTS ix_status_updated ON notifications (status, updated_at);
CREATE INDEX IF NOT EXISTS ix_type ON notifications (notification_type);
"""
# Columns added after the first release: a file written by an older version gains them.
ADDED_COLUMNS = {
    "attempts": "INTEGER NOT NULL DEFAULT 0",
    "claim_token": "TEXT",
    "request_hash": "TEXT",
    "dead_lettered_at": "INTEGER",
    "template": "TEXT",
    "template_version": "INTEGER",
    "locale": "TEXT",
    "html": "TEXT",
    "title": "TEXT",
    "action_url": "TEXT",
    "category": "TEXT",
    "transactional": "INTEGER NOT NULL DEFAULT 0",
    "send_at": "INTEGER",
    "cancel_key": "TEXT",
    "status_reason": "TEXT",
    "provider_message_id": "TEXT",
    "delivery_status": "TEXT",
    "delivery_error_code": "TEXT",
    "delivery_status_at": "INTEGER",
    "traceparent": "TEXT",
    "data": "TEXT",  # JSON
    "seen_at": "INTEGER",
    "read_at": "INTEGER",
    "archived_at": "INTEGER",
    "inbox_updated_at": "INTEGER",
}
# Created once the added columns exist (SCHEMA runs first, on a file that may lack them).
INDEXES_ON_ADDED = (
    """
CREATE INDEX IF NOT EXISTS ix_status_dead_letter ON notifications (status, dead_lettered_at);
CREATE INDEX IF NOT EXISTS ix_status_send_at ON notifications (status, send_at);
CREATE INDEX IF NOT EXISTS ix_cancel_key ON notifications (cancel_key) WHERE cancel_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS ix_provider_message_id ON notifications (provider_message_id)
    WHERE provider_message_id IS NOT NULL;
"""
    + sqlite_inbox.INBOX_INDEXES
)
# How often (seconds) the store checks that its file is still the one it opened.
FILE_CHECK_INTERVAL = 1.0


def to_millis(value: datetime | None) -> int | None:
    if value is None:
        return None
    return round(value.timestamp() * 1000)


def from_millis(value: int | None) -> datetime | None:
    if value is None:
        return None
    return datetime.fromtimestamp(value / 1000, tz=UTC)


def _row_values(notification: Notification) -> tuple:
    values = [
        to_millis(getattr(notification, name))
        if name in TIME_FIELDS
        else getattr(notification, name)
        for name in COLUMNS
    ]
    if notification.data is not None:
        values[DATA_INDEX] = json.dumps(notification.data, ensure_ascii=False)
    return tuple(values)


def _to_notification(row: sqlite3.Row) -> Notification:
    values = {name: row[name] for name in COLUMNS}
    for name in TIME_FIELDS:
        values[name] = from_millis(values[name])
    values["transactional"] = bool(values["transactional"])  # SQLite has no boolean: 0 or 1
    if values["data"] is not None:
        values["data"] = json.loads(values["data"])
    return Notification(**values)


class _Write:
    """One statement waiting for the write lock, and what it returned once run."""

    __slots__ = ("sql", "params", "rows", "count", "error", "taken", "done")

    def __init__(self, sql: str, params: Sequence[Any]):
        self.sql = sql
        self.params = params
        self.rows: list[sqlite3.Row] = []
        self.count = 0
        self.error: BaseException | None = None
        self.taken = False  # a lock holder has started on it: it will run
        self.done = threading.Event()


def _column_value(name: str, value: Any) -> Any:
    if name not in COLUMNS or name == "id":
        raise ValueError(f"unknown or immutable field {name!r}")
    if name == "data":
        return None if value is None else json.dumps(value, ensure_ascii=False)
    return to_millis(value) if name in TIME_FIELDS else value


def _outage(error: sqlite3.Error) -> StoreUnavailable:
    """Our own error for what sqlite3 raised: locked, disk I/O, a missing table."""
    log.error("event=store_error error=%s", error)
    if "locked" in str(error) or "busy" in str(error):
        return StoreUnavailable("the notification store is busy (its file is locked); try again")
    return StoreUnavailable("the notification store is unavailable; try again shortly")


class SqliteStore(sqlite_inbox.SqliteInbox, NotificationStore):
    """The inbox's operations (and their SQL) are SqliteInbox's, in common/store/sqlite_inbox.py."""

    _record = staticmethod(_to_notification)
    _millis = staticmethod(to_millis)

    def __init__(self, path: Path | str, timeout: float = 3.0):
        self.path = str(path)
        # How long a write may wait for the file's lock (another process, a long transaction)
        # before the caller is told the store is unavailable.
        self.timeout = timeout
        self._connections = ThreadConnections(self.path, timeout)
        self._write_lock = threading.Lock()
        self._queue_lock = threading.Lock()
        self._writes: deque[_Write] = deque()
        self._file_identity: tuple[int, int] | None = None
        self._file_checked_at = 0.0
        try:
            self._create_schema(self._connection())
        except sqlite3.Error as error:
            raise _outage(error) from error
        self._file_identity = self._identity()

    # -- connections and the file they point at ----------------------------------------------

    def _identity(self) -> tuple[int, int] | None:
        if self.path == ":memory:":
            return None
        stat = os.stat(self.path)
        return stat.st_dev, stat.st_ino

    def _check_file(self) -> None:
        """Refuse to work on a file that was deleted or replaced under us: old connections
        would keep writing to the unlinked file, and everything written would vanish."""
        if self._file_identity is None:
            return
        now = time.monotonic()
        if now - self._file_checked_at < FILE_CHECK_INTERVAL:
            return
        try:
            identity = self._identity()
        except FileNotFoundError:
            identity = None
        if identity != self._file_identity:
            log.error("event=store_file_gone path=%s", self.path)
            raise StoreUnavailable(
                f"the store file {self.path} was removed or replaced while the service ran; "
                "restart the service to open it again"
            )
        self._file_checked_at = now

    def _create_schema(self, connection: sqlite3.Connection) -> None:
        connection.executescript(SCHEMA)
        present = {row["name"] for row in connection.execute("PRAGMA table_info(notifications)")}
        for name, definition in ADDED_COLUMNS.items():
            if name not in present:
                connection.execute(f"ALTER TABLE notifications ADD COLUMN {name} {definition}")
                if name == "dead_lettered_at":
                    # An older version already tried their dead-letter copies.
                    connection.execute(
                        "UPDATE notifications SET dead_lettered_at = updated_at WHERE status = ?",
                        (FAILED_PERMANENTLY,),
                    )
        connection.executescript(INDEXES_ON_ADDED)

    def _connection(self) -> sqlite3.Connection:
        self._check_file()
        return self._connections.get()

    def _read(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[sqlite3.Row]:
        try:
            return self._connection().execute(sql, params).fetchall()
        except sqlite3.OperationalError as error:
            raise _outage(error) from error

    # -- writes: combined across threads, bounded in time -------------------------------------

    def _write(self, sql: str, params: Sequence[Any] = ()) -> tuple[list[sqlite3.Row], int]:
        """Run one write (with what other threads queued meanwhile): (rows returned, changed).

        Waits at most about `timeout` for the lock; a statement not yet taken by then is
        withdrawn and reported as a store outage, so a locked file is a prompt 503."""
        connection = self._connection()
        deadline = time.monotonic() + self.timeout
        job = _Write(sql, params)
        with self._queue_lock:
            self._writes.append(job)
        if self._write_lock.acquire(timeout=self.timeout):
            try:
                if not job.done.is_set():  # else an earlier holder of the lock ran it
                    self._limit_busy_wait(connection, deadline)
                    self._run_writes(connection)
            finally:
                self._write_lock.release()
        else:
            with self._queue_lock:
                if not job.taken:
                    self._writes.remove(job)
                    raise StoreUnavailable("the notification store is busy; try again")
            job.done.wait(self.timeout * 2)  # a holder is running it right now
        if not job.done.is_set():
            raise StoreUnavailable("the notification store did not finish a write in time")
        if job.error is not None:
            if isinstance(job.error, sqlite3.OperationalError):
                raise _outage(job.error) from job.error
            raise job.error
        return job.rows, job.count

    def _limit_busy_wait(self, connection: sqlite3.Connection, deadline: float) -> None:
        """What is left of this caller's time is all SQLite may wait for another process's
        lock: waiting for our own lock and then for the file's never adds up past `timeout`."""
        left = max(0.001, deadline - time.monotonic())
        connection.execute(f"PRAGMA busy_timeout={int(left * 1000) or 1}")

    def _run_writes(self, connection: sqlite3.Connection) -> None:
        """Under the write lock: every queued statement, in one transaction when several."""
        with self._queue_lock:
            jobs = list(self._writes)
            self._writes.clear()
            for job in jobs:
                job.taken = True
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
            if not isinstance(error, sqlite3.Error):
                raise
        finally:
            for job in jobs:
                job.done.set()

    def add(self, notification: Notification) -> None:
        placeholders = ",".join("?" * len(COLUMNS))
        try:
            self._write(
                f"INSERT INTO notifications ({','.join(COLUMNS)}) VALUES ({placeholders})",
                _row_values(notification),
            )
        except sqlite3.IntegrityError as error:
            raise DuplicateId(notification.id) from error

    def add_many(self, notifications: Sequence[Notification]) -> list[str]:
        """One transaction: the ids already taken are looked up first, the rest inserted in
        one executemany (a row per statement would cost a fifth of batch throughput)."""
        if not notifications:
            return []
        connection = self._connection()
        insert = (
            f"INSERT INTO notifications ({','.join(COLUMNS)}) "
            f"VALUES ({','.join('?' * len(COLUMNS))})"
        )
        deadline = time.monotonic() + self.timeout
        if not self._write_lock.acquire(timeout=self.timeout):
            raise StoreUnavailable("the notification store is busy; nothing was stored")
        try:
            self._limit_busy_wait(connection, deadline)
            connection.execute("BEGIN IMMEDIATE")
            try:
                taken = self._taken_ids(connection, [n.id for n in notifications])
                outcomes = []
                for notification in notifications:
                    outcomes.append(DUPLICATE if notification.id in taken else INSERTED)
                    taken.add(notification.id)  # a repeat within the batch is one too
                fresh = [n for n, o in zip(notifications, outcomes, strict=True) if o == INSERTED]
                connection.executemany(insert, [_row_values(n) for n in fresh])
                connection.execute("COMMIT")
                return outcomes
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError as error:
            raise _outage(error) from error
        finally:
            self._write_lock.release()

    @staticmethod
    def _taken_ids(connection: sqlite3.Connection, ids: Sequence[str]) -> set[str]:
        taken: set[str] = set()
        for start in range(0, len(ids), 900):
            chunk = ids[start : start + 900]
            rows = connection.execute(
                f"SELECT id FROM notifications WHERE id IN ({','.join('?' * len(chunk))})", chunk
            )
            taken.update(row[0] for row in rows)
        return taken

    def get(self, notification_id: str) -> Notification | None:
        rows = self._read("SELECT * FROM notifications WHERE id = ?", (notification_id,))
        return _to_notification(rows[0]) if rows else None

    def list_for_user(
        self,
        user_id: str,
        *,
        notification_type: str | None = None,
        status: str | None = None,
        limit: int = 50,
        cursor: Cursor | None = None,
        read: bool | None = None,
        archived: str = "false",
        category: str | None = None,
    ) -> Page:
        limit = clamp_limit(limit)
        where, params = ["user_id = ?"], [user_id]
        if notification_type:
            where.append("notification_type = ?")
            params.append(notification_type)
        if status:
            where.append("status = ?")
            params.append(status)
        inbox_where, inbox_params = sqlite_inbox.list_filters(read, archived, category)
        where += inbox_where
        params += inbox_params
        if cursor:
            where.append("(created_at < ? OR (created_at = ? AND id < ?))")
            millis = to_millis(cursor.created_at)
            params += [millis, millis, cursor.id]
        rows = self._read(
            f"SELECT * FROM notifications WHERE {' AND '.join(where)} "
            "ORDER BY created_at DESC, id DESC LIMIT ?",
            (*params, limit + 1),
        )
        items = [_to_notification(row) for row in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            last = items[-1]
            next_cursor = Cursor(last.created_at, last.id).encode()
        return Page(items, next_cursor)

    def _apply(
        self,
        notification_id: str,
        move: Move,
        changes: dict[str, Any],
        *,
        token: str | None = None,
        types: Iterable[str] | None = None,
    ) -> Notification | None:
        assignments = ", ".join(f"{name} = ?" for name in changes)
        values = [_column_value(name, value) for name, value in changes.items()]
        condition = f"status IN ({','.join('?' * len(move.sources))})"
        parameters = [*values, notification_id, *move.sources]
        if move.fenced:
            condition += " AND claim_token = ?"
            parameters.append(token)
        if types is not None:
            types = list(types)
            condition += f" AND notification_type IN ({','.join('?' * len(types))})"
            parameters += types
        rows = self._write(
            f"UPDATE notifications SET {assignments} WHERE id = ? AND {condition} RETURNING *",
            tuple(parameters),
        )[0]
        return _to_notification(rows[0]) if rows else None

    def _apply_many(self, ids: Sequence[str], move: Move, updated_at: datetime) -> int:
        moved = 0
        sources = ",".join("?" * len(move.sources))
        # SQLite limits bound parameters; 900 per statement stays well inside it.
        for start in range(0, len(ids), 900):
            chunk = ids[start : start + 900]
            _, count = self._write(
                f"UPDATE notifications SET status = ?, updated_at = ? "
                f"WHERE status IN ({sources}) AND id IN ({','.join('?' * len(chunk))})",
                (move.target, to_millis(updated_at), *move.sources, *chunk),
            )
            moved += count
        return moved

    def claim(
        self, notification_id: str, now: datetime, lease_until: datetime, token: str
    ) -> Notification | None:
        rows = self._write(
            "UPDATE notifications SET status = ?, lease_until = ?, updated_at = ?, "
            "claim_token = ?, attempts = attempts + 1 WHERE id = ? "
            f"AND (status IN ({','.join('?' * len(CLAIM.sources))}) "
            "OR (status = ? AND lease_until <= ?)) RETURNING *",
            (
                CLAIM.target,
                to_millis(lease_until),
                to_millis(now),
                token,
                notification_id,
                *CLAIM.sources,
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
            "SELECT id FROM notifications WHERE status = ? AND send_at <= ?",
        ]
        params: list[Any] = [
            RETRY_SCHEDULED,
            now_ms,
            PENDING,
            to_millis(pending_before),
            SENDING,
            now_ms,
            SCHEDULED,
            now_ms,
        ]
        if queued_before is not None:
            branches.append("SELECT id FROM notifications WHERE status = ? AND updated_at <= ?")
            params += [QUEUED, to_millis(queued_before)]
        selected = " UNION ALL ".join(f"SELECT * FROM ({b} LIMIT {int(limit)})" for b in branches)
        rows = self._write(
            "UPDATE notifications SET status = ?, updated_at = ?, lease_until = NULL, "
            f"claim_token = NULL WHERE id IN (SELECT id FROM ({selected}) LIMIT ?) RETURNING *",
            (REQUEUE.target, now_ms, *params, int(limit)),
        )[0]
        return [_to_notification(row) for row in rows]

    def cancel_by_key(self, cancel_key: str, now: datetime, reason: str) -> list[Notification]:
        changes = cancelled(now, reason)
        assignments = ", ".join(f"{name} = ?" for name in changes)
        rows = self._write(
            f"UPDATE notifications SET {assignments} WHERE cancel_key = ? "
            f"AND status IN ({','.join('?' * len(CANCEL.sources))}) RETURNING *",
            (
                *(_column_value(name, value) for name, value in changes.items()),
                cancel_key,
                *CANCEL.sources,
            ),
        )[0]
        return [_to_notification(row) for row in rows]

    def count_with_cancel_key(self, cancel_key: str, exclude: Sequence[str] = ()) -> int:
        leaving_out = f" AND status NOT IN ({','.join('?' * len(exclude))})" if exclude else ""
        rows = self._read(
            f"SELECT COUNT(*) FROM notifications WHERE cancel_key = ?{leaving_out}",
            (cancel_key, *exclude),
        )
        return rows[0][0]

    def find_by_provider_id(self, provider_message_id: str) -> Notification | None:
        rows = self._read(
            "SELECT * FROM notifications WHERE provider_message_id = ? LIMIT 1",
            (provider_message_id,),
        )
        return _to_notification(rows[0]) if rows else None

    def record_delivery_status(
        self,
        notification_id: str,
        status: str,
        error_code: str | None,
        at: datetime,
        advance_from: Sequence[str | None],
    ) -> Notification | None:
        sources = ["" if s is None else s for s in advance_from]  # '': never reported (NULL)
        rows = self._write(
            "UPDATE notifications SET delivery_status = ?, delivery_error_code = ?, "
            "delivery_status_at = ? WHERE id = ? "
            f"AND COALESCE(delivery_status, '') IN ({','.join('?' * len(sources))}) RETURNING *",
            (status, error_code, to_millis(at), notification_id, *sources),
        )[0]
        return _to_notification(rows[0]) if rows else None

    def dead_letters_due(self, limit: int = 500) -> list[Notification]:
        rows = self._read(
            "SELECT * FROM notifications WHERE status = ? AND dead_lettered_at IS NULL LIMIT ?",
            (FAILED_PERMANENTLY, int(limit)),
        )
        return [_to_notification(row) for row in rows]

    def mark_dead_lettered(self, ids: Sequence[str], now: datetime) -> int:
        marked = 0
        for start in range(0, len(ids), 900):
            chunk = ids[start : start + 900]
            _, count = self._write(
                "UPDATE notifications SET dead_lettered_at = ? WHERE status = ? "
                f"AND dead_lettered_at IS NULL AND id IN ({','.join('?' * len(chunk))})",
                (to_millis(now), FAILED_PERMANENTLY, *chunk),
            )
            marked += count
        return marked

    def _count_by(self, column: str) -> dict[str, int]:
        rows = self._read(f"SELECT {column}, COUNT(*) FROM notifications GROUP BY {column}")
        return {row[0]: row[1] for row in rows}

    def count_by_status(self) -> dict[str, int]:
        return self._count_by("status")

    def count_by_type(self) -> dict[str, int]:
        return self._count_by("notification_type")

    def count_by_delivery_status(self) -> dict[str, int]:
        return {k: n for k, n in self._count_by("delivery_status").items() if k is not None}

    def ping(self) -> None:
        self._file_checked_at = 0.0  # readiness always looks at the file itself
        self._read("SELECT 1 FROM notifications LIMIT 1")

    def close(self) -> None:
        self._connections.close_all()
