"""What a user's preferences say about one notification: send it, suppress it (opted out) or
hold it until their quiet hours end. Pure: the caller passes the time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from common.preferences.document import DEFAULT_TIMEZONE, WEEKDAYS

SEND, SUPPRESS, HOLD = "send", "suppress", "hold"
# Windows chained end to start could in principle cover every minute of the week; the loop
# that follows a chain gives up after this many (two weeks of the 14 windows allowed).
MAX_CHAIN = 2 * 7 * 14


@dataclass(frozen=True)
class Decision:
    action: str  # "send" | "suppress" | "hold"
    reason: str | None = None
    until: datetime | None = None  # for "hold": when the quiet hours end (aware, UTC)


def channel_allowed(preferences: dict | None, channel: str, category: str | None) -> bool:
    """Whether the user receives `channel` for `category`: a category override for that
    channel wins over the channel switch; what is not set is allowed."""
    if not preferences:
        return True
    if category is not None:
        override = _category_override(preferences, channel, category)
        if override is not None:
            return override
    return (preferences.get("channels") or {}).get(channel, True)


def quiet_until(preferences: dict | None, at: datetime) -> datetime | None:
    """When the quiet hours `at` falls in end (aware, UTC), following windows that overlap or
    chain to the last one's end; None if `at` is not in quiet hours."""
    windows = (preferences or {}).get("quiet_hours") or []
    if not windows:
        return None
    zone = ZoneInfo(preferences.get("timezone") or DEFAULT_TIMEZONE)
    moment = _utc(at)
    until = None
    for _ in range(MAX_CHAIN):
        end = _window_end(windows, zone, moment)
        if end is None:
            break
        until = moment = end
    return until


def decide(
    preferences: dict | None,
    *,
    channel: str,
    category: str | None,
    transactional: bool,
    at: datetime,
) -> Decision:
    """Transactional notifications always go; then opt-outs, then quiet hours."""
    if transactional or not preferences:
        return Decision(SEND)
    if not channel_allowed(preferences, channel, category):
        if category is not None and _category_override(preferences, channel, category) is False:
            reason = f"the recipient turned off {channel} for the category {category.lower()}"
        else:
            reason = f"the recipient turned off {channel}"
        return Decision(SUPPRESS, reason)
    until = quiet_until(preferences, at)
    if until is not None:
        zone_name = preferences.get("timezone") or DEFAULT_TIMEZONE
        local = until.astimezone(ZoneInfo(zone_name))
        return Decision(HOLD, f"quiet hours until {local:%H:%M} {zone_name}", until)
    return Decision(SEND)


def _category_override(preferences: dict, channel: str, category: str) -> bool | None:
    return (preferences.get("categories") or {}).get(category.lower(), {}).get(channel)


def _utc(at: datetime) -> datetime:
    # Naive times in this service are UTC (the model keeps aware UTC ones).
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _window_end(windows: list[dict], zone: ZoneInfo, moment: datetime) -> datetime | None:
    """The latest end among the windows that `moment` (UTC) lies in, or None."""
    today = moment.astimezone(zone).date()
    ends = []
    # A window that crosses midnight may have started the day before.
    for day in (today - timedelta(days=1), today):
        for window in windows:
            days = window.get("days")
            if days and WEEKDAYS[day.weekday()] not in days:
                continue
            start, end = _clock(window["start"]), _clock(window["end"])
            end_day = day + timedelta(days=1) if end <= start else day
            opens, closes = _instant(day, start, zone), _instant(end_day, end, zone)
            if opens <= moment < closes:
                ends.append(closes)
    return max(ends) if ends else None


def _clock(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


def _instant(day: date, clock: time, zone: ZoneInfo) -> datetime:
    """The UTC instant of a wall time in `zone`: the first occurrence of an ambiguous one
    (fold=0), and for one in a DST gap the first instant after the gap."""
    wall = datetime.combine(day, clock, tzinfo=zone)
    instant = wall.astimezone(UTC)
    if instant.astimezone(zone).replace(tzinfo=None) == wall.replace(tzinfo=None):
        return instant
    # In a gap: fold=1 reads the wall time with the later offset, an instant before the
    # change; fold=0 with the earlier one, an instant after it. Find the change between them.
    before = int(wall.replace(fold=1).astimezone(UTC).timestamp())
    after = int(instant.timestamp())
    offset_before = _offset(before, zone)
    while after - before > 1:  # zones change offset on a whole second
        middle = (before + after) // 2
        if _offset(middle, zone) == offset_before:
            before = middle
        else:
            after = middle
    return datetime.fromtimestamp(after, UTC)


def _offset(timestamp: int, zone: ZoneInfo) -> timedelta | None:
    return datetime.fromtimestamp(timestamp, zone).utcoffset()
