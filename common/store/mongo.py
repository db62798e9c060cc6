"""The production store: MongoDB through pymongo (used when MONGO_URI is set).

Status changes are single-document `find_one_and_update` calls guarded on the current status
(and claim token); the sweep claims a batch by stamping it with a sweep mark in one guarded
`update_many`. pymongo's outage errors leave this module as StoreUnavailable.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Any

import pymongo
import pymongo.errors
from pymongo import ASCENDING, DESCENDING, ReturnDocument

from common.errors import DuplicateId, StoreUnavailable
from common.lifecycle import CANCEL, CLAIM, REQUEUE, Move, cancelled
from common.model import (
    FAILED_PERMANENTLY,
    PENDING,
    QUEUED,
    RETRY_SCHEDULED,
    SCHEDULED,
    SENDING,
    Notification,
)
from common.store import mongo_inbox
from common.store.base import (
    DUPLICATE,
    INSERTED,
    NOT_STORED,
    Cursor,
    NotificationStore,
    Page,
    clamp_limit,
)

NO_ID = {"_id": False, "claim": False}
DUPLICATE_KEY = 11000
# What pymongo raises when the server cannot be reached, or does not answer in time.
OUTAGES = (pymongo.errors.ConnectionFailure, pymongo.errors.ExecutionTimeout)


def _reporting_outages(method):
    """Turn pymongo's outage errors into our own StoreUnavailable."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except OUTAGES as error:
            raise StoreUnavailable(f"MongoDB is unavailable: {type(error).__name__}") from error

    return wrapper


def _to_document(notification: Notification) -> dict:
    document = asdict(notification)
    del document["duplicate"]  # a property of one reply, not of the notification
    return document


def _to_notification(document: dict) -> Notification:
    document = {k: v for k, v in document.items() if k not in ("_id", "claim")}
    return Notification(**document)


class MongoStore(NotificationStore):
    def __init__(
        self,
        uri: str | None = None,
        database: str = "notifications",
        client=None,
        timeout: float = 3.0,
    ):
        # tz_aware: datetimes come back in UTC with tzinfo, as the model keeps them.
        # timeoutMS bounds every operation, so a stalled server is a prompt 503.
        millis = int(timeout * 1000)
        self._owns_client = client is None  # a client passed in is its owner's to close
        self.client = client or pymongo.MongoClient(
            uri,
            tz_aware=True,
            serverSelectionTimeoutMS=millis,
            timeoutMS=millis * 2,
            connect=False,
        )
        self.collection = self.client[database]["notifications"]
        self._ensure_indexes()

    @_reporting_outages
    def _ensure_indexes(self) -> None:
        self.collection.create_index([("id", ASCENDING)], unique=True)
        self.collection.create_index([("user_id", ASCENDING), ("created_at", DESCENDING)])
        self.collection.create_index([("status", ASCENDING), ("next_retry_time", ASCENDING)])
        self.collection.create_index([("status", ASCENDING), ("lease_until", ASCENDING)])
        self.collection.create_index([("status", ASCENDING), ("updated_at", ASCENDING)])
        self.collection.create_index([("notification_type", ASCENDING)])
        self.collection.create_index([("claim", ASCENDING)], sparse=True)
        self.collection.create_index([("status", ASCENDING), ("dead_lettered_at", ASCENDING)])
        self.collection.create_index([("status", ASCENDING), ("send_at", ASCENDING)])
        self.collection.create_index([("cancel_key", ASCENDING)], sparse=True)
        self.collection.create_index([("provider_message_id", ASCENDING)], sparse=True)
        self.collection.create_index(mongo_inbox.INBOX_INDEX)
        for keys in mongo_inbox.CHANGES_INDEXES:
            self.collection.create_index(keys, partialFilterExpression=mongo_inbox.IN_APP)

    @_reporting_outages
    def add(self, notification: Notification) -> None:
        try:
            self.collection.insert_one(_to_document(notification))
        except pymongo.errors.DuplicateKeyError as error:
            raise DuplicateId(notification.id) from error

    def add_many(self, notifications: Sequence[Notification]) -> list[str]:
        """Unordered: one bad document stops none of the others. After an outage mid-way,
        asks which ids made it, so the reply says per item what was stored."""
        if not notifications:
            return []
        try:
            self.collection.insert_many([_to_document(n) for n in notifications], ordered=False)
            return [INSERTED] * len(notifications)
        except pymongo.errors.BulkWriteError as error:
            failed = {e["index"]: e.get("code") for e in error.details.get("writeErrors", [])}
            return [
                INSERTED
                if index not in failed
                else DUPLICATE
                if failed[index] == DUPLICATE_KEY
                else NOT_STORED
                for index in range(len(notifications))
            ]
        except OUTAGES as error:
            return self._what_was_stored(notifications, error)

    @_reporting_outages
    def _what_was_stored(self, notifications: Sequence[Notification], error) -> list[str]:
        ids = [n.id for n in notifications]
        stored = {d["id"] for d in self.collection.find({"id": {"$in": ids}}, {"id": True})}
        if not stored:
            raise StoreUnavailable(f"MongoDB is unavailable: {type(error).__name__}") from error
        # Those stored may be earlier submissions of the same ids: either way, they are kept.
        return [INSERTED if i in stored else NOT_STORED for i in ids]

    @_reporting_outages
    def get(self, notification_id: str) -> Notification | None:
        document = self.collection.find_one({"id": notification_id}, NO_ID)
        return _to_notification(document) if document else None

    @_reporting_outages
    def list_for_user(
        self,
        user_id: str,
        *,
        notification_type: str | None = None,
        status: str | None = None,
        limit: int = 50,
        cursor: Cursor | None = None,
        read: bool | None = None,
        archived: str = "false",
        category: str | None = None,
    ) -> Page:
        limit = clamp_limit(limit)
        query: dict[str, Any] = {"user_id": user_id}
        if notification_type:
            query["notification_type"] = notification_type
        if status:
            query["status"] = status
        mongo_inbox.add_list_filters(query, read, archived, category)
        if cursor:
            query["$or"] = [
                {"created_at": {"$lt": cursor.created_at}},
                {"created_at": cursor.created_at, "id": {"$lt": cursor.id}},
            ]
        documents = list(
            self.collection.find(query, NO_ID)
            .sort([("created_at", DESCENDING), ("id", DESCENDING)])
            .limit(limit + 1)
        )
        items = [_to_notification(d) for d in documents[:limit]]
        next_cursor = None
        if len(documents) > limit:
            next_cursor = Cursor(items[-1].created_at, items[-1].id).encode()
        return Page(items, next_cursor)

    @_reporting_outages
    def _apply(
        self,
        notification_id: str,
        move: Move,
        changes: dict[str, Any],
        *,
        token: str | None = None,
        types: Iterable[str] | None = None,
    ) -> Notification | None:
        query: dict[str, Any] = {"id": notification_id, "status": {"$in": list(move.sources)}}
        if move.fenced:
            query["claim_token"] = token
        if types is not None:
            query["notification_type"] = {"$in": list(types)}
        document = self.collection.find_one_and_update(
            query,
            {"$set": changes},
            return_document=ReturnDocument.AFTER,
        )
        return _to_notification(document) if document else None

    @_reporting_outages
    def _apply_many(self, ids: Sequence[str], move: Move, updated_at: datetime) -> int:
        if not ids:
            return 0
        result = self.collection.update_many(
            {"id": {"$in": list(ids)}, "status": {"$in": list(move.sources)}},
            {"$set": {"status": move.target, "updated_at": updated_at}},
        )
        return result.modified_count

    @_reporting_outages
    def claim(
        self, notification_id: str, now: datetime, lease_until: datetime, token: str
    ) -> Notification | None:
        document = self.collection.find_one_and_update(
            {
                "id": notification_id,
                "$or": [
                    {"status": {"$in": list(CLAIM.sources)}},
                    {"status": SENDING, "lease_until": {"$lte": now}},
                ],
            },
            {
                "$set": {
                    "status": CLAIM.target,
                    "lease_until": lease_until,
                    "updated_at": now,
                    "claim_token": token,
                },
                "$inc": {"attempts": 1},
            },
            return_document=ReturnDocument.AFTER,
        )
        return _to_notification(document) if document else None

    @_reporting_outages
    def claim_due(
        self,
        now: datetime,
        *,
        pending_before: datetime,
        queued_before: datetime | None = None,
        limit: int = 500,
    ) -> list[Notification]:
        conditions = [
            {"status": RETRY_SCHEDULED, "next_retry_time": {"$lte": now}},
            {"status": PENDING, "updated_at": {"$lte": pending_before}},
            {"status": SENDING, "lease_until": {"$lte": now}},
            {"status": SCHEDULED, "send_at": {"$lte": now}},
        ]
        if queued_before is not None:
            conditions.append({"status": QUEUED, "updated_at": {"$lte": queued_before}})
        due = {"$or": conditions}
        candidates = [d["id"] for d in self.collection.find(due, {"id": True}).limit(limit)]
        if not candidates:
            return []
        # The guard repeats the due condition: a candidate another sweep took in between no
        # longer matches, so each notification is stamped by exactly one claim.
        claim = str(uuid.uuid4())
        requeue = {
            "status": REQUEUE.target,
            "updated_at": now,
            "lease_until": None,
            "claim_token": None,
            "claim": claim,
        }
        self.collection.update_many({"id": {"$in": candidates}, **due}, {"$set": requeue})
        return self._take_marked(claim)

    def _take_marked(self, mark: str) -> list[Notification]:
        """The documents one update_many stamped with `mark` (its own, whatever ran beside
        it), read back and unmarked."""
        marked = [_to_notification(d) for d in self.collection.find({"claim": mark}, NO_ID)]
        self.collection.update_many({"claim": mark}, {"$unset": {"claim": ""}})
        return marked

    @_reporting_outages
    def cancel_by_key(self, cancel_key: str, now: datetime, reason: str) -> list[Notification]:
        # Stamped like a sweep's claim: a concurrent caller's update_many skips what this one
        # cancelled (its status guard no longer holds), so each is returned by one call only.
        mark = str(uuid.uuid4())
        self.collection.update_many(
            {"cancel_key": cancel_key, "status": {"$in": list(CANCEL.sources)}},
            {"$set": {**cancelled(now, reason), "claim": mark}},
        )
        return self._take_marked(mark)

    @_reporting_outages
    def count_with_cancel_key(self, cancel_key: str, exclude: Sequence[str] = ()) -> int:
        query: dict[str, Any] = {"cancel_key": cancel_key}
        if exclude:
            query["status"] = {"$nin": list(exclude)}
        return self.collection.count_documents(query)

    @_reporting_outages
    def find_by_provider_id(self, provider_message_id: str) -> Notification | None:
        document = self.collection.find_one({"provider_message_id": provider_message_id}, NO_ID)
        return _to_notification(document) if document else None

    @_reporting_outages
    def record_delivery_status(
        self,
        notification_id: str,
        status: str,
        error_code: str | None,
        at: datetime,
        advance_from: Sequence[str | None],
    ) -> Notification | None:
        # {"$in": [None, ...]} also matches a document written before the field existed.
        document = self.collection.find_one_and_update(
            {"id": notification_id, "delivery_status": {"$in": list(advance_from)}},
            {
                "$set": {
                    "delivery_status": status,
                    "delivery_error_code": error_code,
                    "delivery_status_at": at,
                }
            },
            return_document=ReturnDocument.AFTER,
        )
        return _to_notification(document) if document else None

    @_reporting_outages
    def dead_letters_due(self, limit: int = 500) -> list[Notification]:
        query = {"status": FAILED_PERMANENTLY, "dead_lettered_at": None}
        return [_to_notification(d) for d in self.collection.find(query, NO_ID).limit(limit)]

    @_reporting_outages
    def mark_dead_lettered(self, ids: Sequence[str], now: datetime) -> int:
        if not ids:
            return 0
        result = self.collection.update_many(
            {"id": {"$in": list(ids)}, "status": FAILED_PERMANENTLY, "dead_lettered_at": None},
            {"$set": {"dead_lettered_at": now}},
        )
        return result.modified_count

    # -- the in-app inbox (its queries: common/store/mongo_inbox.py) --------------------------

    @_reporting_outages
    def mark(self, notification_id: str, action: str, now: datetime) -> Notification | None:
        document = self.collection.find_one_and_update(
            {"id": notification_id},
            mongo_inbox.mark_pipeline(action, now),
            projection=NO_ID,
            return_document=ReturnDocument.AFTER,
        )
        return _to_notification(document) if document else None

    @_reporting_outages
    def mark_all(
        self,
        user_id: str,
        action: str,
        now: datetime,
        *,
        notification_type: str | None = None,
        category: str | None = None,
        before: datetime | None = None,
    ) -> int:
        query = mongo_inbox.mark_all_query(
            user_id, action, notification_type=notification_type, category=category, before=before
        )
        result = self.collection.update_many(query, mongo_inbox.mark_pipeline(action, now))
        return result.modified_count

    @_reporting_outages
    def inbox_counts(self, user_id: str, notification_type: str = "in_app") -> dict[str, int]:
        mine = {"user_id": user_id, "notification_type": notification_type}
        return {
            name: self.collection.count_documents({**mine, **condition})
            for name, condition in mongo_inbox.COUNTS.items()
        }

    @_reporting_outages
    def inbox_changes(
        self, user_id: str, since: datetime, limit: int = 500, after_id: str | None = None
    ) -> list[Notification]:
        if limit < 1:
            return []  # (a find's limit of 0 is none at all)
        found: dict[str, Notification] = {}
        for query, order, index in mongo_inbox.changes_finds(user_id, since, after_id):
            for document in self.collection.find(query, NO_ID).sort(order).hint(index).limit(limit):
                # One changed between the finds may be in two: the later read wins.
                found[document["id"]] = _to_notification(document)
        ordered = sorted(found.values(), key=lambda n: (n.inbox_changed_at, n.id))
        return ordered[:limit]

    def _count_by(self, field: str) -> dict[str, int]:
        pipeline = [{"$group": {"_id": f"${field}", "count": {"$sum": 1}}}]
        return {row["_id"]: row["count"] for row in self.collection.aggregate(pipeline)}

    @_reporting_outages
    def count_by_status(self) -> dict[str, int]:
        return self._count_by("status")

    @_reporting_outages
    def count_by_type(self) -> dict[str, int]:
        return self._count_by("notification_type")

    @_reporting_outages
    def count_by_delivery_status(self) -> dict[str, int]:
        counts = self._count_by("delivery_status")
        counts.pop(None, None)  # never reported (or written before the field existed)
        return counts

    @_reporting_outages
    def ping(self) -> None:
        self.client.admin.command("ping")

    def close(self) -> None:
        if self._owns_client:
            self.client.close()
