"""The in-process fan-out: the changes this process learns of, handed to the asyncio
subscriptions of the streams it holds.

A subscription belongs to the event loop it was made in; changes arrive from any thread (the
delivery, an inbox action, the RabbitMQ consumer) and reach it through
`loop.call_soon_threadsafe`, so the subscription's own state is only touched by its loop.
A slow reader never holds up a delivery or grows memory: once MAX_PENDING changes wait for it,
they are replaced by one RESYNC (the stream reads the store again, so nothing is lost).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque

from common.inbox_feed.base import EVERY_USER, RESYNC, InboxChange, StreamEnded

log = logging.getLogger("notifications.inbox_feed")

# Changes a stream may fall behind by before it is told to read the store again instead.
MAX_PENDING = 64


class HubSubscription:
    """One stream's changes, read by `next` in the loop that made it."""

    __slots__ = ("user_id", "_hub", "_loop", "_pending", "_waiter", "_ended", "_resync_pending")

    def __init__(self, hub: InboxHub, user_id: str, loop: asyncio.AbstractEventLoop):
        self.user_id = user_id
        self._hub = hub
        self._loop = loop
        self._pending: deque[InboxChange] = deque()
        self._waiter: asyncio.Future | None = None
        self._ended = False
        # A RESYNC is queued and not yet read: whatever changes meanwhile, the store read it
        # leads to will show, so later changes need not be queued (and cannot pile up).
        self._resync_pending = False

    async def next(self, timeout: float) -> InboxChange | None:
        if not self._pending and not self._ended and not self._hub.closed:
            waiter = self._waiter = self._loop.create_future()
            try:
                await asyncio.wait((waiter,), timeout=max(timeout, 0))
            finally:
                self._waiter = None
        if self._ended or self._hub.closed:
            raise StreamEnded()
        if not self._pending:
            return None
        change = self._pending.popleft()
        if change.kind == RESYNC:
            self._resync_pending = False
        return change

    def close(self) -> None:
        self._hub._forget(self)

    # -- called in the subscription's loop only (scheduled by the hub) -----------------------

    def _offer(self, change: InboxChange) -> None:
        if self._ended or self._resync_pending:
            return
        if change.kind == RESYNC:
            self._resync_pending = True
        elif len(self._pending) >= MAX_PENDING:
            log.info("user=%s event=inbox_stream_behind pending=%d", self.user_id, MAX_PENDING)
            self._pending.clear()
            change = InboxChange(self.user_id, RESYNC, change.at_ms)
            self._resync_pending = True
        self._pending.append(change)
        self._wake()

    def _end(self) -> None:
        self._ended = True
        self._pending.clear()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class EndedSubscription:
    """What a closed feed hands out: its `next` raises StreamEnded at once."""

    async def next(self, timeout: float) -> InboxChange | None:
        raise StreamEnded()

    def close(self) -> None:
        pass


def _offer_all(subscriptions: list[HubSubscription], change: InboxChange) -> None:
    for subscription in subscriptions:
        subscription._offer(change)


def _end_all(subscriptions: list[HubSubscription]) -> None:
    for subscription in subscriptions:
        subscription._end()


class InboxHub:
    """The subscriptions of this process, by user; `deliver` may be called from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_user: dict[str, set[HubSubscription]] = {}
        self.closed = False

    def subscribe(self, user_id: str) -> HubSubscription | EndedSubscription:
        """Call it in the running event loop that will await the subscription."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self.closed:
                return EndedSubscription()
            subscription = HubSubscription(self, user_id, loop)
            self._by_user.setdefault(user_id, set()).add(subscription)
        return subscription

    def count(self) -> int:
        with self._lock:
            return sum(len(subs) for subs in self._by_user.values())

    def deliver(self, change: InboxChange) -> None:
        """Hand `change` to every subscription of its user (all of them for EVERY_USER)."""
        with self._lock:
            if change.user_id == EVERY_USER:
                targets = [s for subs in self._by_user.values() for s in subs]
            else:
                targets = list(self._by_user.get(change.user_id, ()))
        for loop, subscriptions in _by_loop(targets).items():
            self._call_in(loop, subscriptions, _offer_all, subscriptions, change)

    def close(self) -> None:
        """End every subscription now (their `next` raises StreamEnded) and any made later."""
        with self._lock:
            self.closed = True
            targets = [s for subs in self._by_user.values() for s in subs]
            self._by_user.clear()
        for loop, subscriptions in _by_loop(targets).items():
            self._call_in(loop, subscriptions, _end_all, subscriptions)

    def _forget(self, subscription: HubSubscription) -> None:
        with self._lock:
            subs = self._by_user.get(subscription.user_id)
            if subs is not None:
                subs.discard(subscription)
                if not subs:
                    del self._by_user[subscription.user_id]

    def _call_in(self, loop, subscriptions: list[HubSubscription], function, *args) -> None:
        try:
            loop.call_soon_threadsafe(function, *args)
        except RuntimeError:  # that loop is closed: its streams are gone, forget them
            for subscription in subscriptions:
                self._forget(subscription)


def _by_loop(subscriptions: list[HubSubscription]) -> dict:
    grouped: dict = {}
    for subscription in subscriptions:
        grouped.setdefault(subscription._loop, []).append(subscription)
    return grouped
