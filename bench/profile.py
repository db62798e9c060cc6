"""Profile the runner under the ingest load with py-spy; print the hottest frames.

python bench/profile.py [--seconds 10] [--path /notifications|/notifications/batch]
Writes bench/results/profile-<time>.txt (collapsed stacks) and .svg (flame graph).
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import batch, ingest, wrk  # noqa: E402
from bench.harness import Server, Workspace  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def summarise(collapsed: Path, top: int = 25) -> str:
    own: collections.Counter = collections.Counter()
    inclusive: collections.Counter = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [f.split(" (")[0] + " " + f.split("(")[-1].split(":")[0].split("/")[-1]
                  for f in stack.split(";")[1:]]  # fmt: skip
        n = int(count)
        total += n
        if frames:
            own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    lines = [f"samples: {total}", "", "own time:"]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    lines += ["", "inclusive:"]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in inclusive.most_common(top)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--path", default="/notifications")
    parser.add_argument("--gil", action="store_true", help="only threads holding the GIL")
    args = parser.parse_args()
    space = Workspace("profile")
    server = Server.runner(space)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    RESULTS.mkdir(exist_ok=True)
    raw = RESULTS / f"profile-{stamp}.txt"
    try:
        server.wait_ready()
        pid = server.serving_pid()
        body = batch.body() if args.path.endswith("batch") else ingest.BODY
        connections = batch.CONNECTIONS if args.path.endswith("batch") else ingest.CONNECTIONS
        load = threading.Thread(
            target=wrk.post,
            args=(server.url + args.path, body),
            kwargs={"connections": connections, "seconds": args.seconds + 2},
        )
        load.start()
        command = ["py-spy", "record", "--pid", str(pid), "--duration", str(int(args.seconds))]
        command += ["--format", "raw", "-o", str(raw), "--nonblocking"]
        if args.gil:
            command.append("--gil")
        subprocess.run(command, check=True, capture_output=True)
        load.join()
    finally:
        server.stop()
        space.cleanup()
    print(summarise(raw))


if __name__ == "__main__":
    main()
