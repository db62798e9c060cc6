"""The inbox feed's port: what changed in a user's inbox, told to the open streams.

A change is published by whoever made it (the delivery, an inbox action), from any thread, and
reaches every stream subscribed to that user in every process: through a RabbitMQ fanout
exchange (common/inbox_feed/rabbitmq.py) or, on the embedded defaults, in this process only.

A change is a hint with a snapshot, not the record: a stream that may have missed changes
(a slow reader, a broker reconnect, a bulk action) gets a RESYNC and reads the store again
from its last event id (common/inbox_stream.py), so nothing is ever lost to the feed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

CREATED = "created"  # first shown in the inbox (an in-app notification delivered)
UPDATED = "updated"  # its status or an inbox state (seen, read, archived) changed
RESYNC = "resync"  # several may have changed: read the store again (no snapshot)
KINDS = (CREATED, UPDATED, RESYNC)
EVERY_USER = "*"  # a RESYNC for every stream (the feed may have missed changes)


@dataclass(frozen=True)
class InboxChange:
    user_id: str  # or EVERY_USER, for a RESYNC only
    kind: str  # CREATED, UPDATED or RESYNC
    at_ms: int  # when it changed (Notification.inbox_changed_at), in epoch milliseconds
    notification: dict[str, Any] | None = None  # Notification.to_dict(); None for a RESYNC


class StreamEnded(Exception):
    """The subscription is over: the process is stopping (the stream ends and the client
    reconnects elsewhere with Last-Event-ID)."""


class Subscription(Protocol):
    """One stream's changes, read by one reader in the event loop that subscribed.

    A RESYNC may carry EVERY_USER as its user_id. While a RESYNC waits unread, later changes
    are not queued behind it: the store read it leads to shows them."""

    async def next(self, timeout: float) -> InboxChange | None:
        """The next change for this user, or None after `timeout` seconds without one (the
        stream then sends its heartbeat). Raises StreamEnded once the feed is closed."""

    def close(self) -> None:
        """Stop receiving (idempotent); called when the stream ends for any reason."""


class InboxFeed(Protocol):
    def publish(self, change: InboxChange) -> None:
        """Tell every subscribed stream, in every process. Any thread; never raises, and
        never waits longer than PUBLISH_TIMEOUT (a lost publish is logged)."""

    def subscribe(self, user_id: str) -> Subscription:
        """Called in the event loop that will await the subscription's `next`."""

    def close(self) -> None:
        """End every subscription (StreamEnded) and release the connections; idempotent."""
