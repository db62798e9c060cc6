"""Outbound webhooks without sending anything: the store contract on each backend (SQLite,
MongoDB or mongomock), the URL checks, and the admin API (/webhooks...) through the router the
runner serves. Sending is in tests/test_webhooks_delivery.py."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta

import pytest

from common.config import load_settings
from common.errors import ValidationError
from common.hosting import HTTP_FUNCTIONS, FunctionRouter
from common.runtime import set_service
from common.webhooks.mongo import MongoWebhookStore
from common.webhooks.records import (
    FAILED,
    PENDING,
    SENDING,
    SUCCEEDED,
    AttemptOutcome,
    Delivery,
    Endpoint,
)
from common.webhooks.service import Webhooks
from common.webhooks.sqlite import SqliteWebhookStore
from common.webhooks.store import make_webhook_store
from common.webhooks.urls import check_url
from tests.support.auth import ADMIN_KEY, AuthClient
from tests.support.mongo import mongo_database
from tests.support.services import installed_service

T0 = datetime(2026, 11, 1, 12, 0, 0, 123000, tzinfo=UTC)
PUBLIC_URL = "https://93.184.216.34/hooks"  # a public address literal: no DNS needed


# Only the functions these tests call (webhooks, and API keys for a non-admin key): the others
# are no part of this and may be mid-change.
USED = ("http_webhooks.py", "http_access.py")


def webhook_router() -> FunctionRouter:
    return FunctionRouter([spec for spec in HTTP_FUNCTIONS if spec.source in USED])


def _mongo_webhooks():
    with mongo_database() as (client, name):
        yield MongoWebhookStore(client, name)


@pytest.fixture(params=["sqlite", "mongo"])
def store(request, tmp_path):
    if request.param == "sqlite":
        store = SqliteWebhookStore(tmp_path / "webhooks.db")
        yield store
        store.close()
    else:
        yield from _mongo_webhooks()


def endpoint(endpoint_id="ep_1", **changes) -> Endpoint:
    fields = dict(
        id=endpoint_id,
        url=PUBLIC_URL,
        events=("notification.sent", "notification.failed"),
        description="billing",
        secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        created_at=T0,
    )
    return Endpoint(**{**fields, **changes})


def delivery(delivery_id: str, at: datetime = T0, endpoint_id: str = "ep_1") -> Delivery:
    return Delivery(
        id=delivery_id,
        endpoint_id=endpoint_id,
        event_type="notification.sent",
        payload='{"type":"notification.sent"}',
        created_at=at,
        next_attempt_at=at,
    )


# -- the store contract ------------------------------------------------------------------------


def test_endpoints_keep_their_secret_and_list_oldest_first(store):
    store.add_endpoint(endpoint("ep_2", created_at=T0 + timedelta(seconds=1)))
    store.add_endpoint(endpoint("ep_1"))

    assert [e.id for e in store.list_endpoints()] == ["ep_1", "ep_2"]
    assert store.get_endpoint("ep_1") == endpoint("ep_1")
    assert store.get_endpoint("nope") is None
    later = T0 + timedelta(days=1)
    assert store.set_secrets("ep_1", "whsec_new", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", later)
    rotated = store.get_endpoint("ep_1")
    assert rotated.signing_secrets(T0) == [
        "whsec_new",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    ]
    assert rotated.signing_secrets(later) == ["whsec_new"]
    assert "secret" not in rotated.to_dict() and "whsec_new" not in str(rotated.to_dict())
    assert store.set_secrets("nope", "whsec_x", None, None) is False


def test_failures_in_a_row_disable_at_the_limit_and_a_success_resets(store):
    store.add_endpoint(endpoint())
    store.record_endpoint_failure("ep_1", "HTTP 500", 3, T0)
    store.record_endpoint_success("ep_1")
    assert store.get_endpoint("ep_1").consecutive_failures == 0

    for n in range(2):
        after = store.record_endpoint_failure("ep_1", f"HTTP 50{n}", 3, T0)
        assert after.disabled_at is None and after.consecutive_failures == n + 1
    disabled = store.record_endpoint_failure("ep_1", "timed out after 10s", 3, T0)
    assert (disabled.disabled_at, disabled.disabled_reason) == (T0, "timed out after 10s")
    # Later failures keep the first reason.
    again = store.record_endpoint_failure("ep_1", "HTTP 404", 3, T0 + timedelta(seconds=1))
    assert (again.disabled_at, again.disabled_reason) == (T0, "timed out after 10s")

    assert store.enable_endpoint("ep_1") is True
    enabled = store.get_endpoint("ep_1")
    assert (enabled.disabled_at, enabled.consecutive_failures) == (None, 0)
    assert store.enable_endpoint("nope") is False
    assert store.record_endpoint_failure("nope", "x", 3, T0) is None


def test_a_due_delivery_is_claimed_once_until_its_lease_runs_out(store):
    store.add_endpoint(endpoint())
    store.add_deliveries([delivery("msg_later", T0 + timedelta(seconds=5)), delivery("msg_now")])
    lease = T0 + timedelta(seconds=30)

    claimed = store.claim_due(T0, lease, "token-a")
    assert (claimed.id, claimed.status, claimed.claim_token) == ("msg_now", SENDING, "token-a")
    assert store.claim_due(T0, lease, "token-b") is None  # the other one is not due yet
    # The lease ran out (the dispatcher died): another may claim it.
    retaken = store.claim_due(lease, lease + timedelta(seconds=30), "token-c")
    assert retaken.id == "msg_now"
    assert store.finish_attempt("msg_now", "token-a", AttemptOutcome(SUCCEEDED, 1)) is False

    done = AttemptOutcome(SUCCEEDED, 1, 204, None, None, lease)
    assert store.finish_attempt("msg_now", "token-c", done) is True
    finished = store.get_delivery("msg_now")
    assert (finished.status, finished.attempts, finished.last_status_code) == (SUCCEEDED, 1, 204)
    assert finished.delivered_at == lease and finished.claim_token is None
    assert store.claim_due(lease, lease, "token-d").id == "msg_later"


def test_a_failed_attempt_is_due_again_at_its_next_time(store):
    store.add_endpoint(endpoint())
    store.add_deliveries([delivery("msg_1")])
    store.claim_due(T0, T0 + timedelta(seconds=30), "t1")
    later = T0 + timedelta(seconds=5)
    store.finish_attempt("msg_1", "t1", AttemptOutcome(PENDING, 1, 500, "HTTP 500", later))

    assert store.claim_due(later - timedelta(milliseconds=1), later, "t2") is None
    assert store.claim_due(later, later + timedelta(seconds=30), "t2").attempts == 1
    store.finish_attempt("msg_1", "t2", AttemptOutcome(FAILED, 2, None, "timed out"))
    gone = store.get_delivery("msg_1")
    assert (gone.status, gone.last_error, gone.next_attempt_at) == (FAILED, "timed out", None)

    assert store.replay("msg_1", later) is True
    assert store.claim_due(later, later + timedelta(seconds=30), "t3").id == "msg_1"
    assert store.replay("msg_1", later) is False  # being sent right now
    assert store.replay("nope", later) is False


def test_the_delivery_log_pages_newest_first(store):
    store.add_endpoint(endpoint())
    store.add_endpoint(endpoint("ep_2"))
    store.add_deliveries(
        [delivery(f"msg_{i}", T0 + timedelta(seconds=i // 2)) for i in range(5)]
        + [delivery("msg_other", endpoint_id="ep_2")]
    )

    first, cursor = store.list_deliveries("ep_1", 2, None)
    assert [d.id for d in first] == ["msg_4", "msg_3"]
    second, cursor = store.list_deliveries("ep_1", 2, cursor)
    assert [d.id for d in second] == ["msg_2", "msg_1"]
    last, cursor = store.list_deliveries("ep_1", 2, cursor)
    assert [d.id for d in last] == ["msg_0"] and cursor is None
    with pytest.raises(ValidationError):
        store.list_deliveries("ep_1", 2, "nonsense")

    assert store.delete_endpoint("ep_1") is True
    assert store.list_deliveries("ep_1", 10, None) == ([], None)
    assert store.get_delivery("msg_other") is not None
    assert store.delete_endpoint("ep_1") is False


def test_the_sqlite_file_is_under_data_dir(settings):
    store = make_webhook_store(settings)
    store.add_endpoint(endpoint())
    store.close()
    again = make_webhook_store(settings)
    assert again.get_endpoint("ep_1") == endpoint()
    assert (settings.data_dir / "webhooks.db").exists()
    again.close()


# -- the URL checks ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hooks",
        "http://localhost/hooks",
        "http://10.1.2.3/",
        "http://192.168.0.10/",
        "http://172.16.5.5/",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:10.0.0.1]/",
        "http://[fe80::1]/",
        "http://[fd00::1]/",
        "http://0.0.0.0/",
        "http://224.0.0.1/",
        "http://240.0.0.1/",
        "http://100.64.0.1/",
    ],
)
def test_private_addresses_are_refused_without_the_flag(url):
    with pytest.raises(ValidationError) as refused:
        check_url(url, allow_private=False)
    assert "url" in refused.value.fields
    assert check_url(url, allow_private=True) == url


@pytest.mark.parametrize(
    "url",
    [
        None,
        "",
        "ftp://93.184.216.34/x",
        "javascript:alert(1)",
        "http:///path",
        "https://user:secret@93.184.216.34/",
        "https://token@93.184.216.34/",
        "http://93.184.216.34:99999/",
        "http://93.184.216.34/a b",
        "https://" + "a" * 2100 + ".com/",
    ],
)
def test_malformed_urls_are_refused_even_with_the_flag(url):
    with pytest.raises(ValidationError) as refused:
        check_url(url, allow_private=True)
    assert "url" in refused.value.fields


def test_a_name_is_judged_by_every_address_it_resolves_to():
    def resolver(*answers):
        def resolve(host, port, type=0):
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in answers]

        return resolve

    assert check_url("https://hooks.example.com/", False, resolver("93.184.216.34"))
    with pytest.raises(ValidationError):
        check_url("https://hooks.example.com/", False, resolver("93.184.216.34", "10.0.0.5"))

    def nowhere(host, port, type=0):
        raise socket.gaierror("Name or service not known")

    with pytest.raises(ValidationError, match="url"):
        check_url("https://nowhere.invalid/", False, nowhere)


# -- the admin API -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def router():
    return webhook_router()


@pytest.fixture
def service(settings):
    webhooks = Webhooks(settings, make_webhook_store(settings), lambda: T0)
    yield installed_service(settings, webhooks=webhooks)
    webhooks.close()
    set_service(None)


@pytest.fixture
def client(router, service):
    return AuthClient(router)


def register(client, **body):
    reply = client.post(
        "/webhooks", json={"url": PUBLIC_URL, "events": ["notification.sent"], **body}
    )
    assert reply.status_code == 201, reply.get_json()
    return reply.get_json()


def test_register_shows_the_secret_once(client):
    created = register(client, description="billing", events=["notification.failed"] * 2)
    assert created["secret"].startswith("whsec_")
    assert created["events"] == ["notification.failed"] and created["enabled"] is True
    assert created["description"] == "billing"

    listed = client.get("/webhooks").get_json()
    assert listed["count"] == 1 and listed["webhooks"][0]["id"] == created["id"]
    one = client.get(f"/webhooks/{created['id']}").get_json()
    for shown in (listed["webhooks"][0], one):
        assert "secret" not in shown and created["secret"] not in str(shown)

    rotated = client.post(f"/webhooks/{created['id']}/rotate-secret").get_json()
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != created["secret"]
    assert rotated["previous_secret_expires_at"] == "2026-11-02T12:00:00.123000Z"
    assert rotated["secret"] not in str(client.get("/webhooks").get_json())


def test_delete_enable_and_unknown_ids(client):
    created = register(client)
    assert client.get(f"/webhooks/{created['id']}/deliveries").get_json() == {
        "deliveries": [],
        "count": 0,
        "next_cursor": None,
    }
    assert client.post(f"/webhooks/{created['id']}/enable").get_json()["enabled"] is True
    assert client.delete(f"/webhooks/{created['id']}").status_code == 200
    for method, path in [
        ("GET", f"/webhooks/{created['id']}"),
        ("DELETE", f"/webhooks/{created['id']}"),
        ("POST", f"/webhooks/{created['id']}/rotate-secret"),
        ("POST", f"/webhooks/{created['id']}/enable"),
        ("GET", f"/webhooks/{created['id']}/deliveries"),
        ("POST", "/webhook-deliveries/msg_nope/replay"),
    ]:
        assert client.open(path, method=method).status_code == 404, path


@pytest.mark.parametrize(
    "body, field",
    [
        ({"url": "http://127.0.0.1:9/hooks", "events": ["notification.sent"]}, "url"),
        ({"url": "ftp://93.184.216.34/", "events": ["notification.sent"]}, "url"),
        ({"events": ["notification.sent"]}, "url"),
        ({"url": PUBLIC_URL, "events": []}, "events"),
        ({"url": PUBLIC_URL, "events": "notification.sent"}, "events"),
        ({"url": PUBLIC_URL, "events": ["*"]}, "events"),
        ({"url": PUBLIC_URL, "events": ["notification.accepted"]}, "events"),
        ({"url": PUBLIC_URL}, "events"),
        ({"url": PUBLIC_URL, "events": ["notification.sent"], "description": 5}, "description"),
        ({"url": PUBLIC_URL, "events": ["notification.sent"], "secret": "x"}, "secret"),
    ],
)
def test_bad_registrations_are_400_naming_the_field(client, body, field):
    reply = client.post("/webhooks", json=body)

    assert reply.status_code == 400, reply.get_json()
    assert field in reply.get_json()["fields"]
    assert client.get("/webhooks").get_json()["count"] == 0


def test_unknown_events_are_named(client):
    reply = client.post(
        "/webhooks", json={"url": PUBLIC_URL, "events": ["notification.sent", "order.paid"]}
    )
    assert reply.status_code == 400 and "order.paid" in reply.get_json()["fields"]["events"]


def test_a_bad_limit_or_cursor_is_400(client):
    created = register(client)
    for query, field in [("limit=0", "limit"), ("limit=x", "limit"), ("cursor=zz", "cursor")]:
        reply = client.get(f"/webhooks/{created['id']}/deliveries?{query}")
        assert reply.status_code == 400 and field in reply.get_json()["fields"], query


def test_only_the_admin_may_manage_webhooks(router, client):
    created = register(client)
    key = client.post("/api-keys", json={"name": "sender", "scopes": ["send"]}).get_json()["key"]
    sender = AuthClient(router, credentials=key)
    nobody = AuthClient(router, credentials=None)

    for method, path in [
        ("GET", "/webhooks"),
        ("POST", "/webhooks"),
        ("GET", f"/webhooks/{created['id']}"),
        ("DELETE", f"/webhooks/{created['id']}"),
        ("POST", f"/webhooks/{created['id']}/rotate-secret"),
        ("POST", f"/webhooks/{created['id']}/enable"),
        ("GET", f"/webhooks/{created['id']}/deliveries"),
        ("POST", "/webhook-deliveries/msg_1/replay"),
    ]:
        assert sender.open(path, method=method).status_code == 403, path
        assert nobody.open(path, method=method).status_code == 401, path
    assert client.get(f"/webhooks/{created['id']}").status_code == 200


def test_a_service_without_webhooks_answers_503(router, settings):
    installed_service(settings, webhooks=None)
    try:
        reply = AuthClient(router, credentials=ADMIN_KEY).get("/webhooks")
        assert reply.status_code == 503
    finally:
        set_service(None)


def test_the_flag_lets_a_loopback_endpoint_register(router, settings_env):
    settings = load_settings({**settings_env, "WEBHOOK_ALLOW_PRIVATE": "true"})
    webhooks = Webhooks(settings, make_webhook_store(settings), lambda: T0)
    installed_service(settings, webhooks=webhooks)
    try:
        reply = AuthClient(router).post(
            "/webhooks", json={"url": "http://127.0.0.1:9/x", "events": ["notification.sent"]}
        )
        assert reply.status_code == 201, reply.get_json()
    finally:
        webhooks.close()
        set_service(None)
