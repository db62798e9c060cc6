"""One-click unsubscribe (RFC 8058): the signed token, the two headers, and the round trip from
the List-Unsubscribe header of an email the real SMTP server received to the user's
preferences, through the same WSGI app the runner serves."""

from __future__ import annotations

import email
import email.policy
import secrets
import uuid
from urllib.parse import urlsplit

import pytest

from common.channels import make_channels
from common.channels.outbox import OutboxEmailChannel, outbox_dir
from common.config import load_settings
from common.hosting import FunctionRouter
from common.model import EMAIL, SMS, Notification
from common.preferences.store import make_preference_store
from common.runtime import set_service
from common.unsubscribe import MAX_TOKEN_LENGTH, UnsubscribeLinks
from tests.support.auth import AuthClient
from tests.support.services import installed_service

SECRET = "s" * 40
BASE = "https://notify.example.com"
ONE_CLICK = {"List-Unsubscribe": "One-Click"}  # what a mail provider posts, form-encoded


def links(secret: str = SECRET) -> UnsubscribeLinks:
    return UnsubscribeLinks(secret, BASE)


def email_notification(**changes) -> Notification:
    values = dict(
        user_id="ann",
        notification_type=EMAIL,
        message="Our spring sale starts today.",
        email="ann@example.com",
        subject="Spring sale",
        category="marketing",
    )
    return Notification(**{**values, **changes})


# -- tokens and headers -----------------------------------------------------------------------


def test_a_token_reads_back_as_the_notification_id_and_holds_nothing_else():
    notification_id = str(uuid.uuid4())
    token = links().token(notification_id)

    assert links().notification_id(token) == notification_id
    assert len(token) < MAX_TOKEN_LENGTH
    assert links().url(notification_id) == f"{BASE}/unsubscribe/{token}"


def test_a_tampered_token_is_refused():
    token = links().token(str(uuid.uuid4()))
    payload, _, signature = token.rpartition(".")
    forged = links("x" * 40).token(str(uuid.uuid4())).rpartition(".")[0]

    for bad in (
        # a signature byte changed (not the last character: its low bits are only padding)
        token[:-5] + ("A" if token[-5] != "A" else "B") + token[-4:],
        f"{forged}.{signature}",  # another id under this signature
        payload,  # no signature at all
        "",
        "not a token",
        "\u00e9\u00e9.\u00e9",
    ):
        assert links().notification_id(bad) is None, bad


def test_a_token_signed_with_another_secret_is_refused():
    token = links("x" * 40).token(str(uuid.uuid4()))

    assert links().notification_id(token) is None


def test_a_token_over_the_length_limit_is_refused_unread():
    long_id = secrets.token_hex(MAX_TOKEN_LENGTH)  # validly signed, but too long a token
    token = links().token(long_id)

    assert len(token) > MAX_TOKEN_LENGTH
    assert links().notification_id(token) is None


def test_the_two_headers_for_a_marketing_email():
    notification = email_notification()

    headers = links().headers(notification)

    assert headers == {
        "List-Unsubscribe": f"<{links().url(notification.id)}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }


@pytest.mark.parametrize(
    "notification",
    [
        email_notification(transactional=True, category="password_reset"),
        Notification(user_id="ann", notification_type=SMS, message="hi", phone="+14155550123"),
    ],
)
def test_no_headers_for_a_transactional_email_or_another_channel(notification):
    assert links().headers(notification) == {}


def test_a_base_url_that_could_break_a_header_is_refused():
    with pytest.raises(ValueError):
        UnsubscribeLinks(SECRET, "https://example.com/\r\nBcc: x@evil.example")


def test_without_a_secret_emails_go_without_the_headers(tmp_path, monkeypatch, caplog):
    """MongoDB without AUTH_SECRET: instances could not agree on a generated secret."""
    monkeypatch.setattr("common.unsubscribe._warned_without_secret", False)
    settings = load_settings({"DATA_DIR": str(tmp_path), "MONGO_URI": "mongodb://127.0.0.1:1"})

    assert UnsubscribeLinks.from_settings(settings) is None
    assert make_channels(settings)[EMAIL].unsubscribe is None
    warnings = [r for r in caplog.records if "unsubscribe_links_disabled" in r.getMessage()]
    assert len(warnings) == 1  # once, not once per channel set


def test_the_outbox_writes_the_headers_into_its_eml(tmp_path):
    settings = load_settings({"DATA_DIR": str(tmp_path), "AUTH_SECRET": SECRET})
    channel = make_channels(settings)[EMAIL]
    assert isinstance(channel, OutboxEmailChannel)
    notification = email_notification()

    channel.deliver(notification)

    raw = (outbox_dir(settings) / f"{notification.id}.eml").read_bytes()
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert message["List-Unsubscribe"] == f"<{links().url(notification.id)}>".replace(
        BASE, settings.public_url
    )
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


# -- the round trip through a real email ------------------------------------------------------


@pytest.fixture(scope="module")
def router():
    return FunctionRouter()


@pytest.fixture
def service(smtp_server, settings_env):
    settings = load_settings({**settings_env, **smtp_server.env(), "PUBLIC_BASE_URL": BASE})
    service = installed_service(settings, preferences=make_preference_store(settings))
    yield service
    set_service(None)
    service.preferences.close()
    service.store.close()


def send_and_receive(router, service, smtp_server, **payload) -> email.message.EmailMessage:
    """Send through the API, deliver, and the message as the SMTP server received it."""
    before = len(smtp_server.messages)
    body = {
        "user_id": "ann",
        "notification_type": "email",
        "email": "ann@example.com",
        "subject": "Spring sale",
        "message": "Our spring sale starts today.",
        **payload,
    }
    reply = AuthClient(router).post("/notifications", json=body)
    assert reply.status_code == 201, reply.get_data(as_text=True)
    assert service.deliver(reply.get_json()["id"]) == "sent"
    mail = smtp_server.wait_for_messages(before + 1)[-1]
    return email.message_from_bytes(mail.raw, policy=email.policy.default), mail.raw


def unsubscribe_path(message) -> str:
    """The path of the URL in List-Unsubscribe: one URL, in angle brackets, under BASE."""
    value = message["List-Unsubscribe"]
    assert value.startswith(f"<{BASE}/unsubscribe/") and value.endswith(">"), value
    return urlsplit(value[1:-1]).path


def marketing_email(preferences) -> bool | None:
    document = preferences.get("ann")
    return None if document is None else document["categories"].get("marketing", {}).get(EMAIL)


def test_one_click_from_a_received_email_turns_off_that_category(router, service, smtp_server):
    message, raw = send_and_receive(router, service, smtp_server, category="marketing")
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert b"=?" not in raw.split(b"\r\n\r\n")[0]  # the URL went out as a URL, not encoded
    path = unsubscribe_path(message)
    provider = AuthClient(router, credentials=None)  # a mail provider's server: no Origin

    reply = provider.post(path, data=ONE_CLICK)

    assert reply.status_code == 200 and reply.mimetype == "text/html"
    assert "You are unsubscribed from marketing emails" in reply.get_data(as_text=True)
    assert marketing_email(service.preferences) is False
    assert service.preferences.get("ann")["channels"][EMAIL] is True  # only that category

    again = provider.post(path, data=ONE_CLICK)
    assert again.status_code == 200
    assert marketing_email(service.preferences) is False


def test_a_get_only_shows_the_button(router, service, smtp_server):
    """Mail scanners follow links: a GET must change nothing."""
    message, _ = send_and_receive(router, service, smtp_server, category="marketing")
    path = unsubscribe_path(message)
    browser = AuthClient(router, credentials=None)

    reply = browser.get(path)

    page = reply.get_data(as_text=True)
    assert reply.status_code == 200 and "Unsubscribe from marketing emails?" in page
    assert f'<form method="post" action="{path}">' in page and "<script" not in page
    assert "default-src 'none'" in reply.headers["Content-Security-Policy"]
    assert marketing_email(service.preferences) is None

    # The page's own button: a same-origin POST, with any cookie the browser holds.
    browser.set_cookie("notify_session", "stale-or-foreign-session")
    posted = browser.post(path, data=ONE_CLICK, headers={"Origin": "http://localhost"})
    assert posted.status_code == 200
    assert marketing_email(service.preferences) is False


def test_an_email_without_a_category_turns_off_email_altogether(router, service, smtp_server):
    message, _ = send_and_receive(router, service, smtp_server)
    reply = AuthClient(router, credentials=None).post(unsubscribe_path(message))  # no body

    assert reply.status_code == 200
    assert "You are unsubscribed from all emails" in reply.get_data(as_text=True)
    assert service.preferences.get("ann")["channels"][EMAIL] is False


def test_a_transactional_email_has_no_unsubscribe_headers(service, smtp_server):
    notification = email_notification(category="password_reset", transactional=True)

    result = service.channels[EMAIL].deliver(notification)

    assert result.outcome.value == "sent", result.detail
    (mail,) = smtp_server.wait_for_messages(1)
    message = email.message_from_bytes(mail.raw, policy=email.policy.default)
    assert message["List-Unsubscribe"] is None and message["List-Unsubscribe-Post"] is None


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_link_that_is_not_ours_or_whose_notification_is_gone_is_a_404_page(
    router, service, method
):
    client = AuthClient(router, credentials=None)
    foreign = links("x" * 40).token(str(uuid.uuid4()))
    gone = UnsubscribeLinks.from_settings(service.settings).token(str(uuid.uuid4()))

    for token in ("garbage", foreign, gone, "a" * 300):
        reply = client.open(f"/unsubscribe/{token}", method=method, data=ONE_CLICK)
        assert reply.status_code == 404 and reply.mimetype == "text/html"
        assert "This unsubscribe link is not valid" in reply.get_data(as_text=True)
    assert service.preferences.get("ann") is None
