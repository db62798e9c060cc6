"""The web pages' session: a signed, expiring cookie made at login from an admin credential.

The cookie carries a random session id and which credential logged in (a key id, or a
fingerprint of ADMIN_API_KEY), never the credential itself. Each request checks that this
credential is still valid, so revoking the key (or changing ADMIN_API_KEY) ends its sessions.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeTimedSerializer

COOKIE_NAME = "notify_session"
SALT = "notification-service.session"


@dataclass(frozen=True)
class Session:
    id: str
    credential: str  # "api_key:<id>" or "admin_env:<fingerprint>"


def fingerprint(secret: str) -> str:
    """Names ADMIN_API_KEY in a cookie without revealing it."""
    return hashlib.sha256(f"session:{secret}".encode()).hexdigest()[:16]


def _serializer(secret: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret, salt=SALT)


def new_session(credential: str, secret: str) -> tuple[Session, str]:
    """A session and its cookie value."""
    session = Session(secrets.token_urlsafe(16), credential)
    return session, _serializer(secret).dumps([session.id, session.credential])


def read_session(value: str, secret: str, max_age: float) -> Session | None:
    """The session a cookie holds if we signed it and it has not expired, else None."""
    if not value or len(value) > 512:
        return None
    try:
        session_id, credential = _serializer(secret).loads(value, max_age=int(max_age))
    except (BadSignature, ValueError, TypeError):
        return None
    if not isinstance(session_id, str) or not isinstance(credential, str):
        return None
    return Session(session_id, credential)
