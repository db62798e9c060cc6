"""The runner's HTTP server: waitress, whose event loop reads each request whole (headers and
body) before a worker thread takes it, so clients that send slowly hold no thread.

REQUEST_READ_TIMEOUT (seconds, default 10; see common/config.py) bounds how long a client may take to send one
request, and how long a connection may stay silent, before the server closes it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer
from waitress.task import ErrorTask

DEFAULT_READ_TIMEOUT = 10.0
# How long a stop waits for the requests in flight (gunicorn's graceful_timeout before).
GRACEFUL_TIMEOUT = 60.0
# The loop wakes at least this often, so a stop or an overdue request is seen within it.
TICK = 0.25
# As gunicorn's worker_connections: waitress's own default (100) would let 100 slow clients
# stop it accepting until the read timeout closes them.
CONNECTION_LIMIT = 1000


class _JsonErrorTask(ErrorTask):
    """What the server itself refuses (a declared body over the limit, malformed HTTP) is
    answered as the functions answer: a JSON error, never waitress's plain text."""

    def execute(self):
        error = self.request.error
        message = {
            413: "the request body is larger than this service accepts; send less at once",
            431: "the request headers are too large",
        }.get(error.code, f"the request was refused: {error.reason.lower()}")
        body = json.dumps({"error": message}).encode()
        self.status = f"{error.code} {error.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class _TimedChannel(HTTPChannel):
    """A connection that knows when the request it is still receiving began."""

    error_task_class = _JsonErrorTask
    request_began = 0.0

    def received(self, data):
        if self.request is None:  # these bytes begin a request
            self.request_began = time.monotonic()
        return super().received(data)


class _Server(TcpWSGIServer):
    channel_class = _TimedChannel

    def close_overdue(self, limit: float) -> None:
        # waitress's channel_timeout counts only silence: a byte a second is never silent.
        cutoff = time.monotonic() - limit
        for channel in list(self.active_channels.values()):
            receiving = channel.request is not None and not channel.requests
            if receiving and channel.request_began < cutoff:
                channel.will_close = True

    def close_idle(self) -> None:
        """Close the connections with no request in flight (kept alive between requests)."""
        for channel in list(self.active_channels.values()):
            busy = channel.requests or channel.request is not None or channel.total_outbufs_len
            if not busy:
                channel.will_close = True

    def stop_accepting(self) -> None:
        # The listening socket only: BaseWSGIServer.close would also close the trigger that
        # wakes the loop for the answers of requests in flight.
        wasyncore.dispatcher.close(self)


@contextmanager
def _stop_signals() -> Iterator[list[int]]:
    """SIGTERM and SIGINT only note the stop; the loop sees it within TICK and drains."""
    received: list[int] = []
    previous = {
        number: signal.signal(number, lambda signum, _frame: received.append(signum))
        for number in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        yield received
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _run(server: _Server, connections: dict, limit: float, until: Callable[[], bool]) -> None:
    next_check = 0.0
    while not until():
        wasyncore.loop(timeout=TICK, use_poll=True, map=connections, count=1)
        if time.monotonic() >= next_check:
            server.close_overdue(limit)
            next_check = time.monotonic() + TICK


def serve_wsgi(
    app: Callable,
    host: str,
    port: int,
    *,
    threads: int | None = None,
    read_timeout: float = DEFAULT_READ_TIMEOUT,
    max_body: int = 8 * 1_048_576,
    on_start: Callable[[], None] = lambda: None,
    on_stop: Callable[[], None] = lambda: None,
) -> None:
    """Serve `app` until SIGTERM or SIGINT, then let the requests in flight finish.

    `read_timeout`: the seconds a client may take to send one request (REQUEST_READ_TIMEOUT);
    `max_body`: the largest body any route takes, refused (413) as soon as it is declared.
    `on_start` runs before the first request is taken and `on_stop` after the last answer,
    both in this process. Call from the main thread (it sets the signal handlers).
    """
    limit = read_timeout
    # functions-framework's default, as its gunicorn setup had it.
    threads = threads or int(os.environ.get("THREADS", (os.cpu_count() or 1) * 4))
    # The depth warning fires whenever every thread is busy: normal under load, and costly.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    connections: dict = {}
    server = _Server(
        app,
        map=connections,
        host=host,
        port=port,
        threads=threads,
        connection_limit=CONNECTION_LIMIT,
        channel_timeout=max(1, math.ceil(limit)),  # silent connections; whole seconds only
        cleanup_interval=1,
        asyncore_use_poll=True,  # select() fails past 1024 open descriptors
        max_request_body_size=max_body,
        # A proxy on this machine (TLS in front) tells the client's address and scheme, as
        # gunicorn's forwarded_allow_ips=127.0.0.1 did: failed credentials are counted per
        # real client, and cookies get Secure when the client came over HTTPS.
        trusted_proxy="127.0.0.1",
        trusted_proxy_headers={"x-forwarded-for", "x-forwarded-proto"},
        clear_untrusted_proxy_headers=False,  # the functions get the request's headers unchanged
    )
    with _stop_signals() as stop:
        try:
            on_start()
            _run(server, connections, limit, until=lambda: bool(stop))
            server.stop_accepting()
            deadline = time.monotonic() + GRACEFUL_TIMEOUT

            def drained() -> bool:
                server.close_idle()
                return not server.active_channels or time.monotonic() > deadline

            _run(server, connections, limit, until=drained)
        finally:
            server.task_dispatcher.shutdown()
            wasyncore.close_all(connections)
            on_stop()
