"""The contract every store keeps: run once on SQLite and once on MongoDB.

MongoDB runs on mongomock here (no server can be installed on these machines) and against a
real server whenever MONGO_URI is set.
"""

from __future__ import annotations

import threading
from datetime import timedelta

from common.model import (
    FAILED_PERMANENTLY,
    PENDING,
    QUEUED,
    RETRY_SCHEDULED,
    SENDING,
    SENT,
    Notification,
    utcnow,
)
from common.store.base import Cursor


def make(user="u1", kind="in_app", created_offset=0.0, **extra) -> Notification:
    created = utcnow() + timedelta(seconds=created_offset)
    return Notification(
        user_id=user,
        notification_type=kind,
        message="hello",
        created_at=created,
        updated_at=created,
        **extra,
    )


def test_add_then_get_round_trips_every_field(store):
    original = make(kind="email", email="a@b.co", subject="Hi", phone=None, last_error="x")
    store.add(original)
    assert store.get(original.id) == original
    assert store.get("no-such-id") is None


def test_listing_is_newest_first_filtered_and_paged(store):
    older = [make(created_offset=-i) for i in range(5)]
    emails = [make(kind="email", email="a@b.co", created_offset=-10 - i) for i in range(2)]
    store.add_many(older + emails)
    store.add(make(user="someone-else"))

    page = store.list_for_user("u1", limit=3)
    assert [n.id for n in page.items] == [n.id for n in older[:3]]
    second = store.list_for_user("u1", limit=3, cursor=Cursor.decode(page.next_cursor))
    third = store.list_for_user("u1", limit=3, cursor=Cursor.decode(second.next_cursor))
    seen = [n.id for n in page.items + second.items + third.items]
    assert seen == [n.id for n in older + emails] and third.next_cursor is None

    only_email = store.list_for_user("u1", notification_type="email")
    assert {n.id for n in only_email.items} == {n.id for n in emails}
    assert store.list_for_user("u1", status=SENT).items == []


def test_paging_is_stable_when_timestamps_tie(store):
    same_time = utcnow()
    tied = [
        Notification(user_id="u1", notification_type="in_app", message="m", created_at=same_time)
        for _ in range(5)
    ]
    store.add_many(tied)
    ids, cursor = [], None
    while True:
        page = store.list_for_user("u1", limit=2, cursor=cursor)
        ids += [n.id for n in page.items]
        if page.next_cursor is None:
            break
        cursor = Cursor.decode(page.next_cursor)
    assert sorted(ids) == sorted(n.id for n in tied) and len(ids) == 5


def test_update_if_changes_only_from_an_expected_status(store):
    n = make()
    store.add(n)
    assert store.update_if(n.id, [SENT], {"status": FAILED_PERMANENTLY}) is None
    updated = store.update_if(n.id, [PENDING], {"status": QUEUED, "last_error": "e"})
    assert updated.status == QUEUED and updated.last_error == "e"
    assert store.get(n.id).status == QUEUED


def test_update_if_can_be_limited_to_some_types(store):
    note, mail = make(status=QUEUED), make(kind="email", email="a@b.co", status=QUEUED)
    store.add_many([note, mail])
    for n in (note, mail):
        store.update_if(n.id, [QUEUED], {"status": SENT}, types=["in_app"])
    assert store.get(note.id).status == SENT and store.get(mail.id).status == QUEUED


def test_move_status_moves_only_those_in_the_given_status(store):
    queued, sent = make(status=QUEUED), make(status=SENT)
    store.add_many([queued, sent])
    earlier = utcnow() - timedelta(minutes=5)
    assert store.move_status([queued.id, sent.id, "missing"], QUEUED, PENDING, earlier) == 1
    back = store.get(queued.id)
    assert back.status == PENDING and back.updated_at == earlier
    assert store.get(sent.id).status == SENT
    assert store.move_status([], QUEUED, PENDING, earlier) == 0


def test_mark_queued_moves_only_pending(store):
    a, b = make(), make(status=SENT)
    store.add_many([a, b])
    assert store.mark_queued([a.id, b.id], utcnow()) == 1
    assert store.get(a.id).status == QUEUED and store.get(b.id).status == SENT


def test_claim_for_delivery_is_exclusive_until_the_lease_expires(store):
    n = make(status=QUEUED)
    store.add(n)
    now = utcnow()
    claimed = store.claim_for_delivery(n.id, now, now + timedelta(seconds=30))
    assert claimed.status == SENDING
    assert store.claim_for_delivery(n.id, now, now + timedelta(seconds=30)) is None
    later = now + timedelta(seconds=31)
    assert store.claim_for_delivery(n.id, later, later + timedelta(seconds=30)) is not None


def test_sent_and_waiting_notifications_cannot_be_claimed(store):
    sent = make(status=SENT)
    waiting = make(status=RETRY_SCHEDULED, next_retry_time=utcnow() + timedelta(hours=1))
    store.add_many([sent, waiting])
    now = utcnow()
    for n in (sent, waiting):
        assert store.claim_for_delivery(n.id, now, now + timedelta(seconds=30)) is None


def test_claim_due_takes_what_is_due_and_nothing_else(store):
    now = utcnow()
    due = make(status=RETRY_SCHEDULED, next_retry_time=now - timedelta(seconds=1))
    not_due = make(status=RETRY_SCHEDULED, next_retry_time=now + timedelta(minutes=5))
    stale_pending = make(created_offset=-120)
    fresh_pending = make()
    dead_worker = make(status=SENDING, lease_until=now - timedelta(seconds=1))
    live_worker = make(status=SENDING, lease_until=now + timedelta(seconds=60))
    queued = make(status=QUEUED, created_offset=-120)
    store.add_many([due, not_due, stale_pending, fresh_pending, dead_worker, live_worker, queued])

    claimed = store.claim_due(now, pending_before=now - timedelta(seconds=60))
    assert {n.id for n in claimed} == {due.id, stale_pending.id, dead_worker.id}
    assert all(store.get(n.id).status == QUEUED for n in claimed)
    assert store.claim_due(now, pending_before=now - timedelta(seconds=60)) == []

    after_restart = store.claim_due(now, pending_before=now, queued_before=now)
    assert queued.id in {n.id for n in after_restart}


def test_claim_due_respects_its_limit(store):
    now = utcnow()
    store.add_many(
        [make(status=RETRY_SCHEDULED, next_retry_time=now - timedelta(seconds=1)) for _ in range(7)]
    )
    first = store.claim_due(now, pending_before=now - timedelta(hours=1), limit=5)
    second = store.claim_due(now, pending_before=now - timedelta(hours=1), limit=5)
    assert len(first) == 5 and len(second) == 2


def test_concurrent_sweeps_never_claim_the_same_notification_twice(store):
    now = utcnow()
    store.add_many(
        [
            make(status=RETRY_SCHEDULED, next_retry_time=now - timedelta(seconds=1))
            for _ in range(60)
        ]
    )
    results: list[list[str]] = []

    def sweep():
        for _ in range(10):
            claimed = store.claim_due(now, pending_before=now - timedelta(hours=1), limit=7)
            results.append([n.id for n in claimed])

    threads = [threading.Thread(target=sweep) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    all_ids = [i for batch in results for i in batch]
    assert len(all_ids) == 60 and len(set(all_ids)) == 60


def test_counts_are_grouped_by_the_database(store):
    store.add_many([make(), make(status=SENT), make(status=SENT, kind="sms", phone="+14155550123")])
    assert store.count_by_status() == {PENDING: 1, SENT: 2}
    assert store.count_by_type() == {"in_app": 2, "sms": 1}


def test_adding_a_taken_id_raises_duplicate_and_changes_nothing(store):
    import pytest

    from common.errors import DuplicateId

    original = make()
    store.add(original)
    with pytest.raises(DuplicateId):
        store.add(original.with_changes(message="other"))
    assert store.get(original.id).message == "hello"
