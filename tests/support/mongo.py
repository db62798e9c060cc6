"""A MongoDB database of its own for one test: on a real server whenever MONGO_URI is set, else
on mongomock (no MongoDB server can be installed on these machines). Dropped afterwards.

    with mongo_database() as (client, name):
        yield MongoPreferenceStore(client, name)
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def mongo_database() -> Iterator[tuple[Any, str]]:
    name = f"test_{uuid.uuid4().hex[:8]}"
    uri = os.environ.get("MONGO_URI")
    if not uri:
        import mongomock

        yield mongomock.MongoClient(tz_aware=True), name
        return
    import pymongo

    client = pymongo.MongoClient(uri, tz_aware=True, serverSelectionTimeoutMS=3000)
    try:
        yield client, name
    finally:
        client.drop_database(name)
        client.close()
