"""HTTP function: what providers report about messages they accepted (POST
/providers/twilio/status, Twilio's status callbacks).

Open to anyone: Twilio sends no bearer token, so its X-Twilio-Signature, checked against our
configured public URL with the auth token, is the credential.
"""

import logging

import _repo_root  # noqa: F401  (makes `common` importable under the stock CLI)
import functions_framework

from common.auth.rules import OPEN
from common.http import Router, error_response, json_response
from common.receipts import Receipts, twilio_signature_ok
from common.runtime import get_service, require_valid_settings

log = logging.getLogger("notifications")

require_valid_settings()
router = Router()


@router.route("/providers/twilio/status", methods=("POST",), access=OPEN)
def twilio_status(request):
    service = get_service()
    if not service.settings.twilio_auth_token:
        return error_response(404, "SMS receipts are not configured")
    query = request.query_string.decode("latin-1")
    path_and_query = request.path + (f"?{query}" if query else "")
    form = request.form.to_dict()
    signature = request.headers.get("X-Twilio-Signature")
    if not twilio_signature_ok(service.settings, path_and_query, form, signature):
        log.warning("event=receipt_refused provider=twilio signed=%s", signature is not None)
        return error_response(403, "the X-Twilio-Signature does not sign this request")
    receipts = Receipts(service.store, service.suppressions, service.events, service.clock)
    updated = receipts.record_twilio(form)
    # 200 even when nothing changed (unknown or stale): anything else makes Twilio retry.
    return json_response({"recorded": updated is not None})


@functions_framework.http
def http_providers(request):
    return router.dispatch(request)
