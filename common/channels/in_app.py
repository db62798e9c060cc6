"""In-app notifications: the store already holds them for the user's inbox, so delivering one
only marks it sent."""

from __future__ import annotations

from common.channels.base import Channel, DeliveryResult
from common.model import IN_APP, Notification


class InAppChannel(Channel):
    notification_type = IN_APP
    stored_only = True
    provider = "in_app"
    description = "in_app stored for the user's inbox (GET /users/<user_id>/notifications)"

    def deliver(self, notification: Notification) -> DeliveryResult:
        return DeliveryResult.sent("stored in-app")
