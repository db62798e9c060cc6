"""HTTP function: the OpenAPI 3 description of the public HTTP API (GET /openapi.json).

The document is the hand-written `openapi.json` at the repository root, read once per process;
`tests/test_openapi.py` keeps it and every function's routes in agreement.
"""

import json
import os
import threading

import _repo_root  # noqa: F401  (makes `common` importable under the stock CLI)
import flask
import functions_framework

from common.auth.rules import OPEN
from common.http import Router

router = Router()

DOCUMENT_PATH = os.path.join(_repo_root.ROOT, "openapi.json")
_lock = threading.Lock()
_document: bytes | None = None


def openapi_document() -> bytes:
    """The document's bytes, read and checked (it must parse as JSON) on first use."""
    global _document
    if _document is None:
        with _lock:
            if _document is None:
                with open(DOCUMENT_PATH, "rb") as file:
                    raw = file.read()
                json.loads(raw)  # a broken document fails loudly here, not in a client
                _document = raw
    return _document


@router.route("/openapi.json", methods=("GET",), access=OPEN)
def openapi(request):
    return flask.Response(
        openapi_document(),
        status=200,
        mimetype="application/json",
        headers={"Cache-Control": "public, max-age=300"},
    )


@functions_framework.http
def http_openapi(request):
    return router.dispatch(request)
