"""Preferences in MongoDB: one document per user in `preferences`, `_id` the user id, the
preferences kept as JSON text beside a revision number.

An opt-out is a compare-and-swap on the revision: it reads, changes and writes back only if
nobody wrote in between; the loser reads again. A first write races on `_id` instead.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterable
from datetime import datetime

import pymongo.errors

from common.errors import StoreUnavailable
from common.preferences.store import PreferenceStore, decode, encode, with_opt_out

log = logging.getLogger("notifications.preferences")

# Each round one contender wins, so this bounds a storm of writers on one user rather than an
# ordinary race. Between rounds a short random pause lets them fall out of step.
MAX_ATTEMPTS = 50
BACKOFF = 0.002
OUTAGES = (pymongo.errors.ConnectionFailure, pymongo.errors.ExecutionTimeout)
CHUNK = 1000


class MongoPreferenceStore(PreferenceStore):
    def __init__(self, client, database: str, *, owns_client: bool = False):
        """`owns_client`: close() closes the client too."""
        self.client = client
        self.collection = client[database]["preferences"]
        self._owns_client = owns_client

    def _guarded(self, work):
        try:
            return work()
        except OUTAGES as error:
            log.error("event=preference_store_error error=%s", type(error).__name__)
            raise StoreUnavailable(
                "the preference store is unavailable; try again shortly"
            ) from error

    def close(self) -> None:
        if self._owns_client:
            self.client.close()

    def get(self, user_id: str) -> dict | None:
        found = self._guarded(lambda: self.collection.find_one({"_id": user_id}))
        return decode(found["document"]) if found else None

    def get_many(self, user_ids: Iterable[str]) -> dict[str, dict]:
        wanted = list(dict.fromkeys(user_ids))
        found: dict[str, dict] = {}
        for start in range(0, len(wanted), CHUNK):
            chunk = wanted[start : start + CHUNK]
            rows = self._guarded(
                lambda chunk=chunk: list(
                    self.collection.find({"_id": {"$in": chunk}}, {"document": True})
                )
            )
            found.update((row["_id"], decode(row["document"])) for row in rows)
        return found

    def put(self, user_id: str, document: dict, now: datetime) -> None:
        # $inc keeps the revision moving, so an opt-out that read before this PUT retries on it.
        update = {
            "$set": {"document": encode(document), "updated_at": now},
            "$inc": {"revision": 1},
        }

        def write():
            try:
                self.collection.update_one({"_id": user_id}, update, upsert=True)
            except pymongo.errors.DuplicateKeyError:  # two first writers upserted at once
                self.collection.update_one({"_id": user_id}, update)

        self._guarded(write)

    def _opt_out(self, user_id: str, category: str | None, channel: str, now: datetime) -> dict:
        for attempt in range(MAX_ATTEMPTS):
            changed = self._guarded(lambda: self._try_opt_out(user_id, category, channel, now))
            if changed is not None:
                return changed
            time.sleep(random.uniform(0, BACKOFF * 2 ** min(attempt, 6)))
        raise StoreUnavailable(f"the preferences of {user_id} are too contended; try again")

    def _try_opt_out(
        self, user_id: str, category: str | None, channel: str, now: datetime
    ) -> dict | None:
        """The new document; None when another writer got there first."""
        found = self.collection.find_one({"_id": user_id})
        changed = with_opt_out(decode(found["document"]) if found else None, category, channel)
        fields = {"document": encode(changed), "updated_at": now}
        if found is None:
            try:
                self.collection.insert_one({"_id": user_id, "revision": 1, **fields})
            except pymongo.errors.DuplicateKeyError:
                return None
            return changed
        # A null filter also matches a document without the field (one written by hand).
        revision = found.get("revision")
        result = self.collection.update_one(
            {"_id": user_id, "revision": revision},
            {"$set": {**fields, "revision": (revision or 0) + 1}},
        )
        return changed if result.matched_count == 1 else None
