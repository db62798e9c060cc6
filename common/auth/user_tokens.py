"""Per-user tokens: short-lived HS256 JWTs, signed with AUTH_SECRET, that read one user's data.

An application's backend mints one for its signed-in user (through POST /users/<id>/token, or
itself with any JWT library, as the README shows) and hands it to that user's browser; the
token can read that user's notifications and nothing else.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import jwt

from common.auth.errors import InvalidCredential
from common.model import user_id_problem

ISSUER = "notification-service"
AUDIENCE = "notification-service:user"
ALGORITHM = "HS256"
MAX_LIFETIME = timedelta(hours=24)


def mint(user_id: str, secret: str, lifetime: timedelta, now: datetime) -> tuple[str, datetime]:
    """(token, expires_at) for `user_id`; `lifetime` at most MAX_LIFETIME."""
    return sign_for_user(user_id, secret, AUDIENCE, now, now + min(lifetime, MAX_LIFETIME))


def sign_for_user(
    user_id: str, secret: str, audience: str, now: datetime, expires_at: datetime, **claims
) -> tuple[str, datetime]:
    """(JWT, expires_at): our claims for `user_id` and `audience` (user tokens, stream
    tickets), signed with AUTH_SECRET, plus any `claims` of the caller's own."""
    claims |= {
        "sub": user_id,
        "iss": ISSUER,
        "aud": audience,
        "iat": int(now.timestamp()),
        "exp": int(expires_at.timestamp()),
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM), expires_at.replace(microsecond=0)


def is_user_token(token: str) -> bool:
    """True when the token says it is one of ours (unverified: only to choose the check)."""
    try:
        return jwt.decode(token, options={"verify_signature": False}).get("iss") == ISSUER
    except jwt.PyJWTError:
        return False


def verify(token: str, secret: str | None) -> str:
    """The user id the token was minted for; InvalidCredential otherwise."""
    if not secret:
        raise InvalidCredential("user tokens are not enabled here (AUTH_SECRET is not set)")
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            issuer=ISSUER,
            options={"require": ["sub", "exp", "iat"]},
            leeway=30,
        )
    except jwt.ExpiredSignatureError:
        raise InvalidCredential("the user token has expired") from None
    except jwt.PyJWTError:
        raise InvalidCredential("the user token is not valid") from None
    if claims["exp"] - claims["iat"] > MAX_LIFETIME.total_seconds():
        raise InvalidCredential("the user token lives longer than 24 h; mint a shorter one")
    user_id = claims["sub"]
    if not isinstance(user_id, str) or user_id_problem(user_id):
        raise InvalidCredential("the user token names no valid user id")
    return user_id
