"""The templates API and template sends against openapi.json.

Real replies of every /templates operation match the document, and the document's rules for a
template document and for a send that names a template are the service's, case by case: what
the document rejects the service rejects (naming the same field), and what it accepts on the
edge of each rule the service accepts. (Rules no schema can state, such as `default_locale`
being one of the locales, are the service's alone: each is a documented 400.)
"""

from __future__ import annotations

import copy

import pytest

from common.hosting import FunctionRouter
from common.runtime import set_service
from tests.support.auth import AuthClient
from tests.support.services import installed_service
from tests.support.template_samples import WELCOME as SAMPLE
from tests.test_openapi import assert_documented, schema_validator

DOCUMENT = schema_validator("/components/schemas/TemplateDocument")
UPDATE = schema_validator("/components/schemas/TemplateDocumentUpdate")
REQUEST = schema_validator("/components/schemas/NotificationRequest")

# The shared sample, its French without the optional parts (no HTML, no in-app title): the
# document must accept their absence.
WELCOME = copy.deepcopy(SAMPLE)
WELCOME["locales"]["fr"] = {
    "email": {"subject": "Bienvenue, {{ name }}", "text": "Bonjour {{ name }}."},
    "sms": {"text": "Bienvenue {{ name }} !"},
    "in_app": {"body": "Bonjour {{ name }}"},
}


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    """The runner's own WSGI app on a service with a template catalog, `welcome` saved."""
    from common.config import load_settings
    from tests.support.auth import ADMIN_KEY

    data_dir = tmp_path_factory.mktemp("openapi-templates")
    settings = load_settings({"DATA_DIR": str(data_dir), "ADMIN_API_KEY": ADMIN_KEY})
    service = installed_service(settings)
    client = AuthClient(FunctionRouter())
    assert client.post("/templates", json=WELCOME).status_code == 201
    yield client, service
    set_service(None)
    service.templates.store.close()
    service.store.close()


def document(key: str, **changes) -> dict:
    return {**copy.deepcopy(WELCOME), "key": key, **changes}


# -- every operation answers as documented ------------------------------------------------------


def test_saving_reading_and_archiving_match_the_document(api):
    client, _ = api
    created = client.post("/templates", json=document("doc.check"))
    body = assert_documented(created, "/templates", "post")
    assert created.status_code == 201 and body["version"] == 1
    assert created.headers["Location"] == "/templates/doc.check/versions/1"
    assert client.post("/templates", json=document("doc.check")).status_code == 409
    assert_documented(client.post("/templates", json=document("doc.check")), "/templates", "post")
    bad = client.post("/templates", json=document("doc.bad", default_locale="de"))
    assert bad.status_code == 400
    assert "default_locale" in assert_documented(bad, "/templates", "post")["fields"]
    form = client.post("/templates", data={"key": "x"})
    assert form.status_code == 415 and assert_documented(form, "/templates", "post")

    listing = assert_documented(client.get("/templates"), "/templates")
    assert listing["count"] == len(listing["templates"]) >= 2

    one = "/templates/{key}"
    assert assert_documented(client.get("/templates/doc.check"), one)["version"] == 1
    assert client.get("/templates/nope").status_code == 404
    assert_documented(client.get("/templates/nope"), one)

    update = {k: v for k, v in document("doc.check").items() if k != "key"}
    UPDATE.validate(update)
    second = client.put("/templates/doc.check", json=update)
    assert second.status_code == 201 and second.headers["Location"].endswith("/versions/2")
    assert assert_documented(second, one, "put")["version"] == 2
    mismatched = client.put("/templates/doc.check", json=document("other"))
    assert (
        mismatched.status_code == 400
        and "key" in assert_documented(mismatched, one, "put")["fields"]
    )
    assert client.put("/templates/nope", json=update).status_code == 404
    assert_documented(client.put("/templates/nope", json=update), one, "put")

    versions = "/templates/{key}/versions/{version}"
    assert (
        assert_documented(client.get("/templates/doc.check/versions/1"), versions)["version"] == 1
    )
    for path, status in (
        ("/templates/doc.check/versions/x", 400),
        ("/templates/doc.check/versions/9", 404),
    ):
        assert client.get(path).status_code == status, path
        assert_documented(client.get(path), versions)

    archived = client.delete("/templates/doc.check")
    assert assert_documented(archived, one, "delete")["archived"] is True
    assert client.delete("/templates/nope").status_code == 404
    assert_documented(client.delete("/templates/nope"), one, "delete")
    refused = client.put("/templates/doc.check", json=update)
    assert refused.status_code == 409 and assert_documented(refused, one, "put")
    again = client.post("/templates", json=document("doc.check"))
    assert (
        again.status_code == 201 and assert_documented(again, "/templates", "post")["version"] == 3
    )


def test_previews_match_the_document(api):
    client, _ = api
    preview = "/templates/{key}/preview"
    body = assert_documented(
        client.post(
            "/templates/welcome/preview", json={"data": {"name": "Ada"}, "locale": "fr-CA"}
        ),
        preview,
        "post",
    )
    assert set(body["channels"]) == {"email", "sms", "in_app"} and body["problems"] == {}
    assert body["channels"]["sms"]["parts"]["text"] == "Bienvenue Ada !"
    assert body["channels"]["sms"]["sms"] == {"encoding": "GSM-7", "segments": 1}
    assert body["channels"]["email"]["locale"] == "fr"

    with_html = client.post("/templates/welcome/preview", json={"data": {"name": "Ada"}})
    assert "html" in assert_documented(with_html, preview, "post")["channels"]["email"]["parts"]
    no_body = assert_documented(client.post("/templates/welcome/preview"), preview, "post")
    assert "data.name" in no_body["problems"]
    bad_zone = {"data": {"name": "Ada"}, "timezone": "Mars/Olympus"}
    assert assert_documented(
        client.post("/templates/welcome/preview", json=bad_zone), preview, "post"
    )["problems"]

    for payload, status in (({"extra": 1}, 400), ({"version": 0}, 400), ({"version": 99}, 404)):
        reply = client.post("/templates/welcome/preview", json=payload)
        assert reply.status_code == status, payload
        assert_documented(reply, preview, "post")
    assert client.post("/templates/nope/preview", json={}).status_code == 404
    assert_documented(client.post("/templates/nope/preview", json={}), preview, "post")


# -- the document's rules for a template are the service's --------------------------------------


def _without(path: str) -> dict:
    """WELCOME without the part at the dotted `path`."""
    changed = copy.deepcopy(WELCOME)
    *parents, last = path.split(".")
    target = changed
    for name in parents:
        target = target[name]
    del target[last]
    return changed


def _with(path: str, value) -> dict:
    changed = copy.deepcopy(WELCOME)
    *parents, last = path.split(".")
    target = changed
    for name in parents:
        target = target[name]
    target[last] = value
    return changed


# (the field the service names, the document): each breaks one documented rule.
INVALID_DOCUMENTS = [
    ("key", {**WELCOME, "key": "Upper"}),
    ("key", {**WELCOME, "key": "k" * 65}),
    ("key", {**WELCOME, "key": ".dot-first"}),
    ("key", _without("key")),
    ("description", {**WELCOME, "description": "d" * 501}),
    ("default_locale", _without("default_locale")),
    ("locales", {**WELCOME, "locales": {}}),
    ("locales", _without("locales")),
    ("locales.EN", _with("locales", {"EN": WELCOME["locales"]["en"]})),
    ("locales.en", _with("locales.en", {})),
    ("locales.en.fax", _with("locales.en.fax", {"text": "x"})),
    ("locales.en.email.subject", _without("locales.en.email.subject")),
    ("locales.en.email.subject", _with("locales.en.email.subject", "")),
    ("locales.en.email.subject", _with("locales.en.email.subject", "s" * 1001)),
    ("locales.en.email.text", _with("locales.en.email", {"subject": "s"})),
    ("locales.en.email.text", _with("locales.en.email", {"subject": "s", "text": ""})),
    ("locales.en.email.footer", _with("locales.en.email.footer", "x")),
    ("locales.en.sms.text", _with("locales.en.sms", {})),
    ("locales.en.sms.text", _with("locales.en.sms.text", "t" * 100_001)),
    ("locales.en.sms.text", _with("locales.en.sms.text", 42)),
    ("locales.en.in_app.body", _without("locales.en.in_app.body")),
    ("variables", _with("variables", [])),
    ("colour", {**WELCOME, "colour": "blue"}),
]

VALID_DOCUMENTS = [
    {**WELCOME, "key": "k" * 64},
    {**WELCOME, "key": "0.a_b-c"},
    {**WELCOME, "description": "d" * 500},
    {**WELCOME, "description": None, "variables": None},
    {**WELCOME, "variables": True},
    _without("variables"),
    _with("locales.en.email", {"subject": "s" * 1000, "html": "<p>{{ name }}</p>"}),
    _with("locales.en.email", {"subject": "s", "text": "", "html": "<p>hi</p>"}),
    _with("locales", {"en": {"sms": {"text": "hi"}}, "zh-Hant-TW": {"sms": {"text": "你好"}}}),
]


@pytest.mark.parametrize(("field", "body"), INVALID_DOCUMENTS)
def test_what_the_document_rejects_in_a_template_the_service_rejects(api, field, body):
    client, service = api
    body = copy.deepcopy(body)
    assert not DOCUMENT.is_valid(body), f"the document accepts {body}"
    before = [v.to_dict() for v in service.templates.list()]
    reply = client.post("/templates", json=body)
    assert reply.status_code == 400, reply.get_json()
    assert field in assert_documented(reply, "/templates", "post")["fields"]
    assert [v.to_dict() for v in service.templates.list()] == before


@pytest.mark.parametrize("body", VALID_DOCUMENTS)
def test_what_the_document_accepts_in_a_template_the_service_accepts(api, body):
    client, _ = api
    body = {**copy.deepcopy(body), "key": f"edge-{VALID_DOCUMENTS.index(body)}"}
    if "default_locale" in body and body["default_locale"] not in body["locales"]:
        body["default_locale"] = next(iter(body["locales"]))
    DOCUMENT.validate(body)
    reply = client.post("/templates", json=body)
    assert reply.status_code == 201, reply.get_json()
    assert_documented(reply, "/templates", "post")


# -- sends that name a template ---------------------------------------------------------------


def templated(kind: str = "in_app", **extra) -> dict:
    payload = {"user_id": "reader", "notification_type": kind, "template": "welcome"}
    payload.update(data={"name": "Ada"})
    return {**payload, **extra}


VALID_SENDS = [
    templated(),
    templated("email", email="ada@example.com", locale="fr-CA", timezone="Europe/Paris"),
    templated("sms", phone="+14155550123", template_version=1),
    templated("in_app", email=None, phone=None, idempotency_key="tmpl-doc-1"),
]

# (the field the service names, the send): each breaks one documented rule.
INVALID_SENDS = [
    ("message", templated(message="hello")),
    ("subject", templated("email", email="ada@example.com", subject="s")),
    ("template", templated(template="")),
    ("template_version", templated(template_version=0)),
    ("template_version", templated(template_version="1")),
    ("data", templated(data=["Ada"])),
    ("locale", templated(locale="x" * 65)),
    ("email", templated("email")),
    ("phone", templated("sms")),
    ("colour", templated(colour="blue")),
]


@pytest.mark.parametrize("payload", VALID_SENDS)
def test_a_template_send_the_document_accepts_the_service_accepts(api, payload):
    client, _ = api
    REQUEST.validate(payload)
    reply = client.post("/notifications", json=payload)
    assert reply.status_code == 201, reply.get_json()
    notification = assert_documented(reply, "/notifications", "post")["notification"]
    assert (notification["template"], notification["template_version"]) == ("welcome", 1)
    assert notification["locale"] in ("en", "fr")
    assert_documented(
        client.get(f"/notifications/{notification['id']}"), "/notifications/{notification_id}"
    )


def test_a_batch_of_template_items_matches_the_document(api):
    client, _ = api
    items = [templated(), templated(template="no-such-template")]
    reply = client.post("/notifications/batch", json={"notifications": items})
    body = assert_documented(reply, "/notifications/batch", "post")
    assert (reply.status_code, body["accepted"], body["rejected"]) == (201, 1, 1)
    assert "template" in body["results"][1]["fields"]


@pytest.mark.parametrize(("field", "payload"), INVALID_SENDS)
def test_a_template_send_the_document_rejects_the_service_rejects(api, field, payload):
    client, service = api
    assert not REQUEST.is_valid(payload), f"the document accepts {payload}"
    before = service.stats()["total"]
    reply = client.post("/notifications", json=payload)
    assert reply.status_code == 400
    assert field in assert_documented(reply, "/notifications", "post")["fields"]
    assert service.stats()["total"] == before


@pytest.mark.parametrize(
    ("field", "payload"),
    [
        ("template", templated(template="no-such-template")),
        ("template", templated(template_version=99)),
        ("data.name", templated(data={})),
        ("timezone", templated(timezone="Mars/Olympus")),
    ],
)
def test_what_only_the_service_can_check_is_a_documented_400(api, field, payload):
    """Schema-valid sends the service refuses for what it alone knows: which templates exist,
    and what their variables and the time zone database allow."""
    client, _ = api
    REQUEST.validate(payload)
    reply = client.post("/notifications", json=payload)
    assert reply.status_code == 400
    assert field in assert_documented(reply, "/notifications", "post")["fields"]
