"""A real SMTP server for tests (aiosmtpd in a thread on 127.0.0.1, free port) that keeps what
it receives and can be told at any time to accept, defer (4xx) or refuse (5xx) at any stage:
the greeting, MAIL FROM, RCPT TO or DATA.

    with SmtpServer() as server:
        settings = load_settings({**server.env(), "DATA_DIR": ...})
        ...
        mail = server.wait_for_messages(1)[0]
        assert mail.message["Subject"] == "hi" and mail.rcpt_tos == ["a@example.com"]
"""

from __future__ import annotations

import asyncio
import atexit
import datetime
import functools
import ipaddress
import shutil
import socket
import ssl
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

ACCEPT = "accept"
TEMPFAIL = "tempfail"  # 4xx at RCPT TO: smtplib raises SMTPRecipientsRefused
REJECT = "reject"  # 5xx at RCPT TO: smtplib raises SMTPRecipientsRefused
TEMPFAIL_DATA = "tempfail_data"  # 4xx after the message: smtplib raises SMTPDataError
REJECT_DATA = "reject_data"  # 5xx after the message: smtplib raises SMTPDataError
REFUSE_GREETING = "refuse_greeting"  # 554 instead of 220: smtplib raises SMTPConnectError
REFUSE_SENDER = "refuse_sender"  # 553 at MAIL FROM: smtplib raises SMTPSenderRefused
QUOTA_MAIL = "quota_mail"  # Gmail's daily quota reply at MAIL FROM: SMTPSenderRefused
QUOTA_DATA = "quota_data"  # the same reply after the message: SMTPDataError
RELAY_DENIED = "relay_denied"  # 5xx at RCPT TO that blames the client, not the recipient
REPLIES = {
    TEMPFAIL: "451 4.3.0 try later",
    REJECT: "550 5.1.1 no such user",
    TEMPFAIL_DATA: "451 4.3.0 try later",
    REJECT_DATA: "554 5.6.0 message content rejected",
    REFUSE_GREETING: "554 5.7.1 Client host [127.0.0.1] blocked using zen.spamhaus.org",
    REFUSE_SENDER: "553 5.7.1 sender not allowed",
    QUOTA_MAIL: "550 5.4.5 Daily user sending quota exceeded.",
    QUOTA_DATA: "550 5.4.5 Daily user sending quota exceeded.",
    RELAY_DENIED: "554 5.7.1 Relay access denied",
}
MAIL_FROM_MODES = (REFUSE_SENDER, QUOTA_MAIL)
RCPT_MODES = (TEMPFAIL, REJECT, RELAY_DENIED)
DATA_MODES = (TEMPFAIL_DATA, REJECT_DATA, QUOTA_DATA)
MODES = (ACCEPT, *REPLIES)


@dataclass
class ReceivedMail:
    message: EmailMessage  # parsed with email.policy.default: message["Subject"] is a str
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes = field(repr=False)


class SmtpServer:
    """aiosmtpd on 127.0.0.1. `mode` (one of MODES) may change while the server runs.

    auth=(user, password) requires that login; tls="starttls" or "ssl" serves a certificate
    that `client_ssl_context()` trusts.
    """

    def __init__(
        self,
        mode: str = ACCEPT,
        *,
        auth: tuple[str, str] | None = None,
        tls: str | None = None,
    ):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        if tls not in (None, "starttls", "ssl"):
            raise ValueError("tls must be None, 'starttls' or 'ssl'")
        self.mode = mode
        self.auth = auth
        self.tls = tls
        self.messages: list[ReceivedMail] = []
        self.logins: list[str] = []  # user names that authenticated successfully
        # A slow server: each DATA waits this long before its reply (and before it counts).
        self.delay_seconds = 0.0
        self._arrived = threading.Condition()
        self._controller: _Controller | None = None
        self.host = "127.0.0.1"
        self.port = 0

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> SmtpServer:
        listener = socket.create_server((self.host, 0))
        self.port = listener.getsockname()[1]
        options: dict[str, Any] = {}
        if self.tls:
            certificates = tls_files()
            server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            server_context.load_cert_chain(certificates.cert_file, certificates.key_file)
            key = "tls_context" if self.tls == "starttls" else "ssl_context"
            options[key] = server_context
        if self.auth:
            options.update(
                authenticator=self._authenticate,
                auth_required=True,
                auth_require_tls=self.tls == "starttls",
            )
        self._controller = _Controller(_Handler(self), listener, **options)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> SmtpServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- what tests use -----------------------------------------------------------------------

    def env(self, sender: str = "notifications@example.com") -> dict[str, str]:
        """MAIL_* settings for `load_settings` that point the service at this server."""
        env = {
            "MAIL_SERVER": self.host,
            "MAIL_PORT": str(self.port),
            "MAIL_USE_TLS": "true" if self.tls == "starttls" else "false",
            "MAIL_USE_SSL": "true" if self.tls == "ssl" else "false",
            "MAIL_DEFAULT_SENDER": sender,
            "MAIL_TIMEOUT": "5",
        }
        if self.auth:
            env.update(MAIL_USERNAME=self.auth[0], MAIL_PASSWORD=self.auth[1])
        return env

    def client_ssl_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts this server's test certificate."""
        return ssl.create_default_context(cafile=str(tls_files().ca_file))

    def wait_for_messages(self, count: int = 1, timeout: float = 5.0) -> list[ReceivedMail]:
        """Block until at least `count` messages arrived; AssertionError after `timeout`."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while len(self.messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"expected {count} message(s) within {timeout} s, got {len(self.messages)}"
                    )
                self._arrived.wait(left)
            return list(self.messages)

    def clear(self) -> None:
        with self._arrived:
            self.messages.clear()

    # -- called on the server's thread --------------------------------------------------------

    def _received(self, mail: ReceivedMail) -> None:
        with self._arrived:
            self.messages.append(mail)
            self._arrived.notify_all()

    def _authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        if isinstance(auth_data, LoginPassword) and self.auth is not None:
            login = auth_data.login.decode("utf-8", "replace")
            password = auth_data.password.decode("utf-8", "replace")
            if (login, password) == self.auth:
                self.logins.append(login)
                return AuthResult(success=True)
        return AuthResult(success=False, handled=False)


class _Handler:
    """aiosmtpd hooks; reads the server's mode at each command, so tests can flip it live."""

    def __init__(self, server: SmtpServer):
        self.server = server

    async def handle_MAIL(self, server, session, envelope, address, mail_options) -> str:
        if self.server.mode in MAIL_FROM_MODES:
            return REPLIES[self.server.mode]
        # A handle_MAIL hook takes over what aiosmtpd does by default.
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options) -> str:
        if self.server.mode in RCPT_MODES:
            return REPLIES[self.server.mode]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope) -> str:
        if self.server.delay_seconds:
            await asyncio.sleep(self.server.delay_seconds)
        if self.server.mode in DATA_MODES:
            return REPLIES[self.server.mode]
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode("utf-8")
        message = BytesParser(policy=policy.default).parsebytes(raw)
        mail_from = envelope.mail_from or ""
        self.server._received(ReceivedMail(message, mail_from, list(envelope.rcpt_tos), raw))
        return "250 2.0.0 Message accepted for delivery"


class _Smtp(SMTP):
    """aiosmtpd's SMTP session, able to refuse the client in its greeting (no hook for that)."""

    async def _handle_client(self) -> None:
        handler: _Handler = self.event_handler
        if handler.server.mode != REFUSE_GREETING:
            await super()._handle_client()
            return
        await self.push(REPLIES[REFUSE_GREETING])
        if self.transport is not None:
            self.transport.close()


class _Controller(Controller):
    """Serves on a socket bound beforehand to port 0: a free port, with no race to find one."""

    def __init__(self, handler: _Handler, listener: socket.socket, **options: Any):
        self._listener = listener
        host, port = listener.getsockname()[:2]
        super().__init__(handler, hostname=host, port=port, **options)

    def factory(self):
        # Plain AUTH is deliberate on a loopback test server; aiosmtpd warns at every connection.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS")
            return _Smtp(self.handler, **self.SMTP_kwargs)

    def _create_server(self):
        return self.loop.create_server(
            self._factory_invoker, sock=self._listener, ssl=self.ssl_context
        )


@dataclass(frozen=True)
class TlsFiles:
    ca_file: Path
    cert_file: Path
    key_file: Path


@functools.cache
def tls_files() -> TlsFiles:
    """A throw-away CA and a certificate for 127.0.0.1/localhost signed by it (once a process)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def issue(subject, key, issuer, issuer_key, ca: bool) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), False
            )
        )
        if ca:
            usage = dict(key_cert_sign=True, crl_sign=True, digital_signature=False)
        else:
            usage = dict(key_cert_sign=False, crl_sign=False, digital_signature=True)
            names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), False)
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False
            )
        builder = builder.add_extension(
            x509.KeyUsage(
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
                **usage,
            ),
            critical=True,
        )
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = issue("notification-service test CA", ca_key, "notification-service test CA", ca_key, True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = issue("127.0.0.1", key, "notification-service test CA", ca_key, False)

    directory = Path(tempfile.mkdtemp(prefix="test-smtp-tls-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    files = TlsFiles(directory / "ca.pem", directory / "cert.pem", directory / "key.pem")
    files.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files
