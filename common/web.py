"""Rendering for the web pages: the Jinja2 templates under templates/, the CSRF cookie every page
sets, security headers, HTML error pages and the static files.

Pages call the service in-process; the browser then polls the JSON API for live updates.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import flask
import jinja2
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.exceptions import NotFound as NoSuchFile

from common import web_csrf
from common.errors import NotFound, ServiceError, ValidationError
from common.http import SESSION_COOKIE, body_limit
from common.lifecycle import CANCEL, RETRYABLE_BY_HAND
from common.model import (
    CANCELLED,
    EMAIL,
    FAILED_PERMANENTLY,
    IN_APP,
    PENDING,
    QUEUED,
    RETRY_SCHEDULED,
    SCHEDULED,
    SENDING,
    SENT,
    SMS,
    STATUSES,
    SUPPRESSED,
    TYPES,
)
from common.runtime import current_settings, get_access
from common.web_forms import MAX_FORM_FIELDS

log = logging.getLogger("notifications.web")

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES_DIR = ROOT / "templates"
STATIC_DIR = TEMPLATES_DIR / "static"

STATUS_LABELS = {
    SCHEDULED: "Scheduled",
    PENDING: "Pending",
    QUEUED: "Queued",
    SENDING: "Sending",
    SENT: "Sent",
    RETRY_SCHEDULED: "Retry scheduled",
    FAILED_PERMANENTLY: "Failed",
    CANCELLED: "Cancelled",
    SUPPRESSED: "Suppressed",
}
# The statuses whose status_reason says something (others may keep a stale one).
REASONED = (SCHEDULED, CANCELLED, SUPPRESSED)
TYPE_LABELS = {IN_APP: "In-app", EMAIL: "Email", SMS: "SMS"}
# An in-app notification's place in the user's inbox (the user page, beside its status).
INBOX_LABELS = {"unread": "Unread", "seen": "Seen, unread", "read": "Read", "archived": "Archived"}
NAV = (
    ("/", "Home", "home"),
    ("/send-notification", "Send", "send"),
    ("/users", "Users", "users"),
    ("/dashboard", "Dashboard", "dashboard"),
    ("/message-templates", "Templates", "templates"),
)
# Pages load nothing from elsewhere and run no inline script: the policy says so to the browser.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
        "object-src 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}

View = Callable[..., flask.Response]


def static_url(name: str) -> str:
    """The file's address with a version taken from its size and age, so caches never go stale."""
    try:
        info = (STATIC_DIR / name).stat()
        version = f"{int(info.st_mtime):x}{info.st_size:x}"
    except OSError:
        version = "0"
    return f"/static/{name}?v={version}"


def user_url(user_id: str, **query: str | None) -> str:
    path = f"/users/{quote(user_id, safe='@:+')}"
    params = {key: value for key, value in query.items() if value}
    return f"{path}?{urlencode(params)}" if params else path


def format_time(value: str | datetime | None) -> str:
    """An absolute UTC time for people; the page's script turns it into local and relative."""
    if not value:
        return ""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
    return value.astimezone(UTC).strftime("%d %b %Y, %H:%M:%S UTC")


def human_duration(seconds: float) -> str:
    for size, unit in ((3600, "h"), (60, "min")):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)} {unit}"
    return f"{seconds:g} s"


@functools.cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.globals.update(
        nav=NAV,
        static=static_url,
        user_url=user_url,
        status_labels=STATUS_LABELS,
        type_labels=TYPE_LABELS,
        inbox_labels=INBOX_LABELS,
        statuses=STATUSES,
        types=TYPES,
        retryable=RETRYABLE_BY_HAND,
        cancellable=CANCEL.sources,
        reasoned=REASONED,
    )
    env.filters["when"] = format_time
    env.filters["duration"] = human_duration
    return env


def _html(body: str, status: int) -> flask.Response:
    """Every page, error pages included, carries the security headers."""
    response = flask.Response(body, status=status, mimetype="text/html")
    response.headers["Cache-Control"] = "no-store"
    response.headers.update(SECURITY_HEADERS)
    return response


def csrf_secret() -> str:
    return get_access().csrf_secret


def csrf_binding(request: flask.Request) -> tuple[str, bool]:
    """What this browser's form tokens are tied to: (its session id, True) once logged in,
    else (its CSRF cookie's value, False)."""
    session_id = get_access().session_id(request.cookies.get(SESSION_COOKIE))
    if session_id:
        return session_id, True
    return web_csrf.cookie_value(request), False


def verify_csrf(request: flask.Request) -> None:
    binding, logged_in = csrf_binding(request)
    if not logged_in and web_csrf.COOKIE_NAME not in request.cookies:
        raise web_csrf.CsrfRejected("the form's security cookie is missing")
    web_csrf.verify(request, binding, csrf_secret(), current_settings().session_seconds)


def render(request: flask.Request, template: str, status: int = 200, **context: Any):
    """A page, with the CSRF token its forms carry (tied to the session, or before login to
    a cookie that this reply sets)."""
    binding, logged_in = csrf_binding(request)
    token = web_csrf.form_token(binding, csrf_secret())
    context.setdefault("active", "")
    context.setdefault("logged_in", logged_in)
    page = environment().get_template(template).render(csrf_token=token, **context)
    response = _html(page, status)
    if not logged_in:
        web_csrf.set_cookie(response, binding, secure=request.is_secure)
    return response


def error_page(status: int, title: str, detail: str) -> flask.Response:
    """An error as a page (no service call, so it renders even when the backends are down)."""
    body = (
        environment()
        .get_template("error.html")
        .render(
            status=status,
            title=title,
            detail=detail,
            active="",
            csrf_token="",
            logged_in=False,
        )
    )
    return _html(body, status)


def local_path(text: str | None) -> str:
    """Where to go after login: a path on this site only (never `//host` or a URL)."""
    if not text or not text.startswith("/") or text.startswith(("//", "/\\")):
        return "/"
    if any(ord(c) < 32 for c in text) or len(text) > 2000:
        return "/"
    return text


def refused_page(request: flask.Request, error: ServiceError) -> flask.Response:
    """A page request refused for its credential: to the login page when there is none."""
    if error.http_status == 401 and request.method in ("GET", "HEAD"):
        target = request.full_path if request.query_string else request.path
        return redirect(f"/login?{urlencode({'next': target})}")
    titles = {401: "Please log in", 403: "Not allowed", 429: "Too many attempts"}
    response = error_page(
        error.http_status, titles.get(error.http_status, "Refused"), error.message
    )
    response.headers.update(getattr(error, "headers", {}))
    return response


def too_large_page(message: str) -> flask.Response:
    return error_page(413, "Too much to send", f"Nothing was sent: {message}.")


def read_form(request: flask.Request) -> MultiDict:
    """The posted form, refused (400 or 413, never parsed without bound) when it has more
    fields than any of our forms or more bytes than MAX_REQUEST_BYTES."""
    request.max_form_parts = MAX_FORM_FIELDS  # multipart: werkzeug stops after this many
    request.max_form_memory_size = body_limit(request)
    form = request.form
    if sum(len(values) for _, values in form.lists()) > MAX_FORM_FIELDS:
        raise ValidationError(f"the form has more than {MAX_FORM_FIELDS} fields")
    return form


def redirect(location: str) -> flask.Response:
    """303: after a POST, the browser GETs the result, so reloading never posts again."""
    return flask.Response(status=303, headers={"Location": location})


def page(view: View) -> View:
    """HTML error pages instead of JSON ones, and the security headers on every reply."""

    @functools.wraps(view)
    def wrapper(request: flask.Request, **kwargs: Any) -> flask.Response:
        try:
            response = view(request, **kwargs)
        except web_csrf.CsrfRejected as error:
            log.warning("event=csrf_rejected path=%s reason=%s", request.path, error)
            response = error_page(
                403,
                "This form has expired",
                "Nothing was sent. The form was missing its security token, or was opened in "
                "another browser session. Go back, reload the form and send it again.",
            )
        except NotFound as error:
            response = error_page(404, "Not found", error.message)
        except RequestEntityTooLarge:  # werkzeug's caps, met while reading the form
            response = too_large_page("the form is larger than this service accepts")
        except HTTPException as error:
            response = error_page(error.code or 400, "Something went wrong", error.description)
        except ServiceError as error:
            response = error_page(error.http_status, "Something went wrong", error.message)
        except Exception:
            log.exception("event=unhandled_error view=%s", view.__name__)
            response = error_page(
                500, "Something went wrong", "The details are in the service log."
            )
        response.headers.update(SECURITY_HEADERS)
        return response

    return wrapper


def share_static_folder() -> None:
    """Call at import: functions-framework's Flask app keeps Flask's own `/static/<filename>`
    rule, matched before the function sees a request; point it at templates/static as well."""
    if flask.has_app_context():
        flask.current_app.static_folder = str(STATIC_DIR)


def static_file(name: str) -> flask.Response:
    try:
        response = flask.send_from_directory(STATIC_DIR, name, max_age=86400)
    except NoSuchFile:
        return error_page(404, "Not found", f"There is no file {name!r} here.")
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
