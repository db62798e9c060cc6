"""HTTP function: read notifications, retry failed ones by hand, cancel what is not sent yet."""

import _repo_root  # noqa: F401  (makes `common` importable under the stock CLI)
import functions_framework

from common.auth.principal import READ, RETRY, SEND
from common.auth.rules import needs, owner_check
from common.errors import UnsupportedMediaType
from common.http import FORM_CONTENT_TYPES, Router, json_response, principal_of, read_json
from common.runtime import get_service, require_valid_settings
from common.user_ids import check_user_id

require_valid_settings(accepts_notifications=True)
router = Router()


@router.route("/users/<user_id>/notifications", methods=("GET",), access=needs(READ, own_user=True))
def list_for_user(request, user_id):
    check_user_id(user_id)  # no notification can belong to an id that breaks the rule
    page = get_service().list_for_user(
        user_id,
        notification_type=request.args.get("type") or request.args.get("notification_type"),
        status=request.args.get("status"),
        limit=request.args.get("limit"),
        cursor=request.args.get("cursor"),
        read=request.args.get("read"),
        archived=request.args.get("archived"),
        category=request.args.get("category"),
    )
    return json_response(
        {
            "user_id": user_id,
            "notifications": [n.to_dict() for n in page.items],
            "count": len(page.items),
            "next_cursor": page.next_cursor,
        }
    )


@router.route(
    "/notifications/<notification_id>", methods=("GET",), access=needs(READ, user_resource=True)
)
def get_one(request, notification_id):
    notification = get_service().get(notification_id)
    owner_check(principal_of(request), notification.user_id)
    return json_response(notification.to_dict())


@router.route("/notifications/<notification_id>/retry", methods=("POST",), access=needs(RETRY))
def retry(request, notification_id):
    _refuse_a_form_body(request)
    notification = get_service().retry(notification_id)
    return json_response(
        {
            "id": notification.id,
            "status": notification.status,
            "notification": notification.to_dict(),
        },
        202,
    )


@router.route("/notifications/<notification_id>/cancel", methods=("POST",), access=needs(SEND))
def cancel(request, notification_id):
    _refuse_a_form_body(request)
    notification = get_service().cancel(notification_id)
    return json_response(
        {
            "id": notification.id,
            "status": notification.status,
            "notification": notification.to_dict(),
        }
    )


@router.route("/notifications/cancel", methods=("POST",), access=needs(SEND))
def cancel_by_key(request):
    return json_response(get_service().cancel_by_key(read_json(request)))


def _refuse_a_form_body(request) -> None:
    """The retry takes no body; a form or plain-text one is refused as on every JSON endpoint,
    because another site's page can send those without the browser asking first."""
    has_body = bool(request.content_length) or bool(request.get_data(cache=True))
    if request.mimetype in FORM_CONTENT_TYPES and has_body:
        raise UnsupportedMediaType(
            f"the body is {request.mimetype}; send no body, or JSON with "
            "Content-Type: application/json"
        )


@functions_framework.http
def http_notifications(request):
    return router.dispatch(request)
