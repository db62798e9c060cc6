"""HTTP plumbing shared by the HTTP functions: a small router, JSON replies, error mapping.

Each HTTP function declares its routes on a `Router`; the local runner reads the same routers
to decide which function serves which path, so routing cannot drift between the two.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import flask
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound, RequestEntityTooLarge
from werkzeug.routing import Map, Rule

from common import cors, web_csrf
from common.auth.principal import SESSION, Principal
from common.auth.rules import AccessRule, needs
from common.errors import (
    Forbidden,
    ServiceError,
    TooManyRequests,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
    ValidationError,
)
from common.runtime import current_settings, get_access, get_service

log = logging.getLogger("notifications.http")

View = Callable[..., Any]


def json_response(data: Any, status: int = 200, headers: dict | None = None) -> flask.Response:
    return flask.Response(
        json.dumps(data, default=str), status=status, headers=headers, mimetype="application/json"
    )


def service_error_response(error: ServiceError) -> flask.Response:
    """The JSON reply for a domain error, with the headers its status calls for."""
    headers: dict[str, str] = {}
    if isinstance(error, Unauthorized):
        headers["WWW-Authenticate"] = WWW_AUTHENTICATE
    if isinstance(error, TooManyRequests):
        headers.update(error.headers)
    return json_response(error.to_dict(), error.http_status, headers=headers)


def principal_of(request: flask.Request) -> Principal | None:
    """Who is calling (set by `Router.dispatch`); None on an open route."""
    return request.environ.get(PRINCIPAL_KEY)


def error_response(status: int, message: str, fields: dict | None = None) -> flask.Response:
    body: dict[str, Any] = {"error": message}
    if fields:
        body["fields"] = fields
    return json_response(body, status)


# Content types a browser may send cross-site without asking first (a "simple" request):
# refusing them for JSON bodies means another site's page cannot post to the API.
FORM_CONTENT_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data", "text/plain")


# Routes whose bodies may be this many times MAX_REQUEST_BYTES (a batch holds many sends).
BODY_LIMIT_FACTORS = {"/notifications/batch": 8}
# Deeper JSON is refused before anything walks it: no request needs it, and Python's own
# recursion would otherwise end in a RecursionError (a 500) somewhere past ~1000 levels.
MAX_JSON_DEPTH = 32
JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
JSON_BRACKET = re.compile(r"[\[\]{}]")
# The environ key where `Router.dispatch` leaves the rule that matched, for `body_limit`.
ROUTE_KEY = "notifications.route"
# ... and the one where it leaves the caller's principal, for the views.
PRINCIPAL_KEY = "notifications.principal"
SESSION_COOKIE = "notify_session"
CSRF_HEADER = "X-CSRF-Token"
WWW_AUTHENTICATE = 'Bearer realm="notifications"'


class PayloadTooLarge(ServiceError):
    """The body is over MAX_REQUEST_BYTES (or the batch endpoint's larger limit)."""

    http_status = 413


def body_limit(request: flask.Request) -> int:
    """The most bytes this request's body may have (MAX_REQUEST_BYTES, more for a batch)."""
    rule = request.environ.get(ROUTE_KEY, "")
    return get_service().settings.max_request_bytes * BODY_LIMIT_FACTORS.get(rule, 1)


def too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the request body is larger than {limit} bytes; send less at once")


def refuse_an_oversized_body(request: flask.Request) -> None:
    """Raise PayloadTooLarge for a declared Content-Length over the limit, before any of the
    body is read; a chunked body is capped by werkzeug while it is read."""
    chunked = "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    if request.content_length == 0 or (request.content_length is None and not chunked):
        return  # no body: nothing to limit (and no settings to look up for a GET)
    limit = body_limit(request)
    request.max_content_length = limit
    if request.content_length is not None and request.content_length > limit:
        raise too_large(limit)


def json_depth_problem(text: str) -> str | None:
    """Why `text` nests too deeply to be parsed, or None: brackets outside strings, counted
    in one pass with no recursion."""
    depth = 0
    for match in JSON_BRACKET.finditer(JSON_STRING.sub("", text)):
        depth += 1 if match.group() in "[{" else -1
        if depth > MAX_JSON_DEPTH:
            return f"the JSON is nested more than {MAX_JSON_DEPTH} levels deep"
    return None


def read_json(request: flask.Request) -> Any:
    """The request body as JSON, or an error that says why it is not.

    A body over the limit is refused before it is read: by its Content-Length, or, sent in
    chunks without one, after reading at most one byte more than the limit."""
    if request.mimetype in FORM_CONTENT_TYPES:
        raise UnsupportedMediaType(
            f"the body is {request.mimetype}; send JSON with Content-Type: application/json"
        )
    limit = body_limit(request)
    if request.content_length is not None:
        if request.content_length > limit:
            raise too_large(limit)
        raw = request.get_data(cache=True)
    else:
        # werkzeug's stream stops at request.max_content_length (set by the Router) and raises
        # RequestEntityTooLarge on the byte past it; without a Router, the length tells.
        raw = request.stream.read(limit + 1)
        if len(raw) > limit or (len(raw) == limit and request.stream.read(1)):
            raise too_large(limit)
    if not raw.strip():
        raise ValidationError("the request body is empty; send a JSON object")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValidationError("the request body is not valid JSON") from None
    problem = json_depth_problem(text)
    if problem:
        raise ValidationError(problem)
    try:
        return json.loads(text)
    except ValueError:
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
            return service_error_response(error)
        except RequestEntityTooLarge:  # werkzeug's cap on a chunked body, met while reading it
            return json_response(too_large(body_limit(flask.request)).to_dict(), 413)
        except HTTPException as error:  # werkzeug refused the request while reading it
            status = error.code or 400
            return error_response(status, error.description or "the request was refused")
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


def host_allowed(host: str, allowed: tuple[str, ...] | None) -> bool:
    """Is the request's Host one this service answers to? A foreign Host is how DNS
    rebinding reaches a service on loopback. None: every host (the setting is unset)."""
    if allowed is None:
        return True
    name = host.lower()
    if name.startswith("["):
        name = name[: name.find("]") + 1]
    elif name.count(":") == 1:
        name = name.partition(":")[0]
    for pattern in allowed:
        if pattern == "*" or pattern == name:
            return True
        if pattern.startswith("*.") and name.endswith(pattern[1:]):
            return True
    return False


def client_address(request: flask.Request) -> str:
    return request.remote_addr or "unknown"


def authenticate(
    request: flask.Request, rule: AccessRule, sessions: bool, cookies: bool = True
) -> Principal:
    """Check the request's credential against `rule`: the principal, or Unauthorized,
    Forbidden or TooManyRequests. With the session cookie, a write outside the web pages
    (`sessions`, whose forms carry their CSRF token) needs the token in X-CSRF-Token;
    `cookies=False` ignores the cookie (another site's page calling the inbox)."""
    cookie = request.cookies.get(SESSION_COOKIE) if cookies else None
    authorization = request.headers.get("Authorization")
    access = get_access()
    principal = access.authenticate(authorization, cookie, client_address(request))
    if principal.kind == SESSION and request.method not in SAFE_METHODS and not sessions:
        # A page's script writing through the API: its CSRF token must name this session.
        session_id = principal.id.partition(":")[2]
        try:
            web_csrf.check_token(
                request.headers.get(CSRF_HEADER, ""),
                session_id,
                access.csrf_secret,
                access.settings.session_seconds,
            )
        except web_csrf.CsrfRejected as error:
            raise Forbidden(
                f"a write with the session cookie needs {CSRF_HEADER}: {error}"
            ) from None
    rule.check(principal, request.view_args or {})
    return principal


@dataclass(frozen=True)
class Route:
    rule: str
    methods: tuple[str, ...]
    view: View
    access: AccessRule


class Router:
    """Path and method dispatch for one function, with JSON 404/405 replies."""

    def __init__(
        self,
        not_found: Callable[[], flask.Response] | None = None,
        too_large: Callable[[str], flask.Response] | None = None,
        refused: Callable[[flask.Request, ServiceError], flask.Response] | None = None,
        sessions: bool = False,
    ) -> None:
        """`not_found` makes the reply for every path no route matches (default: JSON 404);
        `too_large` the reply, given its message, for a body over the limit (default: JSON);
        `refused` the reply to a request refused for its credential (401, 403, 429; default:
        JSON); `sessions`: the session cookie counts on every method (the web pages)."""
        self.routes: list[Route] = []
        self.refused = refused or (lambda _request, error: service_error_response(error))
        self.sessions = sessions
        self.url_map = Map(strict_slashes=False, merge_slashes=False)
        self.not_found = not_found or (lambda: error_response(404, "no route for this path"))
        self.too_large = too_large or (lambda message: error_response(413, message))
        _answer_unroutable_paths_with(self.not_found)

    def route(
        self,
        rule: str,
        methods: tuple[str, ...] = ("GET",),
        access: AccessRule | None = None,
    ) -> Callable[[View], View]:
        """Register a view; `access` says who may call it (default: `admin` only)."""

        def register(view: View) -> View:
            # The endpoint is the route's index, so that one view may serve several rules.
            self.url_map.add(Rule(rule, methods=list(methods), endpoint=len(self.routes)))
            self.routes.append(Route(rule, tuple(methods), guarded(view), access or needs()))
            return view

        return register

    def dispatch(self, request: flask.Request) -> flask.Response:
        try:
            allowed_hosts = current_settings().allowed_hosts
        except ServiceError as error:
            return json_response(error.to_dict(), error.http_status)
        if not host_allowed(request.host, allowed_hosts):
            log.warning("event=host_refused host=%r", request.host[:100])
            return error_response(400, "this service does not answer to that Host name")
        if cors.is_inbox_path(request.path):
            return with_cors_headers(request, self._dispatch(request, inbox=True))
        return self._dispatch(request, inbox=False)

    def _dispatch(self, request: flask.Request, inbox: bool) -> flask.Response:
        """`inbox`: an inbox route, which an allowed origin's page may call with a user token
        (common/cors.py); the session cookie never counts for such a cross-site request."""
        cross_site = is_cross_site(request)
        if inbox and request.method == "OPTIONS":
            return preflight_response(request)
        if request.method not in SAFE_METHODS and cross_site:
            if not (inbox and _allowed_cross_site(request)):
                return error_response(403, "cross-site requests may not change notifications")
        adapter = self.url_map.bind_to_environ(request.environ)
        try:
            endpoint, arguments = adapter.match()
        except MethodNotAllowed as error:
            return method_not_allowed(request.method, error.valid_methods)
        except NotFound:
            return self.not_found()
        route = self.routes[endpoint]
        request.environ[ROUTE_KEY] = route.rule
        if not route.access.open:
            request.view_args = arguments
            try:
                request.environ[PRINCIPAL_KEY] = authenticate(
                    request, route.access, self.sessions, cookies=not (inbox and cross_site)
                )
            except (Unauthorized, Forbidden, TooManyRequests) as error:
                return self.refused(request, error)
            except ServiceError as error:  # the key store could not be reached
                log.warning("event=unavailable view=authenticate error=%s", error.message)
                return json_response(error.to_dict(), error.http_status)
            except Exception:
                log.exception("event=unhandled_error view=authenticate")
                return error_response(500, "internal error; the details are in the service log")
        try:
            refuse_an_oversized_body(request)
        except PayloadTooLarge as error:
            return without_draining(self.too_large(error.message))
        except ServiceError as error:  # the service (its settings) could not be reached
            return json_response(error.to_dict(), error.http_status)
        response = route.view(request, **arguments)
        return without_draining(response) if response.status_code == 413 else response


def _allowed_cross_site(request: flask.Request) -> bool:
    """A cross-site write to an inbox route from an origin INBOX_ALLOWED_ORIGINS lists (its
    user token in Authorization: the cookie does not count for it)."""
    origin = request.headers.get("Origin")
    return cors.allowed_origin(origin, current_settings()) is not None


def preflight_response(request: flask.Request) -> flask.Response:
    """204 to a CORS preflight for an inbox route: the methods and headers it takes, for an
    origin INBOX_ALLOWED_ORIGINS lists (for any other, no Access-Control-Allow-* at all, so
    the browser stops there). It needs no credential: a preflight never carries one."""
    response = flask.Response(status=204)
    for name, value in cors.preflight_headers(request.headers.get("Origin"), current_settings()):
        response.headers[name] = value
    return response


def with_cors_headers(request: flask.Request, response: flask.Response) -> flask.Response:
    """An inbox answer, errors included (a page must be able to read its 401), made readable
    to an allowed origin's page; preflight answers have theirs already."""
    if request.method != "OPTIONS":
        try:
            settings = current_settings()
        except ServiceError:
            return response
        for name, value in cors.cors_headers(request.headers.get("Origin"), settings):
            response.headers[name] = value
    return response


def without_draining(response: flask.Response) -> flask.Response:
    """functions-framework reads the whole body after every reply that is not streamed; a
    refused body must stay unread, so the refusal is sent as a (one-piece) stream."""
    response.response = iter(list(response.response))
    return response


def method_not_allowed(method: str, valid_methods: Any) -> flask.Response:
    """405, with the Allow header RFC 9110 asks for: the methods this path does take."""
    allowed = ", ".join(sorted(valid_methods or []))
    response = error_response(405, f"method {method} not allowed here; use {allowed}")
    response.headers["Allow"] = allowed
    return response
