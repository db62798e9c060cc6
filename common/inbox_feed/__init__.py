"""The inbox feed: changes to a user's inbox, told to every stream subscribed to that user
(the port in base.py; in-process through local.py, across processes through rabbitmq.py)."""

from __future__ import annotations

from common.config import Settings
from common.inbox_feed.base import (
    CREATED,
    EVERY_USER,
    KINDS,
    RESYNC,
    UPDATED,
    InboxChange,
    InboxFeed,
    StreamEnded,
    Subscription,
)
from common.inbox_feed.changes import change_of, publish_quietly, publish_snapshot, resync_of
from common.inbox_feed.hub import InboxHub
from common.inbox_feed.listener import InboxFeedListener
from common.inbox_feed.local import NO_INBOX_FEED, LocalInboxFeed, NoInboxFeed


def make_inbox_feed(settings: Settings) -> InboxFeed:
    """Through RabbitMQ when RABBITMQ_URL is set, else within this process."""
    if settings.rabbitmq_url:
        from common.inbox_feed.rabbitmq import RabbitInboxFeed

        return RabbitInboxFeed(settings.rabbitmq_url, settings.inbox_exchange)
    return LocalInboxFeed()


__all__ = [
    "CREATED",
    "EVERY_USER",
    "KINDS",
    "NO_INBOX_FEED",
    "RESYNC",
    "UPDATED",
    "InboxChange",
    "InboxFeed",
    "InboxFeedListener",
    "InboxHub",
    "LocalInboxFeed",
    "NoInboxFeed",
    "StreamEnded",
    "Subscription",
    "change_of",
    "make_inbox_feed",
    "publish_quietly",
    "publish_snapshot",
    "resync_of",
]
