"""The JSON API through the runner's router and each function's own Flask app.

Requests go through `common.hosting.FunctionRouter`, the same WSGI app the runner serves, so
routing, validation and error replies are those a user sees.
"""

from __future__ import annotations

import pytest

from common.channels import make_channels
from common.hosting import FunctionRouter
from common.queue.memory import MemoryQueue
from common.runtime import set_service
from common.service import NotificationService
from common.store.sqlite import SqliteStore
from tests.support.auth import ADMIN_KEY, AuthClient, auth_test_client


@pytest.fixture(scope="module")
def router():
    return FunctionRouter()


@pytest.fixture
def service(settings):
    service = NotificationService(
        settings,
        SqliteStore(settings.data_dir / "notifications.db"),
        MemoryQueue(),
        make_channels(settings),
    )
    set_service(service)
    yield service
    set_service(None)


@pytest.fixture
def client(router, service):
    return AuthClient(router)


def post(client, path, json=None, data=None, headers=None):
    return client.post(path, json=json, data=data, headers=headers or {})


def valid(kind="in_app", **extra):
    payload = {"user_id": "u1", "notification_type": kind, "message": "hello"}
    payload.update(extra)
    return payload


@pytest.mark.parametrize(
    "payload",
    [
        valid(),
        valid("in-app"),
        valid("email", email="ann@example.com", subject="Hi"),
        valid("sms", phone="+14155550123"),
    ],
)
def test_a_valid_send_is_accepted_and_stored(client, payload):
    reply = post(client, "/notifications", json=payload)
    assert reply.status_code == 201
    body = reply.get_json()
    assert (
        body["status"] == "queued" and reply.headers["Location"] == f"/notifications/{body['id']}"
    )
    stored = client.get(f"/notifications/{body['id']}").get_json()
    assert stored["message"] == "hello" and stored["user_id"] == "u1"


@pytest.mark.parametrize(
    ("payload", "bad_fields"),
    [
        (valid("email"), {"email"}),
        (valid("email", email="nope"), {"email"}),
        (valid("sms", phone="555-1234"), {"phone"}),
        (valid("pigeon"), {"notification_type"}),
        ({"notification_type": "in_app"}, {"user_id", "message"}),
        (valid(user_id="x" * 200), {"user_id"}),
        (valid(message=""), {"message"}),
    ],
)
def test_bad_input_is_a_400_naming_each_field_and_stores_nothing(
    client, service, payload, bad_fields
):
    reply = post(client, "/notifications", json=payload)
    assert reply.status_code == 400
    assert set(reply.get_json()["fields"]) == bad_fields
    assert service.stats()["total"] == 0


@pytest.mark.parametrize("body", [b"", b"{not json", b"[1, 2]", b'"text"', b"\xff\xfe"])
def test_a_body_that_is_not_a_json_object_is_a_400(client, service, body):
    reply = post(client, "/notifications", data=body, headers={"Content-Type": "application/json"})
    assert reply.status_code == 400 and "error" in reply.get_json()
    assert service.stats()["total"] == 0


def test_an_idempotency_key_makes_a_resubmission_harmless(client, service):
    headers = {"Idempotency-Key": "order-42"}
    first = post(client, "/notifications", json=valid(), headers=headers)
    again = post(client, "/notifications", json=valid(), headers=headers)
    assert first.status_code == 201 and again.status_code == 200
    assert again.get_json()["id"] == first.get_json()["id"] and again.get_json()["duplicate"]
    assert service.stats()["total"] == 1


def test_listing_filters_by_type_and_status_and_pages_newest_first(client):
    ids = [post(client, "/notifications", json=valid()).get_json()["id"] for _ in range(5)]
    post(client, "/notifications", json=valid("email", email="a@b.co"))
    post(client, "/notifications", json={**valid(), "user_id": "other"})

    everything = client.get("/users/u1/notifications").get_json()
    assert everything["count"] == 6 and everything["next_cursor"] is None
    emails = client.get("/users/u1/notifications?type=email").get_json()
    assert [n["notification_type"] for n in emails["notifications"]] == ["email"]
    in_app = client.get("/users/u1/notifications?type=in-app&status=queued").get_json()
    assert in_app["count"] == 5

    seen, cursor = [], ""
    while True:
        page = client.get(f"/users/u1/notifications?type=in_app&limit=2&cursor={cursor}").get_json()
        seen += [n["id"] for n in page["notifications"]]
        if not page["next_cursor"]:
            break
        cursor = page["next_cursor"]
    # Pages join into the same newest-first order as one big page (ties broken by id).
    unpaged = client.get("/users/u1/notifications?type=in_app").get_json()["notifications"]
    assert seen == [n["id"] for n in unpaged] and sorted(seen) == sorted(ids)
    created = [n["created_at"] for n in unpaged]
    assert created == sorted(created, reverse=True)


@pytest.mark.parametrize(
    "query", ["type=fax", "status=lost", "limit=0", "limit=abc", "limit=500", "cursor=garbage"]
)
def test_bad_list_queries_are_400s(client, query):
    reply = client.get(f"/users/u1/notifications?{query}")
    assert reply.status_code == 400 and reply.get_json()["fields"]


def test_unknown_ids_and_routes_are_json_404s(client):
    for path in ("/notifications/no-such-id", "/nowhere"):
        reply = client.get(path)
        assert reply.status_code == 404 and "error" in reply.get_json()
    assert post(client, "/notifications/no-such-id/retry").status_code == 404


def test_a_wrong_method_is_a_json_405(client):
    reply = client.delete("/notifications")
    assert reply.status_code == 405 and "POST" in reply.get_json()["error"]


def test_retry_refuses_a_sent_notification(client, service):
    created = post(client, "/notifications", json=valid()).get_json()
    service.deliver(service.queue.get(timeout=1))
    reply = post(client, f"/notifications/{created['id']}/retry")
    assert reply.status_code == 409 and "already sent" in reply.get_json()["error"]


def test_stats_count_by_status_and_type(client):
    post(client, "/notifications", json=valid())
    post(client, "/notifications", json=valid("sms", phone="+14155550123"))
    stats = client.get("/stats").get_json()
    assert stats["total"] == 2 and stats["by_status"]["queued"] == 2
    assert stats["by_type"] == {"email": 0, "sms": 1, "in_app": 1}
    assert stats["queue"] == {"messages": 2, "dead_letters": 0}


def test_batch_reports_each_item(client, service):
    reply = post(
        client,
        "/notifications/batch",
        json={"notifications": [valid(), valid("email"), valid("sms", phone="+14155550123")]},
    )
    body = reply.get_json()
    assert reply.status_code == 201 and body["accepted"] == 2 and body["rejected"] == 1
    assert body["results"][1]["fields"] == {"email": "is required for an email notification"}
    assert service.stats()["total"] == 2


def test_an_unexpected_error_is_a_json_500_without_a_traceback(client, service, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(service, "stats", broken)
    reply = client.get("/stats")
    assert reply.status_code == 500
    assert "disk on fire" not in reply.get_data(as_text=True)
    assert reply.get_json()["error"].startswith("internal error")


def test_a_store_outage_is_a_503_and_nothing_is_half_stored(client, service, monkeypatch):
    def down(notification):
        raise OSError("database is locked")

    monkeypatch.setattr(service.store, "add", down)
    reply = post(client, "/notifications", json=valid())
    assert reply.status_code == 503 and "nothing was stored" in reply.get_json()["error"]


def test_a_store_outage_on_a_read_is_a_503(client, service):
    import sqlite3

    # Another process breaks the file under the service: its table is gone.
    with sqlite3.connect(service.store.path) as other:
        other.execute("ALTER TABLE notifications RENAME TO elsewhere")
    reply = client.get("/notifications/some-id")
    assert reply.status_code == 503 and "try again" in reply.get_json()["error"]


def test_an_unreachable_mongodb_is_a_503_not_a_crash(tmp_path, monkeypatch, router):
    from common.config import reset_settings

    set_service(None)
    monkeypatch.setenv("MONGO_URI", "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=300")
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    reset_settings()
    try:
        reply = AuthClient(router).get("/stats")
        assert reply.status_code == 503 and "store" in reply.get_json()["error"]
    finally:
        reset_settings()
        set_service(None)


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"],
)
def test_a_body_a_browser_could_send_cross_site_is_refused(client, service, content_type):
    body = b'{"user_id": "u1", "notification_type": "in_app", "message": "hi"}'
    reply = post(client, "/notifications", data=body, headers={"Content-Type": content_type})
    assert reply.status_code == 415 and "application/json" in reply.get_json()["error"]
    assert service.stats()["total"] == 0


def test_a_cross_site_browser_post_changes_nothing(client, service):
    created = post(client, "/notifications", json=valid()).get_json()
    for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Origin": "https://evil.example"}):
        assert post(client, "/notifications", json=valid(), headers=headers).status_code == 403
        retry = post(client, f"/notifications/{created['id']}/retry", headers=headers)
        assert retry.status_code == 403 and "cross-site" in retry.get_json()["error"]
    assert service.stats()["total"] == 1
    same_origin = post(
        client, "/notifications", json=valid(), headers={"Origin": "http://localhost"}
    )
    assert same_origin.status_code == 201


def test_a_path_functions_framework_cannot_route_still_gets_a_json_404():
    """A line break in a path segment never reaches the function (functions-framework's own
    `/<path:path>` rule cannot match it); the reply is still our JSON error, not Flask's HTML."""
    import functions_framework

    app = functions_framework.create_app(
        "http_notifications", "functions/http_notifications.py", "http"
    )
    reply = auth_test_client(app).get("/users/a%0Ab/notifications")
    assert reply.status_code == 404 and reply.get_json() == {"error": "no route for this path"}


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"notification_id=x", "application/x-www-form-urlencoded"),
        (b"--x\r\nContent-Disposition: form-data; name=a\r\n\r\nb\r\n--x--\r\n", None),
        (b"retry please", "text/plain"),
    ],
)
def test_a_retry_with_a_form_or_text_body_is_a_415_and_retries_nothing(
    client, service, body, content_type
):
    failed = _failed_notification(service)
    headers = {"Content-Type": content_type or "multipart/form-data; boundary=x"}
    reply = post(client, f"/notifications/{failed.id}/retry", data=body, headers=headers)
    assert reply.status_code == 415 and "application/json" in reply.get_json()["error"]
    assert service.get(failed.id).status == "failed_permanently"


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"", None),
        (b"", "application/x-www-form-urlencoded"),  # what `curl -d ''` sends
        (b"{}", "application/json"),
    ],
)
def test_a_retry_with_no_body_or_a_json_body_is_accepted(client, service, body, content_type):
    failed = _failed_notification(service)
    headers = {"Content-Type": content_type} if content_type else {}
    reply = post(client, f"/notifications/{failed.id}/retry", data=body, headers=headers)
    assert reply.status_code == 202 and reply.get_json()["id"] == failed.id


def _failed_notification(service):
    """An email the provider rejected (`failed_permanently`), so that a manual retry is allowed."""
    from common.channels.base import Channel, DeliveryResult

    class RejectingChannel(Channel):
        notification_type = "email"

        def deliver(self, notification):
            return DeliveryResult.permanent("550 5.1.1 no such user")

    service.deliverer.channels = {**service.channels, "email": RejectingChannel()}
    created = service.submit(valid("email", email="nobody@example.com"))
    service.deliver(service.queue.get(timeout=1))
    failed = service.get(created.id)
    assert failed.status == "failed_permanently"
    return failed


@pytest.mark.parametrize(
    ("user_id", "problem"),
    [
        ("two%20words", "may contain only letters, digits and . _ : @ + -"),
        ("%3Cscript%3E", "may contain only letters, digits and . _ : @ + -"),
        ("u" * 129, "must be at most 128 characters"),
    ],
)
def test_listing_an_impossible_user_id_is_a_400_naming_user_id(client, user_id, problem):
    reply = client.get(f"/users/{user_id}/notifications")
    assert reply.status_code == 400 and reply.get_json()["fields"] == {"user_id": problem}


def test_listing_a_valid_user_id_with_every_allowed_character_is_a_200(client):
    reply = client.get(f"/users/{'A-z.0_9:@+' + 'u' * 118}/notifications")
    assert reply.status_code == 200 and reply.get_json()["notifications"] == []


@pytest.mark.parametrize(
    "address",
    ["victim<evil@evil.example>", '"Name" <a@b.co>', "a@b.co, c@d.co", "a@b.co (comment)"],
)
def test_an_address_that_is_not_bare_is_a_400_naming_email(client, service, address):
    reply = post(client, "/notifications", json=valid("email", email=address))

    assert reply.status_code == 400
    assert set(reply.get_json()["fields"]) == {"email"}
    assert service.stats()["total"] == 0


def test_the_stored_email_is_the_address_sent(client):
    reply = post(client, "/notifications", json=valid("email", email="ann+tag@example.com"))

    stored = client.get(f"/notifications/{reply.get_json()['id']}").get_json()
    assert stored["email"] == "ann+tag@example.com"


# -- hardened input: body size, JSON depth, cursors, 405s -------------------------------------

MIB = 1_048_576


def test_a_body_over_max_request_bytes_is_a_413_with_a_json_error(client, service):
    big = {**valid(), "message": "x" * MIB}
    reply = post(client, "/notifications", json=big)
    assert reply.status_code == 413
    assert "larger than 1048576 bytes" in reply.get_json()["error"]


def test_the_batch_endpoint_takes_up_to_eight_mib(client):
    # 1.5 MiB passes the size check (the batch itself is then judged on its content) ...
    reply = post(
        client, "/notifications/batch", json=[{**valid(), "message": "x" * (3 * MIB // 2)}]
    )
    assert reply.status_code != 413
    # ... and 8 MiB and more does not.
    reply = post(client, "/notifications/batch", json=[{**valid(), "message": "x" * (8 * MIB)}])
    assert reply.status_code == 413 and "8388608" in reply.get_json()["error"]


def test_a_chunked_body_without_content_length_is_cut_at_the_limit(client):
    import io

    class Counting(io.BytesIO):
        taken = 0

        def read(self, size=-1):
            data = super().read(size)
            Counting.taken += len(data)
            return data

    body = b'{"message": "' + b"x" * (5 * MIB) + b'"}'
    reply = client.post(
        "/notifications",
        input_stream=Counting(body),
        headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert reply.status_code == 413 and "error" in reply.get_json()
    assert Counting.taken <= MIB + 65536  # never the whole 5 MiB


def test_json_nested_too_deeply_is_a_400_naming_the_problem(client):
    for depth in (33, 5000, 200_000):
        reply = post(client, "/notifications", data="[" * depth + "]" * depth, headers=JSON_HEADERS)
        assert reply.status_code == 400, depth
        assert "nested" in reply.get_json()["error"]
    # Brackets inside strings are not nesting.
    reply = post(client, "/notifications", json=valid(message="[" * 500))
    assert reply.status_code == 201


JSON_HEADERS = {"Content-Type": "application/json"}


def _cursor(value) -> str:
    import base64
    import json

    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        _cursor(["99999-01-01T00:00:00+00:00", "x"]),
        _cursor(["-0001-01-01T00:00:00", "x"]),
        _cursor([12, "x"]),
        _cursor([None, None]),
        _cursor({"a": 1}),
        _cursor(["2026-01-01T00:00:00+00:00"]),
        _cursor("just text"),
        "not base64 at all!!",
        "%00%ff",
    ],
)
def test_a_tampered_cursor_is_a_400(client, cursor):
    reply = client.get(f"/users/u1/notifications?cursor={cursor}")
    assert reply.status_code == 400
    assert "cursor" in reply.get_json().get("fields", {})


def test_every_405_names_the_allowed_methods_in_an_allow_header(client, router):
    reply = client.delete("/notifications")  # refused by the runner's FunctionRouter
    assert reply.status_code == 405 and reply.headers["Allow"] == "POST"
    assert "error" in reply.get_json()
    # A function's own Router answers the same when called without the runner in front.
    alone = AuthClient(router.apps["http_send"])
    reply = alone.get("/notifications")
    assert reply.status_code == 405 and reply.headers["Allow"] == "POST"


def test_the_running_service_refuses_a_huge_declared_body_without_waiting_for_it():
    import json
    import socket
    import time
    from urllib.parse import urlparse

    from tests.support.runner import running_service

    with running_service() as base_url:
        address = urlparse(base_url)
        with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
            started = time.monotonic()
            sock.sendall(
                b"POST /notifications HTTP/1.1\r\nHost: localhost\r\n"
                + f"Authorization: Bearer {ADMIN_KEY}\r\n".encode()
                + b'Content-Type: application/json\r\nContent-Length: 52428800\r\n\r\n{"user'
            )
            received = b""
            while b"\r\n\r\n" not in received or not received.rstrip().endswith(b"}"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
            elapsed = time.monotonic() - started
        head, _, body = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 413"), head
        assert "error" in json.loads(body)
        assert elapsed < 5
