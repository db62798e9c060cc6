"""Property-based fuzz of the HTTP API from its OpenAPI document (schemathesis + Hypothesis).

Every documented operation is called with generated requests, valid and invalid, through the
local runner's own WSGI app (all functions, routed as `local_runner.py serve` routes them).
No request may yield a 5xx or a hang, every response must match the document, and nothing may
change notifications other than the ones the fuzzer created itself.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from common.channels import make_channels
from common.config import load_settings
from common.hosting import ASGI_FUNCTIONS, FunctionRouter
from common.model import utcnow
from common.preferences.store import make_preference_store
from common.queue.memory import MemoryQueue
from common.runtime import make_listeners, set_service
from common.service import NotificationService
from common.store.sqlite import SqliteStore
from common.suppressions.store import make_suppression_store
from common.templates.catalog import TemplateCatalog
from common.templates.sqlite import SqliteTemplateStore
from tests.support.auth import ADMIN_HEADERS, ADMIN_KEY
from tests.support.states import make_failed, make_retry_scheduled

ROOT = Path(__file__).resolve().parent.parent
MAX_EXAMPLES = 100
# What every response must satisfy. `negative_data_rejection` (invalid by the document implies
# a 4xx) is left out on purpose: the document states the canonical form, and the service is
# deliberately lenient beyond it (trimmed spaces, any letter case and aliases for a type,
# integers read as text, an empty query value as no filter, a batch that rejects bad items
# one by one). tests/test_openapi.py checks each documented rule's 400 with chosen inputs.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    positive_data_acceptance,
]

pytestmark = pytest.mark.timeout(240)
ASGI_TARGETS = {spec.target for spec in ASGI_FUNCTIONS}


class Fuzzed:
    """The runner's app on a store of its own, seeded with notifications the fuzz must not touch."""

    def __init__(self, data_dir):
        settings_ = load_settings(
            {
                "DATA_DIR": str(data_dir),
                "LOG_LEVEL": "WARNING",
                "ADMIN_API_KEY": ADMIN_KEY,
                # A webhook the fuzz registers (a public address literal) is never reached
                # from here: its attempts give up fast.
                "WEBHOOK_TIMEOUT": "0.5",
            }
        )
        self.store = SqliteStore(data_dir / "notifications.db")
        self.templates = SqliteTemplateStore(data_dir / "templates.db")
        self.service = NotificationService(
            settings_,
            self.store,
            MemoryQueue(),
            make_channels(settings_),
            templates=TemplateCatalog(self.templates, utcnow),
            preferences=make_preference_store(settings_),
            suppressions=make_suppression_store(settings_),
            **make_listeners(settings_),
        )
        set_service(self.service)
        self.app = FunctionRouter()
        self.schema = schemathesis.openapi.from_wsgi("/openapi.json", self.app)
        self.created = 0  # notifications the fuzzer's own requests were told were accepted
        self.existing = self._seed()
        self.total_before = self.service.stats()["total"]

    def _seed(self) -> dict[str, dict]:
        """One notification in each state a client can leave behind, delivered or not."""
        submit = self.service.submit
        queued = submit({"user_id": "u1", "notification_type": "in_app", "message": "queued"})
        email = submit(
            {"user_id": "u1", "type": "email", "message": "e", "email": "ada@example.com"}
        )
        sent = submit(
            {"user_id": "u2", "notification_type": "sms", "message": "s", "phone": "+14155550123"}
        )
        self.service.deliver(sent.id)
        failed = submit({"user_id": "u2", "notification_type": "in_app", "message": "f"})
        make_failed(self.store, failed.id)
        waiting = submit({"user_id": "u3", "notification_type": "in_app", "message": "w"})
        make_retry_scheduled(self.store, waiting.id)
        ids = [queued.id, email.id, sent.id, failed.id, waiting.id]
        return {i: self.store.get(i).to_dict() for i in ids}

    def record(self, case, response) -> None:
        """Count what the fuzzer's own requests were told was created."""
        path, status = case.operation.path, response.status_code
        if path == "/notifications" and status == 201:
            self.created += 1
        elif path == "/send-notification" and status == 303:
            self.created += 1  # the web form (only with a valid CSRF token: never here)
        elif path == "/notifications/batch" and status in (201, 400):
            body = response.json()
            results = body.get("results", []) if isinstance(body, dict) else []
            # An item whose idempotency key named an earlier notification created nothing.
            self.created += sum(1 for r in results if "id" in r and not r.get("duplicate"))

    def assert_untouched(self) -> None:
        for notification_id, before in self.existing.items():
            assert self.store.get(notification_id).to_dict() == before
        assert self.service.stats()["total"] == self.total_before + self.created


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("fuzz-data")
    target = Fuzzed(data_dir)
    yield target
    set_service(None)
    target.templates.close()
    target.store.close()


def _runs() -> list:
    """(operation, mode) pairs: invalid inputs only where an operation takes a body, a query
    or a header (an invalid path parameter cannot be sent: it is just another path)."""
    document = schemathesis.openapi.from_path(ROOT / "openapi.json")
    runs = []
    for result in document.get_all_operations():
        operation = result.ok()
        if operation.definition.raw.get("x-function") in ASGI_TARGETS:
            continue  # a stream never ends: tests/test_inbox_stream.py tries its inputs
        runs.append(
            pytest.param(operation.label, GenerationMode.POSITIVE, id=f"{operation.label} valid")
        )
        if len(operation.body) or len(operation.query) or len(operation.headers):
            runs.append(
                pytest.param(
                    operation.label, GenerationMode.NEGATIVE, id=f"{operation.label} invalid"
                )
            )
    return runs


def _items(case) -> list:
    """The body, and each item of a batch, that could be a notification request."""
    body = case.body if isinstance(case.body, (dict, list)) else None
    items = body.get("notifications", []) if isinstance(body, dict) else body or []
    items = items if isinstance(items, list) else []
    return [i for i in [body, *items] if isinstance(i, dict)]


def _carries_idempotency_key(case) -> bool:
    if case.headers and "Idempotency-Key" in case.headers:
        return True
    return any("idempotency_key" in i for i in _items(case))


# Template documents have rules no JSON Schema can state (default_locale is one of the locales,
# every locale covers the same channels, each part compiles in the sandbox).
TEMPLATE_WRITES = {("POST", "/templates"), ("PUT", "/templates/{key}")}
# A time zone must exist in the tz database: a name that only looks like one is rightly a 400.
PREFERENCE_WRITES = {("PUT", "/users/{user_id}/preferences")}
# A webhook URL must resolve to a public address: a rule of DNS, not of the schema.
WEBHOOK_WRITES = {("POST", "/webhooks")}


def _schedules(case) -> bool:
    """A send_at is valid only within MAX_SCHEDULE_DAYS of now: a rule of the clock."""
    return case.operation.path.startswith("/notifications") and any(
        "send_at" in i for i in _items(case)
    )


def _names_a_template(case) -> bool:
    return case.operation.path.startswith("/notifications") and any(
        "template" in i for i in _items(case)
    )


def _previews_a_document(case) -> bool:
    """A preview of an unsaved document: the same cross-field rules as TEMPLATE_WRITES."""
    return case.operation.path == "/templates/{key}/preview" and any(
        "document" in i for i in _items(case)
    )


@pytest.mark.parametrize(("label", "mode"), _runs())
def test_no_input_breaks_the_api(fuzzed, label, mode):
    method, path = label.split(" ", 1)
    operation = fuzzed.schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=timedelta(seconds=5),
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(case):
        response = case.call(headers=ADMIN_HEADERS)  # the admin's key on every generated call
        fuzzed.record(case, response)
        checks = CHECKS
        stateful = (
            (case.query and case.query.get("cursor"))
            or _carries_idempotency_key(case)
            or _names_a_template(case)
            or _previews_a_document(case)
            or (case.method.upper(), case.operation.path) in TEMPLATE_WRITES
            or (case.method.upper(), case.operation.path) in PREFERENCE_WRITES
            or (case.method.upper(), case.operation.path) in WEBHOOK_WRITES
            or _schedules(case)
        )
        if stateful:
            # A cursor is opaque: only the ones the API gave out are valid, whatever the schema
            # generator makes of its pattern. A made-up one must still get a documented 400.
            # An idempotency key is stateful: reused with another body it is rightly refused
            # (422), and the generator repeats short keys. A template key too: only saved ones
            # are valid, with data that fits them; and a template document has rules across its
            # fields (TEMPLATE_WRITES, and a preview of one). All must still be documented.
            checks = [check for check in CHECKS if check is not positive_data_acceptance]
        case.validate_response(response, checks=checks)

    fuzz()
    fuzzed.assert_untouched()
