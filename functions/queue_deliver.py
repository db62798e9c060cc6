"""CloudEvent function: deliver the one notification named by a queue message.

Replies 2xx once the outcome is stored (a failed send is an outcome: it schedules its own
retry), 400 for a malformed event (not redelivered), and 5xx only when nothing could be
stored, so that the platform redelivers the event. The delivery's log lines carry the trace
id of the request that sent the notification.
"""

import logging

import _repo_root  # noqa: F401  (makes `common` importable under the stock CLI)
import functions_framework
from werkzeug.exceptions import BadRequest

from common.errors import NotFound
from common.events import notification_id_from_event, traceparent_from_event
from common.http import error_response
from common.runtime import get_service, require_valid_settings
from common.tracing import traced

require_valid_settings()
log = logging.getLogger("notifications")


@functions_framework.cloud_event
def queue_deliver(cloud_event):
    try:
        notification_id = notification_id_from_event(cloud_event)
    except ValueError as error:
        raise BadRequest(response=error_response(400, str(error))) from None
    traceparent = traceparent_from_event(cloud_event) or stored_traceparent(notification_id)
    with traced(traceparent):
        get_service().deliver(notification_id)


def stored_traceparent(notification_id: str) -> str | None:
    """The notification's own trace context, for a message sent without one (the sweep's)."""
    try:
        return get_service().get(notification_id).traceparent
    except NotFound:
        return None  # the delivery logs it as skipped
    except Exception as error:  # noqa: BLE001 - the delivery itself reports a store outage
        log.warning("notification=%s event=trace_lookup_failed error=%r", notification_id, error)
        return None
