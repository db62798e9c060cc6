"""A webhook receiver on 127.0.0.1: a stdlib ThreadingHTTPServer in a thread that records each
request (headers, body) and answers as told: 200, another status, slowly, or not at all
(`down()` closes the port; `up()` opens the same port again).

    with WebhookReceiver() as receiver:
        ...register receiver.url...
        [first] = receiver.wait_for(1)
        receiver.answer_with(500); receiver.down(); receiver.up()
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() when it arrived

    @property
    def webhook_id(self) -> str:
        return self.headers.get("webhook-id", "")


class WebhookReceiver:
    def __init__(self):
        self.received: list[Received] = []
        self.answered: list[str] = []  # webhook-ids, in the order their replies were sent
        self.status = 200
        self.delay = 0.0  # seconds to wait before answering
        self._changed = threading.Condition()
        self._server: ThreadingHTTPServer | None = None
        self.port = 0
        self.up()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def answer_with(self, status: int, delay: float = 0.0) -> None:
        self.status, self.delay = status, delay

    def up(self) -> None:
        """Listen (again, on the same port once it had one)."""
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the stdlib's name
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                receiver._record(Received(self.path, headers, body, time.monotonic()))
                status, delay = receiver.status, receiver.delay
                if delay:
                    time.sleep(delay)
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:  # the client gave up waiting
                    pass
                with receiver._changed:
                    receiver.answered.append(headers.get("webhook-id", ""))
                    receiver._changed.notify_all()

            def log_message(self, *args):
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()

    def down(self) -> None:
        """Close the port: attempts meet a refused connection."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _record(self, request: Received) -> None:
        with self._changed:
            self.received.append(request)
            self._changed.notify_all()

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Received]:
        """The requests so far, once there are at least `count` (AssertionError on timeout)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(self.received)} webhook requests, not {count}")
                self._changed.wait(left)
            return list(self.received)

    def wait_answered(self, count: int, timeout: float = 5.0) -> list[str]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.answered) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(self.answered)} answers sent, not {count}")
                self._changed.wait(left)
            return list(self.answered)

    def close(self) -> None:
        self.down()

    def __enter__(self) -> WebhookReceiver:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
