"""Delivering one notification: claim it, send it, record the outcome under the claim.

Every claim carries a fresh token, and every outcome write is guarded by it (fencing): a
worker whose claim was taken over (its lease expired and the sweep or another worker took the
notification) records nothing, logs `event=lease_lost`, and reports no success. While a send is
in flight, a LeaseKeeper renews the lease every third of LEASE_SECONDS, so a slow provider
never lets a healthy worker's claim expire, and a dead worker's claim expires within one lease.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

from common import notification_events as told
from common.channels.base import Channel, DeliveryResult, Outcome
from common.config import Settings
from common.errors import Unavailable
from common.leases import LeaseKeeper
from common.model import FAILED_PERMANENTLY, RETRY_SCHEDULED, SENT, Notification, retry_delay
from common.notification_events import NO_EVENTS, EventBus, NotificationEvent
from common.queue.base import NotificationQueue, QueueUnavailable
from common.recipient_policy import address_of
from common.store.base import NotificationStore
from common.tracing import current_traceparent, traced

log = logging.getLogger("notifications")

# What deliver() returns besides the statuses it records.
SKIPPED = "skipped"
LEASE_LOST = "lease_lost"
OUTCOME_RETRY_PAUSE = 0.2  # seconds between tries to store an outcome while the store is out


class Deliverer:
    def __init__(
        self,
        settings: Settings,
        store: NotificationStore,
        queue: NotificationQueue,
        channels: Mapping[str, Channel],
        clock: Callable[[], datetime],
        suppressions=None,
        events: EventBus = NO_EVENTS,
    ):
        """`suppressions`: the SuppressionStore that a dead address is added to (None: none);
        `events`: told of each outcome (webhooks, metrics)."""
        self.settings = settings
        self.suppressions = suppressions
        self.events = events
        self.store = store
        self.queue = queue
        self.channels = channels
        self.clock = clock
        self.leases = LeaseKeeper(store, settings.lease_seconds, clock)
        self._stored_only_types = [t for t, c in channels.items() if c.stored_only]
        self._random = random.Random()

    def deliver(self, notification_id: str) -> str:
        """Deliver one queued notification and store the outcome; returns what happened.

        Idempotent: a notification already sent, held by another worker or waiting for its
        retry time is left alone, so a duplicated message does nothing.
        """
        if self._stored_only_types and self._deliver_in_place(notification_id):
            return SENT
        now = self.clock()
        token = uuid.uuid4().hex
        lease_until = now + timedelta(seconds=self.settings.lease_seconds)
        notification = self.store.claim(notification_id, now, lease_until, token)
        if notification is None:
            current = self.store.get(notification_id)
            status = current.status if current else "unknown"
            log.info("notification=%s event=skipped status=%s", notification_id, status)
            return SKIPPED
        # The record's own trace when the message carried none (the sweep republishes bare).
        trace = current_traceparent() or notification.traceparent
        with self.leases.holding(notification.id, token), traced(trace):
            result = self._send(notification)
            return self._record(notification, token, result)

    def _record(self, notification: Notification, token: str, result: DeliveryResult) -> str:
        """Store the outcome; a store outage is waited out (up to one lease) rather than
        dropped, since a dropped outcome means the notification is sent a second time."""
        if result.setup_problem:
            log.warning(
                "notification=%s event=provider_setup_problem type=%s error=%s",
                notification.id,
                notification.notification_type,
                result.detail,
            )
        deadline = time.monotonic() + self.settings.lease_seconds
        while True:
            try:
                return self._record_once(notification, token, result)
            except Unavailable as error:
                if time.monotonic() >= deadline:
                    log.error(
                        "notification=%s event=outcome_not_stored error=%s",
                        notification.id,
                        error.message,
                    )
                    raise
                log.warning(
                    "notification=%s event=outcome_write_retry error=%s",
                    notification.id,
                    error.message,
                )
                time.sleep(OUTCOME_RETRY_PAUSE)

    def _record_once(self, notification: Notification, token: str, result: DeliveryResult) -> str:
        if result.outcome is Outcome.SENT:
            return self._record_sent(notification, token, result)
        if (
            result.outcome is Outcome.TRANSIENT
            and notification.retry_count < notification.max_retries
        ):
            return self._schedule_retry(notification, token, result)
        return self._fail_permanently(notification, token, result)

    def _deliver_in_place(self, notification_id: str) -> bool:
        """An in-app notification is delivered by being marked sent: one atomic write.

        False when it is of another type or not waiting (sent, held by a worker, retrying):
        the normal claim then decides.
        """
        delivered = self.store.deliver_in_place(
            notification_id, self._stored_only_types, self.clock()
        )
        if delivered is not None:
            with traced(current_traceparent() or delivered.traceparent):
                self._log_delivered_in_place(delivered)
        return delivered is not None

    def _log_delivered_in_place(self, delivered: Notification) -> None:
        log.info(
            "notification=%s event=sent type=%s attempt=%d detail=stored in-app",
            delivered.id,
            delivered.notification_type,
            delivered.retry_count + 1,
        )
        self._tell(told.SENT, delivered, DeliveryResult.sent())

    def _send(self, notification: Notification) -> DeliveryResult:
        channel = self.channels[notification.notification_type]
        try:
            return channel.deliver(notification)
        except Exception as error:  # a channel bug must not lose the notification
            log.exception("notification=%s event=channel_error", notification.id)
            return DeliveryResult.transient(f"unexpected error: {error!r}")

    def _lease_lost(self, notification: Notification, outcome: str, detail: str) -> str:
        log.warning(
            "notification=%s event=lease_lost attempt=%d outcome_not_recorded=%s detail=%s",
            notification.id,
            notification.attempts,
            outcome,
            detail,
        )
        return LEASE_LOST

    def _record_sent(self, notification: Notification, token: str, result: DeliveryResult) -> str:
        recorded = self.store.record_sent(
            notification.id, token, self.clock(), result.provider_message_id
        )
        if recorded is None:
            return self._lease_lost(notification, SENT, result.detail)
        log.info(
            "notification=%s event=sent type=%s attempt=%d detail=%s",
            notification.id,
            notification.notification_type,
            notification.attempts,
            result.detail,
        )
        self._tell(told.SENT, recorded, result)
        return SENT

    def _schedule_retry(
        self, notification: Notification, token: str, result: DeliveryResult
    ) -> str:
        now = self.clock()
        retry_count = notification.retry_count + 1
        delay = retry_delay(
            retry_count,
            self.settings.retry_schedule,
            self.settings.retry_jitter,
            self._random.uniform(-1, 1),
        )
        next_time = now + delay
        recorded = self.store.schedule_retry(
            notification.id, token, now, retry_count, next_time, result.detail
        )
        if recorded is None:
            return self._lease_lost(notification, RETRY_SCHEDULED, result.detail)
        log.warning(
            "notification=%s event=retry_scheduled retry=%d/%d at=%s error=%s",
            notification.id,
            retry_count,
            notification.max_retries,
            next_time.isoformat(),
            result.detail,
        )
        self._tell(told.RETRY_SCHEDULED, recorded, result)
        return RETRY_SCHEDULED

    def _fail_permanently(
        self, notification: Notification, token: str, result: DeliveryResult
    ) -> str:
        failed = self.store.fail(notification.id, token, self.clock(), result.detail)
        if failed is None:
            return self._lease_lost(notification, FAILED_PERMANENTLY, result.detail)
        log.error(
            "notification=%s event=failed_permanently retries=%d error=%s",
            notification.id,
            notification.retry_count,
            result.detail,
        )
        if result.suppress:
            self._suppress_address(failed, result.detail)
        self._tell(told.FAILED, failed, result)
        publish_dead_letter(self.store, self.queue, failed, self.clock)
        return FAILED_PERMANENTLY

    def _tell(self, kind: str, notification: Notification, result: DeliveryResult) -> None:
        channel = self.channels.get(notification.notification_type)
        failed = result.outcome is not Outcome.SENT
        self.events.emit(
            NotificationEvent(
                kind,
                notification,
                self.clock(),
                provider=channel.provider if channel is not None else None,
                error_code=result.error_code if failed else None,
                detail=result.detail if failed else None,
            )
        )

    def _suppress_address(self, failed: Notification, detail: str) -> None:
        """The provider says this address cannot receive (or refuses us): later sends to it
        are suppressed at acceptance instead of failing at the provider again."""
        address = address_of(failed)
        if self.suppressions is None or not address:
            return
        try:
            added = self.suppressions.add(
                failed.notification_type, address, detail[:500], failed.id, self.clock()
            )
        except Exception as error:  # noqa: BLE001 - the failure is recorded; this is extra
            log.warning("notification=%s event=suppression_not_stored error=%s", failed.id, error)
            return
        if added:
            log.warning(
                "notification=%s event=address_suppressed type=%s",
                failed.id,
                failed.notification_type,
            )


def publish_dead_letter(
    store: NotificationStore,
    queue: NotificationQueue,
    failed: Notification,
    clock: Callable[[], datetime],
) -> bool:
    """Copy a failed notification to the dead-letter queue and note that it is there.

    When the broker is down the note stays unset, and the sweep publishes the copy later:
    every failed notification reaches the dead-letter queue at least once."""
    copy = {**failed.to_dict(), "dead_letter_reason": f"failed permanently: {failed.last_error}"}
    try:
        queue.publish_dead_letter(copy)
    except QueueUnavailable as error:
        log.error("notification=%s event=dead_letter_deferred error=%s", failed.id, error)
        return False
    try:
        store.mark_dead_lettered([failed.id], clock())
    except Unavailable as error:  # the copy is out; the sweep may publish a second one
        log.warning("notification=%s event=dead_letter_unmarked error=%s", failed.id, error)
    return True
