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
    # A message without a trace (the sweep's) is traced by the claimed record: the deliverer
    # takes it from there, without reading the notification a second time.
    with traced(traceparent_from_event(cloud_event)):
        get_service().deliver(notification_id)
