"""Webhook endpoints and deliveries in their own SQLite file (DATA_DIR/webhooks.db), shared by
every process on the machine. Times are integer milliseconds (UTC); a claim is one
`BEGIN IMMEDIATE` transaction, so two processes never claim the same row."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from common.errors import StoreUnavailable
from common.sqlite_files import ThreadConnections
from common.webhooks.records import (
    PENDING,
    SENDING,
    AttemptOutcome,
    Delivery,
    Endpoint,
    Position,
    from_millis,
    millis,
)
from common.webhooks.store import WebhookStore

log = logging.getLogger("notifications.webhooks")

SCHEMA = """
CREATE TABLE IF NOT EXISTS webhook_endpoints (
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    events TEXT NOT NULL,
    description TEXT NOT NULL,
    secret TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    previous_secret TEXT,
    previous_secret_until INTEGER,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    disabled_at INTEGER,
    disabled_reason TEXT
);
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id TEXT PRIMARY KEY,
    endpoint_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    next_attempt_at INTEGER,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_status_code INTEGER,
    last_error TEXT,
    delivered_at INTEGER,
    lease_until INTEGER,
    claim_token TEXT
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_log
    ON webhook_deliveries (endpoint_id, created_at, id);
CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
"""

DUE = (
    "((status = 'pending' AND next_attempt_at <= :now) "
    "OR (status = 'sending' AND lease_until <= :now))"
)


def _ms(value: datetime | None) -> int | None:
    return None if value is None else millis(value)


class SqliteWebhookStore(WebhookStore):
    def __init__(self, path: Path | str, timeout: float = 3.0):
        self.path = str(path)
        self._connections = ThreadConnections(self.path, timeout)
        self._run(lambda db: db.executescript(SCHEMA))

    def _run(self, work):
        try:
            return work(self._connections.get())
        except sqlite3.OperationalError as error:
            log.error("event=webhook_store_error error=%s", error)
            raise StoreUnavailable("the webhook store is unavailable; try again shortly") from error

    def close(self) -> None:
        self._connections.close_all()

    @staticmethod
    def _endpoint(row: sqlite3.Row) -> Endpoint:
        return Endpoint(
            id=row["id"],
            url=row["url"],
            events=tuple(json.loads(row["events"])),
            description=row["description"],
            secret=row["secret"],
            created_at=from_millis(row["created_at"]),
            previous_secret=row["previous_secret"],
            previous_secret_until=from_millis(row["previous_secret_until"]),
            consecutive_failures=row["consecutive_failures"],
            disabled_at=from_millis(row["disabled_at"]),
            disabled_reason=row["disabled_reason"],
        )

    @staticmethod
    def _delivery(row: sqlite3.Row) -> Delivery:
        return Delivery(
            id=row["id"],
            endpoint_id=row["endpoint_id"],
            event_type=row["event_type"],
            payload=row["payload"],
            created_at=from_millis(row["created_at"]),
            next_attempt_at=from_millis(row["next_attempt_at"]),
            status=row["status"],
            attempts=row["attempts"],
            last_status_code=row["last_status_code"],
            last_error=row["last_error"],
            delivered_at=from_millis(row["delivered_at"]),
            lease_until=from_millis(row["lease_until"]),
            claim_token=row["claim_token"],
        )

    # -- endpoints --

    def add_endpoint(self, endpoint: Endpoint) -> None:
        values = (
            endpoint.id,
            endpoint.url,
            json.dumps(list(endpoint.events)),
            endpoint.description,
            endpoint.secret,
            millis(endpoint.created_at),
            endpoint.previous_secret,
            _ms(endpoint.previous_secret_until),
            endpoint.consecutive_failures,
            _ms(endpoint.disabled_at),
            endpoint.disabled_reason,
        )
        sql = "INSERT INTO webhook_endpoints VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        self._run(lambda db: db.execute(sql, values))

    def get_endpoint(self, endpoint_id: str) -> Endpoint | None:
        sql = "SELECT * FROM webhook_endpoints WHERE id = ?"
        row = self._run(lambda db: db.execute(sql, (endpoint_id,)).fetchone())
        return self._endpoint(row) if row else None

    def list_endpoints(self) -> list[Endpoint]:
        sql = "SELECT * FROM webhook_endpoints ORDER BY created_at, id"
        return [self._endpoint(row) for row in self._run(lambda db: db.execute(sql).fetchall())]

    def delete_endpoint(self, endpoint_id: str) -> bool:
        def work(db: sqlite3.Connection) -> bool:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("DELETE FROM webhook_deliveries WHERE endpoint_id = ?", (endpoint_id,))
                gone = db.execute("DELETE FROM webhook_endpoints WHERE id = ?", (endpoint_id,))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return gone.rowcount == 1

        return self._run(work)

    def _update(self, sql: str, params: Sequence) -> int:
        return self._run(lambda db: db.execute(sql, params).rowcount)

    def set_secrets(
        self,
        endpoint_id: str,
        secret: str,
        previous_secret: str | None,
        previous_until: datetime | None,
    ) -> bool:
        sql = (
            "UPDATE webhook_endpoints SET secret = ?, previous_secret = ?, "
            "previous_secret_until = ? WHERE id = ?"
        )
        return self._update(sql, (secret, previous_secret, _ms(previous_until), endpoint_id)) == 1

    def record_endpoint_success(self, endpoint_id: str) -> None:
        # Guarded so that the usual case, a healthy endpoint, writes nothing.
        sql = (
            "UPDATE webhook_endpoints SET consecutive_failures = 0 "
            "WHERE id = ? AND consecutive_failures != 0"
        )
        self._update(sql, (endpoint_id,))

    def record_endpoint_failure(
        self, endpoint_id: str, error: str, limit: int, now: datetime
    ) -> Endpoint | None:
        sql = (
            "UPDATE webhook_endpoints SET consecutive_failures = consecutive_failures + 1, "
            "disabled_at = CASE WHEN disabled_at IS NULL AND consecutive_failures + 1 >= :limit "
            "THEN :now ELSE disabled_at END, "
            "disabled_reason = CASE WHEN disabled_at IS NULL AND consecutive_failures + 1 >= "
            ":limit THEN :reason ELSE disabled_reason END "
            "WHERE id = :id RETURNING *"
        )
        params = {"limit": limit, "now": millis(now), "reason": error, "id": endpoint_id}
        row = self._run(lambda db: db.execute(sql, params).fetchone())
        return self._endpoint(row) if row else None

    def enable_endpoint(self, endpoint_id: str) -> bool:
        sql = (
            "UPDATE webhook_endpoints SET disabled_at = NULL, disabled_reason = NULL, "
            "consecutive_failures = 0 WHERE id = ?"
        )
        return self._update(sql, (endpoint_id,)) == 1

    # -- deliveries --

    def add_deliveries(self, deliveries: Sequence[Delivery]) -> None:
        rows = [
            (
                d.id,
                d.endpoint_id,
                d.event_type,
                d.payload,
                millis(d.created_at),
                _ms(d.next_attempt_at),
                d.status,
                d.attempts,
            )
            for d in deliveries
        ]
        if not rows:
            return
        sql = (
            "INSERT INTO webhook_deliveries (id, endpoint_id, event_type, payload, created_at, "
            "next_attempt_at, status, attempts) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        )
        self._run(lambda db: db.executemany(sql, rows))

    def get_delivery(self, delivery_id: str) -> Delivery | None:
        sql = "SELECT * FROM webhook_deliveries WHERE id = ?"
        row = self._run(lambda db: db.execute(sql, (delivery_id,)).fetchone())
        return self._delivery(row) if row else None

    def list_deliveries(
        self, endpoint_id: str, limit: int, cursor: str | None
    ) -> tuple[list[Delivery], str | None]:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        sql, params = "SELECT * FROM webhook_deliveries WHERE endpoint_id = ? ", [endpoint_id]
        if cursor:
            after = Position.decode(cursor)
            sql += "AND (created_at, id) < (?, ?) "
            params += [after.created_at, after.id]
        sql += "ORDER BY created_at DESC, id DESC LIMIT ?"
        rows = self._run(lambda db: db.execute(sql, [*params, limit + 1]).fetchall())
        items = [self._delivery(row) for row in rows[:limit]]
        return items, Position.after(items[-1]).encode() if len(rows) > limit else None

    def claim_due(self, now: datetime, lease_until: datetime, token: str) -> Delivery | None:
        sql = (
            f"UPDATE webhook_deliveries SET status = '{SENDING}', lease_until = :lease, "
            "claim_token = :token WHERE id = (SELECT id FROM webhook_deliveries WHERE "
            f"{DUE} ORDER BY next_attempt_at LIMIT 1) AND {DUE} RETURNING *"
        )
        params = {"now": millis(now), "lease": millis(lease_until), "token": token}
        # One statement: SQLite takes the write lock for it, so the select and the update
        # cannot interleave with another process's claim.
        row = self._run(lambda db: db.execute(sql, params).fetchone())
        return self._delivery(row) if row else None

    def finish_attempt(self, delivery_id: str, token: str, outcome: AttemptOutcome) -> bool:
        sql = (
            "UPDATE webhook_deliveries SET status = ?, attempts = ?, last_status_code = ?, "
            "last_error = ?, next_attempt_at = ?, delivered_at = COALESCE(?, delivered_at), "
            "lease_until = NULL, claim_token = NULL "
            f"WHERE id = ? AND claim_token = ? AND status = '{SENDING}'"
        )
        params = (
            outcome.status,
            outcome.attempts,
            outcome.last_status_code,
            outcome.last_error,
            _ms(outcome.next_attempt_at),
            _ms(outcome.delivered_at),
            delivery_id,
            token,
        )
        return self._update(sql, params) == 1

    def replay(self, delivery_id: str, now: datetime) -> bool:
        sql = (
            f"UPDATE webhook_deliveries SET status = '{PENDING}', next_attempt_at = ? "
            f"WHERE id = ? AND (status != '{SENDING}' OR lease_until <= ?)"
        )
        return self._update(sql, (millis(now), delivery_id, millis(now))) == 1
