"""Several instances of one handler behave as one: two `queue_deliver` processes under the stock
CLI, sharing one store, are both handed every id at once (as a broker redelivering to two
consumers, or a platform running two instances, would) and each email and each text message
reaches its provider once.

Email and SMS go through the cross-process claim and its lease (in-app notifications would
skip both), so what is counted here is what the real SMTP server and the Twilio-compatible
endpoint received, per notification id.
"""

from __future__ import annotations

import re
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from common.model import EMAIL, QUEUED, SENT, SMS, Notification
from common.queue.base import encode_message
from common.store.sqlite import SqliteStore
from tests.test_deploy_stock_cli import binary_event, stock_function

PER_CHANNEL = 30
MARKER = re.compile(r"\bmarker=(\S+)")

pytestmark = pytest.mark.timeout(120)


def _count(log: str, event: str) -> Counter[str]:
    return Counter(re.findall(rf"notification=(\S+) event={event}\b", log))


def _stored(store: SqliteStore, notification_type: str) -> str:
    notification_id = str(uuid.uuid4())
    notification = Notification(
        "u1",
        notification_type,
        # The id travels in the text: the Twilio endpoint sees only To, From and Body.
        f"hello marker={notification_id}",
        email="someone@example.com" if notification_type == EMAIL else None,
        phone="+14155550123" if notification_type == SMS else None,
        subject="two deliverers",
        id=notification_id,
        status=QUEUED,
    )
    store.add(notification)
    return notification_id


def test_two_deliverers_fed_the_same_ids_send_each_email_and_sms_once(
    tmp_path: Path, smtp_server, fake_twilio
):
    data_dir = tmp_path / "data"
    store = SqliteStore(data_dir / "notifications.db")
    email_ids = [_stored(store, EMAIL) for _ in range(PER_CHANNEL)]
    sms_ids = [_stored(store, SMS) for _ in range(PER_CHANNEL)]
    ids = email_ids + sms_ids

    env = {"DATA_DIR": data_dir, **smtp_server.env(), **fake_twilio.env()}
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
        failed = [r.text[:200] for r in replies if r.status_code != 200]
        # A failure names itself: the replies and the end of each process's log.
        assert not failed, (failed, first.log()[-3000:], second.log()[-3000:])
        # Both replied, so both outcomes are stored; a late duplicate would still show up here.
        time.sleep(0.3)
        logs = {"first": first.log(), "second": second.log()}

    try:
        mails = Counter(mail.message["X-Notification-Id"] for mail in smtp_server.messages)
        bodies = [r.form.get("Body", "") for r in fake_twilio.requests]
        texts = Counter(marker for body in bodies for marker in MARKER.findall(body))
        assert {i: mails[i] for i in email_ids} == dict.fromkeys(email_ids, 1)
        assert {i: texts[i] for i in sms_ids} == dict.fromkeys(sms_ids, 1)
        assert len(smtp_server.messages) == PER_CHANNEL and len(bodies) == PER_CHANNEL
        assert {i: store.get(i).status for i in ids} == dict.fromkeys(ids, SENT)

        # Each id: one instance sent it and the other found it taken (claimed or already sent).
        sent = [_count(log, "sent") for log in logs.values()]
        skipped = [_count(log, "skipped") for log in logs.values()]
        assert {i: sum(c[i] for c in sent) for i in ids} == dict.fromkeys(ids, 1)
        assert {i: sum(c[i] for c in skipped) for i in ids} == dict.fromkeys(ids, 1)
        # Both instances did real work on both channels: the race was run, not avoided.
        for counts in sent:
            assert any(counts[i] for i in email_ids) and any(counts[i] for i in sms_ids), {
                name: sum(c.values()) for name, c in zip(logs, sent, strict=True)
            }
    finally:
        store.close()
