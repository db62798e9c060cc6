"""The inbox stream across processes: two real runners sharing one DATA_DIR and one RabbitMQ
broker. A change made through one runner reaches a stream held by the other (through the
INBOX_EXCHANGE fanout exchange), once per change.
"""

from __future__ import annotations

import uuid

import pytest
import requests

from tests.support.auth import ADMIN_HEADERS
from tests.support.runner import running_service
from tests.support.sse import EventStream

pytestmark = pytest.mark.timeout(120)

TIMEOUT = 10.0


@pytest.fixture(name="two_runners")
def two_runners_fixture(tmp_path, rabbit_url, queue_names):
    env = {
        "DATA_DIR": str(tmp_path / "data"),
        "RABBITMQ_URL": rabbit_url,
        "QUEUE_NAME": queue_names[0],
        "DLQ_NAME": queue_names[1],
        "INBOX_EXCHANGE": f"test_inbox_{uuid.uuid4().hex[:8]}",
        "SWEEP_INTERVAL": "0.5",
    }
    with running_service(env) as first, running_service(env) as second:
        yield first, second


def user_token(base: str, user_id: str) -> str:
    reply = requests.post(f"{base}/users/{user_id}/token", headers=ADMIN_HEADERS, timeout=TIMEOUT)
    assert reply.status_code == 201, reply.text
    return reply.json()["token"]


def send_in_app(base: str, user_id: str, message: str) -> str:
    reply = requests.post(
        f"{base}/notifications",
        json={"user_id": user_id, "notification_type": "in_app", "message": message},
        headers=ADMIN_HEADERS,
        timeout=TIMEOUT,
    )
    assert reply.status_code == 201, reply.text
    return reply.json()["id"]


def about(notification_id: str, kind: str):
    def match(event) -> bool:
        return event.type == kind and event.json()["notification"]["id"] == notification_id

    return match


def test_a_change_made_in_one_runner_reaches_a_stream_held_by_the_other(two_runners):
    first, second = two_runners
    user = f"u-{uuid.uuid4().hex[:8]}"
    token = user_token(first, user)
    url = f"{second}/users/{user}/notifications/stream"
    with EventStream(url, token) as stream:
        assert stream.response.status_code == 200, stream.response.text
        opening = stream.wait_for(lambda e: e.type == "counts.updated")
        assert opening.json() == {"total": 0, "unread": 0, "unseen": 0}

        # Sent through the first runner; whichever runner's consumer delivers it, the stream
        # on the second learns of it.
        notification_id = send_in_app(first, user, "crossing over")
        created = stream.wait_for(about(notification_id, "notification.created"))
        assert created.json()["notification"]["message"] == "crossing over"
        stream.wait_for(lambda e: e.type == "counts.updated" and e.json()["unread"] == 1)

        # Read through the first runner: that process made the change, so only the exchange
        # can carry it to the second.
        reply = requests.post(
            f"{first}/notifications/{notification_id}/read",
            headers={"Authorization": f"Bearer {token}"},
            timeout=TIMEOUT,
        )
        assert reply.status_code == 200, reply.text
        updated = stream.wait_for(
            lambda e: (
                about(notification_id, "notification.updated")(e)
                and e.json()["notification"]["read_at"] is not None
            )
        )
        assert int(updated.id) >= int(created.id)
        stream.wait_for(lambda e: e.type == "counts.updated" and e.json()["unread"] == 0)

        # Each change arrived once: one created, one read update for this notification.
        created_events = [e for e in stream.of_type("notification.created")]
        assert [e.json()["notification"]["id"] for e in created_events] == [notification_id]
        reads = [
            e
            for e in stream.of_type("notification.updated")
            if e.json()["notification"]["read_at"] is not None
        ]
        assert len(reads) == 1, [(e.id, e.data) for e in reads]


def test_a_stream_resumed_on_the_other_runner_misses_nothing(two_runners):
    first, second = two_runners
    user = f"u-{uuid.uuid4().hex[:8]}"
    token = user_token(first, user)
    with EventStream(f"{first}/users/{user}/notifications/stream", token) as stream:
        kept = send_in_app(first, user, "before the drop")
        last = stream.wait_for(about(kept, "notification.created"))
        stream.wait_for(lambda e: e.type == "counts.updated" and e.json()["unread"] == 1)
        last_id = max(int(e.id) for e in stream.events if e.id)
    assert int(last.id) <= last_id

    # While no stream is open: two more arrive and the first is archived.
    missed = [send_in_app(second, user, f"while away {n}") for n in range(2)]
    reply = requests.post(
        f"{second}/notifications/{kept}/archive", headers=ADMIN_HEADERS, timeout=TIMEOUT
    )
    assert reply.status_code == 200, reply.text
    for notification_id in missed:  # delivered before we resume
        shown = requests.get(
            f"{first}/notifications/{notification_id}", headers=ADMIN_HEADERS, timeout=TIMEOUT
        )
        assert shown.status_code == 200

    url = f"{second}/users/{user}/notifications/stream"
    with EventStream(url, token, last_event_id=str(last_id)) as resumed:
        for notification_id in missed:
            resumed.wait_for(
                lambda e, n=notification_id: (
                    e.type in ("notification.created", "notification.updated")
                    and e.json()["notification"]["id"] == n
                )
            )
        archived = resumed.wait_for(
            lambda e: (
                about(kept, "notification.updated")(e)
                and e.json()["notification"]["archived_at"] is not None
            )
        )
        assert archived.id
        resumed.wait_for(
            lambda e: (
                e.type == "counts.updated" and e.json() == {"total": 2, "unread": 2, "unseen": 2}
            )
        )
