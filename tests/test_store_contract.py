"""The contract every store keeps: run once on SQLite and once on MongoDB.

MongoDB runs on mongomock here (no server can be installed on these machines) and against a
real server whenever MONGO_URI is set.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from common.model import (
    CANCELLED,
    FAILED_PERMANENTLY,
    PENDING,
    QUEUED,
    RETRY_SCHEDULED,
    SCHEDULED,
    SENDING,
    SENT,
    SUPPRESSED,
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


def claim(store, notification_id, now=None, seconds=30, token="t1"):
    now = now or utcnow()
    return store.claim(notification_id, now, now + timedelta(seconds=seconds), token)


def test_claim_stamps_a_token_counts_the_attempt_and_is_exclusive_until_the_lease_expires(store):
    n = make(status=QUEUED)
    store.add(n)
    now = utcnow()
    claimed = claim(store, n.id, now, token="first")
    assert claimed.status == SENDING and claimed.claim_token == "first" and claimed.attempts == 1
    assert claim(store, n.id, now, token="second") is None
    later = now + timedelta(seconds=31)
    taken_over = claim(store, n.id, later, token="second")
    assert taken_over.claim_token == "second" and taken_over.attempts == 2


def test_sent_and_waiting_notifications_cannot_be_claimed(store):
    sent = make(status=SENT)
    waiting = make(status=RETRY_SCHEDULED, next_retry_time=utcnow() + timedelta(hours=1))
    store.add_many([sent, waiting])
    for n in (sent, waiting):
        assert claim(store, n.id) is None


def test_outcomes_are_recorded_only_under_the_current_claim(store):
    n = make(status=QUEUED)
    store.add(n)
    now = utcnow()
    claim(store, n.id, now, token="old")
    claim(store, n.id, now + timedelta(seconds=31), token="new")  # the old lease expired
    # The worker that lost its claim records nothing, whatever its outcome.
    assert store.record_sent(n.id, "old", now) is None
    assert store.schedule_retry(n.id, "old", now, 1, now, "e") is None
    assert store.fail(n.id, "old", now, "e") is None
    assert store.extend_lease(n.id, "old", now + timedelta(hours=1)) is False
    assert store.get(n.id).status == SENDING
    assert store.extend_lease(n.id, "new", now + timedelta(hours=1)) is True
    sent = store.record_sent(n.id, "new", now)
    assert sent.status == SENT and sent.claim_token is None and sent.sent_at == now


def test_retry_and_failure_release_the_claim(store):
    retrying, failing = make(status=QUEUED), make(status=QUEUED)
    store.add_many([retrying, failing])
    now = utcnow()
    claim(store, retrying.id, now, token="a")
    claim(store, failing.id, now, token="b")
    later = now + timedelta(seconds=30)
    waiting = store.schedule_retry(retrying.id, "a", now, 1, later, "451 try later")
    assert (waiting.status, waiting.retry_count, waiting.next_retry_time) == (
        RETRY_SCHEDULED,
        1,
        later,
    )
    assert waiting.claim_token is None and waiting.last_error == "451 try later"
    failed = store.fail(failing.id, "b", now, "550 no such user")
    assert failed.status == FAILED_PERMANENTLY and failed.dead_lettered_at is None


def test_dead_letters_due_until_marked(store):
    n = make(status=QUEUED)
    store.add(n)
    now = utcnow()
    claim(store, n.id, now)
    store.fail(n.id, "t1", now, "550")
    assert [d.id for d in store.dead_letters_due()] == [n.id]
    assert store.mark_dead_lettered([n.id], now) == 1
    assert store.dead_letters_due() == [] and store.get(n.id).dead_lettered_at == now
    assert store.mark_dead_lettered([n.id], now) == 0


def test_deliver_in_place_only_for_the_given_types_and_waiting_statuses(store):
    note, mail = make(status=QUEUED), make(kind="email", email="a@b.co", status=QUEUED)
    sent = make(status=SENT)
    store.add_many([note, mail, sent])
    now = utcnow()
    for n in (note, mail, sent):
        store.deliver_in_place(n.id, ["in_app"], now)
    assert store.get(note.id).status == SENT and store.get(mail.id).status == QUEUED
    assert store.get(sent.id).sent_at is None  # already sent: untouched


def test_restart_takes_only_failed_or_waiting_and_resets_the_budget(store):
    failed = make(status=FAILED_PERMANENTLY, retry_count=5)
    queued = make(status=QUEUED)
    store.add_many([failed, queued])
    restarted = store.restart(failed.id, utcnow())
    assert restarted.status == PENDING and restarted.retry_count == 0
    assert store.restart(queued.id, utcnow()) is None


def test_unqueue_moves_only_queued_back_to_pending(store):
    queued, sent = make(status=QUEUED), make(status=SENT)
    store.add_many([queued, sent])
    earlier = utcnow() - timedelta(minutes=5)
    assert store.unqueue([queued.id, sent.id, "missing"], earlier) == 1
    back = store.get(queued.id)
    assert back.status == PENDING and back.updated_at == earlier
    assert store.get(sent.id).status == SENT
    assert store.unqueue([], earlier) == 0


def test_mark_queued_moves_only_pending(store):
    a, b = make(), make(status=SENT)
    store.add_many([a, b])
    assert store.mark_queued([a.id, b.id], utcnow()) == 1
    assert store.get(a.id).status == QUEUED and store.get(b.id).status == SENT


def test_add_many_reports_each_item_and_stores_the_rest(store):
    from common.store.base import DUPLICATE, INSERTED

    taken = make()
    store.add(taken)
    fresh = [make(), make()]
    outcomes = store.add_many([fresh[0], taken.with_changes(message="again"), fresh[1]])
    assert outcomes == [INSERTED, DUPLICATE, INSERTED]
    assert all(store.get(n.id) is not None for n in fresh)
    assert store.get(taken.id).message == "hello"


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
    assert all(store.get(n.id).claim_token is None for n in claimed)
    assert store.claim_due(now, pending_before=now - timedelta(seconds=60)) == []

    # Queued for longer than the stale cut-off: its message may be gone.
    stale = store.claim_due(
        now, pending_before=now - timedelta(seconds=60), queued_before=now - timedelta(seconds=60)
    )
    assert {n.id for n in stale} == {queued.id}


def test_claim_due_respects_its_limit(store):
    now = utcnow()
    store.add_many(
        [make(status=RETRY_SCHEDULED, next_retry_time=now - timedelta(seconds=1)) for _ in range(7)]
    )
    first = store.claim_due(now, pending_before=now - timedelta(hours=1), limit=5)
    second = store.claim_due(now, pending_before=now - timedelta(hours=1), limit=5)
    assert len(first) == 5 and len(second) == 2


def test_concurrent_sweeps_never_claim_the_same_notification_twice(store):
    """Threads of one process, on SQLite and on a real MongoDB (MONGO_URI). The race across
    processes is tests/test_store_sqlite_race.py."""
    if type(getattr(store, "client", None)).__module__.startswith("mongomock"):
        # mongomock is no server: its update_many is not atomic per document, so threads
        # produce races a real MongoDB cannot have, and no race it can. Nothing to learn.
        pytest.skip("needs a real MongoDB (set MONGO_URI): mongomock cannot race")
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


# -- scheduled sends, cancellation and suppression (issue 13) ---------------------------------


def test_the_new_fields_round_trip(store):
    send_at = utcnow() + timedelta(hours=2)
    scheduled = make(
        status=SCHEDULED,
        category="marketing",
        transactional=False,
        send_at=send_at,
        cancel_key="campaign-7",
        status_reason="quiet hours until 08:00",
    )
    receipt = make(category="billing", transactional=True)
    store.add_many([scheduled, receipt])
    assert store.get(scheduled.id) == scheduled and store.get(receipt.id) == receipt
    assert store.get(receipt.id).transactional is True  # a bool, not SQLite's 1
    assert store.get(scheduled.id).transactional is False
    listed = store.list_for_user("u1", status=SCHEDULED).items
    assert [n.id for n in listed] == [scheduled.id]


def test_a_scheduled_notification_is_released_at_its_send_at_not_a_millisecond_earlier(store):
    now = utcnow()
    due_now, later = make(status=SCHEDULED, send_at=now), make(status=SCHEDULED, send_at=now)
    store.add_many([due_now, later.with_changes(send_at=now + timedelta(milliseconds=1))])
    cut_off = now - timedelta(hours=1)
    early = store.claim_due(now - timedelta(milliseconds=1), pending_before=cut_off)
    assert early == [] and store.get(due_now.id).status == SCHEDULED

    released = store.claim_due(now, pending_before=cut_off)
    assert [n.id for n in released] == [due_now.id]
    back = store.get(due_now.id)
    assert (back.status, back.updated_at, back.lease_until, back.claim_token) == (
        QUEUED,
        now,
        None,
        None,
    )
    assert store.get(later.id).status == SCHEDULED
    assert store.claim_due(now, pending_before=cut_off) == []


def test_scheduled_suppressed_and_cancelled_are_never_claimed_otherwise(store):
    held = [
        make(status=SCHEDULED, send_at=utcnow() + timedelta(hours=1), created_offset=-86400),
        make(status=SUPPRESSED, created_offset=-86400),
        make(status=CANCELLED, created_offset=-86400),
    ]
    store.add_many(held)
    now = utcnow()
    for n in held:
        assert claim(store, n.id, now) is None
    assert store.claim_due(now, pending_before=now, queued_before=now) == []
    assert all(store.get(n.id) == n for n in held)  # untouched


def test_cancel_works_from_every_status_no_provider_has_yet(store):
    now = utcnow()
    sources = [SCHEDULED, PENDING, QUEUED, RETRY_SCHEDULED]
    waiting = [
        make(status=status, send_at=now, next_retry_time=now, lease_until=now, claim_token="t")
        for status in sources
    ]
    store.add_many(waiting)
    for n in waiting:
        done = store.cancel(n.id, now, "cancelled by the sender")
        assert (done.status, done.status_reason, done.updated_at) == (
            CANCELLED,
            "cancelled by the sender",
            now,
        )
        assert done.next_retry_time is None and done.lease_until is None
        assert done.claim_token is None and store.get(n.id) == done


def test_cancel_is_refused_once_a_provider_has_it_or_it_is_final(store):
    too_late = [
        make(status=status, status_reason="before")
        for status in (SENDING, SENT, FAILED_PERMANENTLY, SUPPRESSED, CANCELLED)
    ]
    store.add_many(too_late)
    for n in too_late:
        assert store.cancel(n.id, utcnow(), "too late") is None
        assert store.get(n.id) == n
    assert store.cancel("no-such-id", utcnow(), "x") is None


def test_cancel_by_key_cancels_only_what_can_be_with_that_key_and_only_once(store):
    now = utcnow()
    cancellable = [
        make(status=status, cancel_key="k1", send_at=now)
        for status in (SCHEDULED, PENDING, QUEUED, RETRY_SCHEDULED)
    ]
    too_late = [make(status=s, cancel_key="k1") for s in (SENDING, SENT, SUPPRESSED)]
    other_key, no_key = make(cancel_key="k2"), make()
    store.add_many([*cancellable, *too_late, other_key, no_key])

    done = store.cancel_by_key("k1", now, "campaign withdrawn")
    assert sorted(n.id for n in done) == sorted(n.id for n in cancellable)
    assert all(n.status == CANCELLED and n.status_reason == "campaign withdrawn" for n in done)
    assert all(store.get(n.id) == n for n in done)  # what it returns is what is stored
    assert all(store.get(n.id) == n for n in (*too_late, other_key, no_key))
    assert store.cancel_by_key("k1", now, "again") == []
    assert store.cancel_by_key("no-such-key", now, "x") == []
    assert store.get(cancellable[0].id).status_reason == "campaign withdrawn"


def test_count_with_cancel_key_counts_every_status(store):
    store.add_many(
        [make(cancel_key="k1"), make(cancel_key="k1", status=SENT), make(cancel_key="k2"), make()]
    )
    assert store.count_with_cancel_key("k1") == 2
    assert store.count_with_cancel_key("k2") == 1
    assert store.count_with_cancel_key("none") == 0


# -- provider ids and delivery receipts (issue 14) --------------------------------------------


def sent_one(store, kind="sms", sid="SM0001", **extra) -> Notification:
    """A notification claimed and recorded sent, its provider's id stored with it."""
    notification = make(kind=kind, phone="+14155550123", **extra)
    store.add(notification)
    claim(store, notification.id)
    return store.record_sent(notification.id, "t1", utcnow(), provider_message_id=sid)


def test_the_provider_id_is_stored_when_sent_and_found_again(store):
    sent = sent_one(store, sid="SMabc")
    sent_one(store, sid="SMother")
    assert sent.status == SENT and sent.provider_message_id == "SMabc"
    assert store.find_by_provider_id("SMabc") == sent == store.get(sent.id)
    assert store.find_by_provider_id("SMnone") is None
    plain = make(traceparent="00-" + "ab" * 16 + "-" + "cd" * 8 + "-01")
    store.add(plain)
    assert store.get(plain.id) == plain  # traceparent round-trips, provider fields stay None
    assert plain.provider_message_id is None and store.find_by_provider_id("") is None


def test_record_delivery_status_is_a_compare_and_set_including_never_reported(store):
    sent = sent_one(store)
    at = utcnow()
    first = store.record_delivery_status(sent.id, "sent", None, at, [None, "queued"])
    assert (first.delivery_status, first.delivery_status_at) == ("sent", at)
    # The guard no longer holds: "sent" is not among the statuses it may move from.
    assert store.record_delivery_status(sent.id, "queued", None, at, [None]) is None
    failed = store.record_delivery_status(sent.id, "failed", "30003", at, [None, "sent"])
    assert (failed.delivery_status, failed.delivery_error_code) == ("failed", "30003")
    assert store.record_delivery_status(sent.id, "delivered", None, at, []) is None
    assert store.get(sent.id) == failed and failed.status == SENT  # the life cycle is untouched
    assert store.record_delivery_status("no-such-id", "sent", None, at, [None]) is None


def test_count_by_delivery_status_leaves_out_the_never_reported(store):
    assert store.count_by_delivery_status() == {}
    ids = [sent_one(store, sid=f"SM{i}").id for i in range(4)]
    store.add(make())
    now = utcnow()
    statuses = ["delivered", "delivered", "undelivered"]
    for notification_id, status in zip(ids[:3], statuses, strict=True):
        store.record_delivery_status(notification_id, status, None, now, [None])
    assert store.count_by_delivery_status() == {"delivered": 2, "undelivered": 1}


# -- the in-app inbox: states, bulk actions, counts, listing filters (issue 12) ---------------


def test_title_action_url_data_and_states_round_trip(store):
    at = utcnow()
    full = make(
        title="Your order shipped",
        action_url="/orders/7",
        data={"order": 7, "items": [{"sku": "a-1", "n": 2}], "gift": None, "note": "é"},
        seen_at=at,
        read_at=at,
        archived_at=at,
    )
    store.add_many([full])
    plain = make()
    store.add(plain)
    assert store.get(full.id) == full and store.get(full.id).data["items"][0]["sku"] == "a-1"
    assert (store.get(plain.id).data, store.get(plain.id).read_at) == (None, None)


def test_states_are_idempotent_timestamps(store):
    note = make()
    store.add(note)
    first, later = utcnow(), utcnow() + timedelta(seconds=5)
    seen = store.mark(note.id, "seen", first)
    assert (seen.seen_at, seen.read_at) == (first, None)
    read = store.mark(note.id, "read", later)
    assert (read.seen_at, read.read_at) == (first, later)  # seen kept its first time
    again = store.mark(note.id, "read", later + timedelta(seconds=5))
    assert again.read_at == later  # reading a read one keeps its first read_at
    unread = store.mark(note.id, "unread", later)
    assert (unread.read_at, unread.seen_at) == (None, first)  # unread clears read_at only
    archived = store.mark(note.id, "archive", later)
    assert store.mark(note.id, "archive", later + timedelta(seconds=1)).archived_at == later
    assert archived.archived_at == later and archived.status == note.status
    assert store.mark(note.id, "unarchive", later).archived_at is None
    assert store.get(note.id).updated_at == note.updated_at  # the life cycle is untouched
    assert store.mark("no-such-id", "read", later) is None


def test_mark_all_changes_only_what_it_names(store):
    now = utcnow()
    old_promo = make(category="promo", created_offset=-60)
    new_promo = make(category="promo")
    billing = make(category="billing", created_offset=-60)
    email = make(kind="email", email="a@b.co", category="promo", created_offset=-60)
    other_user = make(user="u2", category="promo", created_offset=-60)
    store.add_many([old_promo, new_promo, billing, email, other_user])
    store.mark(billing.id, "read", now - timedelta(seconds=30))

    before = now - timedelta(seconds=10)
    count = store.mark_all("u1", "seen", now, category="promo", before=before)
    assert count == 2  # old_promo and the email: the new one is after `before`
    assert store.get(old_promo.id).seen_at == now and store.get(new_promo.id).seen_at is None
    assert store.get(other_user.id).seen_at is None

    assert store.mark_all("u1", "read", now, notification_type="in_app") == 2
    assert store.get(new_promo.id).read_at == now and store.get(new_promo.id).seen_at == now
    assert store.get(billing.id).read_at == now - timedelta(seconds=30)  # kept its first
    assert store.get(email.id).read_at is None
    assert store.mark_all("u1", "read", now, notification_type="in_app") == 0  # idempotent
    assert store.mark_all("u1", "read", now) == 1  # the email
    assert store.mark_all("nobody", "seen", now) == 0


def test_inbox_counts_leave_out_archived_and_other_types(store):
    assert store.inbox_counts("u1") == {"total": 0, "unread": 0, "unseen": 0}
    notes = [make(created_offset=-i) for i in range(5)]
    store.add_many([*notes, make(kind="sms", phone="+14155550123"), make(user="u2")])
    now = utcnow()
    store.mark(notes[0].id, "read", now)  # read and seen
    store.mark(notes[1].id, "seen", now)
    store.mark(notes[2].id, "archive", now)  # counted nowhere
    assert store.inbox_counts("u1", "in_app") == {"total": 4, "unread": 3, "unseen": 2}
    assert store.inbox_counts("u1", "sms") == {"total": 1, "unread": 1, "unseen": 1}
    assert store.inbox_counts("u2") == {"total": 1, "unread": 1, "unseen": 1}


def test_listing_hides_archived_by_default_and_filters_read_and_category(store):
    notes = [make(created_offset=-i, category="promo" if i % 2 else "billing") for i in range(4)]
    store.add_many(notes)
    now = utcnow()
    store.mark(notes[0].id, "archive", now)
    store.mark(notes[1].id, "read", now)

    def ids(**filters):
        return [n.id for n in store.list_for_user("u1", **filters).items]

    assert ids() == [n.id for n in notes[1:]]
    assert ids(archived="true") == [notes[0].id]
    assert ids(archived="all") == [n.id for n in notes]
    assert ids(read=True) == [notes[1].id]
    assert ids(read=False) == [notes[2].id, notes[3].id]
    assert ids(category="promo") == [notes[1].id, notes[3].id]
    assert ids(category="billing", archived="all", read=False) == [notes[0].id, notes[2].id]
    page = store.list_for_user("u1", limit=1, read=False)
    rest = store.list_for_user("u1", limit=1, read=False, cursor=Cursor.decode(page.next_cursor))
    assert [n.id for n in page.items + rest.items] == [notes[2].id, notes[3].id]
