"""The embedded inbox feed (no RABBITMQ_URL): changes reach the streams of this process only,
as everything else runs in this one process too. Also the no-op feed a service gets when
nobody streams its inbox."""

from __future__ import annotations

import logging

from common.inbox_feed.base import InboxChange, Subscription
from common.inbox_feed.hub import EndedSubscription, InboxHub

log = logging.getLogger("notifications.inbox_feed")


class LocalInboxFeed:
    """publish hands the change straight to this process's hub: it never waits."""

    def __init__(self, hub: InboxHub | None = None):
        self.hub = hub or InboxHub()

    def publish(self, change: InboxChange) -> None:
        try:
            self.hub.deliver(change)
        except Exception:  # noqa: BLE001 - never fail the caller (the delivery path)
            log.exception("user=%s event=inbox_feed_dropped kind=%s", change.user_id, change.kind)

    def subscribe(self, user_id: str) -> Subscription:
        return self.hub.subscribe(user_id)

    def close(self) -> None:
        self.hub.close()


class NoInboxFeed:
    """Tells nobody: for a service whose inbox nobody streams (and the tests' default)."""

    def publish(self, change: InboxChange) -> None:
        pass

    def subscribe(self, user_id: str) -> Subscription:
        return EndedSubscription()

    def close(self) -> None:
        pass


NO_INBOX_FEED = NoInboxFeed()
