"""Run the benchmarks and print a Markdown table; save JSON under bench/results/ and the
table into docs/benchmarks.md.

python bench/run.py                  # everything, medians of 3 runs (~9 minutes)
python bench/run.py --quick          # a short smoke version (~2 minutes)
python bench/run.py --only ingest,delivery
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import batch, delivery, ingest, latency, machine, streams, sweep  # noqa: E402
from bench.report import Row, markdown  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "benchmarks.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"
ALL = ("ingest", "batch", "delivery", "latency", "streams", "sweep")

FULL = dict(
    runs=3, seconds=10.0, backlog=50_000, sizes=[20_000, 100_000, 1_000_000], reps=5, streams=1000
)
QUICK = dict(runs=1, seconds=3.0, backlog=5_000, sizes=[20_000, 100_000], reps=2, streams=200)


def measure(name: str, p: dict) -> dict:
    if name == "ingest":
        return ingest.run(p["runs"], p["seconds"])
    if name == "batch":
        return batch.run(p["runs"], p["seconds"])
    if name == "delivery":
        return delivery.run(p["runs"], p["backlog"])
    if name == "latency":
        return latency.run(p["runs"], p["seconds"])
    if name == "streams":
        return streams.run(p["runs"], p["seconds"], p["streams"])
    return sweep.run(p["sizes"], p["reps"])


def settings_text(p: dict, quick: bool) -> str:
    return (
        f"{'quick' if quick else 'full'} run; each figure the median of {p['runs']} runs "
        f"({p['reps']} repetitions for the sweep). wrk: 2 threads, {ingest.CONNECTIONS} "
        f"connections (batch: {batch.CONNECTIONS}), {p['seconds']:g} s per run, keep-alive, "
        f"10 s timeout. Steady rate: aiohttp, open loop, 300/s for {p['seconds']:g} s. "
        f"Delivery backlog: {p['backlog']:,}. Live stream: {p['streams']:,} streams held by one "
        f"aiohttp client, then in-app sends at 300/s for {p['seconds']:g} s round robin to their "
        "users. Runner: `local_runner.py serve` defaults "
        "(one process: uvicorn, the Flask functions on 4 threads per core), RabbitMQ and SQLite; "
        "the abuse limits "
        "off except where a row says so."
    )


def render(rows: list[dict], facts: dict, p: dict, quick: bool, stamp: str) -> str:
    lines = [f"Run {stamp}. " + settings_text(p, quick), "", markdown(rows), "", "Machine:", ""]
    lines += [f"- {key}: {value}" for key, value in facts.items()]
    return "\n".join(lines)


def write_doc(section: str) -> None:
    text = DOC.read_text() if DOC.exists() else f"# Benchmarks\n\n{START}\n{END}\n"
    if START not in text:
        text += f"\n{START}\n{END}\n"
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(f"{head}{START}\n{section}\n{END}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke version")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(ALL)}")
    parser.add_argument("--runs", type=int, help="runs per figure (median taken)")
    parser.add_argument("--no-doc", action="store_true", help="do not update docs/benchmarks.md")
    args = parser.parse_args()
    chosen = args.only.split(",") if args.only else list(ALL)
    unknown = set(chosen) - set(ALL)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    params = dict(QUICK if args.quick else FULL)
    if args.runs:
        params["runs"] = args.runs
    facts = machine.facts()
    results: dict = {"params": params, "machine": facts, "figures": {}}
    rows: list[dict] = []
    for name in ALL:
        if name not in chosen:
            continue
        started = time.monotonic()
        print(f"== {name} ...", file=sys.stderr, flush=True)
        try:
            outcome = measure(name, params)
        except Exception as error:  # noqa: BLE001 - report it, and go on with the others
            traceback.print_exc()
            outcome = {"rows": [Row(name, f"ERROR: {error!r}"[:120], met=False).to_dict()]}
        outcome["wall_seconds"] = round(time.monotonic() - started, 1)
        print(f"   {name} took {outcome['wall_seconds']} s", file=sys.stderr, flush=True)
        results["figures"][name] = outcome
        rows += outcome["rows"]
        print(markdown(outcome["rows"]), file=sys.stderr, flush=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = render(rows, facts, params, args.quick, stamp)
    print(section)
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + ("-quick" if args.quick else "") + ".json"
    (RESULTS / name).write_text(json.dumps({**results, "rows": rows}, indent=2, default=str))
    print(f"\nsaved bench/results/{name}", file=sys.stderr)
    # Only a full run of every figure may stand as the published table.
    if not args.no_doc and not args.only and not args.quick:
        write_doc(section)
        print("updated docs/benchmarks.md", file=sys.stderr)


if __name__ == "__main__":
    main()
