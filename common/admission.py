"""Limits on where notifications may go, checked as they are accepted: the SMS country
allow-list and the per-recipient caps against SMS pumping and mail bombing.

The caps count in the limit store (common/limits), so they hold across processes; a refused
notification is never stored.
"""

from __future__ import annotations

from collections.abc import Sequence

from common.config import Settings
from common.errors import TooManyRequests, ValidationError
from common.limits.rules import RECIPIENT_WINDOW, sms_country_allowed
from common.model import EMAIL, SMS, Notification


class RecipientCapReached(TooManyRequests):
    """This address had its hour's share of notifications of this type."""


class Admission:
    def __init__(self, settings: Settings, limiter) -> None:
        self.settings = settings
        self.limiter = limiter
        self.caps = {
            SMS: settings.sms_per_recipient_per_hour,
            EMAIL: settings.email_per_recipient_per_hour,
        }

    def check_destination(self, notification: Notification) -> None:
        """ValidationError (400) for an SMS to a country SMS_ALLOWED_COUNTRIES leaves out."""
        allowed = self.settings.sms_allowed_countries
        if notification.notification_type != SMS or not allowed:
            return
        if not sms_country_allowed(notification.phone or "", allowed):
            codes = ", ".join(f"+{code}" for code in allowed)
            raise ValidationError(
                "SMS to this country is not allowed",
                {"phone": f"SMS may only go to numbers with calling code {codes}"},
            )

    def take(self, notifications: Sequence[Notification]) -> list[RecipientCapReached | None]:
        """Count one send to each recipient: per notification, None if within its cap, else
        the refusal (each refused notification is counted nothing)."""
        items = [(n.notification_type, _address(n)) for n in notifications]
        allowed = self.limiter.take_recipients(items, self.caps)
        return [
            None if ok else self._refusal(n) for n, ok in zip(notifications, allowed, strict=True)
        ]

    def _refusal(self, notification: Notification) -> RecipientCapReached:
        kind = notification.notification_type
        cap = self.caps[kind]
        what = "SMS" if kind == SMS else "emails"
        return RecipientCapReached(
            f"this recipient had {cap} {what} in the last hour, the most it may get "
            f"({kind.upper()}_PER_RECIPIENT_PER_HOUR); nothing was stored",
            RECIPIENT_WINDOW / cap,
        )


def _address(notification: Notification) -> str:
    if notification.notification_type == SMS:
        return notification.phone or ""
    if notification.notification_type == EMAIL:
        return notification.email or ""
    return ""
