"""The fault suite, broker side: the runner on a private RabbitMQ node (restarted, frozen, behind
a proxy that drops packets, purged, fed poison), with the real SMTP server and Twilio endpoint.

Each test counts what the peers received per notification id and asserts that no accepted
notification is lost and none is sent twice. The helpers here are shared with the other
tests/test_faults_*.py modules.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.support.auth import ADMIN_HEADERS, ADMIN_KEY
from tests.support.fake_twilio import SLOW, FakeTwilio
from tests.support.fixtures import unused_port
from tests.support.rabbit_node import RabbitNode, private_broker_fixture  # noqa: F401
from tests.support.runner import run_command, running_service, thread_count
from tests.support.smtp_server import REJECT_DATA, SmtpServer
from tests.support.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(150)]

ANSWER_BOUND = 2.0  # a send answers within this, whatever the broker does
CLIENT_SLACK = 0.3  # our own HTTP round trip on a busy 2-core machine
FAST_BOUND = 0.5  # requests that touch no broker
DELIVERY_BOUND = 20.0  # what was accepted is delivered this long after the broker is back
SETTLE_SECONDS = 1.5  # after the last expected delivery, wait this long for a duplicate
MARKER = re.compile(r"\[(fault-[0-9a-f]{12})\]")


# -- counting what the peers received -------------------------------------------------------


@dataclass
class Accepted:
    id: str
    status: str
    marker: str
    kind: str
    seconds: float  # how long the send took to answer


class Peers:
    """What the SMTP server and the Twilio endpoint received, counted per notification id.

    Mail carries X-Notification-Id; an SMS carries only its text, so every message we send holds
    a marker ("[fault-...]") that maps back to the id the service gave it.
    """

    def __init__(self, smtp: SmtpServer, twilio: FakeTwilio):
        self.smtp = smtp
        self.twilio = twilio
        self.id_by_marker: dict[str, str] = {}

    def expect(self, accepted: Accepted) -> None:
        self.id_by_marker[accepted.marker] = accepted.id

    def counts(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        for mail in list(self.smtp.messages):
            counts[
                mail.message["X-Notification-Id"] or self._id_in(mail.message.get_content())
            ] += 1
        for request in list(self.twilio.requests):
            if request.method == "POST":
                counts[self._id_in(request.form.get("Body", ""))] += 1
        return counts

    def markers_seen(self) -> set[str]:
        texts = [m.message.get_content() for m in list(self.smtp.messages)]
        texts += [r.form.get("Body", "") for r in list(self.twilio.requests)]
        return {marker for text in texts for marker in MARKER.findall(text)}

    def _id_in(self, text: str) -> str:
        found = MARKER.search(text)
        if not found:
            return f"(unmarked: {text[:40]!r})"
        return self.id_by_marker.get(found.group(1), f"(unknown marker {found.group(1)})")

    def wait_each_once(self, ids: list[str], timeout: float = DELIVERY_BOUND) -> Counter[str]:
        """Wait until every id reached its peer, then a little longer for any duplicate; assert
        none is missing and none arrived twice. Returns the counts."""
        wait_until(
            lambda: not self.missing(ids),
            timeout,
            lambda: (
                f"{len(self.missing(ids))} of {len(ids)} never reached their peer, e.g. "
                f"{self.missing(ids)[:3]}"
            ),
        )
        time.sleep(SETTLE_SECONDS)
        counts = self.counts()
        assert_each_once(counts, ids, known=set(self.id_by_marker.values()))
        return counts

    def missing(self, ids: list[str]) -> list[str]:
        counts = self.counts()
        return [i for i in ids if counts[i] == 0]


def assert_each_once(counts: Counter[str], ids: list[str], known: set[str]) -> None:
    """Each of `ids` arrived once, and nothing arrived that was not sent (`known`)."""
    lost = [i for i in ids if counts[i] == 0]
    twice = {i: counts[i] for i in ids if counts[i] > 1}
    strangers = {k: v for k, v in counts.items() if k not in known}
    assert not lost, f"{len(lost)} of {len(ids)} notifications lost, e.g. {lost[:3]}"
    assert not twice, f"{len(twice)} of {len(ids)} notifications sent more than once: {twice}"
    assert not strangers, f"the peers received what no one sent: {strangers}"


# -- talking to the service -----------------------------------------------------------------


def payload(kind: str, marker: str) -> dict:
    text = f"fault suite {kind} [{marker}]"
    if kind == "email":
        return {
            "user_id": "u-fault",
            "notification_type": "email",
            "message": text,
            "email": "ann@example.com",
            "subject": "fault suite",
        }
    return {
        "user_id": "u-fault",
        "notification_type": "sms",
        "message": text,
        "phone": "+14155550123",
    }


def new_marker() -> str:
    return f"fault-{uuid.uuid4().hex[:12]}"


def post(base: str, kind: str, timeout: float = 10.0) -> tuple[requests.Response, str, float]:
    """POST one notification; the reply, its marker and how long the answer took."""
    marker = new_marker()
    started = time.monotonic()
    reply = requests.post(
        f"{base}/notifications",
        json=payload(kind, marker),
        headers=ADMIN_HEADERS,
        timeout=timeout,
    )
    return reply, marker, time.monotonic() - started


def submit(base: str, kind: str, peers: Peers) -> Accepted:
    """POST one notification and assert it was accepted (201)."""
    reply, marker, seconds = post(base, kind)
    assert reply.status_code == 201, f"{reply.status_code}: {reply.text}"
    body = reply.json()
    accepted = Accepted(body["id"], body["status"], marker, kind, seconds)
    peers.expect(accepted)
    return accepted


def submit_many(base: str, kinds: list[str], peers: Peers, callers: int = 8) -> list[Accepted]:
    with ThreadPoolExecutor(max_workers=callers) as pool:
        return list(pool.map(lambda kind: submit(base, kind, peers), kinds))


def mixed(count: int) -> list[str]:
    return ["email" if index % 2 == 0 else "sms" for index in range(count)]


def get_json(base: str, path: str, timeout: float = 10.0) -> dict:
    reply = requests.get(f"{base}{path}", headers=ADMIN_HEADERS, timeout=timeout)
    return reply.json()


def status_of(base: str, notification_id: str) -> str:
    return get_json(base, f"/notifications/{notification_id}")["status"]


def wait_for_status(base: str, notification_id: str, wanted: str, timeout: float) -> None:
    wait_until(
        lambda: status_of(base, notification_id) == wanted,
        timeout,
        lambda: f"{notification_id} is {status_of(base, notification_id)}, not {wanted}",
    )


def assert_all_sent(base: str, ids: list[str]) -> None:
    statuses = Counter(status_of(base, i) for i in ids)
    assert statuses == {"sent": len(ids)}, statuses


def timed_get(base: str, path: str) -> float:
    started = time.monotonic()
    reply = requests.get(f"{base}{path}", headers=ADMIN_HEADERS, timeout=10)
    assert reply.status_code == 200, f"{path}: {reply.status_code}"
    return time.monotonic() - started


def wait_until(
    condition: Callable[[], bool], timeout: float, describe: Callable[[], str], every=0.1
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"after {timeout} s: {describe()}")
        time.sleep(every)


def dead_letter_reason(properties, body: bytes) -> str | None:
    """The reason a dead letter carries, in a header or in its JSON body (any key that names a
    reason or an error), or None."""
    for key, value in (properties.headers or {}).items():
        if ("reason" in key.lower() or "error" in key.lower()) and value:
            return str(value)
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if isinstance(data, dict):
        for key, value in data.items():
            if ("reason" in key.lower() or "error" in key.lower()) and value:
                return str(value)
    return None


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture(name="fault_queues")
def fault_queues_fixture(private_broker: RabbitNode) -> Iterator[tuple[str, str]]:
    suffix = uuid.uuid4().hex[:8]
    names = (f"fault_notifications_{suffix}", f"fault_notifications_dlq_{suffix}")
    yield names
    private_broker.thaw()
    private_broker.delete_queues(*names)


@pytest.fixture(name="peers")
def peers_fixture(smtp_server: SmtpServer, fake_twilio: FakeTwilio) -> Peers:
    return Peers(smtp_server, fake_twilio)


@pytest.fixture(name="fault_env")
def fault_env_fixture(
    tmp_path: Path,
    private_broker: RabbitNode,
    fault_queues: tuple[str, str],
    smtp_server: SmtpServer,
    fake_twilio: FakeTwilio,
) -> dict[str, str]:
    """Short timings, so that every fault heals within seconds."""
    return {
        "DATA_DIR": str(tmp_path / "data"),
        "RABBITMQ_URL": private_broker.url,
        "QUEUE_NAME": fault_queues[0],
        "DLQ_NAME": fault_queues[1],
        "SWEEP_INTERVAL": "0.5",
        "LEASE_SECONDS": "2",
        "PENDING_GRACE_SECONDS": "0.5",
        "STALE_QUEUED_SECONDS": "2",
        "PUBLISH_TIMEOUT": "1.5",
        "STORE_TIMEOUT": "2",
        "MAX_HANDLING_FAILURES": "3",
        "RETRY_SCHEDULE": "0.5,0.5,1,1,2",
        "RETRY_JITTER": "0.1",
        "ADMIN_API_KEY": ADMIN_KEY,
        # These tests send hundreds to one address as fast as they can, to count deliveries
        # per notification under faults: the abuse limits (tests/test_access*.py) are off.
        "SEND_RATE_LIMIT": "0",
        "SMS_PER_RECIPIENT_PER_HOUR": "0",
        "EMAIL_PER_RECIPIENT_PER_HOUR": "0",
        **smtp_server.env(),
        "MAIL_TIMEOUT": "15",  # longer than any delay a test gives the SMTP server
        **fake_twilio.env(),
    }


@pytest.fixture(name="proxy")
def proxy_fixture(private_broker: RabbitNode) -> Iterator[TcpProxy]:
    with TcpProxy(private_broker.port) as proxy:
        yield proxy


# -- the broker restarted mid-load ----------------------------------------------------------


class PacedLoad:
    """Callers that keep sending until stopped; every answer is kept, with its latency."""

    def __init__(self, base: str, peers: Peers, callers: int = 4, pause: float = 0.1):
        self.base, self.peers, self.callers, self.pause = base, peers, callers, pause
        self.accepted: list[Accepted] = []
        self.refused: list[tuple[int, str, float]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._call, args=(n,)) for n in range(callers)]

    def __enter__(self) -> PacedLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _call(self, caller: int) -> None:
        count = 0
        while not self._stop.is_set():
            kind = "email" if (caller + count) % 2 == 0 else "sms"
            count += 1
            reply, marker, seconds = post(self.base, kind)
            if reply.status_code == 201:
                body = reply.json()
                accepted = Accepted(body["id"], body["status"], marker, kind, seconds)
                self.peers.expect(accepted)
                self.accepted.append(accepted)
            else:
                self.refused.append((reply.status_code, reply.text[:200], seconds))
            self._stop.wait(self.pause)


def test_broker_restarted_mid_load_loses_and_repeats_nothing(
    fault_env, private_broker: RabbitNode, peers: Peers
):
    with running_service(fault_env) as base:
        with PacedLoad(base, peers) as load:
            wait_until(lambda: len(load.accepted) >= 30, 20, lambda: f"{len(load.accepted)} sent")
            private_broker.restart()
            back = time.monotonic()
            time.sleep(1.0)  # some more sends against the fresh broker
        assert not load.refused, f"sends refused during the restart: {load.refused[:5]}"
        slowest = max(a.seconds for a in load.accepted)
        assert slowest < ANSWER_BOUND + CLIENT_SLACK, f"a send took {slowest:.2f} s"
        ids = [a.id for a in load.accepted]
        peers.wait_each_once(ids, timeout=DELIVERY_BOUND - (time.monotonic() - back))
        assert_all_sent(base, ids)
        print(
            f"broker restart: {len(ids)} accepted "
            f"({sum(a.status == 'pending' for a in load.accepted)} as pending), each sent once"
        )


def test_what_was_accepted_during_an_outage_is_sent_soon_after_the_broker_is_back(
    fault_env, private_broker: RabbitNode, peers: Peers
):
    """With the default sweep interval (30 s, longer than the bound): only the sweep the
    runner fires when its consumer reconnects can deliver these within DELIVERY_BOUND."""
    env = {**fault_env, "SWEEP_INTERVAL": "30", "PENDING_GRACE_SECONDS": "5"}
    with running_service(env) as base:
        submit_many(
            base, mixed(2), peers
        )  # the consumer is connected: a later connect is a reconnect
        private_broker.stop_app()
        try:
            accepted = submit_many(base, mixed(10), peers)
        finally:
            private_broker.start_app()
        back = time.monotonic()
        assert {a.status for a in accepted} == {"pending"}
        ids = [a.id for a in accepted]
        peers.wait_each_once(ids, timeout=DELIVERY_BOUND)
        assert_all_sent(base, ids)
        print(f"after the outage: {len(ids)} pending sent {time.monotonic() - back:.1f} s later")


# -- a broker that drops packets or is frozen -----------------------------------------------


@contextmanager
def broker_fault(kind: str, node: RabbitNode, proxy: TcpProxy) -> Iterator[None]:
    if kind == "frozen":
        with node.frozen():
            yield
    else:
        proxy.blackhole()
        try:
            yield
        finally:
            proxy.heal()


def wave_of_sends(base: str, peers: Peers, callers: int) -> tuple[list[Accepted], list[float]]:
    """`callers` concurrent sends, while /healthz and /openapi.json are timed alongside."""
    with ThreadPoolExecutor(max_workers=callers) as pool:
        sends = [pool.submit(submit, base, kind, peers) for kind in mixed(callers)]
        time.sleep(0.3)  # the sends are now waiting on the broker
        fast = [timed_get(base, path) for path in ("/healthz", "/openapi.json") * 3]
        return [s.result() for s in sends], fast


def timed_json(base: str, path: str) -> tuple[int, dict, float]:
    started = time.monotonic()
    reply = requests.get(f"{base}{path}", headers=ADMIN_HEADERS, timeout=10)
    return reply.status_code, reply.json(), time.monotonic() - started


@pytest.mark.parametrize("fault", ["dropped_packets", "frozen"])
def test_unresponsive_broker_keeps_sends_bounded_and_delivers_after(
    fault, fault_env, private_broker: RabbitNode, proxy: TcpProxy, peers: Peers
):
    env = {**fault_env, "RABBITMQ_URL": proxy.url_for()}
    with running_service(env) as base:
        warm_up = submit_many(base, mixed(4), peers)
        peers.wait_each_once([a.id for a in warm_up], timeout=10)
        threads_before = thread_count(base.process.pid)
        accepted: list[Accepted] = []
        fast: list[float] = []
        with broker_fault(fault, private_broker, proxy):
            for _wave in range(3):  # 72 sends: a thread or connection per send would show
                wave, fast_in_wave = wave_of_sends(base, peers, callers=24)
                accepted += wave
                fast += fast_in_wave
            _, stats, stats_seconds = timed_json(base, "/stats")
            ready_status, ready, ready_seconds = timed_json(base, "/readyz")
            threads_during = thread_count(base.process.pid)
        healed = time.monotonic()

        ids = [a.id for a in accepted]
        peers.wait_each_once(ids, timeout=DELIVERY_BOUND - (time.monotonic() - healed))
        assert_all_sent(base, ids)
        delivered_after = time.monotonic() - healed
    slowest = max(a.seconds for a in accepted)
    print(
        f"{fault}: 72 sends answered within {slowest:.2f} s, /healthz and /openapi.json within "
        f"{max(fast):.2f} s, threads {threads_before} -> {threads_during}, delivered "
        f"{delivered_after:.1f} s after the heal"
    )
    assert slowest < ANSWER_BOUND + CLIENT_SLACK, f"a send took {slowest:.2f} s"
    assert {a.status for a in accepted} == {"pending"}, Counter(a.status for a in accepted)
    assert threads_during <= threads_before + 24, (threads_before, threads_during)
    assert stats_seconds < ANSWER_BOUND + CLIENT_SLACK, f"/stats took {stats_seconds:.2f} s"
    assert stats["queue"] is None, f"depth shown as known while stalled: {stats}"
    assert ready_seconds < ANSWER_BOUND + CLIENT_SLACK, f"/readyz took {ready_seconds:.2f} s"
    assert ready_status == 503 and not ready["checks"]["queue"]["ok"], ready
    assert max(fast) < FAST_BOUND, f"/healthz or /openapi.json took {max(fast):.2f} s: {fast}"


# -- a purged queue -------------------------------------------------------------------------


def test_purged_queue_is_republished_by_the_sweep(
    fault_env, fault_queues, private_broker: RabbitNode, smtp_server, fake_twilio, peers: Peers
):
    # Slow peers and a small prefetch keep most messages waiting in the queue, to be purged.
    smtp_server.delay_seconds = 0.3
    fake_twilio.mode, fake_twilio.slow_seconds = SLOW, 0.3
    env = {**fault_env, "PREFETCH_COUNT": "2", "DELIVERY_WORKERS": "2"}
    with running_service(env) as base:
        accepted = submit_many(base, mixed(40), peers)
        queue = fault_queues[0]
        wait_until(lambda: private_broker.ready_messages(queue) >= 10, 10, lambda: "no backlog")
        purged = private_broker.purge(queue)
        assert purged >= 10, purged
        ids = [a.id for a in accepted]
        peers.wait_each_once(ids, timeout=DELIVERY_BOUND + 10)  # ~12 s of slow sends
        assert_all_sent(base, ids)
        print(f"purge: {purged} messages dropped, all {len(ids)} notifications sent once")


# -- recovery of more rows than one sweep batch ---------------------------------------------


def test_one_sweep_recovers_more_rows_than_a_batch(
    fault_env, fault_queues, private_broker: RabbitNode, peers: Peers
):
    count, batch = 150, 20
    refused_broker = f"amqp://guest:guest@127.0.0.1:{unused_port()}/%2F"
    offline = {**fault_env, "RABBITMQ_URL": refused_broker, "SWEEP_BATCH_SIZE": str(batch)}
    with running_service(offline) as base:
        accepted = submit_many(base, mixed(count), peers)
    assert {a.status for a in accepted} == {"pending"}, Counter(a.status for a in accepted)
    assert max(a.seconds for a in accepted) < ANSWER_BOUND + CLIENT_SLACK

    time.sleep(1.0)  # past PENDING_GRACE_SECONDS
    online = {**fault_env, "SWEEP_BATCH_SIZE": str(batch), "SWEEP_INTERVAL": "60"}
    swept = run_command(online, "sweep", timeout=60)
    assert swept.returncode == 0, swept.stdout + swept.stderr
    published = private_broker.ready_messages(fault_queues[0])
    assert published >= count, f"one sweep published {published} of {count}: {swept.stdout}"

    with running_service(online) as base:
        ids = [a.id for a in accepted]
        peers.wait_each_once(ids)
        assert_all_sent(base, ids)
    print(f"one sweep (batch {batch}) published {published} of {count}: {swept.stdout.strip()}")


# -- a poison message -----------------------------------------------------------------------


@contextmanager
def unreadable_store(data_dir: Path) -> Iterator[None]:
    """Hide the notifications table: every read of it raises (no such table) until restored."""
    database = sqlite3.connect(data_dir / "notifications.db", timeout=10, isolation_level=None)
    database.execute("ALTER TABLE notifications RENAME TO notifications_hidden")
    try:
        yield
    finally:
        # The service may have created an empty table meanwhile: ours takes its place.
        database.execute("BEGIN IMMEDIATE")
        database.execute("DROP TABLE IF EXISTS notifications")
        database.execute("ALTER TABLE notifications_hidden RENAME TO notifications")
        database.execute("COMMIT")
        database.close()


def test_poison_messages_end_in_the_dead_letter_queue_with_a_reason(
    fault_env, fault_queues, private_broker: RabbitNode, peers: Peers
):
    from common.queue.base import encode_message

    queue, dead_letters = fault_queues
    with running_service(fault_env) as base:
        delivered = submit(base, "email", peers)
        peers.wait_each_once([delivered.id], timeout=10)

        # Malformed messages: not JSON, and JSON without a usable id.
        malformed = [b"{not json", b'{"notification_id": 42}']
        for body in malformed:
            private_broker.publish_raw(queue, body)
        # A well-formed message whose handling keeps raising: the store cannot be read.
        with unreadable_store(Path(fault_env["DATA_DIR"])):
            private_broker.publish_raw(queue, encode_message(delivered.id))
            wait_until(
                lambda: private_broker.ready_messages(dead_letters) >= 3,
                15,
                lambda: f"{private_broker.ready_messages(dead_letters)} of 3 dead-lettered",
            )
        state = private_broker.queue_state(queue)
        assert state is not None and (state.messages, state.unacknowledged) == (0, 0), state
        letters = private_broker.take_all(dead_letters)
        reasons = [dead_letter_reason(properties, body) for properties, body in letters]
        assert len(letters) == 3 and all(reasons), list(zip(letters, reasons, strict=True))

        # The service is still delivering, and the notification the poison named was not resent.
        after = submit(base, "sms", peers)
        peers.wait_each_once([delivered.id, after.id], timeout=10)
        print(f"poison: dead-lettered with reasons {reasons}")


# -- a dead-letter copy while the broker is down --------------------------------------------


def test_dead_letter_copy_is_published_after_the_broker_comes_back(
    fault_env, fault_queues, private_broker: RabbitNode, proxy: TcpProxy, smtp_server, peers
):
    smtp_server.mode, smtp_server.delay_seconds = REJECT_DATA, 2.0  # permanent, and slow
    env = {**fault_env, "RABBITMQ_URL": proxy.url_for()}
    with running_service(env) as base:
        doomed = submit(base, "email", peers)
        wait_for_status(base, doomed.id, "sending", timeout=10)
        proxy.blackhole()  # the broker goes away while the server is making up its mind
        try:
            wait_for_status(base, doomed.id, "failed_permanently", timeout=10)
            time.sleep(1.0)
        finally:
            proxy.heal()
        copies: list[bytes] = []

        def copy_arrived() -> bool:
            copies.extend(body for _, body in private_broker.take_all(fault_queues[1]))
            return any(doomed.id.encode() in body for body in copies)

        wait_until(copy_arrived, DELIVERY_BOUND, lambda: f"no dead-letter copy: {copies}")
