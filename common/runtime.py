"""Process-wide clients, created lazily on first use and reused by every later invocation.

This is the FaaS cold-start rule: one store client, one broker connection and one set of
channels per process, never one per request or per message.
"""

from __future__ import annotations

import logging
import sys
import threading

from common.channels import make_channels
from common.config import get_settings
from common.errors import ConfigError, Unavailable
from common.logs import configure_logging
from common.queue import make_queue
from common.service import NotificationService
from common.store import make_store
from common.store.base import STORE_OUTAGES

log = logging.getLogger("notifications")

_lock = threading.Lock()
_service: NotificationService | None = None


def get_service() -> NotificationService:
    global _service
    if _service is None:
        with _lock:
            if _service is None:
                settings = get_settings()
                configure_logging(settings.log_level)
                channels = make_channels(settings)
                for channel in channels.values():
                    log.info(
                        "event=channel_ready type=%s %s",
                        channel.notification_type,
                        channel.description,
                    )
                try:
                    store = make_store(settings)
                except STORE_OUTAGES as error:
                    # Not cached: the next invocation tries again, as a cold start would.
                    raise Unavailable(f"cannot reach the notification store: {error}") from error
                _service = NotificationService(settings, store, make_queue(settings), channels)
    return _service


def set_service(service: NotificationService | None) -> None:
    """Install a service built elsewhere (tests), or forget the current one."""
    global _service
    with _lock:
        _service = service


def require_valid_settings() -> None:
    """Stop a process at start with one readable message when the configuration is wrong."""
    try:
        settings = get_settings()
    except ConfigError as error:
        message = "configuration error:\n" + "\n".join(f"  - {p}" for p in error.problems)
        print(message, file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(settings.log_level)
