"""A loopback TCP proxy that can stall: what a service sees when a peer's packets are dropped.

    with TcpProxy(upstream_port) as proxy:     # listens on 127.0.0.1:proxy.port
        proxy.blackhole()   # connections stay open, bytes stop moving both ways, new
                            # connections are accepted and then hear nothing
        proxy.heal()        # bytes move again (what waited in the kernel's buffers arrives,
                            # as TCP retransmission would deliver it)
        proxy.reset()       # close every connection now (a peer that went away)

Only 127.0.0.1 is used, on both sides.
"""

from __future__ import annotations

import select
import socket
import threading
from contextlib import suppress

POLL_SECONDS = 0.05
CHUNK = 65536


class TcpProxy:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1"):
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self._flowing = threading.Event()
        self._flowing.set()
        self._closed = threading.Event()
        self._listener: socket.socket | None = None
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self.connections_accepted = 0

    def url_for(self, amqp_url_template: str = "amqp://guest:guest@127.0.0.1:{port}/%2F") -> str:
        return amqp_url_template.format(port=self.port)

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> TcpProxy:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(POLL_SECONDS * 4)
        self.port = self._listener.getsockname()[1]
        self._spawn(self._accept_loop)
        return self

    def stop(self) -> None:
        self._closed.set()
        self._flowing.set()  # wake the pumps so they see the close
        self.reset()
        if self._listener is not None:
            self._listener.close()
        for thread in self._threads:
            thread.join(timeout=2)

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- faults -------------------------------------------------------------------------------

    def blackhole(self) -> None:
        self._flowing.clear()

    def heal(self) -> None:
        self._flowing.set()

    def reset(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    # -- internals ----------------------------------------------------------------------------

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()]
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections_accepted += 1
            self._track(client)
            self._spawn(self._connect_and_pump, client)

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.add(sock)

    def _forget(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)

    def _wait_while_blackholed(self) -> bool:
        """False once the proxy is closed."""
        while not self._flowing.wait(POLL_SECONDS):
            if self._closed.is_set():
                return False
        return not self._closed.is_set()

    def _connect_and_pump(self, client: socket.socket) -> None:
        # A connection made during a blackhole hears nothing until healed (a lost SYN-ACK's
        # cousin: the handshake of the protocol above stalls).
        if not self._wait_while_blackholed():
            return
        try:
            upstream = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            client.close()
            return
        self._track(upstream)
        self._spawn(self._pump, upstream, client)
        self._pump(client, upstream)

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while self._wait_while_blackholed():
                readable, _, _ = select.select([source], [], [], POLL_SECONDS)
                if not readable:
                    continue
                if not self._flowing.is_set():
                    continue  # blackholed while we waited: leave the bytes where they are
                data = source.recv(CHUNK)
                if not data:
                    break
                target.sendall(data)
        except (OSError, ValueError):
            pass
        finally:
            # One side ended: end the other too, as a real connection would.
            for sock in (source, target):
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                self._forget(sock)
                sock.close()
