"""The W3C trace context of the request a notification came from, so that its log lines (from
acceptance to delivery, across the queue) can be followed by one `trace_id=`.

Only the context a caller sent is carried: this service starts no traces of its own.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

# version-traceid-parentid-flags, lowercase hex (https://www.w3.org/TR/trace-context/).
TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
HEADER = "traceparent"  # the HTTP header, the AMQP header and the CloudEvent extension

_current: ContextVar[str | None] = ContextVar("traceparent", default=None)


def parse_traceparent(value: object) -> str | None:
    """`value` if it is a valid traceparent, else None (an invalid one is ignored, as the
    specification asks, never an error)."""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if not isinstance(value, str):
        return None
    value = value.strip()
    match = TRACEPARENT.fullmatch(value)
    if match is None:
        return None
    version, trace_id, parent_id, _flags = match.groups()
    # Version ff is forbidden; all-zero ids are invalid. A later version may only add fields
    # after these four, which this strict match refuses: we then carry nothing.
    if version == "ff" or set(trace_id) == {"0"} or set(parent_id) == {"0"}:
        return None
    return value


def trace_id_of(traceparent: str) -> str:
    return traceparent[3:35]


def current_traceparent() -> str | None:
    """The traceparent of the request or delivery running in this context, if any."""
    return _current.get()


@contextmanager
def traced(traceparent: object) -> Iterator[str | None]:
    """Run the block in this trace context (None or invalid: in none, so that nothing leaks in
    from an earlier request on the same thread)."""
    valid = parse_traceparent(traceparent)
    token = _current.set(valid)
    try:
        yield valid
    finally:
        _current.reset(token)


class TraceContextFilter(logging.Filter):
    """Adds `trace_id` (or None) and `trace` (" trace_id=<32 hex>" or "") to each record, for
    the log format's `%(trace)s`. Put on a handler, it sees the records of every logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        traceparent = _current.get()
        record.trace_id = trace_id_of(traceparent) if traceparent else None
        record.trace = f" trace_id={record.trace_id}" if traceparent else ""
        return True
