"""Recovering from whatever a fault left behind: the sweep, dead-letter copies, manual retry.

The store is the source of truth and the queue only carries ids, so the sweep can always find
what needs a message again: due retries, pending notifications never published, queued ones
whose message may be gone (a purged queue, a crash between publish and confirm), and claims
whose worker died. A duplicate message is harmless (delivery is idempotent), so the sweep errs
on the side of publishing again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from common.config import Settings
from common.delivery import publish_dead_letter
from common.errors import Conflict, NotFound
from common.lifecycle import RETRYABLE_BY_HAND
from common.model import SENT, Notification
from common.queue.base import NotificationQueue, QueueUnavailable
from common.store.base import NotificationStore

log = logging.getLogger("notifications")

# The sweep runs in the background, with nobody waiting on a reply: it may give the broker
# longer than a request's PUBLISH_TIMEOUT to confirm a whole batch.
SWEEP_PUBLISH_TIMEOUT = 5.0


@dataclass
class SweepReport:
    requeued: int = 0
    publish_failed: int = 0
    dead_letters: int = 0
    webhooks: int = 0  # webhook attempts made


class Recovery:
    def __init__(
        self,
        settings: Settings,
        store: NotificationStore,
        queue: NotificationQueue,
        clock: Callable[[], datetime],
        webhooks=None,
    ):
        """`webhooks`: outbound webhook deliveries, whose due attempts the sweep makes too."""
        self.settings = settings
        self.webhooks = webhooks
        self.store = store
        self.queue = queue
        self.clock = clock

    def sweep(self, queued_before: datetime | None = None) -> SweepReport:
        """Requeue everything due, in batches of SWEEP_BATCH_SIZE, until nothing due is left.

        `now` is fixed at the start: what a round requeues is no longer due in the next, so the
        sweep ends even while new work keeps arriving. `queued_before` widens the stale-queued
        cut-off (the in-process queue after a restart has lost every message)."""
        report = SweepReport()
        now = self.clock()
        cutoff = now - timedelta(seconds=self.settings.stale_queued_seconds)
        if queued_before is not None:
            # Strictly before `now`: what this sweep requeues (dated `now`) is not taken again.
            cutoff = max(cutoff, min(queued_before, now - timedelta(milliseconds=1)))
        batch = self.settings.sweep_batch_size
        while True:
            claimed = self.store.claim_due(
                now,
                pending_before=now - timedelta(seconds=self.settings.pending_grace_seconds),
                queued_before=cutoff,
                limit=batch,
            )
            if not claimed:
                break
            if not self._publish(claimed, now, report):
                break
            if len(claimed) < batch:
                break
        self._publish_dead_letters(report)
        self._dispatch_webhooks(report)
        if report.requeued or report.publish_failed or report.dead_letters:
            log.info(
                "event=sweep requeued=%d publish_failed=%d dead_letters=%d",
                report.requeued,
                report.publish_failed,
                report.dead_letters,
            )
        return report

    def _publish(self, claimed: list[Notification], now: datetime, report: SweepReport) -> bool:
        ids = [n.id for n in claimed]
        try:
            timeout = max(self.settings.publish_timeout, SWEEP_PUBLISH_TIMEOUT)
            self.queue.publish(ids, timeout=timeout, background=True)
        except QueueUnavailable as error:
            # Back to pending, dated so that the next sweep takes them again at once.
            stale = now - timedelta(seconds=self.settings.pending_grace_seconds + 1)
            self.store.unqueue(ids, stale)
            report.publish_failed += len(ids)
            log.warning("event=sweep_publish_failed count=%d error=%s", len(ids), error)
            return False
        report.requeued += len(ids)
        for notification in claimed:
            log.info(
                "notification=%s event=requeued retry=%d/%d",
                notification.id,
                notification.retry_count,
                notification.max_retries,
            )
        return True

    def _dispatch_webhooks(self, report: SweepReport) -> None:
        """Webhook attempts that are due (retries, and first tries no process made at once)."""
        if self.webhooks is None:
            return
        try:
            report.webhooks = self.webhooks.dispatch_due()
        except Exception as error:  # noqa: BLE001 - the notifications' sweep is done already
            log.warning("event=webhook_dispatch_failed error=%s", error)

    def _publish_dead_letters(self, report: SweepReport) -> None:
        """Dead-letter copies that could not be published when their notification gave up."""
        for failed in self.store.dead_letters_due(limit=self.settings.sweep_batch_size):
            if not publish_dead_letter(self.store, self.queue, failed, self.clock):
                return  # the broker is still down: the next sweep tries again
            report.dead_letters += 1

    def retry(self, notification_id: str) -> Notification:
        """Manual retry: a failed (or waiting) notification goes back to pending, fresh budget.

        The caller queues it (Intake.enqueue)."""
        current = self.store.get(notification_id)
        if current is None:
            raise NotFound(f"notification {notification_id} not found")
        if current.status == SENT:
            raise Conflict(f"notification {notification_id} was already sent")
        if current.status not in RETRYABLE_BY_HAND:
            raise Conflict(f"notification {notification_id} is {current.status}: already in flight")
        restarted = self.store.restart(notification_id, self.clock())
        if restarted is None:
            raise Conflict(f"notification {notification_id} changed state; try again")
        log.info("notification=%s event=manual_retry previous=%s", notification_id, current.status)
        return restarted
