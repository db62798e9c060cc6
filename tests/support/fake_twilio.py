"""A local stand-in for Twilio's Messages API (stdlib HTTP server in a thread on 127.0.0.1) that
records each request and answers like Twilio: 201 queued, 500, 429, or the error answer of any
Twilio error code (`fail_with(21610)`); an unknown path gets Twilio's 404 (error 20404).

    with FakeTwilio() as twilio:
        settings = load_settings({**twilio.env(), "DATA_DIR": ...})
        ...
        request = twilio.wait_for_requests(1)[0]
        assert request.form["To"] == "+14155550123" and request.username == twilio.account_sid

Each message it creates gets its own SID (in `request.sid`); `receipt(request, "delivered")`
is the signed status callback Twilio would then post to the request's StatusCallback URL.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from twilio.request_validator import RequestValidator

OK = "ok"
SERVER_ERROR = "server_error"  # 500, Twilio error 20500
RATE_LIMITED = "rate_limited"  # 429, Twilio error 20429
INVALID_NUMBER = "invalid_number"  # 400, Twilio error 21211
SLOW = "slow"  # answers OK after `slow_seconds`: for client timeouts
TWILIO_ERROR = "twilio_error"  # error_status with Twilio error error_code: see fail_with()
MODES = (OK, SERVER_ERROR, RATE_LIMITED, INVALID_NUMBER, SLOW, TWILIO_ERROR)

# Twilio's own messages for the error codes tests ask for (https://www.twilio.com/docs/api/errors).
ERROR_MESSAGES = {
    20003: "Authenticate",
    20404: "The requested resource was not found",
    21211: "The 'To' number is not a valid phone number.",
    21212: "The 'From' number is not a valid phone number.",
    21408: "Permission to send an SMS has not been enabled for the region indicated by the 'To'",
    21606: "The 'From' phone number provided is not a valid message-capable Twilio phone number",
    21610: "Attempt to send to unsubscribed recipient",
    21611: "This 'From' number has exceeded the maximum number of queued messages",
    21612: "The 'To' phone number is not currently reachable via SMS",
    21614: "'To' number is not a valid mobile number",
}

MESSAGES_PATH = re.compile(r"^/2010-04-01/Accounts/(?P<sid>[^/]+)/Messages\.json$")
ACCOUNT_PATH = re.compile(r"^/2010-04-01/Accounts/(?P<sid>[^/]+)\.json$")


@dataclass
class RecordedRequest:
    method: str
    path: str
    form: dict[str, str]  # form fields, first value of each: To, From, Body
    username: str | None  # HTTP basic auth: the account SID
    password: str | None  # HTTP basic auth: the auth token
    sid: str | None = None  # the SID of the message it created, if it did


@dataclass
class Receipt:
    """A status callback as Twilio posts it: to `url`, with `form` signed by `signature`."""

    url: str
    form: dict[str, str]
    signature: str


class FakeTwilio:
    """Twilio's Messages API on 127.0.0.1. `mode` (one of MODES) may change while it runs.

    Requests with other credentials than account_sid/auth_token get Twilio's 401 (error 20003).
    """

    def __init__(
        self,
        mode: str = OK,
        *,
        account_sid: str = "AC" + "0123456789abcdef" * 2,
        auth_token: str = "test-auth-token",
        phone_number: str = "+15005550006",
        slow_seconds: float = 2.0,
        error_code: int = 21211,
        error_status: int = 400,
    ):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        self.mode = mode
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.phone_number = phone_number
        self.slow_seconds = slow_seconds
        self.error_code = error_code  # what mode TWILIO_ERROR answers
        self.error_status = error_status
        self.requests: list[RecordedRequest] = []
        self._arrived = threading.Condition()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.base_url = ""

    def start(self) -> FakeTwilio:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.fake = self  # type: ignore[attr-defined]
        host, port = self._server.server_address[:2]
        self.base_url = f"http://{host}:{port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeTwilio:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def env(self) -> dict[str, str]:
        """TWILIO_* settings for `load_settings` that point the service at this endpoint."""
        return {
            "TWILIO_SID": self.account_sid,
            "TWILIO_AUTH_TOKEN": self.auth_token,
            "TWILIO_PHONE_NUMBER": self.phone_number,
            "TWILIO_API_BASE_URL": self.base_url,
        }

    def fail_with(self, code: int, status: int = 400) -> None:
        """Answer every message request from now on with Twilio error `code`."""
        self.mode, self.error_code, self.error_status = TWILIO_ERROR, code, status

    def wait_for_requests(self, count: int = 1, timeout: float = 5.0) -> list[RecordedRequest]:
        """Block until at least `count` requests arrived; AssertionError after `timeout`."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while len(self.requests) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"expected {count} request(s) within {timeout} s, got {len(self.requests)}"
                    )
                self._arrived.wait(left)
            return list(self.requests)

    def receipt(
        self, request: RecordedRequest, status: str, error_code: int | None = None
    ) -> Receipt:
        """The callback Twilio sends when message `request.sid` reaches `status`, signed with
        the auth token for the StatusCallback URL given when it was created."""
        form = {
            "AccountSid": self.account_sid,
            "MessageSid": request.sid or "",
            "SmsSid": request.sid or "",
            "MessageStatus": status,
            "SmsStatus": status,
            "To": request.form.get("To", ""),
            "From": request.form.get("From", ""),
            "ApiVersion": "2010-04-01",
        }
        if error_code is not None:
            form["ErrorCode"] = str(error_code)
        url = request.form["StatusCallback"]
        signature = RequestValidator(self.auth_token).compute_signature(url, form)
        return Receipt(url, form, signature)

    def _record(self, request: RecordedRequest) -> None:
        with self._arrived:
            self.requests.append(request)
            self._arrived.notify_all()

    def answer(self, request: RecordedRequest) -> tuple[int, dict[str, Any]]:
        """Status and JSON body for one request, as Twilio would give them in the current mode."""
        messages, account = MESSAGES_PATH.match(request.path), ACCOUNT_PATH.match(request.path)
        other_account = any(m and m.group("sid") != self.account_sid for m in (messages, account))
        wrong_credentials = (request.username, request.password) != (
            self.account_sid,
            self.auth_token,
        )
        if wrong_credentials or other_account:
            return _error(401, 20003, "Authenticate")
        if account and request.method == "GET":
            return 200, _account(self.account_sid)
        if not (messages and request.method == "POST"):
            return _error(404, 20404, f"The requested resource {request.path} was not found")
        if self.mode == SERVER_ERROR:
            return _error(500, 20500, "An internal server error has occurred")
        if self.mode == RATE_LIMITED:
            return _error(429, 20429, "Too Many Requests")
        to = request.form.get("To", "")
        if self.mode == INVALID_NUMBER:
            return _error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if self.mode == TWILIO_ERROR:
            message = ERROR_MESSAGES.get(self.error_code, f"Twilio error {self.error_code}")
            return _error(self.error_status, self.error_code, message)
        if self.mode == SLOW:
            time.sleep(self.slow_seconds)
        return 201, _message(self.account_sid, request.form)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's pooled session expects
    server: ThreadingHTTPServer

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8") if length else ""
        form = {key: values[0] for key, values in parse_qs(body, keep_blank_values=True).items()}
        username, password = _basic_auth(self.headers.get("Authorization"))
        path = self.path.split("?", 1)[0]
        request = RecordedRequest(self.command, path, form, username, password)
        fake: FakeTwilio = self.server.fake  # type: ignore[attr-defined]
        fake._record(request)
        status, payload = fake.answer(request)
        request.sid = payload.get("sid") if status == 201 else None  # before the client reads it
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client timed out and left (mode SLOW): nothing to answer any more

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass


def _basic_auth(header: str | None) -> tuple[str | None, str | None]:
    if not header or not header.lower().startswith("basic "):
        return None, None
    try:
        decoded = base64.b64decode(header[6:].strip()).decode("utf-8")
    except ValueError:
        return None, None
    username, _, password = decoded.partition(":")
    return username, password


def _error(status: int, code: int, message: str) -> tuple[int, dict[str, Any]]:
    return status, {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


def _message(account_sid: str, form: dict[str, str]) -> dict[str, Any]:
    sid = "SM" + uuid.uuid4().hex
    now = formatdate(usegmt=True)
    return {
        "account_sid": account_sid,
        "api_version": "2010-04-01",
        "body": form.get("Body", ""),
        "date_created": now,
        "date_sent": None,
        "date_updated": now,
        "direction": "outbound-api",
        "error_code": None,
        "error_message": None,
        "from": form.get("From"),
        "messaging_service_sid": None,
        "num_media": "0",
        "num_segments": "1",
        "price": None,
        "price_unit": "USD",
        "sid": sid,
        "status": "queued",
        "subresource_uris": {
            "media": f"/2010-04-01/Accounts/{account_sid}/Messages/{sid}/Media.json"
        },
        "to": form.get("To"),
        "uri": f"/2010-04-01/Accounts/{account_sid}/Messages/{sid}.json",
    }


def _account(account_sid: str) -> dict[str, Any]:
    now = formatdate(usegmt=True)
    return {
        "sid": account_sid,
        "friendly_name": "Fake Twilio test account",
        "status": "active",
        "type": "Full",
        "date_created": now,
        "date_updated": now,
        "uri": f"/2010-04-01/Accounts/{account_sid}.json",
    }
