"""The limit rules as pure functions of (state, now) -> (new state, answer): no store, no clock.

Each has the shape of a LimitStore change, so the store runs it atomically; tests run it with
plain numbers. States are small JSON dicts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import phonenumbers

# Float sums of large epoch seconds drift by ~1e-7; without slack an exactly-due token could
# be refused, or an exactly-full bucket read as one token short.
EPSILON = 1e-6
RECIPIENT_WINDOW = 3600.0
FAILURE_BURST = 10
FAILURE_INTERVAL = 6.0
# However many failures a flood records at once, the wait it earns stays within one more burst.
FAILURE_DEBT = 2 * FAILURE_BURST * FAILURE_INTERVAL


@dataclass(frozen=True)
class RateDecision:
    """What the caller answers and what the IETF RateLimit headers need (limit 0: no limit)."""

    allowed: bool
    limit: int  # RateLimit-Limit: the burst
    remaining: int  # RateLimit-Remaining: whole tokens left
    reset_seconds: float  # until the bucket is full again
    retry_after: float  # until this request would fit (0 when allowed, inf when it never will)
    reason: str | None = None

    @property
    def reset_whole(self) -> int:
        """RateLimit-Reset: whole seconds, rounded up."""
        return _whole_seconds(self.reset_seconds)

    @property
    def retry_after_whole(self) -> int | None:
        """Retry-After: whole seconds rounded up, when refused and waiting can help."""
        if self.allowed or not math.isfinite(self.retry_after):
            return None
        return max(1, _whole_seconds(self.retry_after))


NO_LIMIT = RateDecision(allowed=True, limit=0, remaining=0, reset_seconds=0.0, retry_after=0.0)


def _whole_seconds(seconds: float) -> int:
    return max(0, math.ceil(round(seconds, 6)))


def _tat(state: dict | None, now: float) -> float:
    """The theoretical arrival time: when the bucket is full again; never in the past."""
    return max(state["tat"], now) if state else now


def _tokens(tat: float, now: float, interval: float, burst: int) -> int:
    return max(0, math.floor(burst - (tat - now) / interval + EPSILON))


def burst_for(rate: float) -> int:
    """Twice the rate per second, and at least one request."""
    return max(1, math.floor(2 * rate + EPSILON))


def take_tokens(
    state: dict | None, now: float, *, rate: float, cost: float
) -> tuple[dict | None, RateDecision]:
    """GCRA token bucket: `rate` tokens per second, holding burst_for(rate); takes `cost`."""
    burst = burst_for(rate)
    interval = 1.0 / rate
    tat = _tat(state, now)
    if cost > burst:
        reason = (
            f"this request costs {cost:g} tokens but the limit allows at most {burst} at once: "
            f"send it in parts of at most {burst}"
        )
        return state, RateDecision(
            False, burst, _tokens(tat, now, interval, burst), tat - now, math.inf, reason
        )
    new_tat = tat + cost * interval
    fits_at = new_tat - burst * interval
    if fits_at > now + EPSILON:
        decision = RateDecision(
            False,
            burst,
            _tokens(tat, now, interval, burst),
            tat - now,
            fits_at - now,
            "rate limit exceeded",
        )
        return state, decision
    decision = RateDecision(True, burst, _tokens(new_tat, now, interval, burst), new_tat - now, 0.0)
    return {"tat": new_tat}, decision


def take_recipient(state: dict | None, now: float, *, cap: int) -> tuple[dict | None, bool]:
    """One send to a recipient, if fewer than `cap` fell in the last hour (exact: the state
    keeps the recent send times themselves, at most `cap` of them)."""
    sent = [t for t in (state or {}).get("sent", []) if t > now - RECIPIENT_WINDOW]
    if len(sent) >= cap:
        return state, False
    return {"sent": [*sent, now]}, True


def record_failure(state: dict | None, now: float) -> tuple[dict, None]:
    """One failed credential from a client: GCRA of FAILURE_BURST, one more per interval."""
    tat = min(_tat(state, now) + FAILURE_INTERVAL, now + FAILURE_DEBT)
    return {"tat": tat}, None


def failures_blocked(state: dict | None, now: float) -> tuple[dict | None, float | None]:
    """Seconds this client must wait before its credentials are checked again, or None."""
    wait = _tat(state, now) + FAILURE_INTERVAL - FAILURE_BURST * FAILURE_INTERVAL - now
    return state, (wait if wait > EPSILON else None)


def calling_code(phone_e164: str) -> str | None:
    """The country calling code ("1", "44", ...), or None for a number that has none."""
    try:
        return str(phonenumbers.parse(phone_e164, None).country_code)
    except phonenumbers.NumberParseException:
        return None


def sms_country_allowed(phone_e164: str, allowed_calling_codes: tuple[str, ...]) -> bool:
    """Whether SMS may go to this number; an empty tuple allows every country.

    Compares the number's real calling code (calling codes are prefix-free, so "+44..." is
    44 and never 4), not a text prefix; "1" covers every NANP country (US, Canada, Caribbean).
    """
    if not allowed_calling_codes:
        return True
    allowed = {code.strip().lstrip("+") for code in allowed_calling_codes}
    return calling_code(phone_e164) in allowed
