"""Templates as files: the repository's examples, reading and writing `<key>/template.json`,
importing into a store (created, updated, unchanged, archived), the `templates` CLI, and the
runner loading the examples at start."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from common.errors import ValidationError
from common.templates import files, sms
from common.templates.catalog import channels_of
from common.templates.document import validate_document
from common.templates.engine import render
from common.templates.sqlite import SqliteTemplateStore
from tests.support.auth import ADMIN_HEADERS
from tests.support.runner import ROOT, run_command, running_service

EXAMPLES = ROOT / "templates" / "notifications"
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
SAMPLES = {
    "welcome": {"name": "Zoé", "start_url": "https://example.com/start"},
    "password_reset": {"code": "042137", "expires_in_minutes": 15},
    "order_shipped": {
        "name": "Ann",
        "order_number": "A-1042",
        "carrier": "DHL",
        "tracking_url": "https://example.com/track/A-1042",
        "delivery_date": "2026-12-03",
    },
}
CHANNELS = {
    "welcome": ["email", "sms", "in_app"],
    "password_reset": ["email", "sms"],
    "order_shipped": ["email", "sms", "in_app"],
}


def example(key: str) -> dict:
    return json.loads((EXAMPLES / key / files.TEMPLATE_FILE).read_text(encoding="utf-8"))


@pytest.fixture
def store(tmp_path):
    store = SqliteTemplateStore(tmp_path / "templates.db")
    yield store
    store.close()


# -- the examples in the repository -----------------------------------------------------------


@pytest.mark.parametrize("key", SAMPLES)
@pytest.mark.parametrize("locale", ["en", "fr"])
def test_each_example_validates_and_renders_every_channel(key, locale):
    document = example(key)
    assert validate_document(document) == document, "the file holds the normalised document"
    assert sorted(document["locales"]) == ["en", "fr"]
    assert channels_of(document) == CHANNELS[key]
    for channel in CHANNELS[key]:
        rendered = render(document, channel, locale, SAMPLES[key])
        assert rendered.locale == locale
        assert all(rendered.parts.values()) or channel == "in_app"
        if channel == "email":
            html = rendered.parts["html"]
            assert 'style="' in html and "<style" not in html, "the CSS is inlined"
            assert rendered.parts["text"].strip() and rendered.parts["subject"].strip()
        if channel == "sms":
            assert sms.segments(rendered.parts["text"]) == ("GSM-7", 1)


def test_the_examples_speak_each_language_and_use_their_data():
    order = example("order_shipped")
    en = render(order, "email", "en", SAMPLES["order_shipped"]).parts
    fr = render(order, "email", "fr", SAMPLES["order_shipped"]).parts
    assert "Thursday, December 3, 2026" in en["text"] and "Thursday, December 3, 2026" in en["html"]
    assert "jeudi 3 décembre 2026" in fr["text"] and "expédiée" in fr["subject"]
    assert 'href="https://example.com/track/A-1042"' in fr["html"]
    in_app = render(order, "in_app", "fr-CA", SAMPLES["order_shipped"]).parts
    assert in_app["action_url"] == "https://example.com/track/A-1042"

    reset = example("password_reset")
    for locale in ("en", "fr"):
        parts = render(reset, "sms", locale, SAMPLES["password_reset"]).parts
        assert "042137" in parts["text"] and "15 minutes" in parts["text"]
    one_minute = render(reset, "email", "en", {"code": "000001", "expires_in_minutes": 1})
    assert "expires in 1 minute." in one_minute.parts["text"]

    welcome = render(example("welcome"), "email", "fr", {"name": "Zoé"}).parts
    assert welcome["subject"] == "Bienvenue, Zoé !" and "Commencer" not in welcome["html"]


@pytest.mark.parametrize(
    "data",
    [
        {"code": "12345", "expires_in_minutes": 15},
        {"code": "12345a", "expires_in_minutes": 15},
        {"code": 123456, "expires_in_minutes": 15},
        {"code": "123456"},
        {"code": "123456", "expires_in_minutes": 0},
    ],
)
def test_the_password_reset_schema_wants_six_digits_and_an_expiry(data):
    with pytest.raises(ValidationError):
        render(example("password_reset"), "sms", "en", data)


# -- reading and writing files ----------------------------------------------------------------


def test_reading_then_writing_the_examples_gives_the_same_bytes(tmp_path, store):
    documents = files.read_directory(EXAMPLES)
    assert [d["key"] for d in documents] == ["order_shipped", "password_reset", "welcome"]
    for document in documents:
        store.create(document["key"], document, NOW)
    written = files.write_directory(tmp_path / "out", store.list())
    assert [p.relative_to(tmp_path / "out").as_posix() for p in written] == [
        f"{key}/template.json" for key in ("order_shipped", "password_reset", "welcome")
    ]
    for path in written:
        original = EXAMPLES / path.parent.name / "template.json"
        assert path.read_bytes() == original.read_bytes()
        assert path.read_text(encoding="utf-8").endswith("}\n")
    assert files.read_directory(tmp_path / "out") == documents


def write(folder: Path, key: str, text: str) -> Path:
    (folder / key).mkdir(parents=True, exist_ok=True)
    path = folder / key / "template.json"
    path.write_text(text, encoding="utf-8")
    return path


def test_hidden_folders_and_stray_files_are_not_templates(tmp_path):
    write(tmp_path, "welcome", json.dumps(example("welcome")))
    (tmp_path / ".git").mkdir()
    (tmp_path / "README.md").write_text("notes")
    assert [d["key"] for d in files.read_directory(tmp_path)] == ["welcome"]


@pytest.mark.parametrize(
    ("folder", "text", "expected"),
    [
        ("welcome", '{"key": "welcome",', "not JSON (Expecting property name"),
        ("hello", json.dumps(example("welcome")), "the key 'welcome' differs from its folder"),
        ("welcome", json.dumps({**example("welcome"), "locales": {}}), "invalid template"),
        ("welcome", "[1, 2]", "the template must be a JSON object"),
    ],
)
def test_a_bad_file_is_named_with_its_problem(tmp_path, folder, text, expected):
    path = write(tmp_path, folder, text)
    with pytest.raises(ValidationError) as raised:
        files.read_directory(tmp_path)
    assert raised.value.message.startswith(f"{path}: ")
    assert expected in raised.value.message


def test_a_folder_without_its_file_or_a_missing_directory_is_an_error(tmp_path):
    (tmp_path / "welcome").mkdir()
    with pytest.raises(ValidationError, match=r"welcome/template.json: missing"):
        files.read_directory(tmp_path)
    with pytest.raises(ValidationError, match="not a directory"):
        files.read_directory(tmp_path / "nowhere")


def test_a_bad_field_is_named_by_its_path(tmp_path):
    broken = example("password_reset")
    del broken["locales"]["fr"]["email"]["subject"]
    write(tmp_path, "password_reset", json.dumps(broken))
    with pytest.raises(ValidationError) as raised:
        files.read_directory(tmp_path)
    assert raised.value.fields == {"locales.fr.email.subject": "is required"}


# -- importing into a store -------------------------------------------------------------------


def test_import_creates_then_leaves_unchanged_then_updates(store):
    documents = files.read_directory(EXAMPLES)
    first = files.import_documents(store, documents, NOW)
    assert first == [(d["key"], "created") for d in documents]
    assert files.import_documents(store, documents, NOW) == [
        (d["key"], "unchanged") for d in documents
    ]
    assert [v.version for v in store.list()] == [1, 1, 1]

    changed = example("welcome")
    changed["description"] = "Sent after sign-up, now with a new description."
    later = NOW + timedelta(days=1)
    assert files.import_documents(store, [changed], later) == [("welcome", "updated")]
    latest = store.latest("welcome")
    assert (latest.version, latest.document, latest.created_at) == (2, changed, later)
    assert store.get("welcome", 1).document == example("welcome")


def test_import_leaves_an_archived_key_archived(store):
    files.import_documents(store, [example("welcome")], NOW)
    store.archive("welcome", NOW)
    changed = {**example("welcome"), "description": "changed"}
    for document in (example("welcome"), changed):
        assert files.import_documents(store, [document], NOW) == [("welcome", "archived")]
    latest = store.latest("welcome")
    assert latest.archived and latest.version == 1


def test_import_refuses_an_invalid_document(store):
    with pytest.raises(ValidationError):
        files.import_documents(store, [{"key": "welcome"}], NOW)
    assert store.list() == []


# -- the CLI ----------------------------------------------------------------------------------


def test_cli_imports_then_exports(tmp_path):
    env = {"DATA_DIR": str(tmp_path / "data")}
    imported = run_command(env, "templates", "import", str(EXAMPLES))
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.splitlines() == [
        "order_shipped: created version 1",
        "password_reset: created version 1",
        "welcome: created version 1",
    ]
    again = run_command(env, "templates", "import", str(EXAMPLES))
    assert "welcome: unchanged (version 1)" in again.stdout.splitlines()

    changed = tmp_path / "changed"
    write(changed, "welcome", json.dumps({**example("welcome"), "description": "new"}))
    updated = run_command(env, "templates", "import", str(changed))
    assert updated.stdout.splitlines() == ["welcome: updated to version 2"]

    exported = run_command(env, "templates", "export", str(tmp_path / "out"))
    assert exported.returncode == 0, exported.stderr
    out = tmp_path / "out"
    assert f"welcome: version 2 -> {out / 'welcome' / 'template.json'}" in exported.stdout
    assert json.loads((out / "welcome" / "template.json").read_text())["description"] == "new"
    for key in ("order_shipped", "password_reset"):
        assert (out / key / "template.json").read_bytes() == (
            EXAMPLES / key / files.TEMPLATE_FILE
        ).read_bytes()


def test_cli_refuses_a_bad_file_in_one_line_and_writes_nothing(tmp_path):
    env = {"DATA_DIR": str(tmp_path / "data")}
    source = tmp_path / "source"
    write(source, "welcome", json.dumps(example("welcome")))
    broken = example("order_shipped")
    broken["locales"]["fr"]["sms"]["text"] = "{{ carrier"
    path = write(source, "order_shipped", json.dumps(broken))
    result = run_command(env, "templates", "import", str(source))
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(path) in lines[0] and "locales.fr.sms.text syntax error on line 1" in lines[0]
    assert "Traceback" not in result.stdout + result.stderr

    listed = run_command(env, "templates", "export", str(tmp_path / "out"))
    assert listed.stdout.strip() == "no templates to export"

    missing = run_command(env, "templates", "import", str(tmp_path / "nowhere"))
    assert missing.returncode != 0 and "Traceback" not in missing.stderr
    assert "not a directory" in missing.stderr


# -- the runner loads the repository's examples at start ---------------------------------------


def test_the_runner_starts_with_the_examples_and_sends_with_them(tmp_path):
    order = SAMPLES["order_shipped"]
    env = {"DATA_DIR": str(tmp_path)}
    with running_service(env) as base:
        listed = requests.get(f"{base}/templates", headers=ADMIN_HEADERS, timeout=10)
        assert listed.status_code == 200, listed.text
        keys = {t["key"] for t in listed.json()["templates"]}
        assert keys == {"welcome", "password_reset", "order_shipped"}
        assert "templates: 3 created, 0 updated, 0 unchanged" in base.log()

        reply = requests.post(
            f"{base}/notifications",
            json={
                "user_id": "ann",
                "notification_type": "in_app",
                "template": "order_shipped",
                "data": order,
                "locale": "fr",
            },
            headers=ADMIN_HEADERS,
            timeout=10,
        )
        assert reply.status_code == 201, reply.text
        stored = requests.get(
            f"{base}/notifications/{reply.json()['id']}", headers=ADMIN_HEADERS, timeout=10
        ).json()
        assert stored["message"] == "DHL prévoit de la livrer le 3 décembre 2026."
        assert stored["title"] == "Commande A-1042 expédiée"
        assert (stored["template"], stored["template_version"], stored["locale"]) == (
            "order_shipped",
            1,
            "fr",
        )

    with running_service(env) as again:
        assert "templates: 0 created, 0 updated, 3 unchanged" in again.log()


def test_a_broken_example_stops_the_start_with_a_readable_message(monkeypatch, settings):
    import click

    import local_runner

    def broken(path):
        raise ValidationError(f"{path}/welcome/template.json: not JSON (line 1 column 2)")

    monkeypatch.setattr(files, "read_directory", broken)
    with pytest.raises(click.ClickException, match=r"welcome/template.json: not JSON"):
        local_runner._import_repository_templates(settings)


def test_a_store_outage_at_start_is_said_and_the_start_goes_on(monkeypatch, settings, capsys):
    import local_runner
    from common.errors import StoreUnavailable

    def outage(store, documents, now):
        raise StoreUnavailable("the template store is unavailable; try again shortly")

    monkeypatch.setattr(files, "import_documents", outage)
    local_runner._import_repository_templates(settings)
    said = capsys.readouterr().err
    assert (
        said.strip()
        == "templates: not imported: the template store is unavailable; try again shortly"
    )
