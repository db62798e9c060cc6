"""Storage: SQLite when nothing is configured, MongoDB when MONGO_URI is set."""

from __future__ import annotations

from common.config import Settings
from common.store.base import Cursor, NotificationStore, Page


def make_store(settings: Settings) -> NotificationStore:
    if settings.mongo_uri:
        from common.mongo_client import mongo_client
        from common.store.mongo import MongoStore

        return MongoStore(database=settings.mongo_db, client=mongo_client(settings))
    from common.store.sqlite import SqliteStore

    return SqliteStore(settings.data_dir / "notifications.db", timeout=settings.store_timeout)


__all__ = ["Cursor", "NotificationStore", "Page", "make_store"]
