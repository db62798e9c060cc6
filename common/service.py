"""The use cases: submit, deliver, sweep, retry, list and stats.

Handlers call these and nothing else; every dependency (store, queue, channels, clock) is passed
in, so each rule is tested without HTTP.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from common.channels.base import Channel, DeliveryResult, Outcome
from common.config import Settings
from common.errors import Conflict, DuplicateId, NotFound, Unavailable, ValidationError
from common.model import (
    FAILED_PERMANENTLY,
    PENDING,
    QUEUED,
    RETRY_SCHEDULED,
    RETRYABLE_BY_HAND,
    SENDING,
    SENT,
    STATUSES,
    TYPES,
    Notification,
    normalise_type,
    retry_delay,
    utcnow,
    validate_request,
)
from common.queue.base import NotificationQueue, QueueUnavailable
from common.store.base import Cursor, NotificationStore, Page

log = logging.getLogger("notifications")

MAX_BATCH = 1000
IDEMPOTENCY_NAMESPACE = uuid.UUID("6f1c5a9e-2b7d-4c1e-9a53-0d8e7f4b2c61")
MAX_IDEMPOTENCY_KEY = 200


def idempotent_id(user_id: str, key: str) -> str:
    """The same (user, key) always names the same notification, so a resubmission is found."""
    if len(key) > MAX_IDEMPOTENCY_KEY:
        raise ValidationError(
            "invalid idempotency key",
            {"Idempotency-Key": f"at most {MAX_IDEMPOTENCY_KEY} characters"},
        )
    return str(uuid.uuid5(IDEMPOTENCY_NAMESPACE, f"{user_id}\x00{key}"))


# Bound one sweep's work so that a huge backlog is drained over several ticks, not in one.
MAX_SWEEP_ROUNDS = 20


def sent_changes(now: datetime) -> dict[str, Any]:
    """What recording a delivery changes: sent now, nothing pending, no error left."""
    return {
        "status": SENT,
        "sent_at": now,
        "updated_at": now,
        "last_error": None,
        "next_retry_time": None,
        "lease_until": None,
    }


@dataclass
class SweepReport:
    requeued: int = 0
    publish_failed: int = 0


class NotificationService:
    def __init__(
        self,
        settings: Settings,
        store: NotificationStore,
        queue: NotificationQueue,
        channels: Mapping[str, Channel],
        clock: Callable[[], datetime] = utcnow,
    ):
        self.settings = settings
        self.store = store
        self.queue = queue
        self.channels = channels
        self.clock = clock
        self._stored_only_types = [t for t, c in channels.items() if c.stored_only]

    # -- accepting ---------------------------------------------------------------------------

    def submit(self, payload: Any, idempotency_key: str | None = None) -> Notification:
        """Validate, store as pending, then queue; a broker outage leaves it pending for the sweep.

        With an idempotency key, a repeated submission returns the first notification (its
        `duplicate` attribute set) instead of sending again.
        """
        notification = validate_request(payload, self.settings.max_retries)
        if idempotency_key:
            notification.id = idempotent_id(notification.user_id, idempotency_key)
            try:
                self._store_new([notification])
            except DuplicateId:
                existing = self.get(notification.id)
                log.info("notification=%s event=duplicate_submission", existing.id)
                existing.duplicate = True
                return existing
        else:
            self._store_new([notification])
        log.info(
            "notification=%s event=accepted type=%s user=%s",
            notification.id,
            notification.notification_type,
            notification.user_id,
        )
        return self._enqueue([notification])[0]

    def submit_batch(self, payload: Any) -> list[dict]:
        """Accept many at once; each item is validated alone and reported by its index."""
        items = payload.get("notifications") if isinstance(payload, Mapping) else payload
        if not isinstance(items, list) or not items:
            raise ValidationError(
                "invalid batch", {"notifications": "must be a non-empty list of notifications"}
            )
        if len(items) > MAX_BATCH:
            raise ValidationError(
                "batch too large", {"notifications": f"at most {MAX_BATCH} per request"}
            )
        results: list[dict] = []
        accepted: list[Notification] = []
        for index, item in enumerate(items):
            try:
                notification = validate_request(item, self.settings.max_retries)
            except ValidationError as error:
                results.append({"index": index, **error.to_dict()})
                continue
            accepted.append(notification)
            results.append({"index": index, "id": notification.id})
        self._store_new(accepted)
        queued = {n.id: n.status for n in self._enqueue(accepted)}
        for result in results:
            if "id" in result:
                result["status"] = queued[result["id"]]
        log.info(
            "event=batch_accepted accepted=%d rejected=%d",
            len(accepted),
            len(items) - len(accepted),
        )
        return results

    def _store_new(self, notifications: Sequence[Notification]) -> None:
        try:
            if len(notifications) == 1:
                self.store.add(notifications[0])
            else:
                self.store.add_many(notifications)
        except DuplicateId:
            raise
        except Exception as error:
            log.exception("event=store_failed count=%d", len(notifications))
            raise Unavailable(
                "the notification store is unavailable; nothing was stored"
            ) from error

    def _enqueue(self, notifications: Sequence[Notification]) -> list[Notification]:
        """Publish and mark queued; on a broker failure they stay pending (the sweep retries)."""
        if not notifications:
            return []
        ids = [n.id for n in notifications]
        try:
            self.queue.publish(ids)
        except QueueUnavailable as error:
            log.warning("event=publish_failed count=%d first=%s error=%s", len(ids), ids[0], error)
            return list(notifications)
        self.store.mark_queued(ids, self.clock())
        return [n.with_changes(status=QUEUED) for n in notifications]

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
            "queue": self.queue.depths(),
        }

    # -- delivering --------------------------------------------------------------------------

    def deliver(self, notification_id: str) -> str:
        """Deliver one queued notification and store the outcome; returns what happened.

        Idempotent: a notification already sent, held by another worker or waiting for its
        retry time is left alone, so a duplicated message does nothing.
        """
        if self._stored_only_types and self._deliver_in_place(notification_id):
            return SENT
        now = self.clock()
        lease_until = now + timedelta(seconds=self.settings.lease_seconds)
        notification = self.store.claim_for_delivery(notification_id, now, lease_until)
        if notification is None:
            current = self.store.get(notification_id)
            status = current.status if current else "unknown"
            log.info("notification=%s event=skipped status=%s", notification_id, status)
            return "skipped"
        result = self._send(notification)
        if result.outcome is Outcome.SENT:
            return self._record_sent(notification, result)
        if (
            result.outcome is Outcome.TRANSIENT
            and notification.retry_count < notification.max_retries
        ):
            return self._schedule_retry(notification, result)
        return self._fail_permanently(notification, result)

    def _deliver_in_place(self, notification_id: str) -> bool:
        """An in-app notification is delivered by being marked sent: one atomic write.

        False when it is of another type or not waiting (sent, held by a worker, retrying):
        the normal claim then decides.
        """
        now = self.clock()
        delivered = self.store.update_if(
            notification_id,
            [PENDING, QUEUED],
            sent_changes(now),
            types=self._stored_only_types,
        )
        if delivered is not None:
            log.info(
                "notification=%s event=sent type=%s attempt=%d detail=stored in-app",
                notification_id,
                delivered.notification_type,
                delivered.retry_count + 1,
            )
        return delivered is not None

    def _send(self, notification: Notification) -> DeliveryResult:
        channel = self.channels[notification.notification_type]
        try:
            return channel.deliver(notification)
        except Exception as error:  # a channel bug must not lose the notification
            log.exception("notification=%s event=channel_error", notification.id)
            return DeliveryResult.transient(f"unexpected error: {error!r}")

    def _record_sent(self, notification: Notification, result: DeliveryResult) -> str:
        now = self.clock()
        self.store.update_if(
            notification.id,
            [SENDING],
            sent_changes(now),
        )
        log.info(
            "notification=%s event=sent type=%s attempt=%d detail=%s",
            notification.id,
            notification.notification_type,
            notification.retry_count + 1,
            result.detail,
        )
        return SENT

    def _schedule_retry(self, notification: Notification, result: DeliveryResult) -> str:
        now = self.clock()
        retry_count = notification.retry_count + 1
        next_time = now + retry_delay(retry_count, self.settings.retry_schedule)
        self.store.update_if(
            notification.id,
            [SENDING],
            {
                "status": RETRY_SCHEDULED,
                "retry_count": retry_count,
                "next_retry_time": next_time,
                "last_error": result.detail,
                "updated_at": now,
                "lease_until": None,
            },
        )
        log.warning(
            "notification=%s event=retry_scheduled retry=%d/%d at=%s error=%s",
            notification.id,
            retry_count,
            notification.max_retries,
            next_time.isoformat(),
            result.detail,
        )
        return RETRY_SCHEDULED

    def _fail_permanently(self, notification: Notification, result: DeliveryResult) -> str:
        now = self.clock()
        failed = self.store.update_if(
            notification.id,
            [SENDING],
            {
                "status": FAILED_PERMANENTLY,
                "last_error": result.detail,
                "updated_at": now,
                "next_retry_time": None,
                "lease_until": None,
            },
        )
        log.error(
            "notification=%s event=failed_permanently retries=%d error=%s",
            notification.id,
            notification.retry_count,
            result.detail,
        )
        if failed is not None:
            try:
                self.queue.publish_dead_letter(failed.to_dict())
            except QueueUnavailable as error:
                # The store already says failed_permanently; the dead letter is a copy.
                log.error(
                    "notification=%s event=dead_letter_failed error=%s", notification.id, error
                )
        return FAILED_PERMANENTLY

    # -- recovering --------------------------------------------------------------------------

    def sweep(self, queued_before: datetime | None = None) -> SweepReport:
        """Requeue due retries, never-published pending ones and expired claims."""
        report = SweepReport()
        for _ in range(MAX_SWEEP_ROUNDS):
            now = self.clock()
            claimed = self.store.claim_due(
                now,
                pending_before=now - timedelta(seconds=self.settings.pending_grace_seconds),
                queued_before=queued_before,
                limit=self.settings.sweep_batch_size,
            )
            if not claimed:
                break
            ids = [n.id for n in claimed]
            try:
                self.queue.publish(ids)
                report.requeued += len(ids)
                for notification in claimed:
                    log.info(
                        "notification=%s event=requeued retry=%d/%d",
                        notification.id,
                        notification.retry_count,
                        notification.max_retries,
                    )
            except QueueUnavailable as error:
                self._unclaim(ids, now)
                report.publish_failed += len(ids)
                log.warning("event=sweep_publish_failed count=%d error=%s", len(ids), error)
                break
            if len(claimed) < self.settings.sweep_batch_size:
                break
        if report.requeued or report.publish_failed:
            log.info(
                "event=sweep requeued=%d publish_failed=%d", report.requeued, report.publish_failed
            )
        return report

    def _unclaim(self, ids: Sequence[str], now: datetime) -> None:
        """Back to pending, dated so that the next sweep takes them again at once."""
        stale = now - timedelta(seconds=self.settings.pending_grace_seconds + 1)
        self.store.move_status(ids, QUEUED, PENDING, stale)

    def retry(self, notification_id: str) -> Notification:
        """Manual retry: a failed (or waiting) notification is queued now, with a fresh budget."""
        current = self.get(notification_id)
        if current.status == SENT:
            raise Conflict(f"notification {notification_id} was already sent")
        if current.status not in RETRYABLE_BY_HAND:
            raise Conflict(f"notification {notification_id} is {current.status}: already in flight")
        now = self.clock()
        restarted = self.store.update_if(
            notification_id,
            RETRYABLE_BY_HAND,
            {"status": PENDING, "retry_count": 0, "next_retry_time": None, "updated_at": now},
        )
        if restarted is None:
            raise Conflict(f"notification {notification_id} changed state; try again")
        log.info("notification=%s event=manual_retry previous=%s", notification_id, current.status)
        return self._enqueue([restarted])[0]

    def recover_in_process_queue(self, started_at: datetime) -> SweepReport:
        """After a start with the in-process queue, what was queued before is gone: requeue it."""
        return self.sweep(queued_before=started_at)
