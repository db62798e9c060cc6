"""End to end through the runner, with every real part on loopback: the RabbitMQ broker, an
SMTP server (aiosmtpd) and the real twilio client against a Twilio-compatible endpoint.
"""

from __future__ import annotations

import json
import time

import pika
import pytest
import requests

from tests.support.auth import ADMIN_HEADERS
from tests.support.runner import running_service

pytestmark = pytest.mark.rabbitmq

FAST_RETRIES = {
    "RETRY_SCHEDULE": "0.3,0.3,0.3,0.3,0.3",
    "SWEEP_INTERVAL": "0.2",
    "PENDING_GRACE_SECONDS": "1",
    "LEASE_SECONDS": "10",
}


@pytest.fixture
def env(tmp_path, rabbit_url, queue_names, smtp_server, fake_twilio):
    return {
        "DATA_DIR": str(tmp_path / "data"),
        "RABBITMQ_URL": rabbit_url,
        "QUEUE_NAME": queue_names[0],
        "DLQ_NAME": queue_names[1],
        **smtp_server.env(),
        **fake_twilio.env(),
        **FAST_RETRIES,
    }


def send(base: str, **payload) -> dict:
    body = {"user_id": "u-e2e", **payload}
    reply = requests.post(f"{base}/notifications", json=body, headers=ADMIN_HEADERS, timeout=10)
    assert reply.status_code == 201, reply.text
    return reply.json()


def wait_for_status(base: str, notification_id: str, wanted: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        current = requests.get(
            f"{base}/notifications/{notification_id}", headers=ADMIN_HEADERS, timeout=10
        ).json()
        if not seen or seen[-1] != current["status"]:
            seen.append(current["status"])
        if current["status"] == wanted:
            return current
        time.sleep(0.05)
    raise AssertionError(f"{notification_id} never reached {wanted}; went through {seen}")


def dead_letters(url: str, name: str) -> list[dict]:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    found = []
    while True:
        method, _, body = channel.basic_get(name, auto_ack=True)
        if method is None:
            break
        found.append(json.loads(body))
    connection.close()
    return found


def test_each_type_goes_from_queued_to_sent(env, smtp_server, fake_twilio):
    with running_service(env) as base:
        email = send(
            base,
            notification_type="email",
            message="Your order shipped",
            email="ann@example.com",
            subject="Order update",
        )
        sms = send(base, notification_type="sms", message="Code 1234", phone="+14155550123")
        in_app = send(base, notification_type="in_app", message="Welcome!")
        assert {email["status"], sms["status"], in_app["status"]} == {"queued"}
        for accepted in (email, sms, in_app):
            sent = wait_for_status(base, accepted["id"], "sent")
            assert sent["sent_at"] and sent["last_error"] is None

    mail = smtp_server.wait_for_messages(1)[0]
    assert mail.message["To"] == "ann@example.com" and mail.message["Subject"] == "Order update"
    assert "Your order shipped" in mail.message.get_payload(decode=True).decode()
    request = fake_twilio.wait_for_requests(1)[0]
    assert request.form["To"] == "+14155550123" and request.form["Body"] == "Code 1234"


def test_a_failing_email_walks_the_schedule_into_the_dead_letter_queue_and_back(
    env, smtp_server, rabbit_url, queue_names
):
    smtp_server.mode = "tempfail"
    with running_service(env) as base:
        accepted = send(base, notification_type="email", message="Hello", email="bob@example.com")
        failed = wait_for_status(base, accepted["id"], "failed_permanently", timeout=60)
        assert failed["retry_count"] == 5 and "451" in failed["last_error"]
        assert [d["id"] for d in dead_letters(rabbit_url, queue_names[1])] == [accepted["id"]]

        smtp_server.mode = "accept"
        retry = f"{base}/notifications/{accepted['id']}/retry"
        reply = requests.post(retry, headers=ADMIN_HEADERS, timeout=10)
        assert reply.status_code == 202 and reply.json()["notification"]["retry_count"] == 0
        wait_for_status(base, accepted["id"], "sent")
        again = requests.post(retry, headers=ADMIN_HEADERS, timeout=10)
        assert again.status_code == 409
        stats = requests.get(f"{base}/stats", headers=ADMIN_HEADERS, timeout=10).json()
        assert stats["by_status"]["sent"] == 1 and stats["queue"]["messages"] == 0
    assert smtp_server.wait_for_messages(1)[0].message["To"] == "bob@example.com"


def test_an_invalid_number_fails_at_once_with_twilios_reason(
    env, fake_twilio, rabbit_url, queue_names
):
    fake_twilio.mode = "invalid_number"
    with running_service(env) as base:
        accepted = send(base, notification_type="sms", message="Hi", phone="+15005550001")
        failed = wait_for_status(base, accepted["id"], "failed_permanently")
        assert failed["retry_count"] == 0 and "21211" in failed["last_error"]
    assert [d["id"] for d in dead_letters(rabbit_url, queue_names[1])] == [accepted["id"]]


def test_a_notification_accepted_while_the_runner_is_down_is_delivered_when_it_returns(
    env, tmp_path
):
    """Stored and published, then the runner stops before delivering: nothing is lost."""
    from common.channels import make_channels
    from common.config import load_settings
    from common.queue import make_queue
    from common.runtime import set_service
    from common.service import NotificationService
    from common.store import make_store

    settings = load_settings(env)
    service = NotificationService(
        settings, make_store(settings), make_queue(settings), make_channels(settings)
    )
    accepted = service.submit({"user_id": "u-e2e", "notification_type": "in_app", "message": "hi"})
    service.queue.close()
    set_service(None)
    with running_service(env) as base:
        wait_for_status(base, accepted.id, "sent")
