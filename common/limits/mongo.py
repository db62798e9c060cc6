"""Limit state in MongoDB, shared by every function instance.

Compare-and-set: each document carries a version `v`; a write names the version it read and
fails if another writer got there first, and the key is then read and decided again. Keys
seen for the first time are inserted in one `insert_many` (the duplicate-key error is the
conflict). A TTL index on `expires_at` lets the server delete what has expired.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import pymongo
import pymongo.errors
from pymongo import ASCENDING

from common.errors import StoreUnavailable
from common.limits.store import Change, LimitStore

# A key still contended after this many rounds means a storm of writers on it: say so rather
# than spin. Between rounds a short random pause lets the contenders fall out of step.
MAX_ROUNDS = 12
BACKOFF = 0.002
DUPLICATE_KEY = 11000


def _unavailable(error: Exception) -> StoreUnavailable:
    return StoreUnavailable(f"the limit store (MongoDB) is unavailable: {type(error).__name__}")


class MongoLimitStore(LimitStore):
    def __init__(
        self,
        client_or_uri: Any,
        database: str = "notifications",
        timeout: float = 3.0,
        collection: str = "rate_limits",
        *,
        clock: Callable[[], float] = time.time,
    ):
        millis = int(timeout * 1000)
        self._owns_client = isinstance(client_or_uri, str)
        if self._owns_client:
            client_or_uri = pymongo.MongoClient(
                client_or_uri,
                serverSelectionTimeoutMS=millis,
                timeoutMS=millis * 2,
                connect=False,
            )
        self.client = client_or_uri
        self.collection = self.client[database][collection]
        self.timeout = timeout
        self._clock = clock
        self._indexed = False

    def _ensure_index(self) -> None:
        # On first use rather than in __init__: building the limiter must not need the server.
        if not self._indexed:
            self.collection.create_index([("expires_at", ASCENDING)], expireAfterSeconds=0)
            self._indexed = True

    def update_many(self, items: Sequence[tuple[str, Change, float]]) -> list[Any]:
        if not items:
            return []
        results: list[Any] = [None] * len(items)
        by_key: dict[str, list[int]] = {}
        for index, (key, _, _) in enumerate(items):
            by_key.setdefault(key, []).append(index)
        pending = list(by_key)
        deadline = time.monotonic() + self.timeout
        try:
            self._ensure_index()
            for round_ in range(MAX_ROUNDS):
                pending = self._round(pending, by_key, items, results)
                if not pending or time.monotonic() > deadline:
                    break
                time.sleep(random.uniform(0, BACKOFF * 2**round_))
        except pymongo.errors.PyMongoError as error:
            raise _unavailable(error) from error
        if pending:
            raise StoreUnavailable("the limit store is too contended right now; try again")
        return results

    def _round(
        self,
        keys: list[str],
        by_key: dict[str, list[int]],
        items: Sequence[tuple[str, Change, float]],
        results: list[Any],
    ) -> list[str]:
        """Read, decide and write `keys` once; returns the keys another writer changed first."""
        documents = {d["_id"]: d for d in self.collection.find({"_id": {"$in": keys}})}
        now = self._clock()
        # Every change runs before any write, so one that raises leaves the store untouched.
        writes = []
        for key in keys:
            document = documents.get(key)
            live = document is not None and document["expires"] > now
            before = json.loads(document["state"]) if live else None
            state = json.loads(document["state"]) if live else None
            expires_in = 0.0
            for index in by_key[key]:
                _, change, seconds = items[index]
                state, results[index] = change(state, now)
                expires_in = max(expires_in, seconds)
            if state != before:
                fields = self._fields(state, now + expires_in) if state is not None else None
                writes.append((key, document, fields))
        inserts = [
            {"_id": key, "v": 1, **fields}
            for key, document, fields in writes
            if document is None and fields is not None
        ]
        conflicts = [
            key
            for key, document, fields in writes
            if document is not None and not self._compare_and_set(key, document["v"], fields)
        ]
        return conflicts + self._insert(inserts)

    @staticmethod
    def _fields(state: dict, expires: float) -> dict:
        return {
            "state": json.dumps(state),
            "expires": expires,
            "expires_at": datetime.fromtimestamp(expires, tz=UTC),
        }

    def _compare_and_set(self, key: str, version: int, fields: dict | None) -> bool:
        if fields is None:
            return self.collection.delete_one({"_id": key, "v": version}).deleted_count == 1
        result = self.collection.update_one(
            {"_id": key, "v": version}, {"$set": fields, "$inc": {"v": 1}}
        )
        return result.matched_count == 1

    def _insert(self, documents: list[dict]) -> list[str]:
        """Insert new keys; returns those another writer inserted first."""
        if not documents:
            return []
        try:
            self.collection.insert_many(documents, ordered=False)
            return []
        except pymongo.errors.BulkWriteError as error:
            errors = error.details.get("writeErrors", [])
            if any(e.get("code") != DUPLICATE_KEY for e in errors):
                raise
            return [documents[e["index"]]["_id"] for e in errors]

    def close(self) -> None:
        if self._owns_client:  # a client passed in is its owner's to close
            self.client.close()
