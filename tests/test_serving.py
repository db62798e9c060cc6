"""The runner's server (common/serving.py) in a subprocess, with an async function that holds
its response open as the inbox stream does, and a Flask function beside it: open streams hold
no thread, a stop ends them at once, and the front guards the Flask side as waitress did."""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.runner import free_port, thread_count

ROOT = Path(__file__).resolve().parents[1]
READ_TIMEOUT = 2.0
MAX_BODY = 1_048_576
THREADS = 4
TICKET = "ticket-never-logged-7f3a"

STREAM_FUNCTION = """
import asyncio

import functions_framework.aio
from starlette.responses import JSONResponse, StreamingResponse

ROUTES = ("/users/<user_id>/notifications/stream",)
_ended = []  # (the server's loop, an asyncio.Event of it), made by the first stream


def _ended_event():
    if not _ended:
        _ended.append((asyncio.get_running_loop(), asyncio.Event()))
    return _ended[0][1]


def end_all():  # the server's on_drain, called from a thread of its own
    if _ended:
        loop, event = _ended[0]
        loop.call_soon_threadsafe(event.set)


@functions_framework.aio.http
async def stream(request):
    if request.method != "GET":
        return JSONResponse({"error": "GET only"}, status_code=405)
    ended = _ended_event()

    async def events():
        yield f": open {request.url.path} {request.client.host}\\n\\n".encode()
        while not ended.is_set():
            try:
                await asyncio.wait_for(ended.wait(), 1.0)
            except TimeoutError:
                yield b": keep-alive\\n\\n"

    return StreamingResponse(events(), media_type="text/event-stream")
"""

ECHO_FUNCTION = """
import flask
import functions_framework


class _Route:
    def __init__(self, rule, methods):
        self.rule, self.methods = rule, methods


class router:
    routes = (_Route("/echo", ("GET", "POST")),)


@functions_framework.http
def echo(request):
    if request.args.get("size"):
        return flask.Response(b"x" * int(request.args["size"]), mimetype="text/plain")
    return flask.jsonify(
        remote_addr=request.remote_addr,
        scheme=request.scheme,
        forwarded_for=request.headers.get("X-Forwarded-For"),
        body_length=len(request.get_data()),
    )
"""

SERVER = """
import sys
from pathlib import Path

sys.path.insert(0, {root!r})
from common.hosting import FunctionRouter, FunctionSpec, asgi_routes
from common.logs import configure_logging
from common.serving import serve_asgi

here = Path(__file__).parent
configure_logging("DEBUG")
wsgi = FunctionRouter(
    specs=(FunctionSpec("http_health.py", "http_health"), FunctionSpec(str(here / "echo.py"), "echo"))
)
routes = asgi_routes((FunctionSpec(str(here / "stream.py"), "stream"),))
serve_asgi(
    wsgi, "127.0.0.1", int(sys.argv[1]), asgi_routes=routes, threads={threads},
    read_timeout={read_timeout}, max_body={max_body},
    on_start=lambda: print("event=started", flush=True),
    on_drain=sys.modules["stream"].end_all,
    on_stop=lambda: print("event=stopped", flush=True),
)
"""


class Server:
    def __init__(self, folder: Path):
        (folder / "stream.py").write_text(STREAM_FUNCTION)
        (folder / "echo.py").write_text(ECHO_FUNCTION)
        script = folder / "serve.py"
        script.write_text(
            SERVER.format(
                root=str(ROOT), threads=THREADS, read_timeout=READ_TIMEOUT, max_body=MAX_BODY
            )
        )
        self.port = free_port()
        self.log_path = folder / "server.log"
        env = {**os.environ, "ENV_FILE": os.devnull, "DATA_DIR": str(folder / "data")}
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(script), str(self.port)],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 30
        while "event=started" not in self.log():
            assert self.process.poll() is None, self.log()
            assert time.monotonic() < deadline, self.log()
            time.sleep(0.1)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def connect(self, source: str = "127.0.0.1") -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), 5, (source, 0))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)


@contextmanager
def serving(folder: Path) -> Iterator[Server]:
    server = Server(folder)
    try:
        yield server
    finally:
        server.stop()
        assert TICKET not in server.log(), "a stream's ticket reached the log"


@pytest.fixture(scope="module", name="server")
def server_fixture(tmp_path_factory) -> Iterator[Server]:
    with serving(tmp_path_factory.mktemp("server")) as server:
        yield server


def exchange(server: Server, raw: bytes, source: str = "127.0.0.1") -> tuple[int, dict, float]:
    """Send `raw` on a new connection; (status, JSON body, seconds) once the server closes it
    or the JSON body is whole."""
    started = time.monotonic()
    with server.connect(source) as sock:
        sock.sendall(raw)
        received = b""
        while True:
            head, _, body = received.partition(b"\r\n\r\n")
            if body.rstrip().endswith(b"}"):
                break
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    return int(head.split()[1]), json.loads(body), time.monotonic() - started


def closed_after(socks: list[socket.socket], since: float) -> tuple[list[float], list[bytes]]:
    """Seconds from `since` until the server closed each socket, and what each received."""
    selector = selectors.DefaultSelector()
    received = {sock: b"" for sock in socks}
    closed: dict[socket.socket, float] = {}
    for sock in socks:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
    deadline = time.monotonic() + READ_TIMEOUT + 5
    while len(closed) < len(socks) and time.monotonic() < deadline:
        for key, _ in selector.select(0.1):
            try:
                data = key.fileobj.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            received[key.fileobj] += data
            if not data:
                closed[key.fileobj] = time.monotonic() - since
                selector.unregister(key.fileobj)
    selector.close()
    return [closed.get(sock, float("inf")) for sock in socks], [received[s] for s in socks]


def timed_healthz(server: Server) -> float:
    started = time.monotonic()
    status, body, _ = exchange(server, b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert (status, body) == (200, {"status": "ok"})
    return time.monotonic() - started


def open_streams(server: Server, count: int) -> tuple[selectors.BaseSelector, list[bytes]]:
    selector = selectors.DefaultSelector()
    firsts = []
    for number in range(count):
        sock = server.connect()
        sock.sendall(
            f"GET /users/u{number}/notifications/stream?ticket={TICKET} HTTP/1.1\r\n".encode()
            + b"Host: localhost\r\nAccept: text/event-stream\r\n\r\n"
        )
        received = b""
        while b": open" not in received:
            chunk = sock.recv(4096)
            assert chunk, "a stream was closed at once"
            received += chunk
        firsts.append(received)
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
    return selector, firsts


def wait_all_closed(selector: selectors.BaseSelector, timeout: float) -> int:
    """Read every stream until the server closes it; the number still open after `timeout`."""
    deadline = time.monotonic() + timeout
    while selector.get_map() and time.monotonic() < deadline:
        for key, _ in selector.select(0.2):
            try:
                if key.fileobj.recv(65536):
                    continue
            except BlockingIOError:
                continue
            except OSError:
                pass
            selector.unregister(key.fileobj)
            key.fileobj.close()
    return len(selector.get_map())


def test_300_open_streams_hold_no_thread_and_a_stop_ends_them_at_once(tmp_path):
    with serving(tmp_path) as server:
        held_300_streams_then_stopped(server)


def held_300_streams_then_stopped(server: Server) -> None:
    selector, firsts = open_streams(server, 300)
    try:
        assert firsts[7].startswith(b"HTTP/1.1 200")
        assert b"text/event-stream" in firsts[7]
        assert b": open /users/u7/notifications/stream 127.0.0.1" in firsts[7]
        latencies = [timed_healthz(server) for _ in range(5)]
        threads = thread_count(server.process.pid)
        rss_mb = rss_of(server.process.pid)
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        still_open = wait_all_closed(selector, 5)
        server.process.wait(5)
        stopped_after = time.monotonic() - started
    finally:
        selector.close()
    assert max(latencies) < 1.0, f"/healthz took {latencies} s beside 300 streams"
    # The main thread, the worker threads and a few of Python's own: none per stream.
    assert threads <= THREADS + 6, f"{threads} threads for 300 streams"
    assert rss_mb < 300, f"{rss_mb:.0f} MB resident with 300 streams"
    assert still_open == 0, "a stop left streams open"
    assert stopped_after < 5 and server.process.returncode == 0
    assert "event=stopped" in server.log()


def rss_of(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmRSS:", 1)[1].split()[0]) / 1024


def test_the_async_function_answers_every_method_itself(server):
    raw = b"POST /users/u1/notifications/stream HTTP/1.1\r\nHost: localhost\r\n"
    status, body, _ = exchange(server, raw + b"Content-Length: 0\r\n\r\n")
    assert (status, body) == (405, {"error": "GET only"})


def test_a_declared_body_over_the_limit_is_refused_at_once(server):
    head = f"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: {50 * MAX_BODY}\r\n\r\n"
    status, body, seconds = exchange(server, head.encode() + b'{"a')
    assert status == 413 and "larger than this service accepts" in body["error"]
    assert seconds < 1.0


def chunked(data: bytes, size: int = 65536) -> bytes:
    parts = [data[at : at + size] for at in range(0, len(data), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in parts) + b"0\r\n\r\n"


def test_a_chunked_body_is_read_whole_within_the_limit_and_refused_past_it(server):
    head = b"POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
    status, body, _ = exchange(server, head + chunked(b"x" * 300_000))
    assert status == 200 and body["body_length"] == 300_000
    status, body, _ = exchange(server, head + chunked(b"x" * (MAX_BODY + 1)))
    assert status == 413 and "error" in body


def test_a_body_not_in_within_the_read_timeout_is_closed_then(server):
    head = b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n"
    status, body, seconds = exchange(server, head + b"x" * 10)
    assert status == 408 and "not received in time" in body["error"]
    assert READ_TIMEOUT - 0.3 < seconds < READ_TIMEOUT + 1.0


def test_headers_not_in_within_the_read_timeout_are_closed_then_not_before(server):
    begun, silent, kept_alive = server.connect(), server.connect(), server.connect()
    with begun, silent, kept_alive:
        begun.sendall(b"GET /echo HTTP/1.1\r\nX-Slow: ")
        kept_alive.sendall(b"GET /echo HTTP/1.1\r\nHost: localhost\r\n\r\n")
        answer = b""
        while not answer.endswith(b"}\n"):
            answer += kept_alive.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200")
        since = time.monotonic()
        for _ in range(3):  # a byte now and then is no reprieve
            time.sleep(0.4)
            begun.sendall(b"a")
        times, received = closed_after([begun, silent, kept_alive], since)
    assert all(READ_TIMEOUT - 0.3 < seconds < READ_TIMEOUT + 1.0 for seconds in times), times
    assert received[0].startswith(b"HTTP/1.1 408") and received[1:] == [b"", b""]


def test_malformed_or_oversized_headers_get_a_json_error(server):
    status, body, _ = exchange(server, b"GET /echo HTTP/1.1\r\nno colon here\r\n\r\n")
    assert status == 400 and body["error"] == "the request is not valid HTTP"
    huge = b"GET /echo HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n"
    status, body, _ = exchange(server, huge)
    assert status == 431 and body["error"] == "the request headers are too large"
    with server.connect() as sock:  # the same, sent in pieces: refused before it ends
        sock.sendall(b"GET /echo HTTP/1.1\r\nHost: localhost\r\nX-Big: ")
        answer = b""
        for _ in range(12):
            time.sleep(0.02)
            try:
                sock.sendall(b"a" * 8192)
            except OSError:
                break
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 431"), answer[:100]
    status, body, _ = exchange(server, b"POST /echo HTTP/1.1\r\nContent-Length: ten\r\n\r\n")
    assert status == 400 and "error" in body


def test_only_a_proxy_on_127_0_0_1_is_trusted_for_the_client_address_and_scheme(server):
    raw = (
        b"GET /echo HTTP/1.1\r\nHost: localhost\r\n"
        b"X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\n\r\n"
    )
    status, proxied, _ = exchange(server, raw)
    assert status == 200
    assert proxied == {
        "remote_addr": "203.0.113.7",
        "scheme": "https",
        "forwarded_for": "203.0.113.7",  # the headers reach the function unchanged
        "body_length": 0,
    }
    _, direct, _ = exchange(server, raw, source="127.0.0.2")
    assert (direct["remote_addr"], direct["scheme"]) == ("127.0.0.2", "http")


def test_a_large_flask_response_arrives_whole(server):
    with server.connect() as sock:
        sock.sendall(b"GET /echo?size=3000000 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        received = b""
        while len(received.partition(b"\r\n\r\n")[2]) < 3_000_000:
            chunk = sock.recv(1 << 20)
            assert chunk, "closed before the whole body"
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"content-length: 3000000" in head.lower()
    assert body == b"x" * 3_000_000
