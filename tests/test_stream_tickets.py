"""POST /users/<id>/notifications/stream-ticket through the functions as the runner routes
them: who may mint a ticket, what it holds, and that it opens nothing but its user's stream."""

from __future__ import annotations

from datetime import timedelta

import jwt
import pytest

from common.auth import stream_tickets, user_tokens
from common.auth.errors import InvalidCredential
from common.model import utcnow
from common.runtime import get_access
from tests.support.auth import AuthClient, anonymous
from tests.support.services import client_fixture, router_fixture, service_fixture  # noqa: F401


def as_user(router, client, user: str) -> AuthClient:
    reply = client.post(f"/users/{user}/token")
    assert reply.status_code == 201, reply.get_json()
    return AuthClient(router, credentials=reply.get_json()["token"])


def with_key(router, client, *scopes: str) -> AuthClient:
    reply = client.post("/api-keys", json={"name": "app", "scopes": list(scopes)})
    assert reply.status_code == 201, reply.get_json()
    return AuthClient(router, credentials=reply.get_json()["key"])


def claims(ticket: str) -> dict:
    return jwt.decode(ticket, options={"verify_signature": False})


def test_a_user_mints_a_ticket_for_its_own_stream(router, client):
    ann = as_user(router, client, "ann")
    reply = ann.post("/users/ann/notifications/stream-ticket")
    assert reply.status_code == 201, reply.get_json()
    body = reply.get_json()
    assert set(body) == {"ticket", "user_id", "expires_at", "stream_url"}
    assert body["user_id"] == "ann"
    assert body["stream_url"] == f"/users/ann/notifications/stream?ticket={body['ticket']}"
    held = claims(body["ticket"])
    assert held["aud"] == stream_tickets.AUDIENCE and held["sub"] == "ann"
    assert held["exp"] - held["iat"] == 60
    # The stream it opens ends when the user token behind it does.
    token = ann.credentials
    assert held[stream_tickets.ENDS_CLAIM] == claims(token)["exp"]
    secret = get_access().token_secret
    assert stream_tickets.verify(body["ticket"], secret)[0] == "ann"


def test_who_may_mint_one(router, client):
    assert client.post("/users/ann/notifications/stream-ticket").status_code == 201  # admin
    reader = with_key(router, client, "read")
    assert reader.post("/users/ann/notifications/stream-ticket").status_code == 201
    sender = with_key(router, client, "send")
    assert sender.post("/users/ann/notifications/stream-ticket").status_code == 403
    bob = as_user(router, client, "bob")
    refused = bob.post("/users/ann/notifications/stream-ticket")
    assert refused.status_code == 403 and refused.get_json()["error"]
    nobody = anonymous(client).post("/users/ann/notifications/stream-ticket")
    assert nobody.status_code == 401 and nobody.headers["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/users/ann/notifications/stream-ticket").status_code == 405
    bad = client.post("/users/bad%20id/notifications/stream-ticket")
    assert bad.status_code == 400 and "user_id" in bad.get_json()["fields"]


def test_a_ticket_is_no_user_token_and_a_user_token_no_ticket(router, client):
    ticket = client.post("/users/ann/notifications/stream-ticket").get_json()["ticket"]
    as_ticket = AuthClient(router, credentials=ticket)
    assert as_ticket.get("/users/ann/notifications/counts").status_code == 401
    assert as_ticket.post("/users/ann/notifications/stream-ticket").status_code == 401
    token = client.post("/users/ann/token").get_json()["token"]
    with pytest.raises(InvalidCredential):
        stream_tickets.verify(token, get_access().token_secret)


def test_a_ticket_expires_a_minute_after_it_was_minted(service):
    secret = get_access().token_secret
    minted = utcnow() - timedelta(seconds=61 + stream_tickets.LEEWAY_SECONDS)
    ticket, _ = stream_tickets.mint("ann", secret, minted, utcnow() + timedelta(hours=1))
    with pytest.raises(InvalidCredential, match="expired"):
        stream_tickets.verify(ticket, secret)
    # And one made by hand to live longer is refused too.
    long_lived = jwt.encode(
        {
            "sub": "ann",
            "iss": user_tokens.ISSUER,
            "aud": stream_tickets.AUDIENCE,
            "iat": int(utcnow().timestamp()),
            "exp": int(utcnow().timestamp()) + 3600,
            stream_tickets.ENDS_CLAIM: int(utcnow().timestamp()) + 3600,
        },
        secret,
        algorithm="HS256",
    )
    with pytest.raises(InvalidCredential, match="longer"):
        stream_tickets.verify(long_lived, secret)
