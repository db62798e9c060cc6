"""A caller's W3C traceparent follows its notification: stored, carried as an AMQP header and
a CloudEvent extension, and in every log line of its acceptance and delivery as trace_id=."""

from __future__ import annotations

import logging
import threading

import pika
import pytest

from common import tracing
from common.channels import make_channels
from common.config import load_settings
from common.events import delivery_event
from common.hosting import DELIVER, HTTP_FUNCTIONS, BackgroundWork, FunctionRouter, load_function
from common.logs import FORMAT, OneLineFormatter
from common.queue.base import StopSignal
from common.queue.memory import MemoryQueue
from common.queue.rabbitmq import RabbitQueue
from common.runtime import set_service
from common.service import NotificationService
from common.store.sqlite import SqliteStore
from common.tracing import TraceContextFilter, parse_traceparent, traced
from tests.support.auth import AuthClient
from tests.support.services import installed_service
from tests.support.waits import wait_for

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
OTHER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
INVALID = "00-00000000000000000000000000000000-00f067aa0ba902b7-01"


@pytest.mark.parametrize(
    "value",
    [
        TRACEPARENT,
        OTHER,
        f" {TRACEPARENT} ",  # surrounding blanks are dropped
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",  # a later version
    ],
)
def test_valid_traceparents_are_kept(value):
    assert parse_traceparent(value) == value.strip()
    assert tracing.trace_id_of(parse_traceparent(value)) == value.strip()[3:35]


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        42,
        INVALID,  # an all-zero trace id
        f"00-{TRACE_ID}-0000000000000000-01",  # an all-zero parent id
        f"ff-{TRACE_ID}-00f067aa0ba902b7-01",  # version ff is forbidden
        TRACEPARENT.upper(),  # hex must be lowercase
        TRACEPARENT[:-1],
        TRACEPARENT + "0",
        f"00-{TRACE_ID}-00f067aa0ba902b7",
        f"00-{TRACE_ID}-00f067aa0ba902bz-01",
        TRACEPARENT + "\n00-evil",
    ],
)
def test_invalid_traceparents_are_ignored(value):
    assert parse_traceparent(value) is None
    with traced(value):
        assert tracing.current_traceparent() is None


def test_the_log_line_carries_the_trace_id_only_inside_the_context():
    formatter, trace_filter = OneLineFormatter(FORMAT), TraceContextFilter()

    def line(message: str) -> str:
        record = logging.LogRecord("notifications", logging.INFO, __file__, 1, message, (), None)
        trace_filter.filter(record)
        return formatter.format(record)

    with traced(TRACEPARENT):
        with traced(None):  # a nested untraced block does not inherit the outer trace
            assert line("event=inner").endswith("event=inner")
        assert line("notification=n1 event=sent").endswith(f"event=sent trace_id={TRACE_ID}")
    assert line("event=after").endswith("event=after")


# -- end to end ----------------------------------------------------------------------------


@pytest.fixture
def traced_logs(caplog):
    caplog.set_level(logging.INFO)
    caplog.handler.addFilter(TraceContextFilter())
    return caplog


def trace_ids(caplog, notification_id: str) -> dict[str, str | None]:
    """{event name: trace_id} of the log lines about one notification."""
    found = {}
    for record in caplog.records:
        message = record.getMessage()
        if f"notification={notification_id} " in message:
            event = message.split("event=", 1)[1].split(" ", 1)[0]
            found[event] = record.trace_id
    return found


def send_router() -> FunctionRouter:
    return FunctionRouter(tuple(s for s in HTTP_FUNCTIONS if s.target == "http_send"))


@pytest.mark.rabbitmq
def test_one_request_is_followed_through_rabbitmq_to_its_delivery(
    settings_env, smtp_server, rabbit_url, queue_names, traced_logs
):
    settings = load_settings({**settings_env, **smtp_server.env()})
    main, dead = queue_names
    queue = RabbitQueue(rabbit_url, queue_name=main, dead_letter_queue=dead)
    service = NotificationService(
        settings, SqliteStore(settings.data_dir / "n.db"), queue, make_channels(settings)
    )
    set_service(service)
    work = BackgroundWork(sweep_interval=60)
    events = []
    deliver = work.deliver
    work.deliver = lambda event: (events.append(event), deliver(event))
    client = AuthClient(send_router())
    try:
        work.start()
        payload = {"user_id": "u1", "notification_type": "email", "email": "a@example.com"}
        payload["message"] = "hi"
        traced_reply = client.post("/notifications", json=payload, headers={"traceparent": OTHER})
        plain_reply = client.post("/notifications", json=payload, headers={"traceparent": INVALID})
        ids = [traced_reply.get_json()["id"], plain_reply.get_json()["id"]]
        assert wait_for(lambda: all(service.get(i).status == "sent" for i in ids))
    finally:
        work.stop(timeout=10)
        queue.close()
        set_service(None)

    first, second = ids
    assert service.get(first).traceparent == OTHER
    assert service.get(second).traceparent is None  # the invalid header was ignored
    by_id = {e.data["notification_id"]: e for e in events}
    assert by_id[first].get("traceparent") == OTHER
    assert by_id[second].get("traceparent") is None
    other_id = OTHER[3:35]
    assert trace_ids(traced_logs, first) == {"accepted": other_id, "sent": other_id}
    assert trace_ids(traced_logs, second) == {"accepted": None, "sent": None}


@pytest.mark.rabbitmq
def test_the_amqp_message_carries_the_header_and_the_consumer_its_context(rabbit_url, queue_names):
    main, dead = queue_names
    queue = RabbitQueue(rabbit_url, queue_name=main, dead_letter_queue=dead)
    try:
        queue.publish(["traced", "plain"], traceparents={"traced": TRACEPARENT})
        connection = pika.BlockingConnection(pika.URLParameters(rabbit_url))
        channel = connection.channel()
        headers = []
        for _ in range(2):
            _method, properties, _body = channel.basic_get(main, auto_ack=False)
            headers.append(properties.headers)
            assert properties.delivery_mode == 2
        connection.close()  # unacked: both go back on the queue
        assert headers == [{"traceparent": TRACEPARENT}, None]

        seen: dict[str, list] = {"traced": [], "plain": []}
        done = threading.Event()

        def handler(notification_id: str) -> None:
            seen[notification_id].append(tracing.current_traceparent())
            if notification_id == "traced" and len(seen["traced"]) == 1:
                raise RuntimeError("the store is down")  # requeued: the header must stay
            if seen["traced"][1:] and seen["plain"]:
                done.set()

        stop = StopSignal()
        consumer = threading.Thread(target=queue.consume, args=(handler, stop), daemon=True)
        consumer.start()
        assert done.wait(15)
        stop.set()
        consumer.join(10)
    finally:
        queue.close()
    assert seen == {"traced": [TRACEPARENT, TRACEPARENT], "plain": [None]}


def test_the_memory_queue_carries_the_context_to_its_consumer():
    queue = MemoryQueue(workers=2)
    queue.publish(["traced", "plain"], traceparents={"traced": TRACEPARENT})
    seen = {}
    stop = StopSignal()

    def handler(notification_id: str) -> None:
        seen[notification_id] = tracing.current_traceparent()
        if len(seen) == 2:
            stop.set()

    queue.consume(handler, stop)
    assert seen == {"traced": TRACEPARENT, "plain": None}


def test_a_message_without_one_is_traced_by_the_stored_notification(settings, traced_logs):
    """The sweep republishes without headers: the deliverer uses the claimed record's own."""
    service = installed_service(settings)
    try:
        reply = AuthClient(send_router()).post(
            "/notifications/batch",
            json={
                "notifications": [{"user_id": "u1", "notification_type": "in_app", "message": "m"}]
            },
            headers={"traceparent": TRACEPARENT},
        )
        notification_id = reply.get_json()["results"][0]["id"]
        assert service.get(notification_id).traceparent == TRACEPARENT
        _, deliver_module = load_function(DELIVER)
        deliver_module.queue_deliver(delivery_event(notification_id))  # no traceparent
    finally:
        set_service(None)
    assert trace_ids(traced_logs, notification_id) == {"sent": TRACE_ID}
    batch_lines = [r for r in traced_logs.records if "event=batch_accepted" in r.getMessage()]
    assert [r.trace_id for r in batch_lines] == [TRACE_ID]  # a batch logs one line for all
