"""Preferences in their own SQLite file (DATA_DIR/preferences.db), shared by every process on
the machine. An opt-out reads and rewrites the user's row in one `BEGIN IMMEDIATE`
transaction: SQLite's write lock orders it against every other writer, thread or process."""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from common.errors import StoreUnavailable
from common.preferences.store import PreferenceStore, decode, encode, with_opt_out
from common.sqlite_files import ThreadConnections

log = logging.getLogger("notifications.preferences")

SCHEMA = """
CREATE TABLE IF NOT EXISTS preferences (
    user_id TEXT PRIMARY KEY,
    document TEXT NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;
"""
UPSERT = (
    "INSERT INTO preferences VALUES (?, ?, ?) ON CONFLICT (user_id) "
    "DO UPDATE SET document = excluded.document, updated_at = excluded.updated_at"
)
# Well under SQLite's limit of bound parameters per statement.
CHUNK = 500


def _millis(value: datetime) -> int:
    return round(value.timestamp() * 1000)


class SqlitePreferenceStore(PreferenceStore):
    def __init__(self, path: Path | str, timeout: float = 3.0):
        self.path = str(path)
        self.timeout = timeout
        self._connections = ThreadConnections(self.path, timeout)
        # Threads of one process queue here rather than in SQLite's busy handler, which sleeps
        # in steps of up to 100 ms.
        self._write_lock = threading.Lock()
        self._run(lambda db: db.executescript(SCHEMA))

    def _run(self, work):
        try:
            return work(self._connections.get())
        except sqlite3.OperationalError as error:
            log.error("event=preference_store_error error=%s", error)
            raise StoreUnavailable(
                "the preference store is unavailable; try again shortly"
            ) from error

    def _write(self, work):
        if not self._write_lock.acquire(timeout=self.timeout):
            raise StoreUnavailable("the preference store is busy; try again")
        try:
            return self._run(work)
        finally:
            self._write_lock.release()

    def close(self) -> None:
        self._connections.close_all()

    def get(self, user_id: str) -> dict | None:
        row = self._run(
            lambda db: db.execute(
                "SELECT document FROM preferences WHERE user_id = ?", (user_id,)
            ).fetchone()
        )
        return decode(row["document"]) if row else None

    def get_many(self, user_ids: Iterable[str]) -> dict[str, dict]:
        wanted = list(dict.fromkeys(user_ids))
        found: dict[str, dict] = {}
        for start in range(0, len(wanted), CHUNK):
            chunk = wanted[start : start + CHUNK]
            marks = ", ".join("?" * len(chunk))
            rows = self._run(
                lambda db, chunk=chunk, marks=marks: db.execute(
                    f"SELECT user_id, document FROM preferences WHERE user_id IN ({marks})",
                    chunk,
                ).fetchall()
            )
            found.update((row["user_id"], decode(row["document"])) for row in rows)
        return found

    def put(self, user_id: str, document: dict, now: datetime) -> None:
        text = encode(document)
        self._write(lambda db: db.execute(UPSERT, (user_id, text, _millis(now))))

    def _opt_out(self, user_id: str, category: str | None, channel: str, now: datetime) -> dict:
        def write(db: sqlite3.Connection) -> dict:
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute(
                    "SELECT document FROM preferences WHERE user_id = ?", (user_id,)
                ).fetchone()
                changed = with_opt_out(decode(row["document"]) if row else None, category, channel)
                db.execute(UPSERT, (user_id, encode(changed), _millis(now)))
                db.execute("COMMIT")
                return changed
            finally:
                if db.in_transaction:  # an outage part way: write nothing
                    db.execute("ROLLBACK")

        return self._write(write)
