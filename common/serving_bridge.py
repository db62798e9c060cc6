"""The bridge from the event loop to the Flask functions (WSGI): each request runs on one of a
pool of worker threads, and its response comes back to the loop in one piece.

a2wsgi builds the WSGI environ. Its own responder hands each part of a response (the status,
every chunk, the end) from the thread to the loop one at a time, each a wait for the loop's
turn: that halved the runner's throughput (850 requests/s against 1,700 on /healthz, side by
side). The Flask functions do not stream (the streams are async functions), so a response is
gathered on its thread; only one larger than BUFFER_LIMIT is handed over in parts.
"""

from __future__ import annotations

import asyncio
import contextvars
import io
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from a2wsgi.wsgi import build_environ

# A response is handed to the loop in parts of about this size (one wait each), not whole.
BUFFER_LIMIT = 256 * 1024


class WsgiBridge:
    def __init__(self, app: Callable, threads: int):
        self.app = app
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="wsgi")

    async def __call__(self, scope: dict, body: bytes, send: Callable) -> None:
        """Answer the request of `scope`, whose body the caller has read whole, with `app`."""
        environ = build_environ(scope, None)
        # A terminated stream: a chunked body reads to its end, as waitress gave it.
        environ["wsgi.input"] = io.BytesIO(body)
        environ["wsgi.input_terminated"] = True
        environ["wsgi.errors"] = sys.stderr  # as waitress had it (a2wsgi: stdout)
        loop = asyncio.get_running_loop()
        response = _Response(loop, send)
        run = contextvars.copy_context().run
        await loop.run_in_executor(self.executor, run, response.produce, self.app, environ)
        for message in response.take():
            await send(message)

    def close(self) -> None:
        """Let the worker threads end once their requests are answered."""
        self.executor.shutdown(wait=False, cancel_futures=True)


class _Response:
    """One response: gathered on the worker thread, then sent by the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, send: Callable):
        self.loop = loop
        self.send = send
        self.start: dict | None = None
        self.started = False  # the status and headers were handed to the loop
        self.chunks: list[bytes] = []
        self.held = 0

    def produce(self, app: Callable, environ: dict) -> None:
        """In the worker thread: run the app and iterate its body."""
        iterable = app(environ, self.start_response)
        try:
            for chunk in iterable:
                self.write(chunk)
        finally:
            close = getattr(iterable, "close", None)
            if close is not None:
                close()
        if self.start is None:
            raise RuntimeError("the WSGI app returned without calling start_response")

    def start_response(self, status: str, headers: list, exc_info=None) -> Callable:
        if exc_info is not None and self.started:
            raise exc_info[1].with_traceback(exc_info[2])
        self.start = {
            "type": "http.response.start",
            "status": int(status.split(" ", 1)[0]),
            "headers": [
                (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers
            ],
        }
        return self.write

    def write(self, chunk: bytes) -> None:
        if self.start is None:
            raise RuntimeError("the WSGI app sent its body before start_response")
        if not chunk:
            return
        self.chunks.append(chunk)
        self.held += len(chunk)
        if self.held >= BUFFER_LIMIT:
            self._hand_over()

    def take(self, final: bool = True) -> list[dict]:
        """The messages for what is held (the whole response once `final`)."""
        messages = []
        if not self.started:
            messages.append(self.start)
            self.started = True
        body = b"".join(self.chunks)
        self.chunks, self.held = [], 0
        if body or final:
            messages.append({"type": "http.response.body", "body": body, "more_body": not final})
        return messages

    def _hand_over(self) -> None:
        # Waits until the loop has sent it: a slow reader holds this thread, not memory.
        messages = self.take(final=False)

        async def send_all() -> None:
            for message in messages:
                await self.send(message)

        asyncio.run_coroutine_threadsafe(send_all(), self.loop).result()
