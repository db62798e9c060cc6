"""Liveness and readiness: is the process up, and can it do its work right now?

Readiness asks the store and the broker (each within a bound, so a silent backend makes the
answer "not ready", not a hung probe) and, where this process runs the queue consumer, whether
the consumer is running.
"""

from __future__ import annotations

from typing import Any

from common import runtime
from common.queue.base import QueueUnavailable

PROBE_TIMEOUT = 2.0


def _check(action) -> dict[str, Any]:
    try:
        detail = action()
    except Exception as error:  # noqa: BLE001 - any failure is a finding, named without secrets
        message = getattr(error, "message", None) or type(error).__name__
        return {"ok": False, "detail": str(message)[:300]}
    return {"ok": True, "detail": detail}


def readiness() -> dict[str, Any]:
    try:
        service = runtime.get_service()
    except Exception as error:  # noqa: BLE001 - settings or store: not ready, say why
        message = getattr(error, "message", None) or type(error).__name__
        failed = {"ok": False, "detail": str(message)[:300]}
        return {"ready": False, "checks": {"store": failed}}
    settings = service.settings

    def store() -> str:
        service.store.ping()
        return "MongoDB" if settings.mongo_uri else "SQLite"

    def queue() -> str:
        if not settings.rabbitmq_url:
            return "in-process queue"
        if service.queue.depths(timeout=PROBE_TIMEOUT) is None:
            raise QueueUnavailable(f"RabbitMQ did not answer within {PROBE_TIMEOUT:g} s")
        return "RabbitMQ"

    checks = {"store": _check(store), "queue": _check(queue)}
    state = runtime.consumer_state
    if state is not None:
        checks["consumer"] = {
            "ok": state.running,
            "detail": "running" if state.running else f"stopped: {state.last_error}",
            "restarts": state.restarts,
        }
    return {"ready": all(check["ok"] for check in checks.values()), "checks": checks}
