"""Stateless CSRF protection for the web forms: a signed double-submit token.

A random value lives in a cookie (HttpOnly, SameSite=Strict); every form carries that value
with an HMAC of it. A POST passes only when the form's value equals the cookie's and the
signature is ours: another site can neither read the cookie nor forge the signature.

The key is CSRF_SECRET, or a random key made once per process. Several processes (workers,
instances) behind one address must share CSRF_SECRET, or a form served by one is refused by
another.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading

import flask

COOKIE_NAME = "notify_csrf"
FIELD_NAME = "csrf_token"
VALUE_PATTERN = re.compile(r"^[A-Za-z0-9_-]{32,64}$")

_lock = threading.Lock()
_process_key: bytes | None = None


class CsrfRejected(Exception):
    """The POST did not carry a token matching the cookie: answer 403, change nothing."""


def _key(secret: str | None) -> bytes:
    global _process_key
    if secret:
        return hashlib.sha256(secret.encode()).digest()
    with _lock:
        if _process_key is None:
            _process_key = secrets.token_bytes(32)
        return _process_key


def _sign(value: str, secret: str | None) -> str:
    return hmac.new(_key(secret), value.encode(), hashlib.sha256).hexdigest()


def cookie_value(request: flask.Request) -> str:
    """The browser's current random value if it has a well-formed one, else a new one.

    Reusing it keeps forms open in several tabs valid at the same time.
    """
    current = request.cookies.get(COOKIE_NAME, "")
    return current if VALUE_PATTERN.match(current) else secrets.token_urlsafe(32)


def form_token(value: str, secret: str | None) -> str:
    """What a form carries for the cookie `value`: the value and its signature."""
    return f"{value}.{_sign(value, secret)}"


def set_cookie(response: flask.Response, value: str, secure: bool) -> None:
    response.set_cookie(
        COOKIE_NAME, value, httponly=True, samesite="Strict", secure=secure, path="/"
    )


def verify(request: flask.Request, secret: str | None) -> None:
    """Raise CsrfRejected unless the form's token matches the cookie and carries our signature."""
    cookie = request.cookies.get(COOKIE_NAME, "")
    value, _, signature = request.form.get(FIELD_NAME, "").partition(".")
    if not (cookie and value and signature):
        raise CsrfRejected("the form's security token or cookie is missing")
    same_value = hmac.compare_digest(cookie.encode(), value.encode())
    signed_by_us = hmac.compare_digest(signature.encode(), _sign(value, secret).encode())
    if not (same_value and signed_by_us):
        raise CsrfRejected("the form's security token does not match")
