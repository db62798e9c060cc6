"""HTTP function: outbound webhooks (admin): register, list, read, delete, rotate the secret,
enable again, the delivery log and replay (common/webhooks)."""

import re

import _repo_root  # noqa: F401  (makes `common` importable under the stock CLI)
import functions_framework

from common.auth.principal import ADMIN
from common.auth.rules import needs
from common.errors import Unavailable, ValidationError
from common.http import Router, json_response, read_json
from common.runtime import get_service, require_valid_settings

require_valid_settings()
router = Router()

MAX_LIMIT = 200


def _webhooks():
    webhooks = get_service().webhooks
    if webhooks is None:  # a service built without outbound webhooks
        raise Unavailable("outbound webhooks are not available in this deployment")
    return webhooks


def _limit(value: str | None) -> int:
    if value in (None, ""):
        return 50
    if not re.fullmatch(r"[0-9]{1,4}", value) or not 1 <= int(value) <= MAX_LIMIT:
        raise ValidationError(
            "invalid limit", {"limit": f"must be a whole number from 1 to {MAX_LIMIT}"}
        )
    return int(value)


@router.route("/webhooks", methods=("POST",), access=needs(ADMIN))
def register(request):
    created = _webhooks().register(read_json(request))
    return json_response(created, 201, headers={"Location": f"/webhooks/{created['id']}"})


@router.route("/webhooks", methods=("GET",), access=needs(ADMIN))
def list_webhooks(request):
    webhooks = _webhooks().list()
    return json_response({"webhooks": webhooks, "count": len(webhooks)})


@router.route("/webhooks/<endpoint_id>", methods=("GET",), access=needs(ADMIN))
def get_webhook(request, endpoint_id):
    return json_response(_webhooks().get(endpoint_id))


@router.route("/webhooks/<endpoint_id>", methods=("DELETE",), access=needs(ADMIN))
def delete_webhook(request, endpoint_id):
    _webhooks().delete(endpoint_id)
    return json_response({"deleted": endpoint_id})


@router.route("/webhooks/<endpoint_id>/rotate-secret", methods=("POST",), access=needs(ADMIN))
def rotate_secret(request, endpoint_id):
    return json_response(_webhooks().rotate_secret(endpoint_id))


@router.route("/webhooks/<endpoint_id>/enable", methods=("POST",), access=needs(ADMIN))
def enable(request, endpoint_id):
    return json_response(_webhooks().enable(endpoint_id))


@router.route("/webhooks/<endpoint_id>/deliveries", methods=("GET",), access=needs(ADMIN))
def deliveries(request, endpoint_id):
    limit = _limit(request.args.get("limit"))
    items, next_cursor = _webhooks().deliveries(
        endpoint_id, limit, request.args.get("cursor") or None
    )
    return json_response({"deliveries": items, "count": len(items), "next_cursor": next_cursor})


@router.route("/webhook-deliveries/<delivery_id>/replay", methods=("POST",), access=needs(ADMIN))
def replay(request, delivery_id):
    return json_response(_webhooks().replay(delivery_id), 202)


@functions_framework.http
def http_webhooks(request):
    return router.dispatch(request)
