"""Suppressions in their own SQLite file (DATA_DIR/suppressions.db), shared by every process
on the machine. The primary key (channel, address) makes `add` idempotent in one statement."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from common.errors import StoreUnavailable
from common.sqlite_files import ThreadConnections
from common.suppressions.store import (
    Position,
    Suppression,
    SuppressionStore,
    check_channel,
    from_millis,
    millis,
    normalise_address,
)

log = logging.getLogger("notifications.suppressions")

SCHEMA = """
CREATE TABLE IF NOT EXISTS suppressions (
    channel TEXT NOT NULL,
    address TEXT NOT NULL,
    reason TEXT NOT NULL,
    notification_id TEXT,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (channel, address)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS suppressions_newest
    ON suppressions (created_at, channel, address);
"""

COLUMNS = "SELECT channel, address, reason, notification_id, created_at FROM suppressions "
# Well under SQLite's limit on bound parameters (999 in older builds).
FIND_CHUNK = 500


class SqliteSuppressionStore(SuppressionStore):
    def __init__(self, path: Path | str, timeout: float = 3.0):
        self.path = str(path)
        self.timeout = timeout
        self._connections = ThreadConnections(self.path, timeout)
        self._run(lambda db: db.executescript(SCHEMA))

    def _run(self, work):
        try:
            return work(self._connections.get())
        except sqlite3.OperationalError as error:
            log.error("event=suppression_store_error error=%s", error)
            raise StoreUnavailable(
                "the suppression store is unavailable; try again shortly"
            ) from error

    def close(self) -> None:
        self._connections.close_all()

    @staticmethod
    def _suppression(row: sqlite3.Row) -> Suppression:
        return Suppression(
            channel=row["channel"],
            address=row["address"],
            reason=row["reason"],
            notification_id=row["notification_id"],
            created_at=from_millis(row["created_at"]),
        )

    def add(
        self,
        channel: str,
        address: str,
        reason: str,
        notification_id: str | None,
        now: datetime,
    ) -> bool:
        values = (
            channel,
            normalise_address(channel, address),
            reason,
            notification_id,
            millis(now),
        )
        count = self._run(
            lambda db: (
                db.execute(
                    "INSERT INTO suppressions VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT (channel, address) DO NOTHING",
                    values,
                ).rowcount
            )
        )
        return count == 1

    def get(self, channel: str, address: str) -> Suppression | None:
        key = (channel, normalise_address(channel, address))
        rows = self._run(
            lambda db: db.execute(COLUMNS + "WHERE channel = ? AND address = ?", key).fetchall()
        )
        return self._suppression(rows[0]) if rows else None

    def find(self, channel: str, addresses: Sequence[str]) -> dict[str, Suppression]:
        wanted = sorted({normalise_address(channel, a) for a in addresses})
        found: dict[str, Suppression] = {}
        for start in range(0, len(wanted), FIND_CHUNK):
            chunk = wanted[start : start + FIND_CHUNK]
            marks = ", ".join("?" * len(chunk))
            sql = COLUMNS + f"WHERE channel = ? AND address IN ({marks})"
            rows = self._run(
                lambda db, sql=sql, chunk=chunk: db.execute(sql, [channel, *chunk]).fetchall()
            )
            found.update((row["address"], self._suppression(row)) for row in rows)
        return found

    def list(
        self, channel: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[Suppression], str | None]:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        where, params = [], []
        if channel is not None:
            where.append("channel = ?")
            params.append(check_channel(channel))
        if cursor:
            after = Position.decode(cursor)
            where.append("(created_at, channel, address) < (?, ?, ?)")
            params += [after.created_at, after.channel, after.address]
        sql = COLUMNS + (f"WHERE {' AND '.join(where)} " if where else "")
        sql += "ORDER BY created_at DESC, channel DESC, address DESC LIMIT ?"
        rows = self._run(lambda db: db.execute(sql, [*params, limit + 1]).fetchall())
        items = [self._suppression(row) for row in rows[:limit]]
        more = len(rows) > limit
        return items, Position.after(items[-1]).encode() if more else None

    def remove(self, channel: str, address: str) -> bool:
        key = (channel, normalise_address(channel, address))
        count = self._run(
            lambda db: (
                db.execute(
                    "DELETE FROM suppressions WHERE channel = ? AND address = ?", key
                ).rowcount
            )
        )
        return count == 1
