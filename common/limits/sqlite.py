"""Limit state in its own SQLite file (WAL), shared by every process on the machine.

Each update runs in one `BEGIN IMMEDIATE` transaction: SQLite's write lock makes the
read-modify-write atomic across processes, and a batch of keys costs a single commit.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from common.errors import StoreUnavailable
from common.limits.store import Change, LimitStore
from common.sqlite_files import ThreadConnections

log = logging.getLogger("notifications.limits")

SCHEMA = """
CREATE TABLE IF NOT EXISTS limits (
    key TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    expires REAL NOT NULL
) WITHOUT ROWID
"""
# Expired rows read as absent anyway; deleting them now and then only keeps the file small.
PRUNE_INTERVAL = 60.0
PRUNE_BATCH = 1000
# SQLite limits bound parameters per statement; 900 stays well inside every build's limit.
CHUNK = 900


def _outage(error: sqlite3.Error) -> StoreUnavailable:
    log.error("event=limit_store_error error=%s", error)
    if "locked" in str(error) or "busy" in str(error):
        return StoreUnavailable("the limit store is busy (its file is locked); try again")
    return StoreUnavailable("the limit store is unavailable; try again shortly")


class SqliteLimitStore(LimitStore):
    def __init__(
        self, path: Path | str, timeout: float = 3.0, *, clock: Callable[[], float] = time.time
    ):
        self.path = str(path)
        self.timeout = timeout
        self._clock = clock
        self._connections = ThreadConnections(self.path, timeout)
        # Threads of one process queue here rather than in SQLite's busy handler, which sleeps
        # in steps of up to 100 ms.
        self._write_lock = threading.Lock()
        self._pruned_at = float("-inf")
        try:
            self._connection().execute(SCHEMA)
        except sqlite3.Error as error:
            raise _outage(error) from error

    def _connection(self) -> sqlite3.Connection:
        return self._connections.get()

    def update_many(self, items: Sequence[tuple[str, Change, float]]) -> list[Any]:
        if not items:
            return []
        deadline = time.monotonic() + self.timeout
        if not self._write_lock.acquire(timeout=self.timeout):
            raise StoreUnavailable("the limit store is busy; try again")
        try:
            connection = self._connection()
            # What is left of the caller's time is all SQLite may wait for another process.
            left = max(0.001, deadline - time.monotonic())
            connection.execute(f"PRAGMA busy_timeout={int(left * 1000) or 1}")
            connection.execute("BEGIN IMMEDIATE")
            try:
                results = self._apply(connection, items)
                connection.execute("COMMIT")
                return results
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise
        except sqlite3.Error as error:
            raise _outage(error) from error
        finally:
            self._write_lock.release()

    def _apply(
        self, connection: sqlite3.Connection, items: Sequence[tuple[str, Change, float]]
    ) -> list[Any]:
        """Inside the transaction: read every key once, run the changes, write what changed."""
        now = self._clock()
        keys = list(dict.fromkeys(key for key, _, _ in items))
        stored: dict[str, str] = {}
        for start in range(0, len(keys), CHUNK):
            chunk = keys[start : start + CHUNK]
            rows = connection.execute(
                f"SELECT key, state FROM limits WHERE expires > ? "
                f"AND key IN ({','.join('?' * len(chunk))})",
                (now, *chunk),
            )
            stored.update(rows)
        # Each change gets its own decoded copy, so one that edits its state in place cannot
        # make a changed state look unchanged.
        current = {key: json.loads(stored[key]) if key in stored else None for key in keys}
        expires_in: dict[str, float] = {}
        results = []
        for key, change, seconds in items:
            current[key], result = change(current[key], now)
            expires_in[key] = max(seconds, expires_in.get(key, 0.0))
            results.append(result)
        upserts, deletes = [], []
        for key in keys:
            before = json.loads(stored[key]) if key in stored else None
            if current[key] == before:
                continue
            if current[key] is None:
                deletes.append((key,))
            else:
                upserts.append((key, json.dumps(current[key]), now + expires_in[key]))
        connection.executemany("INSERT OR REPLACE INTO limits VALUES (?, ?, ?)", upserts)
        connection.executemany("DELETE FROM limits WHERE key = ?", deletes)
        self._prune(connection, now)
        return results

    def _prune(self, connection: sqlite3.Connection, now: float) -> None:
        if time.monotonic() - self._pruned_at < PRUNE_INTERVAL:
            return
        self._pruned_at = time.monotonic()
        connection.execute(
            "DELETE FROM limits WHERE key IN (SELECT key FROM limits WHERE expires <= ? LIMIT ?)",
            (now, PRUNE_BATCH),
        )

    def close(self) -> None:
        self._connections.close_all()
