"""Webhook endpoints and deliveries in MongoDB: collections `webhook_endpoints` and
`webhook_deliveries`, one document each keyed by its id. A claim is one find_one_and_update
whose filter is the "due" condition, so two processes never claim the same delivery."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime

import pymongo.errors
from pymongo import ASCENDING, DESCENDING, ReturnDocument

from common.errors import StoreUnavailable
from common.webhooks.records import (
    PENDING,
    SENDING,
    AttemptOutcome,
    Delivery,
    Endpoint,
    Position,
    from_millis,
)
from common.webhooks.store import WebhookStore

log = logging.getLogger("notifications.webhooks")

OUTAGES = (pymongo.errors.ConnectionFailure, pymongo.errors.ExecutionTimeout)
NEWEST = [("created_at", DESCENDING), ("_id", DESCENDING)]


def _utc(value: datetime | None) -> datetime | None:
    # A client without tz_aware hands back naive datetimes, which are UTC.
    if value is None or value.tzinfo:
        return value
    return value.replace(tzinfo=UTC)


def _due(now: datetime) -> dict:
    return {
        "$or": [
            {"status": PENDING, "next_attempt_at": {"$lte": now}},
            {"status": SENDING, "lease_until": {"$lte": now}},
        ]
    }


class MongoWebhookStore(WebhookStore):
    def __init__(self, client, database: str, *, owns_client: bool = False):
        """`owns_client`: close() closes the client too."""
        self.client = client
        self.endpoints = client[database]["webhook_endpoints"]
        self.deliveries = client[database]["webhook_deliveries"]
        self._owns_client = owns_client
        self._indexed = False

    def _guarded(self, work):
        try:
            # On first use rather than in __init__: building the store must not need the server.
            if not self._indexed:
                self.deliveries.create_index([("endpoint_id", ASCENDING), *NEWEST])
                self.deliveries.create_index(
                    [("status", ASCENDING), ("next_attempt_at", ASCENDING)]
                )
                self._indexed = True
            return work()
        except OUTAGES as error:
            log.error("event=webhook_store_error error=%s", type(error).__name__)
            raise StoreUnavailable("the webhook store is unavailable; try again shortly") from error

    def close(self) -> None:
        if self._owns_client:
            self.client.close()

    @staticmethod
    def _endpoint(document: dict) -> Endpoint:
        fields = {k: v for k, v in document.items() if k != "_id"}
        for name in ("created_at", "previous_secret_until", "disabled_at"):
            fields[name] = _utc(fields.get(name))
        return Endpoint(id=document["_id"], **{**fields, "events": tuple(fields["events"])})

    @staticmethod
    def _delivery(document: dict) -> Delivery:
        fields = {k: v for k, v in document.items() if k != "_id"}
        for name in ("created_at", "next_attempt_at", "delivered_at", "lease_until"):
            fields[name] = _utc(fields.get(name))
        return Delivery(id=document["_id"], **fields)

    # -- endpoints --

    def add_endpoint(self, endpoint: Endpoint) -> None:
        document = asdict(endpoint)
        document["_id"] = document.pop("id")
        document["events"] = list(endpoint.events)
        self._guarded(lambda: self.endpoints.insert_one(document))

    def get_endpoint(self, endpoint_id: str) -> Endpoint | None:
        found = self._guarded(lambda: self.endpoints.find_one({"_id": endpoint_id}))
        return self._endpoint(found) if found else None

    def list_endpoints(self) -> list[Endpoint]:
        order = [("created_at", ASCENDING), ("_id", ASCENDING)]
        found = self._guarded(lambda: list(self.endpoints.find().sort(order)))
        return [self._endpoint(d) for d in found]

    def delete_endpoint(self, endpoint_id: str) -> bool:
        result = self._guarded(lambda: self.endpoints.delete_one({"_id": endpoint_id}))
        # After the endpoint: a delivery left behind by a crash in between is harmless (its
        # attempt finds no endpoint and fails), an endpoint without its log would not be.
        self._guarded(lambda: self.deliveries.delete_many({"endpoint_id": endpoint_id}))
        return result.deleted_count == 1

    def _set(self, endpoint_id: str, changes: dict, extra_filter: dict | None = None) -> bool:
        query = {"_id": endpoint_id, **(extra_filter or {})}
        result = self._guarded(lambda: self.endpoints.update_one(query, {"$set": changes}))
        return result.matched_count == 1

    def set_secrets(
        self,
        endpoint_id: str,
        secret: str,
        previous_secret: str | None,
        previous_until: datetime | None,
    ) -> bool:
        changes = {
            "secret": secret,
            "previous_secret": previous_secret,
            "previous_secret_until": previous_until,
        }
        return self._set(endpoint_id, changes)

    def record_endpoint_success(self, endpoint_id: str) -> None:
        # Guarded so that the usual case, a healthy endpoint, writes nothing.
        self._set(endpoint_id, {"consecutive_failures": 0}, {"consecutive_failures": {"$ne": 0}})

    def record_endpoint_failure(
        self, endpoint_id: str, error: str, limit: int, now: datetime
    ) -> Endpoint | None:
        counted = self._guarded(
            lambda: self.endpoints.find_one_and_update(
                {"_id": endpoint_id},
                {"$inc": {"consecutive_failures": 1}},
                return_document=ReturnDocument.AFTER,
            )
        )
        if counted is None:
            return None
        endpoint = self._endpoint(counted)
        if endpoint.disabled_at is None and endpoint.consecutive_failures >= limit:
            # Only the first to get here disables it, so the reason is that attempt's error.
            changes = {"disabled_at": now, "disabled_reason": error}
            if self._set(endpoint_id, changes, {"disabled_at": None}):
                return self.get_endpoint(endpoint_id)
        return endpoint

    def enable_endpoint(self, endpoint_id: str) -> bool:
        changes = {"disabled_at": None, "disabled_reason": None, "consecutive_failures": 0}
        return self._set(endpoint_id, changes)

    # -- deliveries --

    def add_deliveries(self, deliveries: Sequence[Delivery]) -> None:
        documents = []
        for delivery in deliveries:
            document = asdict(delivery)
            document["_id"] = document.pop("id")
            documents.append(document)
        if documents:
            self._guarded(lambda: self.deliveries.insert_many(documents))

    def get_delivery(self, delivery_id: str) -> Delivery | None:
        found = self._guarded(lambda: self.deliveries.find_one({"_id": delivery_id}))
        return self._delivery(found) if found else None

    def list_deliveries(
        self, endpoint_id: str, limit: int, cursor: str | None
    ) -> tuple[list[Delivery], str | None]:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        query: dict = {"endpoint_id": endpoint_id}
        if cursor:
            after = Position.decode(cursor)
            at = from_millis(after.created_at)
            query["$or"] = [
                {"created_at": {"$lt": at}},
                {"created_at": at, "_id": {"$lt": after.id}},
            ]
        found = self._guarded(
            lambda: list(self.deliveries.find(query).sort(NEWEST).limit(limit + 1))
        )
        items = [self._delivery(d) for d in found[:limit]]
        return items, Position.after(items[-1]).encode() if len(found) > limit else None

    def claim_due(self, now: datetime, lease_until: datetime, token: str) -> Delivery | None:
        claimed = self._guarded(
            lambda: self.deliveries.find_one_and_update(
                _due(now),
                {"$set": {"status": SENDING, "lease_until": lease_until, "claim_token": token}},
                sort=[("next_attempt_at", ASCENDING)],
                return_document=ReturnDocument.AFTER,
            )
        )
        return self._delivery(claimed) if claimed else None

    def finish_attempt(self, delivery_id: str, token: str, outcome: AttemptOutcome) -> bool:
        changes = {
            "status": outcome.status,
            "attempts": outcome.attempts,
            "last_status_code": outcome.last_status_code,
            "last_error": outcome.last_error,
            "next_attempt_at": outcome.next_attempt_at,
            "lease_until": None,
            "claim_token": None,
        }
        if outcome.delivered_at is not None:
            changes["delivered_at"] = outcome.delivered_at
        query = {"_id": delivery_id, "claim_token": token, "status": SENDING}
        result = self._guarded(lambda: self.deliveries.update_one(query, {"$set": changes}))
        return result.matched_count == 1

    def replay(self, delivery_id: str, now: datetime) -> bool:
        query = {
            "_id": delivery_id,
            "$or": [{"status": {"$ne": SENDING}}, {"lease_until": {"$lte": now}}],
        }
        changes = {"status": PENDING, "next_attempt_at": now}
        result = self._guarded(lambda: self.deliveries.update_one(query, {"$set": changes}))
        return result.matched_count == 1
