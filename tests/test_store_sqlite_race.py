"""The SQLite store raced for real: several processes open one database file and claim at once.

The contract suite's concurrent-sweep test runs threads of one process (and MongoDB on
mongomock, which cannot race at all); here separate processes (spawned, each with its own
SqliteStore and connections) contend for SQLite's file lock, as two runners or two function
instances sharing one data folder do. Three rounds, each started together at a barrier, follow
one life: the sweep requeues what is due, deliverers claim it, and after the leases expire
other deliverers take it over. Every notification must be won by exactly one process per round.
"""

from __future__ import annotations

import multiprocessing
import queue
import traceback
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

from common.model import (
    EMAIL,
    PENDING,
    QUEUED,
    RETRY_SCHEDULED,
    SENDING,
    SENT,
    Notification,
    utcnow,
)
from common.store.sqlite import SqliteStore

WORKERS = 4
PER_KIND = 100  # due notifications of each kind the sweep requeues
LEASE = timedelta(minutes=5)
ROUNDS = ("sweep", "claim", "takeover")
WAIT = 60.0  # seconds: the bound on every barrier, result and join

pytestmark = pytest.mark.timeout(180)


def _race(path: str, worker: int, ids: list[str], times: dict, start, results) -> None:
    """One process: each round starts when every process is ready, and reports what it won."""
    try:
        store = SqliteStore(path)
        try:
            start.wait(WAIT)
            swept: list[str] = []
            # Small batches, so that the processes interleave many times over.
            while batch := store.claim_due(
                times["sweep"], pending_before=times["pending_before"], limit=7
            ):
                swept += [n.id for n in batch]
            results.put(("sweep", worker, swept))
            for name in ("claim", "takeover"):
                now, token = times[name], f"{name}-{worker}"
                start.wait(WAIT)
                # Every process walks the same ids in the same order: each is contended.
                won = [i for i in ids if store.claim(i, now, now + LEASE, token) is not None]
                results.put((name, worker, won))
        finally:
            store.close()
    except BaseException:
        results.put(("error", worker, traceback.format_exc()))
        start.abort()  # the others stop waiting for this one
        raise


def _add(store: SqliteStore, status: str, **fields) -> str:
    notification = Notification(
        "u1", EMAIL, "hello", email="someone@example.com", status=status, **fields
    )
    store.add(notification)
    return notification.id


def _seed(store: SqliteStore, now) -> tuple[list[str], list[str]]:
    """(due, not due): what the sweep at `now` must requeue, and what it must leave alone."""
    hour = timedelta(hours=1)
    due, not_due = [], []
    for _ in range(PER_KIND):
        due.append(_add(store, RETRY_SCHEDULED, next_retry_time=now - hour))
        due.append(_add(store, PENDING, created_at=now - hour, updated_at=now - hour))
        due.append(_add(store, SENDING, lease_until=now - hour, claim_token="gone"))
        not_due.append(_add(store, RETRY_SCHEDULED, next_retry_time=now + hour))
        not_due.append(_add(store, PENDING, created_at=now, updated_at=now))
        not_due.append(_add(store, QUEUED, created_at=now, updated_at=now))
        not_due.append(_add(store, SENDING, lease_until=now + 24 * hour, claim_token="held"))
        not_due.append(_add(store, SENT, sent_at=now - hour))
    return due, not_due


def _collect(results, processes) -> dict[str, dict[int, list[str]]]:
    """What each process won in each round; fails with a worker's traceback if one raised."""
    won: dict[str, dict[int, list[str]]] = {name: {} for name in ROUNDS}
    for _ in range(WORKERS * len(ROUNDS)):
        try:
            name, worker, payload = results.get(timeout=WAIT)
        except queue.Empty:
            codes = [p.exitcode for p in processes]
            pytest.fail(f"a racing process went silent (exit codes {codes})")
        if name == "error":
            pytest.fail(f"racing process {worker} raised:\n{payload}")
        won[name][worker] = payload
    return won


def _assert_each_won_once(won: dict[int, list[str]], expected: list[str], name: str) -> None:
    counts = Counter(i for ids in won.values() for i in ids)
    twice = {i: n for i, n in counts.items() if n > 1}
    assert not twice, f"{name}: {len(twice)} notifications claimed by more than one process"
    assert set(counts) == set(expected), f"{name}: claimed {len(counts)} of {len(expected)}"
    # Two or more processes won some: the race was run, not avoided by one finishing first.
    winners = sorted(len(ids) for ids in won.values())
    assert winners[-2] > 0, f"{name}: wins per process {winners}"


def test_processes_sharing_one_file_claim_each_notification_once_per_round(tmp_path: Path):
    path = tmp_path / "notifications.db"
    t0 = utcnow()
    store = SqliteStore(path)
    due, not_due = _seed(store, t0)
    before = {i: store.get(i) for i in not_due}
    times = {
        "sweep": t0,
        "pending_before": t0 - timedelta(minutes=1),
        "claim": t0 + timedelta(seconds=1),
        # The claim round's leases have run out: every one may be taken over, once.
        "takeover": t0 + timedelta(seconds=1) + LEASE + timedelta(seconds=1),
    }

    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(WORKERS), context.Queue()
    processes = [
        context.Process(target=_race, args=(str(path), w, due, times, start, results))
        for w in range(WORKERS)
    ]
    for process in processes:
        process.start()
    try:
        won = _collect(results, processes)
        for process in processes:
            process.join(WAIT)
        assert [p.exitcode for p in processes] == [0] * WORKERS
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join(WAIT)

    try:
        for name in ROUNDS:
            _assert_each_won_once(won[name], due, name)
        # The last claim is the one that holds: its token and lease, and one attempt a claim.
        owner = {i: w for w, ids in won["takeover"].items() for i in ids}
        for notification_id in due:
            stored = store.get(notification_id)
            assert stored.status == SENDING
            assert stored.claim_token == f"takeover-{owner[notification_id]}"
            assert stored.lease_until == times["takeover"] + LEASE
            assert stored.attempts == 2, (notification_id, stored.attempts)
        # Nothing that was not due was touched by the sweep or by a claim.
        assert {i: store.get(i) for i in not_due} == before
    finally:
        store.close()
