"""The runner's background work: a consumer that dies is started again, and readiness says so."""

from __future__ import annotations

from common import runtime
from common.channels import make_channels
from common.health import readiness
from common.hosting import BackgroundWork
from common.queue.memory import MemoryQueue
from common.runtime import set_service
from common.service import NotificationService
from common.store.sqlite import SqliteStore
from tests.support.waits import wait_for


class DyingOnceQueue(MemoryQueue):
    """Its first consumer dies of an unexpected error, as a pika bug or a broken socket could."""

    def __init__(self):
        super().__init__(workers=2)
        self.deaths = 0

    def consume(self, handler, stop):
        if self.deaths == 0:
            self.deaths += 1
            raise RuntimeError("consumer crashed")
        super().consume(handler, stop)


def test_a_consumer_that_dies_is_restarted_and_delivers(settings):
    queue = DyingOnceQueue()
    service = NotificationService(
        settings, SqliteStore(settings.data_dir / "n.db"), queue, make_channels(settings)
    )
    set_service(service)
    work = BackgroundWork(sweep_interval=60)
    try:
        work.start()
        assert wait_for(lambda: work.consumer.restarts == 1 and work.consumer.running)
        assert "consumer crashed" in work.consumer.last_error
        sent = service.submit({"user_id": "u1", "notification_type": "in_app", "message": "m"})
        assert wait_for(lambda: service.get(sent.id).status == "sent")
        report = readiness()
        assert report["ready"] and report["checks"]["consumer"]["restarts"] == 1
    finally:
        work.stop(timeout=10)
        set_service(None)
        runtime.consumer_state = None
    assert not work.consumer.running


def test_readiness_fails_while_the_consumer_is_down(settings):
    service = NotificationService(
        settings, SqliteStore(settings.data_dir / "n.db"), MemoryQueue(), make_channels(settings)
    )
    set_service(service)
    runtime.consumer_state = runtime.ConsumerState(running=False, last_error="RuntimeError()")
    try:
        report = readiness()
    finally:
        runtime.consumer_state = None
        set_service(None)
    assert not report["ready"] and report["checks"]["store"]["ok"]
    assert report["checks"]["consumer"] == {
        "ok": False,
        "detail": "stopped: RuntimeError()",
        "restarts": 0,
    }
