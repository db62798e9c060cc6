"""Process-wide clients, created lazily on first use and reused by every later invocation.

This is the FaaS cold-start rule: one store client, one broker connection and one set of
channels per process, never one per request or per message.
"""

from __future__ import annotations

import logging
import sys
import threading
from dataclasses import dataclass

from common.activity import ActivityRecorder
from common.activity_store import make_activity_store
from common.admission import Admission
from common.auth.access import Access
from common.auth.key_store import MongoKeyStore, SqliteKeyStore
from common.channels import make_channels
from common.config import Settings, get_settings
from common.errors import ConfigError, Unavailable
from common.inbox_feed import InboxFeed, InboxFeedListener, NoInboxFeed, make_inbox_feed
from common.limits import make_limit_store
from common.limits.limiter import Limiter
from common.logs import configure_logging
from common.metrics import MetricsListener
from common.model import utcnow
from common.notification_events import EventBus
from common.preferences.store import make_preference_store
from common.queue import make_queue
from common.service import NotificationService
from common.store import make_store
from common.suppressions.store import make_suppression_store
from common.templates.catalog import TemplateCatalog
from common.templates.store import make_template_store
from common.webhooks.service import Webhooks
from common.webhooks.store import make_webhook_store

log = logging.getLogger("notifications")

_lock = threading.Lock()
_service: NotificationService | None = None
_access: Access | None = None
# Its own lock: get_service holds _lock while it makes the listeners, which take the feed.
_feed_lock = threading.Lock()
_inbox_feed: InboxFeed | None = None
# True where something in this process delivers from the in-process queue (the local runner,
# or a test that wired its own service): only then may a function accept notifications
# without RABBITMQ_URL.
_in_process_delivery = False


@dataclass
class ConsumerState:
    """What the runner's consumer is doing, for /readyz; None where no consumer runs here."""

    running: bool = False
    restarts: int = 0
    last_error: str | None = None


consumer_state: ConsumerState | None = None


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
                except Unavailable as error:
                    # Not cached: the next invocation tries again, as a cold start would.
                    raise Unavailable(f"cannot reach the notification store: {error}") from error
                admission = Admission(settings, get_limiter(settings))
                templates = TemplateCatalog(make_template_store(settings), utcnow)
                listeners = make_listeners(settings)
                _service = NotificationService(
                    settings,
                    store,
                    make_queue(settings),
                    channels,
                    admission=admission,
                    templates=templates,
                    preferences=make_preference_store(settings),
                    suppressions=make_suppression_store(settings),
                    **listeners,
                )
    return _service


def make_listeners(settings: Settings) -> dict:
    """What is told of each notification's events: the outbound webhooks, the metrics, the
    dashboard's activity and the inbox's live streams (keyword arguments for
    NotificationService)."""
    webhooks = Webhooks(settings, make_webhook_store(settings), utcnow)
    activity = ActivityRecorder(make_activity_store(settings))
    inbox_feed = get_inbox_feed(settings)
    events = EventBus([MetricsListener(), webhooks, activity, InboxFeedListener(inbox_feed)])
    return {
        "events": events,
        "webhooks": webhooks,
        "activity": activity,
        "inbox_feed": inbox_feed,
    }


def get_inbox_feed(settings: Settings | None = None) -> InboxFeed:
    """The process's inbox feed, made on first use (from `settings`, else the current ones):
    the service publishes to it and the inbox streams subscribe to it."""
    global _inbox_feed
    if _inbox_feed is None:
        with _feed_lock:
            if _inbox_feed is None:
                _inbox_feed = make_inbox_feed(settings or current_settings())
    return _inbox_feed


def close_inbox_feed() -> None:
    """End the process's open streams and release the feed's connections (the runner, when
    it stops; `set_service(None)`); the next get_inbox_feed makes a new one."""
    global _inbox_feed
    with _feed_lock:
        feed, _inbox_feed = _inbox_feed, None
    if feed is not None:
        feed.close()


def get_access() -> Access:
    """The process's credential checks and limits, made on first use like the service."""
    global _access
    if _access is None:
        with _lock:
            if _access is None:
                _access = make_access(current_settings())
    return _access


_limiters: dict = {}


def get_limiter(settings: Settings) -> Limiter:
    """One limiter (and limit-store client) per process and settings."""
    key = (settings.mongo_uri, settings.mongo_db, str(settings.data_dir))
    limiter = _limiters.get(key)
    if limiter is None:
        limiter = _limiters.setdefault(key, Limiter(make_limit_store(settings)))
    return limiter


def make_access(settings: Settings, mongo_client=None) -> Access:
    if settings.mongo_uri or mongo_client is not None:
        from common.mongo_client import mongo_client as shared_client

        keys = MongoKeyStore(mongo_client or shared_client(settings), settings.mongo_db)
    else:
        keys = SqliteKeyStore(settings.data_dir / "access.db", timeout=settings.store_timeout)
    issuer = None
    if settings.auth_jwks_url:
        from common.auth.jwt_issuer import IssuerTokens

        issuer = IssuerTokens(
            settings.auth_jwt_issuer, settings.auth_jwt_audience, settings.auth_jwks_url
        )
    return Access(settings, keys, get_limiter(settings), issuer)


def current_settings() -> Settings:
    """The settings the service runs with: those of a service installed by `set_service`
    (tests), else the process's own."""
    service = _service
    return service.settings if service is not None else get_settings()


def set_service(service: NotificationService | None) -> None:
    """Install a service built elsewhere (tests), or forget the current one; the credential
    checks are made again from its settings. The streams subscribe to the feed the installed
    service publishes to; forgetting the service closes the feed."""
    global _service, _in_process_delivery, _access, _inbox_feed
    with _lock:
        _service = service
        _access = None
        if service is not None:
            _in_process_delivery = True
    if service is None:
        close_inbox_feed()
        return
    feed = getattr(service, "inbox_feed", None)
    if feed is not None and not isinstance(feed, NoInboxFeed):
        with _feed_lock:
            _inbox_feed = feed


def host_in_process_delivery() -> None:
    """Called by the local runner, whose consumer delivers from the in-process queue."""
    global _in_process_delivery
    _in_process_delivery = True


def undeliverable_setup(settings: Settings) -> str | None:
    """Why notifications accepted here would never be delivered, or None."""
    if settings.rabbitmq_url or _in_process_delivery:
        return None
    return (
        "RABBITMQ_URL is unset: this function alone would queue notifications in its own "
        "memory, where no deliverer can reach them. Set RABBITMQ_URL (as every deployed "
        "function must), or run all functions together with `python local_runner.py serve`."
    )


def require_valid_settings(*, accepts_notifications: bool = False) -> None:
    """Stop a process at start with one readable message when the configuration is wrong.

    `accepts_notifications`: the function queues notifications, so it needs a queue that a
    deliverer reads."""
    try:
        settings = get_settings()
        problem = undeliverable_setup(settings) if accepts_notifications else None
        if problem:
            raise ConfigError([problem])
    except ConfigError as error:
        message = "configuration error:\n" + "\n".join(f"  - {p}" for p in error.problems)
        print(message, file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(settings.log_level)
