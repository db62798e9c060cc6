"""The inbox's live stream: how many open streams one runner holds (its RSS and threads, and an
ordinary request's latency beside them, against the same runner before they opened), and how
long an in-app notification takes from accepted to its user's stream at a steady 300/s.

Times are read on the client's clock (time.perf_counter) when the POST's reply or the event is
read: the client's own event-loop lag can only add to them, never hide any. For reference, the
runner's own created_at and sent_at stamps are compared with the wall clock (same machine).
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import os
import sys
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import aiohttp
import pika

from bench.harness import ADMIN_HEADERS, RABBITMQ_URL, Server, Workspace, median, percentile
from bench.report import Row
from bench.stream_client import HeldStreams, StreamNotServed, mint_tokens, send_in_app

USER = "stream-user-{:05d}"
ARRIVAL_LIMIT = 5.0  # an event later than this after its accepted reply counts as never arrived
PROBES = 500  # ordinary requests per path, one at a time, without and with the streams
SETTLE = 1.0  # after the streams opened, before measuring (the opening burst's logs, garbage)
REQUEST = aiohttp.ClientTimeout(total=10)
# A send may wait behind a backlog when the runner answers slower than 300/s: it is timed, and
# only fails (as refused) beyond this.
SEND = aiohttp.ClientTimeout(total=60)
RSS_TARGET_MB = 300.0
P99_TARGET_MS = 200.0
ORDINARY_RATIO_TARGET = 2.0  # "still answers within its usual time", on a noisy machine
RESULTS = Path(__file__).resolve().parent / "results"
WATCHED_LOG_EVENTS = (
    "publish_failed",  # the work queue's publish: the sweep delivers it later
    "requeued",
    "inbox_stream_behind",
    "inbox_feed_dropped",
    "inbox_feed_publish_failed",
    "inbox_feed_consuming",
    "inbox_feed_restart",
    "stream_replay_truncated",
    "stream_failed",
    "unhandled_error",
)


def process_figures(pid: int) -> dict:
    """VmRSS (MB) and threads, summed over the runner and its children if any."""
    rss_kb = threads = 0
    pids = [pid]
    for each in pids:  # grows as children are found
        try:
            status = Path(f"/proc/{each}/status").read_text().splitlines()
            for task in Path(f"/proc/{each}/task").iterdir():
                pids += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue  # gone meanwhile
        for line in status:
            if line.startswith("VmRSS:"):
                rss_kb += int(line.split()[1])
            elif line.startswith("Threads:"):
                threads += int(line.split()[1])
    return {"rss_mb": rss_kb / 1024, "threads": threads, "cpu_seconds": _cpu_seconds(pid)}


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of the runner so far (to tell whether it or the client was busy)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _ordinary_latency(session: aiohttp.ClientSession, paths: dict, count: int) -> dict:
    """p50/p99 (ms) of each path, requested one at a time, alternating."""
    samples: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(count):
        for name, url in paths.items():
            started = time.perf_counter()
            async with session.get(url) as reply:
                await reply.read()
                if reply.status != 200:
                    raise RuntimeError(f"GET {url} answered {reply.status}")
            samples[name].append((time.perf_counter() - started) * 1000)
    return {name: _spread(values) for name, values in samples.items()}


def _probe(paths: dict[str, str]) -> dict:
    """Run in a process of its own: the client holding the streams (its event loop, its
    garbage collections) must not be what slows the ordinary requests down."""

    async def probe() -> dict:
        async with aiohttp.ClientSession(headers=ADMIN_HEADERS, timeout=REQUEST) as session:
            await _ordinary_latency(session, paths, PROBES // 5)  # warm-up
            return await _ordinary_latency(session, paths, PROBES)

    return asyncio.run(probe())


def _spread(values: list[float]) -> dict:
    ordered = sorted(values)
    return {
        "p50_ms": percentile(ordered, 0.50),
        "p99_ms": percentile(ordered, 0.99),
        "max_ms": ordered[-1] if ordered else float("nan"),
    }


def _arrivals(held: HeldStreams, offered: dict) -> dict:
    accepted_at, sent_at = offered["accepted_at"], offered["sent_at"]
    arrived = {i: held.arrived[i] for i in accepted_at if i in held.arrived}
    in_time = [i for i in arrived if arrived[i] - accepted_at[i] <= ARRIVAL_LIMIT]
    missing = set(accepted_at) - set(in_time)
    return {
        "accepted": len(accepted_at),
        "refused": len(offered["refused"]),
        "refusals": offered["refused"][:5],
        "answered_per_second": len(accepted_at) / offered["seconds"],
        "client_cpu_seconds": round(offered["client_cpu_seconds"], 1),
        "missing": len(missing),
        # Why: read later than the limit, read only as notification.updated, or not at all.
        "missing_late": sum(1 for i in missing if i in arrived),
        "missing_as_updated": sum(1 for i in missing - arrived.keys() if i in held.updated),
        # Late because delivered late (its sent_at), not because the stream held it back.
        "missing_delivered_late": sum(
            1 for i in missing if held.after_sent_ms.get(i, math.inf) < ARRIVAL_LIMIT * 1000
        ),
        "missing_ids": sorted(missing)[:5],
        # Negative when the event was read before the POST's own reply.
        "from_accepted": _spread([(arrived[i] - accepted_at[i]) * 1000 for i in in_time]),
        "from_sent": _spread([(arrived[i] - sent_at[i]) * 1000 for i in in_time]),
        "after_created": _spread([held.after_created_ms[i] for i in in_time]),
        "after_sent": _spread([held.after_sent_ms[i] for i in in_time if i in held.after_sent_ms]),
        "reply": _spread([(accepted_at[i] - sent_at[i]) * 1000 for i in accepted_at]),
    }


async def _measure(server: Server, streams: int, seconds: float, per_second: float) -> dict:
    base, pid = server.url, server.process.pid
    users = [USER.format(i) for i in range(streams)]
    paths = {
        "healthz": f"{base}/healthz",
        "counts": f"{base}/users/{users[0]}/notifications/counts",
    }
    async with aiohttp.ClientSession(headers=ADMIN_HEADERS, timeout=REQUEST) as admin:
        tokens = await mint_tokens(admin, base, users)
    result: dict = {"streams": streams}
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as prober:
        result["ordinary_without"] = await loop.run_in_executor(prober, _probe, paths)
        result["before"] = process_figures(pid)
        async with HeldStreams(base, tokens) as held:
            result["held"], opening = await held.open()
            if result["held"] == 0:
                raise held.first_error or StreamNotServed(held.failures[0])
            result["opening_seconds"] = round(opening, 1)
            await asyncio.sleep(SETTLE)
            result["holding"] = process_figures(pid)
            result["ordinary_with"] = await loop.run_in_executor(prober, _probe, paths)
            result.update(await _event_latency(held, pid, users, per_second, seconds))
    return result


async def _event_latency(held: HeldStreams, pid: int, users, per_second, seconds) -> dict:
    runner_cpu = _cpu_seconds(pid)
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(
        connector=connector, headers=ADMIN_HEADERS, timeout=SEND
    ) as sender:
        offered = await send_in_app(
            sender, held.base + "/notifications", users, per_second, seconds
        )
    await held.wait_for(offered["accepted_at"], ARRIVAL_LIMIT)
    loaded = process_figures(pid)
    # Only when some are missing: do they come late, or never?
    await held.wait_for(offered["accepted_at"], 2 * ARRIVAL_LIMIT)
    return {
        "after_load": loaded,
        # Sending and the wait after it: whether the runner or this client was the busy one.
        "runner_cpu_seconds": round(loaded["cpu_seconds"] - runner_cpu, 1),
        **_arrivals(held, offered),
        "stream_failures": held.failures[:5],
        "streams_ended": held.counter["ended"],
        "heartbeats": held.counter["comments"],
    }


def _one_run(streams: int, seconds: float, per_second: float) -> dict:
    space = Workspace("streams")
    exchange = f"bench_inbox_{uuid.uuid4().hex[:8]}"  # no other runner's inbox changes
    server = Server.runner(space, INBOX_EXCHANGE=exchange)
    try:
        server.wait_ready()
        result = asyncio.run(_measure(server, streams, seconds, per_second))
        server.stop()
        result["runner_log"] = _log_events(space.dir / "runner.log", keep=result["missing"] > 0)
        return result
    finally:
        server.stop()
        space.cleanup()
        _delete_exchange(exchange)


def _log_events(log: Path, keep: bool) -> dict:
    """How often the runner logged what can hold an event back (a stream behind, a dropped or
    failed feed publish, a feed reconnect, an error); the whole log kept when one was lost."""
    text = log.read_text(errors="replace")
    counts = {name: text.count(f"event={name}") for name in WATCHED_LOG_EVENTS}
    if keep:
        saved = RESULTS / f"{time.strftime('%Y%m%dT%H%M%S')}-streams-runner.log"
        saved.parent.mkdir(parents=True, exist_ok=True)
        saved.write_text(text)
        counts["saved"] = str(saved.relative_to(RESULTS.parent.parent))
    return counts


def _delete_exchange(name: str) -> None:
    try:
        connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
        try:
            connection.channel().exchange_delete(name)
        finally:
            connection.close()
    except pika.exceptions.AMQPError:
        pass  # never declared (the feed keeps to the process) or already gone


def run(runs: int, seconds: float, streams: int, per_second: float = 300.0) -> dict:
    results = [_one_run(streams, seconds, per_second) for _ in range(runs)]

    def mid(*path: str) -> float:
        """The median over the runs of one figure, e.g. mid("from_sent", "p99_ms")."""
        values = []
        for value in results:
            for key in path:
                value = value[key]
            values.append(value)
        return median(values)

    held = min(r["held"] for r in results)
    missing, refused = _total(results, "missing"), _total(results, "refused")
    lost = ""
    if missing:
        lost = (
            f" — **{missing} NEVER ARRIVED** within {ARRIVAL_LIMIT:g} s "
            f"({_total(results, 'missing_late')} later, "
            f"{_total(results, 'missing_delivered_late')} of them delivered late; "
            f"{_total(results, 'missing_as_updated')} only as notification.updated)"
        )
    if refused:
        lost += f" — **{refused} sends failed** (an error, or no reply in {SEND.total:g} s)"
    if lost or held < streams:
        logs = [r["runner_log"] for r in results]
        message = f"!! LIVE STREAM: {held} of {streams} streams held{lost}; runner logs: {logs}"
        print(message, file=sys.stderr, flush=True)
    rss = max(mid("holding", "rss_mb"), mid("after_load", "rss_mb"))
    rss_before = mid("before", "rss_mb")
    threads, threads_before = mid("holding", "threads"), mid("before", "threads")
    rows = [
        Row(
            f"live stream: {streams:,} open streams on one runner (RSS, under load too; threads)",
            f"{held:,} held (opened in {mid('opening_seconds'):.1f} s); {rss:.0f} MB; "
            f"{threads:.0f} threads",
            f"no streams: {rss_before:.0f} MB; {threads_before:.0f} threads",
            f"{rss / rss_before:.2f}",
            target=f"all held, RSS < {RSS_TARGET_MB:.0f} MB, no thread per stream",
            met=held == streams and rss < RSS_TARGET_MB and threads - threads_before < held / 10,
        )
    ]
    for name, label in (("healthz", "GET /healthz"), ("counts", "GET …/notifications/counts")):
        p50, p99 = mid("ordinary_with", name, "p50_ms"), mid("ordinary_with", name, "p99_ms")
        p50_0 = mid("ordinary_without", name, "p50_ms")
        p99_0 = mid("ordinary_without", name, "p99_ms")
        rows.append(
            Row(
                f"{label} beside {held:,} open streams, one at a time (p50 / p99)",
                f"{p50:.1f} / {p99:.1f} ms",
                f"no streams {p50_0:.1f} / {p99_0:.1f} ms",
                f"{p99 / p99_0:.2f}",
                target=f"p99 ≤ {ORDINARY_RATIO_TARGET:g}× no streams",
                met=p99 / p99_0 <= ORDINARY_RATIO_TARGET,
            )
        )
    p99 = mid("from_accepted", "p99_ms")
    rows.append(
        Row(
            f"live stream: accepted → notification.created on the user's stream, in-app at "
            f"{per_second:.0f}/s over {held:,} streams (p50 / p99 / max)",
            f"{mid('from_accepted', 'p50_ms'):.0f} / {p99:.0f} / "
            f"{mid('from_accepted', 'max_ms'):.0f} ms{lost}",
            f"from the runner's created_at {mid('after_created', 'p50_ms'):.0f} / "
            f"{mid('after_created', 'p99_ms'):.0f} ms, its sent_at "
            f"{mid('after_sent', 'p50_ms'):.0f} / {mid('after_sent', 'p99_ms'):.0f} ms, "
            f"sending the POST {mid('from_sent', 'p50_ms'):.0f} / "
            f"{mid('from_sent', 'p99_ms'):.0f} ms; "
            f"HTTP reply p99 {mid('reply', 'p99_ms'):.0f} ms, "
            f"{mid('answered_per_second'):.0f}/s answered",
            target=f"p99 < {P99_TARGET_MS:.0f} ms, none missing",
            met=p99 < P99_TARGET_MS and not missing and not refused,
        )
    )
    return {"rows": [row.to_dict() for row in rows], "raw": results}


def _total(results: list[dict], key: str) -> int:
    return sum(r[key] for r in results)
