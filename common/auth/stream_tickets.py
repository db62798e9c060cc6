"""Stream tickets: one-minute HS256 JWTs, signed with AUTH_SECRET, that open one user's inbox
stream (GET /users/<id>/notifications/stream?ticket=...).

A browser's EventSource cannot send an Authorization header, and a user token in a URL would
be written to proxy logs, where it could read the user's data for an hour. A ticket is minted
from that token (POST /users/<id>/notifications/stream-ticket): a copy leaked from a log is
useless a minute later and only ever opened that user's stream. Its own audience keeps
tickets and user tokens apart: neither is accepted where the other is expected.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import jwt

from common.auth.errors import InvalidCredential
from common.auth.user_tokens import ALGORITHM, ISSUER, sign_for_user
from common.model import user_id_problem

AUDIENCE = "notification-service:stream"
LIFETIME = timedelta(seconds=60)  # to open a stream; the stream itself runs until `ends`
ENDS_CLAIM = "stream_ends"  # epoch seconds: when a stream opened with it must close
LEEWAY_SECONDS = 5  # clock differences between the instance that mints and the one that opens


def mint(user_id: str, secret: str, now: datetime, stream_ends: datetime) -> tuple[str, datetime]:
    """(ticket, expires_at) for `user_id`; a stream it opens closes at `stream_ends` (the
    credential that asked for it expires then)."""
    ends = {ENDS_CLAIM: int(stream_ends.timestamp())}
    return sign_for_user(user_id, secret, AUDIENCE, now, now + LIFETIME, **ends)


def verify(ticket: str, secret: str | None) -> tuple[str, float]:
    """(user id, when its stream must end in epoch seconds); InvalidCredential otherwise."""
    if not secret:
        raise InvalidCredential("stream tickets are not enabled here (AUTH_SECRET is not set)")
    try:
        claims = jwt.decode(
            ticket,
            secret,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            issuer=ISSUER,
            options={"require": ["sub", "exp", "iat", ENDS_CLAIM]},
            leeway=LEEWAY_SECONDS,
        )
    except jwt.ExpiredSignatureError:
        raise InvalidCredential("the stream ticket has expired; mint a new one") from None
    except jwt.PyJWTError:
        raise InvalidCredential("the stream ticket is not valid") from None
    if claims["exp"] - claims["iat"] > LIFETIME.total_seconds():
        raise InvalidCredential("the stream ticket lives longer than a minute")
    user_id, ends = claims["sub"], claims[ENDS_CLAIM]
    if not isinstance(user_id, str) or user_id_problem(user_id):
        raise InvalidCredential("the stream ticket names no valid user id")
    if not isinstance(ends, int | float) or isinstance(ends, bool):
        raise InvalidCredential("the stream ticket is not valid")
    return user_id, float(ends)


def jwt_expiry(token: str) -> float | None:
    """The `exp` (epoch seconds) of a bearer JWT the access checks have already accepted (a
    user token, an issuer's token), so that a stream closes when its credential does; None
    for an API key, or a JWT without one."""
    try:
        exp = jwt.decode(token, options={"verify_signature": False}).get("exp")
    except jwt.PyJWTError:
        return None
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None
