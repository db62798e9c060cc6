"""Where API keys live: a table of their own beside the notifications (SQLite or MongoDB).

Only hashes are stored. Keys change rarely and are read on every request, so reads are plain
indexed lookups; `last_used_at` is written at most once a minute per key and process.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from datetime import UTC, datetime
from pathlib import Path

from common.auth.api_keys import ApiKey
from common.errors import StoreUnavailable
from common.sqlite_files import ThreadConnections

log = logging.getLogger("notifications.auth")

LAST_USED_EVERY = 60.0  # seconds between two `last_used_at` writes for one key, per process


class KeyStore(ABC):
    def __init__(self) -> None:
        self._last_written: dict[str, float] = {}
        self._lock = threading.Lock()

    @abstractmethod
    def add(self, key: ApiKey) -> None: ...

    def add_first(self, key: ApiKey) -> bool:
        """Add `key` only if there is no key at all; False when there was one. Atomic on
        SQLite, where two runners may start together on a fresh DATA_DIR."""
        if self.count():
            return False
        self.add(key)
        return True

    @abstractmethod
    def get(self, key_id: str) -> ApiKey | None: ...

    @abstractmethod
    def all(self) -> list[ApiKey]:
        """Every key, revoked ones included, oldest first."""

    @abstractmethod
    def revoke(self, key_id: str, now: datetime) -> ApiKey | None:
        """Mark revoked (once: a second revoke keeps the first time); None if no such key."""

    @abstractmethod
    def _write_last_used(self, key_id: str, now: datetime) -> None: ...

    @abstractmethod
    def count(self) -> int: ...

    def touch(self, key_id: str, now: datetime) -> None:
        """Record a use, at most once a minute per key: a write per request would cost more
        than the request. A failure to record it never fails the request."""
        with self._lock:
            last = self._last_written.get(key_id, 0.0)
            if time.monotonic() - last < LAST_USED_EVERY:
                return
            self._last_written[key_id] = time.monotonic()
        try:
            self._write_last_used(key_id, now)
        except StoreUnavailable as error:
            log.warning("event=key_last_used_not_recorded key=%s error=%s", key_id, error)

    def close(self) -> None:  # noqa: B027 - optional for adapters
        pass


def _millis(value: datetime | None) -> int | None:
    return None if value is None else round(value.timestamp() * 1000)


def _time(value: int | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value / 1000, tz=UTC)


SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    scopes TEXT NOT NULL,
    hash TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    revoked_at INTEGER,
    last_used_at INTEGER,
    send_rate REAL
)
"""


INSERT = "INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"


def _row(key: ApiKey) -> tuple:
    return (
        key.id,
        key.name,
        json.dumps(list(key.scopes)),
        key.hash,
        _millis(key.created_at),
        _millis(key.expires_at),
        _millis(key.revoked_at),
        _millis(key.last_used_at),
        key.send_rate,
    )


class SqliteKeyStore(KeyStore):
    """The keys table in its own file (DATA_DIR/access.db), so that the notifications' write
    path never waits behind it."""

    def __init__(self, path: Path | str, timeout: float = 3.0):
        super().__init__()
        self._connections = ThreadConnections(path, timeout)
        self._run(lambda db: db.execute(SCHEMA))

    def _run(self, work):
        try:
            return work(self._connections.get())
        except sqlite3.OperationalError as error:
            log.error("event=key_store_error error=%s", error)
            raise StoreUnavailable("the key store is unavailable; try again shortly") from error

    def close(self) -> None:
        self._connections.close_all()

    @staticmethod
    def _key(row: sqlite3.Row) -> ApiKey:
        return ApiKey(
            id=row["id"],
            name=row["name"],
            scopes=tuple(json.loads(row["scopes"])),
            hash=row["hash"],
            created_at=_time(row["created_at"]),
            expires_at=_time(row["expires_at"]),
            revoked_at=_time(row["revoked_at"]),
            last_used_at=_time(row["last_used_at"]),
            send_rate=row["send_rate"],
        )

    def add(self, key: ApiKey) -> None:
        self._run(lambda db: db.execute(INSERT, _row(key)))

    def add_first(self, key: ApiKey) -> bool:
        def insert_if_empty(db: sqlite3.Connection) -> bool:
            db.execute("BEGIN IMMEDIATE")
            try:
                if db.execute("SELECT COUNT(*) FROM api_keys").fetchone()[0]:
                    return False
                db.execute(INSERT, _row(key))
                return True
            finally:
                db.execute("COMMIT")

        return self._run(insert_if_empty)

    def get(self, key_id: str) -> ApiKey | None:
        rows = self._run(
            lambda db: db.execute("SELECT * FROM api_keys WHERE id = ?", (key_id,)).fetchall()
        )
        return self._key(rows[0]) if rows else None

    def all(self) -> list[ApiKey]:
        rows = self._run(
            lambda db: db.execute("SELECT * FROM api_keys ORDER BY created_at, id").fetchall()
        )
        return [self._key(row) for row in rows]

    def revoke(self, key_id: str, now: datetime) -> ApiKey | None:
        self._run(
            lambda db: db.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (_millis(now), key_id),
            )
        )
        return self.get(key_id)

    def _write_last_used(self, key_id: str, now: datetime) -> None:
        self._run(
            lambda db: db.execute(
                "UPDATE api_keys SET last_used_at = ? WHERE id = ?", (_millis(now), key_id)
            )
        )

    def count(self) -> int:
        return self._run(lambda db: db.execute("SELECT COUNT(*) FROM api_keys").fetchone()[0])


class MongoKeyStore(KeyStore):
    """The `api_keys` collection of the service's database."""

    def __init__(self, client, database: str):
        super().__init__()
        self.collection = client[database]["api_keys"]
        self._guarded(lambda: self.collection.create_index("id", unique=True))

    @staticmethod
    def _guarded(work):
        import pymongo.errors

        try:
            return work()
        except (pymongo.errors.ConnectionFailure, pymongo.errors.ExecutionTimeout) as error:
            log.error("event=key_store_error error=%s", type(error).__name__)
            raise StoreUnavailable("the key store is unavailable; try again shortly") from error

    @staticmethod
    def _key(document: dict) -> ApiKey:
        return ApiKey(
            id=document["id"],
            name=document["name"],
            scopes=tuple(document["scopes"]),
            hash=document["hash"],
            created_at=document["created_at"],
            expires_at=document.get("expires_at"),
            revoked_at=document.get("revoked_at"),
            last_used_at=document.get("last_used_at"),
            send_rate=document.get("send_rate"),
        )

    def add(self, key: ApiKey) -> None:
        document = {
            "id": key.id,
            "name": key.name,
            "scopes": list(key.scopes),
            "hash": key.hash,
            "created_at": key.created_at,
            "expires_at": key.expires_at,
            "revoked_at": key.revoked_at,
            "last_used_at": key.last_used_at,
            "send_rate": key.send_rate,
        }
        self._guarded(lambda: self.collection.insert_one(document))

    def get(self, key_id: str) -> ApiKey | None:
        document = self._guarded(lambda: self.collection.find_one({"id": key_id}))
        return self._key(document) if document else None

    def all(self) -> list[ApiKey]:
        documents = self._guarded(
            lambda: list(self.collection.find().sort([("created_at", 1), ("id", 1)]))
        )
        return [self._key(d) for d in documents]

    def revoke(self, key_id: str, now: datetime) -> ApiKey | None:
        self._guarded(
            lambda: self.collection.update_one(
                {"id": key_id, "revoked_at": None}, {"$set": {"revoked_at": now}}
            )
        )
        return self.get(key_id)

    def _write_last_used(self, key_id: str, now: datetime) -> None:
        self._guarded(
            lambda: self.collection.update_one({"id": key_id}, {"$set": {"last_used_at": now}})
        )

    def count(self) -> int:
        return self._guarded(lambda: self.collection.count_documents({}))
