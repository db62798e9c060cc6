"""A NotificationService as the tests wire it: SQLite store, in-process queue, the channels of
the settings, a template catalog, the recipients' preferences and the suppression list;
installed for the functions with `set_service`."""

from __future__ import annotations

import pytest

from common.channels import make_channels
from common.config import Settings
from common.model import utcnow
from common.preferences.store import make_preference_store
from common.queue.memory import MemoryQueue
from common.runtime import make_listeners, set_service
from common.service import NotificationService
from common.store.sqlite import SqliteStore
from common.suppressions.store import make_suppression_store
from common.templates.catalog import TemplateCatalog
from common.templates.sqlite import SqliteTemplateStore


def installed_service(settings: Settings, **extra) -> NotificationService:
    """Build it in `settings.data_dir` and install it (undo with `set_service(None)`);
    `extra` goes to NotificationService (e.g. `admission=`)."""
    data_dir = settings.data_dir
    extra.setdefault("preferences", make_preference_store(settings))
    extra.setdefault("suppressions", make_suppression_store(settings))
    for name, value in make_listeners(settings).items():
        extra.setdefault(name, value)
    service = NotificationService(
        settings,
        SqliteStore(data_dir / "notifications.db"),
        MemoryQueue(),
        make_channels(settings),
        templates=TemplateCatalog(SqliteTemplateStore(data_dir / "templates.db"), utcnow),
        **extra,
    )
    set_service(service)
    return service


# The API through the functions as the runner routes them, on an installed service: the
# fixtures every API test module shares (import them by name into the module).


@pytest.fixture(scope="module", name="router")
def router_fixture():
    from common.hosting import FunctionRouter

    return FunctionRouter()


@pytest.fixture(name="service")
def service_fixture(settings):
    yield installed_service(settings)
    set_service(None)


@pytest.fixture(name="client")
def client_fixture(router, service):
    from tests.support.auth import AuthClient

    return AuthClient(router)
