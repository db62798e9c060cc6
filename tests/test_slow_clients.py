"""Clients that send their request byte by byte: the runner still answers others at once, and
closes each slow one once REQUEST_READ_TIMEOUT has passed (common/serving.py)."""

from __future__ import annotations

import http.client
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from tests.support.runner import running_service

# Long enough for the 200 slow clients to stay open while the first test measures.
READ_TIMEOUT = 5.0
# The server closes an overdue request on a timer; the slack is for a loaded machine.
CLOSE_SLACK = 1.0
ANSWER_BOUND = 1.0  # the bound for an ordinary request


class SlowClients:
    """Connections that send `first` at once, then `drip` every `interval` seconds; records when
    the server closed each one, in seconds since it was opened."""

    def __init__(self, port: int, count: int, first: bytes, drip: bytes, interval: float = 1.0):
        self.closed_after: dict[socket.socket, float] = {}
        self._selector = selectors.DefaultSelector()
        self._stop = threading.Event()
        self._drip, self._interval = drip, interval
        for _ in range(count):
            client = socket.create_connection(("127.0.0.1", port), timeout=5)
            client.sendall(first)
            client.setblocking(False)
            self._selector.register(client, selectors.EVENT_READ, time.monotonic())
        self._thread = threading.Thread(target=self._run, name="slow-clients", daemon=True)
        self._thread.start()

    def open_count(self) -> int:
        return len(self._selector.get_map())

    def _closed(self, client: socket.socket, opened: float) -> None:
        self.closed_after[client] = time.monotonic() - opened
        self._selector.unregister(client)
        client.close()

    def _run(self) -> None:
        next_drip = time.monotonic() + self._interval
        while not self._stop.is_set() and self._selector.get_map():
            for key, _ in self._selector.select(max(0.0, next_drip - time.monotonic())):
                try:
                    if key.fileobj.recv(1024) == b"":
                        self._closed(key.fileobj, key.data)
                except BlockingIOError:
                    continue
                except OSError:  # reset by the server
                    self._closed(key.fileobj, key.data)
            if time.monotonic() >= next_drip:
                next_drip = time.monotonic() + self._interval
                self._send_drip()

    def _send_drip(self) -> None:
        if not self._drip:
            return
        for key in list(self._selector.get_map().values()):
            try:
                key.fileobj.send(self._drip)
            except OSError:
                self._closed(key.fileobj, key.data)

    def wait_all_closed(self, timeout: float) -> None:
        self._thread.join(timeout)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for key in list(self._selector.get_map().values()):
            key.fileobj.close()
        self._selector.close()


@pytest.fixture(scope="module", name="service_port")
def service_port_fixture() -> Iterator[int]:
    with running_service({"REQUEST_READ_TIMEOUT": str(READ_TIMEOUT)}) as base:
        yield urlsplit(base).port


def timed_healthz(port: int) -> float:
    """Seconds for GET /healthz on a new connection (the timeout itself if it never answers)."""
    started = time.monotonic()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", "/healthz")
        reply = connection.getresponse()
        reply.read()
        assert reply.status == 200
    except TimeoutError:
        return 5.0
    finally:
        connection.close()
    return time.monotonic() - started


def test_an_ordinary_request_answers_while_200_clients_send_byte_by_byte(service_port):
    slow = SlowClients(service_port, 200, b"GET /healthz HTTP/1.1\r\n", b"X")
    try:
        time.sleep(1.5)  # each slow client has sent more than its request line
        seconds = []
        for _ in range(5):
            seconds.append(timed_healthz(service_port))
            time.sleep(0.2)
        still_open = slow.open_count()
    finally:
        slow.close()
    assert still_open == 200, "slow clients were closed before the read timeout"
    latencies = [round(s, 3) for s in seconds]
    assert max(seconds) < ANSWER_BOUND, f"/healthz took {latencies} s with 200 slow clients"


def test_clients_that_never_finish_their_headers_are_closed_after_the_read_timeout(
    service_port,
):
    dripping = SlowClients(service_port, 3, b"GET /healthz HTTP/1.1\r\nX-A: ", b"a", 0.5)
    silent = SlowClients(service_port, 2, b"GET /healthz HT", b"")
    try:
        for clients in (dripping, silent):
            clients.wait_all_closed(READ_TIMEOUT + CLOSE_SLACK + 2)
        after = [dripping.closed_after.values(), silent.closed_after.values()]
    finally:
        dripping.close()
        silent.close()
    assert [len(times) for times in after] == [3, 2], "the server kept a slow client open"
    slowest = max(max(times) for times in after)
    quickest = min(min(times) for times in after)
    assert slowest < READ_TIMEOUT + CLOSE_SLACK, f"closed only after {slowest:.2f} s"
    assert quickest > READ_TIMEOUT - 0.5, f"closed after {quickest:.2f} s, before the timeout"
