"""HTTP function: the in-app inbox's states and counts (seen, read, archived; read-all,
seen-all; unread counts), for the application and for a user's own token."""

import _repo_root  # noqa: F401  (makes `common` importable under the stock CLI)
import functions_framework

from common.auth.principal import READ
from common.auth.rules import needs, owner_check
from common.errors import UnsupportedMediaType
from common.http import FORM_CONTENT_TYPES, Router, json_response, principal_of, read_json
from common.inbox import ACTIONS, BULK_ACTIONS
from common.inbox_stream_open import STREAM_ACCESS, mint_ticket
from common.model import utcnow
from common.runtime import get_access, get_service, require_valid_settings
from common.user_ids import check_user_id

require_valid_settings(accepts_notifications=True)
router = Router()


def _action_view(action: str):
    def mark(request, notification_id):
        _refuse_a_form_body(request)
        service = get_service()
        # The owner is checked before anything changes: a user token acts on its own only.
        owner_check(principal_of(request), service.get(notification_id).user_id)
        return json_response({"notification": service.mark(notification_id, action).to_dict()})

    mark.__name__ = f"mark_{action}"
    return mark


for _action in ACTIONS:
    router.route(
        f"/notifications/<notification_id>/{_action}",
        methods=("POST",),
        access=needs(READ, user_resource=True),
    )(_action_view(_action))


def _bulk_view(action: str):
    def mark_all(request, user_id):
        check_user_id(user_id)
        payload = read_json(request) if _has_body(request) else None
        return json_response({"updated": get_service().mark_all(user_id, action, payload)})

    mark_all.__name__ = f"{action}_all"
    return mark_all


for _action in BULK_ACTIONS:
    router.route(
        f"/users/<user_id>/notifications/{_action}-all",
        methods=("POST",),
        access=needs(READ, own_user=True),
    )(_bulk_view(_action))


@router.route(
    "/users/<user_id>/notifications/counts", methods=("GET",), access=needs(READ, own_user=True)
)
def counts(request, user_id):
    check_user_id(user_id)
    kind = request.args.get("type") or request.args.get("notification_type")
    return json_response(get_service().inbox_counts(user_id, kind))


@router.route(
    "/users/<user_id>/notifications/stream-ticket", methods=("POST",), access=STREAM_ACCESS
)
def stream_ticket(request, user_id):
    """A one-minute ticket that opens this user's stream where no header can be sent (a
    browser's EventSource): `GET <stream_url>`."""
    check_user_id(user_id)
    authorization = request.headers.get("Authorization")
    ticket = mint_ticket(get_access(), principal_of(request), authorization, user_id, utcnow())
    return json_response(ticket, 201)


def _has_body(request) -> bool:
    return bool(request.content_length) or bool(request.get_data(cache=True))


def _refuse_a_form_body(request) -> None:
    """The actions take no body; a form or plain-text one is refused as on every JSON
    endpoint, because another site's page can send those without the browser asking first."""
    if request.mimetype in FORM_CONTENT_TYPES and _has_body(request):
        raise UnsupportedMediaType(
            f"the body is {request.mimetype}; send no body, or JSON with "
            "Content-Type: application/json"
        )


@functions_framework.http
def http_inbox(request):
    return router.dispatch(request)
