"""The production store: MongoDB through pymongo (used when MONGO_URI is set).

Status changes are single-document `find_one_and_update` calls guarded on the current status;
the sweep claims a batch by stamping it with a claim token in one guarded `update_many`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Any

import pymongo
import pymongo.errors
from pymongo import ASCENDING, DESCENDING, ReturnDocument

from common.errors import DuplicateId
from common.model import PENDING, QUEUED, RETRY_SCHEDULED, SENDING, Notification
from common.store.base import Cursor, NotificationStore, Page, clamp_limit

NO_ID = {"_id": False, "claim": False}


def _to_document(notification: Notification) -> dict:
    document = asdict(notification)
    del document["duplicate"]  # a property of one reply, not of the notification
    return document


def _to_notification(document: dict) -> Notification:
    document = {k: v for k, v in document.items() if k not in ("_id", "claim")}
    return Notification(**document)


class MongoStore(NotificationStore):
    def __init__(self, uri: str | None = None, database: str = "notifications", client=None):
        # tz_aware: datetimes come back in UTC with tzinfo, as the model keeps them.
        self.client = client or pymongo.MongoClient(
            uri, tz_aware=True, serverSelectionTimeoutMS=5000, connect=False
        )
        self.collection = self.client[database]["notifications"]
        self._ensure_indexes()

    def _ensure_indexes(self) -> None:
        self.collection.create_index([("id", ASCENDING)], unique=True)
        self.collection.create_index([("user_id", ASCENDING), ("created_at", DESCENDING)])
        self.collection.create_index([("status", ASCENDING), ("next_retry_time", ASCENDING)])
        self.collection.create_index([("status", ASCENDING), ("lease_until", ASCENDING)])
        self.collection.create_index([("status", ASCENDING), ("updated_at", ASCENDING)])
        self.collection.create_index([("notification_type", ASCENDING)])
        self.collection.create_index([("claim", ASCENDING)], sparse=True)

    def add(self, notification: Notification) -> None:
        try:
            self.collection.insert_one(_to_document(notification))
        except pymongo.errors.DuplicateKeyError as error:
            raise DuplicateId(notification.id) from error

    def add_many(self, notifications: Sequence[Notification]) -> None:
        if notifications:
            self.collection.insert_many([_to_document(n) for n in notifications], ordered=True)

    def get(self, notification_id: str) -> Notification | None:
        document = self.collection.find_one({"id": notification_id}, NO_ID)
        return _to_notification(document) if document else None

    def list_for_user(
        self,
        user_id: str,
        *,
        notification_type: str | None = None,
        status: str | None = None,
        limit: int = 50,
        cursor: Cursor | None = None,
    ) -> Page:
        limit = clamp_limit(limit)
        query: dict[str, Any] = {"user_id": user_id}
        if notification_type:
            query["notification_type"] = notification_type
        if status:
            query["status"] = status
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

    def update_if(
        self,
        notification_id: str,
        expected: Iterable[str],
        changes: dict[str, Any],
        *,
        types: Iterable[str] | None = None,
    ) -> Notification | None:
        query: dict[str, Any] = {"id": notification_id, "status": {"$in": list(expected)}}
        if types is not None:
            query["notification_type"] = {"$in": list(types)}
        document = self.collection.find_one_and_update(
            query,
            {"$set": changes},
            return_document=ReturnDocument.AFTER,
        )
        return _to_notification(document) if document else None

    def move_status(
        self, ids: Sequence[str], from_status: str, to_status: str, updated_at: datetime
    ) -> int:
        if not ids:
            return 0
        result = self.collection.update_many(
            {"id": {"$in": list(ids)}, "status": from_status},
            {"$set": {"status": to_status, "updated_at": updated_at}},
        )
        return result.modified_count

    def claim_for_delivery(
        self, notification_id: str, now: datetime, lease_until: datetime
    ) -> Notification | None:
        document = self.collection.find_one_and_update(
            {
                "id": notification_id,
                "$or": [
                    {"status": {"$in": [PENDING, QUEUED]}},
                    {"status": SENDING, "lease_until": {"$lte": now}},
                ],
            },
            {"$set": {"status": SENDING, "lease_until": lease_until, "updated_at": now}},
            return_document=ReturnDocument.AFTER,
        )
        return _to_notification(document) if document else None

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
        self.collection.update_many(
            {"id": {"$in": candidates}, **due},
            {"$set": {"status": QUEUED, "updated_at": now, "lease_until": None, "claim": claim}},
        )
        claimed = [_to_notification(d) for d in self.collection.find({"claim": claim}, NO_ID)]
        self.collection.update_many({"claim": claim}, {"$unset": {"claim": ""}})
        return claimed

    def _count_by(self, field: str) -> dict[str, int]:
        pipeline = [{"$group": {"_id": f"${field}", "count": {"$sum": 1}}}]
        return {row["_id"]: row["count"] for row in self.collection.aggregate(pipeline)}

    def count_by_status(self) -> dict[str, int]:
        return self._count_by("status")

    def count_by_type(self) -> dict[str, int]:
        return self._count_by("notification_type")

    def ping(self) -> None:
        self.client.admin.command("ping")

    def close(self) -> None:
        self.client.close()
