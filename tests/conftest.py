"""Shared fixtures: a store of each kind, the real broker, a service wired for tests."""

from __future__ import annotations

import os
import uuid

import pytest

from tests.support.auth import ADMIN_KEY

# The tests' admin credential, before any settings are read: every service a test builds from
# the environment, and every child process that inherits it, accepts ADMIN_HEADERS.
os.environ["ADMIN_API_KEY"] = ADMIN_KEY

from common.config import load_settings  # noqa: E402
from common.store.sqlite import SqliteStore  # noqa: E402

# The real SMTP server and the Twilio-compatible endpoint, for every test module.
pytest_plugins = ["tests.support.fixtures"]

RABBITMQ_TEST_URL = os.environ.get("RABBITMQ_TEST_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")


def _mongo_store():
    from common.store.mongo import MongoStore
    from tests.support.mongo import mongo_database

    # A real server whenever MONGO_URI is set; CI runs the contract on mongomock.
    with mongo_database() as (client, name):
        yield MongoStore(database=name, client=client)


@pytest.fixture(scope="session", autouse=True)
def hosted_like_the_runner():
    """Tests that load functions in this process play the local runner's part: they deliver
    from the in-process queue themselves. (Alone under the stock CLI, without RABBITMQ_URL, a
    function that queues work refuses to start: tests/test_deploy_stock_cli.py.)"""
    from common.runtime import host_in_process_delivery

    host_in_process_delivery()


@pytest.fixture(params=["sqlite", "mongo"])
def store(request, tmp_path):
    if request.param == "sqlite":
        store = SqliteStore(tmp_path / "notifications.db")
        yield store
        store.close()
    else:
        yield from _mongo_store()


@pytest.fixture
def settings_env(tmp_path):
    """Environment for a test service: short retry delays, data in a temp folder."""
    return {
        "DATA_DIR": str(tmp_path / "data"),
        "RETRY_SCHEDULE": "0.2,0.2,0.2,0.2,0.2",
        "SWEEP_INTERVAL": "0.2",
        "PENDING_GRACE_SECONDS": "0.5",
        "LEASE_SECONDS": "5",
        "ADMIN_API_KEY": ADMIN_KEY,
    }


@pytest.fixture
def settings(settings_env):
    return load_settings(settings_env)


@pytest.fixture
def rabbit_url():
    """The real broker; a missing broker fails the test (CI must not skip these)."""
    import pika

    try:
        pika.BlockingConnection(pika.URLParameters(RABBITMQ_TEST_URL)).close()
    except Exception as error:  # pragma: no cover - the failure message is the point
        pytest.fail(f"RabbitMQ is not reachable at {RABBITMQ_TEST_URL}: {error!r}")
    return RABBITMQ_TEST_URL


@pytest.fixture
def queue_names(rabbit_url):
    """Queue names of this test's own, deleted afterwards, so tests never disturb each other."""
    import pika

    suffix = uuid.uuid4().hex[:8]
    names = (f"test_notifications_{suffix}", f"test_notifications_dlq_{suffix}")
    yield names
    connection = pika.BlockingConnection(pika.URLParameters(rabbit_url))
    channel = connection.channel()
    for name in names:
        channel.queue_delete(name)
    connection.close()
