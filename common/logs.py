"""One log line per event, `key=value` pairs after the message, the notification id first."""

from __future__ import annotations

import logging
import sys

from common.tracing import TraceContextFilter

# `trace` is " trace_id=<32 hex>" while a traced request or delivery runs, else empty.
FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s%(trace)s"
# Everything str.splitlines() breaks a line at, written as its escape.
LINE_BREAKS = {code: f"\\x{code:02x}" for code in (0x0B, 0x0C, 0x1C, 0x1D, 0x1E, 0x85)} | {
    ord("\r"): "\\r",
    ord("\n"): "\\n",
    0x2028: "\\u2028",
    0x2029: "\\u2029",
}


class OneLineFormatter(logging.Formatter):
    """Escapes line breaks in the message, so that no logged value (a provider's error, an
    idempotency key, a path) can start a line that looks like a log line of its own. A
    traceback, appended after the message, keeps its lines."""

    def __init__(self, fmt=None, datefmt=None, style="%", validate=True, *, defaults=None):
        # A record that met no TraceContextFilter has no `trace`: it formats without one.
        defaults = {"trace": "", **(defaults or {})}
        super().__init__(fmt, datefmt, style, validate, defaults=defaults)

    def formatMessage(self, record: logging.LogRecord) -> str:
        return super().formatMessage(record).translate(LINE_BREAKS)


def configure_logging(level: str = "INFO") -> None:
    """Idempotent: the runner and every stand-alone function call it once at start."""
    root = logging.getLogger()
    if not any(getattr(h, "_notification_service", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(OneLineFormatter(FORMAT))
        handler.addFilter(TraceContextFilter())
        handler._notification_service = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
    # pika logs each failed connection attempt as a multi-line traceback; our adapters catch
    # every one and log it as one line (event=consumer_disconnected, event=publish_failed).
    logging.getLogger("pika").setLevel(logging.CRITICAL)
