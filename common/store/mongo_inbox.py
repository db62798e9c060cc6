"""The in-app inbox for the MongoDB store: the update pipelines of the state actions, the
bulk actions' filters, the listing filters, the finds of the changes since a time and the
indexes the counts and the changes are answered from.
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

# The changes since a time: one index per time an inbox change is stamped with, in-app only.
IN_APP = {"notification_type": "in_app"}
BY_STATUS_MOVE = [("updated_at", ASCENDING), ("id", ASCENDING)]
BY_INBOX_ACTION = [("inbox_updated_at", ASCENDING), ("id", ASCENDING)]
CHANGES_INDEXES = [[("user_id", ASCENDING), *order] for order in (BY_STATUS_MOVE, BY_INBOX_ACTION)]

# {"field": None} also matches a document written before the field existed.
COUNTS = {
    "total": {"archived_at": None},
    "unread": {"archived_at": None, "read_at": None},
    "unseen": {"archived_at": None, "seen_at": None},
}


def mark_pipeline(action: str, now: datetime) -> list[dict[str, Any]]:
    """An update pipeline: a time already set is kept ($ifNull), a cleared one is null."""
    changes: dict[str, Any] = {
        name: {"$ifNull": [f"${name}", now]} if rule == SET else None
        for name, rule in ACTIONS[action].items()
    }
    # Even when nothing else changes; never updated_at, which times the sweep.
    changes["inbox_updated_at"] = now
    return [{"$set": changes}]


def changes_finds(
    user_id: str, since: datetime, after_id: str | None = None
) -> list[tuple[dict[str, Any], list[tuple[str, int]], list[tuple[str, int]]]]:
    """(query, sort, index hint) of the finds that split the changes since `since` without
    overlap: those last changed by a status move (updated_at is their inbox_changed_at) and
    those last changed by an inbox action (inbox_updated_at is). Each comes in
    inbox_changed_at order from its own index, so the first `limit` of each, merged, are the
    first `limit` of all; a split on the range alone would not be (an early status move
    with a late read sorts early in updated_at order, late in the merge).

    With `after_id` (a cursor: strictly after (since, after_id)) each splits again, into the
    rest of the ties at `since` and those changed later: two tight ranges of its index
    (no $or for a planner to widen into a scan from `since` through every tie already read)."""
    mine = {"user_id": user_id, **IN_APP}
    inbox_at = {"$ifNull": ["$inbox_updated_at", "$updated_at"]}  # none: never acted on
    splits = [
        ("updated_at", {"$gte": ["$updated_at", inbox_at]}, BY_STATUS_MOVE, CHANGES_INDEXES[0]),
        (
            "inbox_updated_at",
            {"$gt": [inbox_at, "$updated_at"]},
            BY_INBOX_ACTION,
            CHANGES_INDEXES[1],
        ),
    ]
    # (the time's bound, the id's bound or None)
    ranges: list[tuple[Any, dict[str, Any] | None]] = [({"$gte": since}, None)]
    if after_id is not None:
        ranges = [(since, {"$gt": after_id}), ({"$gt": since}, None)]
    finds = []
    for field, last_changed_by_it, order, index in splits:
        for changed_at, id_after in ranges:
            query = {**mine, field: changed_at, "$expr": last_changed_by_it}
            if id_after is not None:
                query["id"] = id_after
            finds.append((query, order, index))
    return finds


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
