"""Building the changes to publish, and publishing them so that the caller's action never fails
because of the feed (the feed is a hint: a lost change is logged, the store stays the truth)."""

from __future__ import annotations

import logging
from datetime import datetime

from common.inbox_feed.base import RESYNC, InboxChange, InboxFeed
from common.model import Notification

log = logging.getLogger("notifications.inbox_feed")


def epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def change_of(notification: Notification, kind: str) -> InboxChange:
    """A CREATED or UPDATED change carrying the notification as the API shows it."""
    return InboxChange(
        user_id=notification.user_id,
        kind=kind,
        at_ms=epoch_ms(notification.inbox_changed_at),
        notification=notification.to_dict(),
    )


def resync_of(user_id: str, at: datetime) -> InboxChange:
    return InboxChange(user_id=user_id, kind=RESYNC, at_ms=epoch_ms(at))


def publish_quietly(feed: InboxFeed, change: InboxChange) -> None:
    """Publish, logging (never raising) whatever goes wrong."""
    try:
        feed.publish(change)
    except Exception:  # noqa: BLE001 - the action that changed the inbox has succeeded
        log.exception(
            "user=%s event=inbox_feed_publish_failed kind=%s", change.user_id, change.kind
        )


def publish_snapshot(feed: InboxFeed, notification: Notification, kind: str) -> None:
    """Publish `notification` as a `kind` change, logging (never raising) whatever goes wrong,
    the snapshot included."""
    try:
        change = change_of(notification, kind)
    except Exception:  # noqa: BLE001 - the action that changed the inbox has succeeded
        log.exception(
            "notification=%s user=%s event=inbox_feed_publish_failed kind=%s",
            notification.id,
            notification.user_id,
            kind,
        )
        return
    publish_quietly(feed, change)
