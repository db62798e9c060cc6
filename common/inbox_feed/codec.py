"""An InboxChange as a message body (JSON), and back, trusting nothing about what arrives:
anyone who may publish to the exchange can put anything on it."""

from __future__ import annotations

import json

from common.inbox_feed.base import EVERY_USER, KINDS, RESYNC, InboxChange

MAX_BODY_BYTES = 1_000_000
MAX_USER_ID_LENGTH = 512


class MalformedChange(ValueError):
    """The body is not a change this feed publishes; the reason says why."""


# Changes per message: one message per change cost a quarter of in-app delivery throughput
# (the publisher thread's frames and JSON competing for the GIL with the deliveries).
MAX_BATCH = 100


def _as_object(change: InboxChange) -> dict:
    return {
        "user_id": change.user_id,
        "kind": change.kind,
        "at_ms": change.at_ms,
        "notification": change.notification,
    }


def encode_change(change: InboxChange) -> bytes:
    return json.dumps(_as_object(change), separators=(",", ":"), default=str).encode()


def encode_changes(changes: list[InboxChange]) -> bytes:
    """Several changes as one message body: a JSON array, at most MAX_BATCH."""
    body = [_as_object(change) for change in changes[:MAX_BATCH]]
    return json.dumps(body, separators=(",", ":"), default=str).encode()


def decode_changes(body: bytes) -> list[InboxChange]:
    """A message body: one change (an object) or several (an array of at most MAX_BATCH).
    Any malformed item makes the whole message malformed."""
    data = _load(body)
    if isinstance(data, list):
        if not 0 < len(data) <= MAX_BATCH:
            raise MalformedChange(f"a batch holds 1 to {MAX_BATCH} changes")
        return [_change_of(item) for item in data]
    return [_change_of(data)]


def decode_change(body: bytes) -> InboxChange:
    return _change_of(_load(body))


def _load(body: bytes):
    if len(body) > MAX_BODY_BYTES:
        raise MalformedChange(f"body of {len(body)} bytes is too large")
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise MalformedChange(f"not JSON: {error}") from None


def _change_of(data) -> InboxChange:
    if not isinstance(data, dict):
        raise MalformedChange("not a JSON object")
    user_id, kind, at_ms = data.get("user_id"), data.get("kind"), data.get("at_ms")
    notification = data.get("notification")
    if not isinstance(user_id, str) or not 0 < len(user_id) <= MAX_USER_ID_LENGTH:
        raise MalformedChange("user_id must be a non-empty string")
    if kind not in KINDS:
        raise MalformedChange(f"kind must be one of {', '.join(KINDS)}")
    if not isinstance(at_ms, int) or isinstance(at_ms, bool) or at_ms < 0:
        raise MalformedChange("at_ms must be a whole number of milliseconds")
    if kind == RESYNC:
        notification = None
    elif not isinstance(notification, dict):
        raise MalformedChange(f"a {kind} change carries its notification as an object")
    elif user_id == EVERY_USER:
        raise MalformedChange(f"only a {RESYNC} goes to every user")
    return InboxChange(user_id=user_id, kind=kind, at_ms=at_ms, notification=notification)
