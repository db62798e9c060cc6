"""GET /metrics through the HTTP API: counters that match what was sent (as deltas: the
default registry is process-wide), who may read them, the queue gauges; multiprocess mode."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from common.config import load_settings
from common.hosting import HTTP_FUNCTIONS, ROOT, FunctionRouter
from common.metrics import MetricsListener, record_webhook_attempt, render
from common.model import Notification, utcnow
from common.notification_events import DELIVERED, FAILED, EventBus, NotificationEvent
from common.runtime import set_service
from tests.support.auth import ADMIN_KEY, AuthClient
from tests.support.services import installed_service
from tests.support.smtp_server import REJECT, TEMPFAIL

METRICS_TOKEN = "scrape-token-7d41c2b9e05f"
SERVED = {"http_send", "http_access", "http_metrics"}


@pytest.fixture(scope="module")
def router():
    return FunctionRouter(tuple(s for s in HTTP_FUNCTIONS if s.target in SERVED))


@pytest.fixture
def service(settings_env, smtp_server, fake_twilio):
    env = {**settings_env, **smtp_server.env(), **fake_twilio.env(), "METRICS_TOKEN": METRICS_TOKEN}
    service = installed_service(load_settings(env), events=EventBus([MetricsListener()]))
    yield service
    set_service(None)


def scrape(router, credential: str | None = ADMIN_KEY) -> dict[tuple, float]:
    """{(sample name, sorted labels): value} from one GET /metrics."""
    reply = AuthClient(router, credentials=credential).get("/metrics")
    assert reply.status_code == 200, reply.get_data(as_text=True)
    assert reply.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(reply.get_data(as_text=True))
        for sample in family.samples
    }


def delta(before: dict, after: dict, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def send(router, payload: dict) -> str:
    reply = AuthClient(router).post("/notifications", json=payload)
    assert reply.status_code == 201, reply.get_json()
    return reply.get_json()["id"]


def deliver_queued(service) -> None:
    while (notification_id := service.queue.get(timeout=0)) is not None:
        service.deliver(notification_id)


def email(address: str) -> dict:
    return {"user_id": "u1", "notification_type": "email", "email": address, "message": "hi"}


SMS = {"user_id": "u2", "notification_type": "sms", "phone": "+14155550123", "message": "hi"}
IN_APP = {"user_id": "u3", "notification_type": "in_app", "message": "hi"}


def test_counters_follow_what_was_sent_failed_retried_and_suppressed(router, service, smtp_server):
    before = scrape(router)
    for index in range(3):
        send(router, email(f"ok{index}@example.com"))
    for _ in range(2):
        send(router, SMS)
        send(router, IN_APP)
    deliver_queued(service)
    smtp_server.mode = TEMPFAIL  # 451: a retry is scheduled
    send(router, email("later@example.com"))
    deliver_queued(service)
    smtp_server.mode = REJECT  # 550 at RCPT: failed for good, and the address suppressed
    send(router, email("gone@example.com"))
    deliver_queued(service)
    send(router, email("gone@example.com"))  # suppressed at acceptance

    after = scrape(router)
    expected = {
        "notifications_accepted_total": {"email": 6, "sms": 2, "in_app": 2},
        "notifications_sent_total": {"email": 3, "sms": 2, "in_app": 2},
        "notifications_retried_total": {"email": 1, "sms": 0, "in_app": 0},
        "notifications_failed_total": {"email": 1, "sms": 0, "in_app": 0},
        "notifications_suppressed_total": {"email": 1, "sms": 0, "in_app": 0},
    }
    for name, by_type in expected.items():
        for kind, count in by_type.items():
            assert delta(before, after, name, type=kind) == count, (name, kind)
    assert delta(before, after, "notification_provider_errors_total", provider="smtp", code="451")
    assert delta(before, after, "notification_provider_errors_total", provider="smtp", code="550")
    latencies = sum(
        delta(before, after, "notification_delivery_seconds_count", type=kind)
        for kind in ("email", "sms", "in_app")
    )
    assert latencies == 7  # one observation per sent notification
    assert after[("notification_queue_up", ())] == 1
    assert after[("notification_queue_depth", ())] == 0
    assert after[("notification_dead_letter_depth", ())] == 1

    # The scraper's token reads the same numbers.
    with_token = scrape(router, METRICS_TOKEN)
    assert (
        with_token[("notifications_sent_total", (("type", "email"),))]
        == after[("notifications_sent_total", (("type", "email"),))]
    )


def test_metrics_need_admin_or_the_metrics_token(router, service):
    nobody = AuthClient(router, credentials=None).get("/metrics")
    assert nobody.status_code == 401
    assert nobody.headers["WWW-Authenticate"].startswith("Bearer")
    created = AuthClient(router).post("/api-keys", json={"name": "sender", "scopes": ["send"]})
    assert created.status_code == 201, created.get_json()
    sender = AuthClient(router, credentials=created.get_json()["key"]).get("/metrics")
    assert sender.status_code == 403
    assert scrape(router, METRICS_TOKEN)[("notification_queue_up", ())] == 1


def test_a_wrong_metrics_token_is_refused(router, service):
    reply = AuthClient(router, credentials=METRICS_TOKEN + "x").get("/metrics")
    assert reply.status_code == 401
    assert "notifications_" not in reply.get_data(as_text=True)


def test_without_a_metrics_token_set_no_bearer_token_passes_as_one(router, settings_env):
    set_service(None)
    installed_service(load_settings(settings_env))  # METRICS_TOKEN unset
    try:
        reply = AuthClient(router, credentials="not-a-key").get("/metrics")
        assert reply.status_code == 401
    finally:
        set_service(None)


def test_an_unreachable_queue_says_so_and_omits_its_depths():
    for reader in (lambda _timeout: None, lambda _timeout: 1 / 0):
        text = render(reader).decode()
        samples = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
        assert samples["notification_queue_up"] == 0
        assert "notification_queue_depth" not in samples
        assert "notification_dead_letter_depth" not in samples


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_receipts_and_webhook_attempts_are_counted():
    sent = Notification(user_id="u", notification_type="sms", phone="+14155550123", message="m")
    sent.created_at = utcnow() - timedelta(seconds=3)
    undelivered = sent.with_changes(delivery_status="undelivered")
    before = {
        "delivered": value("notification_delivery_receipts_total", status="delivered"),
        "undelivered": value("notification_delivery_receipts_total", status="undelivered"),
        "failed": value("notifications_failed_total", type="sms"),
        "webhooks": value("webhook_deliveries_total", result="failed"),
    }
    MetricsListener().notify(
        [
            NotificationEvent(DELIVERED, sent, utcnow(), provider="twilio"),
            NotificationEvent(FAILED, undelivered, utcnow(), "twilio", error_code="30003"),
        ]
    )
    record_webhook_attempt("failed")
    assert value("notification_delivery_receipts_total", status="delivered") == (
        before["delivered"] + 1
    )
    assert value("notification_delivery_receipts_total", status="undelivered") == (
        before["undelivered"] + 1
    )
    assert value("notifications_failed_total", type="sms") == before["failed"]  # a receipt
    assert value("webhook_deliveries_total", result="failed") == before["webhooks"] + 1


MULTIPROCESS_SCRIPT = """
import json, sys
from common.metrics import record_webhook_attempt, render
record_webhook_attempt(sys.argv[1])
if sys.argv[2] == "scrape":
    print(render(lambda timeout: {"messages": 4, "dead_letters": 2}).decode())
"""


def test_multiprocess_mode_collects_every_process(tmp_path):
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}

    def run(result: str, action: str) -> str:
        command = [sys.executable, "-c", MULTIPROCESS_SCRIPT, result, action]
        done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout

    run("succeeded", "-")  # another worker process, gone by the time of the scrape
    text = run("succeeded", "scrape")
    samples = {
        (s.name, json.dumps(s.labels, sort_keys=True)): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }
    assert samples[("webhook_deliveries_total", '{"result": "succeeded"}')] == 2
    assert samples[("notification_queue_depth", "{}")] == 4
