"""The template pages and the send form's template picking, through `http_web`'s own Flask app
with a service that has a template catalog: list, create, edit (a new version), archive, the
preview without script, CSRF, and a send from a template that stores the rendered text."""

from __future__ import annotations

import re
from pathlib import Path

import functions_framework
import pytest

from common.runtime import set_service
from tests.support.auth import auth_test_client
from tests.support.services import installed_service

ROOT = Path(__file__).resolve().parents[1]
WELCOME = {
    "key": "welcome",
    "description": "Sent once, after sign-up",
    "default_locale": "en",
    "variables": {
        "type": "object",
        "properties": {"name": {"type": "string", "minLength": 1}, "count": {"type": "integer"}},
        "required": ["name"],
    },
    "locales": {
        "en": {
            "email": {"subject": "Welcome, {{ name }}", "text": "Hi {{ name }}, thanks."},
            "sms": {"text": "Welcome {{ name }}!"},
            "in_app": {"title": "Welcome", "body": "Hi {{ name }}"},
        },
        "fr": {
            "email": {"subject": "Bienvenue, {{ name }}", "text": "Bonjour {{ name }}."},
            "sms": {"text": "Bienvenue {{ name }} !"},
            "in_app": {"title": "Bienvenue", "body": "Bonjour {{ name }}"},
        },
    },
}
FREE = {
    "key": "free_text",
    "default_locale": "en",
    "locales": {"en": {"in_app": {"body": "Note: {{ note }}"}}},
}


@pytest.fixture
def service(settings):
    service = installed_service(settings)
    yield service
    set_service(None)
    service.store.close()


@pytest.fixture(scope="module")
def app():
    return functions_framework.create_app("http_web", str(ROOT / "functions" / "http_web.py"))


@pytest.fixture
def client(app, service):
    return auth_test_client(app)


@pytest.fixture
def welcome(service):
    return service.templates.create(WELCOME)


def token(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def hidden_fields(html: str) -> dict[str, str]:
    return dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', html))


def editor_fields(html: str) -> dict[str, list[str]]:
    """What the edit form posts as it stands: its inputs, textareas and the chosen options."""
    form = re.search(r"<form class=\"template-form\".*?</form>", html, re.S).group(0)
    fields: dict[str, list[str]] = {}
    for name, value in re.findall(r'<input[^>]* name="([^"]+)"[^>]* value="([^"]*)"', form):
        fields.setdefault(name, []).append(value)
    for name, value in re.findall(
        r'<textarea[^>]* name="([^"]+)"[^>]*>(.*?)</textarea>', form, re.S
    ):
        fields.setdefault(name, []).append(unescape(value))
    select = re.search(r'name="default_locale".*?<option value="([^"]+)" selected', form, re.S)
    fields["default_locale"] = [select.group(1)]
    return {name: [unescape(v) for v in values] for name, values in fields.items()}


def unescape(text: str) -> str:
    import html

    return html.unescape(text)


# -- the pages ------------------------------------------------------------------------------


def test_the_nav_links_the_templates_page_which_lists_them(client, welcome, service):
    service.templates.create(FREE)
    html = client.get("/").text
    assert 'href="/message-templates"' in html
    reply = client.get("/message-templates")
    assert reply.status_code == 200
    assert 'aria-current="page"' in reply.text and 'href="/message-templates/new"' in reply.text
    assert 'href="/message-templates/welcome"' in reply.text
    assert (
        "Sent once, after sign-up" in reply.text
        and 'href="/message-templates/free_text"' in reply.text
    )


def test_every_field_of_the_editor_has_a_label(client, welcome):
    for path in ("/message-templates/new", "/message-templates/welcome"):
        html = client.get(path).text
        ids = re.findall(r'<(?:input|textarea|select) id="([^"]+)"', html)
        assert ids
        for element_id in ids:
            assert f'for="{element_id}"' in html, f"no label for #{element_id} on {path}"


def test_create_a_template_from_the_form(client, service):
    html = client.get("/message-templates/new").text
    data = {
        "csrf_token": token(html),
        "key": "order_shipped",
        "description": "Your order is on its way",
        "default_locale": "en",
        "variables": '{"type": "object", "properties": {"order": {"type": "string"}}}',
        "locale": "en",
        "locales.en.sms.text": "Order {{ order }} shipped",
        "action": "save",
    }
    reply = client.post("/message-templates/new", data=data)
    assert reply.status_code == 303, reply.text
    assert reply.headers["Location"] == "/message-templates/order_shipped?saved=1"
    saved = service.templates.get("order_shipped")
    assert saved.version == 1
    assert saved.document["locales"] == {"en": {"sms": {"text": "Order {{ order }} shipped"}}}
    page = client.get(reply.headers["Location"]).text
    assert "Saved as version 1." in page and "Order A-1 shipped" not in page
    assert "1 segment, GSM-7" in page or "segment" in page


def test_a_bad_document_shows_errors_beside_fields_and_stores_nothing(client, service):
    html = client.get("/message-templates/new").text
    data = {
        "csrf_token": token(html),
        "key": "Bad Key",
        "default_locale": "en",
        "variables": "{not json",
        "locale": "en",
        "locales.en.email.text": "Hello {{ name",
        "action": "save",
    }
    reply = client.post("/message-templates/new", data=data)
    assert reply.status_code == 400
    page = reply.text
    assert 'id="f-key-error"' in page and "must be 1 to 64" in page
    assert 'id="f-variables-error"' in page and "is not valid JSON" in page
    assert 'id="f-locales-en-email-text-error"' in page and "syntax error" in page
    assert 'id="f-locales-en-email-subject-error"' in page
    assert 'aria-invalid="true"' in page and 'id="error-summary"' in page
    assert "Hello {{ name" in page  # what was typed is kept (and escaped)
    assert service.templates.list() == []


def test_editing_makes_version_2_and_shows_the_history(client, welcome, service):
    html = client.get("/message-templates/welcome").text
    fields = editor_fields(html)
    assert fields["locales.fr.sms.text"] == ["Bienvenue {{ name }} !"]
    fields["locales.en.sms.text"] = ["Hey {{ name }}, welcome!"]
    fields["action"] = ["save"]
    reply = client.post("/message-templates/welcome", data=fields)
    assert reply.status_code == 303, reply.text
    assert reply.headers["Location"] == "/message-templates/welcome?saved=2"
    latest = service.templates.get("welcome")
    assert latest.version == 2
    assert latest.document["locales"]["en"]["sms"]["text"] == "Hey {{ name }}, welcome!"
    assert latest.document["variables"] == WELCOME["variables"]
    assert service.templates.get("welcome", 1).document["locales"]["en"]["sms"]["text"] == (
        "Welcome {{ name }}!"
    )
    page = client.get(reply.headers["Location"]).text
    assert "Saved as version 2." in page
    assert re.findall(r'<li data-version="(\d+)"', page) == ["2", "1"]
    old = client.get("/message-templates/welcome?version=1").text
    assert "Welcome {{ name }}!" in old and "Showing version 1" in old


def test_a_bad_edit_shows_the_error_and_makes_no_version(client, welcome, service):
    fields = editor_fields(client.get("/message-templates/welcome").text)
    fields["locales.fr.email.subject"] = [""]
    fields["action"] = ["save"]
    reply = client.post("/message-templates/welcome", data=fields)
    assert reply.status_code == 400
    assert 'id="f-locales-fr-email-subject-error"' in reply.text
    assert service.templates.get("welcome").version == 1


def test_add_a_locale_without_script(client, welcome, service):
    fields = editor_fields(client.get("/message-templates/welcome").text)
    fields.update(action=["add_locale"], add_locale=["de"])
    reply = client.post("/message-templates/welcome", data=fields)
    assert reply.status_code == 200
    assert 'name="locales.de.email.subject"' in reply.text
    assert service.templates.get("welcome").version == 1  # nothing saved yet


def test_archive(client, welcome, service):
    html = client.get("/message-templates/welcome").text
    reply = client.post(
        "/message-templates/welcome", data={"csrf_token": token(html), "action": "archive"}
    )
    assert reply.status_code == 303
    assert service.templates.get("welcome").archived
    listing = client.get(reply.headers["Location"]).text
    assert "was archived" in listing and "Archived" in listing


def test_the_preview_without_script(client, welcome):
    html = client.get("/message-templates/welcome").text
    assert "Hi Ada, thanks." in html  # rendered at once with sample data from the schema
    data = {
        "csrf_token": token(html),
        "action": "preview",
        "sample_data": '{"name": "Zoë"}',
        "preview_locale": "fr",
    }
    reply = client.post("/message-templates/welcome", data=data)
    assert reply.status_code == 200
    assert "Bonjour Zoë." in reply.text and "Bienvenue Zoë !" in reply.text
    assert re.search(r"1 segment, UCS-2|1 segment, \w", reply.text)
    missing = client.post("/message-templates/welcome", data={**data, "sample_data": "{}"})
    assert "is a required property" in missing.text  # a problem, listed
    broken = client.post("/message-templates/welcome", data={**data, "sample_data": "{oops"})
    assert broken.status_code == 400 and "is not valid JSON" in broken.text


def test_posts_without_the_token_are_refused(client, welcome, service):
    client.get("/message-templates/welcome")
    archive = client.post("/message-templates/welcome", data={"action": "archive"})
    assert archive.status_code == 403 and "This form has expired" in archive.text
    assert not service.templates.get("welcome").archived
    create = client.post(
        "/message-templates/new",
        data={"key": "x", "default_locale": "en", "locale": "en", "locales.en.sms.text": "x"},
    )
    assert create.status_code == 403
    assert [t.key for t in service.templates.list()] == ["welcome"]


def test_an_unknown_template_is_a_404_page(client, service):
    reply = client.get("/message-templates/nope")
    assert reply.status_code == 404 and "not found" in reply.text


# -- the send form with a template ----------------------------------------------------------


def send_form(client, query: str = "") -> dict[str, str]:
    return hidden_fields(client.get(f"/send-notification{query}").text)


def test_the_send_form_offers_the_templates_that_can_be_sent(client, welcome, service):
    service.templates.create(FREE)
    service.templates.create({**FREE, "key": "old"})
    service.templates.archive("old")
    html = client.get("/send-notification").text
    assert re.findall(
        r'<option value="([^"]+)"', html.split('id="f-template"')[1].split("</select>")[0]
    ) == [
        "free_text",
        "welcome",
    ]
    assert 'data-template=""' in html
    chosen = client.get("/send-notification?template=welcome").text  # "Use template", no script
    assert 'data-template="welcome"' in chosen
    assert re.search(r'<fieldset class="template-vars" data-template-vars="welcome">', chosen)
    assert 'id="f-var-welcome-name"' in chosen and 'id="f-var-welcome-count"' in chosen
    assert re.search(r'data-template-vars="free_text" disabled hidden', chosen)


def test_a_send_with_a_template_stores_the_rendered_text(client, welcome, service):
    data = {
        **send_form(client, "?template=welcome"),
        "user_id": "alice",
        "notification_type": "email",
        "email": "alice@example.com",
        "template": "welcome",
        "locale": "fr",
        "var.name": "Zoë",
        "var.count": "3",
        "message": "ignored",
    }
    reply = client.post("/send-notification", data=data)
    assert reply.status_code == 303, reply.text
    notification_id = reply.headers["Location"].split("sent=")[1]
    stored = service.get(notification_id)
    assert stored.message == "Bonjour Zoë." and stored.subject == "Bienvenue, Zoë"
    assert stored.template == "welcome" and stored.locale == "fr"
    page = client.get(reply.headers["Location"]).text
    assert "Bonjour Zoë." in page


def test_template_data_errors_are_shown_beside_their_fields(client, welcome, service):
    base = {
        **send_form(client, "?template=welcome"),
        "user_id": "alice",
        "notification_type": "in_app",
        "template": "welcome",
    }
    reply = client.post("/send-notification", data={**base, "var.count": "many"})
    assert reply.status_code == 400
    assert 'id="f-var-welcome-count-error"' in reply.text and "whole number" in reply.text
    reply = client.post("/send-notification", data={**base, "var.count": "2"})
    assert reply.status_code == 400
    assert 'id="f-var-welcome-name-error"' in reply.text and "required" in reply.text
    assert 'href="#f-var-welcome-name"' in reply.text
    assert len(service.list_for_user("alice").items) == 0


def test_a_template_without_schema_takes_json_data(client, service):
    service.templates.create(FREE)
    base = {
        **send_form(client, "?template=free_text"),
        "user_id": "alice",
        "notification_type": "in_app",
        "template": "free_text",
    }
    bad = client.post("/send-notification", data={**base, "data": "[1"})
    assert bad.status_code == 400 and 'id="f-data-free_text-error"' in bad.text
    reply = client.post("/send-notification", data={**base, "data": '{"note": "hi"}'})
    assert reply.status_code == 303
    assert service.list_for_user("alice").items[0].message == "Note: hi"


# -- the live preview of unsaved edits ------------------------------------------------------


def preview_post(html: str, **changes: str) -> dict:
    """The editor form as it stands, with `changes` typed in, and the preview's fields."""
    fields = editor_fields(html)
    fields.update({name: [value] for name, value in changes.items()})
    return {**fields, "sample_data": '{"name": "Zoë"}', "preview_locale": ""}


def test_the_preview_route_renders_unsaved_edits(client, welcome, service):
    html = client.get("/message-templates/welcome").text
    edited = preview_post(html, **{"locales.en.email.subject": "Hello again, {{ name }}"})
    reply = client.post("/message-templates/welcome/preview", data=edited)
    body = reply.get_json()
    assert reply.status_code == 200, body
    assert body["version"] is None
    assert body["channels"]["email"]["parts"]["subject"] == "Hello again, Zoë"
    latest = service.templates.get("welcome")
    assert latest.version == 1
    assert latest.document["locales"]["en"]["email"]["subject"] == "Welcome, {{ name }}"
    # without script, the Preview button posts the same form to the page
    page = client.post("/message-templates/welcome", data={**edited, "action": "preview"})
    assert page.status_code == 200 and "Hello again, Zoë" in page.text
    assert service.templates.get("welcome").version == 1


def test_a_new_template_previews_before_it_is_saved(client, service):
    html = client.get("/message-templates/new").text
    posted = {
        "csrf_token": token(html),
        "key": "draft",
        "default_locale": "en",
        "locale": "en",
        "locales.en.sms.text": "Draft for {{ name }}",
        "sample_data": '{"name": "Ann"}',
    }
    reply = client.post("/message-templates/new/preview", data=posted)
    assert reply.status_code == 200, reply.get_json()
    assert reply.get_json()["channels"]["sms"]["parts"]["text"] == "Draft for Ann"
    broken = client.post("/message-templates/new/preview", data={**posted, "key": ""})
    assert broken.status_code == 400 and "key" in broken.get_json()["fields"]
    bad_data = client.post("/message-templates/new/preview", data={**posted, "sample_data": "{"})
    assert bad_data.status_code == 400 and "data" in bad_data.get_json()["fields"]
    page = client.post("/message-templates/new", data={**posted, "action": "preview"})
    assert page.status_code == 200 and "Draft for Ann" in page.text
    assert service.templates.list() == []


def test_the_preview_route_refuses_a_post_without_the_token(client, welcome):
    html = client.get("/message-templates/welcome").text
    posted = preview_post(html)
    del posted["csrf_token"]
    reply = client.post("/message-templates/welcome/preview", data=posted)
    assert reply.status_code == 403 and "This form has expired" in reply.text
    assert client.post("/message-templates/new/preview", data=posted).status_code == 403
