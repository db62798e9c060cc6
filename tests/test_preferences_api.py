"""Preferences through the HTTP API: GET gives the stored document or the defaults, PUT
replaces it; the admin or the user's own token may, nobody else; a 400 changes nothing."""

from __future__ import annotations

import pytest

from common.hosting import FunctionRouter
from common.preferences.document import DEFAULT_PREFERENCES
from common.preferences.store import make_preference_store
from common.runtime import set_service
from tests.support.auth import ADMIN_KEY, AuthClient
from tests.support.services import installed_service

PATH = "/users/ann/preferences"
DOCUMENT = {
    "channels": {"sms": False},
    "categories": {"Marketing": {"email": False}},
    "timezone": "Europe/Paris",
    "quiet_hours": {"start": "22:00", "end": "07:00"},
}
STORED = {
    "channels": {"email": True, "sms": False, "in_app": True},
    "categories": {"marketing": {"email": False}},
    "timezone": "Europe/Paris",
    "quiet_hours": {"start": "22:00", "end": "07:00"},
}


@pytest.fixture(scope="module")
def router():
    return FunctionRouter()


@pytest.fixture
def service(settings):
    yield installed_service(settings, preferences=make_preference_store(settings))
    set_service(None)


@pytest.fixture
def admin(router, service):
    return AuthClient(router)


def client_for(router, credential: str | None) -> AuthClient:
    return AuthClient(router, credentials=credential)


def user_token(admin, user_id: str) -> str:
    reply = admin.post(f"/users/{user_id}/token")
    assert reply.status_code == 201, reply.get_json()
    return reply.get_json()["token"]


def api_key(admin, *scopes: str) -> str:
    reply = admin.post("/api-keys", json={"name": "test", "scopes": list(scopes)})
    assert reply.status_code == 201, reply.get_json()
    return reply.get_json()["key"]


def test_a_user_without_preferences_gets_the_defaults(admin):
    reply = admin.get(PATH)
    assert reply.status_code == 200
    assert reply.get_json() == DEFAULT_PREFERENCES


def test_put_then_get_gives_back_the_normalised_document(admin, service):
    reply = admin.put(PATH, json=DOCUMENT)
    assert reply.status_code == 200, reply.get_json()
    assert reply.get_json() == STORED
    assert admin.get(PATH).get_json() == STORED
    assert service.preferences.get("ann")["quiet_hours"] == [{"start": "22:00", "end": "07:00"}]
    assert admin.get("/users/bob/preferences").get_json() == DEFAULT_PREFERENCES


def test_put_replaces_the_whole_document(admin):
    admin.put(PATH, json=DOCUMENT)
    reply = admin.put(PATH, json={"channels": {"email": False}})
    assert reply.status_code == 200
    assert admin.get(PATH).get_json() == {
        **DEFAULT_PREFERENCES,
        "channels": {"email": False, "sms": True, "in_app": True},
    }


def test_per_weekday_windows_come_back_as_a_list(admin):
    windows = [
        {"start": "22:00", "end": "07:00", "days": ["mon", "tue", "wed", "thu", "sun"]},
        {"start": "23:30", "end": "10:00", "days": ["fri", "sat"]},
    ]
    assert admin.put(PATH, json={"quiet_hours": windows}).status_code == 200
    assert admin.get(PATH).get_json()["quiet_hours"] == windows


@pytest.mark.parametrize(
    "body, field",
    [
        ({**DOCUMENT, "language": "fr"}, "language"),
        ({"channels": {"pigeon": True}}, "channels.pigeon"),
        ({"quiet_hours": {"start": "22:00", "end": "07:00", "every": "day"}}, "quiet_hours.every"),
        ({"timezone": "Europe/Atlantis"}, "timezone"),
        ({"timezone": "../../../etc/passwd"}, "timezone"),
        ({"quiet_hours": {"start": "07:00", "end": "07:00"}}, "quiet_hours.end"),
    ],
)
def test_a_bad_document_is_a_400_naming_the_field_and_changes_nothing(admin, body, field):
    assert admin.put(PATH, json=DOCUMENT).status_code == 200
    reply = admin.put(PATH, json=body)
    assert reply.status_code == 400
    assert field in reply.get_json()["fields"]
    assert admin.get(PATH).get_json() == STORED


def test_a_body_that_is_not_json_or_not_an_object_is_refused(admin):
    assert admin.put(PATH, json=[1, 2]).status_code == 400
    assert admin.put(PATH, data="{", content_type="application/json").status_code == 400
    assert admin.get(PATH).get_json() == DEFAULT_PREFERENCES


def test_a_bad_user_id_is_a_400(admin):
    assert admin.get("/users/not%20valid/preferences").status_code == 400


def test_a_user_token_reaches_its_own_preferences_only(router, admin):
    token = client_for(router, user_token(admin, "ann"))
    assert token.get(PATH).status_code == 200
    assert token.put(PATH, json=DOCUMENT).status_code == 200
    assert admin.get(PATH).get_json() == STORED
    assert token.get("/users/bob/preferences").status_code == 403
    assert token.put("/users/bob/preferences", json=DOCUMENT).status_code == 403
    assert admin.get("/users/bob/preferences").get_json() == DEFAULT_PREFERENCES


def test_an_api_key_without_admin_is_refused(router, admin):
    sender = client_for(router, api_key(admin, "send"))
    assert sender.get(PATH).status_code == 403
    assert sender.put(PATH, json=DOCUMENT).status_code == 403
    assert admin.get(PATH).get_json() == DEFAULT_PREFERENCES


def test_no_credential_is_a_401(router, service):
    nobody = client_for(router, None)
    assert nobody.get(PATH).status_code == 401
    assert nobody.put(PATH, json=DOCUMENT).status_code == 401


def test_without_a_preference_store_the_api_answers_503(router, settings):
    installed_service(settings, preferences=None)
    try:
        admin = client_for(router, ADMIN_KEY)
        assert admin.get(PATH).status_code == 503
        assert admin.put(PATH, json=DOCUMENT).status_code == 503
    finally:
        set_service(None)
