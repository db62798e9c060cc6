"""HTTP function: the suppression list (GET /suppressions, DELETE /suppressions/<channel>/<address>)."""

import re

import _repo_root  # noqa: F401  (makes `common` importable under the stock CLI)
import functions_framework

from common.auth.principal import ADMIN
from common.auth.rules import needs
from common.errors import NotFound, Unavailable, ValidationError
from common.http import Router, json_response
from common.runtime import get_service, require_valid_settings
from common.suppressions.store import CHANNELS

require_valid_settings()
router = Router()

MAX_LIMIT = 200


def _suppressions():
    store = get_service().suppressions
    if store is None:  # a service built without a suppression store (some tests)
        raise Unavailable("the suppression list is not available in this deployment")
    return store


def _channel(value: str) -> str:
    if value not in CHANNELS:
        raise ValidationError(
            "invalid channel", {"channel": f"must be one of {', '.join(CHANNELS)}"}
        )
    return value


def _limit(value: str | None) -> int:
    if value in (None, ""):
        return 50
    if not re.fullmatch(r"[0-9]{1,4}", value) or not 1 <= int(value) <= MAX_LIMIT:
        raise ValidationError(
            "invalid limit", {"limit": f"must be a whole number from 1 to {MAX_LIMIT}"}
        )
    return int(value)


@router.route("/suppressions", methods=("GET",), access=needs(ADMIN))
def list_suppressions(request):
    channel = request.args.get("channel") or None
    limit = _limit(request.args.get("limit"))
    items, next_cursor = _suppressions().list(
        _channel(channel) if channel else None, limit, request.args.get("cursor") or None
    )
    body = {"suppressions": [s.to_dict() for s in items], "count": len(items)}
    return json_response({**body, "next_cursor": next_cursor})


# path: an email address may hold a "/" in its local part. A "+" arrives raw or as %2B; the
# WSGI server decodes the path, and "+" means a space only in query strings.
@router.route("/suppressions/<channel>/<path:address>", methods=("DELETE",), access=needs(ADMIN))
def lift(request, channel, address):
    store = _suppressions()
    found = store.get(_channel(channel), address)
    if found is None or not store.remove(channel, address):
        raise NotFound(f"{address} is not suppressed for {channel}")
    return json_response({"lifted": found.to_dict()})


@functions_framework.http
def http_suppressions(request):
    return router.dispatch(request)
