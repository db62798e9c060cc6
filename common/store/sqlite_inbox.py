"""The SQL of the in-app inbox for the SQLite store: state actions, bulk actions, counts and
listing filters, each built here and run by common/store/sqlite.py.

Times are integer milliseconds, as everywhere in that store.
"""

from __future__ import annotations

from typing import Any

from common.inbox import ACTIONS, BULK_ACTIONS, SET

# Partial indexes, one per count: each count reads its own index only (a covering scan of
# the user's live, unread or unseen ones), never the user's whole history.
INBOX_INDEXES = """
CREATE INDEX IF NOT EXISTS ix_inbox_live ON notifications (user_id, notification_type)
    WHERE archived_at IS NULL;
CREATE INDEX IF NOT EXISTS ix_inbox_unread ON notifications (user_id, notification_type)
    WHERE read_at IS NULL AND archived_at IS NULL;
CREATE INDEX IF NOT EXISTS ix_inbox_unseen ON notifications (user_id, notification_type)
    WHERE seen_at IS NULL AND archived_at IS NULL;
"""

# Each count's WHERE repeats its index's condition word for word, so the planner uses it.
COUNTS = {
    "total": "archived_at IS NULL",
    "unread": "read_at IS NULL AND archived_at IS NULL",
    "unseen": "seen_at IS NULL AND archived_at IS NULL",
}
COUNTS_SQL = "SELECT " + ", ".join(
    f"(SELECT COUNT(*) FROM notifications WHERE user_id = ? AND notification_type = ? "
    f"AND {condition}) AS {name}"
    for name, condition in COUNTS.items()
)


def counts_params(user_id: str, notification_type: str) -> tuple:
    return (user_id, notification_type) * len(COUNTS)


def mark_statement(notification_id: str, action: str, now_ms: int) -> tuple[str, tuple]:
    """One UPDATE ... RETURNING: a set time is kept (COALESCE), a cleared one becomes NULL."""
    assignments, params = [], []
    for name, rule in ACTIONS[action].items():
        if rule == SET:
            assignments.append(f"{name} = COALESCE({name}, ?)")
            params.append(now_ms)
        else:
            assignments.append(f"{name} = NULL")
    sql = f"UPDATE notifications SET {', '.join(assignments)} WHERE id = ? RETURNING *"
    return sql, (*params, notification_id)


def mark_all_statement(
    user_id: str,
    action: str,
    now_ms: int,
    *,
    notification_type: str | None = None,
    category: str | None = None,
    before_ms: int | None = None,
) -> tuple[str, tuple]:
    """One UPDATE over the user's notifications the action still changes."""
    missing = BULK_ACTIONS[action]
    assignments = [f"{name} = COALESCE({name}, ?)" for name in ACTIONS[action]]
    params: list[Any] = [now_ms] * len(assignments)
    where = ["user_id = ?", f"{missing} IS NULL"]
    params.append(user_id)
    for clause, value in (
        ("notification_type = ?", notification_type),
        ("category = ?", category),
        ("created_at < ?", before_ms),
    ):
        if value is not None:
            where.append(clause)
            params.append(value)
    sql = f"UPDATE notifications SET {', '.join(assignments)} WHERE {' AND '.join(where)}"
    return sql, tuple(params)


def list_filters(
    read: bool | None, archived: str, category: str | None
) -> tuple[list[str], list[Any]]:
    """WHERE clauses (and their parameters) for the inbox filters of a user's listing."""
    where: list[str] = []
    params: list[Any] = []
    if read is not None:
        where.append("read_at IS NOT NULL" if read else "read_at IS NULL")
    if archived == "false":
        where.append("archived_at IS NULL")
    elif archived == "true":
        where.append("archived_at IS NOT NULL")
    if category is not None:
        where.append("category = ?")
        params.append(category)
    return where, params
