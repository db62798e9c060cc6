"""The in-app inbox's rules: what a send may carry for it (`title`, `action_url`, `data`), the
state actions (seen, read, archived: timestamps) and the filters of a user's listing.

Pure code, no I/O: the stores apply ACTIONS through their own atomic updates.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from common.errors import ValidationError
from common.send_options import category_problem, parse_send_at

INBOX_FIELDS = ("title", "action_url", "data")

MAX_TITLE_LENGTH = 200
MAX_ACTION_URL_LENGTH = 2000
MAX_DATA_BYTES = 4096
MAX_DATA_DEPTH = 5
# C0 and C1 control characters (a line break in a link is how headers and logs get forged).
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
URL_PATTERN = re.compile(r"^https?://[^/?#\s]+", re.IGNORECASE)

# Each action, as the timestamps it sets (to now, unless already set: idempotent, the first
# time is kept) and those it clears. Reading something also makes it seen.
SET, CLEAR = "set", "clear"
ACTIONS: dict[str, dict[str, str]] = {
    "seen": {"seen_at": SET},
    "read": {"read_at": SET, "seen_at": SET},
    "unread": {"read_at": CLEAR},
    "archive": {"archived_at": SET},
    "unarchive": {"archived_at": CLEAR},
}
# The bulk actions: the field a notification still lacks when the action changes it.
BULK_ACTIONS = {"read": "read_at", "seen": "seen_at"}
ARCHIVED_CHOICES = ("false", "true", "all")
BULK_FIELDS = ("category", "before", "type")


def parse_inbox_fields(payload: Mapping[str, Any], errors: dict[str, str]) -> dict[str, Any]:
    """`title`, `action_url` and `data` present in a send, checked; each bad one is named."""
    options: dict[str, Any] = {}
    title = payload.get("title")
    if title is not None:
        if not isinstance(title, str) or not _encodable(title):
            errors["title"] = "must be text"
        elif len(title) > MAX_TITLE_LENGTH or CONTROL.search(title):
            errors["title"] = f"must be one line of at most {MAX_TITLE_LENGTH} characters"
        elif title.strip():
            options["title"] = title.strip()
    url = payload.get("action_url")
    if url is not None:
        problem = action_url_problem(url)
        if problem:
            errors["action_url"] = problem
        elif url.strip():
            options["action_url"] = url.strip()
    data = payload.get("data")
    if data is not None:
        problem = data_problem(data)
        if problem:
            errors["data"] = problem
        else:
            options["data"] = data
    return options


def action_url_problem(url: Any) -> str | None:
    rule = (
        f"must be an http(s) URL or a path starting with / (at most {MAX_ACTION_URL_LENGTH} "
        "characters, no control characters)"
    )
    if not isinstance(url, str) or not _encodable(url):
        return rule
    text = url.strip()
    if len(url) > MAX_ACTION_URL_LENGTH or CONTROL.search(url):
        return rule
    if "javascript:" in text.lower():
        return "must not be a javascript: link"
    # "//host" and "/\host" are other sites to a browser, not paths of this one.
    is_path = text.startswith("/") and not text.startswith(("//", "/\\"))
    if text and not is_path and not URL_PATTERN.match(text):
        return rule
    return None


def data_problem(data: Any) -> str | None:
    if not isinstance(data, dict):
        return "must be a JSON object"
    depth, huge = _shape(data)
    if depth > MAX_DATA_DEPTH:
        return f"must be nested at most {MAX_DATA_DEPTH} levels deep"
    if huge:  # BSON (MongoDB) keeps 64-bit integers at most
        return "must hold whole numbers between -2**63 and 2**63 - 1 only"
    try:
        size = len(json.dumps(data, ensure_ascii=False, allow_nan=False).encode("utf-8"))
    except (ValueError, UnicodeEncodeError):  # NaN, or a lone surrogate
        return "must be plain JSON (no NaN, no unpaired surrogates)"
    if size > MAX_DATA_BYTES:
        return f"must be at most {MAX_DATA_BYTES} bytes as JSON"
    if "\x00" in json.dumps(data):  # SQLite text and BSON keys stop at a NUL
        return "must not contain NUL characters"
    return None


def _shape(value: Any) -> tuple[int, bool]:
    """(levels of objects and arrays, whether an integer is past 64 bits): an iterative walk
    (the HTTP layer caps JSON depth too)."""
    deepest, huge, stack = 0, False, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, level)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, level + 1) for child in children)
        elif isinstance(item, int) and not -(2**63) <= item < 2**63:
            huge = True
    return deepest, huge


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_bulk(payload: Any) -> dict[str, Any]:
    """A read-all / seen-all body (none, or `{"category", "before", "type"}`) as the store's
    keyword arguments: category, before, notification_type."""
    if payload is None:
        return {}
    if not isinstance(payload, Mapping):
        raise ValidationError("the request body must be a JSON object")
    errors = {str(k)[:64]: "is not a known field" for k in set(payload) - set(BULK_FIELDS)}
    chosen: dict[str, Any] = {}
    category = payload.get("category")
    if category is not None:
        if problem := category_problem(category):
            errors["category"] = problem
        else:
            chosen["category"] = category.lower()
    before = payload.get("before")
    if before is not None:
        try:
            chosen["before"] = parse_send_at(before)
        except ValueError as error:
            errors["before"] = str(error)
        except OverflowError:  # year 1 or 9999 moved past the calendar by its offset
            errors["before"] = "is outside the range of dates this service keeps"
    kind = payload.get("type")
    if kind is not None:
        from common.model import normalise_type  # model imports this module

        chosen["notification_type"] = normalise_type(kind)
        if chosen["notification_type"] is None:
            errors["type"] = "must be one of email, sms, in_app"
    if errors:
        raise ValidationError("invalid request", errors)
    return chosen


def parse_list_filters(
    read: str | None, archived: str | None, category: str | None, errors: dict[str, str]
) -> dict[str, Any]:
    """The inbox filters of GET /users/<id>/notifications; each bad one is named."""
    filters: dict[str, Any] = {"read": None, "archived": "false", "category": None}
    if read not in (None, ""):
        if read.lower() not in ("true", "false"):
            errors["read"] = "must be true or false"
        else:
            filters["read"] = read.lower() == "true"
    if archived not in (None, ""):
        if archived.lower() not in ARCHIVED_CHOICES:
            errors["archived"] = f"must be one of {', '.join(ARCHIVED_CHOICES)}"
        else:
            filters["archived"] = archived.lower()
    if category not in (None, ""):
        if problem := category_problem(category):
            errors["category"] = problem
        else:
            filters["category"] = category.lower()
    return filters
