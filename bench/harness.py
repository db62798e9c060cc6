"""What every measurement needs: a server started on loopback, its peak memory, the broker.

Each server runs in its own process group with its own temp DATA_DIR and its own queue names,
so a benchmark never touches a developer's data or queues, and everything is removed afterwards.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import pika

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RABBITMQ_URL = os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
# Every server gets this as ADMIN_API_KEY and every request sends it, as a client of a service
# with access control does (the references, which have none, get the same bytes).
ADMIN_KEY = "bench-admin-key-8d41c7e2b05f4a93"
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN_KEY}"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def median(values):
    return statistics.median(values) if values else None


def percentile(sorted_values, fraction: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


class Workspace:
    """A temp DATA_DIR and unique queue names for one server; queues deleted on cleanup."""

    def __init__(self, label: str):
        self.dir = Path(tempfile.mkdtemp(prefix=f"bench-{label}-"))
        suffix = uuid.uuid4().hex[:8]
        self.queue = f"bench_{label}_{suffix}"
        self.dlq = f"bench_{label}_{suffix}_dlq"

    @property
    def db_path(self) -> Path:
        return self.dir / "notifications.db"

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            RABBITMQ_URL=RABBITMQ_URL,
            DATA_DIR=str(self.dir),
            QUEUE_NAME=self.queue,
            DLQ_NAME=self.dlq,
            ENV_FILE=str(self.dir / "no.env"),  # never a developer's .env
            PYTHONPATH=str(ROOT),
            ADMIN_API_KEY=ADMIN_KEY,
            # Throughput is measured with the abuse limits off (one key, one recipient);
            # bench/ingest.py measures what checking the send rate costs.
            SEND_RATE_LIMIT="0",
            SMS_PER_RECIPIENT_PER_HOUR="0",
            EMAIL_PER_RECIPIENT_PER_HOUR="0",
        )
        env.update(extra)
        return env

    def cleanup(self) -> None:
        delete_queues([self.queue, self.dlq])
        subprocess.run(["rm", "-rf", str(self.dir)], check=False)


def delete_queues(names) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
    try:
        channel = connection.channel()
        for name in names:
            channel.queue_delete(name)
    finally:
        connection.close()


def queue_depth(name: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
    try:
        return connection.channel().queue_declare(name, passive=True).method.message_count
    finally:
        connection.close()


class Server:
    """A gunicorn-hosted server (the runner, or bench/serve.py) in its own process group."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path, port: int):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, *argv],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=self.log,
            start_new_session=True,
        )

    @classmethod
    def runner(cls, workspace: Workspace, **env: str) -> Server:
        port = free_port()
        argv = ["local_runner.py", "serve", "--host", "127.0.0.1", "--port", str(port)]
        return cls(argv, workspace.env(**env), workspace.dir / "runner.log", port)

    @classmethod
    def function(cls, name: str, workspace: Workspace, **env: str) -> Server:
        port = free_port()
        argv = [str(BENCH / "serve.py"), name, "--port", str(port)]
        return cls(argv, workspace.env(**env), workspace.dir / f"{name}.log", port)

    def wait_ready(self, path: str = "/stats", timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"server exited with {self.process.returncode}; see {self.log.name}"
                )
            try:
                request = urllib.request.Request(self.url + path, headers=ADMIN_HEADERS)
                with urllib.request.urlopen(request, timeout=1) as reply:
                    if reply.status < 500:
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"server on {self.url} not ready after {timeout}s")

    def worker_pids(self) -> list[int]:
        try:
            children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
            return [int(pid) for pid in children.read_text().split()]
        except OSError:
            return []

    def peak_rss_mb(self) -> dict[str, float]:
        """Peak resident memory (VmHWM) of the server process (and of a gunicorn worker, for
        the reference servers that fork one), in MB."""
        peaks = {"process": _vm_hwm(self.process.pid)}
        for pid in self.worker_pids():
            peaks["worker"] = _vm_hwm(pid)
        return peaks

    def serving_pid(self) -> int:
        """The process that answers requests: the runner itself (uvicorn), or the worker a
        gunicorn master forked."""
        workers = self.worker_pids()
        return workers[0] if workers else self.process.pid

    def stop(self, timeout: float = 30.0) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()


def _vm_hwm(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def count_status(db_path: Path, status: str) -> int:
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30) as db:
        return db.execute(
            "SELECT COUNT(*) FROM notifications WHERE status = ?", (status,)
        ).fetchone()[0]


def wait_for_status(db_path: Path, status: str, count: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    seen = 0
    while time.monotonic() < deadline:
        seen = count_status(db_path, status)
        if seen >= count:
            return seen
        time.sleep(0.25)
    return seen


def drain(workspace: Workspace, timeout: float = 300.0) -> None:
    """Wait until the runner has sent everything it accepted, so the machine is idle again."""
    deadline = time.monotonic() + timeout
    left = None
    while time.monotonic() < deadline:
        with sqlite3.connect(f"file:{workspace.db_path}?mode=ro", uri=True, timeout=30) as db:
            left = db.execute(
                "SELECT COUNT(*) FROM notifications WHERE status != 'sent'"
            ).fetchone()[0]
        if left == 0:
            return
        time.sleep(0.25)
    raise RuntimeError(f"the runner still had {left} undelivered after {timeout}s")
