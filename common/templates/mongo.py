"""Templates in MongoDB: `template_versions` (one document per version, unique on key+version)
and `templates` (one head per key: its latest number and whether it is archived).

A write reads the newest version and inserts the next; the unique index turns a race into a
DuplicateKeyError, and the loser reads again and takes the number after.
"""

from __future__ import annotations

import logging
import random
import time
from datetime import UTC, datetime

import pymongo.errors
from pymongo import ASCENDING, DESCENDING

from common.errors import StoreUnavailable
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

# Each round at least one contender wins, so this bounds a storm of writers on one key rather
# than an ordinary race. Between rounds a short random pause lets them fall out of step.
MAX_ATTEMPTS = 20
BACKOFF = 0.002
OUTAGES = (pymongo.errors.ConnectionFailure, pymongo.errors.ExecutionTimeout)
NEWEST = [("version", DESCENDING)]


def _utc(value: datetime) -> datetime:
    # A client without tz_aware hands back naive datetimes, which are UTC.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class MongoTemplateStore(TemplateStore):
    def __init__(self, client, database: str, *, owns_client: bool = False):
        """`owns_client`: close() closes the client too (make_template_store built it)."""
        self.client = client
        self.versions_collection = client[database]["template_versions"]
        self.templates_collection = client[database]["templates"]
        self._owns_client = owns_client
        self._indexed = False

    def _guarded(self, work):
        try:
            # On first use rather than in __init__: building the store must not need the server.
            if not self._indexed:
                self.versions_collection.create_index(
                    [("key", ASCENDING), ("version", ASCENDING)], unique=True
                )
                self.templates_collection.create_index("key", unique=True)
                self._indexed = True
            return work()
        except OUTAGES as error:
            log.error("event=template_store_error error=%s", type(error).__name__)
            raise StoreUnavailable(
                "the template store is unavailable; try again shortly"
            ) from error

    def close(self) -> None:
        if self._owns_client:
            self.client.close()

    @staticmethod
    def _version(document: dict, head: dict | None) -> TemplateVersion:
        return TemplateVersion(
            key=document["key"],
            version=document["version"],
            document=decode(document["document"]),
            created_at=_utc(document["created_at"]),
            archived=head is not None and head.get("archived_at") is not None,
        )

    def _write(self, key: str, document: dict, now: datetime, *, starting: bool) -> TemplateVersion:
        text, created = encode(document), from_millis(millis(now))
        for attempt in range(MAX_ATTEMPTS):
            version = self._guarded(lambda: self._try_write(key, text, created, starting))
            if version is not None:
                return TemplateVersion(key, version, decode(text), created)
            time.sleep(random.uniform(0, BACKOFF * 2 ** min(attempt, 6)))
        raise StoreUnavailable(f"template {key} is too contended right now; try again")

    def _try_write(self, key: str, text: str, created: datetime, starting: bool) -> int | None:
        """Write the next version; None when another writer took its number first."""
        head = self.templates_collection.find_one({"key": key})
        # The number comes from the versions themselves, not the head: a writer that stopped
        # between its two writes leaves the head behind, never the versions.
        newest = self.versions_collection.find_one({"key": key}, {"version": True}, sort=NEWEST)
        archived = head is not None and head.get("archived_at") is not None
        version = next_version(
            key, newest["version"] if newest else None, archived, starting=starting
        )
        try:
            self.versions_collection.insert_one(
                {"key": key, "version": version, "document": text, "created_at": created}
            )
        except pymongo.errors.DuplicateKeyError:
            return None
        # $max: concurrent writers may update the head in either order. Only a create clears
        # archived_at: an add_version must not undo an archive that came in between.
        update: dict = {"$max": {"latest": version}}
        if starting:
            update["$set"] = {"archived_at": None}
        try:
            self.templates_collection.update_one({"key": key}, update, upsert=True)
        except pymongo.errors.DuplicateKeyError:  # two first writers upserted at once
            self.templates_collection.update_one({"key": key}, update)
        return version

    def _head(self, key: str) -> dict | None:
        return self.templates_collection.find_one({"key": key})

    def latest(self, key: str) -> TemplateVersion | None:
        def read():
            newest = self.versions_collection.find_one({"key": key}, sort=NEWEST)
            return self._version(newest, self._head(key)) if newest else None

        return self._guarded(read)

    def get(self, key: str, version: int) -> TemplateVersion | None:
        def read():
            found = self.versions_collection.find_one({"key": key, "version": version})
            return self._version(found, self._head(key)) if found else None

        return self._guarded(read)

    def versions(self, key: str) -> list[int]:
        def read():
            found = self.versions_collection.find({"key": key}, {"version": True})
            return [d["version"] for d in found.sort("version", ASCENDING)]

        return self._guarded(read)

    def list(self) -> list[TemplateVersion]:
        # Sorted backwards on both fields, the unique index serves the sort; $first then
        # takes each key's newest version.
        pipeline = [
            {"$sort": {"key": DESCENDING, "version": DESCENDING}},
            {"$group": {"_id": "$key", "newest": {"$first": "$$ROOT"}}},
            {"$sort": {"_id": ASCENDING}},
        ]

        def read():
            heads = {h["key"]: h for h in self.templates_collection.find()}
            found = self.versions_collection.aggregate(pipeline)
            return [self._version(row["newest"], heads.get(row["_id"])) for row in found]

        return self._guarded(read)

    def archive(self, key: str, now: datetime) -> TemplateVersion | None:
        # Only the first archive stamps the time: archiving again changes nothing.
        self._guarded(
            lambda: self.templates_collection.update_one(
                {"key": key, "archived_at": None}, {"$set": {"archived_at": now}}
            )
        )
        return self.latest(key)

    def count(self) -> int:
        return self._guarded(lambda: self.templates_collection.count_documents({}))
