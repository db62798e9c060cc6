"""The inbox's live stream, GET /users/<id>/notifications/stream, through the ASGI app
functions-framework makes of functions/http_stream.py, with a real SQLite store and the real
in-process inbox feed: events and ids, resuming with Last-Event-ID, heartbeats, who may open
it, when it ends, CORS, and the logs."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import timedelta
from pathlib import Path

import pytest
from functions_framework.aio import create_asgi_app

from common.auth import stream_tickets, user_tokens
from common.config import load_settings
from common.errors import StoreUnavailable
from common.model import utcnow
from common.runtime import get_access, get_inbox_feed, set_service
from tests.support.auth import ADMIN_KEY

ROOT = Path(__file__).resolve().parent.parent
SECRET = "stream-test-secret-" + "x" * 32
ORIGIN = "https://app.example.com"

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def settings_for(settings_env):
    def make(**extra):
        env = {
            **settings_env,
            "AUTH_SECRET": SECRET,
            "STREAM_HEARTBEAT_SECONDS": "5",
            "INBOX_ALLOWED_ORIGINS": ORIGIN,
            **extra,
        }
        return load_settings(env)

    return make


@pytest.fixture
def service(settings_for):
    from tests.support.services import installed_service

    yield installed_service(settings_for())
    set_service(None)


@pytest.fixture(scope="module")
def app():
    return create_asgi_app("http_stream", str(ROOT / "functions" / "http_stream.py"))


def token_for(user: str, seconds: float = 600) -> str:
    token, _ = user_tokens.mint(user, SECRET, timedelta(seconds=seconds), utcnow())
    return token


def ticket_for(user: str, ends_in: float = 600, minted_ago: float = 0) -> str:
    now = utcnow() - timedelta(seconds=minted_ago)
    ticket, _ = stream_tickets.mint(user, SECRET, now, utcnow() + timedelta(seconds=ends_in))
    return ticket


# -- an ASGI client that reads the stream as it comes --------------------------------------------


class Call:
    """One request to the app; the answer's start, then its body chunk by chunk."""

    def __init__(self, app, path: str, headers: dict[str, str], method: str, query: str):
        self.messages: asyncio.Queue = asyncio.Queue()
        self.gone = asyncio.Event()
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "root_path": "",
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
            "client": ("127.0.0.1", 50000),
            "server": ("testserver", 80),
        }
        self.task = asyncio.create_task(app(scope, self._receive, self.messages.put))
        self.status = 0
        self.headers: dict[str, str] = {}
        self.text = ""
        self.ended = False

    async def _receive(self):
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def start(self) -> Call:
        message = await asyncio.wait_for(self.messages.get(), 10)
        assert message["type"] == "http.response.start"
        self.status = message["status"]
        self.headers = {k.decode().lower(): v.decode() for k, v in message["headers"]}
        return self

    async def read(self, timeout: float = 5) -> str:
        """The next piece of the body ('' once it ended)."""
        if self.ended:
            return ""
        message = await asyncio.wait_for(self.messages.get(), timeout)
        self.ended = not message.get("more_body", False)
        self.text += message["body"].decode()
        return message["body"].decode()

    async def events_until(self, done, timeout: float = 5) -> list[dict]:
        """Read until `done(events)` holds for the events parsed so far."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not done(parse(self.text)):
            if self.ended:
                raise AssertionError(f"the stream ended early:\n{self.text}")
            await self.read(max(0.01, deadline - loop.time()))
        return parse(self.text)

    async def json(self) -> dict:
        while not self.ended:
            await self.read()
        return json.loads(self.text)

    async def close(self) -> None:
        self.gone.set()
        await asyncio.wait_for(self.task, 10)


async def get(app, path, headers=None, method="GET", query="") -> Call:
    return await Call(app, path, headers or {}, method, query).start()


def parse(text: str) -> list[dict]:
    """The complete events in `text` (comments as {"comment": ...})."""
    events = []
    for block in text.split("\n\n")[:-1]:
        event: dict = {}
        for line in block.split("\n"):
            if line.startswith(":"):
                event["comment"] = line[1:].strip()
            else:
                name, _, value = line.partition(": ")
                event[name] = value
        if "data" in event:
            event["data"] = json.loads(event["data"])
        events.append(event)
    return events


def named(events, *names) -> list[dict]:
    return [e for e in events if e.get("event") in names]


def stream_path(user: str) -> str:
    return f"/users/{user}/notifications/stream"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def deliver(service, user: str, kind: str = "in_app", **fields):
    payload = {"user_id": user, "notification_type": kind, "message": "hi", **fields}
    if kind == "email":
        payload["email"] = "a@example.com"
    notification = service.submit(payload)
    service.deliver(notification.id)
    return service.get(notification.id)


def run(coroutine):
    return asyncio.run(coroutine)


# -- events ------------------------------------------------------------------------------------


def test_events_arrive_in_order_with_ids_and_only_the_users_in_app_ones(app, service):
    async def scenario():
        call = await get(app, stream_path("ann"), bearer(token_for("ann")))
        assert call.status == 200
        assert call.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert call.headers["cache-control"] == "no-store"
        assert call.headers["x-accel-buffering"] == "no"
        await call.events_until(lambda e: named(e, "counts.updated"))
        assert call.text.startswith("retry: 3000\n\n")
        first = named(parse(call.text), "counts.updated")[0]
        assert first["data"] == {"total": 0, "unread": 0, "unseen": 0}

        await asyncio.to_thread(deliver, service, "bob")  # someone else's
        await asyncio.to_thread(deliver, service, "ann", "email")  # not in the inbox
        sent = await asyncio.to_thread(deliver, service, "ann", title="Shipped")
        events = await call.events_until(lambda e: len(named(e, "counts.updated")) >= 2)
        created = named(events, "notification.created")
        assert [e["data"]["notification"]["id"] for e in created] == [sent.id]
        assert created[0]["data"]["notification"]["title"] == "Shipped"
        assert named(events, "counts.updated")[-1]["data"] == {"total": 1, "unread": 1, "unseen": 1}

        await asyncio.to_thread(service.mark, sent.id, "read")
        events = await call.events_until(lambda e: named(e, "notification.updated"))
        updated = named(events, "notification.updated")[0]["data"]["notification"]
        assert updated["id"] == sent.id and updated["read_at"]
        events = await call.events_until(lambda e: len(named(e, "counts.updated")) >= 3)
        assert named(events, "counts.updated")[-1]["data"]["unread"] == 0

        ids = [int(e["id"]) for e in events if "event" in e]
        assert all(isinstance(i, int) and i > 0 for i in ids)
        assert ids == sorted(ids)  # never down within a stream
        await call.close()

    run(scenario())


def test_resuming_with_last_event_id_replays_what_happened_while_away(app, service):
    async def scenario():
        token = token_for("ann")
        call = await get(app, stream_path("ann"), bearer(token))
        await call.events_until(lambda e: named(e, "counts.updated"))
        kept = await asyncio.to_thread(deliver, service, "ann")
        events = await call.events_until(lambda e: len(named(e, "counts.updated")) >= 2)
        last_id = events[-1]["id"]
        await call.close()

        # While disconnected: the notification is read, and another one arrives.
        await asyncio.sleep(0.01)
        await asyncio.to_thread(service.mark, kept.id, "read")
        await asyncio.sleep(0.01)
        fresh = await asyncio.to_thread(deliver, service, "ann")

        again = await get(app, stream_path("ann"), {**bearer(token), "Last-Event-ID": last_id})
        events = await again.events_until(lambda e: named(e, "counts.updated"))
        changes = named(events, "notification.created", "notification.updated")
        by_id = {e["data"]["notification"]["id"]: e for e in changes}
        assert by_id[kept.id]["event"] == "notification.updated"
        assert by_id[kept.id]["data"]["notification"]["read_at"]
        assert by_id[fresh.id]["event"] == "notification.created"
        assert named(events, "counts.updated")[0]["data"] == {"total": 2, "unread": 1, "unseen": 1}
        ids = [int(e["id"]) for e in events if "event" in e]
        assert ids == sorted(ids) and ids[0] >= int(last_id)
        await again.close()

        # The same through the query (a page reconnecting with a new ticket sets no header).
        query = f"ticket={ticket_for('ann')}&last_event_id={last_id}"
        third = await get(app, stream_path("ann"), query=query)
        events = await third.events_until(lambda e: named(e, "counts.updated"))
        replayed = {e["data"]["notification"]["id"] for e in named(events, "notification.updated")}
        assert kept.id in replayed
        await third.close()

    run(scenario())


def test_a_bulk_action_of_more_than_a_page_is_replayed_whole(app, service):
    async def scenario():
        ids = [(await asyncio.to_thread(deliver, service, "ann")).id for _ in range(3)]
        call = await get(app, stream_path("ann"), bearer(token_for("ann")))
        events = await call.events_until(lambda e: named(e, "counts.updated"))
        start_id = events[-1]["id"]
        await call.close()
        await asyncio.to_thread(service.mark_all, "ann", "read")
        headers = {**bearer(token_for("ann")), "Last-Event-ID": start_id}
        again = await get(app, stream_path("ann"), headers)
        events = await again.events_until(lambda e: named(e, "counts.updated"))
        replayed = [e["data"]["notification"]["id"] for e in named(events, "notification.updated")]
        assert sorted(replayed) == sorted(ids)
        await again.close()

    from common import inbox_stream

    original = inbox_stream.REPLAY_PAGE
    inbox_stream.REPLAY_PAGE = 2  # three changed at one time: more than a page
    try:
        run(scenario())
    finally:
        inbox_stream.REPLAY_PAGE = original


def test_a_read_all_reaches_an_open_stream_as_updates_and_fresh_counts(app, service):
    async def scenario():
        first = await asyncio.to_thread(deliver, service, "ann")
        second = await asyncio.to_thread(deliver, service, "ann")
        call = await get(app, stream_path("ann"), bearer(token_for("ann")))
        await call.events_until(lambda e: named(e, "counts.updated"))
        await asyncio.to_thread(service.mark_all, "ann", "read")  # a RESYNC on the feed
        events = await call.events_until(
            lambda e: named(e, "counts.updated")[-1]["data"]["unread"] == 0
        )
        updated = {e["data"]["notification"]["id"] for e in named(events, "notification.updated")}
        assert {first.id, second.id} <= updated
        await call.close()

    run(scenario())


def test_a_burst_of_changes_gets_fewer_counts_and_the_last_one_after_it(app, service):
    async def scenario():
        sent = [(await asyncio.to_thread(deliver, service, "ann")).id for _ in range(6)]
        call = await get(app, stream_path("ann"), bearer(token_for("ann")))
        await call.events_until(lambda e: named(e, "counts.updated"))

        def burst():
            for notification_id in sent:
                service.mark(notification_id, "read")

        await asyncio.to_thread(burst)
        events = await call.events_until(
            lambda e: (
                len(named(e, "notification.updated")) == 6
                and e[-1].get("event") == "counts.updated"
            )
        )
        after_open = events[events.index(named(events, "notification.updated")[0]) :]
        counts = named(after_open, "counts.updated")
        assert len(counts) < 6
        assert counts[-1]["data"]["unread"] == 0
        await call.close()

    run(scenario())


def test_a_heartbeat_comes_after_the_quiet_interval(app, settings_for):
    from tests.support.services import installed_service

    installed_service(settings_for(STREAM_HEARTBEAT_SECONDS="0.2"))
    try:

        async def scenario():
            call = await get(app, stream_path("ann"), bearer(token_for("ann")))
            await call.events_until(lambda e: any(x.get("comment") == "heartbeat" for x in e))
            await call.close()

        run(scenario())
    finally:
        set_service(None)


def test_hundreds_of_open_streams_hold_no_thread_each(app, service):
    import threading

    from common.inbox_stream_open import STORE_WORKERS

    async def scenario():
        threads_before = threading.active_count()
        token = token_for("ann")
        calls = await asyncio.gather(
            *(get(app, stream_path("ann"), bearer(token)) for _ in range(300))
        )
        for call in calls:
            await call.events_until(lambda e: named(e, "counts.updated"))
        assert threading.active_count() - threads_before <= STORE_WORKERS
        await asyncio.to_thread(deliver, service, "ann")
        for call in calls:
            await call.events_until(lambda e: named(e, "notification.created"))
        assert get_inbox_feed().hub.count() == 300
        await asyncio.gather(*(call.close() for call in calls))
        assert get_inbox_feed().hub.count() == 0

    run(scenario())


# -- who may open it ---------------------------------------------------------------------------


def test_who_may_open_a_stream(app, service):
    async def status(path=None, headers=None, query="") -> tuple[int, dict]:
        call = await get(app, path or stream_path("ann"), headers, query=query)
        if call.status == 200:
            await call.close()
            return 200, {}
        return call.status, await call.json()

    async def scenario():
        code, body = await status()
        assert code == 401 and "ticket" in body["error"]
        assert (await status(headers=bearer(token_for("bob"))))[0] == 403
        assert (await status(headers=bearer("not-a-credential")))[0] == 401
        assert (await status(headers=bearer(ADMIN_KEY)))[0] == 200
        assert (await status(headers=bearer(token_for("ann"))))[0] == 200
        assert (await status(query=f"ticket={ticket_for('ann')}"))[0] == 200
        # A ticket is not a user token, nor a user token a ticket.
        assert (await status(headers=bearer(ticket_for("ann"))))[0] == 401
        assert (await status(query=f"ticket={token_for('ann')}"))[0] == 401
        expired = ticket_for("ann", minted_ago=120)
        code, body = await status(query=f"ticket={expired}")
        assert code == 401 and "expired" in body["error"]
        assert (await status(query=f"ticket={ticket_for('bob')}"))[0] == 403
        assert (await status(query=f"ticket={ticket_for('ann', ends_in=-1)}"))[0] == 401
        forged = stream_tickets.mint("ann", "another-secret-" + "y" * 32, utcnow(), utcnow())[0]
        assert (await status(query=f"ticket={forged}"))[0] == 401
        for bad in ("abc", "12.5", "-1", "1e9", "9" * 40):
            headers = {**bearer(token_for("ann")), "Last-Event-ID": bad}
            code, body = await status(headers=headers)
            assert code == 400 and "last_event_id" in body["fields"], bad
        code, _ = await status(query=f"ticket={ticket_for('ann')}&last_event_id=x")
        assert code == 400
        assert (await status(path=stream_path("bad%20id"), headers=bearer(ADMIN_KEY)))[0] == 400

    run(scenario())


def test_scopes_of_api_keys(app, service):
    access = get_access()
    _, reader = access.create_key("reader", ["read"])
    _, sender = access.create_key("sender", ["send"])

    async def scenario():
        ok = await get(app, stream_path("ann"), bearer(reader))
        assert ok.status == 200
        await ok.close()
        refused = await get(app, stream_path("ann"), bearer(sender))
        assert refused.status == 403 and "read" in (await refused.json())["error"]

    run(scenario())


def test_other_methods_and_paths(app, service):
    async def scenario():
        post = await get(app, stream_path("ann"), bearer(ADMIN_KEY), method="POST")
        assert post.status == 405 and post.headers["allow"] == "GET, OPTIONS"
        assert (await post.json())["error"]
        other = await get(app, "/users/ann/notifications", bearer(ADMIN_KEY))
        assert other.status == 404 and (await other.json())["error"]

    run(scenario())


# -- when it ends --------------------------------------------------------------------------------


def test_the_stream_ends_when_its_credential_expires(app, service, caplog):
    caplog.set_level(logging.INFO, logger="notifications.stream")

    async def scenario():
        call = await get(app, stream_path("ann"), bearer(token_for("ann", seconds=2)))
        assert call.status == 200
        loop = asyncio.get_running_loop()
        started = loop.time()
        while not call.ended:
            await call.read(timeout=6)
        assert 1 <= loop.time() - started < 5
        ticket = ticket_for("ann", ends_in=1.5)
        by_ticket = await get(app, stream_path("ann"), query=f"ticket={ticket}")
        while not by_ticket.ended:
            await by_ticket.read(timeout=6)
        await call.close()
        await by_ticket.close()
        return ticket

    ticket = run(scenario())
    assert "user=ann event=stream_opened" in caplog.text
    assert "event=stream_closed reason=credential_expired" in caplog.text
    assert ticket not in caplog.text and SECRET not in caplog.text


def test_the_stream_ends_after_stream_max_seconds(app, settings_for, caplog):
    from tests.support.services import installed_service

    caplog.set_level(logging.INFO, logger="notifications.stream")
    installed_service(settings_for(STREAM_MAX_SECONDS="1"))
    try:

        async def scenario():
            call = await get(app, stream_path("ann"), bearer(token_for("ann")))
            while not call.ended:
                await call.read(timeout=5)
            await call.close()

        run(scenario())
    finally:
        set_service(None)
    assert "user=ann event=stream_closed reason=max_age" in caplog.text


def test_the_stream_ends_at_once_when_the_process_stops(app, service, caplog):
    caplog.set_level(logging.INFO, logger="notifications.stream")

    async def scenario():
        call = await get(app, stream_path("ann"), bearer(token_for("ann")))
        await call.events_until(lambda e: named(e, "counts.updated"))
        get_inbox_feed().close()
        while not call.ended:
            await call.read(timeout=2)
        await call.close()

    run(scenario())
    assert "event=stream_closed reason=process_stopping" in caplog.text


def test_a_store_outage_is_a_503_at_open_and_ends_a_live_stream(app, service, monkeypatch):
    def outage(*_args, **_kwargs):
        raise StoreUnavailable("the store is down")

    async def scenario():
        monkeypatch.setattr(service.store, "inbox_counts", outage)
        call = await get(app, stream_path("ann"), bearer(token_for("ann")))
        assert call.status == 503 and "store" in (await call.json())["error"]
        monkeypatch.undo()

        live = await get(app, stream_path("ann"), bearer(token_for("ann")))
        await live.events_until(lambda e: named(e, "counts.updated"))
        monkeypatch.setattr(service.store, "inbox_counts", outage)
        await asyncio.to_thread(deliver, service, "ann")
        while not live.ended:
            await live.read(timeout=5)
        assert named(parse(live.text), "notification.created")
        await live.close()

    run(scenario())


def test_a_client_that_goes_away_closes_its_subscription(app, service, caplog):
    caplog.set_level(logging.INFO, logger="notifications.stream")

    async def scenario():
        call = await get(app, stream_path("ann"), bearer(token_for("ann")))
        await call.events_until(lambda e: named(e, "counts.updated"))
        assert get_inbox_feed().hub.count() == 1
        await call.close()
        assert get_inbox_feed().hub.count() == 0

    run(scenario())
    assert "event=stream_closed reason=client_gone" in caplog.text


# -- CORS ----------------------------------------------------------------------------------------


def test_cors_headers_for_an_allowed_origin_only(app, service):
    async def scenario():
        allowed = await get(app, stream_path("ann"), {**bearer(token_for("ann")), "Origin": ORIGIN})
        assert allowed.headers["access-control-allow-origin"] == ORIGIN
        await allowed.close()
        other = {**bearer(token_for("ann")), "Origin": "https://evil.example"}
        refused = await get(app, stream_path("ann"), other)
        assert "access-control-allow-origin" not in refused.headers
        await refused.close()
        denied = await get(app, stream_path("ann"), {"Origin": ORIGIN})
        assert denied.status == 401  # a page can read why it was refused
        assert denied.headers["access-control-allow-origin"] == ORIGIN
        assert denied.headers["www-authenticate"].startswith("Bearer")
        preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "GET"}
        answer = await get(app, stream_path("ann"), preflight, method="OPTIONS")
        assert answer.status == 204
        assert "Last-Event-ID" in answer.headers["access-control-allow-headers"]
        preflight["Origin"] = "https://evil.example"
        answer = await get(app, stream_path("ann"), preflight, method="OPTIONS")
        assert "access-control-allow-origin" not in answer.headers

    run(scenario())
