"""The RabbitMQ adapter against the real broker, on queues of each test's own."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time

import pika
import pytest
from pika.adapters.utils.connection_workflow import AMQPConnectorStackTimeout

from common.queue.base import QueueUnavailable, StopSignal
from common.queue.rabbitmq import RabbitQueue
from tests.support.rabbit_node import private_broker_fixture  # noqa: F401 (fixture)
from tests.support.waits import wait_for

pytestmark = pytest.mark.rabbitmq


@pytest.fixture
def rabbit(rabbit_url, queue_names):
    main, dead = queue_names
    queue = RabbitQueue(rabbit_url, queue_name=main, dead_letter_queue=dead, prefetch_count=4)
    yield queue
    queue.close()


def peek(url: str, name: str):
    """Take one message off a queue: (properties, body) or None."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        method, properties, body = connection.channel().basic_get(name, auto_ack=True)
        return (properties, body) if method else None
    finally:
        connection.close()


def declared(url: str, name: str):
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        return connection.channel().queue_declare(name, passive=True).method
    finally:
        connection.close()


def run_consumer(queue, handler):
    stop = StopSignal()
    thread = threading.Thread(target=queue.consume, args=(handler, stop), daemon=True)
    thread.start()
    return stop, thread


def test_publish_is_persistent_on_durable_queues(rabbit, rabbit_url, queue_names):
    rabbit.publish(["id-1", "id-2"])
    assert rabbit.depths() == {"messages": 2, "dead_letters": 0}
    properties, body = peek(rabbit_url, queue_names[0])
    assert json.loads(body) == {"notification_id": "id-1"}
    assert properties.delivery_mode == 2  # persistent: survives a broker restart
    # Redeclaring as durable succeeds only if the queue is durable already.
    connection = pika.BlockingConnection(pika.URLParameters(rabbit_url))
    connection.channel().queue_declare(queue_names[0], durable=True)
    connection.close()


def test_dead_letters_go_to_their_own_queue(rabbit, rabbit_url, queue_names):
    rabbit.publish_dead_letter({"id": "n-1", "status": "failed_permanently"})
    _, body = peek(rabbit_url, queue_names[1])
    assert json.loads(body)["id"] == "n-1"


def test_an_unroutable_publish_is_not_counted_as_queued(rabbit_url, queue_names):
    queue = RabbitQueue(rabbit_url, queue_name=queue_names[0], dead_letter_queue=queue_names[1])
    queue.publish(["warm-up"])  # opens the connection and declares the queues
    queue.queue_name = "no_such_queue_" + queue_names[0]  # now the routing key leads nowhere
    with pytest.raises(QueueUnavailable):
        queue.publish(["lost"])
    queue.close()


def test_an_unreachable_broker_raises_queue_unavailable():
    queue = RabbitQueue("amqp://guest:guest@127.0.0.1:1/%2F", connect_timeout=1)
    with pytest.raises(QueueUnavailable):
        queue.publish(["x"])
    assert queue.depths() is None


def test_the_publisher_reconnects_after_its_connection_drops(rabbit):
    rabbit.publish(["before"])
    # The broker went away under us: the socket sees end-of-stream on its next use.
    rabbit._publisher.connection._transport._sock.shutdown(socket.SHUT_RDWR)
    rabbit.publish(["after"])
    assert rabbit.depths()["messages"] == 2


def test_depths_survive_their_idle_connection_being_dropped(rabbit):
    rabbit.publish(["one"])
    assert rabbit.depths()["messages"] == 1
    # Idle between /stats calls, the depth connection's heartbeats go unanswered and the
    # broker drops it: the next call must still answer, not report the depth unknown.
    rabbit._connection._impl._transport._sock.shutdown(socket.SHUT_RDWR)
    assert rabbit.depths() == {"messages": 1, "dead_letters": 0}


def test_the_publisher_keeps_one_connection_across_publishes(rabbit):
    rabbit.publish(["a"])
    first = rabbit._publisher.connection
    for index in range(20):
        rabbit.publish([f"more-{index}"])
    rabbit.publish_dead_letter({"id": "dead"})
    assert rabbit._publisher.connection is first  # no connection per message
    assert rabbit.depths() == {"messages": 21, "dead_letters": 1}


def test_prefetch_bounds_the_deliveries_in_flight(rabbit_url, queue_names):
    queue = RabbitQueue(
        rabbit_url,
        queue_name=queue_names[0],
        dead_letter_queue=queue_names[1],
        prefetch_count=2,
        workers=8,
    )
    queue.publish([f"id-{i}" for i in range(8)])
    lock, release = threading.Lock(), threading.Event()
    running, most = [0], [0]

    def handler(notification_id):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        release.wait(0.3)
        with lock:
            running[0] -= 1

    stop, thread = run_consumer(queue, handler)
    assert wait_for(lambda: queue.depths()["messages"] == 0, timeout=20)
    stop.set()
    thread.join(10)
    queue.close()
    assert most[0] == 2  # eight worker threads, but the broker hands out two at a time


def test_consumer_acks_only_after_the_handler_returns(rabbit, queue_names):
    # Ready counts cannot tell an ack from a delivery: the broker's unacknowledged count can.
    held = [f"held-{i}" for i in range(3)]
    rabbit.publish(held)
    seen: list[str] = []
    lock, release = threading.Lock(), threading.Event()

    def handler(notification_id):
        with lock:
            seen.append(notification_id)
        assert release.wait(30), "the test never released the handler"

    stop, thread = run_consumer(rabbit, handler)
    try:
        assert wait_for(lambda: len(seen) == len(held))
        # Handed out, and still unacknowledged well after delivery (rabbitmqctl itself takes
        # a second or two to answer): an early ack would have been counted by now.
        time.sleep(0.5)
        assert queue_counts(queue_names[0]) == {"ready": 0, "unacked": len(held)}
        release.set()
        # Acked once the handlers returned, while the consumer is still connected.
        assert wait_for_counts(queue_names[0], {"ready": 0, "unacked": 0})
    finally:
        release.set()
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
    # Closing the consumer returns whatever it left unacked to ready: nothing came back.
    assert rabbit.depths()["messages"] == 0
    assert sorted(seen) == sorted(held)


def test_a_handler_failure_puts_the_message_back(rabbit):
    rabbit.publish(["flaky"])
    attempts: list[str] = []

    def handler(notification_id):
        attempts.append(notification_id)
        if len(attempts) == 1:
            raise RuntimeError("store down")

    stop, thread = run_consumer(rabbit, handler)
    assert wait_for(lambda: len(attempts) == 2)
    stop.set()
    thread.join(10)
    assert attempts == ["flaky", "flaky"] and rabbit.depths()["messages"] == 0


def test_stopping_finishes_in_flight_deliveries(rabbit):
    rabbit.publish(["slow"])
    started, finished = threading.Event(), threading.Event()

    def handler(notification_id):
        started.set()
        time.sleep(1.0)
        finished.set()

    stop, thread = run_consumer(rabbit, handler)
    assert started.wait(10)
    stop.set()
    thread.join(10)
    assert finished.is_set()
    assert rabbit.depths()["messages"] == 0  # acked before the consumer closed


def take_dead_letters(url: str, name: str) -> list[dict]:
    letters = []
    while (message := peek(url, name)) is not None:
        letters.append(json.loads(message[1]))
    return letters


def test_a_malformed_message_goes_to_the_dead_letter_queue_with_the_reason(
    rabbit, rabbit_url, queue_names
):
    rabbit.publish(["good"])  # declares the queues
    connection = pika.BlockingConnection(pika.URLParameters(rabbit_url))
    connection.channel().basic_publish("", queue_names[0], b"not json")
    connection.close()
    seen: list[str] = []
    stop, thread = run_consumer(rabbit, seen.append)
    assert wait_for(lambda: seen == ["good"])
    assert wait_for(lambda: rabbit.depths() == {"messages": 0, "dead_letters": 1})
    stop.set()
    thread.join(10)
    [letter] = take_dead_letters(rabbit_url, queue_names[1])
    assert letter["notification_id"] is None and letter["message"] == "not json"
    assert letter["dead_letter_reason"].startswith("malformed message")


def test_a_message_whose_handling_keeps_failing_is_dead_lettered_not_looped(
    rabbit_url, queue_names
):
    main, dead = queue_names
    queue = RabbitQueue(
        rabbit_url, queue_name=main, dead_letter_queue=dead, max_handling_failures=3
    )
    queue.publish(["poison", "fine"])
    handled: list[str] = []

    def handler(notification_id):
        handled.append(notification_id)
        if notification_id == "poison":
            raise RuntimeError("no such table: notifications")

    stop, thread = run_consumer(queue, handler)
    try:
        assert wait_for(lambda: queue.depths() == {"messages": 0, "dead_letters": 1}, 20)
        time.sleep(1.5)  # long enough for a looping message to come back
        assert handled.count("poison") == 3 and handled.count("fine") == 1
    finally:
        stop.set()
        thread.join(10)
        queue.close()
    [letter] = take_dead_letters(rabbit_url, dead)
    assert letter["notification_id"] == "poison"
    assert (
        "3 times" in letter["dead_letter_reason"]
        and "no such table" in letter["dead_letter_reason"]
    )


def test_the_consumer_survives_errors_that_are_not_amqp_errors(rabbit, monkeypatch):
    """pika's AMQPConnectorStackTimeout (a reconnect that hangs) is no AMQPError: it used to end
    the consumer thread for good while the API kept accepting notifications."""
    real_consume_once = rabbit._consume_once
    failures = iter([AMQPConnectorStackTimeout("reconnect hung"), None])

    def flaky(*args):
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return real_consume_once(*args)

    monkeypatch.setattr(rabbit, "_consume_once", flaky)
    rabbit.publish(["after-the-failure"])
    seen: list[str] = []
    stop, thread = run_consumer(rabbit, seen.append)
    try:
        assert wait_for(lambda: seen == ["after-the-failure"], 15)
        assert thread.is_alive()
    finally:
        stop.set()
        thread.join(10)


def test_publish_and_depths_answer_within_their_bound_when_the_broker_is_silent():
    """A listener that accepts TCP connections and never speaks: the frozen-broker case."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    port = silent.getsockname()[1]
    queue = RabbitQueue(f"amqp://guest:guest@127.0.0.1:{port}/%2F", publish_timeout=0.5)
    try:
        for _ in range(3):
            started = time.monotonic()
            with pytest.raises(QueueUnavailable):
                queue.publish(["x"])
            assert time.monotonic() - started < 1.0
        started = time.monotonic()
        assert queue.depths(timeout=0.5) is None and queue.depths(timeout=0.5) is None
        assert time.monotonic() - started < 1.5
    finally:
        queue.close()
        silent.close()


def test_messages_survive_a_broker_restart_and_the_publisher_reconnects(private_broker):
    """The seed's promise, tried for real on a private node (the machine's broker is never
    restarted): stop and start the broker between publish and use."""
    names = (f"restart_{time.monotonic_ns()}", f"restart_dlq_{time.monotonic_ns()}")
    rabbit = RabbitQueue(private_broker.url, queue_name=names[0], dead_letter_queue=names[1])
    try:
        rabbit.publish(["kept-1", "kept-2"])
        private_broker.stop_app()
        private_broker.start_app()
        assert wait_for(lambda: (rabbit.depths() or {}).get("messages") == 2, timeout=30)
        # The publisher's connection died with the broker: it reconnects (within its bound).
        assert wait_for(lambda: _published(rabbit, "after-restart"), timeout=10)
        assert rabbit.depths()["messages"] == 3
    finally:
        rabbit.close()
        private_broker.delete_queues(*names)


def _published(queue, notification_id) -> bool:
    try:
        queue.publish([notification_id])
        return True
    except QueueUnavailable:
        return False


def queue_counts(name: str) -> dict[str, int] | None:
    """Ready and unacknowledged messages of one queue, as the broker itself counts them."""
    listing = subprocess.run(
        [
            "rabbitmqctl",
            "list_queues",
            "--quiet",
            "--formatter",
            "json",
            "name",
            "messages_ready",
            "messages_unacknowledged",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    )
    for queue in json.loads(listing.stdout):
        if queue["name"] == name:
            return {"ready": queue["messages_ready"], "unacked": queue["messages_unacknowledged"]}
    return None


def wait_for_counts(name: str, expected: dict[str, int], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if queue_counts(name) == expected:
            return True
        time.sleep(0.2)
    return False
