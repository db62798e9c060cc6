"""HTTP function: accept notifications (POST /notifications, POST /notifications/batch)."""

import _repo_root  # noqa: F401  (makes `common` importable under the stock CLI)
import functions_framework

from common.auth.principal import SEND
from common.auth.rules import needs
from common.http import Router, json_response, principal_of, read_json
from common.intake import batch_cost
from common.runtime import get_access, get_service, require_valid_settings
from common.tracing import HEADER as TRACEPARENT
from common.tracing import traced

require_valid_settings(accepts_notifications=True)
router = Router()


@router.route("/notifications", methods=("POST",), access=needs(SEND))
def send(request):
    key = request.headers.get("Idempotency-Key")
    payload = read_json(request)
    limit_headers = get_access().take_send(principal_of(request), 1)
    notification = get_service().submit(payload, idempotency_key=key)
    body = {
        "id": notification.id,
        "status": notification.status,
        "duplicate": notification.duplicate,
        "notification": notification.to_dict(),
    }
    # A repeated Idempotency-Key finds the first notification: 200, and nothing is sent again.
    status = 200 if notification.duplicate else 201
    headers = {"Location": f"/notifications/{notification.id}", **limit_headers}
    return json_response(body, status, headers=headers)


@router.route("/notifications/batch", methods=("POST",), access=needs(SEND))
def send_batch(request):
    payload = read_json(request)
    limit_headers = get_access().take_send(principal_of(request), batch_cost(payload))
    results = get_service().submit_batch(payload)
    accepted = sum(1 for r in results if "id" in r)
    body = {"accepted": accepted, "rejected": len(results) - accepted, "results": results}
    return json_response(body, 201 if accepted else 400, headers=limit_headers)


@functions_framework.http
def http_send(request):
    # A caller's W3C traceparent follows its notifications to their delivery's log lines.
    with traced(request.headers.get(TRACEPARENT)):
        return router.dispatch(request)
