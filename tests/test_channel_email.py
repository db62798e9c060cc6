"""EmailChannel against a real SMTP server (aiosmtpd): what arrives, and how refusals classify:
permanent only when the recipient or the message is refused, transient (and a setup problem
for the operator) when the server refuses us."""

from __future__ import annotations

import smtplib
import socket
import ssl

import pytest

from common.channels.base import Outcome
from common.channels.email import (
    EmailChannel,
    InvalidMessage,
    build_message,
    classify_smtp_error,
)
from common.config import load_settings
from common.model import EMAIL, Notification
from tests.support.fixtures import unused_port
from tests.support.smtp_server import (
    QUOTA_DATA,
    QUOTA_MAIL,
    REFUSE_GREETING,
    REFUSE_SENDER,
    REJECT,
    REJECT_DATA,
    RELAY_DENIED,
    TEMPFAIL,
    TEMPFAIL_DATA,
    SmtpServer,
)


def email(**changes) -> Notification:
    values = dict(
        user_id="user-1",
        notification_type=EMAIL,
        message="Your parcel has shipped.",
        email="alice@example.com",
        subject="Shipping update",
    )
    return Notification(**{**values, **changes})


def channel_for(server: SmtpServer, tmp_path, **env) -> EmailChannel:
    settings = load_settings({**server.env(), "DATA_DIR": str(tmp_path), **env})
    context = server.client_ssl_context() if server.tls else None
    return EmailChannel(settings, ssl_context=context)


def test_message_arrives_with_its_headers(smtp_server, tmp_path):
    notification = email()

    result = channel_for(smtp_server, tmp_path).deliver(notification)

    assert result.outcome is Outcome.SENT
    (mail,) = smtp_server.wait_for_messages(1)
    assert mail.rcpt_tos == ["alice@example.com"]
    assert mail.mail_from == "notifications@example.com"
    assert mail.message["To"] == "alice@example.com"
    assert mail.message["From"] == "notifications@example.com"
    assert mail.message["Subject"] == "Shipping update"
    assert mail.message["X-Notification-Id"] == notification.id
    assert mail.message["Message-ID"] == f"<{notification.id}@example.com>"
    assert mail.message["Message-ID"] in result.detail
    assert mail.message.get_content().strip() == "Your parcel has shipped."
    assert result.provider_message_id == mail.message["Message-ID"]  # with its angle brackets


@pytest.mark.parametrize(
    "mode, code", [(REJECT, "550"), (REJECT_DATA, "554"), (TEMPFAIL, "451"), (QUOTA_MAIL, "550")]
)
def test_smtp_failures_carry_the_reply_code(smtp_server, tmp_path, mode, code):
    smtp_server.mode = mode

    result = channel_for(smtp_server, tmp_path).deliver(email())

    assert result.outcome is not Outcome.SENT and result.provider_message_id is None
    assert result.error_code == code


def test_default_subject_and_unicode_body(smtp_server, tmp_path):
    channel = channel_for(smtp_server, tmp_path, MAIL_DEFAULT_SUBJECT="News for you")

    result = channel.deliver(email(subject=None, message="Grüße — 你好"))

    assert result.outcome is Outcome.SENT
    (mail,) = smtp_server.wait_for_messages(1)
    assert mail.message["Subject"] == "News for you"
    assert mail.message.get_content().strip() == "Grüße — 你好"


def test_message_id_is_stable_across_retries(smtp_server, tmp_path):
    channel = channel_for(smtp_server, tmp_path)
    notification = email()

    channel.deliver(notification)
    channel.deliver(notification)

    first, second = smtp_server.wait_for_messages(2)
    assert first.message["Message-ID"] == second.message["Message-ID"]


def test_crlf_in_subject_adds_no_header_and_no_recipient(smtp_server, tmp_path):
    result = channel_for(smtp_server, tmp_path).deliver(email(subject="hi\r\nBcc: evil@x.com"))

    assert result.outcome is Outcome.SENT
    (mail,) = smtp_server.wait_for_messages(1)
    assert mail.rcpt_tos == ["alice@example.com"]
    assert mail.message["Bcc"] is None
    assert b"\nBcc:" not in mail.raw and b"\rBcc:" not in mail.raw
    assert mail.message["Subject"] == "hi Bcc: evil@x.com"  # kept as text on one line


@pytest.mark.parametrize(
    "address",
    ["alice@example.com\r\nBcc: evil@x.com", "alice@example.com\nCc: evil@x.com"],
)
def test_crlf_in_address_is_permanent_and_sends_nothing(smtp_server, tmp_path, address):
    result = channel_for(smtp_server, tmp_path).deliver(email(email=address))

    assert result.outcome is Outcome.PERMANENT
    assert "invalid email address" in result.detail
    assert smtp_server.messages == []


@pytest.mark.parametrize("address", [None, "", "alice@example.com, evil@x.com", "not-an-address"])
def test_missing_or_malformed_address_is_permanent(smtp_server, tmp_path, address):
    result = channel_for(smtp_server, tmp_path).deliver(email(email=address))

    assert result.outcome is Outcome.PERMANENT
    assert smtp_server.messages == []


@pytest.mark.parametrize(
    "mode, reply",
    [(REJECT, "at RCPT TO: 550 5.1.1"), (REJECT_DATA, "at DATA: 554 5.6.0")],
)
def test_refused_recipient_or_content_is_permanent(smtp_server, tmp_path, mode, reply):
    smtp_server.mode = mode

    result = channel_for(smtp_server, tmp_path).deliver(email())

    assert result.outcome is Outcome.PERMANENT
    assert reply in result.detail
    assert not result.setup_problem
    assert smtp_server.messages == []


@pytest.mark.parametrize("mode, suppress", [(REJECT, True), (REJECT_DATA, False)])
def test_only_a_550_at_rcpt_suppresses_the_address(smtp_server, tmp_path, mode, suppress):
    """The server says the mailbox is gone (550 at RCPT): the address goes on the suppression
    list. A refused message (at DATA) says nothing about the address."""
    smtp_server.mode = mode

    result = channel_for(smtp_server, tmp_path).deliver(email())

    assert result.outcome is Outcome.PERMANENT
    assert result.suppress is suppress


@pytest.mark.parametrize(
    "mode, reply",
    [(TEMPFAIL, "at RCPT TO: 451 4.3.0"), (TEMPFAIL_DATA, "at DATA: 451 4.3.0")],
)
def test_deferrals_are_transient(smtp_server, tmp_path, mode, reply):
    smtp_server.mode = mode

    result = channel_for(smtp_server, tmp_path).deliver(email())

    assert result.outcome is Outcome.TRANSIENT
    assert reply in result.detail
    assert not result.setup_problem  # the server's moment, nothing for the operator to fix


@pytest.mark.parametrize(
    "mode, reply",
    [
        (REFUSE_GREETING, "at greeting: 554 5.7.1"),
        (REFUSE_SENDER, "at MAIL FROM: 553 5.7.1 sender not allowed"),
        (QUOTA_MAIL, "at MAIL FROM: 550 5.4.5 Daily user sending quota exceeded"),
        (QUOTA_DATA, "at DATA: 550 5.4.5 Daily user sending quota exceeded"),
        (RELAY_DENIED, "at RCPT TO: 554 5.7.1 Relay access denied"),
    ],
)
def test_refusals_of_the_sender_are_transient_setup_problems(smtp_server, tmp_path, mode, reply):
    # A 5xx that refuses our server, sender address or quota would fail every notification:
    # the operator fixes the setup and the retries succeed.
    smtp_server.mode = mode

    result = channel_for(smtp_server, tmp_path).deliver(email())

    assert result.outcome is Outcome.TRANSIENT
    assert result.setup_problem
    assert reply in result.detail
    assert smtp_server.messages == []


@pytest.mark.parametrize("refusal", [TEMPFAIL, REFUSE_SENDER, REFUSE_GREETING])
def test_retry_succeeds_once_the_server_accepts_again(smtp_server, tmp_path, refusal):
    channel = channel_for(smtp_server, tmp_path)
    smtp_server.mode = refusal
    assert channel.deliver(email()).outcome is Outcome.TRANSIENT

    smtp_server.mode = "accept"

    assert channel.deliver(email()).outcome is Outcome.SENT
    assert len(smtp_server.wait_for_messages(1)) == 1


def test_connection_refused_is_transient(tmp_path):
    env = {"MAIL_SERVER": "127.0.0.1", "MAIL_PORT": str(unused_port()), "MAIL_USE_TLS": "false"}
    settings = load_settings({**env, "MAIL_DEFAULT_SENDER": "n@example.com", "MAIL_TIMEOUT": "2"})

    result = EmailChannel(settings).deliver(email())

    assert result.outcome is Outcome.TRANSIENT
    assert "refused" in result.detail.lower()
    assert not result.setup_problem


def test_silent_server_times_out_as_transient(tmp_path):
    # Listening but never answering: the TCP connection opens, the greeting never comes.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        env = {"MAIL_SERVER": "127.0.0.1", "MAIL_PORT": str(port), "MAIL_USE_TLS": "false"}
        settings = load_settings({**env, "MAIL_DEFAULT_SENDER": "n@x.com", "MAIL_TIMEOUT": "0.3"})

        result = EmailChannel(settings).deliver(email())

    assert result.outcome is Outcome.TRANSIENT
    assert "timed out" in result.detail
    assert not result.setup_problem


def test_starttls_requested_but_not_offered_is_transient(smtp_server, tmp_path):
    result = channel_for(smtp_server, tmp_path, MAIL_USE_TLS="true").deliver(email())

    assert result.outcome is Outcome.TRANSIENT
    assert result.setup_problem
    assert "STARTTLS" in result.detail
    assert smtp_server.messages == []


def test_login_with_the_right_password(tmp_path):
    with SmtpServer(auth=("mailer", "s3cret")) as server:
        result = channel_for(server, tmp_path).deliver(email())

        assert result.outcome is Outcome.SENT
        assert server.logins == ["mailer"]
        assert len(server.wait_for_messages(1)) == 1


def test_wrong_password_is_transient_setup_problem_without_the_password(tmp_path):
    with SmtpServer(auth=("mailer", "s3cret")) as server:
        result = channel_for(server, tmp_path, MAIL_PASSWORD="wrong-pw-42").deliver(email())

        assert result.outcome is Outcome.TRANSIENT
        assert result.setup_problem
        assert "authentication failed at AUTH: 535" in result.detail
        assert "wrong-pw-42" not in result.detail
        assert server.messages == []


@pytest.mark.parametrize("tls", ["starttls", "ssl"])
def test_encrypted_delivery_verifies_the_certificate(tmp_path, tls):
    with SmtpServer(tls=tls, auth=("mailer", "s3cret")) as server:
        channel = channel_for(server, tmp_path)
        assert ("STARTTLS" if tls == "starttls" else "SSL") in channel.description

        result = channel.deliver(email())

        assert result.outcome is Outcome.SENT, result.detail
        assert server.wait_for_messages(1)[0].message["X-Notification-Id"]


def test_untrusted_certificate_is_refused_as_transient(tmp_path):
    with SmtpServer(tls="starttls") as server:
        settings = load_settings({**server.env(), "DATA_DIR": str(tmp_path)})

        result = EmailChannel(settings).deliver(email())  # the system CAs: test CA unknown

        assert result.outcome is Outcome.TRANSIENT
        assert result.setup_problem
        assert "certificate" in result.detail.lower()
        assert server.messages == []


def test_description_names_server_and_security(smtp_server, tmp_path):
    channel = channel_for(smtp_server, tmp_path)

    assert channel.description.startswith(f"email via SMTP 127.0.0.1:{smtp_server.port}")
    assert channel.check().startswith("SMTP 127.0.0.1")


def refused_recipient(code: int, reply: bytes) -> smtplib.SMTPRecipientsRefused:
    return smtplib.SMTPRecipientsRefused({"alice@example.com": (code, reply)})


PERMANENT, TRANSIENT = Outcome.PERMANENT, Outcome.TRANSIENT


@pytest.mark.parametrize(
    "error, outcome, setup_problem",
    [
        # Refused recipients and messages: retrying cannot help.
        (refused_recipient(550, b"5.1.1 no such user"), PERMANENT, False),
        (refused_recipient(552, b"5.2.2 mailbox quota exceeded"), PERMANENT, False),  # theirs
        (smtplib.SMTPDataError(552, b"5.3.4 message too big"), PERMANENT, False),
        (smtplib.SMTPDataError(550, b"5.7.1 content rejected as spam"), PERMANENT, False),
        (smtplib.SMTPDataError(554, b"Transaction failed"), PERMANENT, False),
        # The moment: the server asks to come back.
        (refused_recipient(450, b"4.2.1 receiving mail too quickly"), TRANSIENT, False),
        (smtplib.SMTPSenderRefused(421, b"4.7.0 too busy", "n@x.com"), TRANSIENT, False),
        (smtplib.SMTPConnectError(421, b"4.3.2 service not available"), TRANSIENT, False),
        (smtplib.SMTPResponseException(454, b"4.7.0 TLS not available"), TRANSIENT, False),
        (smtplib.SMTPDataError(503, b"5.5.1 bad sequence of commands"), TRANSIENT, False),
        (smtplib.SMTPServerDisconnected("Connection unexpectedly closed"), TRANSIENT, False),
        (RuntimeError("anything else"), TRANSIENT, False),
        # The sender's setup: a 5xx before RCPT, quotas, sender authentication, TLS.
        (smtplib.SMTPConnectError(554, b"5.7.1 your IP is on a blocklist"), TRANSIENT, True),
        (smtplib.SMTPHeloError(501, b"5.5.4 invalid domain name"), TRANSIENT, True),
        (smtplib.SMTPSenderRefused(553, b"5.7.1 sender not allowed", "n@x.com"), TRANSIENT, True),
        (smtplib.SMTPAuthenticationError(535, b"5.7.8 bad credentials"), TRANSIENT, True),
        (smtplib.SMTPAuthenticationError(534, b"5.7.14 log in via browser"), TRANSIENT, True),
        (smtplib.SMTPResponseException(530, b"5.7.0 authentication required"), TRANSIENT, True),
        (refused_recipient(550, b"5.7.1 rate limit exceeded for sender"), TRANSIENT, True),
        (refused_recipient(554, b"5.7.1 Relay access denied"), TRANSIENT, True),
        (smtplib.SMTPDataError(550, b"5.4.5 Daily user sending quota exceeded"), TRANSIENT, True),
        (smtplib.SMTPDataError(550, b"5.7.26 This mail is unauthenticated"), TRANSIENT, True),
        (ssl.SSLError("handshake failed"), TRANSIENT, True),
    ],
)
def test_classification_of_smtplib_errors(error, outcome, setup_problem):
    result = classify_smtp_error(error, "smtp.example.com:587")

    assert result.outcome is outcome
    assert result.setup_problem is setup_problem
    if isinstance(error, smtplib.SMTPResponseException):
        assert str(error.smtp_code) in result.detail
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        ((code, _),) = error.recipients.values()
        assert f"at RCPT TO: {code}" in result.detail


@pytest.mark.parametrize(
    "error",
    [
        refused_recipient(551, b"5.1.6 user not local"),
        refused_recipient(552, b"5.2.2 mailbox quota exceeded"),
        refused_recipient(553, b"5.1.3 mailbox name not allowed"),
        smtplib.SMTPDataError(550, b"5.7.1 content rejected as spam"),
    ],
)
def test_other_permanent_refusals_do_not_suppress(error):
    result = classify_smtp_error(error, "smtp.example.com:587")

    assert result.outcome is Outcome.PERMANENT and not result.suppress


def test_build_message_keeps_display_names_out_of_the_message_id():
    message = build_message(email(), "Shop <shop@example.com>", "News")

    assert message["From"] == "Shop <shop@example.com>"
    assert message["Message-ID"].endswith("@example.com>")


INJECTED = b"Reply-To: x@evil.example"
# Encoded-words that decode to a line break followed by a header and a body (CVE-2024-6923).
ENCODED_WORD_INJECTIONS = {
    "q-encoded CRLF": "=?utf-8?q?Hi=0D=0AReply-To:_x@evil.example=0D=0A=0D=0Ainjected_body?=",
    "b-encoded CRLF": "=?UTF-8?B?SGkNClJlcGx5LVRvOiB4QGV2aWwuZXhhbXBsZQ0KDQppbmplY3RlZCBib2R5?=",
    "bare LF": "=?utf-8?q?Hi=0AReply-To:_x@evil.example=0A=0Ainjected_body?=",
    "bare CR": "=?utf-8?q?Hi=0DReply-To:_x@evil.example=0D=0Dinjected_body?=",
    "folded encoded-word": "=?utf-8?q?Hi?=\r\n =?utf-8?q?=0D=0AReply-To:_x@evil.example?=\r\n"
    " =?utf-8?q?=0D=0A=0D=0Ainjected_body?=",
    "latin-1 NEL": "=?iso-8859-1?q?Hi=85Reply-To:_x@evil.example=85=85injected_body?=",
    "nested encoded-word": "=?utf-8?q?=3D=3Futf-8=3Fq=3FHi=3D0D=3D0AReply-To:_x@evil.example"
    "=3D0D=3D0A=3D0D=3D0Ainjected_body=3F=3D?=",
}


def header_lines(raw: bytes) -> list[bytes]:
    """The raw header lines (continuations included) received, before the blank line."""
    head = raw.split(b"\r\n\r\n", 1)[0]
    return head.split(b"\r\n")


@pytest.mark.parametrize(
    "subject", ENCODED_WORD_INJECTIONS.values(), ids=ENCODED_WORD_INJECTIONS.keys()
)
def test_encoded_word_in_subject_adds_no_header_and_no_body(smtp_server, tmp_path, subject):
    result = channel_for(smtp_server, tmp_path).deliver(email(subject=subject))

    assert result.outcome is Outcome.SENT
    (mail,) = smtp_server.wait_for_messages(1)
    assert mail.rcpt_tos == ["alice@example.com"]
    # Only CRLF pairs end lines: no bare CR or LF anywhere in what was received.
    assert b"\r" not in mail.raw.replace(b"\r\n", b"")
    assert b"\n" not in mail.raw.replace(b"\r\n", b"")
    lines = header_lines(mail.raw)
    assert not [line for line in lines if line.lower().startswith(b"reply-to:")]
    assert len([line for line in lines if line.lower().startswith(b"subject:")]) == 1
    assert b"injected" not in mail.raw.split(b"\r\n\r\n", 1)[1]
    assert mail.message["Reply-To"] is None
    assert "\r" not in mail.message["Subject"] and "\n" not in mail.message["Subject"]
    assert mail.message["Subject"].startswith("Hi")
    assert mail.message.get_content().strip() == "Your parcel has shipped."


def test_subject_nested_too_deeply_is_permanent_and_sends_nothing(smtp_server, tmp_path):
    subject = "=?utf-8?q?Hi=0D=0AReply-To:_x@evil.example?="
    for _ in range(5):
        subject = "=?utf-8?q?" + "".join(f"={byte:02X}" for byte in subject.encode()) + "?="

    result = channel_for(smtp_server, tmp_path).deliver(email(subject=subject))

    assert result.outcome is Outcome.PERMANENT
    assert smtp_server.messages == []


def test_decoded_subject_keeps_its_text(smtp_server, tmp_path):
    subject = "Grüße =?iso-8859-1?q?caf=E9?= =?utf-8?b?5L2g5aW9?="

    channel_for(smtp_server, tmp_path).deliver(email(subject=subject))

    (mail,) = smtp_server.wait_for_messages(1)
    assert mail.message["Subject"] == "Grüße café你好"  # RFC 2047: no space between words


@pytest.mark.parametrize(
    "address",
    [
        "victim<evil@evil.example>",
        '"Alice" <alice@example.com>',
        "alice@example.com (comment)",
        "group: alice@example.com;",
        "=?utf-8?q?a=3Cevil=3E?=@example.com",
        "=?utf-8?q?a=0D=0ABcc:_evil@x.com?=@example.com",
    ],
)
def test_address_that_is_not_the_bare_recipient_is_permanent(smtp_server, tmp_path, address):
    result = channel_for(smtp_server, tmp_path).deliver(email(email=address))

    assert result.outcome is Outcome.PERMANENT
    assert "invalid email address" in result.detail
    assert smtp_server.messages == []


@pytest.mark.parametrize(
    "sender",
    [
        "=?utf-8?q?Shop=0D=0AReply-To:_x@evil.example?= <shop@example.com>",
        "=?utf-8?q?Shop=0AReply-To:_x@evil.example?= <shop@example.com>",
        "=?utf-8?q?Shop=07?= <shop@example.com>",
    ],
)
def test_sender_that_decodes_to_line_breaks_is_a_transient_setup_problem(
    smtp_server, tmp_path, sender
):
    channel = channel_for(smtp_server, tmp_path, MAIL_DEFAULT_SENDER=sender)

    result = channel.deliver(email())

    assert result.outcome is Outcome.TRANSIENT
    assert result.setup_problem
    assert smtp_server.messages == []


def test_serialized_headers_are_checked_should_a_subject_get_through(monkeypatch):
    # Without the decoding, the last guard still refuses what would serialize as extra headers.
    monkeypatch.setattr("common.channels.email.subject_text", lambda subject: subject)

    with pytest.raises(InvalidMessage, match="serialize"):
        build_message(email(subject=ENCODED_WORD_INJECTIONS["q-encoded CRLF"]), "s@example.com", "")
