"""The life cycle in one place: every move a notification can make, from which statuses, and
what it writes.

The stores apply these moves atomically, guarded on the current status and, for the outcomes of
a delivery, on the claim token: a worker whose claim was taken over records nothing.

    pending ──queue──> queued ──claim──> sending ──record_sent──> sent
       ^                  ^                 │──schedule_retry──> retry_scheduled ─┐
       │                  └────requeue──────┼─ (lease expired) <──────────────────┘ (due)
       └──unqueue (publish failed)          └──fail──> failed_permanently ──restart──> pending
    pending/queued ──deliver_in_place──> sent   (in-app: stored is delivered)
    scheduled ──requeue (send_at due, by the sweep)──> queued
    scheduled/pending/queued/retry_scheduled ──cancel──> cancelled   (final)
    (accepted) ──> suppressed   (final: an opt-out or a suppressed address; never sent)

A notification is stored as `scheduled` or `suppressed` from the start (common/recipient_policy.py
decides which), so neither needs a move to enter.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from common.model import (
    CANCELLED,
    FAILED_PERMANENTLY,
    PENDING,
    QUEUED,
    RETRY_SCHEDULED,
    SCHEDULED,
    SENDING,
    SENT,
)


@dataclass(frozen=True)
class Move:
    name: str
    sources: tuple[str, ...]
    target: str
    fenced: bool = False  # only the holder of the claim token may make it


QUEUE = Move("queue", (PENDING,), QUEUED)
UNQUEUE = Move("unqueue", (QUEUED,), PENDING)
# A claim also takes over a `sending` notification whose lease expired (the stores add that).
CLAIM = Move("claim", (PENDING, QUEUED), SENDING)
DELIVER_IN_PLACE = Move("deliver_in_place", (PENDING, QUEUED), SENT)
RECORD_SENT = Move("record_sent", (SENDING,), SENT, fenced=True)
SCHEDULE_RETRY = Move("schedule_retry", (SENDING,), RETRY_SCHEDULED, fenced=True)
FAIL = Move("fail", (SENDING,), FAILED_PERMANENTLY, fenced=True)
EXTEND_LEASE = Move("extend_lease", (SENDING,), SENDING, fenced=True)
# The sweep's requeue: each source only when due (see NotificationStore.claim_due); a
# scheduled notification is due at its send_at.
REQUEUE = Move("requeue", (SCHEDULED, PENDING, QUEUED, RETRY_SCHEDULED, SENDING), QUEUED)
# Anything no provider has yet: once it is sending, sent or failed, it is too late.
CANCEL = Move("cancel", (SCHEDULED, PENDING, QUEUED, RETRY_SCHEDULED), CANCELLED)
RESTART = Move("restart", (FAILED_PERMANENTLY, RETRY_SCHEDULED), PENDING)

# States a manual retry may restart: the notification has given up, or is waiting for a retry.
RETRYABLE_BY_HAND = RESTART.sources


def claimed(now: datetime, lease_until: datetime, token: str) -> dict[str, Any]:
    return {"status": SENDING, "lease_until": lease_until, "claim_token": token, "updated_at": now}


def sent(now: datetime, provider_message_id: str | None = None) -> dict[str, Any]:
    """Sent now, nothing pending, no error left, the claim released."""
    changes = {
        "status": SENT,
        "sent_at": now,
        "updated_at": now,
        "last_error": None,
        "next_retry_time": None,
        "lease_until": None,
        "claim_token": None,
    }
    if provider_message_id is not None:
        changes["provider_message_id"] = provider_message_id
    return changes


def retry_scheduled(
    now: datetime, retry_count: int, next_time: datetime, error: str
) -> dict[str, Any]:
    return {
        "status": RETRY_SCHEDULED,
        "retry_count": retry_count,
        "next_retry_time": next_time,
        "last_error": error,
        "updated_at": now,
        "lease_until": None,
        "claim_token": None,
    }


def failed(now: datetime, error: str) -> dict[str, Any]:
    """Given up; its dead-letter copy is still to be published (dead_lettered_at unset)."""
    return {
        "status": FAILED_PERMANENTLY,
        "last_error": error,
        "updated_at": now,
        "next_retry_time": None,
        "lease_until": None,
        "claim_token": None,
        "dead_lettered_at": None,
    }


def requeued(now: datetime) -> dict[str, Any]:
    return {"status": QUEUED, "updated_at": now, "lease_until": None, "claim_token": None}


def restarted(now: datetime) -> dict[str, Any]:
    """A manual retry: a fresh budget, queued again at once."""
    return {"status": PENDING, "retry_count": 0, "next_retry_time": None, "updated_at": now}


def cancelled(now: datetime, reason: str) -> dict[str, Any]:
    return {
        "status": CANCELLED,
        "status_reason": reason,
        "updated_at": now,
        "next_retry_time": None,
        "lease_until": None,
        "claim_token": None,
    }
