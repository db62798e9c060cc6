"""SmsChannel with the real twilio client against FakeTwilio: the request it makes, and how
Twilio's answers classify: permanent only for recipient error codes, transient for the rest,
with the sender's own setup problems flagged for the operator."""

from __future__ import annotations

import pytest
from twilio.base.exceptions import TwilioRestException

from common.channels.base import Outcome
from common.channels.sms import SmsChannel, classify_twilio_error
from common.config import load_settings
from common.model import SMS, Notification
from tests.support.fake_twilio import (
    INVALID_NUMBER,
    RATE_LIMITED,
    SERVER_ERROR,
    SLOW,
    FakeTwilio,
)
from tests.support.fixtures import unused_port


def sms(**changes) -> Notification:
    values = dict(
        user_id="user-1", notification_type=SMS, message="Code: 123456", phone="+14155550123"
    )
    return Notification(**{**values, **changes})


def channel_for(twilio: FakeTwilio, tmp_path, timeout: float = 2.0, **env) -> SmsChannel:
    settings = load_settings({**twilio.env(), "DATA_DIR": str(tmp_path), **env})
    return SmsChannel(settings, timeout=timeout)


def test_sends_to_from_and_body_with_basic_auth(fake_twilio, tmp_path):
    result = channel_for(fake_twilio, tmp_path).deliver(sms())

    assert result.outcome is Outcome.SENT
    assert result.detail.startswith("Twilio message SM")
    (request,) = fake_twilio.wait_for_requests(1)
    assert request.method == "POST"
    assert request.path == f"/2010-04-01/Accounts/{fake_twilio.account_sid}/Messages.json"
    assert request.form == {
        "To": "+14155550123",
        "From": "+15005550006",
        "Body": "Code: 123456",
        "StatusCallback": "http://127.0.0.1:8080/providers/twilio/status",
    }
    assert (request.username, request.password) == (fake_twilio.account_sid, "test-auth-token")


def test_records_twilios_sid_as_the_provider_message_id(fake_twilio, tmp_path):
    channel = channel_for(fake_twilio, tmp_path)

    first, second = channel.deliver(sms()), channel.deliver(sms())

    requests = fake_twilio.wait_for_requests(2)
    assert [first.provider_message_id, second.provider_message_id] == [r.sid for r in requests]
    assert first.provider_message_id.startswith("SM") and requests[0].sid != requests[1].sid
    assert channel.provider == "twilio"


def test_status_callback_is_the_public_base_url(fake_twilio, tmp_path):
    channel = channel_for(fake_twilio, tmp_path, PUBLIC_BASE_URL="https://notify.example.com/")

    channel.deliver(sms())

    (request,) = fake_twilio.wait_for_requests(1)
    assert request.form["StatusCallback"] == "https://notify.example.com/providers/twilio/status"


@pytest.mark.parametrize(
    "mode, code", [(SERVER_ERROR, "20500"), (INVALID_NUMBER, "21211"), (RATE_LIMITED, "20429")]
)
def test_failures_carry_twilios_error_code(fake_twilio, tmp_path, mode, code):
    fake_twilio.mode = mode

    result = channel_for(fake_twilio, tmp_path).deliver(sms())

    assert result.error_code == code and result.provider_message_id is None


def test_an_answer_without_a_code_carries_the_http_status():
    from common.channels.sms import classify_twilio_reply

    assert classify_twilio_reply(502, None, "Bad Gateway").error_code == "502"


def test_one_client_serves_every_delivery(fake_twilio, tmp_path):
    channel = channel_for(fake_twilio, tmp_path)
    client = channel.client

    for _ in range(3):
        assert channel.deliver(sms()).outcome is Outcome.SENT

    assert channel.client is client
    assert len(fake_twilio.wait_for_requests(3)) == 3


@pytest.mark.parametrize("mode, code", [(SERVER_ERROR, "20500"), (RATE_LIMITED, "20429")])
def test_server_errors_and_rate_limits_are_transient(fake_twilio, tmp_path, mode, code):
    fake_twilio.mode = mode

    result = channel_for(fake_twilio, tmp_path).deliver(sms())

    assert result.outcome is Outcome.TRANSIENT
    assert not result.setup_problem
    assert code in result.detail


def test_invalid_number_is_permanent_with_twilio_code(fake_twilio, tmp_path):
    fake_twilio.mode = INVALID_NUMBER

    result = channel_for(fake_twilio, tmp_path).deliver(sms())

    assert result.outcome is Outcome.PERMANENT
    assert "Twilio error 21211" in result.detail
    assert "is not a valid phone number" in result.detail


@pytest.mark.parametrize("code", [21211, 21610, 21612, 21614])
def test_recipient_errors_are_permanent(fake_twilio, tmp_path, code):
    fake_twilio.fail_with(code)

    result = channel_for(fake_twilio, tmp_path).deliver(sms())

    assert result.outcome is Outcome.PERMANENT
    assert not result.setup_problem
    assert f"Twilio error {code}:" in result.detail


@pytest.mark.parametrize("code", [21211, 21610, 21614])
def test_dead_or_refusing_numbers_are_permanent_and_suppress(fake_twilio, tmp_path, code):
    fake_twilio.fail_with(code)

    result = channel_for(fake_twilio, tmp_path).deliver(sms())

    assert result.outcome is Outcome.PERMANENT
    assert result.suppress is True
    assert f"Twilio error {code}:" in result.detail


def test_invalid_number_mode_suppresses(fake_twilio, tmp_path):
    fake_twilio.mode = INVALID_NUMBER

    result = channel_for(fake_twilio, tmp_path).deliver(sms())

    assert (result.outcome, result.suppress) == (Outcome.PERMANENT, True)


# Unreachable today is not dead for good: these fail the one notification, nothing more.
@pytest.mark.parametrize("code", [21214, 21217, 21612, 30003, 30005, 30006])
def test_other_recipient_errors_are_permanent_without_suppressing(fake_twilio, tmp_path, code):
    fake_twilio.fail_with(code)

    result = channel_for(fake_twilio, tmp_path).deliver(sms())

    assert result.outcome is Outcome.PERMANENT
    assert result.suppress is False


@pytest.mark.parametrize("code, status", [(21611, 400), (21212, 400), (20500, 500), (20429, 429)])
def test_transient_failures_never_suppress(fake_twilio, tmp_path, code, status):
    fake_twilio.fail_with(code, status=status)

    result = channel_for(fake_twilio, tmp_path).deliver(sms())

    assert result.outcome is Outcome.TRANSIENT
    assert result.suppress is False


def test_sent_and_missing_phone_do_not_suppress(fake_twilio, tmp_path):
    channel = channel_for(fake_twilio, tmp_path)

    assert channel.deliver(sms()).suppress is False
    assert channel.deliver(sms(phone=None)).suppress is False


def test_full_queue_is_transient(fake_twilio, tmp_path):
    fake_twilio.fail_with(21611)

    result = channel_for(fake_twilio, tmp_path).deliver(sms())

    assert result.outcome is Outcome.TRANSIENT
    assert not result.setup_problem
    assert "Twilio error 21611:" in result.detail


@pytest.mark.parametrize("code", [21212, 21408, 21606])
def test_sender_number_errors_are_transient_setup_problems(fake_twilio, tmp_path, code):
    fake_twilio.fail_with(code)

    result = channel_for(fake_twilio, tmp_path).deliver(sms())

    assert result.outcome is Outcome.TRANSIENT
    assert result.setup_problem
    assert f"Twilio error {code}:" in result.detail


def test_wrong_base_url_is_transient_setup_problem(fake_twilio, tmp_path):
    wrong_url = f"{fake_twilio.base_url}/not-twilio"

    result = channel_for(fake_twilio, tmp_path, TWILIO_API_BASE_URL=wrong_url).deliver(sms())

    assert fake_twilio.wait_for_requests(1)[0].path.startswith("/not-twilio/")
    assert result.outcome is Outcome.TRANSIENT
    assert result.setup_problem
    assert "Twilio error 20404:" in result.detail


def test_wrong_token_is_transient_authentication_failure(fake_twilio, tmp_path):
    channel = channel_for(fake_twilio, tmp_path, TWILIO_AUTH_TOKEN="wrong-token-42")

    result = channel.deliver(sms())

    assert result.outcome is Outcome.TRANSIENT
    assert result.setup_problem
    assert "authentication failed" in result.detail
    assert "20003" in result.detail
    assert "wrong-token-42" not in result.detail


def test_closed_port_is_transient(tmp_path):
    with FakeTwilio() as twilio:
        env = {**twilio.env(), "TWILIO_API_BASE_URL": f"http://127.0.0.1:{unused_port()}"}
    settings = load_settings({**env, "DATA_DIR": str(tmp_path)})

    result = SmsChannel(settings, timeout=2.0).deliver(sms())

    assert result.outcome is Outcome.TRANSIENT
    assert "cannot reach Twilio" in result.detail


def test_slow_answer_times_out_as_transient(tmp_path):
    with FakeTwilio(SLOW, slow_seconds=1.0) as twilio:
        result = channel_for(twilio, tmp_path, timeout=0.3).deliver(sms())

    assert result.outcome is Outcome.TRANSIENT
    assert "did not answer within 0.3 s" in result.detail


def test_missing_phone_is_permanent_and_sends_nothing(fake_twilio, tmp_path):
    result = channel_for(fake_twilio, tmp_path).deliver(sms(phone=None))

    assert result.outcome is Outcome.PERMANENT
    assert fake_twilio.requests == []


@pytest.mark.parametrize("code", [20500, 21611, 21606])
def test_retry_succeeds_once_twilio_recovers(fake_twilio, tmp_path, code):
    channel = channel_for(fake_twilio, tmp_path)
    fake_twilio.fail_with(code, status=500 if code == 20500 else 400)
    assert channel.deliver(sms()).outcome is Outcome.TRANSIENT

    fake_twilio.mode = "ok"

    assert channel.deliver(sms()).outcome is Outcome.SENT


def test_description_and_check(fake_twilio, tmp_path):
    channel = channel_for(fake_twilio, tmp_path)

    assert fake_twilio.base_url in channel.description
    assert "+15005550006" in channel.description
    assert channel.check() == "Twilio account Fake Twilio test account is active"


@pytest.mark.parametrize(
    "status, code, outcome, setup_problem",
    [
        (400, 21211, Outcome.PERMANENT, False),
        (400, 21610, Outcome.PERMANENT, False),  # the recipient unsubscribed (STOP)
        (400, 30006, Outcome.PERMANENT, False),  # a landline
        (400, 21611, Outcome.TRANSIENT, False),  # the sender's queue is full for now
        (400, 21999, Outcome.TRANSIENT, False),  # a code not listed: never a dead letter
        (403, 21408, Outcome.TRANSIENT, True),  # the account's geo permissions
        (404, 20404, Outcome.TRANSIENT, True),  # a wrong base URL or account SID
        (401, 20003, Outcome.TRANSIENT, True),
        (429, 20429, Outcome.TRANSIENT, False),
        (503, 20503, Outcome.TRANSIENT, False),
    ],
)
def test_classification_by_error_code(status, code, outcome, setup_problem):
    error = TwilioRestException(status, "/Messages.json", "Unable to create record: nope", code)

    result = classify_twilio_error(error)

    assert result.outcome is outcome
    assert result.setup_problem is setup_problem
    assert result.detail.endswith(f"Twilio error {code}: nope")


@pytest.mark.parametrize(
    "code, suppress", [(21211, True), (21610, True), (21614, True), (21612, False), (30006, False)]
)
def test_suppress_flag_by_error_code(code, suppress):
    error = TwilioRestException(400, "/Messages.json", "Unable to create record: nope", code)

    result = classify_twilio_error(error)

    assert (result.outcome, result.suppress) == (Outcome.PERMANENT, suppress)
