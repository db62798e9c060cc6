"""Email over SMTP with smtplib: one connection per delivery, each failure classified as
transient (retry) or permanent (give up) from the stage it happened at and the server's reply."""

from __future__ import annotations

import dataclasses
import email.policy
import re
import smtplib
import socket
import ssl
from collections.abc import Mapping
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from email.utils import formatdate, parseaddr

from common.channels.base import Channel, DeliveryResult
from common.config import Settings
from common.model import EMAIL, Notification
from common.unsubscribe import UnsubscribeLinks

# 530 auth required, 534/538 mechanism or encryption needed, 535 bad credentials: the operator
# fixes the configuration and the retry succeeds, so these must not fail notifications for good.
AUTH_REPLY_CODES = frozenset({530, 534, 535, 538})
MAX_DETAIL_LENGTH = 500

AUTH_STAGE = "AUTH"
RCPT_STAGE = "RCPT TO"
DATA_STAGE = "DATA"
# The stage each smtplib error reports, most specific class first. A bare SMTPResponseException
# comes, on the send path, from a refused STARTTLS: part of setting up the session.
STAGE_OF_ERROR: tuple[tuple[type[smtplib.SMTPResponseException], str], ...] = (
    (smtplib.SMTPConnectError, "greeting"),
    (smtplib.SMTPHeloError, "HELO"),
    (smtplib.SMTPAuthenticationError, AUTH_STAGE),
    (smtplib.SMTPSenderRefused, "MAIL FROM"),
    (smtplib.SMTPDataError, DATA_STAGE),
    (smtplib.SMTPResponseException, "session setup"),
)

# Enhanced status codes (RFC 3463, RFC 7372) that blame the sender's own setup at any stage,
# written without their class digit ("4.5" stands for 4.4.5 and 5.4.5).
SENDER_SETUP_STATUSES = frozenset(
    {
        "1.7",  # the sender's mailbox address is malformed
        "1.8",  # the sender's domain does not exist
        "4.5",  # congestion: Gmail's "550 5.4.5 Daily user sending quota exceeded"
        "7.8",  # authentication credentials invalid
        "7.9",  # authentication mechanism too weak
        "7.11",  # encryption required for the authentication
        "7.20",  # no passing DKIM signature
        "7.21",  # no acceptable DKIM signature
        "7.22",  # no DKIM signature matching the author
        "7.23",  # SPF validation failed
        "7.24",  # SPF validation error
        "7.25",  # reverse DNS of the sending IP failed
        "7.26",  # several authentication checks failed (Gmail: "unauthenticated")
        "7.27",  # the sender's domain has a null MX
    }
)
# Reply texts that blame the sender, unless the status names the recipient ("5.2.2 mailbox
# quota exceeded" is the recipient's quota): quotas and rate limits, a sending IP on a block
# list, relaying refused to a client that is not logged in.
SENDER_SETUP_TEXT = re.compile(
    r"quota|rate[- ]?limit|sending limit|too many (?:messages|mails|emails)"
    r"|block ?list|black ?list|blocked using|spamhaus|\brelay(?:ing)?\b",
    re.IGNORECASE,
)
# At DATA a 5xx is final only when it names the recipient or the message (RFC 3463 subjects:
# 1 addressing, 2 mailbox, 6 content, 7 policy such as "5.7.1 content rejected"; and 5.3.4 too
# big). Protocol or mail-system statuses (5.5.x, 5.3.x, 5.4.x) are not about this message.
MESSAGE_STATUS_SUBJECTS = frozenset({"1", "2", "6", "7"})
RECIPIENT_STATUS_SUBJECTS = frozenset({"1", "2"})  # the recipient's address or mailbox
MESSAGE_TOO_BIG_STATUS = "5.3.4"
# RFC 5321's replies for a refused message, for servers that send no enhanced status code.
MESSAGE_REFUSED_CODES = frozenset({550, 552, 554})
ENHANCED_STATUS = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\b")

SUBJECT_POLICY = email.policy.default
# An encoded-word may decode to another: a subject nested deeper than this is refused.
MAX_SUBJECT_DECODINGS = 4
# Control characters (C0, C1), unpaired surrogates and the line and paragraph separators.
CONTROLS_TO_SPACES = {
    code: " " for code in [*range(0x20), *range(0x7F, 0xA0), *range(0xD800, 0xE000), 0x2028, 0x2029]
}

# refold_source="none": a header set raw (List-Unsubscribe) is written as it is; refolded, its
# long URL would become encoded-words that no mail provider reads as a link.
TEXT_MAIL_POLICY = email.policy.default.clone(refold_source="none")
# smtplib declares no BODY=8BITMIME for ASCII addresses, so the HTML email's parts stay 7-bit:
# the stdlib then picks quoted-printable or base64 for non-ASCII text and for long lines.
HTML_MAIL_POLICY = TEXT_MAIL_POLICY.clone(cte_type="7bit")
# A BCP 47 language tag, loosely ("fr", "pt-BR", "zh-Hant-TW"): also what keeps the header safe,
# used with fullmatch, since a "$" would let a trailing newline through.
LOCALE_PATTERN = re.compile(r"[A-Za-z]{2,3}(?:-[A-Za-z0-9]{2,8})*")


Headers = Mapping[str, str] | None


class InvalidMessage(ValueError):
    """The notification cannot become a well-formed email: retrying cannot help."""


def build_message(
    notification: Notification, sender: str, default_subject: str, headers: Headers = None
) -> EmailMessage:
    """The notification as an email, with `headers` (ours, never the sender's) as they are;
    raise InvalidMessage for a missing or malformed address or subject, ValueError for a sender
    that cannot be used.

    EmailMessage refuses CR/LF in a header value, but it decodes RFC 2047 encoded-words, and
    before Python 3.11.10 and 3.12.5 (CVE-2024-6923) writes a CR/LF decoded from one back out
    raw, which starts a header or a body of the sender's choosing. So each value is set as the
    text the parser reads back, and the serialized headers are checked against those set.
    """
    if not notification.email:
        raise InvalidMessage("the notification has no email address")
    message = EmailMessage(policy=HTML_MAIL_POLICY if notification.html else TEXT_MAIL_POLICY)
    try:
        message["To"] = notification.email
    except (ValueError, IndexError) as error:
        raise InvalidMessage(f"invalid email address {notification.email!r}: {error}") from None
    addresses = message["To"].addresses
    # The address must be exactly the recipient: no display name, list, group or comment, and
    # nothing the parser decodes into something else (an encoded-word in the local part).
    if (
        len(addresses) != 1
        or not addresses[0].domain
        or addresses[0].display_name
        or addresses[0].addr_spec != notification.email
    ):
        raise InvalidMessage(f"invalid email address {notification.email!r}: not one bare address")
    message["From"] = sender
    for address in message["From"].addresses:
        if _line_breaks_or_controls(address.display_name + address.addr_spec):
            raise ValueError("the sender decodes to control characters")
    message["Subject"] = subject_text(notification.subject or "") or default_subject
    message["Date"] = formatdate(localtime=False, usegmt=True)
    # Stable across retries, so a receiver can drop a duplicate of a send we could not confirm.
    domain = parseaddr(sender)[1].rpartition("@")[2] or "localhost"
    domain = re.sub(r"[^A-Za-z0-9.-]", "_", domain)
    safe_id = re.sub(r"[^A-Za-z0-9._-]", "_", notification.id)
    message["Message-ID"] = f"<{safe_id}@{domain}>"
    message["X-Notification-Id"] = safe_id
    for name, value in (headers or {}).items():
        message.set_raw(name, value)
    _set_body(message, notification)
    _check_serialized_headers(message)
    return message


def _set_body(message: EmailMessage, notification: Notification) -> None:
    """The text alone, or the text then the HTML as multipart/alternative (clients show the
    last part they can render). Content-Language comes last: set_content and add_alternative
    move any Content-* header set before them into the body part."""
    message.set_content(notification.message)
    if notification.html:
        message.add_alternative(notification.html, subtype="html")
    locale = notification.locale
    if isinstance(locale, str) and LOCALE_PATTERN.fullmatch(locale):
        message["Content-Language"] = locale


def subject_text(subject: str) -> str:
    """The subject as one line of plain text that the header parser reads back unchanged:
    encoded-words decoded (again, for one nested in another), and line breaks and control
    characters, typed or decoded, folded into single spaces."""
    text = _one_line(subject)
    for _ in range(MAX_SUBJECT_DECODINGS):
        decoded = str(SUBJECT_POLICY.header_factory("Subject", text))
        if decoded == text:
            return text
        text = _one_line(decoded)
    raise InvalidMessage("the subject nests encoded-words too deeply")


def _one_line(text: str) -> str:
    return " ".join(text.translate(CONTROLS_TO_SPACES).split())


def _line_breaks_or_controls(text: str) -> bool:
    return text.translate(CONTROLS_TO_SPACES) != text


def _check_serialized_headers(message: EmailMessage) -> None:
    """Raise InvalidMessage unless the message, serialized as smtplib will, parses back to the
    same header names: the last guard should a value still smuggle a line break through."""
    addresses = [
        address.addr_spec for name in ("From", "To") for address in message[name].addresses
    ]
    utf8 = not "".join(addresses).isascii()  # smtplib then sends with SMTPUTF8 and utf8=True
    serialized = message.as_bytes(policy=message.policy.clone(utf8=utf8, linesep="\r\n"))
    parsed = BytesHeaderParser(policy=email.policy.default).parsebytes(serialized)
    if [name.lower() for name in parsed.keys()] != [name.lower() for name in message.keys()]:
        raise InvalidMessage("the message would not serialize to the headers set")


def envelope_recipient(message: EmailMessage) -> str:
    """The bare address of the single `To` recipient, as the SMTP envelope needs it."""
    return message["To"].addresses[0].addr_spec


class EmailChannel(Channel):
    """Sends through the SMTP server named by MAIL_SERVER (STARTTLS, implicit SSL or plain)."""

    notification_type = EMAIL
    provider = "smtp"

    def __init__(
        self,
        settings: Settings,
        ssl_context: ssl.SSLContext | None = None,
        unsubscribe: UnsubscribeLinks | None = None,
    ):
        if not settings.mail_server:
            raise ValueError("EmailChannel needs settings.mail_server")
        self.settings = settings
        self.unsubscribe = unsubscribe
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
            return DeliveryResult.transient(
                "no sender: set MAIL_DEFAULT_SENDER or MAIL_USERNAME", setup_problem=True
            )
        links = self.unsubscribe.headers(notification) if self.unsubscribe else None
        try:
            message = build_message(notification, sender, self.settings.mail_default_subject, links)
        except InvalidMessage as error:
            return DeliveryResult.permanent(str(error))
        except ValueError as error:  # the configured sender, not the notification, is at fault
            return DeliveryResult.transient(
                _clip(f"cannot use sender {sender!r}: {error}"), setup_problem=True
            )
        try:
            self._send(message)
        except Exception as error:  # deliver() never raises: every failure is an outcome
            return self._without_password(classify_smtp_error(error, self.server))
        message_id = message["Message-ID"]
        return DeliveryResult.sent(f"accepted by {self.server} as {message_id}", message_id)

    def _send(self, message: EmailMessage) -> None:
        smtp = self._connect()
        try:
            smtp.send_message(message, to_addrs=[envelope_recipient(message)])
        except BaseException:
            smtp.close()  # no QUIT: after a timeout it would wait a second timeout
            raise
        _quit(smtp)

    def _without_password(self, result: DeliveryResult) -> DeliveryResult:
        """The result with the password masked, should a server ever echo it in its reply."""
        password = self.settings.mail_password
        if not password or password not in result.detail:
            return result
        return dataclasses.replace(result, detail=result.detail.replace(password, "***"))

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
            # Unlike ehlo(), raises SMTPHeloError when refused, and falls back to HELO.
            smtp.ehlo_or_helo_if_needed()
            if settings.mail_use_tls and not settings.mail_use_ssl:
                smtp.starttls(context=self.ssl_context)
                smtp.ehlo_or_helo_if_needed()
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
    """Transient or permanent, with the stage, the server's code and text, for what smtplib
    raised. Permanent only when a 5xx refuses the recipient (RCPT) or the message (DATA)."""
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        code, text = _recipient_reply(error)
        return classify_smtp_reply(RCPT_STAGE, code, text, server)
    if isinstance(error, smtplib.SMTPResponseException):
        stage = next(name for kind, name in STAGE_OF_ERROR if isinstance(error, kind))
        return classify_smtp_reply(stage, error.smtp_code, _text(error.smtp_error), server)
    return _classify_failure_without_reply(error, server)


def classify_smtp_reply(stage: str, code: int, text: str, server: str = "") -> DeliveryResult:
    """One refusal at one stage of the session: `stage` is RCPT_STAGE, DATA_STAGE or one of
    the stages before the recipient is named (greeting, HELO, STARTTLS, AUTH, MAIL FROM).
    The result's error_code is the reply code."""
    result = _classify_reply(stage, code, text, server)
    return dataclasses.replace(result, error_code=str(code))


def _classify_reply(stage: str, code: int, text: str, server: str) -> DeliveryResult:
    verb = "refused" if code >= 500 else "deferred"
    if stage == AUTH_STAGE or code in AUTH_REPLY_CODES:
        verb = "authentication failed"
    detail = _clip(f"{server} {verb} at {stage}: {code} {text}".lstrip())
    if _blames_the_sender(text):
        return DeliveryResult.transient(detail, setup_problem=True)
    if code < 500:  # 4xx: the server asks to come back later
        return DeliveryResult.transient(detail)
    if stage == RCPT_STAGE:  # a 550 here: no such mailbox, or it refuses us: suppress it
        return DeliveryResult.permanent(detail, suppress=code == 550)
    if stage == DATA_STAGE and _refuses_the_message(code, text):
        return DeliveryResult.permanent(detail)
    # A 5xx before the recipient is named refuses us, not them: the operator has to act.
    return DeliveryResult.transient(detail, setup_problem=stage != DATA_STAGE)


def _blames_the_sender(text: str) -> bool:
    status = _enhanced_status(text)
    subject_and_detail = status.partition(".")[2] if status else ""
    if subject_and_detail in SENDER_SETUP_STATUSES:
        return True
    if subject_and_detail.partition(".")[0] in RECIPIENT_STATUS_SUBJECTS:
        return False
    return SENDER_SETUP_TEXT.search(text) is not None


def _refuses_the_message(code: int, text: str) -> bool:
    """True when a 5xx at DATA is about this recipient or this message, not the session."""
    status = _enhanced_status(text)
    if status is None:
        return code in MESSAGE_REFUSED_CODES
    return status.split(".")[1] in MESSAGE_STATUS_SUBJECTS or status == MESSAGE_TOO_BIG_STATUS


def _enhanced_status(text: str) -> str | None:
    """The status "5.4.5" of "5.4.5 Daily user sending quota exceeded", None without one."""
    match = ENHANCED_STATUS.match(text)
    return ".".join(match.groups()) if match else None


def _recipient_reply(error: smtplib.SMTPRecipientsRefused) -> tuple[int, str]:
    """The reply for the (single) recipient: the lowest code, so a 4xx among 5xx wins."""
    replies = sorted((code, _text(reply)) for code, reply in error.recipients.values())
    return replies[0] if replies else (0, "no reply for the recipient")


def _classify_failure_without_reply(error: Exception, server: str) -> DeliveryResult:
    """Failures with no SMTP reply: the network, TLS, or what the server does not support."""
    if isinstance(error, smtplib.SMTPServerDisconnected):
        return DeliveryResult.transient(_clip(f"{server} disconnected: {error}"))
    if isinstance(error, ssl.SSLError):  # an untrusted certificate, a TLS version mismatch
        return DeliveryResult.transient(_clip(f"{server} TLS failed: {error}"), setup_problem=True)
    if isinstance(error, smtplib.SMTPException):
        # e.g. MAIL_USE_TLS=true against a server without STARTTLS, or no usable AUTH method.
        return DeliveryResult.transient(_clip(f"{server}: {error}"), setup_problem=True)
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
