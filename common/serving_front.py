"""The runner's ASGI front: each request goes either to an async function's own Starlette app
(by the routes it declares) or, through a WSGI bridge on a pool of worker threads, to the
Flask functions' router (common.hosting.FunctionRouter).

A WSGI request takes a thread only once its body is in whole, read here in the event loop: a
client that sends slowly, or an open stream, holds no thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from werkzeug.exceptions import NotFound
from werkzeug.routing import Map, Rule

from common.serving_bridge import WsgiBridge
from common.serving_errors import send_error

log = logging.getLogger("notifications.server")


class BodyTooLarge(Exception):
    pass


class ClientGone(Exception):
    pass


class FrontApp:
    """`asgi_routes`: (werkzeug rule, ASGI app) pairs, matched first and for any method (the
    function answers OPTIONS and 405 itself); every other path goes to `wsgi_app`.
    `max_body`: the largest WSGI request body, refused (413) as soon as it is known to be
    larger; `read_timeout`: the seconds a WSGI request body may take to arrive."""

    def __init__(
        self,
        wsgi_app: Callable,
        asgi_routes: Sequence[tuple[str, Any]] = (),
        *,
        threads: int,
        max_body: int,
        read_timeout: float,
    ):
        self.max_body = max_body
        self.read_timeout = read_timeout
        self.asgi_apps = [app for _, app in asgi_routes]
        self.url_map = Map(strict_slashes=False, merge_slashes=False)
        for index, (rule, _) in enumerate(asgi_routes):
            self.url_map.add(Rule(rule, endpoint=index))
        self.routes = self.url_map.bind("localhost")
        self.bridge = WsgiBridge(wsgi_app, threads)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":  # lifespan is off and websockets are not served
            return
        asgi_app = self._asgi_app_for(scope["path"])
        if asgi_app is not None:
            await asgi_app(scope, receive, send)
        else:
            await self._to_wsgi(scope, receive, send)

    def close(self) -> None:
        """Let the worker threads end once their requests are answered."""
        self.bridge.close()

    def _asgi_app_for(self, path: str) -> Any | None:
        if not self.asgi_apps:
            return None
        try:
            index, _ = self.routes.match(path)
        except NotFound:
            return None
        return self.asgi_apps[index]

    async def _to_wsgi(self, scope, receive, send) -> None:
        declared = _content_length(scope["headers"])
        if declared is not None and declared > self.max_body:
            await send_error(send, 413)  # at once: never wait for a body that is refused
            return
        try:
            async with asyncio.timeout(self.read_timeout):
                body = await _read_body(receive, self.max_body)
        except BodyTooLarge:
            await send_error(send, 413)
            return
        except TimeoutError:
            log.info("event=request_body_timeout path=%s", scope["path"][:200])
            await send_error(send, 408)
            return
        except ClientGone:
            return
        await self._answer_in_a_thread(scope, body, send)

    async def _answer_in_a_thread(self, scope, body: bytes, send) -> None:
        started = False

        async def tracked_send(message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await self.bridge(scope, body, tracked_send)
        except Exception:
            # The functions answer their own errors; this is the bridge or the router failing.
            # The path only: the query string may hold a ticket.
            log.exception("event=request_failed path=%s", scope["path"][:200])
            if not started:
                await send_error(send, 500)


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    # llhttp has already refused a malformed or conflicting Content-Length.
    for name, value in headers:
        if name == b"content-length":
            return int(value)
    return None


async def _read_body(receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
