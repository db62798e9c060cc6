"""Put a stored notification into a given state through the store's own moves (claim, then an
outcome), as a worker would have: tests never patch columns behind the life cycle's back."""

from __future__ import annotations

from datetime import timedelta

from common.model import Notification, utcnow
from common.store.base import NotificationStore


def _claimed(store: NotificationStore, notification_id: str) -> str:
    token = "test-worker"
    now = utcnow()
    if store.claim(notification_id, now, now + timedelta(seconds=60), token) is None:
        raise AssertionError(f"notification {notification_id} could not be claimed")
    return token


def make_failed(
    store: NotificationStore,
    notification_id: str,
    error: str = "550 no such user",
    retries: int = 0,
) -> Notification:
    """Failed for good, after `retries` transient failures (each retried by a sweep)."""
    for retry in range(1, retries + 1):
        make_retry_scheduled(store, notification_id, timedelta(seconds=-1), error, retry)
        store.claim_due(utcnow(), pending_before=utcnow() - timedelta(days=1))
    failed = store.fail(notification_id, _claimed(store, notification_id), utcnow(), error)
    store.mark_dead_lettered([notification_id], utcnow())  # its copy reached the DLQ
    return store.get(failed.id)


def make_retry_scheduled(
    store: NotificationStore,
    notification_id: str,
    due_in: timedelta = timedelta(days=1),
    error: str = "451 try later",
    retry_count: int = 1,
) -> Notification:
    token = _claimed(store, notification_id)
    now = utcnow()
    return store.schedule_retry(notification_id, token, now, retry_count, now + due_in, error)


def make_sent(store: NotificationStore, notification_id: str) -> Notification:
    return store.record_sent(notification_id, _claimed(store, notification_id), utcnow())
