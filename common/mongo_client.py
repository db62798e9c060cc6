"""One MongoDB client per process, shared by every collection the service uses (notifications,
API keys, limits, templates): one connection pool and one server monitor, not one per store.

Every operation is bounded: STORE_TIMEOUT to find a server, twice that for any operation, so
a stalled server is a prompt 503 (details in the log), never a request that hangs.
"""

from __future__ import annotations

import threading

import pymongo

from common.config import Settings

_lock = threading.Lock()
_clients: dict[tuple[str, float], pymongo.MongoClient] = {}


def mongo_client(settings: Settings) -> pymongo.MongoClient:
    """The process's client for MONGO_URI (made on first use; it connects lazily)."""
    key = (settings.mongo_uri, settings.store_timeout)
    with _lock:
        client = _clients.get(key)
        if client is None:
            millis = int(settings.store_timeout * 1000)
            client = pymongo.MongoClient(
                settings.mongo_uri,
                tz_aware=True,  # datetimes come back in UTC with tzinfo, as the model keeps them
                serverSelectionTimeoutMS=millis,
                timeoutMS=millis * 2,
                connect=False,
            )
            _clients[key] = client
        return client
