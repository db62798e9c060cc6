"""HTTP function: accept notifications (POST /notifications, POST /notifications/batch)."""

import _repo_root  # noqa: F401  (makes `common` importable under the stock CLI)
import functions_framework

from common.http import Router, json_response, read_json
from common.runtime import get_service, require_valid_settings

require_valid_settings(accepts_notifications=True)
router = Router()


@router.route("/notifications", methods=("POST",))
def send(request):
    key = request.headers.get("Idempotency-Key")
    notification = get_service().submit(read_json(request), idempotency_key=key)
    body = {
        "id": notification.id,
        "status": notification.status,
        "duplicate": notification.duplicate,
        "notification": notification.to_dict(),
    }
    # A repeated Idempotency-Key finds the first notification: 200, and nothing is sent again.
    status = 200 if notification.duplicate else 201
    return json_response(body, status, headers={"Location": f"/notifications/{notification.id}"})


@router.route("/notifications/batch", methods=("POST",))
def send_batch(request):
    results = get_service().submit_batch(read_json(request))
    accepted = sum(1 for r in results if "id" in r)
    body = {"accepted": accepted, "rejected": len(results) - accepted, "results": results}
    return json_response(body, 201 if accepted else 400)


@functions_framework.http
def http_send(request):
    return router.dispatch(request)
