"""The runner's HTTP server: uvicorn on one event loop, so that an open stream (an async
function's Server-Sent Events) or a client sending slowly holds no thread.

Requests reach the async functions as they are, and the Flask functions through the front
app (common/serving_front.py), which reads each body whole before a worker thread takes it.
REQUEST_READ_TIMEOUT (seconds, default 10; see common/config.py) bounds how long a client may
take to send its request headers, or its body, and how long a connection may stay silent,
before the server closes it (common/serving_protocol.py).
"""

from __future__ import annotations

import logging
import os
import resource
import signal
import threading
from collections.abc import Callable, Sequence
from typing import Any

import uvicorn

from common.serving_front import FrontApp
from common.serving_protocol import GuardedHttpToolsProtocol

log = logging.getLogger("notifications.server")

DEFAULT_READ_TIMEOUT = 10.0
# How long a stop waits for the requests in flight (gunicorn's graceful_timeout before).
GRACEFUL_TIMEOUT = 60.0
# How long the stop waits for `on_drain` to return once the requests in flight are done.
DRAIN_TIMEOUT = 10.0
# Connections waiting to be accepted: a burst of stream reconnects after a restart.
BACKLOG = 2048


class _Server(uvicorn.Server):
    """uvicorn's server, with the runner's start, drain and stop around it."""

    def __init__(self, config: uvicorn.Config, on_start: Callable, on_drain: Callable):
        super().__init__(config)
        self.on_start = on_start
        self.on_drain = on_drain
        self.ran_on_start = False
        self.drain = threading.Thread(target=self._run_on_drain, name="drain", daemon=True)

    def handle_exit(self, sig: int, frame: Any) -> None:
        # Not uvicorn's own, which raises the signal again once stopped: a stop that was
        # asked for ends the runner with 0. A second SIGINT stops without waiting.
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        self.should_exit = True

    async def startup(self, sockets: list | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            # In the loop, after the socket is bound: no request is taken until it returns.
            self.ran_on_start = True
            self.on_start()

    async def shutdown(self, sockets: list | None = None) -> None:
        for server in self.servers:
            server.close()  # stop accepting first, so that no stream opens after the drain
        # It ends the open streams, which would otherwise hold the stop; in a thread of its
        # own, as closing a feed's broker connections may take seconds the loop cannot spare.
        self.drain.start()
        await super().shutdown(sockets)

    def _run_on_drain(self) -> None:
        try:
            self.on_drain()
        except Exception:
            log.exception("event=drain_failed")


def raise_open_file_limit() -> int:
    """The soft RLIMIT_NOFILE raised to the hard one: 1,000 streams need more than 1,024
    descriptors. Returns the limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as error:
            log.warning("event=open_file_limit_kept limit=%d error=%s", soft, error)
    return soft


def serve_asgi(
    app: Callable,
    host: str,
    port: int,
    *,
    asgi_routes: Sequence[tuple[str, Any]] = (),
    threads: int | None = None,
    read_timeout: float = DEFAULT_READ_TIMEOUT,
    max_body: int = 8 * 1_048_576,
    on_start: Callable[[], None] = lambda: None,
    on_stop: Callable[[], None] = lambda: None,
    on_drain: Callable[[], None] = lambda: None,
) -> None:
    """Serve the WSGI `app` and the async functions' `asgi_routes` ((werkzeug rule, ASGI app)
    pairs, see FrontApp) until SIGTERM or SIGINT.

    `threads`: the worker threads for WSGI requests (default THREADS, or 4 per core);
    `read_timeout`: the seconds a client may take to send its headers, or a WSGI body
    (REQUEST_READ_TIMEOUT); `max_body`: the largest WSGI body, refused (413) as soon as it is
    declared. `on_start` runs before the first request is taken. On a stop signal the server
    stops accepting, calls `on_drain` at once (in a thread of its own: what it ends in the
    loop it must hand over thread-safely), lets the requests in flight finish (at most
    GRACEFUL_TIMEOUT), then calls `on_stop`. Call from the main thread (it sets the signal
    handlers).
    """
    # functions-framework's default, as its gunicorn setup had it.
    threads = threads or int(os.environ.get("THREADS", (os.cpu_count() or 1) * 4))
    files = raise_open_file_limit()
    front = FrontApp(
        app, asgi_routes, threads=threads, max_body=max_body, read_timeout=read_timeout
    )
    config = uvicorn.Config(
        front,
        host=host,
        port=port,
        http=GuardedHttpToolsProtocol,
        ws="none",
        lifespan="off",
        loop="asyncio",
        log_config=None,  # the runner's logging (common/logs.py) stays as it is
        access_log=False,  # a stream's ticket is in its query string: never logged
        server_header=False,
        timeout_keep_alive=read_timeout,  # also the header timeout (GuardedHttpToolsProtocol)
        timeout_graceful_shutdown=GRACEFUL_TIMEOUT,
        backlog=BACKLOG,
        # A proxy on this machine (TLS in front) tells the client's address and scheme, as
        # waitress's trusted_proxy did: failed credentials are counted per real client, and
        # cookies get Secure when the client came over HTTPS. The headers reach the functions
        # unchanged.
        proxy_headers=True,
        forwarded_allow_ips="127.0.0.1",
    )
    server = _Server(config, on_start=on_start, on_drain=on_drain)
    log.info("event=server_starting threads=%d open_file_limit=%d", threads, files)
    try:
        server.run()
    finally:
        front.close()
        if server.drain.ident is not None:  # a stop was asked for: let the drain finish
            server.drain.join(DRAIN_TIMEOUT)
        if server.ran_on_start:
            on_stop()
