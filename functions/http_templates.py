"""HTTP function: notification templates, versioned (/templates), and their preview."""

import re

import _repo_root  # noqa: F401  (makes `common` importable under the stock CLI)
import functions_framework

from common.auth.principal import READ, SEND, TEMPLATES
from common.auth.rules import needs
from common.errors import Unavailable, ValidationError
from common.http import Router, json_response, read_json
from common.runtime import get_service, require_valid_settings

require_valid_settings()
router = Router()


def _catalog():
    catalog = get_service().templates
    if catalog is None:  # a service built without a template store (some tests)
        raise Unavailable("templates are not available in this deployment")
    return catalog


def _created(version):
    location = f"/templates/{version.key}/versions/{version.version}"
    return json_response(version.to_dict(), 201, headers={"Location": location})


@router.route("/templates", methods=("POST",), access=needs(TEMPLATES))
def create(request):
    return _created(_catalog().create(read_json(request)))


@router.route("/templates", methods=("GET",), access=needs(READ, TEMPLATES))
def list_templates(request):
    templates = [version.to_dict() for version in _catalog().list()]
    return json_response({"templates": templates, "count": len(templates)})


@router.route("/templates/<key>", methods=("GET",), access=needs(READ, TEMPLATES))
def latest(request, key):
    return json_response(_catalog().get(key).to_dict())


@router.route("/templates/<key>", methods=("PUT",), access=needs(TEMPLATES))
def new_version(request, key):
    return _created(_catalog().update(key, read_json(request)))


@router.route("/templates/<key>", methods=("DELETE",), access=needs(TEMPLATES))
def archive(request, key):
    return json_response(_catalog().archive(key).to_dict())


@router.route(
    "/templates/<key>/versions/<version>", methods=("GET",), access=needs(READ, TEMPLATES)
)
def one_version(request, key, version):
    if not re.fullmatch(r"[0-9]{1,7}", version) or not 1 <= int(version) <= 1_000_000:
        raise ValidationError("invalid version", {"version": "must be a version number"})
    return json_response(_catalog().get(key, int(version)).to_dict())


@router.route("/templates/<key>/preview", methods=("POST",), access=needs(TEMPLATES, SEND, READ))
def preview(request, key):
    body = read_json(request) if request.content_length or request.get_data(cache=True) else {}
    return json_response(_catalog().preview(key, body))


@functions_framework.http
def http_templates(request):
    return router.dispatch(request)
