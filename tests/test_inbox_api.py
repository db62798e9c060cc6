"""The in-app inbox through the API the runner serves: title, action_url and data on a send;
seen, read and archived (one and all); counts; the listing's filters; and who may call them."""

from __future__ import annotations

import pytest

from tests.support.auth import AuthClient
from tests.support.services import client_fixture, router_fixture, service_fixture  # noqa: F401


def send(client, user="ann", **extra) -> dict:
    body = {"user_id": user, "type": "in_app", "message": "hi", **extra}
    reply = client.post("/notifications", json=body)
    assert reply.status_code == 201, reply.get_json()
    return reply.get_json()


def as_user(router, client, user: str) -> AuthClient:
    reply = client.post(f"/users/{user}/token")
    assert reply.status_code == 201, reply.get_json()
    return AuthClient(router, credentials=reply.get_json()["token"])


def with_key(router, client, *scopes: str) -> AuthClient:
    reply = client.post("/api-keys", json={"name": "app", "scopes": list(scopes)})
    assert reply.status_code == 201, reply.get_json()
    return AuthClient(router, credentials=reply.get_json()["key"])


def test_a_send_carries_title_action_url_and_data(client):
    data = {"order": 7, "lines": [{"sku": "a-1"}]}
    sent = send(client, title="Shipped", action_url="https://shop.example/o/7", data=data)
    shown = client.get(f"/notifications/{sent['id']}").get_json()
    assert (shown["title"], shown["action_url"], shown["data"]) == (
        "Shipped",
        "https://shop.example/o/7",
        data,
    )
    assert (shown["seen_at"], shown["read_at"], shown["archived_at"]) == (None, None, None)
    # The fingerprint covers them: the same key with another title is a reuse, not a repeat.
    headers = {"Idempotency-Key": "inbox-1"}
    body = {"user_id": "ann", "type": "in_app", "message": "hi", "title": "a"}
    assert client.post("/notifications", json=body, headers=headers).status_code == 201
    assert client.post("/notifications", json=body, headers=headers).status_code == 200
    changed = {**body, "title": "b"}
    assert client.post("/notifications", json=changed, headers=headers).status_code == 422


@pytest.mark.parametrize(
    "field, value",
    [
        ("title", "two\nlines"),
        ("title", "x" * 201),
        ("title", 7),
        ("action_url", "javascript:alert(1)"),
        ("action_url", "ftp://files.example/x"),
        ("action_url", "//evil.example/"),
        ("action_url", "/ok\r\nSet-Cookie: x"),
        ("action_url", "https://a.example/" + "x" * 2000),
        ("data", [1, 2]),
        ("data", "text"),
        ("data", {"big": "x" * 4100}),
        ("data", {"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}}),
        ("data", {"too_big_for_bson": 2**64}),
    ],
)
def test_bad_inbox_fields_are_a_400_naming_the_field_and_nothing_is_stored(
    client, service, field, value
):
    reply = client.post(
        "/notifications", json={"user_id": "ann", "type": "in_app", "message": "m", field: value}
    )
    assert reply.status_code == 400 and field in reply.get_json()["fields"], reply.get_json()
    assert service.stats()["total"] == 0


def test_single_actions_reply_with_the_notification_and_are_idempotent(client):
    sent = send(client)
    path = f"/notifications/{sent['id']}"
    read = client.post(f"{path}/read")
    assert read.status_code == 200
    first = read.get_json()["notification"]
    assert first["read_at"] and first["seen_at"] == first["read_at"]
    again = client.post(f"{path}/read").get_json()["notification"]
    assert again["read_at"] == first["read_at"]
    assert client.post(f"{path}/unread").get_json()["notification"]["read_at"] is None
    assert client.post(f"{path}/seen").get_json()["notification"]["seen_at"] == first["seen_at"]
    archived = client.post(f"{path}/archive").get_json()["notification"]
    assert archived["archived_at"] is not None
    assert client.post(f"{path}/unarchive").get_json()["notification"]["archived_at"] is None
    for action in ("seen", "read", "unread", "archive", "unarchive"):
        assert client.post(f"/notifications/no-such-id/{action}").status_code == 404
    form = client.post(f"{path}/read", data="x=1", content_type="text/plain")
    assert form.status_code == 415


def test_listing_filters_and_a_bad_value_is_a_400_naming_it(client):
    kept, archived, other = send(client, category="promo"), send(client), send(client)
    client.post(f"/notifications/{archived['id']}/archive")
    client.post(f"/notifications/{other['id']}/read")

    def ids(query: str) -> list[str]:
        reply = client.get(f"/users/ann/notifications{query}")
        assert reply.status_code == 200, reply.get_json()
        return [n["id"] for n in reply.get_json()["notifications"]]

    assert set(ids("")) == {kept["id"], other["id"]}  # archived ones are hidden by default
    assert ids("?archived=true") == [archived["id"]]
    assert len(ids("?archived=all")) == 3
    assert ids("?read=true") == [other["id"]]
    assert ids("?read=false") == [kept["id"]]
    assert ids("?category=promo") == [kept["id"]]
    for query, field in (
        ("archived=maybe", "archived"),
        ("read=yes", "read"),
        ("category=bad%20one", "category"),
    ):
        reply = client.get(f"/users/ann/notifications?{query}")
        assert reply.status_code == 400 and field in reply.get_json()["fields"], query


def test_counts_and_the_bulk_actions(client):
    promo = [send(client, category="promo") for _ in range(2)]
    news = send(client, category="news")
    send(client, user="bob")
    send(client, type="email", email="ann@example.com")
    counts = client.get("/users/ann/notifications/counts")
    assert counts.status_code == 200
    assert counts.get_json() == {"total": 3, "unread": 3, "unseen": 3}
    assert client.get("/users/ann/notifications/counts?type=email").get_json()["total"] == 1
    assert client.get("/users/ann/notifications/counts?type=fax").status_code == 400

    seen = client.post("/users/ann/notifications/seen-all", json={"category": "promo"})
    assert seen.status_code == 200 and seen.get_json() == {"updated": 2}
    assert client.get("/users/ann/notifications/counts").get_json()["unseen"] == 1
    early = client.post(
        "/users/ann/notifications/read-all", json={"before": "2000-01-01T00:00:00Z"}
    )
    assert early.get_json() == {"updated": 0}
    news_only = {"category": "news", "before": "2999-01-01T00:00:00+01:00"}
    assert client.post("/users/ann/notifications/read-all", json=news_only).get_json() == {
        "updated": 1
    }
    assert client.get(f"/notifications/{promo[0]['id']}").get_json()["read_at"] is None
    everything = client.post("/users/ann/notifications/read-all")
    assert everything.get_json() == {"updated": 3}  # the two promo ones and the email
    assert client.get("/users/ann/notifications/counts").get_json() == {
        "total": 3,
        "unread": 0,
        "unseen": 0,
    }
    client.post(f"/notifications/{news['id']}/archive")
    assert client.get("/users/ann/notifications/counts").get_json()["total"] == 2
    assert client.get("/users/bob/notifications/counts").get_json()["unread"] == 1
    for body, field in (
        ({"before": "yesterday"}, "before"),
        ({"category": "no way"}, "category"),
        ({"colour": "red"}, "colour"),
    ):
        reply = client.post("/users/ann/notifications/read-all", json=body)
        assert reply.status_code == 400 and field in reply.get_json()["fields"], body
    assert client.post("/users/ann/notifications/read-all", json=[1]).status_code == 400


def test_a_user_token_acts_on_its_own_user_only(router, client):
    mine, theirs = send(client), send(client, user="bob")
    ann = as_user(router, client, "ann")
    assert ann.post(f"/notifications/{mine['id']}/read").status_code == 200
    assert ann.post(f"/notifications/{theirs['id']}/read").status_code == 403
    assert client.get(f"/notifications/{theirs['id']}").get_json()["read_at"] is None
    assert ann.get("/users/ann/notifications/counts").get_json()["unread"] == 0
    assert ann.get("/users/bob/notifications/counts").status_code == 403
    assert ann.post("/users/ann/notifications/seen-all").status_code == 200
    assert ann.post("/users/bob/notifications/read-all").status_code == 403
    assert ann.get("/users/ann/notifications?archived=all").status_code == 200


def test_the_read_scope_may_act_and_a_send_only_key_may_not(router, client):
    sent = send(client)
    reader = with_key(router, client, "read")
    sender = with_key(router, client, "send")
    assert reader.post(f"/notifications/{sent['id']}/seen").status_code == 200
    assert reader.post("/users/ann/notifications/read-all").get_json() == {"updated": 1}
    assert reader.get("/users/ann/notifications/counts").status_code == 200
    assert sender.post(f"/notifications/{sent['id']}/archive").status_code == 403
    assert sender.post("/users/ann/notifications/read-all").status_code == 403
    assert sender.get("/users/ann/notifications/counts").status_code == 403
    nobody = AuthClient(router, credentials=None)
    assert nobody.post(f"/notifications/{sent['id']}/read").status_code == 401
