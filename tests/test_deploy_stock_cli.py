"""Each handler alone under the stock functions-framework CLI, as a FaaS platform runs it.

`functions-framework --source functions/<file>.py --target <name> [--signature-type cloudevent]`
from the repository root, configured by environment variables only, and called over HTTP:
the HTTP functions with real requests, `queue_deliver` and `cron_retry_sweep` with CloudEvents
in binary mode (`ce-*` headers) and structured mode (`application/cloudevents+json`), shaped as
Knative's RabbitMQ source and Cloud Scheduler (through Pub/Sub) or a Knative PingSource send
them. No runner, no routing, no consumer and no timer are involved.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pika
import pytest
import requests

from common.model import FAILED_PERMANENTLY, QUEUED, RETRY_SCHEDULED, SENT, Notification, utcnow
from common.queue.base import encode_message
from common.store.sqlite import SqliteStore
from tests.support.auth import ADMIN_HEADERS, ADMIN_KEY, admin_session
from tests.support.runner import SERVICE_VARIABLES, free_port

ROOT = Path(__file__).resolve().parent.parent
STOCK_CLI = shutil.which("functions-framework", path=os.path.dirname(sys.executable)) or (
    shutil.which("functions-framework")
)

pytestmark = pytest.mark.timeout(120)


class StockFunction(str):
    """The function's base URL (a str), with its process, what it logged, and `http`: a
    requests.Session that sends ADMIN_HEADERS, closed before the function stops."""

    process: subprocess.Popen
    log_path: Path
    http: requests.Session

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def sent_lines(self, notification_id: str) -> int:
        return len(
            re.findall(rf"notification={re.escape(notification_id)} event=sent\b", self.log())
        )


def _wait_until_answering(url: StockFunction, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if url.process.poll() is not None:
            raise RuntimeError(
                f"the function exited with code {url.process.returncode}:\n{url.log()[-4000:]}"
            )
        try:
            url.http.get(url, timeout=1)  # any HTTP answer (404, 405) means it is serving
            return
        except requests.ConnectionError:
            time.sleep(0.1)
    raise RuntimeError(f"the function did not answer within {timeout} s:\n{url.log()[-4000:]}")


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM, as a platform scales an instance down; SIGKILL the group if it lingers."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # its own session: the gunicorn worker too
    except ProcessLookupError:
        pass
    process.wait(10)


@contextmanager
def stock_function(
    source: str,
    target: str,
    env: Mapping[str, str],
    *,
    signature_type: str | None = "http",
    module_entry: bool = False,
    asgi: bool = False,
) -> Iterator[StockFunction]:
    """Run functions/<source> with the stock CLI from the repository root; yield its base URL.

    The child gets only `env` on top of a clean environment (no service setting of the test
    process, no .env file), and the tests' ADMIN_API_KEY unless `env` has its own.
    `module_entry` runs `python -m functions_framework` instead; `asgi` adds --asgi (an async
    function, served by uvicorn).
    """
    port = free_port()
    command = [sys.executable, "-m", "functions_framework"] if module_entry else [STOCK_CLI]
    command += [
        "--source",
        f"functions/{source}",
        "--target",
        target,
        *(["--signature-type", signature_type] if signature_type else []),
        *(["--asgi"] if asgi else []),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    child_env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARIABLES}
    # PYTHONPATH is cleared: the function must find `common` by itself, as it must when deployed.
    child_env.pop("PYTHONPATH", None)
    child_env.update(ENV_FILE=os.devnull, PYTHONUNBUFFERED="1", ADMIN_API_KEY=ADMIN_KEY)
    child_env.update({k: str(v) for k, v in env.items()})
    log_file = tempfile.NamedTemporaryFile(prefix=f"{target}-", suffix=".log", delete=False)
    url = StockFunction(f"http://127.0.0.1:{port}")
    url.log_path = Path(log_file.name)
    url.http = admin_session()
    url.process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=child_env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _wait_until_answering(url, 30)
        yield url
    except BaseException:
        sys.stderr.write(f"--- {target} log ---\n{url.log()[-8000:]}\n")
        raise
    finally:
        url.http.close()  # no idle keep-alive connection left open while it stops
        _stop(url.process)
        log_file.close()
        url.log_path.unlink(missing_ok=True)


# -- helpers -----------------------------------------------------------------------------------


@pytest.fixture
def data_dir(tmp_path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def store(data_dir) -> Iterator[SqliteStore]:
    """The same SQLite file the function process uses (WAL: both may write)."""
    store = SqliteStore(data_dir / "notifications.db")
    yield store
    store.close()


def stored(store: SqliteStore, status: str = QUEUED, **fields) -> Notification:
    values = {"user_id": "u1", "notification_type": "in_app", "message": "hello", **fields}
    notification = Notification(**values, status=status)
    store.add(notification)
    return notification


def binary_event(url: str, data: bytes, **attributes: str) -> requests.Response:
    """A CloudEvent in binary mode: attributes in ce-* headers, data as the body."""
    headers = {
        **ADMIN_HEADERS,
        "ce-specversion": "1.0",
        "ce-type": "dev.knative.rabbitmq.event",
        "ce-source": "/apis/v1/namespaces/default/rabbitmqsources/notifications",
        "ce-id": str(uuid.uuid4()),
        "Content-Type": "application/json",
    }
    for name, value in attributes.items():
        key = f"ce-{name}"
        if value is None:
            headers.pop(key, None)
        else:
            headers[key] = value
    return requests.post(url, data=data, headers=headers, timeout=30)


def structured_event(url: str, event: dict | bytes) -> requests.Response:
    """A CloudEvent in structured mode: the whole event as one JSON document."""
    body = event if isinstance(event, bytes) else json.dumps(event).encode()
    headers = {**ADMIN_HEADERS, "Content-Type": "application/cloudevents+json"}
    return requests.post(url, data=body, headers=headers, timeout=30)


def rabbit_messages(rabbit_url: str, queue: str) -> list[dict]:
    """Everything waiting in `queue`, taken off it."""
    connection = pika.BlockingConnection(pika.URLParameters(rabbit_url))
    try:
        channel = connection.channel()
        bodies = []
        while True:
            method, _, body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                return bodies
            bodies.append(json.loads(body))
    finally:
        connection.close()


# -- queue_deliver -----------------------------------------------------------------------------


def test_queue_deliver_takes_binary_and_structured_events_and_delivers_once(data_dir, store):
    first = stored(store)
    second = stored(store, notification_type="email", email="ada@example.com")
    with stock_function(
        "queue_deliver.py", "queue_deliver", {"DATA_DIR": data_dir}, signature_type="cloudevent"
    ) as url:
        # Binary mode, as Knative's RabbitMQ source posts a message: its body is the data.
        event_id = str(uuid.uuid4())
        reply = binary_event(url, encode_message(first.id), id=event_id, subject=event_id)
        assert reply.status_code == 200, reply.text
        assert store.get(first.id).status == SENT

        # The same event again (the source redelivers after a lost reply): accepted, not resent.
        assert binary_event(url, encode_message(first.id), id=event_id).status_code == 200
        assert store.get(first.id).status == SENT

        # Structured mode: the event as one JSON document, data embedded as JSON.
        event = {
            "specversion": "1.0",
            "type": "dev.knative.rabbitmq.event",
            "source": "/apis/v1/namespaces/default/rabbitmqsources/notifications",
            "id": str(uuid.uuid4()),
            "datacontenttype": "application/json",
            "data": {"notification_id": second.id},
        }
        reply = structured_event(url, event)
        assert reply.status_code == 200, reply.text
        assert store.get(second.id).status == SENT
        assert (data_dir / "outbox" / f"{second.id}.eml").exists()

        # An id the store does not know: accepted (nothing to do), so it is not redelivered.
        assert binary_event(url, encode_message(str(uuid.uuid4()))).status_code == 200
        time.sleep(0.2)  # let the last log lines reach the file
        assert url.sent_lines(first.id) == 1 and url.sent_lines(second.id) == 1


def _malformed_events(notification_id: str) -> list[tuple[str, dict]]:
    """(what is wrong, how to send it); each must get a 4xx and change nothing."""
    good = encode_message(notification_id)
    whole = {
        "specversion": "1.0",
        "type": "dev.knative.rabbitmq.event",
        "source": "/apis/v1/namespaces/default/rabbitmqsources/notifications",
        "id": "e-1",
        "data": {"notification_id": notification_id},
    }
    without_id = {k: v for k, v in whole.items() if k != "id"}
    return [
        ("binary, no data", {"binary": b""}),
        ("binary, data not JSON", {"binary": b"not json{"}),
        ("binary, data a JSON list", {"binary": b"[1, 2]"}),
        ("binary, no notification_id", {"binary": b'{"id": "x"}'}),
        ("binary, notification_id not text", {"binary": b'{"notification_id": 42}'}),
        ("binary, blank notification_id", {"binary": b'{"notification_id": "  "}'}),
        ("binary, no ce-id", {"binary": good, "attributes": {"id": None}}),
        ("binary, no ce-specversion", {"binary": good, "attributes": {"specversion": None}}),
        ("binary, unknown ce-specversion", {"binary": good, "attributes": {"specversion": "9"}}),
        ("structured, no id", {"structured": without_id}),
        ("structured, not JSON", {"structured": b'{"specversion": "1.0", "type"'}),
        ("structured, data without notification_id", {"structured": {**whole, "data": {}}}),
        ("not a CloudEvent", {"plain": good}),
    ]


def test_queue_deliver_answers_a_malformed_event_with_a_4xx_and_changes_nothing(data_dir, store):
    notification = stored(store)
    before = store.get(notification.id).to_dict()
    with stock_function(
        "queue_deliver.py", "queue_deliver", {"DATA_DIR": data_dir}, signature_type="cloudevent"
    ) as url:
        for problem, how in _malformed_events(notification.id):
            if "binary" in how:
                reply = binary_event(url, how["binary"], **how.get("attributes", {}))
            elif "structured" in how:
                reply = structured_event(url, how["structured"])
            else:
                reply = url.http.post(url, data=how["plain"], timeout=30)
            assert 400 <= reply.status_code < 500, f"{problem}: {reply.status_code} {reply.text}"
            if "data" in problem or "notification_id" in problem:
                # A well-formed event with bad data: queue_deliver names the problem in JSON.
                assert reply.status_code == 400 and reply.json()["error"], problem
            else:
                # A broken envelope: functions-framework refuses it before the function runs.
                assert reply.text.strip(), f"{problem}: the 4xx says nothing"
            assert store.get(notification.id).to_dict() == before, problem
        assert url.http.get(url, timeout=30).status_code == 405
        assert store.get(notification.id).to_dict() == before
        assert url.sent_lines(notification.id) == 0


# -- cron_retry_sweep --------------------------------------------------------------------------


def _due_retry(store: SqliteStore) -> Notification:
    return stored(
        store,
        status=RETRY_SCHEDULED,
        retry_count=1,
        next_retry_time=utcnow() - timedelta(seconds=1),
    )


def test_cron_retry_sweep_requeues_due_retries_on_rabbitmq(
    data_dir, store, rabbit_url, queue_names
):
    queue, dead_letters = queue_names
    env = {
        "DATA_DIR": data_dir,
        "RABBITMQ_URL": rabbit_url,
        "QUEUE_NAME": queue,
        "DLQ_NAME": dead_letters,
    }
    first = _due_retry(store)
    with stock_function(
        "cron_retry_sweep.py", "cron_retry_sweep", env, signature_type="cloudevent"
    ) as url:
        # Not a CloudEvent at all: refused, nothing queued.
        reply = url.http.post(url, data=b"tick", headers={"Content-Type": "text/plain"})
        assert 400 <= reply.status_code < 500 and reply.text.strip()
        assert store.get(first.id).status == RETRY_SCHEDULED

        # Cloud Scheduler -> Pub/Sub -> Eventarc: a binary-mode messagePublished event.
        message = {
            "message": {
                "data": base64.b64encode(b"sweep").decode(),
                "messageId": "1",
                "publishTime": utcnow().isoformat(),
            },
            "subscription": "projects/p/subscriptions/sweep",
        }
        reply = binary_event(
            url,
            json.dumps(message).encode(),
            type="google.cloud.pubsub.topic.v1.messagePublished",
            source="//pubsub.googleapis.com/projects/p/topics/sweep",
        )
        assert reply.status_code == 200, reply.text
        assert store.get(first.id).status == QUEUED
        assert rabbit_messages(rabbit_url, queue) == [{"notification_id": first.id}]

        # A Knative PingSource: a structured-mode event, every 30 s if it is so scheduled.
        second = _due_retry(store)
        event = {
            "specversion": "1.0",
            "type": "dev.knative.sources.ping",
            "source": "/apis/v1/namespaces/default/pingsources/sweep",
            "id": str(uuid.uuid4()),
            "data": {},
        }
        reply = structured_event(url, event)
        assert reply.status_code == 200, reply.text
        assert store.get(second.id).status == QUEUED
        assert rabbit_messages(rabbit_url, queue) == [{"notification_id": second.id}]
        assert store.get(first.id).status == QUEUED  # not queued twice


def broker_env(data_dir, rabbit_url, queue_names) -> dict[str, str]:
    """What every deployed function that queues work gets: the store and the broker."""
    queue, dead_letters = queue_names
    return {
        "DATA_DIR": data_dir,
        "RABBITMQ_URL": rabbit_url,
        "QUEUE_NAME": queue,
        "DLQ_NAME": dead_letters,
    }


def test_http_retry_sweep_is_the_same_sweep_for_a_plain_http_scheduler(
    data_dir, store, rabbit_url, queue_names
):
    due = _due_retry(store)
    env = broker_env(data_dir, rabbit_url, queue_names)
    with stock_function("cron_retry_sweep.py", "http_retry_sweep", env) as url:
        reply = url.http.post(f"{url}/sweep", timeout=30)
        assert reply.status_code == 200 and reply.json() == {
            "requeued": 1,
            "publish_failed": 0,
            "dead_letters": 0,
            "webhooks": 0,
        }
        assert store.get(due.id).status == QUEUED
        assert url.http.get(f"{url}/sweep", timeout=30).status_code == 405


# -- the HTTP functions ------------------------------------------------------------------------


def test_http_send_alone_stores_and_publishes_to_rabbitmq(data_dir, store, rabbit_url, queue_names):
    queue, dead_letters = queue_names
    env = {
        "DATA_DIR": data_dir,
        "RABBITMQ_URL": rabbit_url,
        "QUEUE_NAME": queue,
        "DLQ_NAME": dead_letters,
    }
    with stock_function("http_send.py", "http_send", env) as url:
        payload = {"user_id": "u1", "notification_type": "sms", "message": "hi"}
        payload["phone"] = "+1 (415) 555-0123"
        reply = url.http.post(f"{url}/notifications", json=payload, timeout=30)
        assert reply.status_code == 201, reply.text
        created = reply.json()
        assert created["status"] == QUEUED and reply.headers["Location"].endswith(created["id"])
        assert store.get(created["id"]).phone == "+14155550123"
        assert rabbit_messages(rabbit_url, queue) == [{"notification_id": created["id"]}]

        bad = url.http.post(f"{url}/notifications", json={"user_id": "u1"}, timeout=30)
        assert bad.status_code == 400 and "message" in bad.json()["fields"]
        # Only its own routes: reading is another function's job.
        assert url.http.get(f"{url}/notifications/{created['id']}").status_code == 404
        assert url.http.get(f"{url}/notifications").status_code == 405


@pytest.mark.parametrize(
    "source,target",
    [
        ("http_send.py", "http_send"),
        ("http_notifications.py", "http_notifications"),
        ("http_web.py", "http_web"),
        ("cron_retry_sweep.py", "http_retry_sweep"),
    ],
)
def test_a_function_that_queues_work_refuses_to_start_without_a_broker(data_dir, source, target):
    """Alone, without RABBITMQ_URL, it would accept notifications into its own memory, where
    no deliverer could ever read them: it stops at start and says what to set."""
    with pytest.raises(RuntimeError) as caught:
        with stock_function(source, target, {"DATA_DIR": data_dir}):
            pass
    assert "exited with code 2" in str(caught.value)
    assert "RABBITMQ_URL is unset" in str(caught.value)
    assert "Traceback" not in str(caught.value)


def test_http_notifications_alone_lists_reads_and_retries(data_dir, store, rabbit_url, queue_names):
    failed = stored(store, status=FAILED_PERMANENTLY, user_id="reader")
    stored(store, status=SENT, user_id="reader")
    env = broker_env(data_dir, rabbit_url, queue_names)
    with stock_function("http_notifications.py", "http_notifications", env) as url:
        page = url.http.get(f"{url}/users/reader/notifications?limit=1", timeout=30).json()
        assert page["count"] == 1 and page["next_cursor"]
        rest = url.http.get(
            f"{url}/users/reader/notifications",
            params={"limit": 1, "cursor": page["next_cursor"]},
            timeout=30,
        ).json()
        assert rest["count"] == 1 and rest["next_cursor"] is None
        assert (
            url.http.get(f"{url}/notifications/{failed.id}").json()["status"] == FAILED_PERMANENTLY
        )
        retried = url.http.post(f"{url}/notifications/{failed.id}/retry", timeout=30)
        assert retried.status_code == 202 and retried.json()["status"] == QUEUED
        assert store.get(failed.id).status == QUEUED
        assert url.http.post(f"{url}/notifications/{failed.id}/retry").status_code == 409


def test_http_stats_alone_counts_the_store(data_dir, store):
    stored(store)
    stored(store, status=SENT, notification_type="email", email="a@b.co")
    with stock_function("http_stats.py", "http_stats", {"DATA_DIR": data_dir}) as url:
        stats = url.http.get(f"{url}/stats", timeout=30).json()
        assert stats["total"] == 2
        assert stats["by_status"][QUEUED] == 1 and stats["by_status"][SENT] == 1
        assert stats["by_type"] == {"email": 1, "sms": 0, "in_app": 1}


def test_http_health_alone_answers_liveness_and_readiness(data_dir, store, rabbit_url, queue_names):
    env = broker_env(data_dir, rabbit_url, queue_names)
    with stock_function("http_health.py", "http_health", env) as url:
        assert url.http.get(f"{url}/healthz", timeout=30).json() == {"status": "ok"}
        ready = url.http.get(f"{url}/readyz", timeout=30)
        assert ready.status_code == 200, ready.text
        checks = ready.json()["checks"]
        assert checks["store"]["ok"] and checks["queue"]["ok"] and "consumer" not in checks
    unreachable = {**env, "RABBITMQ_URL": f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"}
    with stock_function("http_health.py", "http_health", unreachable) as url:
        ready = url.http.get(f"{url}/readyz", timeout=30)
        assert ready.status_code == 503 and not ready.json()["checks"]["queue"]["ok"]
        assert "guest" not in ready.text  # no credentials in the answer


def test_http_access_alone_manages_keys_and_mints_user_tokens(data_dir):
    env = {"DATA_DIR": str(data_dir), "AUTH_SECRET": "s" * 40}
    with stock_function("http_access.py", "http_access", env) as url:
        admin = admin_session()
        created = admin.post(
            f"{url}/api-keys", json={"name": "ci", "scopes": ["send"]}, timeout=30
        ).json()
        listed = admin.get(f"{url}/api-keys", timeout=30).json()
        assert [k["id"] for k in listed["keys"]] == [created["id"]]
        assert created["key"] not in json.dumps(listed)
        sender = {"Authorization": f"Bearer {created['key']}"}
        token = url.http.post(f"{url}/users/ann/token", headers=sender, timeout=30)
        assert token.status_code == 201 and token.json()["user_id"] == "ann"
        assert url.http.get(f"{url}/api-keys", headers=sender, timeout=30).status_code == 403
        assert requests.post(f"{url}/api-keys", json={}, timeout=30).status_code == 401
        revoked = admin.delete(f"{url}/api-keys/{created['id']}", timeout=30)
        assert revoked.status_code == 200 and revoked.json()["revoked_at"]
        assert (
            url.http.post(f"{url}/users/ann/token", headers=sender, timeout=30).status_code == 401
        )
        admin.close()


def test_http_openapi_alone_serves_the_document():
    with stock_function("http_openapi.py", "http_openapi", {}) as url:
        reply = url.http.get(f"{url}/openapi.json", timeout=30)
        assert reply.status_code == 200 and reply.headers["Content-Type"] == "application/json"
        assert reply.json() == json.loads((ROOT / "openapi.json").read_text())


def test_http_web_alone_serves_pages_static_files_and_the_form(
    data_dir, store, rabbit_url, queue_names
):
    env = broker_env(data_dir, rabbit_url, queue_names)
    with stock_function("http_web.py", "http_web", env) as url:
        session = admin_session()
        assert "text/html" in session.get(f"{url}/", timeout=30).headers["Content-Type"]
        assert session.get(f"{url}/static/app.css", timeout=30).status_code == 200
        form = session.get(f"{url}/send-notification", timeout=30).text
        hidden = dict(re.findall(r'name="(csrf_token|submission_key)" value="([^"]+)"', form))
        reply = session.post(
            f"{url}/send-notification",
            data={**hidden, "user_id": "web", "notification_type": "in_app", "message": "hi"},
            allow_redirects=False,
            timeout=30,
        )
        assert reply.status_code == 303, reply.text
        sent_id = reply.headers["Location"].split("sent=")[1].split("&")[0]
        assert store.get(sent_id).user_id == "web"
        page = session.get(f"{url}/users/web", timeout=30)
        assert page.status_code == 200 and sent_id in page.text


def _sse_events(lines: Iterator[str], until: Callable[[list[dict]], bool]) -> list[dict]:
    """The next events of an open stream's lines (comments skipped), parsed, up to the first
    for which `until(events so far)` holds."""
    events: list[dict] = []
    event: dict = {}
    for line in lines:
        if line == "":
            if "event" in event:
                events.append(event)
                if until(events):
                    return events
            event = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            event[name] = json.loads(value) if name == "data" else value
    return events


def test_http_stream_alone_under_asgi_streams_changes_published_by_another_process(
    data_dir, store, rabbit_url
):
    from common.auth import user_tokens
    from common.inbox_feed import CREATED, change_of
    from common.inbox_feed.rabbitmq import RabbitInboxFeed

    secret = "stream-" + "s" * 40
    exchange = f"test.inbox.{uuid.uuid4().hex[:8]}"
    env = {
        "DATA_DIR": data_dir,
        "AUTH_SECRET": secret,
        "RABBITMQ_URL": rabbit_url,
        "INBOX_EXCHANGE": exchange,
        "STREAM_HEARTBEAT_SECONDS": "1",
    }
    token, _ = user_tokens.mint("u1", secret, timedelta(minutes=5), utcnow())
    feed = RabbitInboxFeed(rabbit_url, exchange)
    try:
        with stock_function("http_stream.py", "http_stream", env, asgi=True) as url:
            path = f"{url}/users/u1/notifications/stream"
            assert requests.get(path, timeout=30).status_code == 401
            headers = {"Authorization": f"Bearer {token}"}
            with requests.get(path, headers=headers, stream=True, timeout=30) as reply:
                assert reply.status_code == 200
                assert reply.headers["Content-Type"] == "text/event-stream; charset=utf-8"
                lines = reply.iter_lines(decode_unicode=True)
                [counts] = _sse_events(lines, lambda events: True)
                assert counts["event"] == "counts.updated" and counts["data"]["total"] == 0
                # Another process (this test) delivers one and tells the feed.
                time.sleep(0.5)  # the function's consumer is bound by now (1 s heartbeats)
                notification = stored(store, status=SENT)
                feed.publish(change_of(notification, CREATED))
                # (a RESYNC when the feed's consumer connects may bring counts first)
                events = _sse_events(lines, lambda events: events[-1]["data"].get("total") == 1)
            created = [e for e in events if e["event"] == "notification.created"]
            assert {e["data"]["notification"]["id"] for e in created} == {notification.id}
            assert events[-1]["event"] == "counts.updated"
            assert int(created[-1]["id"]) >= notification.updated_at.timestamp() * 1000 - 1
            assert token not in url.log()
    finally:
        feed.close()


# -- `python -m functions_framework` from the root ---------------------------------------------


def test_python_m_functions_framework_from_the_root_runs_a_function_too(data_dir, store):
    notification = stored(store)
    # No --signature-type either: the function's own decorator makes it a CloudEvent function,
    # which is why `gcloud functions deploy --trigger-http` gives queue_deliver a plain URL.
    with stock_function(
        "queue_deliver.py",
        "queue_deliver",
        {"DATA_DIR": data_dir},
        signature_type=None,
        module_entry=True,
    ) as url:
        assert binary_event(url, encode_message(notification.id)).status_code == 200
        assert store.get(notification.id).status == SENT
    with stock_function(
        "http_stats.py", "http_stats", {"DATA_DIR": data_dir}, module_entry=True
    ) as url:
        assert url.http.get(f"{url}/stats", timeout=30).json()["by_status"][SENT] == 1
