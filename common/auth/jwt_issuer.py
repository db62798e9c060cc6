"""Bearer JWTs from an external OAuth2/OIDC issuer, checked against the issuer's published keys."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import jwt
from jwt.exceptions import InvalidSubjectError

from common.auth.errors import InvalidCredential
from common.auth.principal import SCOPES

log = logging.getLogger("notifications.auth")

# Asymmetric only: with HS* the public key (anyone can fetch it) would become the secret.
MAX_SUBJECT = 256
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA")
SCOPE_PREFIXES = ("notifications:", "notifications.")
KEYS_UNAVAILABLE = "the token issuer's keys could not be fetched"
JWKS_LIFESPAN = 300.0  # seconds: a rotated-in key is seen within this, an unknown kid sooner

# The signature may be empty so that an unsigned (`alg: none`) token is still routed here and
# refused as such, rather than mistaken for some other kind of credential.
_JWT_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")

# What each of PyJWT's refusals tells the caller; the most specific class comes first.
_REASONS: tuple[tuple[type[jwt.PyJWTError], str], ...] = (
    (jwt.ExpiredSignatureError, "the token has expired"),
    (jwt.ImmatureSignatureError, "the token is not valid yet"),
    (jwt.InvalidAudienceError, "the token is not meant for this service"),
    (jwt.InvalidIssuerError, "the token was issued by another issuer"),
    (jwt.InvalidIssuedAtError, "the token's issue time is not valid"),
    (InvalidSubjectError, "the token's subject is not valid"),
    (jwt.InvalidAlgorithmError, "the token's signing algorithm is not accepted"),
    (jwt.InvalidSignatureError, "the token's signature is not valid"),
    (jwt.DecodeError, "the token is malformed"),
    (jwt.InvalidKeyError, "the token's signing key cannot be used"),
)


@dataclass(frozen=True)
class IssuerIdentity:
    subject: str
    scopes: frozenset[str]  # ours only: a subset of common.auth.principal.SCOPES


def looks_like_jwt(token: str) -> bool:
    """Three base64url segments separated by dots (a compact JWS)."""
    return isinstance(token, str) and _JWT_SHAPE.fullmatch(token) is not None


class IssuerTokens:
    """Verifies one issuer's tokens for one audience; keys come from its JWKS, cached."""

    def __init__(
        self,
        issuer: str,
        audience: str,
        jwks_url: str,
        *,
        timeout: float = 5.0,
        leeway: float = 30.0,
    ):
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway
        # The whole key set is cached for JWKS_LIFESPAN; PyJWT's per-kid LRU stays off because
        # it never expires, so a key the issuer withdrew would be trusted for ever.
        self._jwks = jwt.PyJWKClient(
            jwks_url, cache_jwk_set=True, lifespan=JWKS_LIFESPAN, timeout=timeout
        )

    def verify(self, token: str) -> IssuerIdentity:
        """The caller named by a valid token; InvalidCredential (never the token) otherwise."""
        try:
            return self._verify(token)
        except InvalidCredential:
            raise
        except Exception:  # a 401 rather than a 500 on anything PyJWT did not foresee
            log.exception("issuer token check failed unexpectedly")
            raise InvalidCredential("the token could not be verified") from None

    def _verify(self, token: str) -> IssuerIdentity:
        if not looks_like_jwt(token):
            raise InvalidCredential("the token is malformed")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidCredential("the token is malformed") from None
        # Refused before any key lookup, so junk tokens cost no request to the issuer.
        if header.get("alg") not in ALGORITHMS:
            raise InvalidCredential("the token's signing algorithm is not accepted")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidCredential("the token names no signing key")
        key = self._signing_key(kid)
        try:
            # A PyJWK key also pins the algorithm to the key's own, whatever the header says.
            claims = jwt.decode(
                token,
                key,
                algorithms=list(ALGORITHMS),
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                # A weak (under 2048-bit RSA) key in the issuer's set is refused, not trusted.
                options={
                    "require": ["exp", "iss", "aud", "sub"],
                    "enforce_minimum_key_length": True,
                },
            )
        except jwt.PyJWTError as exc:
            raise InvalidCredential(_reason(exc)) from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise InvalidCredential("the token names no subject")
        if len(subject) > MAX_SUBJECT or any(ord(c) < 32 or ord(c) == 127 for c in subject):
            # It names the caller in logs and in its rate-limit bucket.
            raise InvalidCredential("the token's subject is too long or holds control characters")
        return IssuerIdentity(subject=subject, scopes=_our_scopes(claims))

    def _signing_key(self, kid: str) -> jwt.PyJWK:
        # Two steps, so that an unreachable or broken JWKS is told apart from an unknown kid.
        try:
            self._jwks.get_signing_keys()  # served from the cache while it is fresh
        except Exception as exc:  # urllib, JSON and key-set errors alike: the keys are missing
            log.warning("could not fetch the issuer's JWKS: %s", exc)
            raise InvalidCredential(KEYS_UNAVAILABLE) from None
        try:
            # Refetches the set at most once per cooldown when the kid is not in it.
            return self._jwks.get_signing_key(kid)
        except (jwt.PyJWKClientConnectionError, jwt.PyJWKSetError) as exc:
            log.warning("could not refetch the issuer's JWKS: %s", exc)
            raise InvalidCredential(KEYS_UNAVAILABLE) from None
        except jwt.PyJWKClientError as exc:
            log.info("issuer token with an unknown key: %s", exc)
            raise InvalidCredential("the token's signing key is not known") from None


def _our_scopes(claims: dict) -> frozenset[str]:
    """Our scopes named by `scope` (space-separated) or `scp` (list or string); others dropped."""
    named: list[str] = []
    for claim in ("scope", "scp"):
        value = claims.get(claim)
        if isinstance(value, str):
            named.extend(value.split())
        elif isinstance(value, list):
            named.extend(v for v in value if isinstance(v, str))
    return frozenset(filter(None, map(_our_scope, named)))


def _our_scope(name: str) -> str | None:
    for prefix in SCOPE_PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    return name if name in SCOPES else None


def _reason(exc: jwt.PyJWTError) -> str:
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"the token has no '{exc.claim}' claim"  # one of our own required names
    for kind, reason in _REASONS:
        if isinstance(exc, kind):
            return reason
    return "the token is not valid"
