"""The inbox's changes since a time (what a live stream reconnecting with Last-Event-ID missed):
the contract on both stores, paging by a (time, id) cursor, then what each store shows of its
indexes, SQLite on an older file, and each store's outage.
"""

from __future__ import annotations

import sqlite3
from datetime import timedelta

import pymongo
import pytest

from common.errors import StoreUnavailable
from common.model import SENT, Notification, utcnow
from common.store import mongo_inbox
from common.store.mongo import MongoStore
from common.store.sqlite import SCHEMA, SqliteStore
from tests.support.mongo import mongo_database

MS = timedelta(milliseconds=1)
T0 = utcnow() - timedelta(hours=1)  # when the test's notifications were created


def at(seconds: float):
    return T0 + timedelta(seconds=seconds)


def make(user="u1", kind="in_app", updated=0.0, **extra) -> Notification:
    return Notification(
        user_id=user,
        notification_type=kind,
        message="hello",
        created_at=T0,
        updated_at=at(updated),
        **extra,
    )


def changed(store, since, user="u1", limit=500, after_id=None) -> list[str]:
    return [n.id for n in store.inbox_changes(user, since, limit, after_id=after_id)]


def pages(store, since, limit, user="u1") -> list[list[str]]:
    """Every page, as the live stream replays: each asks after the last row's (time, id)."""
    found: list[list[str]] = []
    after_id = None
    while len(found) < 100:  # bounded: a cursor that does not move fails the test, not hangs
        page = store.inbox_changes(user, since, limit, after_id=after_id)
        if not page:
            return found
        found.append([n.id for n in page])
        since, after_id = page[-1].inbox_changed_at, page[-1].id
    raise AssertionError(f"still paging after {len(found)} pages: {found[-2:]}")


# -- the contract: SQLite and MongoDB ----------------------------------------------------------


def test_a_mark_shows_from_just_before_it_and_not_after_and_leaves_updated_at(store):
    note = make()
    store.add(note)
    assert changed(store, at(1)) == []
    marked = store.mark(note.id, "read", at(10))
    assert marked.inbox_updated_at == at(10) and marked.inbox_changed_at == at(10)
    assert marked.updated_at == note.updated_at  # the sweep's clock is not touched
    assert changed(store, at(10) - MS) == [note.id]
    assert changed(store, at(10)) == [note.id]  # `since` is inclusive
    assert changed(store, at(10) + MS) == []
    # A mark that changes no state still stamps it (a stream shows it again: harmless).
    store.mark(note.id, "read", at(20))
    assert changed(store, at(20)) == [note.id]
    assert store.get(note.id).read_at == at(10) and store.get(note.id).inbox_updated_at == at(20)
    assert store.get(note.id).updated_at == note.updated_at
    assert store.mark("no-such-id", "seen", at(30)) is None


def test_mark_all_stamps_each_row_it_updates_and_only_those(store):
    notes = [make() for _ in range(3)]
    read_before = make()
    store.add_many([*notes, read_before, make(user="u2")])
    store.mark(read_before.id, "read", at(5))
    assert store.mark_all("u1", "read", at(10)) == 3
    assert sorted(changed(store, at(10))) == sorted(n.id for n in notes)
    assert store.get(read_before.id).inbox_updated_at == at(5)  # not updated: not stamped
    assert all(store.get(n.id).updated_at == n.updated_at for n in [*notes, read_before])
    assert changed(store, at(0) + MS, user="u2") == []  # theirs: created at 0, never marked
    assert store.get(notes[0].id).read_at == at(10)


def test_a_status_move_shows_by_its_updated_at(store):
    waiting = make()
    store.add(waiting)
    assert changed(store, at(10)) == []
    store.deliver_in_place(waiting.id, ["in_app"], at(10))
    assert store.get(waiting.id).status == SENT
    assert changed(store, at(10)) == [waiting.id] and changed(store, at(10) + MS) == []


def test_other_users_and_other_channels_never_show(store):
    email = make(kind="email", email="a@b.co", updated=50)
    sms = make(kind="sms", phone="+14155550123")
    theirs = make(user="u2", updated=50)
    mine = make(updated=50)
    store.add_many([email, sms, theirs, mine])
    store.mark(sms.id, "read", at(60))
    store.mark(theirs.id, "read", at(60))
    assert changed(store, at(0)) == [mine.id]
    assert changed(store, at(0), user="u2") == [theirs.id]
    assert changed(store, at(0), user="nobody") == []


def test_ordered_by_the_last_change_of_either_kind_ties_by_id_and_any_limit_is_a_prefix(store):
    # An early status move read late sorts by its read: in updated_at order it would be first.
    read_late = make(updated=1)
    moved_only = [make(updated=5), make(updated=30)]
    tied = [make(id=f"tie-{c}", updated=20) for c in "ba"]  # the same time: by id
    read_early = make(updated=2)
    moved_after_read = make(updated=3)
    stale = make(updated=-100)  # before `since`, never acted on
    store.add_many([read_late, *moved_only, *tied, read_early, moved_after_read, stale])
    store.mark(read_late.id, "read", at(40))
    store.mark(read_early.id, "seen", at(8))
    store.mark(moved_after_read.id, "seen", at(2))  # before its status move at 3
    store.mark(stale.id, "archive", at(20))  # equal to the tied ones: ordered by id too

    expected = [
        moved_after_read.id,  # 3
        moved_only[0].id,  # 5
        read_early.id,  # 8
        stale.id,  # 20 (its id, a uuid, sorts before "tie-...")
        "tie-a",
        "tie-b",
        moved_only[1].id,  # 30
        read_late.id,  # 40
    ]
    assert changed(store, at(0)) == expected
    for limit in range(1, len(expected) + 1):
        assert changed(store, at(0), limit=limit) == expected[:limit], limit
    assert changed(store, at(0), limit=0) == []
    assert changed(store, at(20)) == expected[3:]
    changes = store.inbox_changes("u1", at(0))
    assert [n.inbox_changed_at for n in changes] == sorted(n.inbox_changed_at for n in changes)


# -- paging by the last row's (time, id) ----------------------------------------------------


def test_paging_visits_each_of_one_mark_alls_ties_once(store):
    notes = [make() for _ in range(1200)]
    store.add_many(notes)
    assert store.mark_all("u1", "read", at(10)) == 1200  # all stamped with one millisecond
    # The inclusive `since` alone: a page full of ties asked again is the same page forever.
    first = changed(store, at(10), limit=500)
    last = store.inbox_changes("u1", at(10), 500)[-1]
    assert last.inbox_changed_at == at(10) and changed(store, at(10), limit=500) == first

    found = pages(store, at(10), 500)
    assert [len(page) for page in found] == [500, 500, 200]
    visited = [note_id for page in found for note_id in page]
    assert visited == sorted(n.id for n in notes)  # each once, in id order
    assert changed(store, at(10), after_id=last.id)[:1] == [visited[500]]


def test_paging_over_mixed_times_ties_and_both_kinds_of_change_visits_each_once(store):
    moved = [make(updated=t) for t in (1, 2, 2, 2, 5, 9)]  # status moves, three tied
    read = [make(updated=1) for _ in range(2)]
    tied_by_id = [make(id=f"tie-{c}", updated=7) for c in "dcba"]
    bulk = [make(updated=1, category="news") for _ in range(5)]
    store.add_many([*moved, *read, *tied_by_id, *bulk, make(user="u2", updated=3)])
    store.add(make(kind="email", email="a@b.co", updated=3))
    store.mark(read[0].id, "read", at(2))  # ties with the status moves at 2
    store.mark(read[1].id, "seen", at(7))  # ties with tie-a..d at 7
    store.mark(tied_by_id[0].id, "archive", at(8))  # moves on from its tie
    assert store.mark_all("u1", "read", at(6), category="news") == 5  # five more ties
    everything = store.inbox_changes("u1", at(0))
    times = [n.inbox_changed_at for n in everything]
    # At 1, 2 (four of them), 5, 6 (five), 7 (four), 8 and 9.
    assert len(everything) == 17 and len(set(times)) == 7
    ids = [n.id for n in everything]
    for limit in (1, 2, 3, 4, 5, 16, 17, 500):
        visited = [note_id for page in pages(store, at(0), limit) for note_id in page]
        assert visited == ids, limit
    assert pages(store, at(9) + MS, 3) == []


def test_a_cursor_is_strictly_after_its_time_and_id(store):
    early = make(id="a", updated=5)
    tied = [make(id=c, updated=10) for c in "bcd"]
    later = make(id="a2", updated=11)
    store.add_many([early, *tied, later])
    assert changed(store, at(10)) == ["b", "c", "d", "a2"]  # without a cursor: inclusive
    assert changed(store, at(10), after_id="b") == ["c", "d", "a2"]
    assert changed(store, at(10), after_id="bb") == ["c", "d", "a2"]  # need not be a row
    assert changed(store, at(10), after_id="d") == ["a2"]  # later, whatever its id
    assert changed(store, at(10), after_id="") == ["b", "c", "d", "a2"]
    assert changed(store, at(10), after_id="c", limit=1) == ["d"]
    assert changed(store, at(10), after_id="b", limit=0) == []
    assert changed(store, at(11), after_id="a2") == []
    assert changed(store, at(5), after_id="a", user="u2") == []


# -- Indexes, and on a file an older version wrote ------------------------------


def test_sqlite_answers_from_its_index_in_order_without_a_scan(tmp_path):
    store = SqliteStore(tmp_path / "n.db")
    store.add_many([make(updated=i) for i in range(20)] + [make(user="u2") for _ in range(20)])
    connection = store._connection()
    plans: list[str] = []
    read = store._read

    def explaining(sql, params=()):
        plans.extend(row[3] for row in connection.execute(f"EXPLAIN QUERY PLAN {sql}", params))
        return read(sql, params)

    store._read = explaining
    assert len(store.inbox_changes("u1", at(0), limit=5)) == 5
    assert len(plans) == 1 and "USING INDEX ix_inbox_changes (user_id=? AND" in plans[0], plans
    assert not any(p.startswith("SCAN") or "TEMP B-TREE" in p for p in plans), plans

    # After a cursor: the rest of the ties and those later, each a seek into the index.
    last = store.inbox_changes("u1", at(0), limit=5)[-1]
    plans.clear()
    assert len(store.inbox_changes("u1", last.inbox_changed_at, 5, after_id=last.id)) == 5
    searches = [p for p in plans if p.startswith("SEARCH")]
    assert searches == [
        "SEARCH notifications USING INDEX ix_inbox_changes (user_id=? AND <expr>=? AND id>?)",
        "SEARCH notifications USING INDEX ix_inbox_changes (user_id=? AND <expr>>?)",
    ], plans
    assert not any(p.startswith("SCAN notifications") or "TEMP B-TREE" in p for p in plans)


def test_mongo_finds_after_a_cursor_are_ranges_of_the_index_each_hints():
    for after_id in (None, "x"):
        finds = mongo_inbox.changes_finds("u1", at(0), after_id)
        assert len(finds) == (2 if after_id is None else 4)
        for query, order, index in finds:
            assert index == [("user_id", 1), *order]
            fields = [field for field, _ in index]
            assert "$or" not in query and query["user_id"] == "u1"
            assert set(query) <= {*fields, "notification_type", "$expr"}, query
            if "id" in query:  # the ties: an equal time, so the id's range is the index's
                assert query[fields[1]] == at(0) and query["id"] == {"$gt": after_id}


def test_a_file_from_before_inbox_updated_at_gains_it_and_works(tmp_path):
    path = tmp_path / "n.db"
    previous = SCHEMA.replace(",\n    inbox_updated_at INTEGER", "")
    assert previous != SCHEMA and "inbox_updated_at" not in previous
    old = sqlite3.connect(path)
    old.executescript(previous)
    created = round(at(0).timestamp() * 1000)
    old.execute(
        "INSERT INTO notifications (id, user_id, notification_type, message, status, "
        "created_at, updated_at, read_at) VALUES ('old', 'u1', 'in_app', 'm', 'sent', ?, ?, ?)",
        (created, created + 1000, created + 2000),
    )
    old.commit()
    old.close()

    store = SqliteStore(path)
    migrated = store.get("old")
    assert migrated.inbox_updated_at is None and migrated.inbox_changed_at == at(1)
    assert changed(store, at(1)) == ["old"] and changed(store, at(1) + MS) == []
    assert store.mark("old", "archive", at(30)).inbox_updated_at == at(30)
    assert changed(store, at(30)) == ["old"]
    fresh = make(updated=40)
    store.add(fresh)
    assert changed(store, at(0)) == ["old", fresh.id]
    assert store.mark_all("u1", "read", at(50)) == 1 and changed(store, at(50)) == [fresh.id]
    SqliteStore(path).close()  # opening it again changes nothing


# -- outages are the store's usual error -------------------------------------------------------


def test_sqlite_reports_a_lost_table_as_unavailable(tmp_path):
    store = SqliteStore(tmp_path / "n.db")
    other = sqlite3.connect(tmp_path / "n.db")
    other.execute("DROP TABLE notifications")
    other.close()
    with pytest.raises(StoreUnavailable):
        store.inbox_changes("u1", at(0))


def test_mongo_reports_an_unreachable_server_as_unavailable():
    with mongo_database() as (client, name):
        store = MongoStore(database=name, client=client)
        unreachable = pymongo.MongoClient(
            "mongodb://127.0.0.1:9", serverSelectionTimeoutMS=200, connect=False
        )
        store.collection = unreachable["notifications"]["notifications"]
        try:
            with pytest.raises(StoreUnavailable):
                store.inbox_changes("u1", at(0))
        finally:
            unreachable.close()
