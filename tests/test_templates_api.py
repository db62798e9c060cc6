"""Templates through the API the runner serves: versions, archive, preview, who may write them,
and sends rendered from a template (stored text is sent text; a retry sends the same)."""

from __future__ import annotations

import pytest

from tests.support.auth import ADMIN_KEY, AuthClient
from tests.support.services import (  # noqa: F401
    client_fixture,
    installed_service,
    router_fixture,
    service_fixture,
)
from tests.support.template_samples import WELCOME


def saved(client, document=WELCOME) -> dict:
    reply = client.post("/templates", json=document)
    assert reply.status_code == 201, reply.get_json()
    return reply.get_json()


def test_versions_are_immutable_and_each_stays_readable(client):
    first = saved(client)
    assert first["version"] == 1 and first["archived"] is False
    changed = {**WELCOME, "description": "new wording"}
    changed["locales"] = {**WELCOME["locales"]}
    changed["locales"]["en"] = {
        **WELCOME["locales"]["en"],
        "sms": {"text": "Hello {{ name }}, welcome!"},
    }
    second = client.put("/templates/welcome", json=changed)
    assert second.status_code == 201 and second.get_json()["version"] == 2
    assert second.headers["Location"] == "/templates/welcome/versions/2"
    assert client.get("/templates/welcome").get_json()["version"] == 2
    old = client.get("/templates/welcome/versions/1").get_json()
    assert old["locales"]["en"]["sms"]["text"] == "Welcome {{ name }}!"
    assert client.post("/templates", json=WELCOME).status_code == 409
    assert client.get("/templates/welcome/versions/9").status_code == 404
    assert client.get("/templates/nope").status_code == 404
    listed = client.get("/templates").get_json()
    assert [t["key"] for t in listed["templates"]] == ["welcome"]


def test_a_send_is_rendered_when_accepted_and_records_its_template(client, service):
    saved(client)
    reply = client.post(
        "/notifications",
        json={
            "user_id": "ann",
            "notification_type": "email",
            "email": "ann@example.com",
            "template": "welcome",
            "data": {"name": "Zoé"},
            "locale": "fr-CA",
        },
    )
    assert reply.status_code == 201, reply.get_json()
    stored = service.get(reply.get_json()["id"])
    assert stored.subject == "Bienvenue, Zoé"
    assert stored.message == "Bonjour Zoé, merci de votre inscription."
    assert "<b>Zoé</b>" in stored.html
    assert (stored.template, stored.template_version, stored.locale) == ("welcome", 1, "fr")
    shown = reply.get_json()["notification"]
    assert shown["template"] == "welcome" and shown["locale"] == "fr"


def test_in_app_and_sms_take_their_own_parts(client, service):
    saved(client)
    in_app = client.post(
        "/notifications",
        json={"user_id": "ann", "type": "in_app", "template": "welcome", "data": {"name": "Ann"}},
    ).get_json()
    stored = service.get(in_app["id"])
    assert (stored.title, stored.message, stored.action_url) == ("Welcome", "Hi Ann", "/start")
    sms = client.post(
        "/notifications",
        json={
            "user_id": "ann",
            "type": "sms",
            "phone": "+14155550123",
            "template": "welcome",
            "data": {"name": "Ann"},
            "locale": "de",  # not covered: the default locale
        },
    ).get_json()
    assert service.get(sms["id"]).message == "Welcome Ann!"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"data": {}}, "data.name"),
        ({"data": {"name": ""}}, "data.name"),
        ({"message": "hello"}, "message"),
        ({"template": "missing"}, "template"),
        ({"template_version": 7}, "template"),
        ({"template_version": "1"}, "template_version"),
    ],
)
def test_a_bad_template_send_is_a_400_naming_the_problem_and_stores_nothing(
    client, service, change, field
):
    saved(client)
    body = {"user_id": "ann", "type": "in_app", "template": "welcome", "data": {"name": "A"}}
    reply = client.post("/notifications", json={**body, **change})
    assert reply.status_code == 400, reply.get_json()
    assert field in reply.get_json()["fields"]
    assert service.store.count_by_type() == {}


def test_version_pinning_and_archiving(client, service):
    saved(client)
    client.put("/templates/welcome", json={**WELCOME, "description": "v2"})
    body = {"user_id": "ann", "type": "in_app", "template": "welcome", "data": {"name": "A"}}
    pinned = client.post("/notifications", json={**body, "template_version": 1}).get_json()
    assert service.get(pinned["id"]).template_version == 1
    latest = client.post("/notifications", json=body).get_json()
    assert service.get(latest["id"]).template_version == 2
    archived = client.delete("/templates/welcome")
    assert archived.status_code == 200 and archived.get_json()["archived"] is True
    refused = client.post("/notifications", json=body)
    assert refused.status_code == 400 and "archived" in refused.get_json()["fields"]["template"]
    # What was sent keeps its text; a pinned send may still use an archived version.
    assert service.get(latest["id"]).message == "Hi A"
    assert client.post("/notifications", json={**body, "template_version": 2}).status_code == 201
    assert client.put("/templates/welcome", json=WELCOME).status_code == 409
    assert saved(client)["version"] == 3  # POST starts an archived template again


def test_a_retry_sends_the_text_stored_at_acceptance(client, service):
    saved(client)
    body = {"user_id": "ann", "type": "in_app", "template": "welcome", "data": {"name": "A"}}
    first = client.post("/notifications", json=body).get_json()
    client.put(
        "/templates/welcome",
        json={
            **WELCOME,
            "locales": {
                loc: {**parts, "in_app": {"title": "New", "body": "Changed {{ name }}"}}
                for loc, parts in WELCOME["locales"].items()
            },
        },
    )
    assert service.get(first["id"]).message == "Hi A"


def test_an_idempotent_template_send_is_found_again(client, service):
    saved(client)
    body = {"user_id": "ann", "type": "in_app", "template": "welcome", "data": {"name": "A"}}
    headers = {"Idempotency-Key": "signup-42"}
    first = client.post("/notifications", json=body, headers=headers)
    again = client.post("/notifications", json=body, headers=headers)
    assert (first.status_code, again.status_code) == (201, 200)
    other = client.post("/notifications", json={**body, "data": {"name": "B"}}, headers=headers)
    assert other.status_code == 422


def test_a_batch_renders_each_item_and_refuses_only_the_bad_one(client, service):
    saved(client)
    good = {"user_id": "ann", "type": "in_app", "template": "welcome", "data": {"name": "A"}}
    reply = client.post(
        "/notifications/batch", json={"notifications": [good, {**good, "data": {}}, good]}
    )
    results = reply.get_json()["results"]
    assert [("id" in r) for r in results] == [True, False, True]
    assert "data.name" in results[1]["fields"]


def test_preview_renders_every_channel_with_sms_segments_and_sends_nothing(client, service):
    saved(client)
    reply = client.post(
        "/templates/welcome/preview", json={"data": {"name": "Zoé"}, "locale": "fr"}
    )
    body = reply.get_json()
    assert reply.status_code == 200 and body["problems"] == {}
    assert body["channels"]["email"]["parts"]["subject"] == "Bienvenue, Zoé"
    assert body["channels"]["sms"]["sms"] == {"encoding": "GSM-7", "segments": 1}
    problems = client.post("/templates/welcome/preview", json={"data": {}}).get_json()
    assert any("name" in key for key in problems["problems"])
    assert service.store.count_by_type() == {}


def test_unsafe_templates_are_refused_at_save(client):
    for source in ("{{ ''.__class__.__mro__ }}", "{{ cycler.__init__.__globals__ }}"):
        document = {
            "key": "evil",
            "default_locale": "en",
            "locales": {"en": {"sms": {"text": source}}},
        }
        reply = client.post("/templates", json=document)
        assert reply.status_code == 400, source
        assert any("sms" in field for field in reply.get_json()["fields"])


def test_writing_templates_needs_the_templates_scope(router, client):
    saved(client)
    admin = AuthClient(router, credentials=ADMIN_KEY)
    keys = {}
    for scope in ("templates", "read", "send"):
        keys[scope] = admin.post("/api-keys", json={"name": scope, "scopes": [scope]}).get_json()[
            "key"
        ]
    writer, reader, sender = (AuthClient(router, credentials=keys[s]) for s in keys)
    assert writer.put("/templates/welcome", json=WELCOME).status_code == 201
    assert reader.put("/templates/welcome", json=WELCOME).status_code == 403
    assert sender.delete("/templates/welcome").status_code == 403
    assert reader.get("/templates/welcome").status_code == 200
    assert (
        sender.post("/templates/welcome/preview", json={"data": {"name": "x"}}).status_code == 200
    )
    assert AuthClient(router, credentials=None).get("/templates").status_code == 401


def test_preview_renders_an_unsaved_document_and_stores_nothing(client, service):
    saved(client)
    edited = {**WELCOME, "locales": {"en": {"sms": {"text": "Hey {{ name }}, edited"}}}}
    reply = client.post(
        "/templates/welcome/preview", json={"document": edited, "data": {"name": "Ann"}}
    )
    body = reply.get_json()
    assert reply.status_code == 200, body
    assert body["version"] is None and body["problems"] == {}
    assert body["channels"] == {
        "sms": {
            "locale": "en",
            "parts": {"text": "Hey Ann, edited"},
            "sms": {"encoding": "GSM-7", "segments": 1},
        }
    }
    assert client.get("/templates/welcome").get_json()["version"] == 1
    # A template never saved previews too, and stays unsaved.
    draft = {**edited, "key": "draft"}
    reply = client.post("/templates/draft/preview", json={"document": draft, "data": {"name": "B"}})
    assert reply.status_code == 200 and reply.get_json()["key"] == "draft"
    assert client.get("/templates/draft").status_code == 404
    assert service.store.count_by_type() == {}


def test_a_bad_unsaved_document_is_a_400_naming_its_fields(client):
    bad = {**WELCOME, "locales": {"en": {"email": {"text": "{{ name"}}}}
    reply = client.post("/templates/welcome/preview", json={"document": bad})
    fields = reply.get_json()["fields"]
    assert reply.status_code == 400
    assert {"document.locales.en.email.subject", "document.locales.en.email.text"} <= set(fields)
    both = client.post("/templates/welcome/preview", json={"document": WELCOME, "version": 1})
    assert both.status_code == 400 and "version" in both.get_json()["fields"]
    assert client.get("/templates/welcome").status_code == 404


def test_a_batch_reads_its_template_once_not_once_per_item(client, service, monkeypatch):
    saved(client)
    store, reads = service.templates.store, []
    real_latest = store.latest
    monkeypatch.setattr(store, "latest", lambda key: reads.append(key) or real_latest(key))
    item = {"user_id": "ann", "type": "in_app", "template": "welcome", "data": {"name": "A"}}
    reply = client.post("/notifications/batch", json={"notifications": [item] * 50})
    assert reply.get_json()["accepted"] == 50
    assert reads == ["welcome"]


def test_a_template_key_that_no_template_can_have_is_refused_without_echoing_it(client):
    body = {"user_id": "ann", "type": "in_app", "template": "X" * 5000, "data": {}}
    reply = client.post("/notifications", json=body)
    assert reply.status_code == 400 and "template" in reply.get_json()["fields"]
    assert "X" * 100 not in reply.get_data(as_text=True)


@pytest.mark.parametrize("pattern", ["^(a+)+$", "(\\w*)*x", "([a-z]+){2,}$", "x" * 201])
def test_a_variables_pattern_that_could_stall_the_service_is_refused(client, pattern):
    document = {
        **WELCOME,
        "key": "stall",
        "variables": {"type": "object", "properties": {"name": {"pattern": pattern}}},
    }
    reply = client.post("/templates", json=document)
    assert reply.status_code == 400
    assert "variables.properties.name.pattern" in reply.get_json()["fields"]


def test_versions_and_keys_from_the_path_are_checked_before_the_store(client):
    saved(client)
    assert client.get("/templates/welcome/versions/²").status_code == 400
    assert client.get("/templates/welcome/versions/" + "9" * 5000).status_code == 400
    missing = client.get("/templates/" + "Z" * 3000)
    assert missing.status_code == 404 and "Z" * 100 not in missing.get_data(as_text=True)
    assert client.delete("/templates/" + "Z" * 3000).status_code == 404
