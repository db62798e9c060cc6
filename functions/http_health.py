"""HTTP function: liveness (GET /healthz) and readiness (GET /readyz) for probes.

/healthz answers while the process can serve at all and touches no backend; /readyz answers
503 when the store or the broker cannot be reached, or the consumer in this process stopped.
"""

import _repo_root  # noqa: F401  (makes `common` importable under the stock CLI)
import functions_framework

from common.auth.principal import READ
from common.auth.rules import OPEN, needs
from common.health import readiness
from common.http import Router, json_response

router = Router()


@router.route("/healthz", methods=("GET",), access=OPEN)
def healthz(request):
    return json_response({"status": "ok"})


@router.route("/readyz", methods=("GET",), access=needs(READ))
def readyz(request):
    report = readiness()
    return json_response(report, 200 if report["ready"] else 503)


@functions_framework.http
def http_health(request):
    return router.dispatch(request)
