"""The local outbox (files under DATA_DIR/outbox), the in-app channel, and how make_channels
picks a channel for each type from the settings."""

from __future__ import annotations

import json
from email import policy
from email.parser import BytesParser
from pathlib import Path

from common.channels import (
    EmailChannel,
    InAppChannel,
    OutboxEmailChannel,
    OutboxSmsChannel,
    SmsChannel,
    make_channels,
)
from common.channels.base import Outcome
from common.config import load_settings
from common.model import EMAIL, IN_APP, SMS, TYPES, Notification


def note(notification_type: str, **changes) -> Notification:
    values = dict(
        user_id="user-1",
        notification_type=notification_type,
        message="Your order is ready.",
        email="bob@example.com",
        phone="+14155550123",
        subject="Order ready",
    )
    return Notification(**{**values, **changes})


def local_settings(tmp_path: Path, **env):
    return load_settings({"DATA_DIR": str(tmp_path / "data"), **env})


def read_eml(path: Path):
    return BytesParser(policy=policy.default).parsebytes(path.read_bytes())


def test_email_becomes_an_eml_file_named_after_the_id(tmp_path):
    notification = note(EMAIL)

    result = OutboxEmailChannel(local_settings(tmp_path)).deliver(notification)

    assert result.outcome is Outcome.SENT
    path = Path(result.detail)
    assert path == tmp_path / "data" / "outbox" / f"{notification.id}.eml"
    message = read_eml(path)
    assert message["To"] == "bob@example.com"
    assert message["From"] == "notifications@localhost"
    assert message["Subject"] == "Order ready"
    assert message["X-Notification-Id"] == notification.id
    assert message.get_content().strip() == "Your order is ready."


def test_eml_uses_the_configured_sender_and_default_subject(tmp_path):
    settings = local_settings(
        tmp_path, MAIL_DEFAULT_SENDER="shop@example.com", MAIL_DEFAULT_SUBJECT="Hello"
    )

    result = OutboxEmailChannel(settings).deliver(note(EMAIL, subject=None))

    message = read_eml(Path(result.detail))
    assert message["From"] == "shop@example.com"
    assert message["Subject"] == "Hello"


def test_crlf_in_subject_adds_no_header_to_the_eml(tmp_path):
    result = OutboxEmailChannel(local_settings(tmp_path)).deliver(
        note(EMAIL, subject="hi\r\nBcc: evil@x.com")
    )

    message = read_eml(Path(result.detail))
    assert message["Bcc"] is None
    assert message["Subject"] == "hi Bcc: evil@x.com"


def test_email_without_address_is_permanent_and_writes_nothing(tmp_path):
    result = OutboxEmailChannel(local_settings(tmp_path)).deliver(note(EMAIL, email=None))

    assert result.outcome is Outcome.PERMANENT
    assert list(tmp_path.rglob("*.eml")) == []


def test_sms_becomes_a_json_file_named_after_the_id(tmp_path):
    notification = note(SMS)
    settings = local_settings(tmp_path)

    result = OutboxSmsChannel(settings).deliver(notification)

    assert result.outcome is Outcome.SENT
    path = Path(result.detail)
    assert path == tmp_path / "data" / "outbox" / f"{notification.id}.json"
    record = json.loads(path.read_text(encoding="utf-8"))
    assert record["id"] == notification.id
    assert record["to"] == "+14155550123"
    assert record["body"] == "Your order is ready."
    assert result.provider_message_id == record["provider_message_id"]
    assert result.provider_message_id.startswith("outbox-")


def test_outbox_email_is_known_by_its_message_id(tmp_path):
    channel = OutboxEmailChannel(local_settings(tmp_path))
    notification = note(EMAIL)

    result = channel.deliver(notification)

    assert channel.provider == "outbox"
    assert result.provider_message_id == read_eml(Path(result.detail))["Message-ID"]
    assert result.provider_message_id == f"<{notification.id}@localhost>"


def test_sms_without_phone_is_permanent(tmp_path):
    result = OutboxSmsChannel(local_settings(tmp_path)).deliver(note(SMS, phone=None))

    assert result.outcome is Outcome.PERMANENT


def test_redelivery_overwrites_instead_of_adding_a_file(tmp_path):
    settings = local_settings(tmp_path)
    notification = note(EMAIL)

    OutboxEmailChannel(settings).deliver(notification)
    OutboxEmailChannel(settings).deliver(notification)

    files = sorted(p.name for p in (tmp_path / "data" / "outbox").iterdir())
    assert files == [f"{notification.id}.eml"]  # and no temporary file left behind


def test_unwritable_outbox_is_transient(tmp_path):
    (tmp_path / "data").write_text("a file where the data folder should be")

    result = OutboxSmsChannel(local_settings(tmp_path)).deliver(note(SMS))

    assert result.outcome is Outcome.TRANSIENT
    assert "cannot write" in result.detail


def test_odd_ids_stay_inside_the_outbox(tmp_path):
    result = OutboxSmsChannel(local_settings(tmp_path)).deliver(note(SMS, id="../../escape"))

    path = Path(result.detail)
    assert path.parent == tmp_path / "data" / "outbox"
    assert "escape" in path.name


def test_in_app_is_sent_once_stored(tmp_path):
    result = InAppChannel().deliver(note(IN_APP))

    assert result.outcome is Outcome.SENT
    assert result.detail == "stored in-app"


def test_make_channels_defaults_to_the_outbox(tmp_path):
    channels = make_channels(local_settings(tmp_path))

    assert set(channels) == set(TYPES)
    assert all(channels[kind].notification_type == kind for kind in TYPES)
    assert isinstance(channels[EMAIL], OutboxEmailChannel)
    assert isinstance(channels[SMS], OutboxSmsChannel)
    assert isinstance(channels[IN_APP], InAppChannel)
    outbox = tmp_path / "data" / "outbox"
    assert channels[EMAIL].description == f"email to local outbox {outbox} (MAIL_SERVER unset)"
    assert channels[SMS].description == f"sms to local outbox {outbox} (TWILIO_SID unset)"
    assert all(channel.description for channel in channels.values())


def test_make_channels_uses_providers_when_configured(tmp_path, smtp_server, fake_twilio):
    settings = local_settings(tmp_path, **smtp_server.env(), **fake_twilio.env())

    channels = make_channels(settings)

    assert isinstance(channels[EMAIL], EmailChannel)
    assert isinstance(channels[SMS], SmsChannel)
    assert channels[EMAIL].description.startswith(f"email via SMTP 127.0.0.1:{smtp_server.port}")
    assert channels[EMAIL].deliver(note(EMAIL)).outcome is Outcome.SENT
    assert channels[SMS].deliver(note(SMS)).outcome is Outcome.SENT
    assert len(smtp_server.wait_for_messages(1)) == 1
    assert len(fake_twilio.wait_for_requests(1)) == 1
