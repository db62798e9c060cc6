"""The template store's contract, run once per backend (SQLite; MongoDB on mongomock, or a real
server when MONGO_URI is set), then raced by threads and by processes."""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta

import pymongo
import pytest

from common.errors import Conflict, NotFound, StoreUnavailable
from common.templates.mongo import MongoTemplateStore
from common.templates.sqlite import SqliteTemplateStore
from common.templates.store import TemplateVersion, make_template_store
from tests.support.mongo import mongo_database

NOW = datetime(2026, 11, 25, 12, 0, 0, 123456, tzinfo=UTC)


def _document(key: str, body: str = "Hello {{name}}") -> dict:
    return {
        "key": key,
        "description": "a test template",
        "default_locale": "en",
        "variables": {"name": {"type": "string", "required": True}},
        "locales": {"en": {"subject": "Hi", "body": body}},
    }


def _mongo_template_store():
    with mongo_database() as (client, name):
        yield MongoTemplateStore(client, name)


@pytest.fixture(params=["sqlite", "mongo"])
def store(request, tmp_path):
    if request.param == "sqlite":
        store = SqliteTemplateStore(tmp_path / "templates.db")
        yield store
        store.close()
    else:
        yield from _mongo_template_store()


# -- the contract ------------------------------------------------------------------------------


def test_create_makes_version_1(store):
    created = store.create("welcome", _document("welcome"), NOW)
    assert created == TemplateVersion(
        "welcome", 1, _document("welcome"), NOW.replace(microsecond=123000), archived=False
    )
    assert store.get("welcome", 1) == created
    assert store.latest("welcome") == created
    assert store.versions("welcome") == [1]
    assert store.count() == 1


def test_create_of_an_existing_key_is_a_conflict_and_writes_nothing(store):
    store.create("welcome", _document("welcome"), NOW)
    with pytest.raises(Conflict, match="PUT /templates/welcome makes its next version"):
        store.create("welcome", _document("welcome", "other"), NOW)
    assert store.versions("welcome") == [1]
    assert store.latest("welcome").document == _document("welcome")


def test_add_version_makes_the_next_versions_and_keeps_every_one(store):
    store.create("welcome", _document("welcome", "one"), NOW)
    second = store.add_version("welcome", _document("welcome", "two"), NOW + timedelta(seconds=1))
    third = store.add_version("welcome", _document("welcome", "three"), NOW + timedelta(seconds=2))
    assert (second.version, third.version) == (2, 3)
    for version, body in [(1, "one"), (2, "two"), (3, "three")]:
        found = store.get("welcome", version)
        assert found.version == version
        assert found.document == _document("welcome", body)
    assert store.get("welcome", 2) == second
    assert store.get("welcome", 4) is None
    assert store.latest("welcome") == third
    assert store.versions("welcome") == [1, 2, 3]
    assert store.count() == 1


def test_add_version_of_an_unknown_key_is_not_found(store):
    with pytest.raises(NotFound):
        store.add_version("nobody", _document("nobody"), NOW)
    assert store.latest("nobody") is None
    assert store.get("nobody", 1) is None
    assert store.versions("nobody") == []
    assert store.archive("nobody", NOW) is None
    assert store.list() == []
    assert store.count() == 0


def test_list_shows_the_latest_version_of_every_key_sorted_by_key(store):
    store.create("zeta", _document("zeta"), NOW)
    store.create("alpha", _document("alpha", "a1"), NOW)
    store.add_version("alpha", _document("alpha", "a2"), NOW)
    store.create("mid", _document("mid"), NOW)
    store.archive("mid", NOW)
    listed = store.list()
    assert [(t.key, t.version, t.archived) for t in listed] == [
        ("alpha", 2, False),
        ("mid", 1, True),
        ("zeta", 1, False),
    ]
    assert listed[0].document == _document("alpha", "a2")
    assert store.count() == 3


def test_archive_is_idempotent_and_leaves_every_version_readable(store):
    store.create("welcome", _document("welcome"), NOW)
    store.add_version("welcome", _document("welcome", "two"), NOW)
    archived = store.archive("welcome", NOW)
    assert (archived.version, archived.archived) == (2, True)
    assert store.archive("welcome", NOW + timedelta(hours=1)) == archived
    assert store.latest("welcome") == archived
    assert store.get("welcome", 1).archived  # a property of the key, on every version
    assert store.versions("welcome") == [1, 2]


def test_add_version_of_an_archived_key_is_a_conflict(store):
    store.create("welcome", _document("welcome"), NOW)
    store.archive("welcome", NOW)
    with pytest.raises(Conflict, match="POST /templates to start it again"):
        store.add_version("welcome", _document("welcome", "two"), NOW)
    assert store.versions("welcome") == [1]


def test_create_after_archive_makes_the_next_version_and_unarchives(store):
    store.create("welcome", _document("welcome"), NOW)
    store.add_version("welcome", _document("welcome", "two"), NOW)
    store.archive("welcome", NOW)
    restarted = store.create("welcome", _document("welcome", "again"), NOW)
    assert (restarted.version, restarted.archived) == (3, False)
    assert store.latest("welcome") == restarted
    assert not store.get("welcome", 1).archived
    assert store.add_version("welcome", _document("welcome", "four"), NOW).version == 4


def test_documents_come_back_exactly_as_written(store):
    document = {
        **_document("exact"),
        "locales": {
            "fr": {"body": "Bonjour {{name}} — ça va ? ✉️ 日本語 \U0001f600", "subject": ""},
            "ar": {"body": "مرحبا"},
        },
        "nested": {"list": [1, 2.5, -0.0, None, True, {"deep": [[], {}]}], "big": 2**70},
        "$dollar": {"dotted.key": 'a "quoted" \\ backslash \n newline \u0000'},
        "order": {"z": 1, "a": 2, "m": 3},
    }
    created = store.create("exact", document, NOW)
    found = store.get("exact", 1)
    assert found.document == document == created.document
    assert list(found.document["order"]) == ["z", "a", "m"]  # key order kept
    assert isinstance(found.document["nested"]["list"][1], float)
    assert isinstance(found.document["nested"]["big"], int)


def test_to_dict_is_the_document_plus_what_the_store_adds(store):
    created = store.create("welcome", _document("welcome"), NOW)
    assert created.to_dict() == {
        **_document("welcome"),
        "version": 1,
        "created_at": "2026-11-25T12:00:00.123000Z",
        "archived": False,
    }


def test_versions_are_frozen():
    version = TemplateVersion("k", 1, {}, NOW)
    with pytest.raises(dataclasses.FrozenInstanceError):
        version.version = 2  # type: ignore[misc]


# -- concurrency -------------------------------------------------------------------------------

THREADS, EACH = 8, 5


class _OneAtATime:
    """A mongomock collection whose operations are each atomic, as a server's are per document
    (mongomock's own are not), so the unique index is what the test exercises. After each
    operation the thread lets the others run: without that pause, the GIL runs one writer's
    read and insert back to back and the race never happens."""

    def __init__(self, collection):
        self._collection = collection
        self._lock = threading.Lock()

    def __getattr__(self, name):
        method = getattr(self._collection, name)

        def atomic(*args, **kwargs):
            with self._lock:
                result = method(*args, **kwargs)
            time.sleep(0.0002)
            return result

        return atomic


def test_concurrent_add_versions_each_get_their_own_number(store):
    if isinstance(store, MongoTemplateStore) and not os.environ.get("MONGO_URI"):
        store.versions_collection = _OneAtATime(store.versions_collection)
        store.templates_collection = _OneAtATime(store.templates_collection)
    store.create("busy", _document("busy"), NOW)
    got: list[int] = []
    errors: list[Exception] = []
    start = threading.Barrier(THREADS)

    def add() -> None:
        start.wait(10)
        try:
            for i in range(EACH):
                got.append(store.add_version("busy", _document("busy", str(i)), NOW).version)
        except Exception as error:  # pragma: no cover - the assertion below reports it
            errors.append(error)

    threads = [threading.Thread(target=add) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    expected = list(range(2, THREADS * EACH + 2))
    assert sorted(got) == expected  # no duplicate handed out, none lost
    assert store.versions("busy") == [1, *expected]
    assert store.latest("busy").version == THREADS * EACH + 1


@pytest.fixture
def mongo_store():
    yield from _mongo_template_store()


def test_mongo_a_writer_that_loses_the_race_takes_the_next_number(mongo_store):
    mongo_store.create("k", _document("k"), NOW)
    other = MongoTemplateStore(mongo_store.client, mongo_store.versions_collection.database.name)
    versions = mongo_store.versions_collection

    class Racing:
        """Lets the other writer in between this one's read of the newest version and its
        insert of the next, once."""

        raced = False

        def __getattr__(self, name):
            return getattr(versions, name)

        def find_one(self, *args, **kwargs):
            found = versions.find_one(*args, **kwargs)
            if not self.raced:
                self.raced = True
                other.add_version("k", _document("k", "theirs"), NOW)
            return found

    mongo_store.versions_collection = Racing()
    mine = mongo_store.add_version("k", _document("k", "mine"), NOW)
    assert mine.version == 3
    assert mongo_store.versions("k") == [1, 2, 3]
    assert mongo_store.get("k", 2).document == _document("k", "theirs")
    assert mongo_store.get("k", 3).document == _document("k", "mine")
    assert mongo_store.list()[0].version == 3


def _add_in_a_process(path: str, ready, results) -> None:
    store = SqliteTemplateStore(path)
    ready.wait(60)  # both processes imported and opened the store: start together
    # For a while rather than a count: a few writes would be over before the other starts.
    got, until = [], time.time() + 0.5
    while time.time() < until:
        got.append(store.add_version("shared", _document("shared"), NOW).version)
    store.close()
    results.put(got)


def test_two_processes_never_share_a_version(tmp_path):
    path = str(tmp_path / "templates.db")
    first = SqliteTemplateStore(path)
    first.create("shared", _document("shared"), NOW)
    context = multiprocessing.get_context("spawn")
    ready, results = context.Barrier(2), context.Queue()
    workers = [context.Process(target=_add_in_a_process, args=(path, ready, results)) for _ in "ab"]
    for worker in workers:
        worker.start()
    got = [results.get(timeout=90) for _ in workers]
    for worker in workers:
        worker.join(10)
    assert all(got)  # both took part
    total = len(got[0]) + len(got[1])
    assert sorted(got[0] + got[1]) == list(range(2, total + 2))  # none shared, none lost
    assert first.versions("shared") == list(range(1, total + 2))
    first.close()


# -- each backend's own ------------------------------------------------------------------------


def test_sqlite_refuses_to_change_a_stored_version(tmp_path):
    store = SqliteTemplateStore(tmp_path / "templates.db")
    store.create("welcome", _document("welcome"), NOW)
    store.close()
    db = sqlite3.connect(tmp_path / "templates.db")
    with pytest.raises(sqlite3.IntegrityError, match="immutable"):
        db.execute("UPDATE template_versions SET document = '{}'")
    db.close()


def test_an_unopenable_sqlite_file_is_store_unavailable_naming_no_path(tmp_path):
    with pytest.raises(StoreUnavailable) as raised:
        SqliteTemplateStore(tmp_path, timeout=0.2)  # a folder, not a file
    assert str(tmp_path) not in str(raised.value)


def test_unreachable_mongo_is_store_unavailable_quickly():
    started = time.monotonic()
    client = pymongo.MongoClient(
        "mongodb://127.0.0.1:1", tz_aware=True, serverSelectionTimeoutMS=200, connect=False
    )
    store = MongoTemplateStore(client, "db", owns_client=True)  # builds without the server
    with pytest.raises(StoreUnavailable):
        store.latest("welcome")
    with pytest.raises(StoreUnavailable):
        store.create("welcome", _document("welcome"), NOW)
    store.close()
    assert time.monotonic() - started < 3


def test_make_template_store_follows_the_settings(settings):
    store = make_template_store(settings)
    assert isinstance(store, SqliteTemplateStore)
    assert store.path == str(settings.data_dir / "templates.db")
    assert store.timeout == settings.store_timeout
    store.close()
    with_mongo = dataclasses.replace(settings, mongo_uri="mongodb://127.0.0.1:1")
    store = make_template_store(with_mongo)  # builds without reaching the server
    assert isinstance(store, MongoTemplateStore)
    assert store.versions_collection.name == "template_versions"
    assert store.templates_collection.database.name == settings.mongo_db
    store.close()
