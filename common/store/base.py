"""The storage port: every store (SQLite, MongoDB) offers exactly these operations.

Status changes are the named moves of common/lifecycle.py, each a compare-and-set on the current
status (and, for a delivery's outcome, on the claim token), so that two workers, two sweeps or a
worker and a manual retry can never both act on one notification. Adapters raise
StoreUnavailable for their driver's outage errors.
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

from common import lifecycle
from common.errors import ValidationError
from common.lifecycle import Move
from common.model import Notification

MAX_PAGE_SIZE = 200

# What add_many reports for each notification, in order.
INSERTED = "inserted"
DUPLICATE = "duplicate"  # its id (an idempotency key's) was taken already
NOT_STORED = "not_stored"


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

    # -- adapters implement these ------------------------------------------------------------

    @abstractmethod
    def add(self, notification: Notification) -> None:
        """Insert one; raise DuplicateId when its id is taken."""

    @abstractmethod
    def add_many(self, notifications: Sequence[Notification]) -> list[str]:
        """Insert each that can be; per notification, in order: INSERTED, DUPLICATE or
        NOT_STORED. Raises StoreUnavailable only when it cannot tell what was stored."""

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
        read: bool | None = None,
        archived: str = "false",
        category: str | None = None,
    ) -> Page:
        """Newest first; `next_cursor` is None on the last page. `read`: only read (True) or
        unread (False) ones; `archived`: "false" (the default) hides archived ones, "true"
        shows only them, "all" both; `category`: only that category."""

    # -- the in-app inbox: states are timestamps (common/inbox.py ACTIONS) ---------------------

    @abstractmethod
    def mark(self, notification_id: str, action: str, now: datetime) -> Notification | None:
        """Apply one of common/inbox.py's ACTIONS in one atomic update: a time already set is
        kept, a cleared one becomes None. The updated record, or None for an unknown id."""

    @abstractmethod
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
        """ "read" or "seen" every notification of the user that is not yet (only of that type,
        that category, created before `before`): how many changed."""

    @abstractmethod
    def inbox_counts(self, user_id: str, notification_type: str = "in_app") -> dict[str, int]:
        """{"total", "unread", "unseen"} over the user's non-archived ones of that type,
        answered from indexes."""

    @abstractmethod
    def inbox_changes(
        self, user_id: str, since: datetime, limit: int = 500, after_id: str | None = None
    ) -> list[Notification]:
        """The user's in-app notifications whose inbox changed at or after `since` (a status
        move, updated_at, or an inbox action, inbox_updated_at), oldest change first
        (Notification.inbox_changed_at, ties by id), at most `limit`: what a live stream
        reconnecting with Last-Event-ID missed. Answered from indexes, whatever the history.

        `after_id` makes it a keyset cursor: only those strictly after (since, after_id) in
        that order, i.e. changed after `since`, or exactly at `since` with a greater id. Paging
        with the last row's (inbox_changed_at, id) visits each once, even a page full of
        notifications one mark_all stamped with the same millisecond (an inclusive `since`
        alone would return that page forever)."""

    @abstractmethod
    def _apply(
        self,
        notification_id: str,
        move: Move,
        changes: dict[str, Any],
        *,
        token: str | None = None,
        types: Iterable[str] | None = None,
    ) -> Notification | None:
        """Make `move` with `changes` if the status is one of its sources (and the claim token
        is `token` for a fenced move; and, given `types`, the type is one of them): the updated
        record, or None when the guard did not hold."""

    @abstractmethod
    def _apply_many(self, ids: Sequence[str], move: Move, updated_at: datetime) -> int:
        """Bulk `move` (sources -> target, updated_at set) of those of `ids` that can: how many."""

    @abstractmethod
    def claim(
        self, notification_id: str, now: datetime, lease_until: datetime, token: str
    ) -> Notification | None:
        """Take a notification to deliver it, stamping `token` and counting the attempt:
        pending/queued, or sending with an expired lease. None when another worker holds it,
        or it is sent, failed or waiting for a retry."""

    @abstractmethod
    def claim_due(
        self,
        now: datetime,
        *,
        pending_before: datetime,
        queued_before: datetime | None = None,
        limit: int = 500,
    ) -> list[Notification]:
        """Atomically requeue (lifecycle.REQUEUE) what the sweep must (re)publish, and return it.

        Scheduled ones whose send_at has come (send_at <= now), due retries
        (next_retry_time <= now), pending ones never published (updated before
        `pending_before`), sending ones whose lease expired, and, when `queued_before` is given,
        queued ones whose message may be gone (updated before it).
        """

    @abstractmethod
    def cancel_by_key(self, cancel_key: str, now: datetime, reason: str) -> list[Notification]:
        """lifecycle.CANCEL, with lifecycle.cancelled(now, reason), for every notification sent
        with `cancel_key` that can still be cancelled: those cancelled (already cancelled ones
        are not returned again)."""

    @abstractmethod
    def count_with_cancel_key(self, cancel_key: str, exclude: Sequence[str] = ()) -> int:
        """How many notifications carry `cancel_key`, leaving out those in `exclude`."""

    @abstractmethod
    def find_by_provider_id(self, provider_message_id: str) -> Notification | None:
        """The notification its provider knows by this id (indexed)."""

    @abstractmethod
    def record_delivery_status(
        self,
        notification_id: str,
        status: str,
        error_code: str | None,
        at: datetime,
        advance_from: Sequence[str | None],
    ) -> Notification | None:
        """Set delivery_status (with delivery_error_code and delivery_status_at = at) only if
        the current delivery_status is one of `advance_from` (None: never reported): a
        compare-and-set, so that callbacks out of order never move it backwards. The updated
        record, or None when the guard did not hold."""

    @abstractmethod
    def dead_letters_due(self, limit: int = 500) -> list[Notification]:
        """Failed notifications whose dead-letter copy was not published yet."""

    @abstractmethod
    def mark_dead_lettered(self, ids: Sequence[str], now: datetime) -> int: ...

    @abstractmethod
    def count_by_status(self) -> dict[str, int]: ...

    @abstractmethod
    def count_by_type(self) -> dict[str, int]: ...

    @abstractmethod
    def count_by_delivery_status(self) -> dict[str, int]:
        """How many carry each delivery_status the provider reported (never-reported left out)."""

    @abstractmethod
    def ping(self) -> None:
        """Raise StoreUnavailable if the store cannot be reached (or its file is gone)."""

    def close(self) -> None:  # noqa: B027 - optional for adapters
        pass

    # -- the named moves, defined once on top of _apply ---------------------------------------

    def mark_queued(self, ids: Sequence[str], now: datetime) -> int:
        """pending -> queued for these ids (after their publish was confirmed)."""
        return self._apply_many(ids, lifecycle.QUEUE, now)

    def unqueue(self, ids: Sequence[str], updated_at: datetime) -> int:
        """queued -> pending: the sweep could not publish what it claimed."""
        return self._apply_many(ids, lifecycle.UNQUEUE, updated_at)

    def extend_lease(self, notification_id: str, token: str, lease_until: datetime) -> bool:
        moved = self._apply(
            notification_id,
            lifecycle.EXTEND_LEASE,
            {"lease_until": lease_until},
            token=token,
        )
        return moved is not None

    def record_sent(
        self,
        notification_id: str,
        token: str,
        now: datetime,
        provider_message_id: str | None = None,
    ) -> Notification | None:
        changes = lifecycle.sent(now, provider_message_id)
        return self._apply(notification_id, lifecycle.RECORD_SENT, changes, token=token)

    def schedule_retry(
        self,
        notification_id: str,
        token: str,
        now: datetime,
        retry_count: int,
        next_time: datetime,
        error: str,
    ) -> Notification | None:
        changes = lifecycle.retry_scheduled(now, retry_count, next_time, error)
        return self._apply(notification_id, lifecycle.SCHEDULE_RETRY, changes, token=token)

    def fail(
        self, notification_id: str, token: str, now: datetime, error: str
    ) -> Notification | None:
        changes = lifecycle.failed(now, error)
        return self._apply(notification_id, lifecycle.FAIL, changes, token=token)

    def deliver_in_place(
        self, notification_id: str, types: Iterable[str], now: datetime
    ) -> Notification | None:
        """pending/queued -> sent in one write, for types whose delivery is being stored."""
        return self._apply(
            notification_id, lifecycle.DELIVER_IN_PLACE, lifecycle.sent(now), types=types
        )

    def cancel(self, notification_id: str, now: datetime, reason: str) -> Notification | None:
        """Anything no provider has yet -> cancelled; None when it is too late (or unknown)."""
        return self._apply(notification_id, lifecycle.CANCEL, lifecycle.cancelled(now, reason))

    def restart(self, notification_id: str, now: datetime) -> Notification | None:
        """A manual retry: failed or waiting -> pending, with a fresh retry budget."""
        return self._apply(notification_id, lifecycle.RESTART, lifecycle.restarted(now))


def clamp_limit(limit: int) -> int:
    return max(1, min(int(limit), MAX_PAGE_SIZE))
