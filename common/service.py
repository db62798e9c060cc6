"""The use cases, as one object the handlers call: submit, deliver, sweep, retry, read, stats.

The work itself lives along its seams: common/intake.py (accepting), common/delivery.py
(claim, send, record) and common/recovery.py (sweep, dead letters, manual retry). Every
dependency (store, queue, channels, clock) is passed in, so each rule is tested without HTTP.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from common.admission import Admission
from common.channels.base import Channel
from common.config import Settings
from common.delivery import Deliverer
from common.errors import NotFound, ValidationError
from common.intake import MAX_BATCH, Intake, idempotent_id
from common.model import STATUSES, TYPES, Notification, normalise_type, utcnow
from common.queue.base import NotificationQueue
from common.recovery import Recovery, SweepReport
from common.store.base import Cursor, NotificationStore, Page
from common.templates.catalog import TemplateCatalog

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
    ):
        self.settings = settings
        self.store = store
        self.queue = queue
        self.channels = channels
        self.clock = clock
        self.templates = templates
        self.intake = Intake(settings, store, queue, clock, admission, templates)
        self.deliverer = Deliverer(settings, store, queue, channels, clock)
        self.recovery = Recovery(settings, store, queue, clock)

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
    ) -> Page:
        errors: dict[str, str] = {}
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
            user_id, notification_type=kind, status=status or None, limit=page_size, cursor=position
        )

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
