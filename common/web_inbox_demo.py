"""The inbox demo page (`/inbox/demo`): the embeddable `<notify-inbox>` live for one user, with
a per-user token minted here for the signed-in admin, the lines an application needs, and a
form that sends that user a test in-app notification."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from urllib.parse import urlencode

import flask

from common.errors import Unavailable, ValidationError
from common.model import user_id_problem
from common.runtime import current_settings, get_access, get_service
from common.web import redirect, render

log = logging.getLogger("notifications.web")

DEMO_PATH = "/inbox/demo"
TITLE_LIMIT = 200
MESSAGE_LIMIT = 2000


def embed_lines(origin: str, user_id: str) -> list[str]:
    """What an application adds: its backend mints the user's token, its page loads the script
    and places the element with that token."""
    return [
        f"POST {origin}/users/{user_id}/token   (from your backend, with an API key: gives the token)",
        f'<script src="{origin}/static/inbox.js" defer></script>',
        f'<notify-inbox user-id="{user_id}" token="USER_TOKEN"></notify-inbox>',
    ]


def service_origin(request: flask.Request) -> str:
    """Where applications reach this service: PUBLIC_BASE_URL, else the address this page was
    asked for (its Host passed ALLOWED_HOSTS)."""
    return (current_settings().public_base_url or request.host_url).rstrip("/")


def demo_url(user_id: str, **extra: str) -> str:
    return f"{DEMO_PATH}?{urlencode({'user_id': user_id, **extra})}"


def render_demo(
    request: flask.Request,
    user_id: str,
    *,
    status: int = 200,
    form: Mapping[str, str] | None = None,
    error: str | None = None,
) -> flask.Response:
    """The page: without a user id (or with a bad one) only the form that asks for it."""
    problem = user_id_problem(user_id) if user_id else "is required"
    token = token_problem = None
    if problem is None:
        try:
            token = get_access().mint_user_token(user_id)["token"]
        except Unavailable as refused:  # no AUTH_SECRET: no user tokens here
            token_problem = refused.message
    shown_id = user_id[:128]
    return render(
        request,
        "inbox_demo.html",
        400 if problem and user_id else status,
        active="users",
        user_id=shown_id if problem is None else "",
        typed=shown_id,
        user_error=f"A user id {problem}" if problem and user_id else None,
        token=token,
        token_problem=token_problem,
        lines=embed_lines(service_origin(request), shown_id or "alice"),
        form=dict(form or {"title": "Hello from the demo", "message": "This came live."}),
        error=error,
        sent=request.args.get("sent") == "1",
    )


def send_test(request: flask.Request, posted: Mapping[str, str]) -> flask.Response:
    """The demo form's test notification: in-app, to the page's user; back to the page."""
    user_id = str(posted.get("user_id", ""))
    title = str(posted.get("title", "")).strip()
    message = str(posted.get("message", "")).strip()
    form = {"title": title[:TITLE_LIMIT], "message": message[:MESSAGE_LIMIT]}
    if user_id_problem(user_id):
        return render_demo(request, user_id, status=400)
    payload = {"user_id": user_id, "notification_type": "in_app", "message": message}
    if title:
        payload["title"] = title
    try:
        sent = get_service().submit(payload)
    except ValidationError as refused:
        details = "; ".join(f"{name} {why}" for name, why in refused.fields.items())
        return render_demo(
            request, user_id, status=400, form=form, error=details or refused.message
        )
    except Unavailable as refused:
        return render_demo(request, user_id, status=503, form=form, error=refused.message)
    log.info("event=inbox_demo_sent user=%s notification=%s", user_id, sent.id)
    return redirect(demo_url(user_id, sent="1"))
