"""The preferences section of a user's page: the stored document as form values, and a posted
form back into a document for validate_preferences, its problems keyed by the form's fields."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from common.errors import Unavailable, ValidationError
from common.preferences.document import (
    CHANNELS,
    DEFAULT_TIMEZONE,
    WEEKDAYS,
    default_preferences,
    timezone_problem,
    validate_preferences,
)
from common.runtime import get_service
from common.web import TYPE_LABELS

COMMON_TIMEZONES = (
    "UTC",
    "Europe/London",
    "Europe/Paris",
    "Europe/Berlin",
    "Europe/Madrid",
    "America/New_York",
    "America/Chicago",
    "America/Denver",
    "America/Los_Angeles",
    "America/Sao_Paulo",
    "Africa/Johannesburg",
    "Asia/Kolkata",
    "Asia/Singapore",
    "Asia/Tokyo",
    "Australia/Sydney",
)
# A category override is three-way: a checkbox could not say "as the channel switch says".
OVERRIDES = (("", "Follow channel"), ("on", "On"), ("off", "Off"))
# Rows the form shows, 4 fields each, so that a post stays under MAX_FORM_FIELDS (100); any
# further categories are listed, kept as they are, and edited through the API.
MAX_ROWS = 18
NEW_ROW = "new"
MAX_TEXT = 200  # what a text field keeps of what was typed
TIME_WITH_SECONDS = re.compile(r"(\d\d:\d\d)(:00(\.0+)?)?")  # some browsers send 22:00:00


@dataclass
class CategoryRow:
    key: str  # the fields are cat-<key>-name and cat-<key>-<channel>
    name: str
    overrides: dict[str, str]  # channel -> "" | "on" | "off"


@dataclass
class PreferenceForm:
    channels: dict[str, bool]
    timezone: str
    quiet_start: str = ""
    quiet_end: str = ""
    quiet_days: list[str] = field(default_factory=list)
    rows: list[CategoryRow] = field(default_factory=list)
    new_row: CategoryRow = field(default_factory=lambda: _blank_row())
    kept_categories: dict[str, dict] = field(default_factory=dict)
    kept_windows: list[dict] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_document(cls, document: Mapping) -> PreferenceForm:
        categories = list((document.get("categories") or {}).items())
        windows = list(document.get("quiet_hours") or [])
        first = windows[0] if windows else {}
        return cls(
            channels={ch: bool((document.get("channels") or {}).get(ch, True)) for ch in CHANNELS},
            timezone=document.get("timezone") or DEFAULT_TIMEZONE,
            quiet_start=first.get("start", ""),
            quiet_end=first.get("end", ""),
            quiet_days=list(first.get("days") or (WEEKDAYS if first else ())),
            rows=[_row(str(i), name, o) for i, (name, o) in enumerate(categories[:MAX_ROWS])],
            kept_categories=dict(categories[MAX_ROWS:]),
            kept_windows=windows[1:],
        )

    @classmethod
    def from_post(cls, posted: Mapping, current: Mapping) -> PreferenceForm:
        """What was typed; categories and windows the form does not show come from `current`."""
        shown = cls.from_document(current)
        rows = []
        for i in range(MAX_ROWS):
            if f"cat-{i}-name" not in posted:
                break
            rows.append(_posted_row(posted, str(i)))
        named = {row.name for row in rows}
        form = cls(
            channels={ch: posted.get(f"channel-{ch}") == "on" for ch in CHANNELS},
            timezone=_text(posted, "timezone"),
            quiet_start=_clock(_text(posted, "quiet_start")),
            quiet_end=_clock(_text(posted, "quiet_end")),
            quiet_days=[d for d in WEEKDAYS if d in posted.getlist("quiet_days")],
            rows=rows,
            new_row=_posted_row(posted, NEW_ROW),
            kept_categories={
                k: v for k, v in current.get("categories", {}).items() if k not in named
            },
            kept_windows=shown.kept_windows,
        )
        form._check_rows()
        return form

    def _check_rows(self) -> None:
        for row in [*self.rows, self.new_row]:
            if any(value not in dict(OVERRIDES) for value in row.overrides.values()):
                self.errors[f"cat-{row.key}"] = "must be Follow channel, On or Off"
        new = self.new_row.name.lower()
        if new and new in {row.name.lower() for row in self.rows}:
            self.errors[f"cat-{NEW_ROW}"] = "already has a row above: change it there"

    def document(self) -> dict:
        """The form as a PUT body (not yet validated)."""
        categories = dict(self.kept_categories)
        for row in [*self.rows, self.new_row]:
            overrides = {ch: value == "on" for ch, value in row.overrides.items() if value}
            if overrides:
                categories[row.name] = overrides
            else:  # every channel follows its switch: the override says nothing, so it goes
                categories.pop(row.name, None)
        windows = list(self.kept_windows)
        if self.quiet_start or self.quiet_end:
            window: dict = {"start": self.quiet_start, "end": self.quiet_end}
            if 0 < len(self.quiet_days) < len(WEEKDAYS):  # none or all ticked: every day
                window["days"] = self.quiet_days
            windows.insert(0, window)
        return {
            "channels": self.channels,
            "categories": categories,
            "timezone": self.timezone,
            "quiet_hours": windows or None,
        }

    def place_errors(self, problems: Mapping[str, str]) -> None:
        """Each of validate_preferences' problems beside the field it is about."""
        for path, problem in problems.items():
            name = self._field_for(path)
            self.errors.setdefault(name, problem)

    def _field_for(self, path: str) -> str:
        has_window = bool(self.quiet_start or self.quiet_end)
        if path.startswith("quiet_hours.0.") and has_window:
            return {"start": "quiet_start", "end": "quiet_end"}.get(path[14:], "quiet_days")
        if path.startswith("quiet_hours"):
            return "quiet_hours"
        for row in [*self.rows, self.new_row]:
            prefix = f"categories.{row.name}"
            if path == prefix or path.removeprefix(prefix + ".") in CHANNELS:
                return f"cat-{row.key}"
        return path if path in ("timezone", "channels") else "categories"

    @property
    def other_errors(self) -> dict[str, str]:
        """Problems with no field of their own to stand beside."""
        return {
            k: v for k, v in self.errors.items() if k in ("channels", "categories", "quiet_hours")
        }

    def summary(self) -> str:
        """One line for the section's heading: what the user receives, and when."""
        on = [TYPE_LABELS[ch] for ch in CHANNELS if self.channels[ch]]
        parts = [("Receives " + ", ".join(on)) if on else "Receives nothing", self.timezone]
        if self.quiet_start and self.quiet_end:
            parts.append(f"quiet {self.quiet_start}–{self.quiet_end}")
        count = len(self.rows) + len(self.kept_categories)
        if count:
            parts.append(f"{count} categor{'y' if count == 1 else 'ies'} set")
        return " · ".join(parts)


def _blank_row() -> CategoryRow:
    return CategoryRow(NEW_ROW, "", {ch: "" for ch in CHANNELS})


def _row(key: str, name: str, overrides: Mapping[str, bool]) -> CategoryRow:
    shown = {
        ch: ("" if ch not in overrides else "on" if overrides[ch] else "off") for ch in CHANNELS
    }
    return CategoryRow(key, name, shown)


def _posted_row(posted: Mapping, key: str) -> CategoryRow:
    values = {ch: _text(posted, f"cat-{key}-{ch}") for ch in CHANNELS}
    return CategoryRow(key, _text(posted, f"cat-{key}-name"), values)


def _text(posted: Mapping, name: str) -> str:
    return str(posted.get(name) or "").strip()[:MAX_TEXT]


def _clock(value: str) -> str:
    match = TIME_WITH_SECONDS.fullmatch(value)
    return match.group(1) if match else value


def _store():
    store = get_service().preferences
    if store is None:  # a service built without a preference store (some deployments, tests)
        raise Unavailable("preferences are not available in this deployment")
    return store


def load(user_id: str) -> tuple[dict | None, str | None]:
    """(the user's document or the defaults, None), or (None, why it cannot be shown)."""
    try:
        return _store().get(user_id) or default_preferences(), None
    except Unavailable as error:
        return None, error.message


def save(user_id: str, posted: Mapping) -> tuple[PreferenceForm, bool]:
    """(the form as posted, True) once stored; (with its errors, False) and nothing stored."""
    store = _store()
    form = PreferenceForm.from_post(posted, store.get(user_id) or default_preferences())
    if form.errors:
        return form, False
    try:
        document = validate_preferences(form.document())
    except ValidationError as error:
        form.place_errors(error.fields)
        return form, False
    store.put(user_id, document, get_service().clock())
    return form, True


def local_time(value: str | datetime | None, zone: str | None) -> str:
    """`value` on the user's own clock ("10:00, 24 Dec 2026 Europe/Paris"); "" in UTC."""
    if not value or not zone or zone == "UTC" or timezone_problem(zone):
        return ""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return ""
    return f"{value.astimezone(ZoneInfo(zone)):%H:%M, %d %b %Y} {zone}"
