"""CloudEvents that carry a notification id, as the queue bridge and the runner send them."""

from __future__ import annotations

import json
import uuid
from typing import Any

from cloudevents.http import CloudEvent

from common.tracing import HEADER as TRACEPARENT
from common.tracing import parse_traceparent

EVENT_TYPE = "com.notifications.deliver"


def delivery_event(
    notification_id: str,
    source: str = "local-runner/notifications",
    traceparent: str | None = None,
) -> CloudEvent:
    """The event the runner hands `queue_deliver` for each RabbitMQ message; `traceparent`
    (the message's header) becomes the CloudEvents distributed-tracing extension."""
    attributes = {"type": EVENT_TYPE, "source": source, "id": str(uuid.uuid4())}
    if traceparent:
        attributes[TRACEPARENT] = traceparent
    return CloudEvent(attributes, {"notification_id": notification_id})


def traceparent_from_event(event: Any) -> str | None:
    """The event's valid `traceparent` extension, else None."""
    value = event.get(TRACEPARENT) if hasattr(event, "get") else None
    return parse_traceparent(value)


def notification_id_from_event(event: Any) -> str:
    """The id in the event's data: a JSON object `{"notification_id": ...}` as dict, text or bytes."""
    data = event.data if hasattr(event, "data") else None
    if isinstance(data, (bytes, bytearray, str)):
        try:
            data = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise ValueError("event data is not JSON") from None
    if not isinstance(data, dict):
        raise ValueError('event data must be a JSON object {"notification_id": "..."}')
    notification_id = data.get("notification_id")
    if not isinstance(notification_id, str) or not notification_id.strip():
        raise ValueError("event data has no notification_id")
    return notification_id.strip()
