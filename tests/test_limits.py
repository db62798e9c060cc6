"""Limits: the pure rules on a fake clock, the store contract on each backend, the limiter, and
the counts that must hold when several threads and processes share one store."""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import os
import random
import sqlite3
import threading
import time
import uuid

import pytest

from common.errors import StoreUnavailable
from common.limits import Limiter, make_limit_store
from common.limits.mongo import MongoLimitStore
from common.limits.rules import (
    FAILURE_BURST,
    FAILURE_INTERVAL,
    RECIPIENT_WINDOW,
    failures_blocked,
    record_failure,
    sms_country_allowed,
    take_recipient,
    take_tokens,
)
from common.limits.sqlite import SqliteLimitStore


class FakeClock:
    def __init__(self, now: float | None = None):
        # Near the real time: a real MongoDB's TTL monitor deletes what looks long expired.
        self.now = time.time() if now is None else now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _mongo_limit_store(clock=time.time):
    uri = os.environ.get("MONGO_URI")
    database = f"test_{uuid.uuid4().hex[:8]}"
    if uri:  # a real server, whenever the environment provides one
        store = MongoLimitStore(uri, database, timeout=3.0, clock=clock)
        yield store
        store.client.drop_database(database)
        store.client.close()
        return
    import mongomock

    client = mongomock.MongoClient(tz_aware=True)
    yield MongoLimitStore(client, database, timeout=3.0, clock=clock)


@pytest.fixture(params=["sqlite", "mongo"])
def clocked(request, tmp_path):
    """(store, the store's fake clock) on each backend."""
    clock = FakeClock()
    if request.param == "sqlite":
        store = SqliteLimitStore(tmp_path / "limits.db", timeout=3.0, clock=clock)
        yield store, clock
        store.close()
    else:
        for store in _mongo_limit_store(clock):
            yield store, clock


def _count(state, now):
    """A change that counts calls and answers the new count."""
    count = (state or {}).get("n", 0) + 1
    return {"n": count}, count


@pytest.fixture
def mongo_store():
    yield from _mongo_limit_store()


# -- rules: the token bucket ---------------------------------------------------------------


def test_bucket_allows_a_burst_of_twice_the_rate_then_refuses():
    state, now = None, 1000.0
    for expected_remaining in range(9, -1, -1):
        state, decision = take_tokens(state, now, rate=5, cost=1)
        assert decision.allowed and decision.limit == 10
        assert decision.remaining == expected_remaining
    state, decision = take_tokens(state, now, rate=5, cost=1)
    assert not decision.allowed and decision.remaining == 0
    assert decision.retry_after == pytest.approx(0.2)
    assert decision.retry_after_whole == 1
    assert decision.reset_seconds == pytest.approx(2.0) and decision.reset_whole == 2


def test_bucket_refills_at_the_rate():
    state, now = None, 1000.0
    for _ in range(10):
        state, _ = take_tokens(state, now, rate=5, cost=1)
    state, decision = take_tokens(state, now + 0.19, rate=5, cost=1)
    assert not decision.allowed
    state, decision = take_tokens(state, now + 0.2, rate=5, cost=1)
    assert decision.allowed and decision.remaining == 0
    # Long idle: a full bucket again, whatever the stale state says.
    _, decision = take_tokens(state, now + 60, rate=5, cost=1)
    assert decision.allowed and decision.remaining == 9


def test_a_batch_costs_its_item_count():
    state, decision = take_tokens(None, 1000.0, rate=5, cost=10)
    assert decision.allowed and decision.remaining == 0 and decision.reset_whole == 2
    _, decision = take_tokens(state, 1001.0, rate=5, cost=6)
    assert not decision.allowed and decision.retry_after == pytest.approx(0.2)
    assert decision.remaining == 5


def test_a_cost_above_the_burst_is_always_refused_with_a_reason():
    state, decision = take_tokens(None, 1000.0, rate=5, cost=11)
    assert state is None and not decision.allowed
    assert "at most 10" in decision.reason
    assert decision.remaining == 10 and decision.retry_after == math.inf
    assert decision.retry_after_whole is None  # waiting cannot help


def test_header_seconds_round_up():
    state, decision = take_tokens(None, 1000.0, rate=3, cost=1)  # burst 6
    assert decision.reset_seconds == pytest.approx(1 / 3) and decision.reset_whole == 1
    for _ in range(5):
        state, decision = take_tokens(state, 1000.0, rate=3, cost=1)
    _, decision = take_tokens(state, 1000.0, rate=3, cost=1)
    assert decision.retry_after_whole == 1 and decision.reset_whole == 2
    assert take_tokens(None, 0.0, rate=0.2, cost=1)[1].limit == 1  # never a burst of zero


# -- rules: recipients, failed credentials, countries --------------------------------------


def test_recipient_cap_is_exact_over_the_sliding_hour():
    state, start = None, 1000.0
    for offset in (0, 10, 20):
        state, ok = take_recipient(state, start + offset, cap=3)
        assert ok
    state, ok = take_recipient(state, start + 30, cap=3)
    assert not ok
    state, ok = take_recipient(state, start + RECIPIENT_WINDOW - 0.001, cap=3)
    assert not ok
    state, ok = take_recipient(state, start + RECIPIENT_WINDOW, cap=3)  # the first left
    assert ok and len(state["sent"]) == 3
    _, ok = take_recipient(state, start + RECIPIENT_WINDOW + 1, cap=3)
    assert not ok


def test_recipient_cap_never_exceeded_in_any_window():
    rng = random.Random(7)
    state, sent = None, []
    for now in sorted(rng.uniform(0, 5 * RECIPIENT_WINDOW) for _ in range(2000)):
        state, ok = take_recipient(state, now, cap=5)
        if ok:
            sent.append(now)
        assert len(state["sent"]) <= 5
    for index, first in enumerate(sent):
        assert sum(1 for t in sent[index:] if t < first + RECIPIENT_WINDOW) <= 5
    assert len(sent) > 5 * 4  # and it did let sends through, hour after hour


def test_failed_credentials_allow_a_burst_then_one_per_interval():
    state, now = None, 1000.0
    for _ in range(FAILURE_BURST - 1):
        state, _ = record_failure(state, now)
    assert failures_blocked(state, now)[1] is None
    state, _ = record_failure(state, now)
    assert failures_blocked(state, now)[1] == pytest.approx(FAILURE_INTERVAL)
    assert failures_blocked(state, now + FAILURE_INTERVAL)[1] is None
    state, _ = record_failure(state, now + FAILURE_INTERVAL)
    assert failures_blocked(state, now + FAILURE_INTERVAL + 1)[1] == pytest.approx(5)


def test_a_flood_of_failures_waits_at_most_about_one_more_burst():
    state, now = None, 1000.0
    for _ in range(1000):
        state, _ = record_failure(state, now)
    wait = failures_blocked(state, now)[1]
    assert (FAILURE_BURST + 1) * FAILURE_INTERVAL <= wait + 1e-6
    assert wait <= (FAILURE_BURST + 1) * FAILURE_INTERVAL + 1e-6


@pytest.mark.parametrize(
    ("phone", "codes", "allowed"),
    [
        ("+14155550123", ("1",), True),
        ("+14155550123", ("+1", "44"), True),
        ("+447911123456", ("44",), True),
        ("+447911123456", ("4",), False),  # 44 is not 4
        ("+447911123456", ("1", "33"), False),
        ("+33612345678", ("33",), True),
        ("+33612345678", ("3",), False),
        ("+12425550123", ("1",), True),  # the Bahamas share NANP's code 1
        ("+999123456789", ("999",), False),  # no such calling code: refused
        ("+33612345678", (), True),  # no list: every country
    ],
)
def test_sms_country_allowed(phone, codes, allowed):
    assert sms_country_allowed(phone, codes) is allowed


# -- stores: the contract, on each backend ---------------------------------------------------


def test_update_reads_none_stores_and_answers(clocked):
    store, _ = clocked
    assert store.update("k", _count, expires_in=60) == 1
    assert store.update("k", _count, expires_in=60) == 2
    assert store.update("other", _count, expires_in=60) == 1


def test_none_deletes_the_state(clocked):
    store, _ = clocked
    store.update("k", _count, expires_in=60)
    assert store.update("k", lambda state, now: (None, state), expires_in=60) == {"n": 1}
    assert store.update("k", lambda state, now: (state, state), expires_in=60) is None


def test_state_expires(clocked):
    store, clock = clocked
    store.update("k", _count, expires_in=10)
    clock.advance(9.9)
    assert store.update("k", _count, expires_in=10) == 2
    clock.advance(10.1)
    assert store.update("k", _count, expires_in=10) == 1


def test_an_unchanged_state_is_not_written_and_keeps_its_expiry(clocked):
    store, clock = clocked
    store.update("k", _count, expires_in=10)
    assert store.update("k", lambda state, now: (state, now), expires_in=1000) == clock.now
    clock.advance(11)
    assert store.update("k", lambda state, now: (state, state), expires_in=10) is None


def test_update_many_answers_in_order_and_repeats_see_earlier_changes(clocked):
    store, _ = clocked
    store.update("b", _count, expires_in=60)
    items = [("a", _count, 60), ("b", _count, 60), ("a", _count, 60), ("c", _count, 60)]
    assert store.update_many(items) == [1, 2, 2, 1]
    assert store.update_many([]) == []
    assert store.update("a", _count, expires_in=60) == 3


def test_a_change_that_raises_writes_nothing(clocked):
    store, _ = clocked

    def broken(state, now):
        raise RuntimeError("rule bug")

    with pytest.raises(RuntimeError):
        store.update_many([("a", _count, 60), ("b", broken, 60)])
    assert store.update("a", _count, expires_in=60) == 1


def test_mongo_retries_when_another_writer_gets_there_first(mongo_store):
    mongo_store.update("k", _count, expires_in=60)
    interfered = []

    def racing(state, now):
        if not interfered:  # another instance writes between our read and our write
            interfered.append(mongo_store.update("k", _count, expires_in=60))
        return _count(state, now)

    assert mongo_store.update("k", racing, expires_in=60) == 3
    assert interfered == [2]
    assert mongo_store.update("k", _count, expires_in=60) == 4


def test_mongo_new_keys_inserted_by_another_writer_first_are_retried(mongo_store):
    interfered = []

    def racing(state, now):
        if not interfered:
            interfered.append(mongo_store.update("new", _count, expires_in=60))
        return _count(state, now)

    assert mongo_store.update_many([("x", _count, 60), ("new", racing, 60)]) == [1, 2]


def test_unreachable_mongo_is_store_unavailable_quickly():
    started = time.monotonic()
    store = MongoLimitStore("mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=200", "db", 0.2)
    with pytest.raises(StoreUnavailable):
        Limiter(store).take_send("cred", 1, rate=10)
    store.close()
    assert time.monotonic() - started < 3


def test_a_locked_sqlite_file_is_store_unavailable_within_the_timeout(tmp_path):
    store = SqliteLimitStore(tmp_path / "limits.db", timeout=0.2)
    holder = sqlite3.connect(tmp_path / "limits.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="busy"):
        store.update("k", _count, expires_in=60)
    assert time.monotonic() - started < 1.5
    holder.execute("ROLLBACK")
    assert store.update("k", _count, expires_in=60) == 1
    holder.close()
    store.close()


def test_an_unopenable_sqlite_file_is_store_unavailable(tmp_path):
    with pytest.raises(StoreUnavailable):
        SqliteLimitStore(tmp_path, timeout=0.2)  # a folder, not a file


def test_sqlite_prunes_expired_rows_now_and_then(tmp_path):
    clock = FakeClock()
    store = SqliteLimitStore(tmp_path / "limits.db", clock=clock)
    store.update_many([(f"k{i}", _count, 10) for i in range(50)])
    clock.advance(11)
    store.update("fresh", _count, expires_in=10)  # the first prune ran on the first update
    rows = store._connection().execute("SELECT COUNT(*) FROM limits").fetchone()[0]
    assert rows == 51
    store._pruned_at = float("-inf")  # as if a prune interval had passed
    store.update("fresh", _count, expires_in=10)
    assert store._connection().execute("SELECT COUNT(*) FROM limits").fetchone()[0] == 1
    store.close()


def test_make_limit_store_follows_the_settings(settings):
    store = make_limit_store(settings)
    assert isinstance(store, SqliteLimitStore)
    assert store.path == str(settings.data_dir / "limits.db")
    assert store.timeout == settings.store_timeout
    store.close()
    with_mongo = dataclasses.replace(settings, mongo_uri="mongodb://127.0.0.1:1")
    store = make_limit_store(with_mongo)  # builds without reaching the server
    assert isinstance(store, MongoLimitStore)
    assert store.collection.name == "rate_limits"
    assert store.collection.database.name == settings.mongo_db
    store.close()


# -- the limiter, over each store --------------------------------------------------------------


def test_take_send_counts_per_credential(clocked):
    store, _ = clocked
    clock = FakeClock()
    limiter = Limiter(store, clock=clock)
    decisions = [limiter.take_send("cred-a", 1, rate=2) for _ in range(5)]
    assert [d.allowed for d in decisions] == [True] * 4 + [False]
    assert decisions[-1].retry_after_whole == 1 and decisions[0].limit == 4
    assert limiter.take_send("cred-b", 4, rate=2).allowed
    clock.advance(0.5)
    assert limiter.take_send("cred-a", 1, rate=2).allowed
    assert not limiter.take_send("cred-a", 5, rate=2).allowed  # above the burst


def test_rate_zero_is_off(clocked):
    store, _ = clocked
    decision = Limiter(store).take_send("cred", 10_000, rate=0)
    assert decision.allowed and decision.limit == 0


def test_recipient_cap_through_the_limiter(clocked):
    store, _ = clocked
    clock = FakeClock()
    limiter = Limiter(store, clock=clock)
    caps = {"email": 2, "sms": 1}
    assert limiter.take_recipients([("email", "Ann@Example.com")], caps) == [True]
    # The same mailbox however it is spelled; listed twice in one call counts twice.
    items = [("email", "ann@example.com"), ("email", " ANN@example.COM"), ("sms", "+14155550123")]
    assert limiter.take_recipients(items, caps) == [True, False, True]
    assert limiter.take_recipients([("sms", "+1 415 555 0123")], caps) == [False]
    clock.advance(RECIPIENT_WINDOW - 1)
    assert limiter.take_recipients([("email", "ann@example.com")], caps) == [False]
    clock.advance(1)
    assert limiter.take_recipients([("email", "ann@example.com")] * 3, caps) == [
        True,
        True,
        False,
    ]


def test_uncapped_recipients_never_touch_the_store():
    class Untouchable:
        def update_many(self, items):
            raise AssertionError("the store was used")

    limiter = Limiter(Untouchable())
    items = [("email", "a@example.com"), ("sms", "+14155550123"), ("in_app", "user-1")]
    assert limiter.take_recipients(items, {"email": 0}) == [True, True, True]
    assert limiter.take_recipients([], {"email": 3}) == []


def test_keys_never_hold_the_raw_address(tmp_path):
    store = SqliteLimitStore(tmp_path / "limits.db")
    limiter = Limiter(store)
    caps = {"email": 5, "sms": 5}
    limiter.take_recipients([("email", "ann@example.com"), ("sms", "+14155550123")], caps)
    limiter.record_failed_credential("203.0.113.9")
    limiter.take_send("cred-secret", 1, rate=5)
    keys = [row[0] for row in store._connection().execute("SELECT key FROM limits")]
    assert len(keys) == 4
    for key in keys:
        for secret in ("ann", "example", "4155550123", "203.0.113", "cred-secret"):
            assert secret not in key
    store.close()


def test_failed_credentials_block_a_client(clocked):
    store, _ = clocked
    clock = FakeClock()
    limiter = Limiter(store, clock=clock)
    for _ in range(FAILURE_BURST):
        assert limiter.client_blocked("203.0.113.9") is None
        limiter.record_failed_credential("203.0.113.9")
    assert limiter.client_blocked("203.0.113.9") == pytest.approx(FAILURE_INTERVAL)
    assert limiter.client_blocked("198.51.100.1") is None
    clock.advance(FAILURE_INTERVAL)
    assert limiter.client_blocked("203.0.113.9") is None


def test_a_batch_of_1000_recipients_is_one_transaction(tmp_path):
    store = SqliteLimitStore(tmp_path / "limits.db")
    statements: list[str] = []
    store._connection().set_trace_callback(statements.append)
    items = [("email", f"user{i}@example.com") for i in range(1000)]
    assert Limiter(store).take_recipients(items, {"email": 1}) == [True] * 1000
    assert statements.count("BEGIN IMMEDIATE") == 1 and statements.count("COMMIT") == 1
    store._connection().set_trace_callback(None)
    assert Limiter(store).take_recipients(items, {"email": 1}) == [False] * 1000
    assert store._connection().execute("SELECT COUNT(*) FROM limits").fetchone()[0] == 1000
    store.close()


def test_a_batch_of_1000_recipients_on_mongo(mongo_store):
    items = [("email", f"user{i}@example.com") for i in range(1000)]
    assert Limiter(mongo_store).take_recipients(items, {"email": 1}) == [True] * 1000
    assert Limiter(mongo_store).take_recipients(items, {"email": 1}) == [False] * 1000
    assert mongo_store.collection.count_documents({}) == 1000


# -- concurrency: the count holds however many share the store --------------------------------

RATE = 50.0
BURST = 100


def _hammer(limiter: Limiter, credential: str, until: float) -> tuple[int, float, float]:
    """take_send until `until`: (allowed, first call's start, last call's end)."""
    allowed, first = 0, time.time()
    while time.time() < until:
        if limiter.take_send(credential, 1, RATE).allowed:
            allowed += 1
    return allowed, first, time.time()


def _hammer_in_a_process(path: str, credential: str, ready, results) -> None:
    limiter = Limiter(SqliteLimitStore(path))
    ready.wait(60)  # both processes imported and opened the store: start together
    results.put(_hammer(limiter, credential, time.time() + 1.0))


def _assert_within_the_bucket(results: list[tuple[int, float, float]]) -> None:
    total = sum(allowed for allowed, _, _ in results)
    elapsed = max(end for _, _, end in results) - min(first for _, first, _ in results)
    assert total <= BURST + RATE * elapsed + 1
    assert total >= BURST + RATE * elapsed / 2  # and the limit did not starve them


def test_two_processes_share_one_bucket(tmp_path):
    path = str(tmp_path / "limits.db")
    SqliteLimitStore(path).close()
    context = multiprocessing.get_context("spawn")
    ready, queue = context.Barrier(2), context.Queue()
    workers = [
        context.Process(target=_hammer_in_a_process, args=(path, "cred", ready, queue))
        for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    results = [queue.get(timeout=90) for _ in workers]
    for worker in workers:
        worker.join(10)
    assert all(allowed > 0 for allowed, _, _ in results)  # both took part
    _assert_within_the_bucket(results)


def _threads_share_one_bucket(store) -> None:
    limiter = Limiter(store)
    until = time.time() + 1.0
    results: list = []
    threads = [
        threading.Thread(target=lambda: results.append(_hammer(limiter, "cred", until)))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 8
    _assert_within_the_bucket(results)


def test_threads_share_one_bucket_on_sqlite(tmp_path):
    store = SqliteLimitStore(tmp_path / "limits.db")
    _threads_share_one_bucket(store)
    store.close()


class _OneAtATime:
    """A mongomock collection whose operations are each atomic, as a server's are per document
    (mongomock's own are not), so the compare-and-set is what the test exercises."""

    def __init__(self, collection):
        self._collection = collection
        self._lock = threading.Lock()

    def __getattr__(self, name):
        method = getattr(self._collection, name)

        def atomic(*args, **kwargs):
            with self._lock:
                return method(*args, **kwargs)

        return atomic


def test_threads_share_one_bucket_on_mongo(mongo_store):
    if not os.environ.get("MONGO_URI"):
        mongo_store.collection = _OneAtATime(mongo_store.collection)
    _threads_share_one_bucket(mongo_store)


def test_every_mongo_store_of_a_process_shares_one_bounded_client(settings):
    """One connection pool per process, and every operation bounded by STORE_TIMEOUT."""
    from common.mongo_client import mongo_client
    from common.templates.store import make_template_store

    with_mongo = dataclasses.replace(settings, mongo_uri="mongodb://127.0.0.1:1")
    client = mongo_client(with_mongo)
    assert make_limit_store(with_mongo).client is client
    assert make_template_store(with_mongo).client is client
    assert client.options.timeout == 2 * with_mongo.store_timeout
