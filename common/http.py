"""HTTP plumbing shared by the HTTP functions: a small router, JSON replies, error mapping.

Each HTTP function declares its routes on a `Router`; the local runner reads the same routers
to decide which function serves which path, so routing cannot drift between the two.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import flask
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule

from common.errors import ServiceError, Unavailable, UnsupportedMediaType, ValidationError

log = logging.getLogger("notifications.http")

View = Callable[..., Any]


def json_response(data: Any, status: int = 200, headers: dict | None = None) -> flask.Response:
    return flask.Response(
        json.dumps(data, default=str), status=status, headers=headers, mimetype="application/json"
    )


def error_response(status: int, message: str, fields: dict | None = None) -> flask.Response:
    body: dict[str, Any] = {"error": message}
    if fields:
        body["fields"] = fields
    return json_response(body, status)


# Content types a browser may send cross-site without asking first (a "simple" request):
# refusing them for JSON bodies means another site's page cannot post to the API.
FORM_CONTENT_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data", "text/plain")


def read_json(request: flask.Request) -> Any:
    """The request body as JSON, or an error that says why it is not."""
    if request.mimetype in FORM_CONTENT_TYPES:
        raise UnsupportedMediaType(
            f"the body is {request.mimetype}; send JSON with Content-Type: application/json"
        )
    raw = request.get_data(cache=True)
    if not raw.strip():
        raise ValidationError("the request body is empty; send a JSON object")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ValidationError("the request body is not valid JSON") from None


def guarded(view: View) -> View:
    """Turn domain errors into JSON replies; anything unexpected is logged, never shown."""

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        try:
            return view(*args, **kwargs)
        except Unavailable as error:
            log.warning("event=unavailable view=%s error=%s", view.__name__, error.message)
            return json_response(error.to_dict(), error.http_status)
        except ServiceError as error:
            return json_response(error.to_dict(), error.http_status)
        except Exception:
            log.exception("event=unhandled_error view=%s", view.__name__)
            return error_response(500, "internal error; the details are in the service log")

    return wrapper


SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


def _answer_unroutable_paths_with(not_found: Callable[[], flask.Response]) -> None:
    """functions-framework's Flask app routes every path to the function with `/<path:path>`,
    which cannot match a line break (`%0A`): such a request never reaches the function and
    would get Flask's own HTML 404. A function module creates its Router at import, inside
    that app's context, so the app is told to answer as the function's other 404s do."""
    if flask.has_app_context():
        flask.current_app.register_error_handler(404, lambda _error: not_found())


def is_cross_site(request: flask.Request) -> bool:
    """True for a browser request started by another site's page (API clients send neither)."""
    if request.headers.get("Sec-Fetch-Site") == "cross-site":
        return True
    origin = request.headers.get("Origin")
    if not origin or origin == "null":
        return origin == "null"  # sandboxed frames and some redirects say "null"
    return urlparse(origin).netloc != request.host


@dataclass(frozen=True)
class Route:
    rule: str
    methods: tuple[str, ...]
    view: View


class Router:
    """Path and method dispatch for one function, with JSON 404/405 replies."""

    def __init__(self, not_found: Callable[[], flask.Response] | None = None) -> None:
        """`not_found` makes the reply for every path no route matches (default: JSON 404)."""
        self.routes: list[Route] = []
        self.url_map = Map(strict_slashes=False, merge_slashes=False)
        self.not_found = not_found or (lambda: error_response(404, "no route for this path"))
        _answer_unroutable_paths_with(self.not_found)

    def route(self, rule: str, methods: tuple[str, ...] = ("GET",)) -> Callable[[View], View]:
        def register(view: View) -> View:
            # The endpoint is the route's index, so that one view may serve several rules.
            self.url_map.add(Rule(rule, methods=list(methods), endpoint=len(self.routes)))
            self.routes.append(Route(rule, tuple(methods), guarded(view)))
            return view

        return register

    def dispatch(self, request: flask.Request) -> flask.Response:
        if request.method not in SAFE_METHODS and is_cross_site(request):
            return error_response(403, "cross-site requests may not change notifications")
        adapter = self.url_map.bind_to_environ(request.environ)
        try:
            endpoint, arguments = adapter.match()
        except MethodNotAllowed as error:
            allowed = ", ".join(sorted(error.valid_methods or []))
            return error_response(405, f"method {request.method} not allowed here; use {allowed}")
        except NotFound:
            return self.not_found()
        return self.routes[endpoint].view(request, **arguments)
