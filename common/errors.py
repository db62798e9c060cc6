"""Domain errors raised in `common`; each handler kind maps them to a status in one place."""

from __future__ import annotations

import math


class ServiceError(Exception):
    """Base class: a problem the caller can be told about in one sentence."""

    http_status = 500

    def __init__(self, message: str, fields: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.fields = fields or {}

    def to_dict(self) -> dict:
        body: dict = {"error": self.message}
        if self.fields:
            body["fields"] = self.fields
        return body


class ValidationError(ServiceError):
    """Bad input: names each bad field."""

    http_status = 400


class NotFound(ServiceError):
    http_status = 404


class UnsupportedMediaType(ServiceError):
    """The body is not JSON (a form or plain text, as another site's page could send)."""

    http_status = 415


class Conflict(ServiceError):
    """The request is valid but the notification's state does not allow it."""

    http_status = 409


class Unavailable(ServiceError):
    """A backend (store, broker) could not be reached; the caller may try again."""

    http_status = 503


class StoreUnavailable(Unavailable):
    """The store could not be reached, or did not take a write within STORE_TIMEOUT.

    Each store adapter raises this for its own driver's outage errors, so that nothing above
    the adapters needs to know sqlite3's or pymongo's exception types."""


class IdempotencyConflict(ServiceError):
    """An Idempotency-Key came back with a different request: 422, as Stripe and the IETF
    Idempotency-Key draft answer, never the first notification passed off as this one."""

    http_status = 422


class Unauthorized(ServiceError):
    """No credential, or one that is not valid: 401 with `WWW-Authenticate: Bearer`."""

    http_status = 401


class Forbidden(ServiceError):
    """A valid credential without the scope, or another user's data: 403."""

    http_status = 403


class TooManyRequests(ServiceError):
    """A limit was reached: 429, with Retry-After and, for rate limits, the RateLimit headers."""

    http_status = 429

    def __init__(self, message: str, retry_after: float, headers: dict[str, str] | None = None):
        """`retry_after`: seconds until trying again may pass (infinite: waiting never helps,
        and no Retry-After is sent)."""
        super().__init__(message)
        self.retry_after = retry_after
        self.headers = dict(headers or {})
        if math.isfinite(retry_after):
            self.headers["Retry-After"] = str(max(1, math.ceil(retry_after)))


class ConfigError(Exception):
    """The environment is invalid; `problems` names every bad setting."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


class DuplicateId(Exception):
    """A store already holds a notification with this id (an idempotent resubmission)."""
