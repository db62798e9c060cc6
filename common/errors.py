"""Domain errors raised in `common`; each handler kind maps them to a status in one place."""

from __future__ import annotations


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


class ConfigError(Exception):
    """The environment is invalid; `problems` names every bad setting."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


class DuplicateId(Exception):
    """A store already holds a notification with this id (an idempotent resubmission)."""
