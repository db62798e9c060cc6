"""Who may call each operation: openapi.json against the access rules the routes declare.

Every route states its rule where it is defined (`router.route(..., access=...)`); the document
states the same for each operation: `security: []` for an open one, otherwise the schemes it
takes (`bearerAuth`, and `sessionCookie` wherever the session cookie counts), the scopes any
one of which lets a caller in (`x-required-scopes`) and whether a per-user token passes too
(`x-user-token`). The document cannot drift from the code: these tests compare the two route
by route, then ask the runner's own WSGI app what it does without a credential, with a bad one,
and with the session cookie alone.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, replace

import pytest
from werkzeug.test import Client

from common.auth.principal import ADMIN, SCOPES, SEND
from common.auth.rules import OPEN, AccessRule, needs
from common.channels import make_channels
from common.hosting import ASGI_FUNCTIONS, HTTP_FUNCTIONS, FunctionRouter, load_function
from common.model import utcnow
from common.queue.memory import MemoryQueue
from common.runtime import get_access, set_service
from common.service import NotificationService
from common.store.sqlite import SqliteStore
from common.templates.catalog import TemplateCatalog
from common.templates.sqlite import SqliteTemplateStore
from tests.support.auth import ADMIN_KEY
from tests.test_openapi import DOCUMENT, HTTP_METHODS, schema_validator

BEARER = "bearerAuth"
SESSION = "sessionCookie"


ERROR = schema_validator("/components/schemas/Error")


def openapi_path(rule: str) -> str:
    """A werkzeug rule as an OpenAPI path: `/users/<user_id>` -> `/users/{user_id}`."""
    return re.sub(r"<(?:[a-z_]+:)?([A-Za-z_][A-Za-z0-9_]*)>", r"{\1}", rule)


# The async functions (the inbox stream) check credentials themselves, before anything
# streams, and take a stream ticket instead of the session cookie: tests/test_inbox_stream.py.
ASGI_TARGETS = {spec.target for spec in ASGI_FUNCTIONS}


def operations(document: dict) -> dict[tuple[str, str], dict]:
    """(path, METHOD) -> operation, for every operation of the WSGI functions in `document`."""
    return {
        (path, method.upper()): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS and operation.get("x-function") not in ASGI_TARGETS
    }


def protected_operations() -> list[tuple[str, str]]:
    """(path, METHOD) of every operation the document says needs a credential."""
    return sorted(key for key, op in operations(DOCUMENT).items() if op.get("security") != [])


@dataclass(frozen=True)
class Declared:
    """One method of one route, as its function declares it."""

    path: str  # in OpenAPI form
    method: str
    function: str
    access: AccessRule
    sessions: bool  # the function's Router counts the session cookie on every method


def declared_routes() -> list[Declared]:
    """Every method of every route of every HTTP function, with the rule it declares."""
    declared = []
    for spec in HTTP_FUNCTIONS:
        _, module = load_function(spec)
        for route in module.router.routes:
            for method in route.methods:
                declared.append(
                    Declared(
                        openapi_path(route.rule),
                        method,
                        spec.target,
                        route.access,
                        module.router.sessions,
                    )
                )
    return declared


def schemes(operation: dict) -> set[str]:
    """The security schemes an operation takes (each requirement naming one scheme)."""
    return {name for requirement in operation["security"] for name in requirement}


def access_drift(document: dict, declared: list[Declared]) -> list[str]:
    """Each way the document's access statements disagree with the routes' rules."""
    documented = operations(document)
    problems = []
    for route in declared:
        where = f"{route.method} {route.path} ({route.function})"
        operation = documented.get((route.path, route.method))
        if operation is None:
            problems.append(f"{where}: not documented")
            continue
        if "security" not in operation:
            problems.append(f"{where}: no `security` of its own")
            continue
        rule = route.access
        if rule.open:
            if operation["security"] != []:
                problems.append(f"{where}: open, but security is {operation['security']}")
            for extension in ("x-required-scopes", "x-user-token"):
                if extension in operation:
                    problems.append(f"{where}: open, but has {extension}")
            continue
        if operation["security"] == []:
            problems.append(f"{where}: needs {rule.describe()}, but security is []")
            continue
        if any(len(requirement) != 1 for requirement in operation["security"]):
            problems.append(f"{where}: each security requirement should name one scheme")
        # As common.http.authenticate: the cookie counts everywhere (an API write with it also
        # needs the session's X-CSRF-Token).
        expected = {BEARER, SESSION}
        if schemes(operation) != expected:
            problems.append(
                f"{where}: schemes {sorted(schemes(operation))}, not {sorted(expected)}"
            )
        scopes = operation.get("x-required-scopes")
        if not isinstance(scopes, list) or sorted(scopes) != sorted(rule.scopes):
            problems.append(f"{where}: x-required-scopes {scopes}, the route needs {rule.scopes}")
        user_token = rule.own_user or rule.user_resource
        if operation.get("x-user-token", False) is not user_token:
            problems.append(
                f"{where}: x-user-token {operation.get('x-user-token')}, the route: {user_token}"
            )
        responses = operation["responses"]
        refusals = (
            ("403", "429") if route.sessions and route.method == "GET" else ("401", "403", "429")
        )
        for status in refusals:
            if status not in responses:
                problems.append(f"{where}: no {status} response")
        if route.sessions and route.method == "GET" and "303" not in responses:
            problems.append(f"{where}: no 303 (to /login) response")
        if not route.sessions:
            headers = responses.get("401", {}).get("headers", {})
            if headers.get("WWW-Authenticate") != {"$ref": "#/components/headers/WWW-Authenticate"}:
                problems.append(f"{where}: its 401 does not carry WWW-Authenticate")
        retry_after = responses.get("429", {}).get("headers", {}).get("Retry-After")
        if retry_after != {"$ref": "#/components/headers/Retry-After"}:
            problems.append(f"{where}: its 429 does not carry Retry-After")
    return problems


@pytest.fixture(scope="module")
def declared():
    return declared_routes()


# -- the document agrees with the code ---------------------------------------------------------


def test_every_route_is_documented_with_the_access_rule_it_declares(declared):
    assert len(declared) == len(operations(DOCUMENT))
    assert access_drift(DOCUMENT, declared) == []


def test_the_access_check_catches_each_kind_of_drift(declared):
    def drift_after(change) -> list[str]:
        document = copy.deepcopy(DOCUMENT)
        change(operations(document))
        return access_drift(document, declared)

    def stats_for_admin_only(ops):
        ops["/stats", "GET"]["x-required-scopes"] = [ADMIN]

    def healthz_closed(ops):
        ops["/healthz", "GET"]["security"] = [{BEARER: []}]

    def no_user_tokens(ops):
        del ops["/notifications/{notification_id}", "GET"]["x-user-token"]

    def sweep_without_cookie(ops):
        ops["/sweep", "POST"]["security"] = [{BEARER: []}]

    def default_security(ops):
        del ops["/api-keys", "POST"]["security"]

    for change in (
        stats_for_admin_only,
        healthz_closed,
        no_user_tokens,
        sweep_without_cookie,
        default_security,
    ):
        assert len(drift_after(change)) == 1, change.__name__

    # ... and a route whose rule changes while the document stays.
    def with_rule(path, method, rule):
        return [
            replace(r, access=rule) if (r.path, r.method) == (path, method) else r for r in declared
        ]

    assert access_drift(DOCUMENT, with_rule("/stats", "GET", needs(SEND)))
    assert access_drift(DOCUMENT, with_rule("/readyz", "GET", OPEN))
    assert access_drift(DOCUMENT, with_rule("/openapi.json", "GET", needs()))


def test_the_security_schemes_are_declared_and_bearer_is_the_default():
    security_schemes = DOCUMENT["components"]["securitySchemes"]
    assert security_schemes[BEARER]["type"] == "http"
    assert security_schemes[BEARER]["scheme"] == "bearer"
    assert "nsk_" in security_schemes[BEARER]["description"]
    cookie = security_schemes[SESSION]
    assert (cookie["type"], cookie["in"], cookie["name"]) == ("apiKey", "cookie", "notify_session")
    assert DOCUMENT["security"] == [{BEARER: []}]
    used = {name for op in operations(DOCUMENT).values() for name in schemes(op)}
    assert used | {"streamTicket"} == set(security_schemes)
    stream = DOCUMENT["paths"]["/users/{user_id}/notifications/stream"]["get"]
    assert schemes(stream) == {BEARER, "streamTicket"}


def test_the_documented_scopes_are_the_services():
    assert DOCUMENT["components"]["schemas"]["Scope"]["enum"] == list(SCOPES)
    for (path, method), operation in operations(DOCUMENT).items():
        for scope in operation.get("x-required-scopes", []):
            assert scope in SCOPES, f"{method} {path}: unknown scope {scope!r}"


# -- the service answers as documented ---------------------------------------------------------


@pytest.fixture(scope="module")
def router():
    return FunctionRouter()


@pytest.fixture
def service(settings):
    store = SqliteStore(settings.data_dir / "notifications.db")
    templates = SqliteTemplateStore(settings.data_dir / "templates.db")
    service = NotificationService(
        settings,
        store,
        MemoryQueue(),
        make_channels(settings),
        templates=TemplateCatalog(templates, utcnow),
    )
    set_service(service)
    yield service
    set_service(None)
    templates.close()
    store.close()


TEMPLATE = {
    "key": "kept",
    "default_locale": "en",
    "locales": {"en": {"in_app": {"body": "Hi {{ name }}"}}},
}


@pytest.fixture
def existing(service):
    """Path values that name things the service has: a notification, its user, an API key,
    a template and its version; and a suppression's channel and address."""
    notification = service.submit(
        {"user_id": "reader", "notification_type": "in_app", "message": "hi"}
    )
    key, _ = get_access().create_key("kept", [ADMIN])
    template = service.templates.create(TEMPLATE)
    return {
        "notification_id": notification.id,
        "user_id": "reader",
        "key_id": key.id,
        "name": "app.css",
        "key": template.key,
        "version": str(template.version),
        "channel": "email",
        "address": "bounced@example.com",
        "endpoint_id": "ep_" + "0" * 32,
        "delivery_id": "msg_" + "0" * 32,
    }


UNKNOWN = {
    "notification_id": "no-such-id",
    "user_id": "nobody",
    "key_id": "zzzzzzzzzzzz",
    "key": "no-such-template",
    "version": "7",
    "channel": "sms",
    "address": "+14155550100",
    "endpoint_id": "ep_no_such_webhook",
    "delivery_id": "msg_no_such_delivery",
}
BODIES = {  # a valid request body, so that only the credential is missing
    ("/notifications", "POST"): {
        "user_id": "reader",
        "notification_type": "in_app",
        "message": "m",
    },
    ("/notifications/batch", "POST"): [
        {"user_id": "reader", "notification_type": "in_app", "message": "m"}
    ],
    ("/api-keys", "POST"): {"name": "sneaky", "scopes": [ADMIN]},
    ("/users/{user_id}/token", "POST"): {"expires_in": 60},
    ("/templates", "POST"): {**TEMPLATE, "key": "sneaky"},
    ("/templates/{key}", "PUT"): {k: v for k, v in TEMPLATE.items() if k != "key"},
    ("/templates/{key}/preview", "POST"): {"data": {"name": "Ada"}},
}


def concrete(path: str, values: dict[str, str]) -> str:
    return re.sub(r"\{([^}]+)\}", lambda m: values[m.group(1)], path)


def is_page(path: str, method: str, declared: list[Declared]) -> bool:
    return next(r.sessions for r in declared if (r.path, r.method) == (path, method))


def assert_refused_for_its_credential(reply, path: str, method: str, page: bool) -> None:
    """Refused as the operation documents it: a JSON 401 that asks for a bearer credential;
    for a page, a redirect to the login page (GET) or an HTML 401 (a form post)."""
    where = f"{method} {path}"
    if page and method == "GET":  # to the login page, and back here afterwards
        assert reply.status_code == 303, f"{where}: {reply.status_code}"
        assert reply.headers["Location"].startswith("/login?next="), where
        return
    if page:
        assert reply.status_code == 401 and reply.mimetype == "text/html", where
        assert "401" in DOCUMENT["paths"][path][method.lower()]["responses"], where
        return
    assert reply.status_code == 401, f"{where}: {reply.status_code}"
    assert "401" in DOCUMENT["paths"][path][method.lower()]["responses"], where
    challenge = DOCUMENT["components"]["headers"]["WWW-Authenticate"]["schema"]["const"]
    assert reply.headers.get("WWW-Authenticate") == challenge, where
    assert reply.mimetype == "application/json", where
    ERROR.validate(reply.get_json())


def stored_state(service) -> tuple:
    """What a refused request must leave unchanged: the notifications, the API keys and the
    templates."""
    keys = get_access().list_keys()
    templates = [v.to_dict() for v in service.templates.list()]
    return service.stats()["total"], len(keys), [k.revoked_at for k in keys], templates


@pytest.mark.parametrize(("path", "method"), protected_operations())
def test_without_a_credential_a_protected_operation_is_refused(
    router, service, existing, declared, path, method
):
    client = Client(router)
    before = stored_state(service)
    for values in (existing, UNKNOWN):  # refused before anything is looked up
        url = concrete(path, values)
        reply = client.open(url, method=method, json=BODIES.get((path, method)))
        assert_refused_for_its_credential(reply, path, method, is_page(path, method, declared))
    assert stored_state(service) == before


@pytest.mark.parametrize(("path", "method"), protected_operations())
def test_a_credential_that_is_not_valid_is_refused_as_none(
    router, service, existing, declared, path, method
):
    client = Client(router)
    before = stored_state(service)
    url = concrete(path, existing)
    for authorization in ("Bearer not-a-key-of-ours", f"Basic {ADMIN_KEY}"):
        reply = client.open(
            url,
            method=method,
            json=BODIES.get((path, method)),
            headers={"Authorization": authorization},
        )
        assert_refused_for_its_credential(reply, path, method, is_page(path, method, declared))
    assert stored_state(service) == before


def log_in(client: Client) -> None:
    """The web login, as a browser does it: the session cookie ends up in `client`."""
    form = client.get("/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.get_data(as_text=True)).group(1)
    reply = client.post("/login", data={"csrf_token": csrf, "api_key": ADMIN_KEY, "next": "/"})
    assert reply.status_code == 303 and client.get_cookie("notify_session") is not None


@pytest.mark.parametrize(("path", "method"), protected_operations())
def test_the_session_cookie_counts_where_the_document_says(router, service, existing, path, method):
    client = Client(router)
    log_in(client)
    reply = client.open(concrete(path, existing), method=method, json=BODIES.get((path, method)))
    authenticated = reply.status_code not in (401, 303) or (
        reply.status_code == 303 and not reply.headers["Location"].startswith("/login")
    )
    documented = SESSION in schemes(DOCUMENT["paths"][path][method.lower()])
    assert authenticated is documented, f"{method} {path}: {reply.status_code}"
