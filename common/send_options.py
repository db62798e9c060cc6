"""The options a send may carry beside its content: `category`, `send_at` and `cancel_key`.

Pure parsing, no clock: whether a `send_at` lies too far ahead is the intake's rule
(MAX_SCHEDULE_DAYS), since only it knows what time it is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

SEND_OPTION_FIELDS = ("category", "send_at", "cancel_key")

CATEGORY_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,63}$")
MAX_CANCEL_KEY = 200
# RFC 3339: a date, "T" (or a space), a time, and an offset that is Z or +hh:mm.
RFC3339_PATTERN = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+\-]\d{2}:\d{2})$"
)
SEND_AT_EXAMPLE = "2026-12-24T09:00:00+01:00"


def category_problem(value: Any) -> str | None:
    if not isinstance(value, str) or not CATEGORY_PATTERN.fullmatch(value):
        return "must be 1 to 64 letters, digits or . _ : - (starting with a letter or digit)"
    return None


def parse_send_at(value: Any) -> datetime:
    """An RFC 3339 time with its offset, as an aware UTC datetime to the millisecond."""
    if not isinstance(value, str) or not RFC3339_PATTERN.fullmatch(value.strip()):
        raise ValueError(f"must be an RFC 3339 time with an offset, such as {SEND_AT_EXAMPLE}")
    text = value.strip().upper().replace("Z", "+00:00")
    digits = re.search(r"\.(\d+)", text)
    if digits and len(digits.group(1)) > 6:  # Python reads at most microseconds
        text = text.replace(digits.group(0), "." + digits.group(1)[:6])
    try:
        moment = datetime.fromisoformat(text).astimezone(UTC)
    except ValueError:
        raise ValueError(f"is not a real date and time (for example {SEND_AT_EXAMPLE})") from None
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def parse_send_options(payload: Mapping[str, Any], errors: dict[str, str]) -> dict[str, Any]:
    """The options present in `payload`, parsed; each bad one is named in `errors`."""
    options: dict[str, Any] = {}
    category = payload.get("category")
    if category is not None:
        problem = category_problem(category)
        if problem:
            errors["category"] = problem
        else:
            options["category"] = category.lower()  # matched as TRANSACTIONAL_CATEGORIES are
    send_at = payload.get("send_at")
    if send_at is not None:
        try:
            options["send_at"] = parse_send_at(send_at)
        except ValueError as error:
            errors["send_at"] = str(error)
    cancel_key = payload.get("cancel_key")
    if cancel_key is not None:
        if (
            not isinstance(cancel_key, str)
            or not cancel_key.strip()
            or len(cancel_key) > MAX_CANCEL_KEY
            or re.search(r"[\x00-\x1f\x7f]", cancel_key)
            or not _encodable(cancel_key)
        ):
            errors["cancel_key"] = f"must be text of 1 to {MAX_CANCEL_KEY} characters, one line"
        else:
            options["cancel_key"] = cancel_key
    return options


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
