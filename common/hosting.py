"""What the local runner adds around the functions: one port for all of them, the queue
consumer bound to `queue_deliver`, and the timer that fires `cron_retry_sweep`.

It adds no behaviour a deployed function lacks: requests reach each function's own app
(functions-framework's Flask `create_app`, or `aio.create_asgi_app` for an async function)
unchanged, and events reach the functions as CloudEvents.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import functions_framework
import functions_framework.aio
from cloudevents.http import CloudEvent
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule

from common.cors import is_inbox_path
from common.events import delivery_event
from common.http import error_response, method_not_allowed
from common.model import utcnow
from common.queue.base import StopSignal
from common.queue.memory import MemoryQueue
from common.tracing import current_traceparent

log = logging.getLogger("notifications.runner")

ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS_DIR = ROOT / "functions"


@dataclass(frozen=True)
class FunctionSpec:
    source: str  # file name under functions/
    target: str
    signature: str = "http"

    @property
    def path(self) -> Path:
        return FUNCTIONS_DIR / self.source


# Every HTTP function the runner serves, in the order their routes are matched.
HTTP_FUNCTIONS = (
    FunctionSpec("http_send.py", "http_send"),
    FunctionSpec("http_notifications.py", "http_notifications"),
    FunctionSpec("http_inbox.py", "http_inbox"),
    FunctionSpec("http_access.py", "http_access"),
    FunctionSpec("http_templates.py", "http_templates"),
    FunctionSpec("http_preferences.py", "http_preferences"),
    FunctionSpec("http_suppressions.py", "http_suppressions"),
    FunctionSpec("http_webhooks.py", "http_webhooks"),
    FunctionSpec("http_unsubscribe.py", "http_unsubscribe"),
    FunctionSpec("http_providers.py", "http_providers"),
    FunctionSpec("http_stats.py", "http_stats"),
    FunctionSpec("http_metrics.py", "http_metrics"),
    FunctionSpec("http_web.py", "http_web"),
    FunctionSpec("http_openapi.py", "http_openapi"),
    FunctionSpec("http_health.py", "http_health"),
    FunctionSpec("cron_retry_sweep.py", "http_retry_sweep"),
)
# The async functions (functions_framework.aio), served on the event loop: each declares its
# paths in a module-level ROUTES (werkzeug rules, any method), matched before HTTP_FUNCTIONS.
ASGI_FUNCTIONS = (FunctionSpec("http_stream.py", "http_stream"),)
DELIVER = FunctionSpec("queue_deliver.py", "queue_deliver", "cloudevent")
SWEEP = FunctionSpec("cron_retry_sweep.py", "cron_retry_sweep", "cloudevent")


def load_function(spec: FunctionSpec) -> tuple[Any, Any]:
    """(Flask app, module) for one function, loaded exactly as functions-framework loads it."""
    app = functions_framework.create_app(spec.target, str(spec.path), spec.signature)
    module = sys.modules[spec.path.stem]  # functions-framework registers it by file name
    return app, module


def load_asgi_function(spec: FunctionSpec) -> tuple[Any, Any]:
    """(Starlette app, module) for one async function, as functions-framework's --asgi loads it."""
    app = functions_framework.aio.create_asgi_app(spec.target, str(spec.path), spec.signature)
    module = sys.modules[spec.path.stem]
    return app, module


def asgi_routes(specs=ASGI_FUNCTIONS) -> list[tuple[str, Any]]:
    """(werkzeug rule, ASGI app) for every route of every async function, for the server's
    front app (common/serving_front.py)."""
    routes: list[tuple[str, Any]] = []
    for spec in specs:
        app, module = load_asgi_function(spec)
        routes.extend((rule, app) for rule in module.ROUTES)
    return routes


class FunctionRouter:
    """One WSGI app in front of many functions, routing by each function's declared routes."""

    def __init__(self, specs=HTTP_FUNCTIONS):
        self.apps: dict[str, Any] = {}
        self.rules: list[tuple[str, tuple[str, ...], str]] = []
        self.url_map = Map(strict_slashes=False, merge_slashes=False)
        for spec in specs:
            app, module = load_function(spec)
            self.apps[spec.target] = app
            for route in module.router.routes:
                self.url_map.add(
                    Rule(route.rule, methods=list(route.methods), endpoint=spec.target)
                )
                self.rules.append((route.rule, route.methods, spec.target))

    def __call__(self, environ, start_response):
        adapter = self.url_map.bind_to_environ(environ)
        try:
            target, _ = adapter.match()
        except MethodNotAllowed as error:
            method = environ.get("REQUEST_METHOD", "")
            if method == "OPTIONS" and is_inbox_path(environ.get("PATH_INFO", "")):
                # A CORS preflight: the function's own Router answers it (common/cors.py).
                target, _ = adapter.match(method=next(iter(error.valid_methods)))
                return self.apps[target](environ, start_response)
            return method_not_allowed(method, error.valid_methods)(environ, start_response)
        except NotFound:
            path = environ.get("PATH_INFO", "")
            return error_response(404, f"no route for {path}")(environ, start_response)
        return self.apps[target](environ, start_response)


def _call_event_function(function: Callable, event: CloudEvent) -> None:
    try:
        function(event)
    except HTTPException as error:  # a 4xx from the function: the event is not worth retrying
        log.error("event=rejected_event status=%s id=%s", error.code, event["id"])


# A consumer thread that ends without being asked to is started again after this long.
CONSUMER_RESTART_DELAY = 1.0


class BackgroundWork:
    """The consumer thread (queue -> queue_deliver) and the sweep timer (-> cron_retry_sweep),
    each supervised: whatever ends one that was not asked to stop, it is started again."""

    def __init__(self, sweep_interval: float):
        from common import runtime

        self.service = runtime.get_service()
        _, deliver_module = load_function(DELIVER)
        _, sweep_module = load_function(SWEEP)
        self.deliver: Callable = deliver_module.queue_deliver
        self.sweep: Callable = sweep_module.cron_retry_sweep
        self.sweep_interval = sweep_interval
        self.stop_signal = StopSignal()
        self.threads: list[threading.Thread] = []
        # Set when the broker is back: the sweep runs at once for what waited meanwhile.
        self._sweep_now = threading.Event()
        self._connected_before = False
        self.consumer = runtime.consumer_state = runtime.ConsumerState()

    def start(self) -> None:
        started_at = utcnow()
        if isinstance(self.service.queue, MemoryQueue):
            # The in-process queue starts empty: whatever a previous run had queued is requeued.
            report = self.service.recover_in_process_queue(started_at)
            if report.requeued:
                log.info("event=recovered_after_restart requeued=%d", report.requeued)
        self.service.queue.on_connected(self._broker_connected)
        self.threads = [
            threading.Thread(target=self._supervise_consumer, name="consumer", daemon=True),
            threading.Thread(target=self._tick, name="sweep-timer", daemon=True),
        ]
        for thread in self.threads:
            thread.start()
        log.info("event=background_started sweep_interval=%.1fs", self.sweep_interval)

    def _broker_connected(self) -> None:
        if self._connected_before:
            log.info("event=broker_reconnected sweep=now")
            self._sweep_now.set()
        self._connected_before = True

    def _supervise_consumer(self) -> None:
        def handle(notification_id: str) -> None:
            # The queue runs this in the message's trace context: the event carries it on.
            event = delivery_event(notification_id, traceparent=current_traceparent())
            _call_event_function(self.deliver, event)

        while not self.stop_signal.is_set():
            self.consumer.running = True
            try:
                self.service.queue.consume(handle, self.stop_signal)
                error = "returned"
            except Exception as failure:  # noqa: BLE001 - any end is restarted
                error = repr(failure)
                log.exception("event=consumer_died")
            self.consumer.running = False
            if self.stop_signal.is_set():
                break
            self.consumer.restarts += 1
            self.consumer.last_error = error
            log.error("event=consumer_restart restarts=%d error=%s", self.consumer.restarts, error)
            self.stop_signal.wait(CONSUMER_RESTART_DELAY)

    def _tick(self) -> None:
        wait = self.sweep_interval
        while not self.stop_signal.is_set():
            woken = self._sweep_now.wait(wait)
            if self.stop_signal.is_set():
                break
            self._sweep_now.clear()
            self._run_sweep()
            # After a reconnect, one more sweep once the pending grace has passed: what was
            # accepted in the last moments of the outage is then old enough to be taken.
            grace = self.service.settings.pending_grace_seconds + 1
            wait = min(self.sweep_interval, grace) if woken else self.sweep_interval

    def _run_sweep(self) -> None:
        event = CloudEvent({"type": "com.notifications.sweep", "source": "local-runner/timer"}, {})
        try:
            _call_event_function(self.sweep, event)
        except Exception:
            log.exception("event=sweep_failed")

    def stop(self, timeout: float = 60.0) -> None:
        """Stop consuming, let in-flight deliveries finish and record their outcome."""
        self.stop_signal.set()
        self._sweep_now.set()
        for thread in self.threads:
            thread.join(timeout)
        log.info("event=background_stopped")
