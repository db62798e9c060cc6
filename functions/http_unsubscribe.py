"""HTTP function: one-click unsubscribe (GET/POST /unsubscribe/<token>, RFC 8058).

GET only shows a page with a button (mail scanners follow links); POST unsubscribes, with no
login: a mail provider posts `List-Unsubscribe=One-Click` from its own servers. The token is
never logged: it is the credential.
"""

import functools
import logging

import _repo_root  # noqa: F401  (makes `common` importable under the stock CLI)
import flask
import functions_framework

from common.auth.rules import OPEN
from common.config import Settings
from common.errors import ServiceError, Unavailable
from common.http import Router
from common.model import Notification
from common.runtime import current_settings, get_service, require_valid_settings
from common.unsubscribe import PAGE_HEADERS, UnsubscribeLinks, category_words, page_html

log = logging.getLogger("notifications")

require_valid_settings()


def page(title: str, text: str, status: int = 200, form_action: str | None = None):
    body = page_html(title, text, form_action)
    return flask.Response(body, status=status, mimetype="text/html", headers=PAGE_HEADERS)


def not_valid():
    return page(
        "This unsubscribe link is not valid",
        "It may have been mistyped or copied only in part, or the email it came from is gone.",
        404,
    )


router = Router(not_found=not_valid)


@functools.lru_cache(maxsize=4)  # once per settings (tests switch them), not per request
def links_for(settings: Settings) -> UnsubscribeLinks | None:
    return UnsubscribeLinks.from_settings(settings)


def notification_of(token: str) -> Notification | None:
    """The notification a token of ours names, if it still exists; None for anything else."""
    links = links_for(current_settings())
    notification_id = links.notification_id(token) if links else None
    return get_service().store.get(notification_id) if notification_id else None


@router.route("/unsubscribe/<token>", methods=("GET", "POST"), access=OPEN)
def unsubscribe(request, token):
    try:
        notification = notification_of(token)
        if notification is None:
            return not_valid()
        if request.method != "POST":
            return page(
                f"Unsubscribe from {category_words(notification.category)}?",
                "Press the button to stop receiving these emails at this address.",
                form_action=request.path,
            )
        service = get_service()
        if service.preferences is None:
            raise Unavailable("no preference store is configured")
        service.preferences.opt_out(
            notification.user_id, notification.category, "email", service.clock()
        )
    except ServiceError as error:  # mostly a store that cannot be reached: ask to come back
        log.warning("event=unsubscribe_failed error=%s", error.message)
        status = 503 if isinstance(error, Unavailable) else 500
        return page("Please try again later", "We could not unsubscribe you just now.", status)
    log.info(
        "notification=%s event=unsubscribed category=%s",
        notification.id,
        notification.category or "*",
    )
    return page(
        f"You are unsubscribed from {category_words(notification.category)}",
        "You will not get these emails from us any more. Nothing else is needed.",
    )


@functions_framework.http
def http_unsubscribe(request):
    return router.dispatch(request)
