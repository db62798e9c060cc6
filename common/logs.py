"""One log line per event, `key=value` pairs after the message, the notification id first."""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def configure_logging(level: str = "INFO") -> None:
    """Idempotent: the runner and every stand-alone function call it once at start."""
    root = logging.getLogger()
    if not any(getattr(h, "_notification_service", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT))
        handler._notification_service = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
    # pika logs each failed connection attempt as a multi-line traceback; our adapters catch
    # every one and log it as one line (event=consumer_disconnected, event=publish_failed).
    logging.getLogger("pika").setLevel(logging.CRITICAL)
