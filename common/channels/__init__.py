"""The delivery channels, one per notification type, chosen once from the settings.

Callers look a channel up by `notification.notification_type`; nothing else branches on types.
"""

from __future__ import annotations

from common.channels.base import Channel, DeliveryResult, Outcome
from common.channels.email import EmailChannel
from common.channels.in_app import InAppChannel
from common.channels.outbox import OutboxEmailChannel, OutboxSmsChannel
from common.channels.sms import SmsChannel
from common.config import Settings
from common.unsubscribe import UnsubscribeLinks

__all__ = [
    "Channel",
    "DeliveryResult",
    "EmailChannel",
    "InAppChannel",
    "Outcome",
    "OutboxEmailChannel",
    "OutboxSmsChannel",
    "SmsChannel",
    "make_channels",
]


def make_channels(settings: Settings) -> dict[str, Channel]:
    """Each notification type mapped to its channel: the provider when configured, else the
    local outbox. Build once per process and reuse (the SMS channel holds a client)."""
    unsubscribe = UnsubscribeLinks.from_settings(settings)  # None: emails go without the link
    email: Channel = (
        EmailChannel(settings, unsubscribe=unsubscribe)
        if settings.mail_server
        else OutboxEmailChannel(settings, unsubscribe)
    )
    sms: Channel = SmsChannel(settings) if settings.twilio_sid else OutboxSmsChannel(settings)
    return {channel.notification_type: channel for channel in (email, sms, InAppChannel())}
