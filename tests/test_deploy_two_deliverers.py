"""Several instances of one handler behave as one: two `queue_deliver` processes under the stock
CLI, sharing one store, are both handed every id at once (as a broker redelivering to two
consumers, or a platform running two instances, would) and deliver each notification once."""

from __future__ import annotations

import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from common.model import QUEUED, SENT, Notification
from common.queue.base import encode_message
from common.store.sqlite import SqliteStore
from tests.test_deploy_stock_cli import binary_event, stock_function

N = 60

pytestmark = pytest.mark.timeout(120)


def _count(log: str, event: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for notification_id in re.findall(rf"notification=(\S+) event={event}\b", log):
        counts[notification_id] = counts.get(notification_id, 0) + 1
    return counts


def test_two_deliverers_fed_the_same_ids_deliver_each_notification_once(tmp_path: Path):
    data_dir = tmp_path / "data"
    store = SqliteStore(data_dir / "notifications.db")
    ids = []
    for index in range(N):
        notification = Notification("u1", "in_app", f"message {index}", status=QUEUED)
        store.add(notification)
        ids.append(notification.id)

    env = {"DATA_DIR": data_dir}
    deliverer = ("queue_deliver.py", "queue_deliver")
    with (
        stock_function(*deliverer, env, signature_type="cloudevent") as first,
        stock_function(*deliverer, env, signature_type="cloudevent") as second,
    ):
        # Every id to both processes, all at once; each event with its own id, as two
        # deliveries of one message are two events.
        jobs = [(url, notification_id) for notification_id in ids for url in (first, second)]
        with ThreadPoolExecutor(max_workers=16) as pool:
            replies = list(
                pool.map(
                    lambda job: binary_event(job[0], encode_message(job[1]), id=str(uuid.uuid4())),
                    jobs,
                )
            )
        assert [r.status_code for r in replies] == [200] * len(jobs)
        time.sleep(0.3)  # let the last log lines reach the files
        logs = {"first": first.log(), "second": second.log()}

    try:
        assert all(store.get(i).status == SENT for i in ids)
        sent = [_count(log, "sent") for log in logs.values()]
        skipped = [_count(log, "skipped") for log in logs.values()]
        for notification_id in ids:
            assert sum(c.get(notification_id, 0) for c in sent) == 1, notification_id
            assert sum(c.get(notification_id, 0) for c in skipped) == 1, notification_id
        assert sum(sum(c.values()) for c in sent) == N
        # Both instances did real work: the race was run, not avoided.
        assert all(sum(c.values()) > 0 for c in sent), {
            k: len(v) for k, v in zip(logs, sent, strict=True)
        }
    finally:
        store.close()
