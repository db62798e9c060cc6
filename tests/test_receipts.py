"""Delivery receipts through the API the runner serves: an SMS sent by the real SmsChannel to
the fake Twilio records Twilio's SID, and Twilio's signed status callbacks
(POST /providers/twilio/status) then move its delivery_status forward, never backwards;
forged callbacks are refused, and a dead number goes on the suppression list."""

from __future__ import annotations

import logging

import pytest
from twilio.request_validator import RequestValidator

from common.config import load_settings
from common.hosting import HTTP_FUNCTIONS, FunctionRouter
from common.notification_events import DELIVERED, FAILED, SENT, EventBus
from common.receipts import lower_than, twilio_status
from common.runtime import set_service
from tests.support.auth import AuthClient, anonymous
from tests.support.fake_twilio import FakeTwilio, Receipt

PATH = "/providers/twilio/status"
PHONE = "+14155550123"


class Recorder:
    def __init__(self):
        self.events = []

    def notify(self, events):
        self.events.extend(events)

    def of(self, *types):
        return [e for e in self.events if e.type in types]


# The functions these tests talk to, routed as the runner routes them.
TARGETS = ("http_send", "http_notifications", "http_providers")


@pytest.fixture(scope="module")
def router():
    return FunctionRouter([spec for spec in HTTP_FUNCTIONS if spec.target in TARGETS])


@pytest.fixture
def extra_env():
    return {}


@pytest.fixture
def recorder():
    return Recorder()


@pytest.fixture
def service(settings_env, fake_twilio, extra_env, recorder):
    from tests.support.services import installed_service

    settings = load_settings({**settings_env, **fake_twilio.env(), **extra_env})
    yield installed_service(settings, events=EventBus([recorder]))
    set_service(None)


@pytest.fixture
def client(router, service):
    return AuthClient(router)


@pytest.fixture
def twilio_side(client):
    """What Twilio's servers are to us: a caller with no credential but the signature."""
    return anonymous(client)


def send_sms(client, service, fake_twilio: FakeTwilio, phone: str = PHONE):
    """Submit an SMS through the API and deliver it: (its id, Twilio's record of it)."""
    reply = client.post(
        "/notifications", json={"user_id": "ann", "type": "sms", "phone": phone, "message": "hi"}
    )
    assert reply.status_code == 201, reply.get_json()
    notification_id = reply.get_json()["id"]
    assert service.deliver(notification_id) == "sent"
    return notification_id, fake_twilio.wait_for_requests(len(fake_twilio.requests) or 1)[-1]


def post(twilio_side, receipt: Receipt, *, base_url="http://localhost", path=PATH, **headers):
    headers = {"X-Twilio-Signature": receipt.signature, **headers}
    return twilio_side.post(path, data=receipt.form, headers=headers, base_url=base_url)


def shown(client, notification_id):
    reply = client.get(f"/notifications/{notification_id}")
    assert reply.status_code == 200
    return reply.get_json()


def test_an_sms_records_twilios_sid_and_its_signed_callback_marks_it_delivered(
    client, twilio_side, service, fake_twilio, recorder
):
    notification_id, request = send_sms(client, service, fake_twilio)
    before = shown(client, notification_id)
    assert before["provider_message_id"] == request.sid and request.sid.startswith("SM")
    assert before["delivery_status"] is None
    assert request.form["StatusCallback"] == "http://127.0.0.1:8080" + PATH

    reply = post(twilio_side, fake_twilio.receipt(request, "delivered"))

    assert reply.status_code == 200 and reply.get_json() == {"recorded": True}
    after = shown(client, notification_id)
    assert after["delivery_status"] == "delivered" and after["delivery_status_at"]
    assert after["status"] == "sent" and after["provider_message_id"] == request.sid
    (event,) = recorder.of(DELIVERED)
    assert (event.notification.id, event.provider) == (notification_id, "twilio")
    assert [e.provider for e in recorder.of(SENT)] == ["twilio"]
    assert service.store.count_by_delivery_status() == {"delivered": 1}


def forged(fake_twilio: FakeTwilio, receipt: Receipt, how: str) -> tuple[Receipt, str]:
    """`receipt` spoiled one way, and the base URL it is posted to."""
    if how == "wrong token":
        signature = RequestValidator("not-the-token").compute_signature(receipt.url, receipt.form)
        return Receipt(receipt.url, receipt.form, signature), "http://localhost"
    if how == "tampered":
        return Receipt(receipt.url, {**receipt.form, "ErrorCode": "30003"}, receipt.signature), (
            "http://localhost"
        )
    if how == "signed for its own host":
        url = "http://evil.example" + PATH
        signature = RequestValidator(fake_twilio.auth_token).compute_signature(url, receipt.form)
        return Receipt(url, receipt.form, signature), "http://evil.example"
    return Receipt(receipt.url, receipt.form, ""), "http://localhost"


@pytest.mark.parametrize("how", ["wrong token", "tampered", "signed for its own host", "unsigned"])
def test_a_forged_callback_is_refused_and_changes_nothing(
    client, twilio_side, service, fake_twilio, recorder, how
):
    notification_id, request = send_sms(client, service, fake_twilio)
    receipt, base_url = forged(fake_twilio, fake_twilio.receipt(request, "undelivered"), how)

    reply = post(twilio_side, receipt, base_url=base_url)

    assert reply.status_code == 403 and "X-Twilio-Signature" in reply.get_json()["error"]
    assert shown(client, notification_id)["delivery_status"] is None
    assert recorder.of(FAILED) == []


def test_callbacks_out_of_order_never_move_the_status_backwards(
    client, twilio_side, service, fake_twilio
):
    notification_id, request = send_sms(client, service, fake_twilio)

    post(twilio_side, fake_twilio.receipt(request, "sending"))
    assert shown(client, notification_id)["delivery_status"] == "queued"
    post(twilio_side, fake_twilio.receipt(request, "delivered"))
    late = post(twilio_side, fake_twilio.receipt(request, "sent"))
    failed_late = post(twilio_side, fake_twilio.receipt(request, "failed", 30008))

    assert late.status_code == 200 and late.get_json() == {"recorded": False}
    assert failed_late.get_json() == {"recorded": False}  # delivered is final
    after = shown(client, notification_id)
    assert after["delivery_status"] == "delivered" and after["delivery_error_code"] is None


def test_undelivered_to_an_unsubscribed_number_suppresses_it(
    client, twilio_side, service, fake_twilio, recorder
):
    notification_id, request = send_sms(client, service, fake_twilio)

    reply = post(twilio_side, fake_twilio.receipt(request, "undelivered", 21610))

    assert reply.get_json() == {"recorded": True}
    after = shown(client, notification_id)
    assert (after["delivery_status"], after["delivery_error_code"]) == ("undelivered", "21610")
    suppression = service.suppressions.get("sms", PHONE)
    assert suppression is not None and suppression.notification_id == notification_id
    (event,) = recorder.of(FAILED)
    assert (event.provider, event.error_code) == ("twilio", "21610")
    again = client.post(
        "/notifications", json={"user_id": "ann", "type": "sms", "phone": PHONE, "message": "hi"}
    )
    assert again.status_code == 201 and again.get_json()["status"] == "suppressed"


def test_a_failure_that_may_clear_up_does_not_suppress(client, twilio_side, service, fake_twilio):
    notification_id, request = send_sms(client, service, fake_twilio)

    post(twilio_side, fake_twilio.receipt(request, "failed", 30003))

    assert shown(client, notification_id)["delivery_status"] == "failed"
    assert service.suppressions.get("sms", PHONE) is None


@pytest.mark.parametrize("extra_env", [{"PUBLIC_BASE_URL": "https://notify.example.com/"}])
def test_behind_a_proxy_the_configured_public_url_is_what_is_signed(
    client, twilio_side, service, fake_twilio
):
    notification_id, request = send_sms(client, service, fake_twilio)
    receipt = fake_twilio.receipt(request, "delivered")
    assert receipt.url == "https://notify.example.com" + PATH
    inside = "http://10.0.0.7:8080"  # where the proxy forwards it, with its own Host
    own_url = RequestValidator(fake_twilio.auth_token).compute_signature(
        inside + PATH, receipt.form
    )

    assert (
        post(twilio_side, Receipt(receipt.url, receipt.form, own_url), base_url=inside).status_code
        == 403
    )
    assert post(twilio_side, receipt, base_url=inside).status_code == 200
    assert shown(client, notification_id)["delivery_status"] == "delivered"


@pytest.mark.parametrize("extra_env", [{"PUBLIC_BASE_URL": "https://notify.example.com"}])
def test_the_query_string_is_part_of_what_is_signed(client, twilio_side, service, fake_twilio):
    notification_id, request = send_sms(client, service, fake_twilio)
    receipt = fake_twilio.receipt(request, "delivered")
    validator = RequestValidator(fake_twilio.auth_token)
    with_query = validator.compute_signature(receipt.url + "?tenant=7", receipt.form)

    assert post(twilio_side, receipt, path=PATH + "?tenant=7").status_code == 403
    signed = Receipt(receipt.url, receipt.form, with_query)
    assert post(twilio_side, signed, path=PATH + "?tenant=7").status_code == 200


def test_an_unknown_message_sid_is_acknowledged_and_logged(
    client, twilio_side, service, fake_twilio, caplog
):
    _, request = send_sms(client, service, fake_twilio)
    receipt = fake_twilio.receipt(request, "delivered")
    form = {**receipt.form, "MessageSid": "SMunknown", "SmsSid": "SMunknown"}
    signature = RequestValidator(fake_twilio.auth_token).compute_signature(receipt.url, form)

    with caplog.at_level(logging.WARNING, logger="notifications"):
        reply = post(twilio_side, Receipt(receipt.url, form, signature))

    assert reply.status_code == 200 and reply.get_json() == {"recorded": False}
    assert "SMunknown" in caplog.text and "receipt_ignored" in caplog.text


def test_without_a_twilio_auth_token_receipts_are_not_configured(router, settings):
    from tests.support.services import installed_service

    installed_service(settings)
    try:
        reply = anonymous(AuthClient(router)).post(PATH, data={"MessageSid": "SM1"})
    finally:
        set_service(None)
    assert reply.status_code == 404
    assert reply.get_json() == {"error": "SMS receipts are not configured"}


@pytest.mark.parametrize(
    "given, ours",
    [
        ("accepted", "queued"),
        ("scheduled", "queued"),
        ("queued", "queued"),
        ("sending", "queued"),
        ("sent", "sent"),
        ("delivered", "delivered"),
        ("read", "delivered"),
        ("undelivered", "undelivered"),
        ("failed", "failed"),
        ("canceled", "failed"),
        ("receiving", None),
    ],
)
def test_twilio_statuses_map_to_ours(given, ours):
    assert twilio_status(given) == ours


def test_only_lower_statuses_may_be_replaced():
    assert lower_than("queued") == [None]
    assert lower_than("sent") == [None, "queued"]
    assert lower_than("delivered") == lower_than("failed") == [None, "queued", "sent"]
