"""Issuer JWTs: real RS256 tokens checked against a JWKS served on loopback, and the forgeries."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from common.auth.errors import InvalidCredential
from common.auth.jwt_issuer import IssuerIdentity, IssuerTokens, looks_like_jwt
from tests.support.fixtures import unused_port
from tests.support.jwks import (  # noqa: F401 (fixtures)
    AUDIENCE,
    ISSUER,
    KID,
    jwks_url_fixture,
    other_key_fixture,
    signing_key_fixture,
)


@pytest.fixture(name="tokens")
def tokens_fixture(jwks_url: str) -> IssuerTokens:
    return IssuerTokens(ISSUER, AUDIENCE, jwks_url, timeout=2.0, leeway=0)


def _claims(**changes: object) -> dict:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "client-42", "iat": now, "exp": now + 300}
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}  # None drops a claim


def _sign(key: rsa.RSAPrivateKey, kid: str = KID, **changes: object) -> str:
    return jwt.encode(_claims(**changes), key, algorithm="RS256", headers={"kid": kid})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segments(header: dict, claims: dict) -> str:
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"


def _refused(tokens: IssuerTokens, token: str) -> str:
    with pytest.raises(InvalidCredential) as caught:
        tokens.verify(token)
    reason = caught.value.reason
    # An empty token is "in" every string: only a real one can leak.
    assert reason and (not token or token not in f"{reason} {caught.value}")
    return reason


def test_a_valid_token_gives_its_subject_and_our_scopes(tokens, signing_key):
    token = _sign(signing_key, scope="send notifications:read openid profile notifications.bogus")
    assert tokens.verify(token) == IssuerIdentity("client-42", frozenset({"send", "read"}))


def test_scp_as_a_list_or_a_string_with_both_prefixes(tokens, signing_key):
    listed = _sign(signing_key, scp=["notifications.retry", "templates", "email", 7, "other:admin"])
    assert tokens.verify(listed).scopes == {"retry", "templates"}
    spaced = _sign(signing_key, scp="notifications:admin read", scope="send")
    assert tokens.verify(spaced).scopes == {"admin", "read", "send"}


def test_a_token_without_scopes_is_valid_with_none(tokens, signing_key):
    assert tokens.verify(_sign(signing_key)).scopes == frozenset()


def test_the_audience_may_be_one_of_several(tokens, signing_key):
    token = _sign(signing_key, aud=["another-api", AUDIENCE])
    assert tokens.verify(token).subject == "client-42"


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"exp": int(time.time()) - 60}, "expired"),
        ({"nbf": int(time.time()) + 600}, "not valid yet"),
        ({"aud": "someone-else"}, "not meant for this service"),
        ({"iss": "https://evil.example.test/"}, "another issuer"),
        ({"exp": None}, "'exp'"),
        ({"sub": None}, "'sub'"),
        ({"sub": ""}, "subject"),
    ],
    ids=["expired", "nbf-future", "wrong-aud", "wrong-iss", "no-exp", "no-sub", "empty-sub"],
)
def test_refused_claims(tokens, signing_key, changes, expected):
    assert expected in _refused(tokens, _sign(signing_key, **changes))


def test_alg_none_is_refused(tokens):
    token = _segments({"alg": "none", "typ": "JWT", "kid": KID}, _claims()) + "."
    assert looks_like_jwt(token)
    assert "algorithm" in _refused(tokens, token)


def test_hs256_keyed_with_the_public_pem_is_refused(tokens, signing_key):
    # The classic key-confusion forgery; PyJWT will not make it, so it is made by hand.
    pem = signing_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = _segments({"alg": "HS256", "typ": "JWT", "kid": KID}, _claims())
    signature = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    assert "algorithm" in _refused(tokens, f"{signing_input}.{_b64(signature)}")


def test_another_key_under_the_same_kid_is_refused(tokens, other_key):
    assert "signature" in _refused(tokens, _sign(other_key, scope="admin"))


def test_an_unknown_kid_is_refused(tokens, signing_key):
    assert "key is not known" in _refused(tokens, _sign(signing_key, kid="key-2"))


def test_a_missing_kid_is_refused(tokens, signing_key):
    token = jwt.encode(_claims(), signing_key, algorithm="RS256")
    assert "no signing key" in _refused(tokens, token)


def test_a_jwks_server_that_is_down_is_an_invalid_credential(signing_key):
    url = f"http://127.0.0.1:{unused_port()}/jwks.json"
    tokens = IssuerTokens(ISSUER, AUDIENCE, url, timeout=2.0)
    started = time.monotonic()
    reason = _refused(tokens, _sign(signing_key))
    assert reason == "the token issuer's keys could not be fetched"
    assert time.monotonic() - started < 5


def test_keys_are_cached_once_fetched(jwks_url, signing_key):
    tokens = IssuerTokens(ISSUER, AUDIENCE, jwks_url)
    assert tokens.verify(_sign(signing_key)).subject == "client-42"
    tokens._jwks.uri = f"http://127.0.0.1:{unused_port()}/jwks.json"  # the issuer goes away
    assert tokens.verify(_sign(signing_key, sub="client-43")).subject == "client-43"


@pytest.mark.parametrize(
    "token",
    ["", "not-a-jwt", "a.b", "a.b.c.d", "eyJ!.eyJ.sig", "abc.def.ghi", "Bearer x.y.z"],
)
def test_a_malformed_token_is_refused(tokens, token):
    assert "malformed" in _refused(tokens, token)


def test_looks_like_jwt(signing_key):
    assert looks_like_jwt(_sign(signing_key))
    assert not looks_like_jwt("nk_live_0123456789abcdef")
    assert not looks_like_jwt("a.b")
    assert not looks_like_jwt("a.b.c.d")
    assert not looks_like_jwt("a b.c.d")


def test_a_subject_with_control_characters_or_too_long_is_refused(tokens, signing_key):
    for subject in ("svc\nevent=forged", "s" * 257):
        token = jwt.encode(
            _claims(sub=subject), signing_key, algorithm="RS256", headers={"kid": KID}
        )
        with pytest.raises(InvalidCredential) as refused:
            tokens.verify(token)
        assert "subject" in refused.value.reason
