"""The admin credential the tests send, and werkzeug/Flask test clients that send it.

tests/conftest.py puts ADMIN_KEY in the environment as ADMIN_API_KEY (and in `settings_env`),
and tests/support/runner.py gives it to every runner it starts, so a test that sends
ADMIN_HEADERS is the admin:

    client = AuthClient(router)                      # every request: Authorization: Bearer ...
    client.get("/stats", headers={"Authorization": "Bearer wrong"})  # the caller's own wins
    nobody = AuthClient(router, credentials=None)    # sends no Authorization at all
    nobody = anonymous(client)                       # the same, for the same application
    web = auth_test_client(flask_app)                # as `flask_app.test_client()`, with the key
    requests.get(url, headers=ADMIN_HEADERS)         # or: with admin_session() as http: ...
"""

from __future__ import annotations

from copy import copy
from typing import TYPE_CHECKING, Any

from flask.testing import FlaskClient
from werkzeug.datastructures import Headers
from werkzeug.test import Client, EnvironBuilder
from werkzeug.wrappers import Request

if TYPE_CHECKING:
    import flask
    import requests

ADMIN_KEY = "test-admin-key-5f0c1d2e9a8b47c6"
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN_KEY}"}


class _SendsCredential:
    """Adds `Authorization: Bearer <credentials>` to each request that has no Authorization of
    its own; `credentials=None` sends none."""

    def __init__(self, *args: Any, credentials: str | None = ADMIN_KEY, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.credentials = credentials

    def open(self, *args: Any, **kwargs: Any):
        if self.credentials is not None:
            args, kwargs = self._with_credential(f"Bearer {self.credentials}", args, kwargs)
        return super().open(*args, **kwargs)

    @staticmethod
    def _with_credential(value: str, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        """The same request with `Authorization: value`, unless it carries one already."""
        first = args[0] if args else None
        if isinstance(first, EnvironBuilder):  # e.g. werkzeug's own, following a redirect
            first.headers.setdefault("Authorization", value)
        elif isinstance(first, dict):  # a WSGI environ
            args = ({"HTTP_AUTHORIZATION": value, **first}, *args[1:])
        elif isinstance(first, Request):
            request = copy(first)
            request.environ = {"HTTP_AUTHORIZATION": value, **first.environ}
            args = (request, *args[1:])
        else:  # the arguments of an EnvironBuilder: path, method, headers, json, data, ...
            headers = Headers(kwargs.get("headers") or ())
            headers.setdefault("Authorization", value)
            kwargs = {**kwargs, "headers": headers}
        return args, kwargs


class AuthClient(_SendsCredential, Client):
    """werkzeug.test.Client that sends the admin credential (or `credentials`, or none)."""


class AuthFlaskClient(_SendsCredential, FlaskClient):
    """Flask's test client (what `app.test_client()` gives) that sends the admin credential."""


def auth_test_client(app: flask.Flask, credentials: str | None = ADMIN_KEY) -> AuthFlaskClient:
    """`app.test_client()`, sending `credentials` (default: the admin key; None: nothing)."""
    return AuthFlaskClient(app, app.response_class, use_cookies=True, credentials=credentials)


def anonymous(client: Client) -> Client:
    """A client for the same application that sends no credential (and has its own cookies)."""
    kind = AuthFlaskClient if isinstance(client, FlaskClient) else AuthClient
    return kind(client.application, client.response_wrapper, credentials=None)


def admin_session() -> requests.Session:
    """A requests.Session that sends ADMIN_HEADERS with every request (close it when done)."""
    import requests

    session = requests.Session()
    session.headers.update(ADMIN_HEADERS)
    return session
