"""Delivery: in-app notifications sent per second by one runner from a queued backlog.

The backlog is written straight into the store (status queued) and the broker before the
runner starts; the rate is taken from the service's own `sent_at` stamps (first to last), so
the runner's start-up time is not counted. The reference is pika alone on the same broker:
consume and ack the same number of messages with the runner's prefetch.
"""

from __future__ import annotations

import sqlite3
import time

import pika

from bench.harness import RABBITMQ_URL, Server, Workspace, median, wait_for_status
from bench.report import Row, rate
from common.config import Settings
from common.model import QUEUED, Notification
from common.queue.base import encode_message
from common.store.sqlite import SqliteStore

PREFETCH = Settings().prefetch_count


def _publish(queue: str, ids: list[str]) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
    try:
        channel = connection.channel()
        channel.queue_declare(queue, durable=True)
        properties = pika.BasicProperties(delivery_mode=2)
        for notification_id in ids:
            channel.basic_publish("", queue, encode_message(notification_id), properties)
        # A passive declare is a round trip: every publish before it has reached the broker.
        channel.queue_declare(queue, passive=True)
    finally:
        connection.close()


def _backlog(space: Workspace, count: int) -> None:
    store = SqliteStore(space.db_path)
    notifications = [
        Notification(f"deliver-{i % 500}", "in_app", f"backlog {i}", status=QUEUED)
        for i in range(count)
    ]
    store.add_many(notifications)
    store.close()
    _publish(space.queue, [n.id for n in notifications])


def _runner_rate(count: int) -> dict:
    space = Workspace("delivery")
    try:
        _backlog(space, count)
        server = Server.runner(space)
        try:
            sent = wait_for_status(space.db_path, "sent", count, timeout=count / 200 + 60)
        finally:
            server.stop()
        with sqlite3.connect(space.db_path) as db:
            first, last = db.execute(
                "SELECT MIN(sent_at), MAX(sent_at) FROM notifications WHERE status = 'sent'"
            ).fetchone()
        seconds = max((last - first) / 1000, 0.001)
        return {"sent": sent, "seconds": seconds, "per_second": (sent - 1) / seconds}
    finally:
        space.cleanup()


def _pika_rate(count: int) -> dict:
    """pika alone: consume and ack `count` persistent messages, one ack per message."""
    space = Workspace("pika")
    try:
        _publish(space.queue, [f"id-{i}" for i in range(count)])
        connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
        channel = connection.channel()
        channel.basic_qos(prefetch_count=PREFETCH)
        received = 0
        started = time.perf_counter()

        def on_message(channel, method, _properties, _body):
            nonlocal received
            channel.basic_ack(method.delivery_tag)
            received += 1
            if received >= count:
                channel.stop_consuming()

        channel.basic_consume(space.queue, on_message)
        channel.start_consuming()
        seconds = time.perf_counter() - started
        connection.close()
        return {"received": received, "seconds": seconds, "per_second": received / seconds}
    finally:
        space.cleanup()


def run(runs: int, backlog: int) -> dict:
    runner, reference = [], []
    for _ in range(runs):
        reference.append(_pika_rate(backlog))
        runner.append(_runner_rate(backlog))
    per_second = median([r["per_second"] for r in runner])
    pika_rate = median([r["per_second"] for r in reference])
    complete = all(r["sent"] >= backlog for r in runner)
    row = Row(
        f"delivery: in-app from a backlog of {backlog:,}",
        rate(per_second) + ("" if complete else " (INCOMPLETE)"),
        f"pika consume+ack {rate(pika_rate)}",
        f"{per_second / pika_rate:.2f}",
        "≥ 3,000/s",
        complete and per_second >= 3000,
    )
    return {"rows": [row.to_dict()], "raw": {"runner": runner, "pika": reference}}
