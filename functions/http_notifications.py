"""HTTP function: read notifications and retry failed ones by hand."""

import _repo_root  # noqa: F401  (makes `common` importable under the stock CLI)
import functions_framework

from common.http import Router, json_response
from common.runtime import get_service, require_valid_settings

require_valid_settings()
router = Router()


@router.route("/users/<user_id>/notifications", methods=("GET",))
def list_for_user(request, user_id):
    page = get_service().list_for_user(
        user_id,
        notification_type=request.args.get("type") or request.args.get("notification_type"),
        status=request.args.get("status"),
        limit=request.args.get("limit"),
        cursor=request.args.get("cursor"),
    )
    return json_response(
        {
            "user_id": user_id,
            "notifications": [n.to_dict() for n in page.items],
            "count": len(page.items),
            "next_cursor": page.next_cursor,
        }
    )


@router.route("/notifications/<notification_id>", methods=("GET",))
def get_one(request, notification_id):
    return json_response(get_service().get(notification_id).to_dict())


@router.route("/notifications/<notification_id>/retry", methods=("POST",))
def retry(request, notification_id):
    notification = get_service().retry(notification_id)
    return json_response(
        {
            "id": notification.id,
            "status": notification.status,
            "notification": notification.to_dict(),
        },
        202,
    )


@functions_framework.http
def http_notifications(request):
    return router.dispatch(request)
