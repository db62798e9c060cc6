"""Email over SMTP with smtplib: one connection per delivery, each failure classified as
transient (retry) or permanent (give up) from the server's reply code."""

from __future__ import annotations

import re
import smtplib
import socket
import ssl
from email.message import EmailMessage
from email.utils import formatdate, parseaddr

from common.channels.base import Channel, DeliveryResult
from common.config import Settings
from common.model import EMAIL, Notification

# 530 auth required, 534/538 mechanism or encryption needed, 535 bad credentials: the operator
# fixes the configuration and the retry succeeds, so these must not fail notifications for good.
AUTH_REPLY_CODES = frozenset({530, 534, 535, 538})
MAX_DETAIL_LENGTH = 500


class InvalidMessage(ValueError):
    """The notification cannot become a well-formed email: retrying cannot help."""


def build_message(notification: Notification, sender: str, default_subject: str) -> EmailMessage:
    """The notification as an email; raise InvalidMessage for a missing or malformed address.

    EmailMessage (policy.default) refuses CR/LF in any header value, so no input can add headers.
    """
    if not notification.email:
        raise InvalidMessage("the notification has no email address")
    message = EmailMessage()
    try:
        message["To"] = notification.email
    except (ValueError, IndexError) as error:
        raise InvalidMessage(f"invalid email address {notification.email!r}: {error}") from None
    if len(message["To"].addresses) != 1 or not message["To"].addresses[0].domain:
        raise InvalidMessage(f"invalid email address {notification.email!r}: not one address")
    message["From"] = sender
    # A subject is one line of text: folding line breaks into spaces keeps the words only.
    subject = " ".join((notification.subject or "").split())
    message["Subject"] = subject or default_subject
    message["Date"] = formatdate(localtime=False, usegmt=True)
    # Stable across retries, so a receiver can drop a duplicate of a send we could not confirm.
    domain = parseaddr(sender)[1].rpartition("@")[2] or "localhost"
    safe_id = re.sub(r"[^A-Za-z0-9._-]", "_", notification.id)
    message["Message-ID"] = f"<{safe_id}@{domain}>"
    message["X-Notification-Id"] = safe_id
    message.set_content(notification.message)
    return message


def envelope_recipient(message: EmailMessage) -> str:
    """The bare address of the single `To` recipient, as the SMTP envelope needs it."""
    return message["To"].addresses[0].addr_spec


class EmailChannel(Channel):
    """Sends through the SMTP server named by MAIL_SERVER (STARTTLS, implicit SSL or plain)."""

    notification_type = EMAIL

    def __init__(self, settings: Settings, ssl_context: ssl.SSLContext | None = None):
        if not settings.mail_server:
            raise ValueError("EmailChannel needs settings.mail_server")
        self.settings = settings
        # smtplib's own default context verifies nothing; tests pass one that trusts their CA.
        self.ssl_context = ssl_context or ssl.create_default_context()
        self.server = f"{settings.mail_server}:{settings.mail_port}"
        self._local_hostname: str | None = None
        login = f", login {settings.mail_username}" if settings.mail_username else ""
        self.description = f"email via SMTP {self.server} ({self.security}{login})"

    @property
    def security(self) -> str:
        if self.settings.mail_use_ssl:
            return "SSL"
        return "STARTTLS" if self.settings.mail_use_tls else "plain, unencrypted"

    def deliver(self, notification: Notification) -> DeliveryResult:
        sender = self.settings.sender_address
        if not sender:
            return DeliveryResult.transient("no sender: set MAIL_DEFAULT_SENDER or MAIL_USERNAME")
        try:
            message = build_message(notification, sender, self.settings.mail_default_subject)
        except InvalidMessage as error:
            return DeliveryResult.permanent(str(error))
        except ValueError as error:  # the configured sender, not the notification, is at fault
            return DeliveryResult.transient(f"cannot use sender {sender!r}: {error}")
        try:
            smtp = self._connect()
            try:
                smtp.send_message(message, to_addrs=[envelope_recipient(message)])
            except BaseException:
                smtp.close()  # no QUIT: after a timeout it would wait a second timeout
                raise
            _quit(smtp)
        except Exception as error:  # deliver() never raises: every failure is an outcome
            return classify_smtp_error(error, self.server)
        return DeliveryResult.sent(f"accepted by {self.server} as {message['Message-ID']}")

    def check(self) -> str:
        smtp = self._connect()
        try:
            code, reply = smtp.noop()
        finally:
            _quit(smtp)
        if code != 250:
            raise smtplib.SMTPResponseException(code, reply)
        return f"SMTP {self.server} answered ({self.security})"

    def _connect(self) -> smtplib.SMTP:
        """A connected, secured and logged-in SMTP session, built afresh for each delivery."""
        settings = self.settings
        if self._local_hostname is None:
            # getfqdn() can wait on DNS: pay for it once per instance, not once per message.
            self._local_hostname = socket.getfqdn()
        options = dict(local_hostname=self._local_hostname, timeout=settings.mail_timeout)
        if settings.mail_use_ssl:
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                settings.mail_server, settings.mail_port, context=self.ssl_context, **options
            )
        else:
            smtp = smtplib.SMTP(settings.mail_server, settings.mail_port, **options)
        try:
            smtp.ehlo()
            if settings.mail_use_tls and not settings.mail_use_ssl:
                smtp.starttls(context=self.ssl_context)
                smtp.ehlo()
            if settings.mail_username:
                smtp.login(settings.mail_username, settings.mail_password or "")
        except BaseException:
            smtp.close()
            raise
        return smtp


def _quit(smtp: smtplib.SMTP) -> None:
    """End the session politely; a failing QUIT after an accepted message is not a failure."""
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        smtp.close()


def classify_smtp_error(error: Exception, server: str = "") -> DeliveryResult:
    """Transient or permanent, with the server's code and text, for anything smtplib raised."""
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        replies = list(error.recipients.values())
        text = "; ".join(f"{code} {_text(reply)}" for code, reply in replies)
        # A 4xx at RCPT (greylisting, a full mailbox) clears up; only 5xx says "never".
        if replies and all(code >= 500 for code, _ in replies):
            return DeliveryResult.permanent(_clip(f"recipient refused: {text}"))
        return DeliveryResult.transient(_clip(f"recipient deferred: {text}"))
    if isinstance(error, smtplib.SMTPResponseException):
        code, text = error.smtp_code, _text(error.smtp_error)
        if isinstance(error, smtplib.SMTPAuthenticationError) or code in AUTH_REPLY_CODES:
            return DeliveryResult.transient(_clip(f"authentication failed: {code} {text}"))
        if 500 <= code < 600:
            return DeliveryResult.permanent(_clip(f"{server} refused: {code} {text}"))
        return DeliveryResult.transient(_clip(f"{server} deferred: {code} {text}"))
    if isinstance(error, smtplib.SMTPServerDisconnected):
        return DeliveryResult.transient(_clip(f"{server} disconnected: {error}"))
    if isinstance(error, smtplib.SMTPNotSupportedError):
        # e.g. MAIL_USE_TLS=true against a server without STARTTLS: a configuration problem.
        return DeliveryResult.transient(_clip(f"{server}: {error}"))
    if isinstance(error, TimeoutError):
        return DeliveryResult.transient(_clip(f"{server} timed out: {error}"))
    if isinstance(error, OSError):
        return DeliveryResult.transient(_clip(f"cannot reach {server}: {error}"))
    return DeliveryResult.transient(_clip(f"{server}: {type(error).__name__}: {error}"))


def _text(reply: bytes | str) -> str:
    if isinstance(reply, bytes):
        reply = reply.decode("utf-8", "replace")
    return " ".join(reply.split())


def _clip(detail: str) -> str:
    return detail if len(detail) <= MAX_DETAIL_LENGTH else detail[: MAX_DETAIL_LENGTH - 3] + "..."
