"""The outbound webhooks' use cases: the admin API's (register, list, rotate, enable, the
delivery log, replay) and the event bus's listener, which only stores deliveries and kicks the
dispatcher, so a notification's delivery never waits on anyone's HTTP endpoint."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import requests

from common.config import Settings
from common.errors import Conflict, NotFound, ValidationError
from common.notification_events import WEBHOOK_EVENTS, NotificationEvent
from common.webhooks.dispatcher import Dispatcher
from common.webhooks.records import PENDING, Delivery, Endpoint, iso
from common.webhooks.signing import new_secret
from common.webhooks.store import WebhookStore
from common.webhooks.urls import check_url

ENDPOINT_CACHE_SECONDS = 2.0
MAX_DESCRIPTION = 500
REGISTER_FIELDS = {"url", "events", "description"}
# The notification's fields a webhook carries: ids and states, never its content or the
# recipient's address (message, subject, html, email, phone stay in the service).
PAYLOAD_FIELDS = (
    "id",
    "user_id",
    "notification_type",
    "status",
    "category",
    "template",
    "provider_message_id",
    "delivery_status",
    "delivery_error_code",
    "last_error",
    "retry_count",
    "next_retry_time",
    "created_at",
    "sent_at",
)


class Webhooks:
    def __init__(
        self,
        settings: Settings,
        store: WebhookStore,
        clock: Callable[[], datetime],
        session: requests.Session | None = None,
    ):
        self.settings = settings
        self.store = store
        self.clock = clock
        self.dispatcher = Dispatcher(settings, store, clock, session, self._forget_endpoints)
        self._cache_lock = threading.Lock()
        self._cached: tuple[float, list[Endpoint]] | None = None  # (monotonic time, enabled)

    # -- the admin API --

    def register(self, body: Any) -> dict:
        """The new endpoint, with its secret: the only time the secret is shown."""
        if not isinstance(body, dict):
            raise ValidationError("the body must be a JSON object with url and events")
        unknown = sorted(set(body) - REGISTER_FIELDS)
        if unknown:
            raise ValidationError(
                "unknown fields", {name: "is not a field of a webhook" for name in unknown}
            )
        url = check_url(body.get("url"), self.settings.webhook_allow_private)
        description = body.get("description") or ""
        if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
            raise ValidationError(
                "invalid description",
                {"description": f"must be text of at most {MAX_DESCRIPTION} characters"},
            )
        endpoint = Endpoint(
            id="ep_" + uuid.uuid4().hex,
            url=url,
            events=_events(body.get("events")),
            description=description,
            secret=new_secret(),
            created_at=self.clock(),
        )
        self.store.add_endpoint(endpoint)
        self._forget_endpoints()
        return {**endpoint.to_dict(), "secret": endpoint.secret}

    def list(self) -> list[dict]:
        return [endpoint.to_dict() for endpoint in self.store.list_endpoints()]

    def get(self, endpoint_id: str) -> dict:
        return self._endpoint(endpoint_id).to_dict()

    def delete(self, endpoint_id: str) -> None:
        if not self.store.delete_endpoint(endpoint_id):
            raise NotFound(f"no webhook {endpoint_id}")
        self._forget_endpoints()

    def rotate_secret(self, endpoint_id: str) -> dict:
        """A new secret, shown once; the current one keeps signing for the grace period."""
        endpoint = self._endpoint(endpoint_id)
        grace = self.settings.webhook_secret_grace_seconds
        until = self.clock() + timedelta(seconds=grace) if grace > 0 else None
        secret = new_secret()
        previous = endpoint.secret if until else None
        if not self.store.set_secrets(endpoint_id, secret, previous, until):
            raise NotFound(f"no webhook {endpoint_id}")
        return {"id": endpoint_id, "secret": secret, "previous_secret_expires_at": iso(until)}

    def enable(self, endpoint_id: str) -> dict:
        if not self.store.enable_endpoint(endpoint_id):
            raise NotFound(f"no webhook {endpoint_id}")
        self._forget_endpoints()
        return self.get(endpoint_id)

    def deliveries(
        self, endpoint_id: str, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[dict], str | None]:
        self._endpoint(endpoint_id)
        items, next_cursor = self.store.list_deliveries(endpoint_id, limit, cursor)
        return [item.to_dict() for item in items], next_cursor

    def replay(self, delivery_id: str) -> dict:
        """Send the delivery again now: the same webhook-id and body."""
        delivery = self.store.get_delivery(delivery_id)
        if delivery is None:
            raise NotFound(f"no webhook delivery {delivery_id}")
        endpoint = self.store.get_endpoint(delivery.endpoint_id)
        if endpoint is not None and endpoint.disabled_at is not None:
            raise Conflict(f"the webhook {endpoint.id} is disabled; enable it first")
        now = self.clock()
        if not self.store.replay(delivery_id, now):
            raise Conflict(f"the webhook delivery {delivery_id} is being sent right now")
        self.kick()
        return replace(delivery, status=PENDING, next_attempt_at=now).to_dict()

    def _endpoint(self, endpoint_id: str) -> Endpoint:
        endpoint = self.store.get_endpoint(endpoint_id)
        if endpoint is None:
            raise NotFound(f"no webhook {endpoint_id}")
        return endpoint

    # -- the event bus's listener --

    def notify(self, events: Sequence[NotificationEvent]) -> None:
        """Store one delivery per subscribed, enabled endpoint and event; then kick."""
        wanted = [event for event in events if event.type in WEBHOOK_EVENTS]
        if not wanted:
            return
        endpoints = self._enabled_endpoints()
        if not endpoints:  # nobody subscribes: nothing to build, store or kick per event
            return
        now = self.clock()
        deliveries = [
            Delivery(
                id="msg_" + uuid.uuid4().hex,
                endpoint_id=endpoint.id,
                event_type=event.type,
                payload=body,
                created_at=now,
                next_attempt_at=now,
            )
            for event in wanted
            if any(event.type in endpoint.events for endpoint in endpoints)
            # The body is the same for every endpoint: built once per event, not per endpoint.
            for body in (payload(event),)
            for endpoint in endpoints
            if event.type in endpoint.events
        ]
        if deliveries:
            self.store.add_deliveries(deliveries)
            self.kick()

    def _enabled_endpoints(self) -> list[Endpoint]:
        # Cached for a moment: a busy delivery path would otherwise read every endpoint for
        # every notification. Another process's change shows within ENDPOINT_CACHE_SECONDS.
        with self._cache_lock:
            if self._cached and time.monotonic() - self._cached[0] < ENDPOINT_CACHE_SECONDS:
                return self._cached[1]
        enabled = [e for e in self.store.list_endpoints() if e.disabled_at is None]
        with self._cache_lock:
            self._cached = (time.monotonic(), enabled)
        return enabled

    def _forget_endpoints(self) -> None:
        with self._cache_lock:
            self._cached = None

    # -- sending --

    def dispatch_due(self, limit: int = 100) -> int:
        """Make the due attempts (the sweep calls this); the number made."""
        return self.dispatcher.dispatch_due(limit)

    def kick(self) -> None:
        self.dispatcher.kick()

    def close(self) -> None:
        self.dispatcher.close()


def _events(value: Any) -> tuple[str, ...]:
    allowed = ", ".join(WEBHOOK_EVENTS)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ValidationError(
            "invalid events", {"events": f"must be a non-empty list of: {allowed}"}
        )
    unknown = [v for v in value if v not in WEBHOOK_EVENTS]
    if unknown:
        raise ValidationError(
            "invalid events",
            {"events": f"unknown: {', '.join(unknown)}; each must be one of: {allowed}"},
        )
    return tuple(dict.fromkeys(value))  # without repeats, in the order given


def payload(event: NotificationEvent) -> str:
    """The body of every attempt of this event's delivery, exactly as signed."""
    notification = event.notification.to_dict()
    data = {name: notification.get(name) for name in PAYLOAD_FIELDS}
    if event.provider:
        data["provider"] = event.provider
    if event.error_code:
        data["error_code"] = event.error_code
    body = {"type": event.type, "timestamp": iso(event.at), "data": data}
    return json.dumps(body, separators=(",", ":"), default=str)
