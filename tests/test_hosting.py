"""The runner's hosting: a consumer that dies is started again, and readiness says so; an async
function takes the paths it declares, and the Flask functions the rest."""

from __future__ import annotations

import asyncio
import json

from common import runtime
from common.channels import make_channels
from common.health import readiness
from common.hosting import BackgroundWork, FunctionSpec, asgi_routes
from common.queue.memory import MemoryQueue
from common.runtime import set_service
from common.service import NotificationService
from common.serving_front import FrontApp
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


ASYNC_FUNCTION = """
import functions_framework.aio

ROUTES = ("/things/<thing_id>/feed",)


@functions_framework.aio.http
async def feed(request):
    return {"path": request.url.path, "method": request.method}
"""


def flask_side(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"wsgi " + environ["PATH_INFO"].encode()]


def call(app, method: str, path: str) -> tuple[int, bytes]:
    """One request through an ASGI app, as uvicorn would make it."""
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"localhost")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080),
    }
    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], b"".join(message.get("body", b"") for message in sent[1:])


def test_an_async_function_takes_its_routes_for_any_method_and_flask_the_rest(tmp_path):
    source = tmp_path / "feed_function.py"
    source.write_text(ASYNC_FUNCTION)
    routes = asgi_routes((FunctionSpec(str(source), "feed"),))
    assert [rule for rule, _ in routes] == ["/things/<thing_id>/feed"]
    front = FrontApp(flask_side, routes, threads=2, max_body=1024, read_timeout=5)
    try:
        status, body = call(front, "DELETE", "/things/t1/feed")
        assert (status, json.loads(body)) == (200, {"path": "/things/t1/feed", "method": "DELETE"})
        assert call(front, "GET", "/things/t1/feed/")[1].startswith(b"{")  # as Flask's routes
        assert call(front, "GET", "/things/t1") == (200, b"wsgi /things/t1")
        assert call(front, "GET", "/things/t1/feed/more") == (200, b"wsgi /things/t1/feed/more")
    finally:
        front.close()
