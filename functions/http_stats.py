"""HTTP function: counts of notifications by status and type, and queue depths (GET /stats)."""

import _repo_root  # noqa: F401  (makes `common` importable under the stock CLI)
import functions_framework

from common.auth.principal import READ
from common.auth.rules import needs
from common.http import Router, json_response
from common.runtime import get_service, require_valid_settings

require_valid_settings()
router = Router()


@router.route("/stats", methods=("GET",), access=needs(READ))
def stats(request):
    return json_response(get_service().stats())


@functions_framework.http
def http_stats(request):
    return router.dispatch(request)
