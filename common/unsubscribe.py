"""One-click unsubscribe (RFC 8058): the signed link each non-transactional email carries in
List-Unsubscribe, and the small pages that link leads to.

The token signs the notification's id only (a uuid, not personal data): the id leads to the
user and the category, so the link says nothing about the recipient to whoever reads it.
"""

from __future__ import annotations

import base64
import hashlib
import html
import logging
import re

from itsdangerous import BadData, URLSafeSerializer

from common.auth.secret_files import auth_secret
from common.config import Settings
from common.model import EMAIL, Notification

log = logging.getLogger("notifications")

SALT = "notify-unsubscribe"  # keeps these signatures apart from anything else the secret signs
# A token of ours is ~80 characters; a longer one is refused before any decoding is tried.
MAX_TOKEN_LENGTH = 200
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_.\-]+")
ONE_CLICK = "List-Unsubscribe=One-Click"

_warned_without_secret = False


class UnsubscribeLinks:
    """Signs notification ids into unsubscribe URLs under `base_url`, and reads them back."""

    def __init__(self, secret: str, base_url: str):
        if not secret:
            raise ValueError("an unsubscribe link needs a secret")
        # The URL goes into a header as it is (see common/channels/email.py): no spaces or
        # control characters may ride along into it.
        if not base_url or re.search(r"[\s<>\x00-\x1f\x7f]", base_url):
            raise ValueError(f"unusable base URL for unsubscribe links: {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self._serializer = URLSafeSerializer(secret, salt=SALT)

    @classmethod
    def from_settings(cls, settings: Settings) -> UnsubscribeLinks | None:
        """Links signed with the auth secret; None (warned once) when there is none, as with
        MongoDB and no AUTH_SECRET: emails then go out without the headers."""
        global _warned_without_secret
        secret = auth_secret(settings)
        if secret:
            return cls(secret, settings.public_url)
        if not _warned_without_secret:
            _warned_without_secret = True
            log.warning(
                "event=unsubscribe_links_disabled reason=no AUTH_SECRET: emails go out "
                "without List-Unsubscribe; set AUTH_SECRET to add one-click unsubscribe"
            )
        return None

    def token(self, notification_id: str) -> str:
        return self._serializer.dumps(notification_id)

    def notification_id(self, token: str) -> str | None:
        """The id a token of ours signs; None for anything else (tampered, foreign, too long)."""
        if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
            return None
        if not TOKEN_PATTERN.fullmatch(token):
            return None
        try:
            value = self._serializer.loads(token)
        except BadData:
            return None
        return value if isinstance(value, str) and value else None

    def url(self, notification_id: str) -> str:
        return f"{self.base_url}/unsubscribe/{self.token(notification_id)}"

    def headers(self, notification: Notification) -> dict[str, str]:
        """The two RFC 8058 headers, or none for a transactional or non-email notification
        (a password reset must not offer a way out of password resets)."""
        if notification.notification_type != EMAIL or notification.transactional:
            return {}
        return {
            "List-Unsubscribe": f"<{self.url(notification.id)}>",
            "List-Unsubscribe-Post": ONE_CLICK,
        }


# -- the pages --------------------------------------------------------------------------------
# Standalone on purpose: a recipient sees no admin navigation and no login, and the page loads
# nothing, so it works wherever this function is deployed. Its one style is allowed by hash.

PAGE_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem;"
    "line-height:1.5;color:#1f2328;background:#fff}"
    "h1{font-size:1.4rem}"
    "button{font:inherit;padding:.5rem 1.2rem;border-radius:.4rem;border:1px solid #1f6feb;"
    "background:#1f6feb;color:#fff;cursor:pointer}"
    "@media (prefers-color-scheme:dark){body{color:#e6edf3;background:#0d1117}}"
)
_STYLE_HASH = base64.b64encode(hashlib.sha256(PAGE_STYLE.encode()).digest()).decode()
PAGE_HEADERS = {
    "Content-Security-Policy": (
        f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",  # the address holds the token: never pass it on
    "Cache-Control": "no-store",
}


def category_words(category: str | None) -> str:
    """How a page names what is unsubscribed: "marketing emails", or all email."""
    return f"{category} emails" if category else "all emails"


def page_html(title: str, text: str, form_action: str | None = None) -> str:
    """A complete small page; with `form_action`, a button that POSTs there to unsubscribe."""
    form = ""
    if form_action is not None:
        form = (
            f'<form method="post" action="{html.escape(form_action)}">'
            f'<input type="hidden" name="List-Unsubscribe" value="One-Click">'
            '<button type="submit">Unsubscribe</button></form>'
        )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="robots" content="noindex">'
        f"<title>{html.escape(title)}</title><style>{PAGE_STYLE}</style></head>"
        f"<body><main><h1>{html.escape(title)}</h1><p>{html.escape(text)}</p>{form}</main>"
        "</body></html>"
    )
