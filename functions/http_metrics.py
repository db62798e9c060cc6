"""HTTP function: the service's metrics in Prometheus' text format (GET /metrics).

Readable with an `admin` credential, or with METRICS_TOKEN as the bearer token: a scraper's
secret that grants nothing else. The route is declared open so that the token can be checked
before the key store is asked (a scraper's token must not count as a failed login).
"""

import hmac

import _repo_root  # noqa: F401  (makes `common` importable under the stock CLI)
import flask
import functions_framework
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from common.auth.access import bearer_token
from common.auth.rules import OPEN, needs
from common.http import Router, authenticate
from common.metrics import render
from common.runtime import current_settings, get_service, require_valid_settings

require_valid_settings()
router = Router()


@router.route("/metrics", methods=("GET",), access=OPEN)
def metrics(request):
    if not holds_metrics_token(request):
        authenticate(request, needs(), sessions=False)  # admin: else 401 or 403 (guarded)
    body = render(lambda timeout: get_service().queue.depths(timeout=timeout))
    # render() writes the classic text format with legacy names: version 0.0.4 (this
    # prometheus_client's CONTENT_TYPE_LATEST names 1.0.0, the UTF-8-names format).
    return flask.Response(body, status=200, headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})


def holds_metrics_token(request) -> bool:
    expected = current_settings().metrics_token
    token = bearer_token(request.headers.get("Authorization"))
    return bool(expected and token) and hmac.compare_digest(token.encode(), expected.encode())


@functions_framework.http
def http_metrics(request):
    return router.dispatch(request)
