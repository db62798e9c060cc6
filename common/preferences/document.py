"""The preferences document: its validation and normal form, and the defaults of a user who
never set any. Pure: no clock, no I/O (the time zone is checked against the tz database)."""

from __future__ import annotations

import copy
import re
import zoneinfo
from typing import Any

from common.errors import ValidationError
from common.model import TYPES

CHANNELS = TYPES  # email, sms, in_app
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # index = date.weekday()
FIELDS = ("channels", "categories", "timezone", "quiet_hours")
WINDOW_FIELDS = ("start", "end", "days")
MAX_CATEGORIES = 100
MAX_WINDOWS = 14
MAX_TIMEZONE_LENGTH = 64
DEFAULT_TIMEZONE = "UTC"

CATEGORY_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._:\-]{0,63}$")
CLOCK_PATTERN = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")

DEFAULT_PREFERENCES: dict = {
    "channels": {channel: True for channel in CHANNELS},
    "categories": {},
    "timezone": DEFAULT_TIMEZONE,
    "quiet_hours": None,
}


def default_preferences() -> dict:
    """A fresh copy of DEFAULT_PREFERENCES, safe to change."""
    return copy.deepcopy(DEFAULT_PREFERENCES)


def validate_preferences(document: Any) -> dict:
    """The normal form of a PUT body, or ValidationError naming every problem by dotted path.

    Normal form: every channel present (missing ones on), category names lowercased, the time
    zone ("UTC" if absent) and quiet_hours None or a list of windows {"start", "end"[, "days"]}.
    """
    errors: dict[str, str] = {}
    if not isinstance(document, dict):
        raise ValidationError("invalid preferences", {"body": "must be a JSON object"})
    for key in document:
        if key not in FIELDS:
            errors[str(key)] = f"is not a known field: one of {', '.join(FIELDS)}"
    normal = {
        "channels": _channels(document.get("channels"), "channels", errors, fill=True),
        "categories": _categories(document.get("categories"), errors),
        "timezone": _timezone(document.get("timezone"), errors),
        "quiet_hours": _quiet_hours(document.get("quiet_hours"), errors),
    }
    if errors:
        raise ValidationError("invalid preferences", errors)
    return normal


def preferences_to_json(document: dict) -> dict:
    """The document as the API shows it: one quiet-hours window as an object, several as a
    list (the two shapes a PUT accepts), so that a GET gives back what was PUT."""
    shown = copy.deepcopy(document)
    windows = shown.get("quiet_hours")
    if isinstance(windows, list) and len(windows) == 1:
        shown["quiet_hours"] = windows[0]
    return shown


def category_name(value: Any) -> str | None:
    """The category's normal (lowercase) name, or None if it is not a valid one."""
    if not isinstance(value, str):
        return None
    name = value.lower()
    return name if CATEGORY_PATTERN.fullmatch(name) else None


def _channels(value: Any, path: str, errors: dict[str, str], *, fill: bool) -> dict[str, bool]:
    if value is None:
        value = {}
    if not isinstance(value, dict):
        errors[path] = "must be an object of channel: true/false"
        return {}
    result = {channel: True for channel in CHANNELS} if fill else {}
    for channel, enabled in value.items():
        if channel not in CHANNELS:
            errors[f"{path}.{channel}"] = f"is not a channel: one of {', '.join(CHANNELS)}"
        elif not isinstance(enabled, bool):
            errors[f"{path}.{channel}"] = "must be true or false"
        else:
            result[channel] = enabled
    return result


def _categories(value: Any, errors: dict[str, str]) -> dict[str, dict[str, bool]]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        errors["categories"] = "must be an object of category: {channel: true/false}"
        return {}
    if len(value) > MAX_CATEGORIES:
        errors["categories"] = f"may name at most {MAX_CATEGORIES} categories"
        return {}
    result: dict[str, dict[str, bool]] = {}
    for raw, overrides in value.items():
        path = f"categories.{raw}"
        name = category_name(raw)
        if name is None:
            errors[path] = (
                "is not a category name: 1 to 64 letters, digits or . _ : - "
                "(starting with a letter or digit)"
            )
        elif name in result:
            # "Marketing" and "marketing" are one category: which one wins would be a guess.
            errors[path] = f"names the category {name} a second time"
        else:
            result[name] = _channels(overrides, path, errors, fill=False)
    return result


def _timezone(value: Any, errors: dict[str, str]) -> str:
    if value is None:
        return DEFAULT_TIMEZONE
    problem = timezone_problem(value)
    if problem:
        errors["timezone"] = problem
        return DEFAULT_TIMEZONE
    return value


def timezone_problem(value: Any) -> str | None:
    """Why `value` is not an IANA time zone name, or None."""
    if not isinstance(value, str) or not value or len(value) > MAX_TIMEZONE_LENGTH:
        return "must be an IANA time zone name such as Europe/Paris"
    # ZoneInfo reads a file named after the key: keep the name inside the tz database.
    if ".." in value or value.startswith(("/", "\\")) or "\\" in value or "\x00" in value:
        return "must be an IANA time zone name such as Europe/Paris"
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return f"is not a known IANA time zone name (such as Europe/Paris): {value}"
    return None


def _quiet_hours(value: Any, errors: dict[str, str]) -> list[dict] | None:
    if value is None:
        return None
    if isinstance(value, dict):
        window = _window(value, "quiet_hours", errors)
        return [window] if window else None
    if not isinstance(value, list):
        errors["quiet_hours"] = "must be a window {start, end, days} or a list of windows"
        return None
    if len(value) > MAX_WINDOWS:
        errors["quiet_hours"] = f"may hold at most {MAX_WINDOWS} windows"
        return None
    windows = [_window(item, f"quiet_hours.{i}", errors) for i, item in enumerate(value)]
    kept = [window for window in windows if window]
    return kept or None


def _window(value: Any, path: str, errors: dict[str, str]) -> dict | None:
    if not isinstance(value, dict):
        errors[path] = 'must be an object such as {"start": "22:00", "end": "07:00"}'
        return None
    before = len(errors)
    for key in value:
        if key not in WINDOW_FIELDS:
            errors[f"{path}.{key}"] = f"is not a known field: one of {', '.join(WINDOW_FIELDS)}"
    window: dict[str, Any] = {}
    for key in ("start", "end"):
        clock = value.get(key)
        if not isinstance(clock, str) or not CLOCK_PATTERN.fullmatch(clock):
            errors[f"{path}.{key}"] = "must be a time HH:MM (00:00 to 23:59)"
        else:
            window[key] = clock
    if "start" in window and window.get("start") == window.get("end"):
        errors[f"{path}.end"] = "must differ from start"
    if "days" in value:
        days = _days(value["days"], f"{path}.days", errors)
        if days is not None:
            window["days"] = days
    return window if len(errors) == before else None


def _days(value: Any, path: str, errors: dict[str, str]) -> list[str] | None:
    if not isinstance(value, list) or not value or len(value) > len(WEEKDAYS):
        errors[path] = f"must be a list of 1 to 7 days: {', '.join(WEEKDAYS)}"
        return None
    named = set()
    for day in value:
        if not isinstance(day, str) or day.lower() not in WEEKDAYS:
            errors[path] = f"must be a list of 1 to 7 days: {', '.join(WEEKDAYS)}"
            return None
        named.add(day.lower())
    return [day for day in WEEKDAYS if day in named]
