"""The limits the service applies, each counted in a LimitStore so they hold across processes.

Keys carry a SHA-256 of the credential, address or client rather than the value: addresses
and client IPs are personal data, and a credential id may be close to a secret.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from functools import partial

from common.limits.rules import (
    FAILURE_DEBT,
    FAILURE_INTERVAL,
    NO_LIMIT,
    RECIPIENT_WINDOW,
    RateDecision,
    burst_for,
    failures_blocked,
    record_failure,
    take_recipient,
    take_tokens,
)
from common.limits.store import LimitStore

# Expiry only tidies (the rules ignore stale state), so it errs long: a second on top covers
# the gap between the limiter's clock and the store's.
EXPIRY_SLACK = 1.0
PHONE_SEPARATORS = re.compile(r"[\s().\-]")


def _key(kind: str, value: str) -> str:
    return f"{kind}:{hashlib.sha256(value.encode()).hexdigest()}"


def recipient_key(channel: str, address: str) -> str:
    address = address.strip()
    if channel == "email":
        address = address.lower()  # the same mailbox however the caller spelled it
    elif channel == "sms":
        address = PHONE_SEPARATORS.sub("", address)
    return _key(f"recipient:{channel}", address)


class Limiter:
    def __init__(self, store: LimitStore, clock: Callable[[], float] = time.time):
        self.store = store
        self._clock = clock

    def _timed(self, rule: Callable) -> Callable:
        """The rule on this limiter's clock, read inside the store's atomic step."""
        return lambda state, _store_now: rule(state, self._clock())

    def take_send(self, credential_id: str, cost: int, rate: float) -> RateDecision:
        """Takes `cost` tokens (a batch: its item count) from the credential's bucket of
        2 * rate; rate 0 turns the limit off (limit 0: no headers to send)."""
        if rate <= 0:
            return NO_LIMIT
        if cost < 0:
            raise ValueError("cost must not be negative")
        return self.store.update(
            _key("send", credential_id),
            self._timed(partial(take_tokens, rate=rate, cost=cost)),
            expires_in=burst_for(rate) / rate + EXPIRY_SLACK,
        )

    def take_recipients(self, items: list[tuple[str, str]], caps: dict[str, int]) -> list[bool]:
        """One send to each (channel, address), within that channel's cap per hour (0 or
        absent: no cap, and no store access). A recipient listed twice counts twice."""
        allowed = [True] * len(items)
        positions, updates = [], []
        for position, (channel, address) in enumerate(items):
            cap = caps.get(channel, 0)
            if cap > 0:
                positions.append(position)
                rule = self._timed(partial(take_recipient, cap=cap))
                updates.append(
                    (recipient_key(channel, address), rule, RECIPIENT_WINDOW + EXPIRY_SLACK)
                )
        if updates:
            for position, ok in zip(positions, self.store.update_many(updates), strict=True):
                allowed[position] = ok
        return allowed

    def client_blocked(self, client: str) -> float | None:
        """Seconds this client must wait after too many failed credentials, or None."""
        return self.store.update(
            _key("failures", client),
            self._timed(failures_blocked),
            expires_in=FAILURE_DEBT + FAILURE_INTERVAL + EXPIRY_SLACK,
        )

    def record_failed_credential(self, client: str) -> None:
        self.store.update(
            _key("failures", client),
            self._timed(record_failure),
            expires_in=FAILURE_DEBT + FAILURE_INTERVAL + EXPIRY_SLACK,
        )
