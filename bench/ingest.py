"""Ingest: POST /notifications (in-app) at 32 clients, against the ceiling and the seed's way.

The three servers run side by side for the whole measurement and are driven in turn, so every
run of the runner has its two references measured minutes apart on the same machine state.
Between turns the runner is left to deliver what it accepted, so that its background work does
not steal CPU from the next server's turn.
"""

from __future__ import annotations

import json
import time
import urllib.request

from bench import wrk
from bench.harness import ADMIN_HEADERS, Server, Workspace, count_status, drain, median
from bench.report import Row, rate

BODY = {"user_id": "bench-user", "notification_type": "in_app", "message": "hello from wrk"}
CONNECTIONS = 32
# The same in-app notification, rendered from a template when accepted.
TEMPLATE = {
    "key": "bench_welcome",
    "default_locale": "en",
    "variables": {"type": "object", "properties": {"name": {"type": "string"}}},
    "locales": {
        "en": {"in_app": {"title": "Welcome", "body": "Hello {{ name }}, from wrk"}},
        "fr": {"in_app": {"title": "Bienvenue", "body": "Bonjour {{ name }}, de wrk"}},
    },
}
TEMPLATE_BODY = {
    "user_id": "bench-user",
    "notification_type": "in_app",
    "template": "bench_welcome",
    "data": {"name": "Ann"},
    "locale": "fr-CA",
}
LIMIT_NEVER_REACHED = 1_000_000  # notifications per second per credential


def run(runs: int, seconds: float) -> dict:
    names = ("runner", "limited", "ceiling", "seed")
    spaces = {name: Workspace(f"ingest_{name}") for name in names}
    servers = {
        "runner": Server.runner(spaces["runner"]),
        # The send rate limit on, checked on every request, and too high to be reached.
        "limited": Server.runner(spaces["limited"], SEND_RATE_LIMIT=str(LIMIT_NEVER_REACHED)),
        "ceiling": Server.function("ceiling", spaces["ceiling"]),
        "seed": Server.function("seed", spaces["seed"]),
    }
    results: dict[str, list[dict]] = {name: [] for name in (*servers, "template")}
    try:
        for server in servers.values():
            server.wait_ready()
        create_template(servers["runner"].url)
        paths = {
            "runner": "/notifications",
            "limited": "/notifications",
            "ceiling": "/",
            "seed": "/",
        }
        for name, server in servers.items():  # warm-up: imports, connections, page cache
            wrk.post(server.url + paths[name], BODY, connections=CONNECTIONS, seconds=1)
        drain(spaces["runner"])
        drain(spaces["limited"])
        for _ in range(runs):
            for name in ("ceiling", "seed", "runner", "limited"):
                server = servers[name]
                outcome = wrk.post(
                    server.url + paths[name], BODY, connections=CONNECTIONS, seconds=seconds
                )
                results[name].append(outcome.to_dict())
                if name in ("runner", "limited"):
                    drain(spaces[name])
                if name == "runner":  # the same runner, each send rendered from a template
                    outcome = wrk.post(
                        server.url + paths[name],
                        TEMPLATE_BODY,
                        connections=CONNECTIONS,
                        seconds=seconds,
                    )
                    results["template"].append(outcome.to_dict())
                    drain(spaces[name])
                if name == "seed":
                    time.sleep(1)  # let the broker close the seed's connections
        peak = servers["runner"].peak_rss_mb()
        stored = count_status(spaces["runner"].db_path, "sent")
    finally:
        for server in servers.values():
            server.stop()
        for space in spaces.values():
            space.cleanup()

    rates = {name: median([r["ok_per_second"] for r in rs]) for name, rs in results.items()}
    p50 = median([r["p50_ms"] for r in results["runner"]])
    p99 = median([r["p99_ms"] for r in results["runner"]])
    errors = sum(r["non_2xx"] + r["socket_errors"] for r in results["runner"])
    vs_ceiling = rates["runner"] / rates["ceiling"]
    vs_seed = rates["runner"] / rates["seed"]
    limit_cost = rates["limited"] / rates["runner"]
    template_cost = rates["template"] / rates["runner"]
    template_errors = sum(r["non_2xx"] + r["socket_errors"] for r in results["template"])
    limited_errors = sum(r["non_2xx"] + r["socket_errors"] for r in results["limited"])
    runner_peak = max(peak.values())
    rows = [
        Row(
            f"ingest: POST /notifications, {CONNECTIONS} clients (p50 / p99)",
            f"{rate(rates['runner'])} ({p50:.1f} / {p99:.1f} ms)",
            f"ceiling {rate(rates['ceiling'])}",
            f"{vs_ceiling:.2f}",
            "≥ 0.60 of ceiling",
            vs_ceiling >= 0.6,
        ),
        Row(
            "ingest vs connection-per-publish (seed)",
            rate(rates["runner"]),
            f"seed {rate(rates['seed'])}",
            f"{vs_seed:.1f}x",
            "≥ 3x",
            vs_seed >= 3,
        ),
        Row(
            "ingest with SEND_RATE_LIMIT on (checked per request, never reached)",
            rate(rates["limited"]),
            f"limit off {rate(rates['runner'])}",
            f"{limit_cost:.2f}",
            "≥ 0.80 of limit off, no 429",
            limit_cost >= 0.8 and limited_errors == 0,
        ),
        Row(
            "ingest with a template (rendered when accepted, fr-CA → fr)",
            rate(rates["template"]),
            f"plain message {rate(rates['runner'])}",
            f"{template_cost:.2f}",
            "≥ 0.85 of plain (within 15 %)",
            template_cost >= 0.85 and template_errors == 0,
        ),
        Row(
            "memory: runner peak RSS during ingest",
            f"{runner_peak:.0f} MB",
            target="< 200 MB",
            met=runner_peak < 200,
        ),
    ]
    return {
        "rows": [r.to_dict() for r in rows],
        "raw": results,
        "rates": rates,
        "runner_errors": errors,
        "peak_rss_mb": peak,
        "runner_sent": stored,
    }


def create_template(base_url: str) -> None:
    request = urllib.request.Request(
        base_url + "/templates",
        data=json.dumps(TEMPLATE).encode(),
        headers={"Content-Type": "application/json", **ADMIN_HEADERS},
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        assert reply.status == 201, reply.status
