"""uvicorn's httptools connection with what waitress gave the runner and uvicorn lacks: a bound
on the time a client may take to send its request headers, a bound on their size, JSON errors
for malformed or oversized headers, and a cap on open connections.

uvicorn only times out a connection kept alive between requests: a client that sends its
headers a byte a second would be kept forever (slowloris). Here the clock starts when a
connection opens or the first byte of its next request arrives, and stops once the headers
are in; the body is the front app's to bound (common/serving_front.py). llhttp sets no bound
on the headers' size, so the bytes received while they are incomplete are counted here.
"""

from __future__ import annotations

import asyncio
import logging

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from common.serving_errors import closing_response

log = logging.getLogger("notifications.server")

# More than 1,000 open streams plus the ordinary traffic beside them; past it a new connection
# is answered 503 and closed (each one costs a descriptor and some memory).
CONNECTION_LIMIT = 4000
# Request line and headers; a longer head is answered 431 (waitress allowed 256 KiB).
MAX_HEADER_BYTES = 64 * 1024


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """One connection. The header timeout is uvicorn's `timeout_keep_alive` (the runner sets
    both to REQUEST_READ_TIMEOUT: how long a connection may stay silent or half-sent)."""

    _header_timer: asyncio.TimerHandle | None = None
    _head_open = False  # between a request's first byte and the end of its headers
    _head_bytes = 0
    _refusal = 400  # the status for a request the parser gives up on

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > CONNECTION_LIMIT:
            log.warning("event=connection_refused open=%d", len(self.connections))
            self._refuse(503)
            return
        self._arm_header_timer()  # a connection that never sends a byte is closed too

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._head_open and not self.transport.is_closing():
            # A head begun in this data counts it whole: at worst a pipelined body before it.
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEADER_BYTES:
                self._refuse(431)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_open, self._head_bytes = True, 0
        if self._header_timer is None:
            self._arm_header_timer()

    def on_headers_complete(self) -> None:
        self._head_open = False
        self._disarm_header_timer()
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > MAX_HEADER_BYTES:  # it came whole, in one piece of data
            self._refusal = 431
            raise ValueError("request headers too large")  # stops the parser: a parse error
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        # uvicorn calls this for any request llhttp cannot parse, with a plain-text 400.
        self._refuse(self._refusal)

    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        self._header_timer = self.loop.call_later(self.timeout_keep_alive, self._headers_overdue)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_overdue(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if self._head_open:  # a request was begun: tell its client why
            self._refuse(408)
        else:  # a connection that never sent a byte
            self.transport.close()

    def _refuse(self, status: int) -> None:
        self._disarm_header_timer()
        if not self.transport.is_closing():
            self.transport.write(closing_response(status))
            self.transport.close()
