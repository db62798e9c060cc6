"""The suppression list: the store contract on each backend (SQLite, MongoDB or mongomock) and
the admin API that reviews and lifts entries (GET /suppressions, DELETE /suppressions/...)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pymongo
import pytest

from common.errors import StoreUnavailable, ValidationError
from common.hosting import FunctionRouter
from common.runtime import set_service
from common.suppressions.mongo import MongoSuppressionStore
from common.suppressions.sqlite import SqliteSuppressionStore
from common.suppressions.store import make_suppression_store, normalise_address
from tests.support.auth import ADMIN_KEY, AuthClient
from tests.support.fixtures import unused_port
from tests.support.mongo import mongo_database
from tests.support.services import installed_service

T0 = datetime(2026, 11, 1, 12, 0, 0, 123000, tzinfo=UTC)


def _mongo_suppressions():
    with mongo_database() as (client, name):
        yield MongoSuppressionStore(client, name)


@pytest.fixture(params=["sqlite", "mongo"])
def store(request, tmp_path):
    if request.param == "sqlite":
        store = SqliteSuppressionStore(tmp_path / "suppressions.db")
        yield store
        store.close()
    else:
        yield from _mongo_suppressions()


# -- the store contract ------------------------------------------------------------------------


def test_add_is_idempotent_and_keeps_the_first_reason(store):
    assert store.add("email", "ann@example.com", "550 no such user", "n-1", T0) is True
    later = T0 + timedelta(hours=1)
    assert store.add("email", "ann@example.com", "550 again", "n-2", later) is False

    entry = store.get("email", "ann@example.com")
    assert (entry.reason, entry.notification_id, entry.created_at) == (
        "550 no such user",
        "n-1",
        T0,
    )
    assert entry.to_dict() == {
        "channel": "email",
        "address": "ann@example.com",
        "reason": "550 no such user",
        "notification_id": "n-1",
        "created_at": "2026-11-01T12:00:00.123000Z",
    }


def test_email_addresses_are_lowercased_and_numbers_lose_spaces(store):
    assert normalise_address("email", "  Upper@Example.COM ") == "upper@example.com"
    assert normalise_address("sms", " +1 415 555 0123") == "+14155550123"
    store.add("email", "Upper@Example.COM", "550", None, T0)
    store.add("sms", "+1 415 555 0123", "Twilio error 21211", None, T0)

    assert store.add("email", "upper@example.com", "550", None, T0) is False
    assert store.get("email", "UPPER@example.com").address == "upper@example.com"
    assert store.get("sms", "+14155550123").address == "+14155550123"
    assert store.get("email", "other@example.com") is None


def test_channels_are_separate_and_only_email_and_sms_exist(store):
    store.add("email", "+14155550123@example.com", "550", None, T0)
    store.add("sms", "+14155550123", "21610", None, T0)

    assert store.get("email", "+14155550123") is None
    assert store.remove("sms", "+14155550123") is True
    assert store.get("email", "+14155550123@example.com") is not None
    for call in (
        lambda: store.add("in_app", "ann", "x", None, T0),
        lambda: store.get("push", "ann"),
        lambda: store.find("in_app", ["ann"]),
        lambda: store.list(channel="in_app"),
        lambda: store.remove("fax", "ann"),
    ):
        with pytest.raises(ValueError):
            call()


def test_find_looks_up_a_batch_keyed_by_normalised_address(store):
    store.add("email", "a@example.com", "550 a", None, T0)
    store.add("email", "b@example.com", "550 b", None, T0)
    store.add("sms", "+14155550123", "21211", None, T0)

    found = store.find(
        "email", ["A@Example.com", "c@example.com", "b@example.com", "a@example.com"]
    )

    assert sorted(found) == ["a@example.com", "b@example.com"]
    assert found["b@example.com"].reason == "550 b"
    assert store.find("email", []) == {}
    assert store.find("sms", ["+1 415 555 0123", "+14155550199"]).keys() == {"+14155550123"}


def test_find_takes_more_addresses_than_one_query_holds(store):
    for i in range(0, 1200, 100):
        store.add("email", f"u{i}@example.com", "550", None, T0)

    found = store.find("email", [f"u{i}@example.com" for i in range(1200)])

    assert len(found) == 12


def test_list_pages_newest_first_with_a_channel_filter(store):
    for i in range(5):
        store.add("email", f"e{i}@example.com", "550", None, T0 + timedelta(seconds=i))
        store.add(
            "sms", f"+1415555010{i}", "21211", None, T0 + timedelta(seconds=i, milliseconds=1)
        )

    everything, cursor = store.list(limit=100)
    assert cursor is None and len(everything) == 10
    assert [s.created_at for s in everything] == sorted(
        (s.created_at for s in everything), reverse=True
    )
    assert everything[0].address == "+14155550104"

    pages, cursor, seen = 0, None, []
    while True:
        items, cursor = store.list(channel="email", limit=2, cursor=cursor)
        seen += [s.address for s in items]
        pages += 1
        if cursor is None:
            break
    assert seen == [f"e{i}@example.com" for i in (4, 3, 2, 1, 0)]
    assert pages == 3


def test_list_pages_through_entries_of_the_same_millisecond(store):
    addresses = [f"same{i}@example.com" for i in range(7)]
    for address in addresses:
        store.add("email", address, "550", None, T0)

    seen, cursor = [], None
    for _ in range(10):
        items, cursor = store.list(limit=3, cursor=cursor)
        seen += [s.address for s in items]
        if cursor is None:
            break

    assert sorted(seen) == addresses and len(seen) == len(addresses)


def test_an_exact_page_ends_without_a_cursor(store):
    store.add("email", "a@example.com", "550", None, T0)
    store.add("email", "b@example.com", "550", None, T0 + timedelta(seconds=1))

    assert store.list(limit=2)[1] is None
    assert store.list()[0] and store.list(channel="sms") == ([], None)


@pytest.mark.parametrize(
    "cursor",
    ["not-a-cursor", "!!!", base64.urlsafe_b64encode(b'{"a": 1}').decode(), "W10"],
)
def test_a_bad_cursor_is_a_validation_error(store, cursor):
    with pytest.raises(ValidationError) as raised:
        store.list(cursor=cursor)
    assert "cursor" in raised.value.fields


def test_remove_lifts_once(store):
    store.add("email", "ann@example.com", "550", None, T0)

    assert store.remove("email", "ANN@example.com") is True
    assert store.remove("email", "ann@example.com") is False
    assert store.get("email", "ann@example.com") is None
    assert store.add("email", "ann@example.com", "550 later", None, T0) is True


def test_the_sqlite_file_outlives_its_store(settings):
    first = make_suppression_store(settings)
    assert isinstance(first, SqliteSuppressionStore)
    first.add("sms", "+14155550123", "21610", "n-9", T0)
    first.close()

    second = make_suppression_store(settings)
    assert (settings.data_dir / "suppressions.db").exists()
    assert second.get("sms", "+14155550123").notification_id == "n-9"
    second.close()


def test_a_mongo_outage_is_store_unavailable():
    client = pymongo.MongoClient(
        f"mongodb://127.0.0.1:{unused_port()}", serverSelectionTimeoutMS=200, connect=False
    )
    store = MongoSuppressionStore(client, "test_outage")
    with pytest.raises(StoreUnavailable):
        store.get("email", "ann@example.com")
    client.close()


# -- the admin API -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def router():
    return FunctionRouter()


@pytest.fixture
def service(settings):
    yield installed_service(settings, suppressions=make_suppression_store(settings))
    set_service(None)


@pytest.fixture
def client(router, service):
    return AuthClient(router)


def test_admin_lists_and_lifts(client, service):
    service.suppressions.add("email", "ann@example.com", "550 no such user", "n-1", T0)
    service.suppressions.add(
        "sms", "+14155550123", "Twilio error 21610", "n-2", T0 + timedelta(seconds=1)
    )

    listed = client.get("/suppressions")
    assert listed.status_code == 200
    body = listed.get_json()
    assert body["count"] == 2 and body["next_cursor"] is None
    assert [s["address"] for s in body["suppressions"]] == ["+14155550123", "ann@example.com"]
    assert body["suppressions"][1]["created_at"] == "2026-11-01T12:00:00.123000Z"

    emails = client.get("/suppressions?channel=email").get_json()
    assert [s["channel"] for s in emails["suppressions"]] == ["email"]

    lifted = client.delete("/suppressions/email/Ann@Example.com")
    assert lifted.status_code == 200
    assert lifted.get_json()["lifted"]["reason"] == "550 no such user"
    assert client.get("/suppressions").get_json()["count"] == 1
    assert client.delete("/suppressions/email/ann@example.com").status_code == 404


def test_listing_pages_with_the_cursor(client, service):
    for i in range(3):
        service.suppressions.add(
            "email", f"u{i}@example.com", "550", None, T0 + timedelta(seconds=i)
        )

    first = client.get("/suppressions?limit=2").get_json()
    assert [s["address"] for s in first["suppressions"]] == ["u2@example.com", "u1@example.com"]
    second = client.get("/suppressions", query_string={"limit": 2, "cursor": first["next_cursor"]})
    assert second.get_json()["suppressions"][0]["address"] == "u0@example.com"
    assert second.get_json()["next_cursor"] is None


def test_lifting_an_unknown_address_is_404(client):
    reply = client.delete("/suppressions/email/nobody@example.com")

    assert reply.status_code == 404
    assert "nobody@example.com" in reply.get_json()["error"]


@pytest.mark.parametrize(
    "path", ["/suppressions/sms/%2B14155550123", "/suppressions/sms/+14155550123"]
)
def test_a_number_is_lifted_with_its_plus_encoded_or_raw(client, service, path):
    service.suppressions.add("sms", "+14155550123", "Twilio error 21211", None, T0)

    reply = client.delete(path)

    assert reply.status_code == 200, reply.get_json()
    assert reply.get_json()["lifted"]["address"] == "+14155550123"
    assert service.suppressions.get("sms", "+14155550123") is None


def test_an_address_with_a_slash_can_be_lifted(client, service):
    service.suppressions.add("email", "a/b@example.com", "550", None, T0)

    assert client.delete("/suppressions/email/a%2Fb@example.com").status_code == 200


@pytest.mark.parametrize(
    "method, path, field",
    [
        ("GET", "/suppressions?channel=in_app", "channel"),
        ("GET", "/suppressions?limit=0", "limit"),
        ("GET", "/suppressions?limit=201", "limit"),
        ("GET", "/suppressions?limit=ten", "limit"),
        ("GET", "/suppressions?cursor=nonsense", "cursor"),
        ("DELETE", "/suppressions/push/ann@example.com", "channel"),
    ],
)
def test_bad_queries_are_400_naming_the_field(client, method, path, field):
    reply = client.open(path, method=method)

    assert reply.status_code == 400
    assert field in reply.get_json()["fields"]


def test_a_send_key_is_forbidden_and_no_credential_unauthorized(router, client, service):
    service.suppressions.add("email", "ann@example.com", "550", None, T0)
    key = client.post("/api-keys", json={"name": "sender", "scopes": ["send"]}).get_json()["key"]
    sender = AuthClient(router, credentials=key)
    nobody = AuthClient(router, credentials=None)

    assert sender.get("/suppressions").status_code == 403
    assert sender.delete("/suppressions/email/ann@example.com").status_code == 403
    assert nobody.get("/suppressions").status_code == 401
    assert nobody.delete("/suppressions/email/ann@example.com").status_code == 401
    assert service.suppressions.get("email", "ann@example.com") is not None


def test_without_a_suppression_store_the_api_is_503(router, settings):
    installed_service(settings, suppressions=None)
    try:
        client = AuthClient(router, credentials=ADMIN_KEY)
        assert client.get("/suppressions").status_code == 503
        assert client.delete("/suppressions/email/ann@example.com").status_code == 503
    finally:
        set_service(None)
