"""The real local runner (`python local_runner.py serve`) in a subprocess, for end-to-end tests.

    with running_service({"SWEEP_INTERVAL": "0.5"}) as base_url:
        requests.post(f"{base_url}/notifications", json={...}, headers=ADMIN_HEADERS)

The child sees only the settings given here: every service setting inherited from the test's
own environment (RABBITMQ_URL, MONGO_URI, MAIL_*, TWILIO_*, ...) and the repository's `.env`
are left out, so a developer's configuration never leaks into a test. Pass RABBITMQ_URL,
QUEUE_NAME, MAIL_SERVER or any other setting in `env` to use it. The one exception:
ADMIN_API_KEY is the tests' ADMIN_KEY (tests/support/auth.py) unless `env` gives its own, or
None for no admin key at all; send ADMIN_HEADERS to be the admin.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path

from common.config import Settings
from tests.support.auth import ADMIN_KEY

ROOT = Path(__file__).resolve().parents[2]
# Every setting common/config.py reads, plus the file it reads them from.
SERVICE_VARIABLES = {item.name.upper() for item in fields(Settings)} | {"ENV_FILE"}


class ServiceUrl(str):
    """The base URL (a plain str, e.g. "http://127.0.0.1:40123"), with the process and its log."""

    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        """What the runner wrote so far (stdout and stderr)."""
        return self.log_path.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _child_env(env: Mapping[str, str | None], data_dir: str) -> dict[str, str]:
    """The test's environment less every service setting, then `env` (a None value: unset)."""
    child = {k: v for k, v in os.environ.items() if k not in SERVICE_VARIABLES}
    child.update(ENV_FILE=os.devnull, DATA_DIR=data_dir, PYTHONUNBUFFERED="1")
    child.update(ADMIN_API_KEY=ADMIN_KEY)
    for key, value in env.items():
        if value is None:
            child.pop(key, None)
        else:
            child[key] = str(value)
    return child


def _wait_until_answering(
    url: str, process: subprocess.Popen, log_path: Path, timeout: float, admin_key: str | None
):
    # With the child's own admin key (if any), so that the probe is no failed login; any HTTP
    # answer, even a 401, means that it is serving.
    headers = {"Authorization": f"Bearer {admin_key}"} if admin_key else {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"the runner exited with code {process.returncode} before answering:\n"
                + log_path.read_text(errors="replace")[-4000:]
            )
        try:
            request = urllib.request.Request(f"{url}/stats", headers=headers)
            urllib.request.urlopen(request, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return  # it answered, even if not with 200
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(
        f"the runner did not answer at {url} within {timeout} s:\n"
        + log_path.read_text(errors="replace")[-4000:]
    )


def _stop(process: subprocess.Popen, timeout: float) -> None:
    """SIGTERM (gunicorn's graceful stop), then wait; SIGKILL its process group if it hangs."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # its own group: started with a new session
        process.wait(10)


@contextmanager
def running_service(
    env: Mapping[str, str | None] | None = None,
    port: int | None = None,
    *,
    start_timeout: float = 30.0,
    stop_timeout: float = 30.0,
) -> Iterator[ServiceUrl]:
    """Start the runner with these settings on `port` (default: a free one), yield its base URL
    once it answers HTTP, and stop it gracefully afterwards.

    Without DATA_DIR in `env`, the store and outbox go to a temporary folder removed at the end.
    """
    env = dict(env or {})
    own_data_dir = None if env.get("DATA_DIR") else tempfile.mkdtemp(prefix="runner-data-")
    data_dir = env.get("DATA_DIR") or own_data_dir
    port = port or free_port()
    url = ServiceUrl(f"http://127.0.0.1:{port}")
    log_file = tempfile.NamedTemporaryFile(prefix="runner-", suffix=".log", delete=False)
    url.log_path = Path(log_file.name)
    child_env = _child_env(env, data_dir)
    process = subprocess.Popen(
        [sys.executable, "local_runner.py", "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=child_env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url.process = process
    try:
        admin_key = child_env.get("ADMIN_API_KEY")
        _wait_until_answering(url, process, url.log_path, start_timeout, admin_key)
        yield url
    except BaseException:
        # pytest shows a failed test's captured stderr: the runner's side of the story.
        sys.stderr.write(f"--- runner log ({url}) ---\n{url.log()[-8000:]}\n")
        raise
    finally:
        _stop(process, stop_timeout)
        log_file.close()
        os.unlink(log_file.name)
        if own_data_dir:
            shutil.rmtree(own_data_dir, ignore_errors=True)


def kill_hard(service: ServiceUrl) -> None:
    """SIGKILL the runner and every process it started (a crash: no cleanup, no goodbye)."""
    try:
        os.killpg(service.process.pid, signal.SIGKILL)  # its own group: a new session
    except ProcessLookupError:
        pass
    service.process.wait(10)


def thread_count(pid: int) -> int:
    """Threads of `pid` and of all its descendants (gunicorn forks its worker), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # The command name is in parentheses and may hold spaces: the parent pid follows it.
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    total, waiting = 0, [pid]
    while waiting:
        current = waiting.pop()
        try:
            status = (Path("/proc") / str(current) / "status").read_text()
        except OSError:
            continue
        total += int(status.split("Threads:", 1)[1].split()[0])
        waiting.extend(children.get(current, []))
    return total


def run_command(
    env: Mapping[str, str | None], *args: str, timeout: float = 60.0
) -> subprocess.CompletedProcess:
    """Run `python local_runner.py <args>` once (e.g. "sweep") with only these settings."""
    env = dict(env)
    data_dir = env.get("DATA_DIR") or tempfile.mkdtemp(prefix="runner-data-")
    return subprocess.run(
        [sys.executable, "local_runner.py", *args],
        cwd=ROOT,
        env=_child_env(env, data_dir),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
