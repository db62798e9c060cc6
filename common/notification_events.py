"""What happened to a notification, told to whoever listens: outbound webhooks, the metrics,
the dashboard's activity chart.

Listeners never hold up or break a delivery: each is called in turn, and whatever one raises
is logged and dropped. A listener that does I/O (webhooks) only records what it must do and
leaves the sending to its own dispatcher.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from common.model import Notification

log = logging.getLogger("notifications")

ACCEPTED = "notification.accepted"  # stored by the intake (metrics and activity only)
SENT = "notification.sent"  # the provider accepted it
DELIVERED = "notification.delivered"  # the provider reported it reached the recipient
FAILED = "notification.failed"  # given up, or the provider reported it undelivered
RETRY_SCHEDULED = "notification.retry_scheduled"
SUPPRESSED = "notification.suppressed"
SUPPRESSED_EVENT = SUPPRESSED  # for modules that also import the status of that name
# The events an outbound webhook may subscribe to.
WEBHOOK_EVENTS = (SENT, DELIVERED, FAILED, RETRY_SCHEDULED, SUPPRESSED)


@dataclass(frozen=True)
class NotificationEvent:
    type: str
    notification: Notification  # as stored after the change
    at: datetime
    provider: str | None = None  # "smtp", "twilio", "outbox", "in_app": who handled it
    error_code: str | None = None  # the provider's code for a failure (SMTP reply, Twilio code)
    detail: str | None = None  # the provider's words for a failure


class Listener(Protocol):
    def notify(self, events: Sequence[NotificationEvent]) -> None: ...


class EventBus:
    def __init__(self, listeners: Iterable[Listener] = ()):
        self.listeners: list[Listener] = list(listeners)

    def add(self, listener: Listener) -> None:
        self.listeners.append(listener)

    def emit(self, *events: NotificationEvent) -> None:
        if not events or not self.listeners:
            return
        for listener in self.listeners:
            try:
                listener.notify(events)
            except Exception:  # noqa: BLE001 - a listener's fault must not touch a delivery
                log.exception(
                    "notification=%s event=listener_failed listener=%s type=%s",
                    events[0].notification.id,
                    type(listener).__name__,
                    events[0].type,
                )


NO_EVENTS = EventBus()
