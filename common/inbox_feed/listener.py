"""The EventBus listener that tells the inbox feed of in-app notifications' changes: CREATED
when one is sent (it appears in the inbox), UPDATED for every later event (delivered, failed,
...). Other channels are not in the inbox; ACCEPTED is not shown until it is sent."""

from __future__ import annotations

from collections.abc import Sequence

from common.inbox_feed.base import CREATED, UPDATED, InboxFeed
from common.inbox_feed.changes import publish_snapshot
from common.model import IN_APP
from common.notification_events import ACCEPTED, SENT, NotificationEvent


class InboxFeedListener:
    def __init__(self, feed: InboxFeed):
        self.feed = feed

    def notify(self, events: Sequence[NotificationEvent]) -> None:
        for event in events:
            notification = event.notification
            if notification.notification_type != IN_APP or event.type == ACCEPTED:
                continue
            kind = CREATED if event.type == SENT else UPDATED
            publish_snapshot(self.feed, notification, kind)
