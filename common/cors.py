"""Cross-origin access for the inbox only: an application's page on another origin (listed in
INBOX_ALLOWED_ORIGINS) may call the inbox endpoints and open the stream with a user token.

No credentials mode (cookies) is allowed: the page sends the user token itself, so another
site can do nothing a page without the token could not. Every other endpoint stays
same-origin.
"""

from __future__ import annotations

import re

from common.config import Settings

# The inbox's routes, as request paths: the listing, the counts, the state actions, the bulk
# ones, the stream ticket and the stream. Any other path gets no CORS headers at all.
INBOX_PATHS = (
    re.compile(r"/users/[^/]+/notifications(/counts|/read-all|/seen-all|/stream-ticket|/stream)?"),
    re.compile(r"/notifications/[^/]+/(read|unread|archive|unarchive|seen)"),
)

ALLOWED_METHODS = "GET, POST, OPTIONS"
ALLOWED_HEADERS = "Authorization, Content-Type, Last-Event-ID"
PREFLIGHT_MAX_AGE = "600"


def is_inbox_path(path: str) -> bool:
    """Does this request path name one of the inbox's routes (a trailing slash allowed)?"""
    path = path.rstrip("/") if path != "/" else path
    return any(pattern.fullmatch(path) for pattern in INBOX_PATHS)


def is_inbox_rule(rule: str) -> bool:
    """Does a router's rule (`/users/<user_id>/notifications/counts`) name an inbox route?"""
    return is_inbox_path(re.sub(r"<[^>]+>", "x", rule))


def allowed_origin(origin: str | None, settings: Settings) -> str | None:
    """`origin` itself when INBOX_ALLOWED_ORIGINS lists it (case-insensitive), else None."""
    if not origin or origin.lower().rstrip("/") not in settings.inbox_allowed_origins:
        return None
    return origin


def cors_headers(origin: str | None, settings: Settings) -> list[tuple[str, str]]:
    """The headers an inbox answer carries for a request from `origin`."""
    headers = [("Vary", "Origin")]  # a cache must not serve one origin's answer to another
    if allowed_origin(origin, settings):
        headers.append(("Access-Control-Allow-Origin", origin))
    return headers


def preflight_headers(origin: str | None, settings: Settings) -> list[tuple[str, str]]:
    """The answer to an OPTIONS preflight: the methods and headers the inbox takes."""
    headers = cors_headers(origin, settings)
    if allowed_origin(origin, settings):
        headers += [
            ("Access-Control-Allow-Methods", ALLOWED_METHODS),
            ("Access-Control-Allow-Headers", ALLOWED_HEADERS),
            ("Access-Control-Max-Age", PREFLIGHT_MAX_AGE),
        ]
    return headers
