"""`local_runner.py check`, `sweep` and `serve` as an operator runs them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from tests.support.auth import ADMIN_HEADERS, ADMIN_KEY
from tests.support.fixtures import unused_port

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("MAIL_", "TWILIO_"))}
    full_env.update(ADMIN_API_KEY=ADMIN_KEY)
    full_env.update(env)
    return subprocess.run(
        [sys.executable, str(ROOT / "local_runner.py"), *args],
        env=full_env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_prints_the_configuration_masked_and_probes_each_backend(
    tmp_path, rabbit_url, queue_names, smtp_server
):
    env = {
        "DATA_DIR": str(tmp_path / "data"),
        "RABBITMQ_URL": rabbit_url,
        "QUEUE_NAME": queue_names[0],
        "DLQ_NAME": queue_names[1],
        **smtp_server.env(),
        "MAIL_USERNAME": "mailer",
        "MAIL_PASSWORD": "s3cret-pass",
        "MAIL_USE_TLS": "false",
    }
    result = run_cli("check", env=env, cwd=tmp_path)
    assert "s3cret-pass" not in result.stdout and "MAIL_PASSWORD            ****" in result.stdout
    assert "amqp://guest:****@127.0.0.1" in result.stdout
    assert "ok   store" in result.stdout and "ok   queue" in result.stdout


def test_check_names_a_backend_that_does_not_answer(tmp_path):
    env = {
        "DATA_DIR": str(tmp_path / "data"),
        "RABBITMQ_URL": f"amqp://guest:guest@127.0.0.1:{unused_port()}/%2F",
        "MAIL_SERVER": "127.0.0.1",
        "MAIL_PORT": str(unused_port()),
        "MAIL_DEFAULT_SENDER": "n@example.com",
    }
    result = run_cli("check", env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert "FAIL queue" in result.stdout and "FAIL email" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_sweep_runs_once_and_exits(tmp_path):
    result = run_cli("sweep", env={"DATA_DIR": str(tmp_path / "data")}, cwd=tmp_path)
    assert result.returncode == 0 and "requeued 0" in result.stdout


@contextmanager
def serving(env: dict[str, str], cwd: Path):
    """`local_runner.py serve` in a subprocess, answering; yields (process, base URL).

    The test stops it (the stop is what some tests are about); a leftover is killed."""
    port = unused_port()
    full_env = {k: v for k, v in os.environ.items() if k != "RABBITMQ_URL"}
    full_env.update(ADMIN_API_KEY=ADMIN_KEY)
    full_env.update(env)
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "local_runner.py"), "serve", "--port", str(port)],
        env=full_env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                requests.get(f"{base}/stats", headers=ADMIN_HEADERS, timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        yield process, base
    finally:
        if process.poll() is None:
            process.kill()


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_serve_stops_cleanly_on_a_signal(tmp_path, stop_signal):
    env = {"DATA_DIR": str(tmp_path / "data"), "SWEEP_INTERVAL": "0.2"}
    with serving(env, tmp_path) as (process, base):
        reply = requests.post(
            f"{base}/notifications",
            json={"user_id": "u1", "notification_type": "in_app", "message": "bye"},
            headers=ADMIN_HEADERS,
            timeout=5,
        )
        assert reply.status_code == 201
        time.sleep(0.5)
        process.send_signal(stop_signal)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0
    assert "event=background_stopped" in output
    assert f"notification={reply.json()['id']} event=sent" in output


def test_with_the_broker_down_sends_are_accepted_pending_and_logged_in_one_line(tmp_path):
    env = {
        "DATA_DIR": str(tmp_path / "data"),
        "RABBITMQ_URL": f"amqp://guest:guest@127.0.0.1:{unused_port()}/%2F",
    }
    with serving(env, tmp_path) as (process, base):
        stats = requests.get(f"{base}/stats", headers=ADMIN_HEADERS, timeout=5)
        assert stats.json()["queue"] is None  # the depth is unknown, not zero
        reply = requests.post(
            f"{base}/notifications",
            json={"user_id": "u1", "notification_type": "in_app", "message": "later"},
            headers=ADMIN_HEADERS,
            timeout=10,
        )
        assert reply.status_code == 201 and reply.json()["status"] == "pending"
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert f"notification={reply.json()['id']} event=accepted" in output
    assert "event=publish_failed" in output and "event=consumer_disconnected" in output
    assert "Traceback" not in output


def test_a_restart_with_the_in_process_queue_loses_nothing(tmp_path):
    """A previous run queued a notification in memory and died: the next start delivers it."""
    from common.model import QUEUED, Notification
    from common.store.sqlite import SqliteStore
    from tests.support.runner import running_service

    data_dir = tmp_path / "data"
    store = SqliteStore(data_dir / "notifications.db")
    left_behind = Notification("u1", "in_app", "from the last run", status=QUEUED)
    store.add(left_behind)
    store.close()
    with running_service({"DATA_DIR": str(data_dir), "SWEEP_INTERVAL": "0.2"}) as base:
        deadline = time.monotonic() + 20
        status = None
        while time.monotonic() < deadline and status != "sent":
            reply = requests.get(
                f"{base}/notifications/{left_behind.id}", headers=ADMIN_HEADERS, timeout=5
            )
            status = reply.json()["status"]
            time.sleep(0.1)
    assert status == "sent"
