"""The in-process queue: deliveries run side by side, and stopping finishes them."""

from __future__ import annotations

import threading
import time

from common.queue.base import StopSignal
from common.queue.memory import MemoryQueue


def test_a_slow_delivery_does_not_hold_up_the_others():
    queue = MemoryQueue(workers=4)
    queue.publish(["slow", "a", "b", "c"])
    done: list[str] = []
    release = threading.Event()

    def handler(notification_id):
        if notification_id == "slow":
            release.wait(10)  # an SMTP server taking its time
        done.append(notification_id)

    stop = StopSignal()
    consumer = threading.Thread(target=queue.consume, args=(handler, stop))
    consumer.start()
    deadline = time.monotonic() + 5
    while len(done) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(done) == ["a", "b", "c"]  # delivered while "slow" was still in flight
    stop.set()
    release.set()
    consumer.join(10)
    assert not consumer.is_alive() and "slow" in done  # stopping waited for it


def test_a_failed_delivery_goes_back_on_the_queue():
    queue = MemoryQueue(workers=2)
    queue.publish(["flaky"])
    attempts: list[str] = []

    def handler(notification_id):
        attempts.append(notification_id)
        if len(attempts) == 1:
            raise RuntimeError("store down")

    stop = StopSignal()
    consumer = threading.Thread(target=queue.consume, args=(handler, stop))
    consumer.start()
    deadline = time.monotonic() + 10
    while len(attempts) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    consumer.join(10)
    assert attempts == ["flaky", "flaky"] and queue.depths()["messages"] == 0


def test_a_message_whose_handling_keeps_failing_goes_to_the_dead_letters():
    queue = MemoryQueue(workers=2, max_handling_failures=3)
    queue.publish(["poison", "fine"])
    handled: list[str] = []

    def handler(notification_id):
        handled.append(notification_id)
        if notification_id == "poison":
            raise RuntimeError("store down")

    stop = StopSignal()
    consumer = threading.Thread(target=queue.consume, args=(handler, stop))
    consumer.start()
    deadline = time.monotonic() + 15
    while not queue.dead_letters and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.5)  # long enough for a looping message to come back
    stop.set()
    consumer.join(10)
    assert handled.count("poison") == 3 and handled.count("fine") == 1
    [letter] = queue.dead_letters
    assert letter["notification_id"] == "poison" and "3 times" in letter["dead_letter_reason"]
    assert queue.depths() == {"messages": 0, "dead_letters": 1}
