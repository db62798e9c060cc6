"""The storage port: every store (SQLite, MongoDB) offers exactly these operations.

Status changes are compare-and-set on the current status, so that two workers, two sweeps or a
worker and a manual retry can never both act on one notification.
"""

from __future__ import annotations

import base64
import binascii
import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from common.errors import ValidationError
from common.model import PENDING, QUEUED, Notification

MAX_PAGE_SIZE = 200


def _store_errors() -> tuple[type[BaseException], ...]:
    import sqlite3

    import pymongo.errors

    return (sqlite3.OperationalError, pymongo.errors.ConnectionFailure)


# What a store raises when it cannot be reached or is busy: the caller may try again (503).
STORE_OUTAGES = _store_errors()


@dataclass
class Page:
    items: list[Notification]
    next_cursor: str | None


@dataclass(frozen=True)
class Cursor:
    """Position after the last item of a page, in newest-first order."""

    created_at: datetime
    id: str

    def encode(self) -> str:
        raw = json.dumps([self.created_at.isoformat(), self.id]).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        try:
            padded = text + "=" * (-len(text) % 4)
            created_at, item_id = json.loads(base64.urlsafe_b64decode(padded))
            return cls(datetime.fromisoformat(created_at), str(item_id))
        except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
            raise ValidationError(
                "invalid cursor", {"cursor": "is not a cursor this API gave out"}
            ) from None


class NotificationStore(ABC):
    """Where notifications live; the single source of truth for their status."""

    @abstractmethod
    def add(self, notification: Notification) -> None:
        """Insert one; raise DuplicateId when its id is taken."""

    @abstractmethod
    def add_many(self, notifications: Sequence[Notification]) -> None: ...

    @abstractmethod
    def get(self, notification_id: str) -> Notification | None: ...

    @abstractmethod
    def list_for_user(
        self,
        user_id: str,
        *,
        notification_type: str | None = None,
        status: str | None = None,
        limit: int = 50,
        cursor: Cursor | None = None,
    ) -> Page:
        """Newest first; `next_cursor` is None on the last page."""

    @abstractmethod
    def update_if(
        self,
        notification_id: str,
        expected: Iterable[str],
        changes: dict[str, Any],
        *,
        types: Iterable[str] | None = None,
    ) -> Notification | None:
        """Apply `changes` only if the status is one of `expected` (and, given `types`, the
        notification is of one of them); the updated record, or None."""

    @abstractmethod
    def move_status(
        self, ids: Sequence[str], from_status: str, to_status: str, updated_at: datetime
    ) -> int:
        """In one bulk write, move those of `ids` that are in `from_status`; how many moved."""

    def mark_queued(self, ids: Sequence[str], now: datetime) -> int:
        """pending -> queued for these ids (after their publish was confirmed)."""
        return self.move_status(ids, PENDING, QUEUED, now)

    @abstractmethod
    def claim_for_delivery(
        self, notification_id: str, now: datetime, lease_until: datetime
    ) -> Notification | None:
        """Take a notification to deliver it: pending/queued, or sending with an expired lease.

        None when another worker holds it, or it is sent, failed or waiting for a retry.
        """

    @abstractmethod
    def claim_due(
        self,
        now: datetime,
        *,
        pending_before: datetime,
        queued_before: datetime | None = None,
        limit: int = 500,
    ) -> list[Notification]:
        """Atomically move to `queued` what the sweep must (re)publish, and return it.

        Due retries (next_retry_time <= now), pending ones never published (updated before
        `pending_before`), sending ones whose lease expired, and, when `queued_before` is given,
        queued ones whose message may be gone (the in-process queue after a restart).
        """

    @abstractmethod
    def count_by_status(self) -> dict[str, int]: ...

    @abstractmethod
    def count_by_type(self) -> dict[str, int]: ...

    @abstractmethod
    def ping(self) -> None:
        """Raise if the store cannot be reached."""

    def close(self) -> None:  # noqa: B027 - optional for adapters
        pass


def clamp_limit(limit: int) -> int:
    return max(1, min(int(limit), MAX_PAGE_SIZE))
