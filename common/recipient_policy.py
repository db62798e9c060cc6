"""What the recipient's side decides about a notification as it is accepted: send it now, hold
it as `scheduled` (its send_at, or the end of the recipient's quiet hours), or store it as
`suppressed` (an opt-out, or an address on the suppression list).

Deciding at acceptance means the reply already says what will happen, and the sweep only has
to release what is due. Transactional notifications (TRANSACTIONAL_CATEGORIES, or a template
that says so) ignore opt-outs and quiet hours; a suppressed address stops them too, since no
message can reach it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime

from common.config import Settings
from common.model import EMAIL, PENDING, SCHEDULED, SMS, SUPPRESSED, Notification
from common.preferences.policy import decide

log = logging.getLogger("notifications")


def address_of(notification: Notification) -> str | None:
    """The provider address a suppression would be about (in-app has none)."""
    if notification.notification_type == EMAIL:
        return notification.email
    if notification.notification_type == SMS:
        return notification.phone
    return None


class RecipientPolicy:
    def __init__(
        self,
        settings: Settings,
        preferences,
        suppressions,
        clock: Callable[[], datetime],
    ):
        """`preferences`: a PreferenceStore, `suppressions`: a SuppressionStore (either None:
        nobody has preferences, no address is suppressed)."""
        self.settings = settings
        self.preferences = preferences
        self.suppressions = suppressions
        self.clock = clock

    def apply(self, notifications: Sequence[Notification]) -> None:
        """Set each one's status (pending, scheduled or suppressed), send_at and reason, in
        place. Reads each store once for the whole batch."""
        if not notifications:
            return
        now = self.clock()
        suppressed = self._suppressed_addresses(notifications)
        users = sorted({n.user_id for n in notifications})
        preferences = self.preferences.get_many(users) if self.preferences is not None else {}
        transactional = set(self.settings.transactional_categories)
        for notification in notifications:
            if notification.category in transactional:
                notification.transactional = True
            entry = suppressed.get((notification.notification_type, address_of(notification)))
            if entry is not None:
                notification.status = SUPPRESSED
                notification.status_reason = f"the address is suppressed: {entry.reason}"
                continue
            self._decide(notification, preferences.get(notification.user_id), now)

    def _decide(self, notification: Notification, preferences: dict | None, now: datetime):
        wanted = (
            notification.send_at if notification.send_at and notification.send_at > now else now
        )
        decision = decide(
            preferences,
            channel=notification.notification_type,
            category=notification.category,
            transactional=notification.transactional,
            at=wanted,
        )
        if decision.action == "suppress":
            notification.status = SUPPRESSED
            notification.status_reason = decision.reason
        elif decision.action == "hold" and decision.until is not None:
            notification.status = SCHEDULED
            notification.send_at = decision.until
            notification.status_reason = decision.reason
        elif wanted > now:
            notification.status = SCHEDULED
            notification.status_reason = "scheduled by the sender"
        else:
            notification.status = PENDING

    def _suppressed_addresses(self, notifications: Sequence[Notification]) -> dict:
        """(type, address as given) -> Suppression, for the addresses of these notifications."""
        if self.suppressions is None:
            return {}
        from common.suppressions.store import normalise_address

        found: dict = {}
        for channel in (EMAIL, SMS):
            given = {
                address_of(n)
                for n in notifications
                if n.notification_type == channel and address_of(n)
            }
            if not given:
                continue
            by_normal = self.suppressions.find(channel, sorted(given))
            for address in given:
                entry = by_normal.get(normalise_address(channel, address))
                if entry is not None:
                    found[channel, address] = entry
        return found


def log_held(notification: Notification) -> None:
    """One line per notification that will not go at once, naming why."""
    if notification.status == SCHEDULED:
        log.info(
            "notification=%s event=scheduled send_at=%s reason=%s",
            notification.id,
            notification.send_at.isoformat() if notification.send_at else None,
            notification.status_reason,
        )
    elif notification.status == SUPPRESSED:
        log.info(
            "notification=%s event=suppressed type=%s reason=%s",
            notification.id,
            notification.notification_type,
            notification.status_reason,
        )
