"""HTTP function: API keys (/api-keys) and per-user tokens (POST /users/<user_id>/token)."""

import _repo_root  # noqa: F401  (makes `common` importable under the stock CLI)
import functions_framework

from common.auth.principal import ADMIN, SEND
from common.auth.rules import needs
from common.errors import ValidationError
from common.http import Router, json_response, read_json
from common.runtime import get_access, require_valid_settings
from common.user_ids import check_user_id

require_valid_settings()
router = Router()

KEY_FIELDS = {"name", "scopes", "expires_in", "rate_limit"}


@router.route("/api-keys", methods=("POST",), access=needs(ADMIN))
def create_key(request):
    body = read_json(request)
    if not isinstance(body, dict):
        raise ValidationError("the request body must be a JSON object")
    unknown = sorted(set(body) - KEY_FIELDS)
    if unknown:
        raise ValidationError("unknown field", {unknown[0]: "is not a field of an API key"})
    key, secret = get_access().create_key(
        body.get("name"), body.get("scopes"), body.get("expires_in"), body.get("rate_limit")
    )
    # The only time the key is shown: the service keeps its hash alone.
    reply = {**key.to_dict(), "key": secret}
    return json_response(reply, 201, headers={"Location": f"/api-keys/{key.id}"})


@router.route("/api-keys", methods=("GET",), access=needs(ADMIN))
def list_keys(request):
    keys = [key.to_dict() for key in get_access().list_keys()]
    return json_response({"keys": keys, "count": len(keys)})


@router.route("/api-keys/<key_id>", methods=("DELETE",), access=needs(ADMIN))
def revoke_key(request, key_id):
    return json_response(get_access().revoke_key(key_id).to_dict())


@router.route("/users/<user_id>/token", methods=("POST",), access=needs(ADMIN, SEND))
def user_token(request, user_id):
    check_user_id(user_id)
    lifetime = None
    if request.content_length or request.get_data(cache=True):
        body = read_json(request)
        if not isinstance(body, dict) or set(body) - {"expires_in"}:
            raise ValidationError(
                "invalid token request", {"expires_in": "the only field: seconds, at most 86400"}
            )
        lifetime = body.get("expires_in")
    return json_response(get_access().mint_user_token(user_id, lifetime), 201)


@functions_framework.http
def http_access(request):
    return router.dispatch(request)
