"""The use cases, as one object the handlers call: submit, deliver, sweep, retry, read, stats.

The work itself lives along its seams: common/intake.py (accepting), common/delivery.py
(claim, send, record) and common/recovery.py (sweep, dead letters, manual retry). Every
dependency (store, queue, channels, clock) is passed in, so each rule is tested without HTTP.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from common.admission import Admission
from common.channels.base import Channel
from common.config import Settings
from common.delivery import Deliverer
from common.errors import Conflict, NotFound, ValidationError
from common.inbox import ACTIONS, BULK_ACTIONS, parse_bulk, parse_list_filters
from common.inbox_feed.base import UPDATED, InboxFeed
from common.inbox_feed.changes import publish_quietly, publish_snapshot, resync_of
from common.inbox_feed.local import NO_INBOX_FEED
from common.intake import MAX_BATCH, Intake, idempotent_id
from common.model import (
    CANCELLED,
    IN_APP,
    STATUSES,
    TYPES,
    Notification,
    normalise_type,
    utcnow,
)
from common.notification_events import NO_EVENTS, EventBus
from common.queue.base import NotificationQueue
from common.recipient_policy import RecipientPolicy
from common.recovery import Recovery, SweepReport
from common.send_options import parse_send_options
from common.store.base import Cursor, NotificationStore, Page
from common.templates.catalog import TemplateCatalog

log = logging.getLogger("notifications")

__all__ = ["MAX_BATCH", "NotificationService", "SweepReport", "idempotent_id"]


class NotificationService:
    def __init__(
        self,
        settings: Settings,
        store: NotificationStore,
        queue: NotificationQueue,
        channels: Mapping[str, Channel],
        clock: Callable[[], datetime] = utcnow,
        admission: Admission | None = None,
        templates: TemplateCatalog | None = None,
        preferences=None,
        suppressions=None,
        events: EventBus = NO_EVENTS,
        webhooks=None,
        activity=None,
        inbox_feed: InboxFeed = NO_INBOX_FEED,
    ):
        """`preferences` (common/preferences PreferenceStore) and `suppressions`
        (common/suppressions SuppressionStore): None means no preferences are applied and no
        address is suppressed; `events` is told what happens to each notification (webhooks,
        metrics, the dashboard's activity); `webhooks` (common/webhooks Webhooks): the
        endpoints and their deliveries, whose due attempts each sweep makes; `activity`
        (common/activity ActivityRecorder): the dashboard's per-minute chart; `inbox_feed`
        (common/inbox_feed) is told of each inbox action, for the inbox's live streams."""
        self.settings = settings
        self.store = store
        self.queue = queue
        self.channels = channels
        self.clock = clock
        self.templates = templates
        self.preferences = preferences
        self.suppressions = suppressions
        self.events = events
        self.webhooks = webhooks
        self.activity = activity
        self.inbox_feed = inbox_feed
        policy = RecipientPolicy(settings, preferences, suppressions, clock)
        self.intake = Intake(settings, store, queue, clock, admission, templates, policy, events)
        self.deliverer = Deliverer(settings, store, queue, channels, clock, suppressions, events)
        self.recovery = Recovery(settings, store, queue, clock, webhooks)

    # -- accepting ---------------------------------------------------------------------------

    def submit(self, payload: Any, idempotency_key: str | None = None) -> Notification:
        return self.intake.submit(payload, idempotency_key)

    def submit_batch(self, payload: Any) -> list[dict]:
        return self.intake.submit_batch(payload)

    # -- delivering and recovering -----------------------------------------------------------

    def deliver(self, notification_id: str) -> str:
        return self.deliverer.deliver(notification_id)

    def sweep(self, queued_before: datetime | None = None) -> SweepReport:
        return self.recovery.sweep(queued_before)

    def recover_in_process_queue(self, started_at: datetime) -> SweepReport:
        """After a start with the in-process queue, what was queued before is gone: requeue it."""
        return self.recovery.sweep(queued_before=started_at)

    def retry(self, notification_id: str) -> Notification:
        """Manual retry: a failed (or waiting) notification is queued now, with a fresh budget."""
        return self.intake.enqueue([self.recovery.retry(notification_id)])[0]

    # -- cancelling ---------------------------------------------------------------------------

    def cancel(self, notification_id: str) -> Notification:
        """Cancel what no provider has yet; cancelling a cancelled one again is harmless."""
        current = self.get(notification_id)
        if current.status == CANCELLED:
            return current
        cancelled = self.store.cancel(notification_id, self.clock(), "cancelled by request")
        if cancelled is None:
            now = self.store.get(notification_id) or current
            if now.status == CANCELLED:
                return now
            raise Conflict(f"notification {notification_id} is {now.status}: too late to cancel")
        log.info("notification=%s event=cancelled previous=%s", notification_id, current.status)
        if cancelled.notification_type == IN_APP:
            publish_snapshot(self.inbox_feed, cancelled, UPDATED)
        return cancelled

    def cancel_by_key(self, payload: Any) -> dict:
        """Cancel every notification sent with a cancel_key that no provider has yet."""
        if not isinstance(payload, Mapping):
            raise ValidationError("the request body must be a JSON object")
        problems: dict[str, str] = {
            str(name)[:64]: "is not a known field" for name in set(payload) - {"cancel_key"}
        }
        key = parse_send_options({"cancel_key": payload.get("cancel_key")}, problems).get(
            "cancel_key"
        )
        if key is None and "cancel_key" not in problems:
            problems["cancel_key"] = "is required: the cancel_key the notifications were sent with"
        if problems:
            raise ValidationError("invalid cancel request", problems)
        cancelled = self.store.cancel_by_key(key, self.clock(), "cancelled with its cancel_key")
        matched = self.store.count_with_cancel_key(key)
        if matched == 0:
            raise NotFound("no notification was sent with this cancel_key")
        too_late = self.store.count_with_cancel_key(key, exclude=(CANCELLED,))
        if not cancelled and too_late:
            raise Conflict(
                f"too late to cancel: the {too_late} notification(s) sent with this cancel_key "
                "are sending, sent or final already"
            )
        for notification in cancelled:
            log.info("notification=%s event=cancelled by=cancel_key", notification.id)
            if notification.notification_type == IN_APP:
                publish_snapshot(self.inbox_feed, notification, UPDATED)
        return {
            "cancel_key": key,
            "cancelled": len(cancelled),
            "ids": [n.id for n in cancelled],
            "too_late": too_late,
        }

    # -- reading -----------------------------------------------------------------------------

    def get(self, notification_id: str) -> Notification:
        notification = self.store.get(notification_id)
        if notification is None:
            raise NotFound(f"notification {notification_id} not found")
        return notification

    def list_for_user(
        self,
        user_id: str,
        *,
        notification_type: str | None = None,
        status: str | None = None,
        limit: str | int | None = None,
        cursor: str | None = None,
        read: str | None = None,
        archived: str | None = None,
        category: str | None = None,
    ) -> Page:
        """`read` (true/false), `archived` (false, the default: hidden; true; all) and
        `category` filter the inbox; each bad value is a 400 naming it."""
        errors: dict[str, str] = {}
        filters = parse_list_filters(read, archived, category, errors)
        kind = None
        if notification_type:
            kind = normalise_type(notification_type)
            if kind is None:
                errors["type"] = f"must be one of {', '.join(TYPES)}"
        if status and status not in STATUSES:
            errors["status"] = f"must be one of {', '.join(STATUSES)}"
        page_size = 50
        if limit not in (None, ""):
            try:
                page_size = int(limit)
                if not 1 <= page_size <= 200:
                    raise ValueError
            except (TypeError, ValueError):
                errors["limit"] = "must be a whole number from 1 to 200"
        position = None
        if cursor:
            try:
                position = Cursor.decode(cursor)
            except ValidationError as error:
                errors.update(error.fields)
        if errors:
            raise ValidationError("invalid query", errors)
        return self.store.list_for_user(
            user_id,
            notification_type=kind,
            status=status or None,
            limit=page_size,
            cursor=position,
            **filters,
        )

    # -- the in-app inbox: seen, read, archived ----------------------------------------------

    def mark(self, notification_id: str, action: str) -> Notification:
        """seen, read, unread, archive or unarchive one notification (idempotent)."""
        if action not in ACTIONS:
            raise ValidationError(
                "unknown action", {"action": f"must be one of {', '.join(ACTIONS)}"}
            )
        marked = self.store.mark(notification_id, action, self.clock())
        if marked is None:
            raise NotFound(f"notification {notification_id} not found")
        log.info("notification=%s event=%s", notification_id, action)
        publish_snapshot(self.inbox_feed, marked, UPDATED)
        return marked

    def mark_all(self, user_id: str, action: str, payload: Any = None) -> int:
        """read-all or seen-all for a user; `payload` may narrow it (category, before, type)."""
        if action not in BULK_ACTIONS:
            raise ValidationError("unknown action", {"action": "must be read or seen"})
        now = self.clock()
        updated = self.store.mark_all(user_id, action, now, **parse_bulk(payload))
        log.info("user=%s event=%s_all updated=%d", user_id, action, updated)
        if updated:  # several changed: the user's streams read the store again
            publish_quietly(self.inbox_feed, resync_of(user_id, now))
        return updated

    def inbox_counts(self, user_id: str, notification_type: str | None = None) -> dict[str, int]:
        """total, unread and unseen over the user's non-archived ones (default: in_app)."""
        kind = normalise_type(notification_type) if notification_type else IN_APP
        if kind is None:
            raise ValidationError("invalid query", {"type": f"must be one of {', '.join(TYPES)}"})
        return self.store.inbox_counts(user_id, kind)

    def stats(self) -> dict:
        by_status = {status: 0 for status in STATUSES}
        by_status.update(self.store.count_by_status())
        by_type = {kind: 0 for kind in TYPES}
        by_type.update(self.store.count_by_type())
        return {
            "total": sum(by_status.values()),
            "by_status": by_status,
            "by_type": by_type,
            "queue": self.queue.depths(timeout=self.settings.publish_timeout),
        }
