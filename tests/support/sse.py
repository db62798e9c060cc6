"""A Server-Sent Events reader for tests: opens a stream with `requests` and collects its
events on a thread, so a test can wait for the one it expects with a bound.

    with EventStream(f"{base}/users/u1/notifications/stream", token) as stream:
        event = stream.wait_for(lambda e: e.type == "counts.updated")
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests


@dataclass
class Event:
    type: str
    id: str | None
    data: str
    received_at: float = field(default_factory=time.monotonic)

    def json(self) -> Any:
        return json.loads(self.data)


class EventStream:
    """The stream's events as they arrive (`events`), parsed per the SSE format; comments (the
    heartbeat) are counted in `comments`."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        last_event_id: str | None = None,
        params: dict[str, str] | None = None,
    ):
        headers = {"Accept": "text/event-stream"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        self.response = requests.get(url, headers=headers, params=params, stream=True, timeout=30)
        self.events: list[Event] = []
        self.comments = 0
        self.ended = threading.Event()
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, name="sse-reader", daemon=True)
        if self.response.status_code == 200:
            self._thread.start()
        else:
            self.ended.set()

    def _read(self) -> None:
        kind, ident, data = "message", None, []
        try:
            for raw in self.response.iter_lines(decode_unicode=True):
                line = raw if raw is not None else ""
                if line == "":
                    if data:
                        self._add(Event(kind, ident, "\n".join(data)))
                    kind, data = "message", []
                elif line.startswith(":"):
                    self.comments += 1
                else:
                    name, _, value = line.partition(":")
                    value = value[1:] if value.startswith(" ") else value
                    if name == "event":
                        kind = value
                    elif name == "id":
                        ident = value
                    elif name == "data":
                        data.append(value)
        except (requests.RequestException, AttributeError, ValueError):
            pass  # closed by the test or the server
        finally:
            self.ended.set()
            with self._changed:
                self._changed.notify_all()

    def _add(self, event: Event) -> None:
        with self._changed:
            self.events.append(event)
            self._changed.notify_all()

    def wait_for(self, match: Callable[[Event], bool], timeout: float = 10.0) -> Event:
        """The first event (received so far or later) that `match`es; fails after `timeout`."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for event in self.events:
                    if match(event):
                        return event
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.ended.is_set() and not self._thread.is_alive()):
                    seen = [(e.type, e.id) for e in self.events]
                    raise AssertionError(f"no matching event within {timeout} s; got {seen}")
                self._changed.wait(min(remaining, 0.2))

    def of_type(self, kind: str) -> list[Event]:
        with self._changed:
            return [event for event in self.events if event.type == kind]

    def close(self) -> None:
        self.response.close()
        self._thread.join(5)

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()
