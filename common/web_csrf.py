"""CSRF protection for the web forms: a signed, expiring token tied to the session.

Every form carries a token signed with our key over the session's id (after login) or over a
random value kept in an HttpOnly, SameSite=Strict cookie (the login form, before there is a
session). A POST passes only when the token is ours, has not expired, and names the session
(or cookie) of the browser that sends it: another site can neither read these nor forge the
signature, and a token from an ended session is worthless.

The key is CSRF_SECRET, else the token-signing secret (AUTH_SECRET or DATA_DIR/auth.secret).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

import flask
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

COOKIE_NAME = "notify_csrf"
FIELD_NAME = "csrf_token"
VALUE_PATTERN = re.compile(r"^[A-Za-z0-9_-]{32,64}$")
SALT = "notification-service.csrf"


class CsrfRejected(Exception):
    """The POST did not carry a valid token for this session: answer 403, change nothing."""


def cookie_value(request: flask.Request) -> str:
    """The browser's current random value if it has a well-formed one, else a new one.

    Reusing it keeps forms open in several tabs valid at the same time.
    """
    current = request.cookies.get(COOKIE_NAME, "")
    return current if VALUE_PATTERN.match(current) else secrets.token_urlsafe(32)


def _digest(binding: str) -> str:
    return hashlib.sha256(f"csrf:{binding}".encode()).hexdigest()[:32]


def form_token(binding: str, secret: str) -> str:
    """What a form carries for the session (or cookie value) `binding`."""
    return URLSafeTimedSerializer(secret, salt=SALT).dumps(_digest(binding))


def set_cookie(response: flask.Response, value: str, secure: bool) -> None:
    response.set_cookie(
        COOKIE_NAME, value, httponly=True, samesite="Strict", secure=secure, path="/"
    )


def verify(request: flask.Request, binding: str, secret: str, max_age: float) -> None:
    """Raise CsrfRejected unless the form's token is ours, fresh, and for `binding`."""
    check_token(request.form.get(FIELD_NAME, ""), binding, secret, max_age)


def check_token(token: str, binding: str, secret: str, max_age: float) -> None:
    """Raise CsrfRejected unless `token` is ours, fresh, and for `binding`."""
    if not token or not binding:
        raise CsrfRejected("the form's security token or cookie is missing")
    try:
        signed = URLSafeTimedSerializer(secret, salt=SALT).loads(token, max_age=int(max_age))
    except SignatureExpired:
        raise CsrfRejected("the form's security token has expired") from None
    except BadSignature:
        raise CsrfRejected("the form's security token is not ours") from None
    if not isinstance(signed, str) or not hmac.compare_digest(signed, _digest(binding)):
        raise CsrfRejected("the form's security token belongs to another session")
