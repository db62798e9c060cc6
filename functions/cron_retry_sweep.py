"""Scheduled function: requeue due retries, never-published and abandoned notifications.

`cron_retry_sweep` takes a CloudEvent (Cloud Scheduler via Pub/Sub, Knative PingSource);
`http_retry_sweep` is the same sweep for a scheduler that calls a plain HTTP endpoint.
"""

from dataclasses import asdict

import _repo_root  # noqa: F401  (makes `common` importable under the stock CLI)
import functions_framework

from common.auth.principal import ADMIN
from common.auth.rules import needs
from common.http import Router, json_response
from common.runtime import get_service, require_valid_settings

require_valid_settings(accepts_notifications=True)
router = Router()


@functions_framework.cloud_event
def cron_retry_sweep(cloud_event):
    get_service().sweep()


@router.route("/sweep", methods=("POST",), access=needs(ADMIN))
def sweep(request):
    report = get_service().sweep()
    return json_response(asdict(report))


@functions_framework.http
def http_retry_sweep(request):
    return router.dispatch(request)
