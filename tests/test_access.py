"""Who may do what: every endpoint's rule (401, 403, 2xx) for API keys, ADMIN_API_KEY, per-user
tokens and issuer JWTs; the web login and its session; rate limits, recipient caps, the SMS
country list and the Host allow-list, through the same router the runner serves."""

from __future__ import annotations

import re
import sqlite3
import time
from datetime import timedelta

import jwt
import pytest

from common.auth import user_tokens
from common.channels import make_channels
from common.config import load_settings
from common.hosting import FunctionRouter
from common.model import utcnow
from common.queue.memory import MemoryQueue
from common.runtime import get_access, get_limiter, set_service
from common.service import NotificationService
from common.store.sqlite import SqliteStore
from tests.support.auth import ADMIN_KEY, AuthClient
from tests.support.jwks import (  # noqa: F401 (the fixtures jwks_url and signing_key)
    AUDIENCE,
    ISSUER,
    KID,
    jwks_url_fixture,
    signing_key_fixture,
)

IN_APP = {"user_id": "ann", "notification_type": "in_app", "message": "hello"}


@pytest.fixture(scope="module")
def router():
    return FunctionRouter()


def make_service(env: dict) -> NotificationService:
    from common.admission import Admission

    settings = load_settings(env)
    service = NotificationService(
        settings,
        SqliteStore(settings.data_dir / "notifications.db"),
        MemoryQueue(),
        make_channels(settings),
        admission=Admission(settings, get_limiter(settings)),
    )
    set_service(service)
    return service


@pytest.fixture
def service(settings_env):
    service = make_service(settings_env)
    yield service
    set_service(None)


@pytest.fixture
def configure(settings_env):
    """Install a service with these extra settings (on top of the test defaults)."""

    def install(**extra) -> NotificationService:
        return make_service({**settings_env, **{k: str(v) for k, v in extra.items()}})

    yield install
    set_service(None)


def client_for(router, credential: str | None) -> AuthClient:
    return AuthClient(router, credentials=credential)


def new_key(router, *scopes: str, **extra) -> str:
    reply = client_for(router, ADMIN_KEY).post(
        "/api-keys", json={"name": f"test {'+'.join(scopes)}", "scopes": list(scopes), **extra}
    )
    assert reply.status_code == 201, reply.get_json()
    return reply.get_json()["key"]


def user_token(router, user_id: str) -> str:
    reply = client_for(router, ADMIN_KEY).post(f"/users/{user_id}/token")
    assert reply.status_code == 201, reply.get_json()
    return reply.get_json()["token"]


def sent_id(router, payload=IN_APP) -> str:
    reply = client_for(router, ADMIN_KEY).post("/notifications", json=payload)
    assert reply.status_code == 201, reply.get_json()
    return reply.get_json()["id"]


# -- the rule of every endpoint -------------------------------------------------------------

# (method, path, body, the scope that grants it); {id} is a notification of user "ann".
ENDPOINTS = [
    ("POST", "/notifications", IN_APP, "send"),
    ("POST", "/notifications/batch", {"notifications": [IN_APP]}, "send"),
    ("GET", "/notifications/{id}", None, "read"),
    ("GET", "/users/ann/notifications", None, "read"),
    ("GET", "/stats", None, "read"),
    ("GET", "/readyz", None, "read"),
    ("POST", "/notifications/{id}/retry", None, "retry"),
    ("POST", "/sweep", None, "admin"),
    ("GET", "/api-keys", None, "admin"),
    ("POST", "/api-keys", {"name": "x", "scopes": ["read"]}, "admin"),
    ("POST", "/users/ann/token", None, "send"),
]
SCOPES = ("send", "read", "retry", "templates", "admin")


def call(client, method, path, body, notification_id):
    path = path.replace("{id}", notification_id)
    return client.open(path, method=method, json=body)


@pytest.mark.parametrize(("method", "path", "body", "scope"), ENDPOINTS)
def test_each_endpoint_answers_401_403_or_success_by_credential(
    router, service, method, path, body, scope
):
    notification_id = sent_id(router)
    nobody = call(client_for(router, None), method, path, body, notification_id)
    assert nobody.status_code == 401
    assert nobody.headers["WWW-Authenticate"].startswith("Bearer")
    assert "error" in nobody.get_json()
    wrong = call(client_for(router, "nsk_aaaaaaaaaaaa_" + "x" * 43), method, path, body, "x")
    assert wrong.status_code == 401 and wrong.get_json()["error"] == "the API key is not valid"
    for other in SCOPES:
        reply = call(
            client_for(router, new_key(router, other)), method, path, body, notification_id
        )
        allowed = other in (scope, "admin")
        if allowed:
            # A retry of a queued notification is a 409: the scope let it through.
            assert reply.status_code in (200, 201, 202, 409), (other, reply.get_json())
        else:
            assert reply.status_code == 403, (other, reply.status_code)
            assert "scope" in reply.get_json()["error"]


def test_admin_api_key_from_the_environment_is_an_admin(router, service):
    for path in ("/stats", "/api-keys", "/users/ann/notifications"):
        assert client_for(router, ADMIN_KEY).get(path).status_code == 200
    assert client_for(router, ADMIN_KEY + "x").get("/stats").status_code == 401


def test_only_health_openapi_static_and_login_are_open(router, service):
    nobody = client_for(router, None)
    for path in ("/healthz", "/openapi.json", "/static/app.css", "/login"):
        assert nobody.get(path).status_code == 200, path
    for path in ("/", "/dashboard", "/users", "/send-notification", "/users/ann"):
        reply = nobody.get(path)
        assert reply.status_code == 303 and reply.headers["Location"].startswith("/login?next=")


def test_a_scheme_other_than_bearer_is_refused_with_a_hint(router, service):
    reply = client_for(router, None).get("/stats", headers={"Authorization": "Basic YTpi"})
    assert reply.status_code == 401 and "Bearer" in reply.get_json()["error"]


# -- API keys ---------------------------------------------------------------------------------


def test_a_key_is_shown_once_stored_as_a_hash_and_listed_without_its_secret(router, service):
    admin = client_for(router, ADMIN_KEY)
    created = admin.post("/api-keys", json={"name": "billing", "scopes": ["send", "read"]})
    body = created.get_json()
    assert created.status_code == 201 and body["key"].startswith("nsk_" + body["id"] + "_")
    assert body["scopes"] == ["send", "read"] and body["expires_at"] is None
    listing = admin.get("/api-keys").get_json()
    assert body["key"] not in str(listing)
    listed = next(k for k in listing["keys"] if k["id"] == body["id"])
    assert set(listed) == {
        "id",
        "name",
        "scopes",
        "created_at",
        "expires_at",
        "revoked_at",
        "last_used_at",
        "rate_limit",
    }
    database = service.settings.data_dir / "access.db"
    assert body["key"].encode() not in database.read_bytes()
    secret_part = body["key"].rsplit("_", 1)[1]
    rows = sqlite3.connect(database).execute("SELECT * FROM api_keys").fetchall()
    assert all(secret_part not in str(row) for row in rows)


def test_rotation_is_create_then_revoke_and_revoking_takes_effect_at_once(router, service):
    admin = client_for(router, ADMIN_KEY)
    old, new = new_key(router, "read"), new_key(router, "read")
    assert client_for(router, old).get("/stats").status_code == 200
    assert client_for(router, new).get("/stats").status_code == 200
    old_id = old.split("_")[1]
    revoked = admin.delete(f"/api-keys/{old_id}")
    assert revoked.status_code == 200 and revoked.get_json()["revoked_at"]
    refused = client_for(router, old).get("/stats")
    assert refused.status_code == 401 and "revoked" in refused.get_json()["error"]
    assert client_for(router, new).get("/stats").status_code == 200
    assert admin.delete("/api-keys/nosuchkey000").status_code == 404
    assert admin.delete("/api-keys/..%2F..").status_code == 404


def test_an_expired_key_is_refused(router, service):
    key = new_key(router, "read", expires_in="1s")
    assert client_for(router, key).get("/stats").status_code == 200
    time.sleep(1.1)
    reply = client_for(router, key).get("/stats")
    assert reply.status_code == 401 and "expired" in reply.get_json()["error"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"scopes": ["read"]}, "name"),
        ({"name": "x", "scopes": []}, "scopes"),
        ({"name": "x", "scopes": ["root"]}, "scopes"),
        ({"name": "x", "scopes": ["read"], "expires_in": "forever"}, "expires_in"),
        ({"name": "x", "scopes": ["read"], "rate_limit": "fast"}, "rate_limit"),
        ({"name": "x", "scopes": ["read"], "owner": "me"}, "owner"),
    ],
)
def test_a_bad_key_request_is_a_400_naming_the_field_and_stores_nothing(
    router, service, body, field
):
    admin = client_for(router, ADMIN_KEY)
    before = admin.get("/api-keys").get_json()["count"]
    reply = admin.post("/api-keys", json=body)
    assert reply.status_code == 400 and field in reply.get_json()["fields"]
    assert admin.get("/api-keys").get_json()["count"] == before


def test_last_used_at_is_recorded(router, service):
    key = new_key(router, "read")
    client_for(router, key).get("/stats")
    listed = client_for(router, ADMIN_KEY).get("/api-keys").get_json()["keys"]
    assert next(k for k in listed if key.split("_")[1] == k["id"])["last_used_at"]


# -- per-user tokens ----------------------------------------------------------------------------


def test_a_user_token_reads_its_own_notifications_and_nothing_else(router, service):
    own = sent_id(router)
    theirs = sent_id(router, {**IN_APP, "user_id": "bob"})
    token = client_for(router, user_token(router, "ann"))
    listed = token.get("/users/ann/notifications")
    assert listed.status_code == 200 and [n["id"] for n in listed.get_json()["notifications"]]
    assert token.get(f"/notifications/{own}").status_code == 200
    assert token.get(f"/notifications/{theirs}").status_code == 403
    assert token.get("/users/bob/notifications").status_code == 403
    for method, path, body, _ in ENDPOINTS:
        if path not in ("/users/ann/notifications", "/notifications/{id}"):
            reply = call(token, method, path, body, own)
            assert reply.status_code == 403, path


def test_a_user_token_expires_and_lives_at_most_a_day(router, service):
    admin = client_for(router, ADMIN_KEY)
    reply = admin.post("/users/ann/token", json={"expires_in": 86401})
    assert reply.status_code == 400 and "expires_in" in reply.get_json()["fields"]
    assert admin.post("/users/not%20valid/token").status_code == 400
    secret = get_access().token_secret
    now = utcnow()
    stale, _ = user_tokens.mint("ann", secret, timedelta(seconds=60), now - timedelta(hours=1))
    reply = client_for(router, stale).get("/users/ann/notifications")
    assert reply.status_code == 401 and "expired" in reply.get_json()["error"]
    long_lived = jwt.encode(
        {
            "sub": "ann",
            "iss": user_tokens.ISSUER,
            "aud": user_tokens.AUDIENCE,
            "iat": int(now.timestamp()),
            "exp": int(now.timestamp()) + 2 * 86400,
        },
        secret,
        algorithm="HS256",
    )
    assert client_for(router, long_lived).get("/users/ann/notifications").status_code == 401


def test_an_application_can_mint_a_user_token_itself(router, service):
    """The README's recipe: PyJWT with AUTH_SECRET, nothing from this service's code."""
    now = int(time.time())
    claims = {
        "sub": "ann",
        "iss": "notification-service",
        "aud": "notification-service:user",
        "iat": now,
        "exp": now + 600,
    }
    token = jwt.encode(claims, get_access().token_secret, algorithm="HS256")
    assert client_for(router, token).get("/users/ann/notifications").status_code == 200
    forged = jwt.encode(claims, "another-secret-of-at-least-32-characters!", algorithm="HS256")
    assert client_for(router, forged).get("/users/ann/notifications").status_code == 401


def test_the_token_secret_is_generated_once_into_data_dir_with_mode_0600(router, service):
    secret = get_access().token_secret
    path = service.settings.data_dir / "auth.secret"
    assert secret == path.read_text().strip() and len(secret) >= 32
    assert path.stat().st_mode & 0o777 == 0o600
    assert get_access().token_secret == path.read_text().strip()


# -- issuer JWTs through the API ----------------------------------------------------------------


def test_issuer_jwts_are_accepted_with_their_scopes_and_forgeries_refused(
    router, configure, jwks_url, signing_key
):
    configure(AUTH_JWT_ISSUER=ISSUER, AUTH_JWT_AUDIENCE=AUDIENCE, AUTH_JWKS_URL=jwks_url)
    now = int(time.time())

    def token(**changes):
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "svc", "iat": now, "exp": now + 300}
        claims.update(changes)
        return jwt.encode(claims, signing_key, algorithm="RS256", headers={"kid": KID})

    reader = client_for(router, token(scope="notifications:read"))
    assert reader.get("/stats").status_code == 200
    assert reader.post("/notifications", json=IN_APP).status_code == 403
    sender = client_for(router, token(scp=["send"]))
    assert sender.post("/notifications", json=IN_APP).status_code == 201
    for bad in (token(exp=now - 120, scope="read"), token(aud="other", scope="read")):
        assert client_for(router, bad).get("/stats").status_code == 401


# -- the web pages' login -----------------------------------------------------------------------


def csrf_of(page) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True)).group(1)


def log_in(client, key: str, next_path: str = "/dashboard"):
    form = client.get("/login")
    return client.post(
        "/login", data={"csrf_token": csrf_of(form), "api_key": key, "next": next_path}
    )


def test_login_sets_a_strict_httponly_expiring_session_and_logout_ends_it(router, service):
    browser = client_for(router, None)
    assert browser.get("/dashboard").status_code == 303
    reply = log_in(browser, ADMIN_KEY)
    assert reply.status_code == 303 and reply.headers["Location"] == "/dashboard"
    cookie = reply.headers["Set-Cookie"]
    assert "notify_session=" in cookie and "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie and "Max-Age=" in cookie
    page = browser.get("/dashboard")
    assert page.status_code == 200 and "Log out" in page.get_data(as_text=True)
    assert browser.get("/stats").status_code == 200  # the pages' scripts poll the API
    browser.post("/logout", data={"csrf_token": csrf_of(page)})
    assert browser.get("/dashboard").status_code == 303


def test_login_refuses_a_wrong_key_and_a_key_without_admin(router, service):
    browser = client_for(router, None)
    assert log_in(browser, "not-a-key").status_code == 401
    reply = log_in(browser, new_key(router, "send", "read"))
    assert reply.status_code == 403 and "admin" in reply.get_data(as_text=True)
    assert browser.get("/dashboard").status_code == 303


def test_login_goes_only_to_a_path_on_this_site(router, service):
    for target in ("https://evil.example/", "//evil.example/", "/\\evil.example"):
        reply = log_in(client_for(router, None), ADMIN_KEY, target)
        assert reply.headers["Location"] == "/"


def test_the_session_ends_when_its_key_is_revoked(router, service):
    key = new_key(router, "admin")
    browser = client_for(router, None)
    log_in(browser, key)
    assert browser.get("/dashboard").status_code == 200
    client_for(router, ADMIN_KEY).delete(f"/api-keys/{key.split('_')[1]}")
    assert browser.get("/dashboard").status_code == 303


def test_a_json_write_with_the_session_cookie_needs_the_sessions_csrf_token(router, service):
    browser = client_for(router, None)
    log_in(browser, ADMIN_KEY)
    refused = browser.post("/notifications", json=IN_APP)
    assert refused.status_code == 403 and "X-CSRF-Token" in refused.get_json()["error"]
    other = client_for(router, None)
    log_in(other, ADMIN_KEY)
    foreign = csrf_of(other.get("/dashboard"))
    headers = {"X-CSRF-Token": foreign}
    assert browser.post("/notifications", json=IN_APP, headers=headers).status_code == 403
    headers = {"X-CSRF-Token": csrf_of(browser.get("/dashboard"))}
    assert browser.post("/notifications", json=IN_APP, headers=headers).status_code == 201


def test_a_form_token_is_tied_to_its_session(router, service):
    first, second = client_for(router, None), client_for(router, None)
    log_in(first, ADMIN_KEY)
    log_in(second, ADMIN_KEY)
    token_of_first = csrf_of(first.get("/send-notification"))
    form = {
        "csrf_token": token_of_first,
        "user_id": "ann",
        "notification_type": "in_app",
        "message": "hi",
    }
    assert second.post("/send-notification", data=form).status_code == 403
    assert first.post("/send-notification", data=form).status_code != 403


def test_a_form_token_expires(router, configure, monkeypatch):
    configure(SESSION_SECONDS=60)
    browser = client_for(router, None)
    log_in(browser, ADMIN_KEY)
    from itsdangerous.timed import TimestampSigner

    from common import web_csrf
    from common.web import csrf_secret

    session_id = get_access().session_id(browser.get_cookie("notify_session").value)
    signed_at = int(time.time()) - 120  # a form opened two minutes ago, past SESSION_SECONDS
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: signed_at)
    old_token = web_csrf.form_token(session_id, csrf_secret())
    monkeypatch.undo()
    form = {"csrf_token": old_token, "user_id": "ann", "notification_type": "in_app"}
    reply = browser.post("/send-notification", data={**form, "message": "hi"})
    assert reply.status_code == 403 and "expired" in reply.get_data(as_text=True)


# -- limits -----------------------------------------------------------------------------------


def test_the_send_rate_limit_answers_429_with_the_ratelimit_headers(router, configure):
    configure(SEND_RATE_LIMIT=2)
    now = [time.time()]
    get_access().limiter._clock = lambda: now[0]  # the bucket's time stands still, then moves
    key = new_key(router, "send")
    sender = client_for(router, key)
    replies = [sender.post("/notifications", json=IN_APP) for _ in range(6)]
    codes = [r.status_code for r in replies]
    assert codes == [201] * 4 + [429] * 2  # a burst of 2 x 2
    accepted, refused = replies[0], replies[-1]
    now[0] += 0.5  # one token back at 2 per second
    assert sender.post("/notifications", json=IN_APP).status_code == 201
    assert sender.post("/notifications", json=IN_APP).status_code == 429
    assert accepted.headers["RateLimit-Limit"] == "4"
    assert int(accepted.headers["RateLimit-Remaining"]) == 3
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.headers["RateLimit-Remaining"] == "0"
    assert "rate limit" in refused.get_json()["error"]
    # Another credential has its own bucket; a batch costs its item count.
    other = client_for(router, new_key(router, "send"))
    batch = {"notifications": [IN_APP] * 5}
    assert other.post("/notifications/batch", json=batch).status_code == 429


def test_a_key_may_carry_its_own_rate_and_zero_turns_the_limit_off(router, configure):
    configure(SEND_RATE_LIMIT=1)
    unlimited = client_for(router, new_key(router, "send", rate_limit=0))
    codes = {unlimited.post("/notifications", json=IN_APP).status_code for _ in range(8)}
    assert codes == {201}
    reply = unlimited.post("/notifications", json=IN_APP)
    assert "RateLimit-Limit" not in reply.headers


def test_the_recipient_cap_refuses_the_eleventh_sms_and_stores_nothing(router, configure):
    service = configure(SEND_RATE_LIMIT=0)
    sender = client_for(router, ADMIN_KEY)
    sms = {"user_id": "ann", "notification_type": "sms", "phone": "+14155550123", "message": "x"}
    codes = [sender.post("/notifications", json=sms).status_code for _ in range(11)]
    assert codes == [201] * 10 + [429]
    assert service.store.count_by_type().get("sms") == 10
    # The same number spelled with spaces is the same recipient; another number is not.
    spaced = {**sms, "phone": "+1 415 555 0123"}
    assert sender.post("/notifications", json=spaced).status_code in (400, 429)
    other = {**sms, "phone": "+14155550124"}
    assert sender.post("/notifications", json=other).status_code == 201


def test_in_a_batch_only_the_items_over_the_cap_are_refused(router, configure):
    configure(SEND_RATE_LIMIT=0, EMAIL_PER_RECIPIENT_PER_HOUR=2)
    mail = {"user_id": "ann", "notification_type": "email", "email": "a@example.com"}
    items = [{**mail, "message": str(i)} for i in range(3)]
    items.append({**mail, "email": "b@example.com", "message": "other"})
    reply = client_for(router, ADMIN_KEY).post(
        "/notifications/batch", json={"notifications": items}
    )
    results = reply.get_json()["results"]
    assert [("id" in r) for r in results] == [True, True, False, True]
    assert results[2]["status"] == 429 and "hour" in results[2]["error"]
    upper = {**mail, "email": "A@Example.com", "message": "again"}
    assert client_for(router, ADMIN_KEY).post("/notifications", json=upper).status_code == 429


def test_an_idempotent_repeat_does_not_count_against_the_cap(router, configure):
    configure(SEND_RATE_LIMIT=0, SMS_PER_RECIPIENT_PER_HOUR=1)
    sender = client_for(router, ADMIN_KEY)
    sms = {"user_id": "ann", "notification_type": "sms", "phone": "+14155550123", "message": "x"}
    headers = {"Idempotency-Key": "order-1"}
    assert sender.post("/notifications", json=sms, headers=headers).status_code == 201
    assert sender.post("/notifications", json=sms, headers=headers).status_code == 200
    assert sender.post("/notifications", json=sms).status_code == 429


def test_sms_only_go_to_the_allowed_countries(router, configure):
    service = configure(SMS_ALLOWED_COUNTRIES="1,33")
    sender = client_for(router, ADMIN_KEY)
    sms = {"user_id": "ann", "notification_type": "sms", "message": "x"}
    uk = sender.post("/notifications", json={**sms, "phone": "+447700900123"})
    assert uk.status_code == 400 and "phone" in uk.get_json()["fields"]
    assert sender.post("/notifications", json={**sms, "phone": "+33612345678"}).status_code == 201
    assert service.store.count_by_type().get("sms") == 1


def test_repeated_failed_credentials_are_slowed_with_429(router, service):
    guesser = client_for(router, "guess")
    codes = [guesser.get("/stats").status_code for _ in range(14)]
    assert codes[:9] == [401] * 9 and codes[-1] == 429
    assert int(guesser.get("/stats").headers["Retry-After"]) >= 1


def test_a_request_for_a_foreign_host_is_refused(router, configure):
    configure(ALLOWED_HOSTS="localhost,127.0.0.1")
    admin = client_for(router, ADMIN_KEY)
    assert admin.get("/stats", headers={"Host": "localhost:8080"}).status_code == 200
    reply = admin.get("/stats", headers={"Host": "rebound.evil.example"})
    assert reply.status_code == 400 and "Host" in reply.get_json()["error"]
    assert client_for(router, None).get("/healthz", headers={"Host": "evil"}).status_code == 400


# -- the key stores ---------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "mongo"])
def key_store(request, tmp_path):
    from common.auth.key_store import MongoKeyStore, SqliteKeyStore

    if request.param == "sqlite":
        store = SqliteKeyStore(tmp_path / "access.db")
    else:
        import mongomock  # no MongoDB server runs here: the contract runs on mongomock

        store = MongoKeyStore(mongomock.MongoClient(tz_aware=True), "keys_test")
    yield store
    store.close()


def test_each_key_store_keeps_lists_revokes_and_records_use(key_store):
    from common.auth.api_keys import new_key as make_key

    now = utcnow()
    first, first_secret = make_key("first", ["send"], now, "90d", 5)
    assert key_store.add_first(first) is True
    second, _ = make_key("second", ["admin"], now + timedelta(seconds=1))
    assert key_store.add_first(second) is False  # there is a key already
    key_store.add(second)
    stored = key_store.get(first.id)
    assert stored.matches(first_secret) and stored.scopes == ("send",)
    assert stored.send_rate == 5 and stored.expires_at is not None
    assert [k.id for k in key_store.all()] == [first.id, second.id]
    revoked = key_store.revoke(first.id, now)
    assert revoked.revoked_at is not None and revoked.usable(now) == "the API key was revoked"
    assert key_store.revoke(first.id, now + timedelta(hours=1)).revoked_at == revoked.revoked_at
    assert key_store.revoke("nosuchkey000", now) is None
    key_store.touch(second.id, now)
    assert key_store.get(second.id).last_used_at is not None
    assert key_store.count() == 2
