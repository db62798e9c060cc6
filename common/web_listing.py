"""A user's notifications as a page: the filters and paging of `GET /users/<id>/notifications`,
the retry and cancel its rows offer, and the user's preferences (common/web_preferences.py)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from urllib.parse import quote, urlencode

import flask

from common import web_preferences
from common.errors import Conflict, NotFound, ValidationError
from common.model import Notification, user_id_problem
from common.runtime import get_service
from common.web import error_page, redirect, render, user_url
from common.web_preferences import PreferenceForm

PAGE_SIZES = ("10", "20", "50", "100")
DEFAULT_PAGE_SIZE = "20"
SHOWN_ID_LENGTH = 64  # how much of a bad user id an error page repeats
# The page lists archived notifications too (the inbox hides them), marked as archived.
SHOWN_ARCHIVED = "all"


@dataclass(frozen=True)
class ListingQuery:
    """The page's query string, as typed; the service validates it."""

    type: str = ""
    status: str = ""
    limit: str = ""
    cursor: str = ""

    @classmethod
    def from_args(cls, args: Mapping[str, str]) -> ListingQuery:
        return cls(**{name: str(args.get(name) or "")[:500] for name in asdict(cls())})

    def params(self, **changes: str) -> dict[str, str]:
        return {k: v for k, v in asdict(replace(self, **changes)).items() if v}

    @property
    def page_size(self) -> str:
        return self.limit or DEFAULT_PAGE_SIZE


def api_url(user_id: str, query: ListingQuery) -> str:
    """The JSON API address for the same listing, which the page polls for live updates."""
    params = {**query.params(limit=query.page_size), "archived": SHOWN_ARCHIVED}
    return f"/users/{quote(user_id, safe='@:+')}/notifications?{urlencode(params)}"


def not_a_user_id_page(user_id: str) -> flask.Response | None:
    """A 400 page naming what is wrong when no notification can belong to `user_id`; None for
    an id that follows the rule (an id with no notifications yet is still a user's page)."""
    problem = user_id_problem(user_id)
    if problem is None:
        return None
    shown = user_id[:SHOWN_ID_LENGTH] + ("…" if len(user_id) > SHOWN_ID_LENGTH else "")
    return error_page(400, "Not a user id", f"“{shown}” is not a user id: a user id {problem}.")


def render_user_page(
    request: flask.Request,
    user_id: str,
    query: ListingQuery,
    *,
    notice: str | None = None,
    status: int = 200,
    preferences: PreferenceForm | None = None,
) -> flask.Response:
    """The page; `preferences`: the preferences form as posted (with its errors) to show."""
    errors: dict[str, str] = {}
    items: list[Notification] = []
    next_cursor = None
    try:
        page = get_service().list_for_user(
            user_id,
            notification_type=query.type,
            status=query.status,
            limit=query.page_size,
            cursor=query.cursor,
            archived=SHOWN_ARCHIVED,
        )
        items, next_cursor = page.items, page.next_cursor
    except ValidationError as error:
        errors = dict(error.fields)
        status = 400
    document, preferences_problem = web_preferences.load(user_id)
    if preferences is None and document is not None:
        preferences = PreferenceForm.from_document(document)
    zone = (document or {}).get("timezone")
    return render(
        request,
        "user.html",
        status,
        active="users",
        user_id=user_id,
        query=query,
        page_sizes=PAGE_SIZES,
        notifications=[_shown(n, zone) for n in items],
        errors=errors,
        notice=notice,
        retried=request.args.get("retried", "")[:64],
        cancelled=request.args.get("cancelled", "")[:64],
        saved=request.args.get("saved") == "preferences",
        preferences=preferences,
        preferences_problem=preferences_problem,
        timezones=web_preferences.COMMON_TIMEZONES,
        overrides=web_preferences.OVERRIDES,
        weekdays=web_preferences.WEEKDAYS,
        api_url=api_url(user_id, query),
        this_url=user_url(user_id, **query.params()),
        next_url=user_url(user_id, **query.params(cursor=next_cursor)) if next_cursor else None,
        first_url=user_url(user_id, **query.params(cursor="")) if query.cursor else None,
    )


def _shown(notification: Notification, zone: str | None) -> dict:
    shown = notification.to_dict()
    shown["send_at_local"] = web_preferences.local_time(notification.send_at, zone)
    return shown


def _own(user_id: str, notification_id: str) -> str:
    """The id, if it names one of this user's notifications: another user's is not found here."""
    if not notification_id or get_service().get(notification_id).user_id != user_id:
        raise NotFound(f"user {user_id} has no notification {notification_id or '(none)'}")
    return notification_id


def retry_for_user(user_id: str, notification_id: str) -> Notification:
    """Manual retry from the user's page."""
    return get_service().retry(_own(user_id, notification_id))


def cancel_for_user(user_id: str, notification_id: str) -> Notification:
    """Cancel from the user's page, while no provider has it yet."""
    return get_service().cancel(_own(user_id, notification_id))


def post_to_user_page(
    request: flask.Request, user_id: str, query: ListingQuery, posted: Mapping[str, str]
) -> flask.Response:
    """One of the page's forms (its `action`: retry, the default, cancel or preferences);
    a redirect back when done, the page with the problem otherwise."""
    action = posted.get("action") or "retry"
    if action == "preferences":
        form, saved = web_preferences.save(user_id, posted)
        if not saved:
            return render_user_page(request, user_id, query, status=400, preferences=form)
        return redirect(user_url(user_id, **query.params(), saved="preferences") + "#preferences")
    moves = {"retry": (retry_for_user, "retried"), "cancel": (cancel_for_user, "cancelled")}
    if action not in moves:
        raise ValidationError("unknown action", {"action": "must be retry, cancel or preferences"})
    move, done = moves[action]
    notification_id = posted.get("notification_id", "")
    try:
        move(user_id, notification_id)
    except Conflict as error:
        return render_user_page(request, user_id, query, notice=error.message, status=409)
    return redirect(user_url(user_id, **query.params(), **{done: notification_id}))
