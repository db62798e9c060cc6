"""Where the activity per minute is summed across processes: one row per minute (UTC) holding
accepted, sent and failed counts and the latency buckets of common/activity.py.

Every write ADDS to a minute's row in one statement (SQLite upsert, MongoDB $inc), so processes
flushing at the same time never lose each other's counts. Rows older than KEEP are pruned on
a flush now and then.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from common.activity import BUCKETS, KEEP, MinuteCounts, hour_minutes, minute_of, point
from common.config import Settings
from common.errors import StoreUnavailable
from common.sqlite_files import ThreadConnections

log = logging.getLogger("notifications.activity")

PRUNE_EVERY = 600.0  # seconds between prunes of old rows, per process
UNAVAILABLE = "the activity store is unavailable; try again shortly"


class ActivityStore(ABC):
    def __init__(self) -> None:
        self._pruned_at: float | None = None

    def add(self, counts: Mapping[int, MinuteCounts], now: datetime | None = None) -> None:
        """Add `counts` (by minute, epoch seconds) to the stored rows; prune now and then."""
        self._add(counts)
        if self._pruned_at is None or time.monotonic() - self._pruned_at >= PRUNE_EVERY:
            self._pruned_at = time.monotonic()
            self.prune(minute_of(now or datetime.now(UTC)))

    def prune(self, current_minute: int) -> None:
        """Delete the rows of minutes older than KEEP before `current_minute`."""
        self._delete_before(current_minute - int(KEEP.total_seconds()))

    def last_hour(self, now: datetime) -> list[dict]:
        """60 points, oldest first, ending with the minute of `now` (see activity.point)."""
        minutes = hour_minutes(now)
        stored = self._read(minutes[0], minutes[-1])
        return [point(minute, stored.get(minute)) for minute in minutes]

    @abstractmethod
    def _add(self, counts: Mapping[int, MinuteCounts]) -> None: ...

    @abstractmethod
    def _read(self, first: int, last: int) -> dict[int, MinuteCounts]: ...

    @abstractmethod
    def _delete_before(self, minute: int) -> None: ...

    def close(self) -> None:
        """Release connections (a no-op where there are none)."""
        return None


BUCKET_COLUMNS = [f"b{i}" for i in range(BUCKETS)]
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS activity (
    minute INTEGER PRIMARY KEY,
    accepted INTEGER NOT NULL DEFAULT 0,
    sent INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    {", ".join(f"{c} INTEGER NOT NULL DEFAULT 0" for c in BUCKET_COLUMNS)}
);
"""
COUNT_COLUMNS = ["accepted", "sent", "failed", *BUCKET_COLUMNS]
UPSERT = (
    f"INSERT INTO activity (minute, {', '.join(COUNT_COLUMNS)}) "
    f"VALUES ({', '.join('?' * (len(COUNT_COLUMNS) + 1))}) "
    "ON CONFLICT (minute) DO UPDATE SET "
    + ", ".join(f"{c} = {c} + excluded.{c}" for c in COUNT_COLUMNS)
)


class SqliteActivityStore(ActivityStore):
    """One column per bucket, so that a flush is one upsert per minute with no read."""

    def __init__(self, path: Path | str, timeout: float = 3.0):
        super().__init__()
        self._connections = ThreadConnections(path, timeout)
        self._run(lambda db: db.executescript(SCHEMA))

    def _run(self, work):
        try:
            return work(self._connections.get())
        except sqlite3.OperationalError as error:
            log.error("event=activity_store_error error=%s", error)
            raise StoreUnavailable(UNAVAILABLE) from error

    def _add(self, counts: Mapping[int, MinuteCounts]) -> None:
        rows = [(m, c.accepted, c.sent, c.failed, *c.buckets) for m, c in counts.items()]

        def write(db: sqlite3.Connection) -> None:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(UPSERT, rows)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

        self._run(write)

    def _read(self, first: int, last: int) -> dict[int, MinuteCounts]:
        rows = self._run(
            lambda db: db.execute(
                "SELECT * FROM activity WHERE minute BETWEEN ? AND ?", (first, last)
            ).fetchall()
        )
        return {
            row["minute"]: MinuteCounts(
                row["accepted"], row["sent"], row["failed"], [row[c] for c in BUCKET_COLUMNS]
            )
            for row in rows
        }

    def _delete_before(self, minute: int) -> None:
        self._run(lambda db: db.execute("DELETE FROM activity WHERE minute < ?", (minute,)))

    def close(self) -> None:
        self._connections.close_all()


class MongoActivityStore(ActivityStore):
    """Collection `activity`: `_id` is the minute (epoch seconds), buckets in `b` by index."""

    def __init__(self, client, database: str):
        super().__init__()
        self.collection = client[database]["activity"]

    def _guarded(self, work):
        import pymongo.errors

        try:
            return work()
        except (pymongo.errors.ConnectionFailure, pymongo.errors.ExecutionTimeout) as error:
            log.error("event=activity_store_error error=%s", type(error).__name__)
            raise StoreUnavailable(UNAVAILABLE) from error

    def _add(self, counts: Mapping[int, MinuteCounts]) -> None:
        # One upsert per minute: a flush holds one or two minutes, so no bulk write is needed.
        for minute, c in counts.items():
            inc = {"accepted": c.accepted, "sent": c.sent, "failed": c.failed}
            inc.update({f"b.{i}": n for i, n in enumerate(c.buckets) if n})
            self._guarded(
                lambda minute=minute, inc=inc: self.collection.update_one(
                    {"_id": minute}, {"$inc": inc}, upsert=True
                )
            )

    def _read(self, first: int, last: int) -> dict[int, MinuteCounts]:
        found = self._guarded(
            lambda: list(self.collection.find({"_id": {"$gte": first, "$lte": last}}))
        )
        stored = {}
        for doc in found:
            buckets = [int(doc.get("b", {}).get(str(i), 0)) for i in range(BUCKETS)]
            stored[doc["_id"]] = MinuteCounts(
                doc.get("accepted", 0), doc.get("sent", 0), doc.get("failed", 0), buckets
            )
        return stored

    def _delete_before(self, minute: int) -> None:
        self._guarded(lambda: self.collection.delete_many({"_id": {"$lt": minute}}))


def make_activity_store(settings: Settings) -> ActivityStore:
    """MongoDB when MONGO_URI is set, else a SQLite file of its own under DATA_DIR."""
    if settings.mongo_uri:
        from common.mongo_client import mongo_client

        return MongoActivityStore(mongo_client(settings), settings.mongo_db)
    return SqliteActivityStore(settings.data_dir / "activity.db", timeout=settings.store_timeout)
