"""Accepting notifications: validate, store, then queue.

The store commit decides the reply. Once a notification is committed it is accepted, whatever
the broker does next: a publish that fails or takes too long leaves it `pending`, and the sweep
publishes it; it never turns an accepted notification into a 5xx that a client would retry
into a second one.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from common.admission import Admission
from common.config import Settings
from common.errors import DuplicateId, IdempotencyConflict, Unavailable, ValidationError
from common.model import PENDING, QUEUED, SUPPRESSED, Notification, validate_request
from common.notification_events import (
    ACCEPTED,
    NO_EVENTS,
    SUPPRESSED_EVENT,
    EventBus,
    NotificationEvent,
)
from common.queue.base import NotificationQueue, QueueUnavailable
from common.recipient_policy import RecipientPolicy, log_held
from common.store.base import DUPLICATE, INSERTED, NotificationStore
from common.templates.catalog import TemplateCatalog
from common.tracing import current_traceparent

log = logging.getLogger("notifications")

MAX_BATCH = 1000
IDEMPOTENCY_NAMESPACE = uuid.UUID("6f1c5a9e-2b7d-4c1e-9a53-0d8e7f4b2c61")
MAX_IDEMPOTENCY_KEY = 200
ITEM_KEY_FIELD = "idempotency_key"  # the Idempotency-Key in a body (a batch item's own)


def idempotent_id(user_id: str, key: str, field: str = "Idempotency-Key") -> str:
    """The same (user, key) always names the same notification, so a resubmission is found."""
    if not isinstance(key, str) or not key.strip():
        raise ValidationError("invalid idempotency key", {field: "must be a non-empty string"})
    if len(key) > MAX_IDEMPOTENCY_KEY:
        raise ValidationError(
            "invalid idempotency key", {field: f"at most {MAX_IDEMPOTENCY_KEY} characters"}
        )
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError("invalid idempotency key", {field: "must be valid text"}) from None
    return str(uuid.uuid5(IDEMPOTENCY_NAMESPACE, f"{user_id}\x00{key}"))


def keyed(notification: Notification) -> bool:
    """Was its id derived from an idempotency key (uuid5, where fresh ids are uuid4), so
    that a repeat finds it stored?"""
    return uuid.UUID(notification.id).version == 5


def batch_cost(payload: Any) -> int:
    """How many notifications a batch request asks for (what the rate limit charges), before
    it is validated: a malformed batch, or one over MAX_BATCH (refused whole), costs one."""
    items = payload.get("notifications") if isinstance(payload, Mapping) else payload
    return len(items) if isinstance(items, list) and 0 < len(items) <= MAX_BATCH else 1


class Intake:
    def __init__(
        self,
        settings: Settings,
        store: NotificationStore,
        queue: NotificationQueue,
        clock: Callable[[], datetime],
        admission: Admission | None = None,
        templates: TemplateCatalog | None = None,
        policy: RecipientPolicy | None = None,
        events: EventBus = NO_EVENTS,
    ):
        """`admission`: the SMS country list and per-recipient caps (None: neither);
        `templates`: renders sends that name a template (None: no templates); `policy`: the
        recipient's preferences and the suppression list (None: neither)."""
        self.settings = settings
        self.store = store
        self.queue = queue
        self.clock = clock
        self.admission = admission
        self.templates = templates
        self.policy = policy
        self.events = events

    def submit(self, payload: Any, idempotency_key: str | None = None) -> Notification:
        """Validate, store as pending, then queue.

        With an idempotency key, a repeat of the same request returns the first notification
        (its `duplicate` attribute set); the same key with a different request is a 422.
        """
        body_key = None
        if isinstance(payload, Mapping) and ITEM_KEY_FIELD in payload:
            payload = dict(payload)
            body_key = payload.pop(ITEM_KEY_FIELD)  # the header, when also given, wins
        notification = self._validate(payload)
        if self.admission is not None:
            self.admission.check_destination(notification)
        field = "Idempotency-Key" if idempotency_key is not None else ITEM_KEY_FIELD
        key = idempotency_key if idempotency_key is not None else body_key
        if key is not None:
            notification.id = idempotent_id(notification.user_id, key, field)
        if self.policy is not None:
            self.policy.apply([notification])
        if self.admission is not None:
            if key is not None and self.store.get(notification.id) is not None:
                return self._existing(notification, field)  # a repeat is not a new send
        if self.admission is not None and notification.status != SUPPRESSED:
            refusal = self.admission.take([notification])[0]
            if refusal is not None:
                log.warning(
                    "notification=%s event=recipient_cap_reached type=%s user=%s",
                    notification.id,
                    notification.notification_type,
                    notification.user_id,
                )
                raise refusal
        try:
            self._store_one(notification)
        except DuplicateId:
            return self._existing(notification, field)
        log.info(
            "notification=%s event=accepted type=%s user=%s",
            notification.id,
            notification.notification_type,
            notification.user_id,
        )
        self._tell_accepted([notification])
        if notification.status != PENDING:
            log_held(notification)
            return notification
        return self.enqueue([notification])[0]

    def _existing(self, notification: Notification, field: str = "Idempotency-Key"):
        """The notification an idempotency key named first, if this request is the same."""
        existing = self.store.get(notification.id)
        if existing is None:  # pragma: no cover - deleted between the insert and the read
            raise Unavailable("the notification store changed under the request; try again")
        if existing.request_hash not in (None, notification.request_hash):
            raise IdempotencyConflict(
                "this idempotency key was used for a different notification",
                {field: f"already used for notification {existing.id} with another body"},
            )
        log.info("notification=%s event=duplicate_submission", existing.id)
        existing.duplicate = True
        return existing

    def _store_one(self, notification: Notification) -> None:
        try:
            self.store.add(notification)
        except (DuplicateId, Unavailable):
            raise
        except Exception as error:
            log.exception("notification=%s event=store_failed", notification.id)
            raise Unavailable(
                "the notification store is unavailable; nothing was stored"
            ) from error

    def submit_batch(self, payload: Any) -> list[dict]:
        """Accept many at once; each item is validated, stored and reported by its index alone."""
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
        valid: list[tuple[dict, Notification]] = []
        looked_up: dict = {}  # template versions, read once per batch
        for index, item in enumerate(items):
            result: dict[str, Any] = {"index": index}
            results.append(result)
            try:
                notification = self._validate_item(item, looked_up)
            except ValidationError as error:
                result.update(error.to_dict())
                continue
            valid.append((result, notification))
        if self.policy is not None:
            self.policy.apply([n for _, n in valid])
        accepted = self._store_batch(self._within_caps(valid))
        self._tell_accepted(accepted)
        statuses = {n.id: n.status for n in accepted}
        for notification in accepted:
            if notification.status != PENDING:
                log_held(notification)
        statuses.update(
            (n.id, n.status) for n in self.enqueue([n for n in accepted if n.status == PENDING])
        )
        for result in results:
            if result.get("id") in statuses and "duplicate" not in result:
                result["status"] = statuses[result["id"]]
        log.info(
            "event=batch_accepted accepted=%d rejected=%d",
            sum(1 for r in results if "id" in r),
            sum(1 for r in results if "id" not in r),
        )
        return results

    def _validate(self, payload: Any, looked_up: dict | None = None) -> Notification:
        """A new notification from a request: rendered first when it names a template."""
        extras: dict[str, Any] = {}
        if self.templates is not None:
            payload, extras = self.templates.expand(payload, looked_up)
        notification = validate_request(payload, self.settings.max_retries)
        for name, value in extras.items():
            setattr(notification, name, value)
        notification.traceparent = current_traceparent()  # the request's, for the delivery
        horizon = timedelta(days=self.settings.max_schedule_days)
        if notification.send_at is not None and notification.send_at > self.clock() + horizon:
            raise ValidationError(
                "invalid notification",
                {
                    "send_at": f"is more than {self.settings.max_schedule_days} days ahead "
                    "(MAX_SCHEDULE_DAYS)"
                },
            )
        return notification

    def _within_caps(
        self, valid: Sequence[tuple[dict, Notification]]
    ) -> list[tuple[dict, Notification]]:
        """The items within their recipients' caps; the others' results say why (429).
        Items already stored under their idempotency key pass uncounted: not new sends."""
        if self.admission is None or not valid:
            return list(valid)
        fresh = [
            (r, n)
            for r, n in valid
            if n.status != SUPPRESSED and not (keyed(n) and self.store.get(n.id))
        ]
        taken = self.admission.take([n for _, n in fresh])
        refusals = {id(r): refusal for (r, _), refusal in zip(fresh, taken, strict=True)}
        kept = []
        for result, notification in valid:
            refusal = refusals.get(id(result))
            if refusal is None:
                kept.append((result, notification))
            else:
                result.update(refusal.to_dict(), status=429)
        return kept

    def _validate_item(self, item: Any, looked_up: dict) -> Notification:
        key = None
        if isinstance(item, Mapping) and ITEM_KEY_FIELD in item:
            item = dict(item)
            key = item.pop(ITEM_KEY_FIELD)
        notification = self._validate(item, looked_up)
        if self.admission is not None:
            self.admission.check_destination(notification)
        if key is not None:
            notification.id = idempotent_id(notification.user_id, key, ITEM_KEY_FIELD)
        return notification

    def _store_batch(self, valid: Sequence[tuple[dict, Notification]]) -> list[Notification]:
        """Store what validated; fill each item's result; the newly stored, to be queued."""
        if not valid:
            return []
        outcomes = self.store.add_many([n for _, n in valid])
        accepted = []
        for (result, notification), outcome in zip(valid, outcomes, strict=True):
            if outcome == INSERTED:
                result["id"] = notification.id
                accepted.append(notification)
            elif outcome == DUPLICATE:
                try:
                    existing = self._existing(notification, ITEM_KEY_FIELD)
                except IdempotencyConflict as error:
                    result.update(error.to_dict())
                    continue
                result.update(id=existing.id, status=existing.status, duplicate=True)
            else:
                result.update(error="not stored: the store refused this item; send it again")
        return accepted

    def _tell_accepted(self, stored: Sequence[Notification]) -> None:
        """Accepted, for each newly stored one; suppressed too, for those that never go."""
        now = self.clock()
        events = [NotificationEvent(ACCEPTED, n, now) for n in stored]
        events += [
            NotificationEvent(SUPPRESSED_EVENT, n, now) for n in stored if n.status == SUPPRESSED
        ]
        self.events.emit(*events)

    def enqueue(self, notifications: Sequence[Notification]) -> list[Notification]:
        """Publish and mark queued; on any broker failure they stay pending (the sweep retries).

        The rows are committed already, so nothing here may fail the request."""
        if not notifications:
            return []
        ids = [n.id for n in notifications]
        try:
            traceparents = {n.id: n.traceparent for n in notifications if n.traceparent}
            self.queue.publish(
                ids, timeout=self.settings.publish_timeout, traceparents=traceparents or None
            )
        except QueueUnavailable as error:
            log.warning("event=publish_failed count=%d first=%s error=%s", len(ids), ids[0], error)
            return list(notifications)
        try:
            self.store.mark_queued(ids, self.clock())
        except Unavailable as error:
            # Published but still marked pending: the sweep may publish it again, which the
            # idempotent delivery makes harmless.
            log.warning(
                "event=mark_queued_failed count=%d first=%s error=%s", len(ids), ids[0], error
            )
            return list(notifications)
        return [n.with_changes(status=QUEUED) for n in notifications]
