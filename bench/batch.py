"""Batch ingest: POST /notifications/batch with 1,000 in-app notifications per request."""

from __future__ import annotations

from bench import wrk
from bench.harness import Server, Workspace, drain, median
from bench.report import Row, rate

BATCH = 1000
CONNECTIONS = 4


def body() -> dict:
    return {
        "notifications": [
            {"user_id": f"batch-{i % 100}", "notification_type": "in_app", "message": f"item {i}"}
            for i in range(BATCH)
        ]
    }


def run(runs: int, seconds: float) -> dict:
    space = Workspace("batch")
    server = Server.runner(space)
    results = []
    try:
        server.wait_ready()
        payload = body()
        url = server.url + "/notifications/batch"
        wrk.post(url, payload, connections=CONNECTIONS, seconds=1)
        drain(space)
        for _ in range(runs):
            outcome = wrk.post(url, payload, connections=CONNECTIONS, seconds=seconds)
            results.append(outcome.to_dict())
            drain(space)  # what was accepted is delivered before the next run starts
    finally:
        server.stop()
        space.cleanup()
    per_second = median([r["ok_per_second"] * BATCH for r in results])
    p99 = median([r["p99_ms"] for r in results])
    row = Row(
        f"batch ingest: {BATCH} per request, {CONNECTIONS} clients (p99 per request)",
        f"{rate(per_second)} ({p99:.0f} ms)",
        target="≥ 10,000/s",
        met=per_second >= 10_000,
    )
    return {"rows": [row.to_dict()], "raw": results, "per_second": per_second}
