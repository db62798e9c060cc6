"""The preference store's contract, run on each backend (SQLite; MongoDB, on mongomock when no
server is configured): get/put, get_many, and opt-outs that are atomic and idempotent."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from common.config import load_settings
from common.errors import ValidationError
from common.preferences.document import DEFAULT_PREFERENCES, validate_preferences
from common.preferences.mongo import MongoPreferenceStore
from common.preferences.sqlite import SqlitePreferenceStore
from common.preferences.store import make_preference_store
from tests.support.mongo import mongo_database

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)
ANN = validate_preferences(
    {
        "channels": {"sms": False},
        "categories": {"marketing": {"email": False}, "a.b:c": {"in_app": True}},
        "timezone": "Europe/Paris",
        "quiet_hours": [{"start": "22:00", "end": "07:00", "days": ["fri", "sat"]}],
    }
)


def _mongo_store():
    with mongo_database() as (client, name):
        yield MongoPreferenceStore(client, name)


@pytest.fixture(params=["sqlite", "mongo"])
def store(request, tmp_path):
    if request.param == "sqlite":
        store = SqlitePreferenceStore(tmp_path / "preferences.db")
        yield store
        store.close()
    else:
        yield from _mongo_store()


def test_a_user_without_preferences_has_none(store):
    assert store.get("ann") is None
    assert store.get_many(["ann", "bob"]) == {}


def test_put_then_get_gives_back_the_document(store):
    store.put("ann", ANN, NOW)
    assert store.get("ann") == ANN
    assert store.get("bob") is None


def test_put_replaces_the_whole_document(store):
    store.put("ann", ANN, NOW)
    store.put("ann", DEFAULT_PREFERENCES, NOW)
    assert store.get("ann") == DEFAULT_PREFERENCES


def test_get_many_returns_only_users_with_preferences(store):
    store.put("ann", ANN, NOW)
    store.put("bob", DEFAULT_PREFERENCES, NOW)
    found = store.get_many(["ann", "bob", "cid", "ann"])
    assert found == {"ann": ANN, "bob": DEFAULT_PREFERENCES}
    assert store.get_many([]) == {}
    many = [f"user{i}" for i in range(1200)] + ["bob"]
    assert store.get_many(many) == {"bob": DEFAULT_PREFERENCES}


def test_opt_out_creates_from_the_defaults_and_is_idempotent(store):
    first = store.opt_out("ann", "Marketing", "email", NOW)
    expected = {**DEFAULT_PREFERENCES, "categories": {"marketing": {"email": False}}}
    assert first == expected and store.get("ann") == expected
    assert store.opt_out("ann", "marketing", "email", NOW) == expected
    assert store.get("ann") == expected


def test_opt_out_of_a_channel_keeps_the_rest(store):
    store.put("ann", ANN, NOW)
    changed = store.opt_out("ann", None, "email", NOW)
    assert changed["channels"] == {"email": False, "sms": False, "in_app": True}
    assert changed["categories"] == ANN["categories"]
    assert changed["quiet_hours"] == ANN["quiet_hours"]
    assert store.get("ann") == changed


def test_opt_out_refuses_an_unknown_channel_or_a_bad_category(store):
    with pytest.raises(ValidationError):
        store.opt_out("ann", None, "fax", NOW)
    with pytest.raises(ValidationError):
        store.opt_out("ann", "no spaces", "email", NOW)
    assert store.get("ann") is None


def test_concurrent_opt_outs_of_one_user_all_land(store):
    categories = [f"cat{i}" for i in range(16)]
    barrier = threading.Barrier(len(categories))
    failures: list[BaseException] = []

    def opt_out(category: str) -> None:
        try:
            barrier.wait()
            store.opt_out("ann", category, "email", NOW)
        except BaseException as error:  # noqa: BLE001 - reported by the test below
            failures.append(error)

    threads = [threading.Thread(target=opt_out, args=(c,)) for c in categories]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    stored = store.get("ann")["categories"]
    assert stored == {category: {"email": False} for category in categories}


def test_the_factory_picks_sqlite_without_mongo_uri(tmp_path):
    settings = load_settings({"DATA_DIR": str(tmp_path / "data")})
    store = make_preference_store(settings)
    try:
        assert isinstance(store, SqlitePreferenceStore)
        store.put("ann", ANN, NOW)
        assert (tmp_path / "data" / "preferences.db").exists()
    finally:
        store.close()


def test_the_factory_picks_mongodb_with_mongo_uri(tmp_path):
    settings = load_settings(
        {"DATA_DIR": str(tmp_path / "data"), "MONGO_URI": "mongodb://127.0.0.1:1/"}
    )
    assert isinstance(make_preference_store(settings), MongoPreferenceStore)


def test_opt_outs_through_two_sqlite_stores_on_one_file_all_land(tmp_path):
    # Two stores share no lock in Python, as two processes would not: BEGIN IMMEDIATE alone
    # must order their read-modify-writes.
    path = tmp_path / "preferences.db"
    stores = [SqlitePreferenceStore(path), SqlitePreferenceStore(path)]
    categories = [f"cat{i}" for i in range(12)]
    barrier = threading.Barrier(len(categories))

    def opt_out(index: int, category: str) -> None:
        barrier.wait()
        stores[index % 2].opt_out("ann", category, "sms", NOW)

    threads = [threading.Thread(target=opt_out, args=(i, c)) for i, c in enumerate(categories)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert set(stores[0].get("ann")["categories"]) == set(categories)
    finally:
        for store in stores:
            store.close()
