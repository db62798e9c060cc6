"""End-to-end latency: accepted -> sent for in-app at a steady offered rate (asyncio client).

Requests are sent on a fixed schedule (open loop: a slow reply does not delay the next
request). Latency is `sent_at - created_at` read from the store after the run: both are stamped
by the service with the same clock, to the millisecond.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time

import aiohttp

from bench.harness import ADMIN_HEADERS, Server, Workspace, median, percentile, wait_for_status
from bench.report import Row

BODY = {"user_id": "latency-user", "notification_type": "in_app", "message": "how long?"}


async def _offer(url: str, per_second: float, seconds: float) -> dict:
    total = int(per_second * seconds)
    ids: list[str] = []
    failures = 0
    http_ms: list[float] = []
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=connector, headers=ADMIN_HEADERS) as session:

        async def one() -> None:
            nonlocal failures
            started = time.perf_counter()
            try:
                async with session.post(url, json=BODY) as reply:
                    data = await reply.json()
                    if reply.status == 201:
                        ids.append(data["id"])
                    else:
                        failures += 1
            except aiohttp.ClientError:
                failures += 1
            http_ms.append((time.perf_counter() - started) * 1000)

        tasks = []
        start = time.perf_counter()
        for i in range(total):
            delay = start + i / per_second - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
        offered_seconds = time.perf_counter() - start
    return {"ids": ids, "failures": failures, "http_ms": http_ms, "seconds": offered_seconds}


def _one_run(server: Server, space: Workspace, per_second: float, seconds: float) -> dict:
    offered = asyncio.run(_offer(server.url + "/notifications", per_second, seconds))
    ids = offered["ids"]
    before = len(ids)
    with sqlite3.connect(space.db_path) as db:
        already = db.execute("SELECT COUNT(*) FROM notifications").fetchone()[0]
    wait_for_status(space.db_path, "sent", already, timeout=60)
    with sqlite3.connect(space.db_path) as db:
        db.execute("CREATE TEMP TABLE wanted (id TEXT PRIMARY KEY)")
        db.executemany("INSERT INTO wanted VALUES (?)", [(i,) for i in ids])
        rows = db.execute(
            "SELECT sent_at - created_at FROM notifications JOIN wanted USING (id) "
            "WHERE status = 'sent'"
        ).fetchall()
    latencies = sorted(r[0] for r in rows)
    http = sorted(offered["http_ms"])
    return {
        "accepted": before,
        "sent": len(latencies),
        "failures": offered["failures"],
        "offered_per_second": len(http) / offered["seconds"],
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
        "max_ms": latencies[-1] if latencies else None,
        "http_p50_ms": percentile(http, 0.50),
        "http_p99_ms": percentile(http, 0.99),
    }


def run(runs: int, seconds: float, per_second: float = 300.0) -> dict:
    space = Workspace("latency")
    server = Server.runner(space)
    results = []
    try:
        server.wait_ready()
        asyncio.run(_offer(server.url + "/notifications", per_second, 1.0))  # warm-up
        for _ in range(runs):
            results.append(_one_run(server, space, per_second, seconds))
    finally:
        server.stop()
        space.cleanup()
    p50 = median([r["p50_ms"] for r in results])
    p99 = median([r["p99_ms"] for r in results])
    http_p99 = median([r["http_p99_ms"] for r in results])
    lost = sum(r["accepted"] - r["sent"] + r["failures"] for r in results)
    row = Row(
        f"end-to-end accepted → sent, in-app at {per_second:.0f}/s offered (p50 / p99)",
        f"{p50:.0f} / {p99:.0f} ms" + (f" ({lost} not sent)" if lost else ""),
        f"HTTP reply p99 {http_p99:.1f} ms",
        target="p99 < 50 ms",
        met=p99 < 50 and not lost,
    )
    return {"rows": [row.to_dict()], "raw": results}
