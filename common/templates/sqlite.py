"""Templates in their own SQLite file (DATA_DIR/templates.db), shared by every process on the
machine. A write reads the key's head and adds the next version in one `BEGIN IMMEDIATE`
transaction: SQLite's write lock gives each writer, thread or process, its own number."""

from __future__ import annotations

import logging
import sqlite3
import threading
from datetime import datetime
from pathlib import Path

from common.errors import StoreUnavailable
from common.sqlite_files import ThreadConnections
from common.templates.store import (
    TemplateStore,
    TemplateVersion,
    decode,
    encode,
    from_millis,
    millis,
    next_version,
)

log = logging.getLogger("notifications.templates")

SCHEMA = """
CREATE TABLE IF NOT EXISTS templates (
    key TEXT PRIMARY KEY,
    latest INTEGER NOT NULL,
    archived_at INTEGER
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS template_versions (
    key TEXT NOT NULL,
    version INTEGER NOT NULL,
    document TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (key, version)
);
CREATE TRIGGER IF NOT EXISTS template_versions_are_immutable
BEFORE UPDATE ON template_versions
BEGIN
    SELECT RAISE(ABORT, 'template versions are immutable');
END;
"""

SELECT = """
SELECT v.key, v.version, v.document, v.created_at, t.archived_at
FROM template_versions v JOIN templates t ON t.key = v.key
"""


class SqliteTemplateStore(TemplateStore):
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
            log.error("event=template_store_error error=%s", error)
            raise StoreUnavailable(
                "the template store is unavailable; try again shortly"
            ) from error

    def close(self) -> None:
        self._connections.close_all()

    @staticmethod
    def _version(row: sqlite3.Row) -> TemplateVersion:
        return TemplateVersion(
            key=row["key"],
            version=row["version"],
            document=decode(row["document"]),
            created_at=from_millis(row["created_at"]),
            archived=row["archived_at"] is not None,
        )

    def _write(self, key: str, document: dict, now: datetime, *, starting: bool) -> TemplateVersion:
        text, created = encode(document), millis(now)

        def write(db: sqlite3.Connection) -> int:
            db.execute("BEGIN IMMEDIATE")
            try:
                head = db.execute(
                    "SELECT latest, archived_at FROM templates WHERE key = ?", (key,)
                ).fetchone()
                latest = head["latest"] if head else None
                archived = head is not None and head["archived_at"] is not None
                version = next_version(key, latest, archived, starting=starting)
                db.execute(
                    "INSERT INTO template_versions VALUES (?, ?, ?, ?)",
                    (key, version, text, created),
                )
                # A create may restart an archived key; an add_version only reaches here
                # unarchived, so clearing archived_at is right for both.
                db.execute(
                    "INSERT INTO templates VALUES (?, ?, NULL) ON CONFLICT (key) "
                    "DO UPDATE SET latest = excluded.latest, archived_at = NULL",
                    (key, version),
                )
                db.execute("COMMIT")
                return version
            finally:
                if db.in_transaction:  # NotFound, Conflict or an outage: write nothing
                    db.execute("ROLLBACK")

        if not self._write_lock.acquire(timeout=self.timeout):
            raise StoreUnavailable("the template store is busy; try again")
        try:
            version = self._run(write)
        finally:
            self._write_lock.release()
        return TemplateVersion(key, version, decode(text), from_millis(created))

    def latest(self, key: str) -> TemplateVersion | None:
        rows = self._run(
            lambda db: db.execute(
                SELECT + "WHERE v.key = ? AND v.version = t.latest", (key,)
            ).fetchall()
        )
        return self._version(rows[0]) if rows else None

    def get(self, key: str, version: int) -> TemplateVersion | None:
        rows = self._run(
            lambda db: db.execute(
                SELECT + "WHERE v.key = ? AND v.version = ?", (key, version)
            ).fetchall()
        )
        return self._version(rows[0]) if rows else None

    def versions(self, key: str) -> list[int]:
        rows = self._run(
            lambda db: db.execute(
                "SELECT version FROM template_versions WHERE key = ? ORDER BY version", (key,)
            ).fetchall()
        )
        return [row[0] for row in rows]

    def list(self) -> list[TemplateVersion]:
        rows = self._run(
            lambda db: db.execute(SELECT + "WHERE v.version = t.latest ORDER BY v.key").fetchall()
        )
        return [self._version(row) for row in rows]

    def archive(self, key: str, now: datetime) -> TemplateVersion | None:
        # Only the first archive stamps the time: archiving again changes nothing.
        self._run(
            lambda db: db.execute(
                "UPDATE templates SET archived_at = ? WHERE key = ? AND archived_at IS NULL",
                (millis(now), key),
            )
        )
        return self.latest(key)

    def count(self) -> int:
        return self._run(lambda db: db.execute("SELECT COUNT(*) FROM templates").fetchone()[0])
