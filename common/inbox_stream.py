"""One user's inbox as a Server-Sent Events stream: what changed while the client was away
(replayed from the store after Last-Event-ID), the counts, then each change as the inbox feed
tells it, with heartbeats, until the credential expires or STREAM_MAX_SECONDS pass.

No HTTP here (functions/http_stream.py serves it; common/inbox_stream_open.py checks who may
open it) and no thread is held while a stream waits: the feed is awaited, and the store's
blocking calls run on a small executor, each with a bound.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from common.errors import Unavailable, ValidationError
from common.inbox_feed.base import CREATED, RESYNC, UPDATED, InboxChange, StreamEnded, Subscription
from common.model import IN_APP, Notification

log = logging.getLogger("notifications.stream")

RETRY_MS = 3000  # how long a browser waits before it reconnects
# Changes published by other processes may arrive a little out of order (and clocks differ):
# a replay starts this much before the last id. Events are snapshots, so a repeat is harmless.
REPLAY_SLACK_MS = 5000
REPLAY_PAGE = 500
COUNTS_INTERVAL = 0.1  # at most one counts.updated per 100 ms per stream
MIN_WAIT = 0.01
MAX_EVENT_ID = 10**15  # epoch milliseconds until the year 33658: anything longer is not one

NOTIFICATION_EVENTS = {CREATED: "notification.created", UPDATED: "notification.updated"}
COUNTS_EVENT = "counts.updated"
HEARTBEAT = ": heartbeat\n\n"


def to_ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


def from_ms(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1000, tz=UTC)


def wall_ms() -> int:
    return round(time.time() * 1000)


def parse_last_event_id(value: str | None) -> int | None:
    """The Last-Event-ID (header or `last_event_id`): whole epoch milliseconds, or a 400."""
    if value is None or value == "":
        return None
    text = value.strip()
    if not text.isascii() or not text.isdigit() or int(text) > MAX_EVENT_ID:
        raise ValidationError(
            "invalid Last-Event-ID",
            {"last_event_id": "must be an event id this stream sent: whole epoch milliseconds"},
        )
    return int(text)


def sse_event(name: str, event_id: int, data: Any) -> str:
    """One event in the text/event-stream format (the JSON is one line: no `\\n` inside)."""
    payload = json.dumps(data, separators=(",", ":"), default=str)
    return f"id: {event_id}\nevent: {name}\ndata: {payload}\n\n"


class InboxStream:
    """One open stream: `open()` reads what it starts with (raising Unavailable, before any
    answer is sent), then `events()` yields the text of the stream until it ends."""

    def __init__(
        self,
        user_id: str,
        subscription: Subscription,
        changes: Callable[[str, datetime, int, str | None], list[Notification]],
        counts: Callable[[str], dict[str, int]],
        store_calls: Callable[..., Awaitable[Any]],
        *,
        heartbeat: float,
        lifetime: float,
        close_reason: str,
        last_event_id: int | None = None,
        clock_ms: Callable[[], int] = wall_ms,
    ) -> None:
        """`changes`: store.inbox_changes; `counts`: service.inbox_counts; `store_calls` runs
        either off the loop, bounded (common/inbox_stream_open.py StoreCalls); `lifetime`:
        seconds until it closes itself with `close_reason` (credential_expired or max_age)."""
        self.user_id = user_id
        self.subscription = subscription
        self.changes = changes
        self.counts = counts
        self.store_calls = store_calls
        self.heartbeat = heartbeat
        self.closes_at = time.monotonic() + lifetime
        self.close_reason = close_reason
        self.resume_from = last_event_id
        self.clock_ms = clock_ms
        self.last_id = last_event_id or 0
        self.sent = 0
        self.reason = "unknown"
        self._first_page: list[Notification] | None = None
        self._first_counts: dict[str, int] = {}
        self._opened_ms = 0
        self._last_output = time.monotonic()
        self._last_counts = -math.inf

    # -- open ----------------------------------------------------------------------------------

    async def open(self) -> None:
        """Read the first replay page and the counts (the feed is already subscribed, so no
        change falls between them and the live part). Unavailable closes the subscription."""
        try:
            opened_ms = self.clock_ms()
            if self.resume_from is not None:
                since = from_ms(self.resume_from - REPLAY_SLACK_MS)
                self._first_page = await self.store_calls(
                    self.changes, self.user_id, since, REPLAY_PAGE, None
                )
            else:
                self.last_id = opened_ms  # the stream starts from now
            self._first_counts = await self.store_calls(self.counts, self.user_id)
            self._opened_ms = opened_ms
        except BaseException:
            self.subscription.close()
            raise
        log.info("user=%s event=stream_opened resume=%s", self.user_id, self.resume_from)

    # -- the stream ----------------------------------------------------------------------------

    async def events(self) -> AsyncIterator[str]:
        started = time.monotonic()
        try:
            yield f"retry: {RETRY_MS}\n\n"
            if self.resume_from is not None:
                replay = self._replay(self.resume_from, self._opened_ms, self._first_page)
                async for text in replay:
                    yield self._out(text)
            yield self._out(self._counts_event(self._first_counts))
            async for text in self._live():
                yield self._out(text)
        except StreamEnded:
            self.reason = "process_stopping"
        except Unavailable as error:
            self.reason = "store_unavailable"
            log.warning("user=%s event=stream_store_unavailable error=%s", self.user_id, error)
        except (asyncio.CancelledError, GeneratorExit):
            self.reason = "client_gone"
            raise
        except Exception:
            self.reason = "error"
            log.exception("user=%s event=stream_failed", self.user_id)
        finally:
            self.subscription.close()
            log.info(
                "user=%s event=stream_closed reason=%s seconds=%.1f events=%d",
                self.user_id,
                self.reason,
                time.monotonic() - started,
                self.sent,
            )

    def _out(self, text: str) -> str:
        self._last_output = time.monotonic()
        if not text.startswith(":"):
            self.sent += 1
        return text

    async def _live(self) -> AsyncIterator[str]:
        counts_due: float | None = None
        while True:
            now = time.monotonic()
            if now >= self.closes_at:
                self.reason = self.close_reason
                return
            if counts_due is not None and now >= counts_due:
                counts_due = None
                self._last_counts = now
                yield self._counts_event(await self.store_calls(self.counts, self.user_id))
                continue
            wake = min(self.closes_at, self._last_output + self.heartbeat, counts_due or math.inf)
            change = await self.subscription.next(max(wake - now, MIN_WAIT))
            if change is None:
                if time.monotonic() >= self._last_output + self.heartbeat:
                    yield HEARTBEAT
                continue
            if change.kind == RESYNC:
                # The feed may have missed changes: read the store again from the last id.
                async for text in self._replay(self.last_id, self.clock_ms()):
                    yield text
                shown = True  # and the counts again
            else:
                text = self._change_event(change)
                shown = text is not None
                if text is not None:
                    yield text
            if shown and counts_due is None:
                # Debounced: a burst of changes is followed by one counts.updated, at most
                # one per COUNTS_INTERVAL, always after the burst's last change.
                counts_due = max(time.monotonic(), self._last_counts + COUNTS_INTERVAL)

    def _change_event(self, change: InboxChange) -> str | None:
        snapshot = change.notification
        name = NOTIFICATION_EVENTS.get(change.kind)
        if name is None or not isinstance(snapshot, dict) or not self._is_shown(snapshot):
            return None
        return self._notification_event(name, change.at_ms, snapshot)

    def _is_shown(self, snapshot: dict[str, Any]) -> bool:
        """Only this user's in-app notifications go on the stream."""
        return (
            snapshot.get("user_id") == self.user_id and snapshot.get("notification_type") == IN_APP
        )

    # -- replay from the store -----------------------------------------------------------------

    async def _replay(
        self, from_id: int, started_ms: int, first_page: list[Notification] | None = None
    ) -> AsyncIterator[str]:
        """Every change since `from_id` (less the slack), oldest first, page by page; once
        all were read, the ids may move up to `started_ms` (the feed covers what follows)."""
        since_ms = from_id - REPLAY_SLACK_MS
        # A keyset cursor (time, id): a bulk action stamps thousands with one time, and each
        # page must start after the last row sent, not at its time again.
        cursor, after_id, page = from_ms(since_ms), None, first_page
        while True:
            if page is None:
                page = await self.store_calls(
                    self.changes, self.user_id, cursor, REPLAY_PAGE, after_id
                )
            for notification in page:
                changed_at = notification.inbox_changed_at
                snapshot = notification.to_dict()
                if not self._is_shown(snapshot):
                    continue
                # New to the client only if made after the last id it saw: one inside the
                # slack was already sent to it as created (both are snapshots, kept by id).
                created = to_ms(notification.created_at) > from_id
                name = NOTIFICATION_EVENTS[CREATED if created else UPDATED]
                yield self._notification_event(name, to_ms(changed_at), snapshot)
            if len(page) < REPLAY_PAGE:
                self.last_id = max(self.last_id, started_ms)
                return
            cursor, after_id = page[-1].inbox_changed_at, page[-1].id
            page = None

    # -- events --------------------------------------------------------------------------------

    def _next_id(self, at_ms: int) -> int:
        """Ids never go down within a stream: a change published late keeps the last id."""
        self.last_id = max(self.last_id, at_ms)
        return self.last_id

    def _notification_event(self, name: str, at_ms: int, snapshot: dict[str, Any]) -> str:
        return sse_event(name, self._next_id(at_ms), {"notification": snapshot})

    def _counts_event(self, counts: dict[str, int]) -> str:
        return sse_event(COUNTS_EVENT, self.last_id, counts)
