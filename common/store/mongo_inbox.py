"""The in-app inbox for the MongoDB store: the update pipelines of the state actions, the
bulk actions' filters, the listing filters and the indexes the counts are answered from.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo import ASCENDING

from common.inbox import ACTIONS, BULK_ACTIONS, SET

# Counts match on user, type and null (or missing) state times: all equality on one index.
INBOX_INDEX = [
    ("user_id", ASCENDING),
    ("notification_type", ASCENDING),
    ("archived_at", ASCENDING),
    ("read_at", ASCENDING),
    ("seen_at", ASCENDING),
]

# {"field": None} also matches a document written before the field existed.
COUNTS = {
    "total": {"archived_at": None},
    "unread": {"archived_at": None, "read_at": None},
    "unseen": {"archived_at": None, "seen_at": None},
}


def mark_pipeline(action: str, now: datetime) -> list[dict[str, Any]]:
    """An update pipeline: a time already set is kept ($ifNull), a cleared one is null."""
    changes = {
        name: {"$ifNull": [f"${name}", now]} if rule == SET else None
        for name, rule in ACTIONS[action].items()
    }
    return [{"$set": changes}]


def mark_all_query(
    user_id: str,
    action: str,
    *,
    notification_type: str | None = None,
    category: str | None = None,
    before: datetime | None = None,
) -> dict[str, Any]:
    query: dict[str, Any] = {"user_id": user_id, BULK_ACTIONS[action]: None}
    if notification_type is not None:
        query["notification_type"] = notification_type
    if category is not None:
        query["category"] = category
    if before is not None:
        query["created_at"] = {"$lt": before}
    return query


def add_list_filters(
    query: dict[str, Any], read: bool | None, archived: str, category: str | None
) -> None:
    if read is not None:
        query["read_at"] = {"$ne": None} if read else None
    if archived == "false":
        query["archived_at"] = None
    elif archived == "true":
        query["archived_at"] = {"$ne": None}
    if category is not None:
        query["category"] = category
