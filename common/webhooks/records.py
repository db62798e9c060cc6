"""The records of outbound webhooks: an endpoint (with its secrets) and one delivery of one
event to it, plus the API's view of each (never a secret) and the delivery log's cursor."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import UTC, datetime

from common.errors import ValidationError

# Delivery statuses. SENDING is a claim (lease_until, claim_token): the API shows it as pending.
PENDING = "pending"
SENDING = "sending"
SUCCEEDED = "succeeded"
FAILED = "failed"


@dataclass(frozen=True)
class Endpoint:
    id: str
    url: str
    events: tuple[str, ...]
    description: str
    secret: str  # "whsec_...": signs every attempt
    created_at: datetime
    # After a rotation, the previous secret signs too until this time (None: no grace).
    previous_secret: str | None = None
    previous_secret_until: datetime | None = None
    consecutive_failures: int = 0
    disabled_at: datetime | None = None
    disabled_reason: str | None = None

    def signing_secrets(self, now: datetime) -> list[str]:
        """The secrets that sign an attempt made now: the current one first."""
        secrets = [self.secret]
        if self.previous_secret and self.previous_secret_until and now < self.previous_secret_until:
            secrets.append(self.previous_secret)
        return secrets

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "url": self.url,
            "events": list(self.events),
            "description": self.description,
            "enabled": self.disabled_at is None,
            "created_at": iso(self.created_at),
            "consecutive_failures": self.consecutive_failures,
            "disabled_at": iso(self.disabled_at),
            "disabled_reason": self.disabled_reason,
            "previous_secret_expires_at": iso(self.previous_secret_until),
        }


@dataclass(frozen=True)
class Delivery:
    id: str  # the webhook-id header: the same on every attempt and replay
    endpoint_id: str
    event_type: str
    payload: str  # the exact body signed and sent
    created_at: datetime
    next_attempt_at: datetime | None
    status: str = PENDING
    attempts: int = 0
    last_status_code: int | None = None
    last_error: str | None = None
    delivered_at: datetime | None = None
    lease_until: datetime | None = None
    claim_token: str | None = None

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "endpoint_id": self.endpoint_id,
            "event_type": self.event_type,
            "status": PENDING if self.status == SENDING else self.status,
            "attempts": self.attempts,
            "last_status_code": self.last_status_code,
            "last_error": self.last_error,
            "created_at": iso(self.created_at),
            "next_attempt_at": iso(self.next_attempt_at),
            "delivered_at": iso(self.delivered_at),
        }


@dataclass(frozen=True)
class AttemptOutcome:
    """What one claimed attempt ends in: the delivery's next status and what to show of it."""

    status: str  # PENDING (try again at next_attempt_at), SUCCEEDED or FAILED
    attempts: int
    last_status_code: int | None = None
    last_error: str | None = None
    next_attempt_at: datetime | None = None
    delivered_at: datetime | None = None


def iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def millis(value: datetime) -> int:
    return round(value.timestamp() * 1000)


def from_millis(value: int | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value / 1000, tz=UTC)


@dataclass(frozen=True)
class Position:
    """Where a page of the delivery log ended, newest first: (created_at, id) descending."""

    created_at: int  # millis
    id: str

    @classmethod
    def after(cls, item: Delivery) -> Position:
        return cls(millis(item.created_at), item.id)

    def encode(self) -> str:
        raw = json.dumps([self.created_at, self.id]).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Position:
        try:
            padded = text + "=" * (-len(text) % 4)
            created, delivery_id = json.loads(base64.urlsafe_b64decode(padded))
            if not (isinstance(created, int) and isinstance(delivery_id, str)):
                raise TypeError("bad cursor fields")
            return cls(created, delivery_id)
        except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
            raise ValidationError(
                "invalid cursor", {"cursor": "is not a cursor this API gave out"}
            ) from None
