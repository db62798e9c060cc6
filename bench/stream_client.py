"""The client side of bench/streams.py: per-user tokens, many open inbox streams held by one
asyncio client (one aiohttp connection and one task per stream, no thread, so that the
client's own share of a 2-core machine stays small), and in-app sends at a steady rate.
Replies and events are timed on time.perf_counter when they are read.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime

import aiohttp

FIRST_EVENT_TIMEOUT = 60.0  # for every stream to get its opening counts.updated
OPENING_AT_ONCE = 64  # streams being opened at once (a listen backlog is finite)
STREAM = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60)  # heartbeat: 15 s


class StreamNotServed(RuntimeError):
    """The runner does not serve the live stream (or not as the contract says)."""


def stream_path(user: str) -> str:
    return f"/users/{user}/notifications/stream"


async def _events(content: aiohttp.StreamReader, counter: dict):
    """(event type, data, when read) per SSE event; comments (the heartbeat) only counted."""
    kind, data = "message", []
    async for raw in content:
        line = raw.decode().rstrip("\r\n")
        if not line:
            if data:
                yield kind, "\n".join(data), time.perf_counter()
            kind, data = "message", []
        elif line.startswith(":"):
            counter["comments"] += 1
        else:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "event":
                kind = value
            elif name == "data":
                data.append(value)


async def _check_reply(reply: aiohttp.ClientResponse, user: str) -> None:
    kind = reply.headers.get("Content-Type", "")
    if reply.status != 200 or not kind.startswith("text/event-stream"):
        body = (await reply.text())[:160]
        reply.release()
        raise StreamNotServed(
            f"the live stream did not open: GET {stream_path(user)} answered {reply.status} "
            f"({kind or 'no content type'}) {body!r}"
        )


class HeldStreams:
    """One open stream per user, one task each; `arrived` maps a notification's id to when its
    notification.created event was read (`updated`: the same for notification.updated, to tell
    why one never arrived as created). Use `async with`: every stream is closed on leaving."""

    def __init__(self, base: str, tokens: dict[str, str]):
        self.base = base
        self.tokens = tokens
        self.arrived: dict[str, float] = {}
        self.updated: dict[str, float] = {}
        # Wall-clock ms from the notification's own created_at (the runner's accepted stamp)
        # and sent_at (delivered) to the event read: the runner's clock is this machine's.
        self.after_created_ms: dict[str, float] = {}
        self.after_sent_ms: dict[str, float] = {}
        self.counter = {"comments": 0, "ended": 0}
        self.failures: list[str] = []
        self.first_error: BaseException | None = None
        self.session: aiohttp.ClientSession | None = None
        self.tasks: list[asyncio.Task] = []

    async def __aenter__(self) -> HeldStreams:
        connector = aiohttp.TCPConnector(limit=0)
        self.session = aiohttp.ClientSession(connector=connector, timeout=STREAM)
        return self

    async def __aexit__(self, *exc) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.session.close()

    async def open(self) -> tuple[int, float]:
        """Open every stream; (how many got their opening counts.updated, seconds taken)."""
        gate = asyncio.Semaphore(OPENING_AT_ONCE)
        started = time.perf_counter()
        firsts = []
        for user, token in self.tokens.items():
            first = asyncio.get_running_loop().create_future()
            firsts.append(first)
            self.tasks.append(asyncio.create_task(self._hold(user, token, gate, first)))
        await asyncio.wait(firsts, timeout=FIRST_EVENT_TIMEOUT)
        for first in firsts:
            if not first.done():
                self.failures.append(f"no counts.updated within {FIRST_EVENT_TIMEOUT:g} s")
            elif first.exception():
                self.first_error = self.first_error or first.exception()
                self.failures.append(repr(first.exception()))
        held = sum(1 for first in firsts if first.done() and not first.exception())
        return held, time.perf_counter() - started

    async def wait_for(self, accepted_at: dict[str, float], limit: float) -> None:
        """Until each id's notification.created was read, or `limit` seconds after the last
        was accepted."""
        deadline = max(accepted_at.values(), default=time.perf_counter()) + limit
        while time.perf_counter() < deadline and not accepted_at.keys() <= self.arrived.keys():
            await asyncio.sleep(0.05)

    def _created(self, notification: dict, at: float) -> None:
        if notification["id"] in self.arrived:
            return
        self.arrived[notification["id"]] = at
        now = time.time()
        for stamp, into in (("created_at", self.after_created_ms), ("sent_at", self.after_sent_ms)):
            if notification.get(stamp):
                moment = datetime.fromisoformat(notification[stamp]).timestamp()
                into[notification["id"]] = (now - moment) * 1000

    async def _hold(self, user: str, token: str, gate, first: asyncio.Future) -> None:
        headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
        try:
            async with gate:
                reply = await self.session.get(self.base + stream_path(user), headers=headers)
                await _check_reply(reply, user)
                events = _events(reply.content, self.counter)
                async for kind, _, _ in events:
                    if kind == "counts.updated":
                        first.set_result(None)
                        break
            async for kind, data, at in events:
                if kind == "notification.created":
                    self._created(json.loads(data)["notification"], at)
                elif kind == "notification.updated":
                    self.updated.setdefault(json.loads(data)["notification"]["id"], at)
            raise StreamNotServed(f"the server ended the stream of {user}")
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 - told by open(), or counted as ended
            if not first.done():
                first.set_exception(error)
            else:
                self.counter["ended"] += 1
                self.failures.append(repr(error))


async def mint_tokens(session: aiohttp.ClientSession, base: str, users: list[str]) -> dict:
    """A per-user token for each user (POST /users/<id>/token, the session's admin key)."""
    gate = asyncio.Semaphore(16)  # one per user, a few at a time

    async def mint(user: str) -> str:
        async with gate, session.post(f"{base}/users/{user}/token") as reply:
            if reply.status != 201:
                raise RuntimeError(f"POST /users/{user}/token answered {reply.status}")
            return (await reply.json())["token"]

    return dict(zip(users, await asyncio.gather(*(mint(u) for u in users)), strict=True))


async def send_in_app(
    session, url: str, users: list[str], per_second: float, seconds: float
) -> dict:
    """In-app sends on a fixed schedule (open loop: a slow reply delays no later send), round
    robin over the users; when each was sent and when its 201 was read, by notification id."""
    sent_at: dict[str, float] = {}
    accepted_at: dict[str, float] = {}
    refused: list[str] = []

    async def one(user: str) -> None:
        started = time.perf_counter()
        body = {"user_id": user, "notification_type": "in_app", "message": "live?"}
        try:
            async with session.post(url, json=body) as reply:
                data = await reply.json(content_type=None)
                if reply.status != 201:
                    refused.append(f"{reply.status}: {str(data)[:120]}")
                    return
                accepted_at[data["id"]] = time.perf_counter()
                sent_at[data["id"]] = started
        except (TimeoutError, aiohttp.ClientError) as error:
            refused.append(repr(error))

    tasks = []
    start, cpu = time.perf_counter(), time.process_time()
    for i in range(int(per_second * seconds)):
        delay = start + i / per_second - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(users[i % len(users)])))
    await asyncio.gather(*tasks)
    return {
        "sent_at": sent_at,
        "accepted_at": accepted_at,
        "refused": refused,
        "seconds": time.perf_counter() - start,
        "client_cpu_seconds": time.process_time() - cpu,
    }
