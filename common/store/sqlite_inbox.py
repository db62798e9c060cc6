"""The in-app inbox of the SQLite store: its SQL (state actions, bulk actions, counts, the
changes since a time, listing filters) and SqliteInbox, the store's inbox operations.

Times are integer milliseconds, as everywhere in that store.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import datetime
from typing import Any

from common.inbox import ACTIONS, BULK_ACTIONS, SET
from common.model import Notification

# When its inbox last changed (Notification.inbox_changed_at): a status move or an inbox
# action. Indexed as written, so the changes since a time are one range scan in this order.
CHANGED_AT = "max(updated_at, ifnull(inbox_updated_at, 0))"

# Partial indexes, one per count: each count reads its own index only (a covering scan of
# the user's live, unread or unseen ones), never the user's whole history.
INBOX_INDEXES = f"""
CREATE INDEX IF NOT EXISTS ix_inbox_live ON notifications (user_id, notification_type)
    WHERE archived_at IS NULL;
CREATE INDEX IF NOT EXISTS ix_inbox_unread ON notifications (user_id, notification_type)
    WHERE read_at IS NULL AND archived_at IS NULL;
CREATE INDEX IF NOT EXISTS ix_inbox_unseen ON notifications (user_id, notification_type)
    WHERE seen_at IS NULL AND archived_at IS NULL;
CREATE INDEX IF NOT EXISTS ix_inbox_changes ON notifications (user_id, {CHANGED_AT}, id)
    WHERE notification_type = 'in_app';
"""

# The partial index is used only when the query names the literal 'in_app' (not a parameter),
# and the expression only when it is written exactly as indexed.
MY_CHANGES = (
    f"SELECT *, {CHANGED_AT} AS changed_at FROM notifications "
    "WHERE user_id = :user AND notification_type = 'in_app'"
)
CHANGES_SQL = f"{MY_CHANGES} AND {CHANGED_AT} >= :since ORDER BY {CHANGED_AT}, id LIMIT :limit"

# After a cursor (since, after_id): the rest of the ties at `since` and those changed later,
# each a tight range of the index in its order. SQLite bounds the index by neither a row
# value, (expr, id) > (?, ?), nor the equivalent OR (it scans from `since`, every tie the
# earlier pages returned again), and ORDER BY over the UNION ALL sorts the ties in a temp
# b-tree; so each part is limited in its own order and the caller sorts the <= 2 * limit rows.
CHANGES_AFTER_SQL = (
    f"SELECT * FROM ({MY_CHANGES} AND {CHANGED_AT} = :since AND id > :after_id "
    "ORDER BY id LIMIT :limit) "
    f"UNION ALL SELECT * FROM ({MY_CHANGES} AND {CHANGED_AT} > :since "
    f"ORDER BY {CHANGED_AT}, id LIMIT :limit)"
)

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
    """One UPDATE ... RETURNING: a set time is kept (COALESCE), a cleared one becomes NULL;
    inbox_updated_at is `now` even when nothing else changed (updated_at is the sweep's)."""
    assignments, params = ["inbox_updated_at = ?"], [now_ms]
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
    """One UPDATE over the user's notifications the action still changes, stamping each."""
    missing = BULK_ACTIONS[action]
    assignments = [f"{name} = COALESCE({name}, ?)" for name in ACTIONS[action]]
    assignments.append("inbox_updated_at = ?")
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


class SqliteInbox:
    """The inbox operations of SqliteStore, mixed into it: they run through the store's own
    reads and writes, and turn rows and times with its conversions (declared below, so that
    this module needs nothing from common/store/sqlite.py)."""

    _read: Callable[..., list[sqlite3.Row]]
    _write: Callable[..., tuple[list[sqlite3.Row], int]]
    _record: Callable[[sqlite3.Row], Notification]  # a row as a Notification
    _millis: Callable[[datetime | None], int | None]

    def mark(self, notification_id: str, action: str, now: datetime) -> Notification | None:
        sql, params = mark_statement(notification_id, action, self._millis(now))
        rows = self._write(sql, params)[0]
        return self._record(rows[0]) if rows else None

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
        sql, params = mark_all_statement(
            user_id,
            action,
            self._millis(now),
            notification_type=notification_type,
            category=category,
            before_ms=self._millis(before),
        )
        return self._write(sql, params)[1]

    def inbox_counts(self, user_id: str, notification_type: str = "in_app") -> dict[str, int]:
        row = self._read(COUNTS_SQL, counts_params(user_id, notification_type))[0]
        return {name: row[name] for name in COUNTS}

    def inbox_changes(
        self, user_id: str, since: datetime, limit: int = 500, after_id: str | None = None
    ) -> list[Notification]:
        if limit < 1:
            return []  # (SQLite reads a negative LIMIT as none at all)
        params = {"user": user_id, "since": self._millis(since), "limit": int(limit)}
        if after_id is None:
            rows = self._read(CHANGES_SQL, params)
        else:
            rows = self._read(CHANGES_AFTER_SQL, {**params, "after_id": after_id})
            rows = sorted(rows, key=lambda row: (row["changed_at"], row["id"]))[:limit]
        return [self._record(row) for row in rows]
