"""Suppressions in MongoDB: collection `suppressions`, one document per (channel, address),
unique on the pair, so that an `add` racing another is a no-op rather than a second entry."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime

import pymongo.errors
from pymongo import ASCENDING, DESCENDING

from common.errors import StoreUnavailable
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

OUTAGES = (pymongo.errors.ConnectionFailure, pymongo.errors.ExecutionTimeout)
NEWEST = [("created_at", DESCENDING), ("channel", DESCENDING), ("address", DESCENDING)]


def _utc(value: datetime) -> datetime:
    # A client without tz_aware hands back naive datetimes, which are UTC.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class MongoSuppressionStore(SuppressionStore):
    def __init__(self, client, database: str, *, owns_client: bool = False):
        """`owns_client`: close() closes the client too."""
        self.client = client
        self.collection = client[database]["suppressions"]
        self._owns_client = owns_client
        self._indexed = False

    def _guarded(self, work):
        try:
            # On first use rather than in __init__: building the store must not need the server.
            if not self._indexed:
                self.collection.create_index(
                    [("channel", ASCENDING), ("address", ASCENDING)], unique=True
                )
                self.collection.create_index(NEWEST)
                self._indexed = True
            return work()
        except OUTAGES as error:
            log.error("event=suppression_store_error error=%s", type(error).__name__)
            raise StoreUnavailable(
                "the suppression store is unavailable; try again shortly"
            ) from error

    def close(self) -> None:
        if self._owns_client:
            self.client.close()

    @staticmethod
    def _suppression(document: dict) -> Suppression:
        return Suppression(
            channel=document["channel"],
            address=document["address"],
            reason=document["reason"],
            notification_id=document.get("notification_id"),
            created_at=_utc(document["created_at"]),
        )

    def add(
        self,
        channel: str,
        address: str,
        reason: str,
        notification_id: str | None,
        now: datetime,
    ) -> bool:
        key = {"channel": channel, "address": normalise_address(channel, address)}
        first = {"reason": reason, "notification_id": notification_id}
        first["created_at"] = from_millis(millis(now))

        def write() -> bool:
            try:
                result = self.collection.update_one(key, {"$setOnInsert": first}, upsert=True)
            except pymongo.errors.DuplicateKeyError:  # another writer's upsert won the race
                return False
            return result.upserted_id is not None

        return self._guarded(write)

    def get(self, channel: str, address: str) -> Suppression | None:
        key = {"channel": channel, "address": normalise_address(channel, address)}
        found = self._guarded(lambda: self.collection.find_one(key))
        return self._suppression(found) if found else None

    def find(self, channel: str, addresses: Sequence[str]) -> dict[str, Suppression]:
        wanted = sorted({normalise_address(channel, a) for a in addresses})
        if not wanted:
            return {}
        query = {"channel": channel, "address": {"$in": wanted}}
        found = self._guarded(lambda: list(self.collection.find(query)))
        return {d["address"]: self._suppression(d) for d in found}

    def list(
        self, channel: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[Suppression], str | None]:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        query: dict = {}
        if channel is not None:
            query["channel"] = check_channel(channel)
        if cursor:
            after = Position.decode(cursor)
            at = from_millis(after.created_at)
            query["$or"] = [
                {"created_at": {"$lt": at}},
                {"created_at": at, "channel": {"$lt": after.channel}},
                {"created_at": at, "channel": after.channel, "address": {"$lt": after.address}},
            ]
        found = self._guarded(
            lambda: list(self.collection.find(query).sort(NEWEST).limit(limit + 1))
        )
        items = [self._suppression(d) for d in found[:limit]]
        more = len(found) > limit
        return items, Position.after(items[-1]).encode() if more else None

    def remove(self, channel: str, address: str) -> bool:
        key = {"channel": channel, "address": normalise_address(channel, address)}
        result = self._guarded(lambda: self.collection.delete_one(key))
        return result.deleted_count == 1
