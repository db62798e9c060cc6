"""HTTP function: preferences (GET/PUT /users/<user_id>/preferences)."""

import _repo_root  # noqa: F401  (makes `common` importable under the stock CLI)
import functions_framework

from common.auth.principal import ADMIN
from common.auth.rules import needs
from common.errors import Unavailable
from common.http import Router, json_response, read_json
from common.preferences.document import (
    default_preferences,
    preferences_to_json,
    validate_preferences,
)
from common.runtime import get_service, require_valid_settings
from common.user_ids import check_user_id

require_valid_settings()
router = Router()


def _store():
    store = get_service().preferences
    if store is None:  # a service built without a preference store (some tests)
        raise Unavailable("preferences are not available in this deployment")
    return store


@router.route("/users/<user_id>/preferences", methods=("GET",), access=needs(ADMIN, own_user=True))
def get_preferences(request, user_id):
    check_user_id(user_id)
    document = _store().get(user_id) or default_preferences()
    return json_response(preferences_to_json(document))


@router.route("/users/<user_id>/preferences", methods=("PUT",), access=needs(ADMIN, own_user=True))
def put_preferences(request, user_id):
    check_user_id(user_id)
    document = validate_preferences(read_json(request))
    service = get_service()
    _store().put(user_id, document, service.clock())
    return json_response(preferences_to_json(document))


@functions_framework.http
def http_preferences(request):
    return router.dispatch(request)
