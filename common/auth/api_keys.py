"""API keys: a random secret with a recognisable prefix, kept only as a hash.

A key reads `nsk_<id>_<secret>`: the prefix lets secret scanners and people recognise it, the
id names it in listings and logs, and the secret (32 random bytes) is what proves it. The store
keeps the SHA-256 of the whole key: the secret is random and long, so a fast hash suffices (a
slow password hash protects guessable secrets, which these are not).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from common.auth.principal import API_KEY, Principal, scope_problem
from common.errors import ValidationError

PREFIX = "nsk_"
KEY_PATTERN = re.compile(r"^nsk_([a-z0-9]{12})_([A-Za-z0-9_-]{43})$")
# Up to 99999 s or min, 9999 h, 999 d: within MAX_EXPIRY whatever the unit.
DURATION_PATTERN = re.compile(r"^([0-9]{1,5})([sm])$|^([0-9]{1,4})(h)$|^([0-9]{1,3})(d)$")
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_EXPIRY = timedelta(days=3650)
MAX_NAME_LENGTH = 100
ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def parse_key(text: str) -> str | None:
    """The id of a well-formed key, or None: anything else is not one of ours."""
    match = KEY_PATTERN.match(text)
    return match.group(1) if match else None


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    scopes: tuple[str, ...]
    hash: str = field(repr=False)
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None
    send_rate: float | None = None  # its own SEND_RATE_LIMIT; None: the setting's

    def usable(self, now: datetime) -> str | None:
        """Why this key cannot be used now, or None."""
        if self.revoked_at is not None:
            return "the API key was revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "the API key has expired"
        return None

    def matches(self, key: str) -> bool:
        return hmac.compare_digest(self.hash, key_hash(key))

    def principal(self) -> Principal:
        return Principal(API_KEY, self.id, frozenset(self.scopes), send_rate=self.send_rate)

    def to_dict(self) -> dict[str, Any]:
        """What listings show: never the hash, never the secret."""
        return {
            "id": self.id,
            "name": self.name,
            "scopes": list(self.scopes),
            "created_at": iso_time(self.created_at),
            "expires_at": iso_time(self.expires_at),
            "revoked_at": iso_time(self.revoked_at),
            "last_used_at": iso_time(self.last_used_at),
            "rate_limit": self.send_rate,
        }

    def with_changes(self, **changes: Any) -> ApiKey:
        return replace(self, **changes)


def iso_time(value: datetime | None) -> str | None:
    """As the API writes every time: ISO 8601 in UTC, with Z."""
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def parse_duration(text: Any, name: str = "expires_in") -> timedelta:
    """`90d`, `12h`, `30m`, `45s`, or a number of seconds: a 400 naming the field otherwise."""
    if isinstance(text, bool):
        text = None
    if isinstance(text, int | float) and text > 0:
        seconds = float(text)
    elif isinstance(text, str) and DURATION_PATTERN.match(text.strip()):
        amount, unit = [g for g in DURATION_PATTERN.match(text.strip()).groups() if g]
        seconds = int(amount) * DURATION_UNITS[unit]
    else:
        raise ValidationError(
            f"invalid {name}",
            {name: "must be a duration such as 90d, 12h, 30m or 45s (at most 999d)"},
        )
    if not 0 < seconds <= MAX_EXPIRY.total_seconds():
        raise ValidationError(f"invalid {name}", {name: "must be from 1 s to 3650 days"})
    return timedelta(seconds=seconds)


def new_key(
    name: Any,
    scopes: Any,
    now: datetime,
    expires_in: Any = None,
    rate_limit: Any = None,
) -> tuple[ApiKey, str]:
    """A new key (to store) and its secret text (to show once). Raises ValidationError."""
    problems: dict[str, str] = {}
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_LENGTH:
        problems["name"] = f"must be a non-empty string of at most {MAX_NAME_LENGTH} characters"
    elif any(ord(c) < 32 or ord(c) == 127 for c in name):
        problems["name"] = "must not contain control characters"
    problem = scope_problem(scopes)
    if problem:
        problems["scopes"] = problem
    expires_at = None
    if expires_in is not None:
        try:
            expires_at = now + parse_duration(expires_in)
        except ValidationError as error:
            problems.update(error.fields)
    send_rate = None
    if rate_limit is not None:
        if isinstance(rate_limit, bool) or not isinstance(rate_limit, int | float):
            problems["rate_limit"] = "must be a number of notifications per second (0 = none)"
        elif not 0 <= rate_limit <= 1_000_000:
            problems["rate_limit"] = "must be from 0 to 1000000"
        else:
            send_rate = float(rate_limit)
    if problems:
        raise ValidationError("invalid API key request", problems)
    key_id = "".join(secrets.choice(ID_ALPHABET) for _ in range(12))
    secret = f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    key = ApiKey(
        id=key_id,
        name=name.strip(),
        scopes=tuple(dict.fromkeys(scopes)),
        hash=key_hash(secret),
        created_at=now,
        expires_at=expires_at,
        send_rate=send_rate,
    )
    return key, secret
