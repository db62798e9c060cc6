"""EmailChannel with an HTML part, against the real SMTP server (aiosmtpd): the raw bytes it
receives parse to text/plain then text/html as multipart/alternative, intact, with
Content-Language from the locale, and nothing in the HTML or the locale becomes a header."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage

import pytest

from common.channels.base import Outcome
from common.channels.email import EmailChannel
from common.config import load_settings
from common.model import EMAIL, Notification
from tests.support.smtp_server import SmtpServer

TEXT = "Bonjour Zoé, votre commande № 42 — expédiée ✓"
HTML = f"<html><body><p>{TEXT}</p></body></html>"
# What a 7-bit-safe transfer encoding gives: lines within RFC 5322's limit whatever the input.
SAFE_ENCODINGS = ("7bit", "quoted-printable", "base64")
MAX_LINE = 998


def email_notification(**changes) -> Notification:
    values = dict(
        user_id="user-1",
        notification_type=EMAIL,
        message=TEXT,
        email="zoe@example.com",
        subject="Votre commande",
        html=HTML,
        locale="fr",
    )
    return Notification(**{**values, **changes})


def channel_for(server: SmtpServer, tmp_path) -> EmailChannel:
    settings = load_settings({**server.env(), "DATA_DIR": str(tmp_path)})
    return EmailChannel(settings)


def deliver(server: SmtpServer, tmp_path, notification: Notification) -> tuple[bytes, EmailMessage]:
    """Send through the server; the raw bytes it received, and them parsed."""
    result = channel_for(server, tmp_path).deliver(notification)
    assert result.outcome is Outcome.SENT, result.detail
    (mail,) = server.wait_for_messages(1)
    assert mail.rcpt_tos == [notification.email]
    return mail.raw, email.message_from_bytes(mail.raw, policy=email.policy.default)


def alternatives(message: EmailMessage) -> tuple[EmailMessage, EmailMessage]:
    """The text/plain and text/html parts, after checking that they are exactly those two."""
    assert message.get_content_type() == "multipart/alternative"
    parts = list(message.iter_parts())
    assert [part.get_content_type() for part in parts] == ["text/plain", "text/html"]
    for part in parts:
        assert part.get_content_charset() == "utf-8"
        assert part["Content-Transfer-Encoding"] in SAFE_ENCODINGS
    return parts[0], parts[1]


def decoded(part: EmailMessage) -> str:
    """A part's content with the line breaks it travelled with as "\\n", the last one dropped."""
    return part.get_content().replace("\r\n", "\n").removesuffix("\n")


def header_names(raw: bytes) -> list[str]:
    """The names of the top-level headers received, in order."""
    head = raw.split(b"\r\n\r\n", 1)[0].decode("ascii")
    return [line.split(":", 1)[0].lower() for line in head.split("\r\n") if line[:1] not in " \t"]


def test_html_email_is_text_then_html_with_content_language(smtp_server, tmp_path):
    notification = email_notification()

    raw, message = deliver(smtp_server, tmp_path, notification)

    text, html = alternatives(message)
    assert decoded(text) == TEXT
    assert decoded(html) == HTML
    # Non-ASCII content travels encoded: nothing relies on the server accepting 8-bit data.
    assert text["Content-Transfer-Encoding"] in ("quoted-printable", "base64")
    assert html["Content-Transfer-Encoding"] in ("quoted-printable", "base64")
    assert raw.isascii()
    assert message["Content-Language"] == "fr"
    assert message["To"] == "zoe@example.com"
    assert message["From"] == "notifications@example.com"
    assert message["Subject"] == "Votre commande"
    assert message["Message-ID"] == f"<{notification.id}@example.com>"
    assert message["X-Notification-Id"] == notification.id
    assert message["Date"]
    names = header_names(raw)
    for name in ("to", "from", "subject", "date", "message-id", "x-notification-id"):
        assert names.count(name) == 1


@pytest.mark.parametrize("filler", ["a", "é"], ids=["ascii", "non-ascii"])
def test_very_long_html_line_arrives_intact(smtp_server, tmp_path, filler):
    long_html = f'<p style="color: #333">{filler * 1500} {TEXT}</p>'
    assert len(long_html) > 1000 and "\n" not in long_html

    raw, message = deliver(smtp_server, tmp_path, email_notification(html=long_html))

    _, html = alternatives(message)
    assert decoded(html) == long_html
    assert max(len(line) for line in raw.split(b"\r\n")) <= MAX_LINE


def test_without_html_the_message_stays_single_part_text(smtp_server, tmp_path):
    notification = email_notification(html=None, locale=None, message="Your parcel has shipped.")

    raw, message = deliver(smtp_server, tmp_path, notification)

    assert not message.is_multipart()
    assert message.get_content_type() == "text/plain"
    assert message.get_content_charset() == "utf-8"
    assert message["Content-Transfer-Encoding"] == "7bit"
    assert decoded(message) == "Your parcel has shipped."
    assert message["Content-Language"] is None
    assert header_names(raw) == [
        "to",
        "from",
        "subject",
        "date",
        "message-id",
        "x-notification-id",
        "content-type",
        "content-transfer-encoding",
        "mime-version",
    ]


def test_locale_without_html_sets_content_language_on_the_text(smtp_server, tmp_path):
    _, message = deliver(smtp_server, tmp_path, email_notification(html=None, locale="pt-BR"))

    assert message.get_content_type() == "text/plain"
    assert decoded(message) == TEXT
    assert message["Content-Language"] == "pt-BR"


@pytest.mark.parametrize(
    "injected",
    [
        "<p>Hi</p>\r\nBcc: x@evil.example\r\n\r\n<p>after</p>",
        "<p>Hi</p>\nBcc: x@evil.example\n",
        "\r\nBcc: x@evil.example\r\n",
    ],
    ids=["crlf", "bare-lf", "leading-crlf"],
)
def test_header_text_in_html_stays_in_the_body(smtp_server, tmp_path, injected):
    raw, message = deliver(smtp_server, tmp_path, email_notification(html=injected))

    _, html = alternatives(message)
    assert decoded(html) == injected.replace("\r\n", "\n").removesuffix("\n")
    assert message["Bcc"] is None
    assert all(part["Bcc"] is None for part in message.walk())
    assert "bcc" not in header_names(raw)


@pytest.mark.parametrize(
    "locale",
    ["fr\n", "fr\r\nBcc: x@evil.example", "français", "f", "en_US", "fr-", "de-abcdefghi", ""],
)
def test_malformed_locale_sets_no_content_language(smtp_server, tmp_path, locale):
    raw, message = deliver(smtp_server, tmp_path, email_notification(locale=locale))

    alternatives(message)
    assert message["Content-Language"] is None
    assert all(part["Content-Language"] is None for part in message.walk())
    assert message["Bcc"] is None and "bcc" not in header_names(raw)


def test_subject_injection_is_refused_with_html_too(smtp_server, tmp_path):
    notification = email_notification(subject="hi\r\nBcc: x@evil.example")

    raw, message = deliver(smtp_server, tmp_path, notification)

    alternatives(message)
    assert message["Subject"] == "hi Bcc: x@evil.example"
    assert message["Bcc"] is None and "bcc" not in header_names(raw)


def test_a_template_send_arrives_as_the_multipart_email_that_was_stored(smtp_server, tmp_path):
    """Accept (render) → store → deliver → what the SMTP server received, for a shipped
    example template: counted on the peer, not read from a status."""
    import json
    from pathlib import Path

    from common.runtime import set_service
    from tests.support.services import installed_service

    settings = load_settings({**smtp_server.env(), "DATA_DIR": str(tmp_path / "data")})
    service = installed_service(settings)
    try:
        examples = Path(__file__).resolve().parents[1] / "templates" / "notifications"
        service.templates.create(json.loads((examples / "welcome/template.json").read_text()))
        accepted = service.submit(
            {
                "user_id": "zoe",
                "notification_type": "email",
                "email": "zoe@example.com",
                "template": "welcome",
                "data": {"name": "Zoé"},
                "locale": "fr-CA",
            }
        )
        service.deliver(accepted.id)
        (mail,) = smtp_server.wait_for_messages(1)
        message = email.message_from_bytes(mail.raw, policy=email.policy.default)
        stored = service.get(accepted.id)
        assert message["Subject"] == stored.subject and "Zoé" in stored.subject
        assert message["Content-Language"] == "fr"
        text, html = alternatives(message)

        def lines(body: str) -> list[str]:  # SMTP carries CRLF line ends
            return body.strip().splitlines()

        assert lines(text.get_content()) == lines(stored.message)
        assert lines(html.get_content()) == lines(stored.html)
        assert "<style" not in html.get_content() and 'style="' in html.get_content()
        assert stored.status == "sent" and len(smtp_server.messages) == 1
    finally:
        set_service(None)
        service.store.close()
