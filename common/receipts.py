"""Delivery receipts: what a provider reports after accepting a message (Twilio's status
callbacks), recorded on the notification without ever moving its delivery_status backwards."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime

from twilio.request_validator import RequestValidator

from common.channels.sms import SUPPRESSING_ERROR_CODES
from common.config import Settings
from common.model import SMS, Notification
from common.notification_events import DELIVERED, FAILED, EventBus, NotificationEvent
from common.store.base import NotificationStore
from common.suppressions.store import SuppressionStore

log = logging.getLogger("notifications")

QUEUED = "queued"
SENT = "sent"
DELIVERED_STATUS = "delivered"
UNDELIVERED = "undelivered"
FAILED_STATUS = "failed"
DELIVERY_STATUSES = (QUEUED, SENT, DELIVERED_STATUS, UNDELIVERED, FAILED_STATUS)
# How far along each status is: a callback may only raise it. The last three are final.
RANK = {None: 0, QUEUED: 1, SENT: 2, DELIVERED_STATUS: 3, UNDELIVERED: 3, FAILED_STATUS: 3}
FINAL_RANK = 3

# Twilio's MessageStatus values (https://www.twilio.com/docs/messaging/api/message-resource).
TWILIO_STATUSES = {
    "accepted": QUEUED,
    "scheduled": QUEUED,
    "queued": QUEUED,
    "sending": QUEUED,
    "sent": SENT,
    "delivered": DELIVERED_STATUS,
    "read": DELIVERED_STATUS,
    "undelivered": UNDELIVERED,
    "failed": FAILED_STATUS,
    "canceled": FAILED_STATUS,
}
# A few tries are plenty: each retry means another callback for the same message won the race.
MAX_ATTEMPTS = 5


def twilio_status(message_status: str) -> str | None:
    """Our delivery_status for Twilio's MessageStatus; None for a value Twilio never sends."""
    return TWILIO_STATUSES.get(message_status.strip().lower())


def lower_than(status: str) -> list[str | None]:
    """The statuses (None: never reported) that `status` may replace."""
    return [known for known, rank in RANK.items() if rank < RANK[status]]


def twilio_signature_ok(
    settings: Settings, path_and_query: str, form: Mapping[str, str], signature: str | None
) -> bool:
    """True when X-Twilio-Signature signs this request for our configured public URL. The URL
    is never taken from the request's Host: a proxy rewrites it, and an attacker chooses it."""
    if not signature or not settings.twilio_auth_token:
        return False
    url = settings.public_url + path_and_query
    return RequestValidator(settings.twilio_auth_token).validate(url, dict(form), signature)


class Receipts:
    def __init__(
        self,
        store: NotificationStore,
        suppressions: SuppressionStore | None,
        events: EventBus,
        clock: Callable[[], datetime],
    ):
        self.store = store
        self.suppressions = suppressions
        self.events = events
        self.clock = clock

    def record_twilio(self, form: Mapping[str, str]) -> Notification | None:
        """Record one status callback: the notification as updated, or None when the
        MessageSid is unknown, the status is not one Twilio sends, or it came too late."""
        sid = form.get("MessageSid") or form.get("SmsSid") or ""
        status = twilio_status(form.get("MessageStatus") or form.get("SmsStatus") or "")
        error_code = form.get("ErrorCode") or None
        notification = self.store.find_by_provider_id(sid) if sid else None
        if notification is not None and notification.notification_type != SMS:
            notification = None  # an email's Message-ID is no Twilio SID
        if notification is None or status is None:
            log.warning(
                "event=receipt_ignored provider=twilio sid=%s status=%r known=%s",
                sid[:64],
                (form.get("MessageStatus") or "")[:32],
                notification is not None,
            )
            return None
        updated = self._advance(notification, status, error_code)
        if updated is None:  # out of order: a later (or final) status is recorded already
            log.info("notification=%s event=receipt_stale status=%s", notification.id, status)
            return None
        log.info(
            "notification=%s event=receipt provider=twilio delivery_status=%s error_code=%s",
            updated.id,
            status,
            error_code,
        )
        self._after(updated, status, error_code)
        return updated

    def _advance(
        self, notification: Notification, status: str, error_code: str | None
    ) -> Notification | None:
        """Compare-and-set until it holds, or the current status is final or not lower."""
        current: Notification | None = notification
        for _ in range(MAX_ATTEMPTS):
            if current is None or RANK.get(current.delivery_status, FINAL_RANK) >= RANK[status]:
                return None
            updated = self.store.record_delivery_status(
                current.id, status, error_code, self.clock(), lower_than(status)
            )
            if updated is not None:
                return updated
            current = self.store.get(notification.id)
        return None

    def _after(self, notification: Notification, status: str, error_code: str | None) -> None:
        at = notification.delivery_status_at or self.clock()
        if status == DELIVERED_STATUS:
            self.events.emit(NotificationEvent(DELIVERED, notification, at, provider="twilio"))
        elif status in (UNDELIVERED, FAILED_STATUS):
            detail = f"Twilio reported {status}" + (f" (error {error_code})" if error_code else "")
            self.events.emit(
                NotificationEvent(
                    FAILED, notification, at, "twilio", error_code=error_code, detail=detail
                )
            )
            if _suppressing(error_code):
                self._suppress(notification, detail)

    def _suppress(self, notification: Notification, detail: str) -> None:
        """Twilio says the number is bad or refuses us: later sends to it are suppressed."""
        if self.suppressions is None or not notification.phone:
            return
        try:
            added = self.suppressions.add(
                notification.notification_type,
                notification.phone,
                detail,
                notification.id,
                self.clock(),
            )
        except Exception as error:  # noqa: BLE001 - the receipt is recorded; this is extra
            log.warning(
                "notification=%s event=suppression_not_stored error=%s", notification.id, error
            )
            return
        if added:
            log.warning("notification=%s event=address_suppressed type=sms", notification.id)


def _suppressing(error_code: str | None) -> bool:
    try:
        return error_code is not None and int(error_code) in SUPPRESSING_ERROR_CODES
    except ValueError:
        return False
