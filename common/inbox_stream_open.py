"""Opening a user's inbox stream: who may (the API's own credential checks on the
Authorization header, or a stream ticket), until when, and with what it starts; and minting
the tickets a browser's EventSource opens it with (it cannot send a header).

No HTTP here: functions/http_stream.py and the ticket route in functions/http_inbox.py turn
these answers and their ServiceErrors into replies.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

from common.auth import stream_tickets
from common.auth.access import Access, bearer_token
from common.auth.api_keys import iso_time
from common.auth.errors import InvalidCredential
from common.auth.principal import API_KEY, READ, Principal
from common.auth.rules import needs
from common.errors import Forbidden, Unauthorized, Unavailable
from common.inbox_feed.base import InboxFeed
from common.inbox_stream import InboxStream
from common.service import NotificationService

log = logging.getLogger("notifications.stream")

# Who may read a user's stream: as GET /users/<id>/notifications/counts.
STREAM_ACCESS = needs(READ, own_user=True)
STORE_WORKERS = 8
CREDENTIAL_EXPIRED = "credential_expired"
MAX_AGE = "max_age"


@dataclass(frozen=True)
class StreamGrant:
    user_id: str
    ends_at: float | None  # epoch seconds: when the credential expires; None: it does not


class StoreCalls:
    """Runs the store's blocking calls off the event loop, each bounded by `timeout`: one that
    does not answer in time is an Unavailable (a 503 at open, the end of a live stream)."""

    def __init__(self, timeout: float, executor: ThreadPoolExecutor | None = None):
        self.timeout = timeout
        self.executor = executor or shared_executor()

    async def __call__(self, function: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(
                loop.run_in_executor(self.executor, function, *args), self.timeout
            )
        except TimeoutError:
            raise Unavailable(f"the store did not answer within {self.timeout:g} s") from None


_executor: ThreadPoolExecutor | None = None


def shared_executor() -> ThreadPoolExecutor:
    """One small pool per process for every stream's blocking calls: a thousand idle streams
    hold none of its threads, and a burst of opens queues here, not in the default pool."""
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(STORE_WORKERS, thread_name_prefix="inbox-stream")
    return _executor


# -- who may open it -------------------------------------------------------------------------


def grant_stream(
    access: Access, user_id: str, authorization: str | None, ticket: str | None, client: str
) -> StreamGrant:
    """Check the credential (blocking: the key store): the grant, or Unauthorized, Forbidden
    or TooManyRequests. The Authorization header wins over a ticket when both are sent."""
    if authorization is None and not ticket:
        raise Unauthorized(
            "this stream needs a credential: 'Authorization: Bearer <key or user token>', or "
            "?ticket= from POST /users/<user_id>/notifications/stream-ticket"
        )
    if authorization is None:
        return _ticket_grant(access, user_id, ticket or "", client)
    principal = access.authenticate(authorization, None, client)
    STREAM_ACCESS.check(principal, {"user_id": user_id})
    return StreamGrant(user_id, credential_ends(access, principal, bearer_token(authorization)))


def _ticket_grant(access: Access, user_id: str, ticket: str, client: str) -> StreamGrant:
    try:
        ticket_user, ends_at = stream_tickets.verify(ticket, access.token_secret)
    except InvalidCredential as error:
        log.warning("event=credential_refused client=%s reason=%s", client, error.reason)
        raise Unauthorized(error.reason) from None
    if ticket_user != user_id:
        raise Forbidden("the stream ticket is for another user's stream")
    if ends_at <= time.time():
        raise Unauthorized("the credential the ticket was minted with has expired")
    return StreamGrant(user_id, ends_at)


def credential_ends(access: Access, principal: Principal, token: str | None) -> float | None:
    """When the (already accepted) credential expires, in epoch seconds; None: never."""
    if principal.kind == API_KEY:
        key = access.keys.get(principal.id)
        return key.expires_at.timestamp() if key and key.expires_at else None
    return stream_tickets.jwt_expiry(token) if token else None


def mint_ticket(
    access: Access, principal: Principal, authorization: str | None, user_id: str, now: datetime
) -> dict[str, Any]:
    """The ticket route's answer, for a caller already allowed to read `user_id`'s stream: a
    stream it opens closes when the caller's own credential expires."""
    if access.token_secret is None:
        raise Unavailable(
            "stream tickets need AUTH_SECRET: set it (the same on every instance) to mint them"
        )
    token = bearer_token(authorization) if authorization else None
    ends_at = credential_ends(access, principal, token)
    if ends_at is None:  # no expiry: as long as a stream opened with it may last
        ends_at = now.timestamp() + stream_tickets.LIFETIME.total_seconds()
        ends_at += access.settings.stream_max_seconds
    ends = datetime.fromtimestamp(ends_at, tz=now.tzinfo)
    ticket, expires_at = stream_tickets.mint(user_id, access.token_secret, now, ends)
    log.info("user=%s event=stream_ticket_minted credential=%s", user_id, principal.id)
    return {
        "ticket": ticket,
        "user_id": user_id,
        "expires_at": iso_time(expires_at),
        "stream_url": f"/users/{quote(user_id, safe='')}/notifications/stream?ticket={ticket}",
    }


# -- opening it ------------------------------------------------------------------------------


async def open_stream(
    access: Access,
    service: NotificationService,
    feed: InboxFeed,
    grant: StreamGrant,
    last_event_id: int | None,
) -> InboxStream:
    """Subscribe, then read what the stream starts with: Unavailable (a 503) when the store
    cannot answer, before anything was sent."""
    settings = access.settings
    lifetime, reason = settings.stream_max_seconds, MAX_AGE
    if grant.ends_at is not None and grant.ends_at - time.time() < lifetime:
        lifetime, reason = max(0.0, grant.ends_at - time.time()), CREDENTIAL_EXPIRED
    # Subscribed before the store is read, so no change falls between the two.
    subscription = feed.subscribe(grant.user_id)
    stream = InboxStream(
        grant.user_id,
        subscription,
        service.store.inbox_changes,
        service.inbox_counts,
        StoreCalls(settings.store_timeout * 2 + 1),
        heartbeat=settings.stream_heartbeat_seconds,
        lifetime=lifetime,
        close_reason=reason,
        last_event_id=last_event_id,
    )
    await stream.open()
    return stream
