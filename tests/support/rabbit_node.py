"""A private RabbitMQ node for tests that stop, restart or freeze a broker.

It never touches the machine's broker on 5672: its own node name, AMQP and distribution ports
(free ones on 127.0.0.1), its own data, log and pid files under a temporary folder, its own Erlang
cookie (HOME points there) and no plugins, so no management or metrics listener can clash.

    with RabbitNode() as node:          # or the session fixture `private_broker`
        url = node.url                  # amqp://guest:guest@127.0.0.1:<port>/%2F
        node.restart()                  # full stop and start; durable queues and messages survive
        with node.frozen():             # SIGSTOP of the node's Erlang VM, SIGCONT on the way out
            ...

Starting a node takes about 7 s on a 2-core machine: the fault suite starts one per session.
"""

from __future__ import annotations

import atexit
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pika
import pytest

START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
CLI_TIMEOUT = 30.0
# The packaged /usr/sbin scripts switch to the `rabbitmq` user when run as root, which would use
# that user's cookie and home; the scripts they wrap run as whoever calls them.
PACKAGED_BIN = Path("/usr/lib/rabbitmq/bin")


@dataclass(frozen=True)
class QueueState:
    messages: int  # ready and unacknowledged
    consumers: int
    unacknowledged: int


def _rabbit_program(name: str) -> str:
    packaged = PACKAGED_BIN / name
    if packaged.exists():
        return str(packaged)
    found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed: the fault suite needs RabbitMQ's server scripts")
    return found


def _free_loopback_port(taken: set[int]) -> int:
    """A free port below 30000: RabbitMQ's CLI takes its own port at distribution port + 10000."""
    for _ in range(200):
        port = random.randint(20000, 29999)
        if port in taken:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port between 20000 and 29999")


class RabbitNode:
    """One private RabbitMQ node; see the module docstring."""

    def __init__(self) -> None:
        self.name = f"fault-{uuid.uuid4().hex[:8]}@localhost"
        self.port = _free_loopback_port(set())
        self.dist_port = _free_loopback_port({self.port})
        self.base = Path(tempfile.mkdtemp(prefix="rabbit-node-"))
        self.pid_file = self.base / "node.pid"
        self.log_file = self.base / "server.log"
        self._server: subprocess.Popen | None = None
        self._frozen = False
        self._write_config()

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    # -- life cycle ---------------------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> RabbitNode:
        """Start the node (on its existing data, after a stop) and wait until it serves AMQP."""
        started = time.monotonic()
        self.pid_file.unlink(missing_ok=True)
        with open(self.log_file, "ab") as log:
            self._server = subprocess.Popen(
                [_rabbit_program("rabbitmq-server")],
                cwd=self.base,
                env=self._env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        try:
            self._ctl("wait", str(self.pid_file), "--timeout", str(int(timeout)), timeout=timeout)
            self._wait_for_amqp(started + timeout)
        except BaseException:
            self._kill()
            raise
        self.start_seconds = time.monotonic() - started
        return self

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop the node cleanly (persistent messages are on disk), SIGKILL it if that hangs."""
        self.thaw()
        if self._server is None:
            return
        try:
            self._ctl("stop", str(self.pid_file), timeout=timeout, check=False)
            self._server.wait(timeout)
        except subprocess.TimeoutExpired:
            self._kill()
        self._server = None

    def restart(self) -> None:
        """A full stop and start of the node, keeping its data (clients see their connection
        closed, then refused, then accepted again)."""
        self.stop()
        self.start()

    def stop_app(self) -> None:
        """Stop only the RabbitMQ application (connections closed, port refused); quicker."""
        self._ctl("stop_app")

    def start_app(self) -> None:
        self._ctl("start_app")
        self._wait_for_amqp(time.monotonic() + START_TIMEOUT)

    def close(self) -> None:
        """Thaw, stop and remove every file of the node. Safe to call more than once."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> RabbitNode:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- faults -------------------------------------------------------------------------------

    @property
    def os_pid(self) -> int:
        """The OS pid of the node's Erlang VM (beam.smp), as the node wrote it."""
        return int(self.pid_file.read_text().strip())

    def freeze(self) -> None:
        """SIGSTOP the VM: connections stay open and nothing answers (a hung broker)."""
        os.kill(self.os_pid, signal.SIGSTOP)
        self._frozen = True

    def thaw(self) -> None:
        if self._frozen:
            os.kill(self.os_pid, signal.SIGCONT)
            self._frozen = False

    @contextmanager
    def frozen(self) -> Iterator[None]:
        self.freeze()
        try:
            yield
        finally:
            self.thaw()

    # -- queues -------------------------------------------------------------------------------

    def purge(self, queue: str) -> int:
        """Drop every ready message of `queue`; returns how many were dropped."""
        with self._channel() as channel:
            return channel.queue_purge(queue).method.message_count

    def ready_messages(self, queue: str) -> int:
        """Messages ready for delivery (not counting unacknowledged ones); 0 if no such queue."""
        with self._channel() as channel:
            try:
                return channel.queue_declare(queue, passive=True).method.message_count
            except pika.exceptions.ChannelClosedByBroker:
                return 0

    def queue_state(self, queue: str) -> QueueState | None:
        """Ready plus unacknowledged messages and consumers, as the node counts them (through
        rabbitmqctl: about 0.7 s a call); None when the queue does not exist."""
        out = self._ctl(
            "list_queues",
            "-q",
            "--no-table-headers",
            "name",
            "messages",
            "consumers",
            "messages_unacknowledged",
        )
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 4 and parts[0] == queue:
                return QueueState(int(parts[1]), int(parts[2]), int(parts[3]))
        return None

    def publish_raw(self, queue: str, body: bytes, headers: dict | None = None) -> None:
        """Put a message straight on `queue` (declared durable, as the service declares it)."""
        with self._channel() as channel:
            channel.queue_declare(queue, durable=True)
            channel.confirm_delivery()
            properties = pika.BasicProperties(
                delivery_mode=pika.DeliveryMode.Persistent, headers=headers
            )
            channel.basic_publish("", queue, body, properties, mandatory=True)

    def take_all(self, queue: str) -> list[tuple[pika.BasicProperties, bytes]]:
        """Remove and return every ready message of `queue` (properties, body)."""
        found = []
        with self._channel() as channel:
            try:
                channel.queue_declare(queue, passive=True)
            except pika.exceptions.ChannelClosedByBroker:
                return []
            while True:
                method, properties, body = channel.basic_get(queue, auto_ack=True)
                if method is None:
                    return found
                found.append((properties, body))

    def delete_queues(self, *queues: str) -> None:
        with self._channel() as channel:
            for queue in queues:
                channel.queue_delete(queue)

    # -- internals ----------------------------------------------------------------------------

    @contextmanager
    def _channel(self):
        parameters = pika.URLParameters(self.url)
        parameters.socket_timeout = 5
        parameters.blocked_connection_timeout = 5
        connection = pika.BlockingConnection(parameters)
        try:
            yield connection.channel()
        finally:
            if connection.is_open:
                connection.close()

    def _write_config(self) -> None:
        (self.base / "enabled_plugins").write_text("[].\n")
        (self.base / "rabbitmq-env.conf").write_text("")  # not the machine's (its NODENAME)
        (self.base / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
            # A test machine's disk is often nearly full; a disk alarm would block publishers.
            "disk_free_limit.absolute = 1MB\n"
        )

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RABBITMQ_")}
        env.update(
            HOME=str(self.base),  # its own Erlang cookie, shared with our rabbitmqctl calls
            RABBITMQ_NODENAME=self.name,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_CONFIG_FILE=str(self.base / "rabbitmq"),
            RABBITMQ_CONF_ENV_FILE=str(self.base / "rabbitmq-env.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.base / "enabled_plugins"),
            RABBITMQ_MNESIA_BASE=str(self.base / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.base / "log"),
            RABBITMQ_PID_FILE=str(self.pid_file),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
            ERL_EPMD_ADDRESS="127.0.0.1",
        )
        return env

    def _ctl(self, *args: str, timeout: float = CLI_TIMEOUT, check: bool = True) -> str:
        done = subprocess.run(
            [_rabbit_program("rabbitmqctl"), "-n", self.name, *args],
            env=self._env(),
            cwd=self.base,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and done.returncode != 0:
            raise RuntimeError(
                f"rabbitmqctl {' '.join(args)} failed ({done.returncode}):\n"
                f"{done.stdout}{done.stderr}\n--- node log ---\n{self.log()[-3000:]}"
            )
        return done.stdout

    def _wait_for_amqp(self, deadline: float) -> None:
        while True:
            try:
                with self._channel():
                    return
            except pika.exceptions.AMQPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def _kill(self) -> None:
        """SIGKILL whatever is left of the node: its VM and the scripts that started it."""
        self._frozen = False
        try:
            os.kill(self.os_pid, signal.SIGKILL)
        except (OSError, ValueError):
            pass
        if self._server is not None:
            try:
                os.killpg(self._server.pid, signal.SIGKILL)
            except OSError:
                pass
            self._server.wait(10)

    def log(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""


_session_node: RabbitNode | None = None


@pytest.fixture(scope="session", name="private_broker")
def private_broker_fixture() -> Iterator[RabbitNode]:
    """One private node for the whole session, stopped and removed at the end, always.

    Several test modules import this fixture; pytest may then hold one definition per module,
    so the node itself is kept here, started once, and its teardown is safe to run twice.
    """
    global _session_node
    if _session_node is None:
        node = RabbitNode()
        atexit.register(node.close)  # should pytest itself be interrupted
        node.__enter__()
        _session_node = node
    yield _session_node
    _session_node.close()
