"""The OpenAPI document (openapi.json) against the functions that serve the API.

Routing and document cannot drift: every route any HTTP function declares on its `router` is
in the document under the same method and function (`x-function`), and every documented
operation is served. Real responses are validated against the document's schemas, and the
document's validation rules are checked against the service's, case by case.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_openapi
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from common.channels import make_channels
from common.config import load_settings
from common.hosting import ASGI_FUNCTIONS, HTTP_FUNCTIONS, FunctionRouter, load_asgi_function
from common.queue.memory import MemoryQueue
from common.runtime import set_service
from common.service import NotificationService
from common.store.sqlite import SqliteStore
from tests.support.auth import ADMIN_KEY, AuthClient
from tests.support.states import make_failed, make_retry_scheduled

ROOT = Path(__file__).resolve().parent.parent
DOCUMENT = json.loads((ROOT / "openapi.json").read_text())
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
DOCUMENT_URI = "urn:notification-service:openapi"
REGISTRY = Registry().with_resource(
    DOCUMENT_URI, Resource.from_contents(DOCUMENT, default_specification=DRAFT202012)
)


def schema_validator(pointer: str) -> Draft202012Validator:
    """A validator for the document's schema at `pointer` (e.g. /components/schemas/Error)."""
    return Draft202012Validator(
        {"$ref": f"{DOCUMENT_URI}#{pointer}"},
        registry=REGISTRY,
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )


def openapi_path(rule: str) -> str:
    """A werkzeug rule as an OpenAPI path: `/users/<user_id>` -> `/users/{user_id}`."""
    return re.sub(r"<(?:[a-z_]+:)?([A-Za-z_][A-Za-z0-9_]*)>", r"{\1}", rule)


def documented_operations() -> set[tuple[str, str, str]]:
    """(path, METHOD, function) for every operation in the document."""
    return {
        (path, method.upper(), operation.get("x-function", "?"))
        for path, item in DOCUMENT["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    }


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    """The runner's own WSGI app (every HTTP function) on a store of its own."""
    data_dir = tmp_path_factory.mktemp("openapi-data")
    settings = load_settings({"DATA_DIR": str(data_dir), "ADMIN_API_KEY": ADMIN_KEY})
    store = SqliteStore(data_dir / "notifications.db")
    service = NotificationService(settings, store, MemoryQueue(), make_channels(settings))
    set_service(service)
    app = FunctionRouter()
    yield AuthClient(app), service, app
    set_service(None)
    store.close()


# -- the document itself ---------------------------------------------------------------------


def test_the_document_is_valid_openapi_3_1():
    validate_openapi(DOCUMENT)
    assert DOCUMENT["openapi"].startswith("3.1")


def asgi_rules() -> list[tuple[str, tuple[str, ...], str]]:
    """The async functions' routes (the inbox stream), as the runner's front app routes them.
    They answer GET; their OPTIONS is the CORS preflight, undocumented as on the other inbox
    routes."""
    rules = []
    for spec in ASGI_FUNCTIONS:
        _, module = load_asgi_function(spec)
        rules += [(rule, ("GET",), spec.target) for rule in module.ROUTES]
    return rules


ASGI_PATHS = {
    path
    for path, item in DOCUMENT["paths"].items()
    if any(op.get("x-function") in {s.target for s in ASGI_FUNCTIONS} for op in item.values())
}


def test_every_operation_names_the_function_that_serves_it():
    functions = {spec.target for spec in (*HTTP_FUNCTIONS, *ASGI_FUNCTIONS)}
    for path, method, function in documented_operations():
        assert function in functions, f"{method} {path}: x-function {function!r} is not served"


# -- routing and document agree ----------------------------------------------------------------


def test_every_http_function_of_the_runner_exists():
    """A missing file would silently drop its routes from the runner (it skips them)."""
    missing = [spec.source for spec in (*HTTP_FUNCTIONS, *ASGI_FUNCTIONS) if not spec.path.exists()]
    assert not missing


def drift(rules) -> tuple[set, set]:
    """(served but undocumented, documented but not served) for the runner's routing rules."""
    served = {
        (openapi_path(rule), method, target)
        for rule, methods, target in [*rules, *asgi_rules()]
        for method in methods
    }
    documented = documented_operations()
    return served - documented, documented - served


def test_the_runner_serves_exactly_the_documented_operations(api):
    _, _, app = api
    undocumented, unserved = drift(app.rules)
    assert undocumented == set(), "routes missing from openapi.json"
    assert unserved == set(), "documented operations no function serves"


def test_the_drift_check_catches_a_new_route_a_new_method_and_a_moved_route(api):
    _, _, app = api
    new_route = ("/reports/<int:year>", ("GET",), "http_stats")
    assert drift([*app.rules, new_route])[0] == {("/reports/{year}", "GET", "http_stats")}
    new_method = ("/stats", ("DELETE",), "http_stats")
    assert drift([*app.rules, new_method])[0] == {("/stats", "DELETE", "http_stats")}
    moved = [(r, m, "http_web" if r == "/stats" else t) for r, m, t in app.rules]
    assert drift(moved) == ({("/stats", "GET", "http_web")}, {("/stats", "GET", "http_stats")})


def test_each_function_alone_declares_its_documented_operations():
    """Deployed, each function serves only its own routes: the same ones, function by function."""
    from common.hosting import load_function

    documented = documented_operations()
    for spec in HTTP_FUNCTIONS:
        _, module = load_function(spec)
        own = {
            (openapi_path(route.rule), method, spec.target)
            for route in module.router.routes
            for method in route.methods
        }
        assert own == {op for op in documented if op[2] == spec.target}, spec.target


def _methods_for(concrete: str) -> set[str]:
    """Every method documented for a concrete path, under any template it matches
    (`/notifications/batch` is also `/notifications/{notification_id}`)."""
    methods: set[str] = set()
    for path, item in DOCUMENT["paths"].items():
        pattern = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path)) + "$"
        if re.match(pattern, concrete):
            methods |= {m for m in item if m in HTTP_METHODS}
    return methods


def test_an_undocumented_method_on_a_documented_path_is_a_json_405(api):
    client, _, _ = api
    error = schema_validator("/components/schemas/Error")
    for path in DOCUMENT["paths"]:
        if path in ASGI_PATHS:  # not behind this WSGI client: tests/test_inbox_stream.py
            continue
        concrete = re.sub(r"\{[^}]+\}", "x", path)
        documented = _methods_for(concrete)
        for method in ("get", "post", "put", "patch", "delete"):
            if method in documented:
                continue
            reply = client.open(concrete, method=method.upper())
            assert reply.status_code == 405, f"{method.upper()} {path}"
            assert reply.mimetype == "application/json"
            error.validate(reply.get_json())


def test_an_unknown_path_is_a_json_404(api):
    client, _, _ = api
    reply = client.get("/no/such/path")
    assert reply.status_code == 404
    schema_validator("/components/schemas/Error").validate(reply.get_json())


# -- real responses match the document ---------------------------------------------------------


def assert_documented(reply, path: str, method: str = "get") -> dict | None:
    """The reply's status, media type, headers and body are what the document says."""
    operation = DOCUMENT["paths"][path][method]
    status = str(reply.status_code)
    assert status in operation["responses"], f"{method.upper()} {path}: {status} undocumented"
    response = operation["responses"][status]
    for name in response.get("headers", {}):
        assert name in reply.headers, f"{method.upper()} {path} {status}: no {name} header"
    content = response.get("content", {})
    if not content:
        return None
    assert reply.mimetype in content or "*/*" in content, (
        f"{method} {path} {status}: {reply.mimetype}"
    )
    if reply.mimetype != "application/json":
        return None
    body = reply.get_json()
    pointer = f"/paths/{path.replace('~', '~0').replace('/', '~1')}/{method}"
    schema_validator(f"{pointer}/responses/{status}/content/application~1json/schema").validate(
        body
    )
    return body


def valid(kind: str = "in_app", **extra) -> dict:
    payload = {"user_id": "reader", "notification_type": kind, "message": "hello"}
    return {**payload, **extra}


def test_sending_reading_and_listing_match_the_document(api):
    client, _, _ = api
    created = assert_documented(
        client.post("/notifications", json=valid()), "/notifications", "post"
    )
    headers = {"Idempotency-Key": "doc-check-1"}
    first = client.post("/notifications", json=valid(), headers=headers)
    again = client.post("/notifications", json=valid(), headers=headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert assert_documented(again, "/notifications", "post")["duplicate"] is True
    assert_documented(client.post("/notifications", data=b"{oops"), "/notifications", "post")
    assert_documented(
        client.post("/notifications", json=valid(), headers={"Idempotency-Key": "k" * 201}),
        "/notifications",
        "post",
    )

    one = f"/notifications/{created['id']}"
    assert_documented(client.get(one), "/notifications/{notification_id}")
    assert_documented(client.get("/notifications/nope"), "/notifications/{notification_id}")

    listing = "/users/{user_id}/notifications"
    page = assert_documented(client.get("/users/reader/notifications?limit=1"), listing)
    assert page["count"] == 1 and page["next_cursor"]
    following = client.get(f"/users/reader/notifications?limit=1&cursor={page['next_cursor']}")
    assert_documented(following, listing)
    for query in ("type=fax", "status=lost", "limit=0", "limit=201", "cursor=not-ours"):
        reply = client.get(f"/users/reader/notifications?{query}")
        assert reply.status_code == 400, query
        assert_documented(reply, listing)


def test_batches_retries_stats_and_the_sweep_match_the_document(api):
    client, service, _ = api
    batch = "/notifications/batch"
    mixed = client.post(batch, json={"notifications": [valid(), {"user_id": "x"}]})
    body = assert_documented(mixed, batch, "post")
    assert (mixed.status_code, body["accepted"], body["rejected"]) == (201, 1, 1)
    none_good = client.post(batch, json=[{"message": "no user"}])
    assert none_good.status_code == 400 and "results" in assert_documented(none_good, batch, "post")
    not_a_batch = client.post(batch, json={"notifications": []})
    assert not_a_batch.status_code == 400 and "error" in assert_documented(
        not_a_batch, batch, "post"
    )
    too_big = client.post(batch, json=[valid()] * 1001)
    assert too_big.status_code == 400 and assert_documented(too_big, batch, "post")

    retry = "/notifications/{notification_id}/retry"
    queued = service.submit(valid())
    assert client.post(f"/notifications/{queued.id}/retry").status_code == 409
    assert_documented(client.post(f"/notifications/{queued.id}/retry"), retry, "post")
    make_failed(service.store, queued.id)
    again = client.post(f"/notifications/{queued.id}/retry")
    assert again.status_code == 202 and assert_documented(again, retry, "post")
    assert_documented(client.post("/notifications/nope/retry"), retry, "post")

    assert_documented(client.get("/stats"), "/stats")
    waiting = service.submit(valid())
    make_retry_scheduled(service.store, waiting.id, due_in=timedelta(seconds=-1))
    swept = assert_documented(client.post("/sweep"), "/sweep", "post")
    assert swept["requeued"] >= 1


def test_the_served_document_is_the_file(api):
    client, _, _ = api
    reply = client.get("/openapi.json")
    assert assert_documented(reply, "/openapi.json") == DOCUMENT


def test_the_web_pages_answer_as_documented(api):
    client, service, _ = api
    for path in ("/", "/send-notification", "/users", "/users/reader", "/dashboard"):
        template = "/users/{user_id}" if path == "/users/reader" else path
        assert client.get(path).status_code == 200, path
        assert_documented(client.get(path), template)
    assert client.get("/users?user_id=reader").status_code == 303
    assert_documented(client.get("/users?user_id=reader"), "/users")
    missing = client.get("/send-notification?sent=nope")
    assert missing.status_code == 404
    assert_documented(missing, "/send-notification")
    # A form post without its CSRF cookie and token is refused, and changes nothing.
    before = service.stats()["total"]
    refused = client.post("/send-notification", data={"user_id": "u", "message": "m"})
    assert refused.status_code == 403
    assert_documented(refused, "/send-notification", "post")
    assert service.stats()["total"] == before
    static = client.get("/static/app.css")
    assert static.status_code == 200
    assert_documented(static, "/static/{name}")
    assert_documented(client.get("/static/no-such-file.css"), "/static/{name}")


# -- the document's validation rules are the service's -----------------------------------------

REQUEST = schema_validator("/components/schemas/NotificationRequest")

# Each breaks one documented rule; the service must name the same field.
INVALID = [
    ("user_id", {"user_id": None}),
    ("user_id", {"user_id": "a" * 129}),
    ("user_id", {"user_id": "has space"}),
    ("user_id", {"user_id": "semi;colon"}),
    ("message", {"message": None}),
    ("message", {"message": "   "}),
    ("message", {"message": "m" * 10_001}),
    ("notification_type", {"notification_type": "fax"}),
    ("notification_type", {"notification_type": None}),
    ("email", {"notification_type": "email"}),
    ("email", {"notification_type": "email", "email": "no-at-sign.example.com"}),
    ("email", {"notification_type": "email", "email": "two@@example.com"}),
    ("email", {"notification_type": "email", "email": "a@nodot"}),
    ("email", {"notification_type": "email", "email": f"{'a' * 250}@b.co"}),
    ("phone", {"notification_type": "sms"}),
    ("phone", {"notification_type": "sms", "phone": "14155550123"}),
    ("phone", {"notification_type": "sms", "phone": "+0123456789"}),
    ("phone", {"notification_type": "sms", "phone": "+12345"}),
    ("phone", {"notification_type": "sms", "phone": "+1234567890123456"}),
    ("subject", {"subject": "s" * 201}),
    ("subject", {"subject": "two\nlines"}),
    ("priority", {"priority": "high"}),
]

# On the edge of each rule, inside: the document and the service both accept them.
VALID = [
    {"user_id": "a" * 128},
    {"user_id": "ada.lovelace+test:1@example_org-x"},
    {"message": "m" * 10_000},
    {"notification_type": "email", "email": "ada@example.com", "subject": "s" * 200},
    {"notification_type": "email", "email": f"{'a' * 240}@example.com"},
    {"notification_type": "sms", "phone": "+1234567"},
    {"notification_type": "sms", "phone": "+123456789012345"},
    {"notification_type": "in_app", "email": None, "phone": None, "subject": None},
]


@pytest.mark.parametrize(("field", "change"), INVALID)
def test_what_the_document_rejects_the_service_rejects(api, field, change):
    client, service, _ = api
    payload = {**valid(), **change}
    assert not REQUEST.is_valid(payload), f"the document accepts {payload}"
    before = service.stats()["total"]
    reply = client.post("/notifications", json=payload)
    assert reply.status_code == 400
    assert field in assert_documented(reply, "/notifications", "post")["fields"]
    assert service.stats()["total"] == before


@pytest.mark.parametrize("change", VALID)
def test_what_the_document_accepts_the_service_accepts(api, change):
    client, _, _ = api
    payload = {**valid(), **change}
    REQUEST.validate(payload)
    reply = client.post("/notifications", json=payload)
    assert reply.status_code == 201, reply.get_json()
    assert_documented(reply, "/notifications", "post")
