"""Cross-origin access to the inbox only: a page on an origin INBOX_ALLOWED_ORIGINS lists may
call the inbox routes with a user token (preflight answered, answers readable); any other
origin gets no Access-Control-Allow-* header; the session cookie never counts for another
site's page; every other route stays same-origin. Through the functions' own Flask apps
(functions-framework's `create_app`), with the service injected."""

from __future__ import annotations

from pathlib import Path

import functions_framework
import pytest

from common import cors
from common.channels import make_channels
from common.config import load_settings
from common.http import SESSION_COOKIE
from common.queue.memory import MemoryQueue
from common.runtime import get_access, set_service
from common.service import NotificationService
from common.store.sqlite import SqliteStore
from tests.support.auth import ADMIN_KEY, auth_test_client

ROOT = Path(__file__).resolve().parents[1]
APP_ORIGIN = "https://app.example.com"
OTHER_ORIGIN = "https://evil.example.net"
SECRET = "cors-test-secret-0123456789abcdef0123"


@pytest.fixture
def service(settings_env):
    env = {**settings_env, "AUTH_SECRET": SECRET, "INBOX_ALLOWED_ORIGINS": APP_ORIGIN}
    settings = load_settings(env)
    store = SqliteStore(settings.data_dir / "notifications.db")
    service = NotificationService(settings, store, MemoryQueue(), make_channels(settings))
    set_service(service)
    yield service
    set_service(None)
    store.close()


def app_for(name: str):
    return functions_framework.create_app(name, str(ROOT / "functions" / f"{name}.py"))


@pytest.fixture(scope="module")
def inbox_app():
    return app_for("http_inbox")


@pytest.fixture(scope="module")
def notifications_app():
    return app_for("http_notifications")


@pytest.fixture
def inbox(inbox_app, service):
    return auth_test_client(inbox_app, credentials=None)


@pytest.fixture
def notifications(notifications_app, service):
    return auth_test_client(notifications_app, credentials=None)


def user_token(user_id: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {get_access().mint_user_token(user_id)['token']}"}


def in_app(service, user_id: str = "alice") -> str:
    return service.submit({"user_id": user_id, "type": "in_app", "message": "hi"}).id


def test_the_path_list_names_the_inbox_routes_and_nothing_else():
    inbox = [
        "/users/alice/notifications",
        "/users/alice/notifications/counts",
        "/users/alice/notifications/read-all",
        "/users/alice/notifications/seen-all",
        "/users/alice/notifications/stream-ticket",
        "/users/alice/notifications/stream",
        "/notifications/abc/read",
        "/notifications/abc/unarchive",
    ]
    others = [
        "/notifications",
        "/notifications/abc",
        "/notifications/abc/retry",
        "/notifications/abc/cancel",
        "/users/alice",
        "/users/alice/token",
        "/users/alice/preferences",
        "/users/alice/notifications/extra/counts",
        "/stats",
    ]
    assert all(cors.is_inbox_path(path) for path in inbox)
    assert not any(cors.is_inbox_path(path) for path in others)
    assert cors.is_inbox_rule("/notifications/<notification_id>/seen")
    assert not cors.is_inbox_rule("/notifications/<notification_id>/retry")


def test_a_preflight_from_an_allowed_origin_is_answered_without_a_credential(inbox):
    reply = inbox.options(
        "/users/alice/notifications/counts",
        headers={"Origin": APP_ORIGIN, "Access-Control-Request-Headers": "authorization"},
    )
    assert reply.status_code == 204
    assert reply.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert "Authorization" in reply.headers["Access-Control-Allow-Headers"]
    assert "POST" in reply.headers["Access-Control-Allow-Methods"]
    assert "Access-Control-Allow-Credentials" not in reply.headers
    assert "Origin" in reply.headers["Vary"]


def test_a_preflight_from_another_origin_allows_nothing(inbox):
    reply = inbox.options("/notifications/abc/read", headers={"Origin": OTHER_ORIGIN})
    assert not any(name.startswith("Access-Control-Allow") for name in reply.headers.keys())


def test_an_allowed_page_reads_the_counts_and_marks_one_read_with_a_user_token(inbox, service):
    notification_id = in_app(service)
    headers = {"Origin": APP_ORIGIN, "Sec-Fetch-Site": "cross-site", **user_token("alice")}
    counts = inbox.get("/users/alice/notifications/counts", headers=headers)
    assert counts.status_code == 200
    assert counts.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert counts.get_json()["unread"] == 1
    read = inbox.post(f"/notifications/{notification_id}/read", headers=headers)
    assert read.status_code == 200, read.get_json()
    assert read.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert service.get(notification_id).read_at is not None


def test_a_refusal_is_readable_by_the_allowed_page(inbox):
    reply = inbox.get("/users/alice/notifications/counts", headers={"Origin": APP_ORIGIN})
    assert reply.status_code == 401
    assert reply.headers["Access-Control-Allow-Origin"] == APP_ORIGIN


def test_another_origin_gets_no_cors_header_and_may_not_change_anything(inbox, service):
    notification_id = in_app(service)
    headers = {"Origin": OTHER_ORIGIN, "Sec-Fetch-Site": "cross-site", **user_token("alice")}
    counts = inbox.get("/users/alice/notifications/counts", headers=headers)
    assert "Access-Control-Allow-Origin" not in counts.headers
    read = inbox.post(f"/notifications/{notification_id}/read", headers=headers)
    assert read.status_code == 403
    assert service.get(notification_id).read_at is None


def test_the_session_cookie_does_not_count_for_another_sites_page(inbox, service):
    """A same-site page on another port sends the cookie with `credentials: include`: it must
    not act as the signed-in admin."""
    notification_id = in_app(service)
    cookie, _ = get_access().log_in(ADMIN_KEY, "127.0.0.1")
    inbox.set_cookie(SESSION_COOKIE, cookie)
    headers = {"Origin": APP_ORIGIN, "Sec-Fetch-Site": "same-site"}
    assert inbox.get("/users/alice/notifications/counts", headers=headers).status_code == 401
    assert inbox.post(f"/notifications/{notification_id}/read", headers=headers).status_code == 401
    assert service.get(notification_id).read_at is None
    # ... while on the service's own pages the cookie still reads (same origin, no Origin).
    assert inbox.get("/users/alice/notifications/counts").status_code == 200


def test_the_other_routes_stay_same_origin(notifications, service):
    notification_id = in_app(service)
    headers = {"Origin": APP_ORIGIN, "Authorization": f"Bearer {ADMIN_KEY}"}
    one = notifications.get(f"/notifications/{notification_id}", headers=headers)
    assert one.status_code == 200
    assert not any(name.startswith("Access-Control-") for name in one.headers.keys())
    assert (
        notifications.options(f"/notifications/{notification_id}", headers=headers).status_code
        == 405
    )
    cross = {**headers, "Sec-Fetch-Site": "cross-site"}
    retry = notifications.post(f"/notifications/{notification_id}/retry", headers=cross)
    assert retry.status_code == 403
    listing = notifications.get("/users/alice/notifications", headers=headers)
    assert listing.headers["Access-Control-Allow-Origin"] == APP_ORIGIN  # the inbox listing
