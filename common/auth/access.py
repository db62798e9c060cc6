"""Checking credentials: bearer API keys, ADMIN_API_KEY, per-user tokens, issuer JWTs and the
web pages' session cookie, and managing the keys.

HTTP stays out of here: callers pass the header and cookie values, so every rule is tested
without a request.
"""

from __future__ import annotations

import hmac
import logging
import math
import re
import secrets
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from common.auth import sessions, user_tokens
from common.auth.api_keys import ApiKey, iso_time, new_key, parse_key
from common.auth.errors import InvalidCredential
from common.auth.jwt_issuer import looks_like_jwt
from common.auth.key_store import KeyStore
from common.auth.principal import (
    ADMIN,
    ADMIN_ENV,
    API_KEY,
    ISSUER_JWT,
    SESSION,
    USER_TOKEN,
    Principal,
)
from common.auth.secret_files import auth_secret
from common.config import Settings
from common.errors import Forbidden, NotFound, TooManyRequests, Unauthorized, Unavailable
from common.model import user_id_problem, utcnow

log = logging.getLogger("notifications.auth")

# How long this process remembers a client's failed credential (then the limit store alone
# decides, the next time that client fails).
FAILURE_MEMORY = 300.0
ADMIN_ENV_PRINCIPAL = Principal(ADMIN_ENV, "admin-env", frozenset({ADMIN}))
MAX_TOKEN_LENGTH = 8192


def bearer_token(authorization: str | None) -> str | None:
    """The token of `Authorization: Bearer <token>`, None when no header was sent."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("send the credential as 'Authorization: Bearer <key or token>'")
    token = token.strip()
    if len(token) > MAX_TOKEN_LENGTH:
        raise Unauthorized("the bearer token is too long to be one of ours")
    return token


class Access:
    def __init__(
        self,
        settings: Settings,
        keys: KeyStore,
        limiter=None,
        issuer=None,
        clock: Callable[[], datetime] = utcnow,
    ):
        """`limiter`: a common.limits Limiter (failed-credential slowing, send rates), or None;
        `issuer`: a common.auth.jwt_issuer IssuerTokens when AUTH_JWT_* are set."""
        self.settings = settings
        self.keys = keys
        self.limiter = limiter
        self.issuer = issuer
        self.clock = clock
        self.token_secret = auth_secret(settings)
        # Sessions need a key even where user tokens are off (MongoDB without AUTH_SECRET):
        # one of this process's own, so a login holds on this instance only.
        self.session_secret = self.token_secret or secrets.token_urlsafe(48)
        # Clients that presented a bad credential to this process lately (monotonic time).
        self._failures_seen: dict[str, float] = {}
        self._failures_lock = threading.Lock()

    # -- who is calling ------------------------------------------------------------------------

    def authenticate(
        self, authorization: str | None, session_cookie: str | None, client: str
    ) -> Principal:
        """The caller's principal; Unauthorized (401) without a valid credential, and
        TooManyRequests (429) for a client that presented too many bad ones lately.

        A valid credential costs no limit-store access: only a client this process saw fail
        lately is looked up before its credential is checked."""
        token = bearer_token(authorization)
        if token is None and not session_cookie:
            raise Unauthorized("this request needs a credential: 'Authorization: Bearer <key>'")
        if self._failed_lately(client):
            self._refuse_a_guessing_client(client)
        try:
            if token is not None:
                return self.principal_for_bearer(token)
            principal = self.principal_for_session(session_cookie or "")
            if principal is None:
                raise InvalidCredential("the session has expired; log in again")
            return principal
        except InvalidCredential as error:
            log.warning("event=credential_refused client=%s reason=%s", client, error.reason)
            self._record_failure(client)
            raise Unauthorized(error.reason) from None

    def _failed_lately(self, client: str) -> bool:
        with self._failures_lock:
            seen = self._failures_seen.get(client)
            return seen is not None and time.monotonic() - seen < FAILURE_MEMORY

    def _record_failure(self, client: str) -> None:
        if self.limiter is None:
            return
        with self._failures_lock:
            if len(self._failures_seen) > 10_000:  # bounded: a flood of addresses forgets
                self._failures_seen.clear()
            self._failures_seen[client] = time.monotonic()
        self.limiter.record_failed_credential(client)
        self._refuse_a_guessing_client(client)

    def _refuse_a_guessing_client(self, client: str) -> None:
        if self.limiter is None:
            return
        wait = self.limiter.client_blocked(client)
        if wait is not None:
            log.warning("event=client_slowed client=%s wait=%.0f", client, wait)
            raise TooManyRequests(
                "too many failed credentials from this client; wait before trying again", wait
            )

    def principal_for_bearer(self, token: str) -> Principal:
        key_id = parse_key(token)
        if key_id is not None:
            return self._key_principal(key_id, token)
        admin = self.settings.admin_api_key
        if admin and hmac.compare_digest(token.encode(), admin.encode()):
            return ADMIN_ENV_PRINCIPAL
        if looks_like_jwt(token):
            if user_tokens.is_user_token(token):
                user_id = user_tokens.verify(token, self.token_secret)
                return Principal(USER_TOKEN, f"user:{user_id}", frozenset(), user_id=user_id)
            if self.issuer is not None:
                identity = self.issuer.verify(token)
                return Principal(ISSUER_JWT, f"jwt:{identity.subject}", identity.scopes)
        raise InvalidCredential("the bearer token is not a key or token this service accepts")

    def _key_principal(self, key_id: str, token: str) -> Principal:
        key = self.keys.get(key_id)
        if key is None or not key.matches(token):
            raise InvalidCredential("the API key is not valid")
        now = self.clock()
        problem = key.usable(now)
        if problem:
            raise InvalidCredential(problem)
        self.keys.touch(key.id, now)
        return key.principal()

    def principal_for_session(self, cookie: str) -> Principal | None:
        """The admin behind a session cookie while both are still valid, else None."""
        session = sessions.read_session(cookie, self.session_secret, self.settings.session_seconds)
        if session is None:
            return None
        kind, _, credential_id = session.credential.partition(":")
        if kind == API_KEY:
            key = self.keys.get(credential_id)
            if key is None or key.usable(self.clock()) or ADMIN not in key.scopes:
                return None
        elif kind == ADMIN_ENV:
            admin = self.settings.admin_api_key
            if not admin or sessions.fingerprint(admin) != credential_id:
                return None
        else:
            return None
        return Principal(SESSION, f"session:{session.id}", frozenset({ADMIN}))

    @property
    def csrf_secret(self) -> str:
        """Signs the web forms' CSRF tokens: CSRF_SECRET (or the seed's SECRET_KEY), else the
        session key."""
        return self.settings.csrf_secret or self.session_secret

    # -- the web pages' login ------------------------------------------------------------------

    def log_in(self, key_text: str, client: str) -> tuple[str, str]:
        """(cookie value, session id) for an admin credential; Unauthorized, Forbidden or
        TooManyRequests otherwise."""
        principal = self.authenticate(f"Bearer {key_text.strip()}", None, client)
        if not principal.has(ADMIN) or principal.kind not in (API_KEY, ADMIN_ENV):
            raise Forbidden("the web pages need an API key with the admin scope")
        if principal.kind == API_KEY:
            credential = f"{API_KEY}:{principal.id}"
        else:
            credential = f"{ADMIN_ENV}:{sessions.fingerprint(self.settings.admin_api_key)}"
        session, cookie = sessions.new_session(credential, self.session_secret)
        log.info("event=logged_in credential=%s session=%s", principal.id, session.id[:8])
        return cookie, session.id

    def session_id(self, cookie: str | None) -> str | None:
        session = sessions.read_session(
            cookie or "", self.session_secret, self.settings.session_seconds
        )
        return session.id if session else None

    # -- per-user tokens -----------------------------------------------------------------------

    def mint_user_token(self, user_id: str, lifetime_seconds: object = None) -> dict:
        from common.errors import ValidationError

        problem = user_id_problem(user_id)
        if problem:
            raise ValidationError("invalid user id", {"user_id": f"a user id {problem}"})
        if self.token_secret is None:
            raise Unavailable(
                "user tokens need AUTH_SECRET: set it (the same on every instance) to mint them"
            )
        seconds = self.settings.user_token_seconds
        if lifetime_seconds is not None:
            valid = isinstance(lifetime_seconds, int | float) and not isinstance(
                lifetime_seconds, bool
            )
            if not valid or not 10 <= lifetime_seconds <= 86400:
                raise ValidationError(
                    "invalid token lifetime",
                    {"expires_in": "must be a number of seconds from 10 to 86400 (24 h)"},
                )
            seconds = float(lifetime_seconds)
        token, expires_at = user_tokens.mint(
            user_id, self.token_secret, timedelta(seconds=seconds), self.clock()
        )
        return {"token": token, "user_id": user_id, "expires_at": iso_time(expires_at)}

    # -- managing keys -------------------------------------------------------------------------

    def create_key(
        self, name: object, scopes: object, expires_in: object = None, rate_limit: object = None
    ) -> tuple[ApiKey, str]:
        key, secret = new_key(name, scopes, self.clock(), expires_in, rate_limit)
        self.keys.add(key)
        log.info("event=key_created key=%s scopes=%s", key.id, ",".join(key.scopes))
        return key, secret

    def list_keys(self) -> list[ApiKey]:
        return self.keys.all()

    def revoke_key(self, key_id: str) -> ApiKey:
        key = self.keys.revoke(key_id, self.clock()) if parse_key_id(key_id) else None
        if key is None:
            raise NotFound(f"API key {key_id[:40]!r} not found")
        log.info("event=key_revoked key=%s", key.id)
        return key

    # -- limits --------------------------------------------------------------------------------

    def take_send(self, principal: Principal, cost: int) -> dict[str, str]:
        """Take `cost` notifications from the credential's bucket: the RateLimit headers to
        send back, or TooManyRequests (with them) when the bucket cannot pay."""
        rate = self.send_rate(principal)
        if not rate or self.limiter is None:
            return {}
        decision = self.limiter.take_send(principal.id, max(1, cost), rate)
        headers = {
            "RateLimit-Limit": str(decision.limit),
            "RateLimit-Remaining": str(decision.remaining),
            "RateLimit-Reset": str(decision.reset_whole),
        }
        if not decision.allowed:
            log.warning(
                "event=rate_limited credential=%s cost=%d rate=%g", principal.id, cost, rate
            )
            message = (
                f"rate limit reached: this credential may send {rate:g} notifications per "
                f"second (bursts up to {decision.limit}); this request needs {cost}"
            )
            if not math.isfinite(decision.retry_after):
                message += "; send it in smaller batches"
            raise TooManyRequests(message, decision.retry_after, headers)
        return headers

    def send_rate(self, principal: Principal) -> float:
        if principal.send_rate is not None:
            return principal.send_rate
        return self.settings.send_rate_limit


def parse_key_id(text: str) -> bool:
    return re.fullmatch(r"[a-z0-9]{12}", text) is not None
