"""The RabbitMQ adapter against the real broker, on queues of each test's own."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time

import pika
import pytest

from common.queue.base import QueueUnavailable, StopSignal
from common.queue.rabbitmq import RabbitQueue

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


def wait_for(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


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


def test_consumer_acks_only_after_the_handler_returns(rabbit):
    rabbit.publish([f"id-{i}" for i in range(20)])
    seen: list[str] = []
    lock = threading.Lock()

    def handler(notification_id):
        with lock:
            seen.append(notification_id)

    stop, thread = run_consumer(rabbit, handler)
    assert wait_for(lambda: len(seen) == 20)
    stop.set()
    thread.join(10)
    assert not thread.is_alive()
    assert sorted(seen) == sorted(f"id-{i}" for i in range(20))
    assert rabbit.depths()["messages"] == 0


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


def test_a_malformed_message_is_dropped_not_redelivered_forever(rabbit, rabbit_url, queue_names):
    connection = pika.BlockingConnection(pika.URLParameters(rabbit_url))
    connection.channel().basic_publish("", queue_names[0], b"not json")
    connection.close()
    rabbit.publish(["good"])
    seen: list[str] = []
    stop, thread = run_consumer(rabbit, seen.append)
    assert wait_for(lambda: seen == ["good"])
    assert wait_for(lambda: rabbit.depths()["messages"] == 0)
    stop.set()
    thread.join(10)


def test_messages_survive_a_broker_restart_and_the_publisher_reconnects(rabbit, rabbit_url):
    """The seed's promise, tried for real: stop and start the broker between publish and use."""
    rabbit.publish(["kept-1", "kept-2"])
    try:
        subprocess.run(["rabbitmqctl", "stop_app"], check=True, capture_output=True, timeout=120)
    finally:
        # Whatever happens, leave the broker running for every test after this one.
        subprocess.run(["rabbitmqctl", "start_app"], check=True, capture_output=True, timeout=120)
        subprocess.run(
            [sys.executable, "scripts/wait_for_broker.py", "--timeout", "60", "--url", rabbit_url],
            check=True,
            capture_output=True,
        )
    assert wait_for(lambda: (rabbit.depths() or {}).get("messages") == 2, timeout=30)
    rabbit.publish(["after-restart"])  # the publisher's connection died with the broker
    assert rabbit.depths()["messages"] == 3
