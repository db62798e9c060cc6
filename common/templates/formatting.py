"""The Babel filters of templates: dates, times, numbers, currency and percent, written in the
render's locale and time zone.

`localized` sets both for one render; the sandbox (common/templates/sandbox.py) installs FILTERS.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import date, datetime, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel import Locale, UnknownLocaleError, dates, numbers
from jinja2 import pass_context

from common.errors import ValidationError

MAX_MESSAGE = 200  # characters of a value quoted back in an error


@dataclass(frozen=True)
class _Locality:
    locale: Locale
    zone: tzinfo


# Per thread (and per asyncio task): the web server renders on several threads at once.
_current: ContextVar[_Locality | None] = ContextVar("template_locality", default=None)


def time_zone(name: str | None) -> tzinfo:
    """The IANA time zone `name` (UTC if none); ValidationError if there is no such zone."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError, TypeError, OSError):
        raise ValidationError(
            "unknown time zone", {"timezone": "must be an IANA time zone, like Europe/Paris"}
        ) from None


@contextmanager
def localized(tag: str, zone: tzinfo) -> Iterator[None]:
    """The locale filters, inside this block, write for the locale `tag` and the time `zone`."""
    token = _current.set(_Locality(_babel_locale(tag), zone))
    try:
        yield
    finally:
        _current.reset(token)


@functools.lru_cache(maxsize=256)
def _babel_locale(tag: str) -> Locale:
    subtags = tag.split("-")
    while subtags:  # zh-Hant-TW, zh-Hant, zh: the closest locale Babel has data for
        try:
            return Locale.parse("_".join(subtags))
        except (ValueError, UnknownLocaleError):
            subtags.pop()
    return Locale.parse("en")


# Locale filters take the render's locale and time zone from _current, never from the data,
# and are pass_context so that Jinja never folds them into a compiled (and cached) template.


def _state() -> _Locality:
    state = _current.get()
    if state is None:
        raise RuntimeError("locale filters run only inside render()")
    return state


def _moment(value: Any) -> date:
    """A date or an aware datetime from a value or an ISO 8601 string (naive means UTC)."""
    if isinstance(value, str):
        text = value.strip()
        try:
            return date.fromisoformat(text)  # a date alone stays a date: no zone shift
        except ValueError:
            try:
                value = datetime.fromisoformat(text)
            except ValueError:
                raise ValueError(f"{value[:MAX_MESSAGE]!r} is not an ISO 8601 date") from None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=ZoneInfo("UTC"))
    if isinstance(value, date):
        return value
    raise ValueError(f"{str(value)[:MAX_MESSAGE]!r} is not a date")


def _datetime(value: Any, zone: tzinfo) -> datetime:
    moment = _moment(value)
    if isinstance(moment, datetime):
        return moment
    return datetime.combine(moment, datetime.min.time(), tzinfo=zone)  # midnight, theirs


@pass_context
def _format_date(context: Any, value: Any, format: str = "medium") -> str:
    state = _state()
    moment = _moment(value)
    if isinstance(moment, datetime):
        moment = moment.astimezone(state.zone).date()
    return dates.format_date(moment, format, locale=state.locale)


@pass_context
def _format_datetime(context: Any, value: Any, format: str = "medium") -> str:
    state = _state()
    moment = _datetime(value, state.zone)
    return dates.format_datetime(moment, format, tzinfo=state.zone, locale=state.locale)


@pass_context
def _format_time(context: Any, value: Any, format: str = "medium") -> str:
    state = _state()
    moment = _datetime(value, state.zone)
    return dates.format_time(moment, format, tzinfo=state.zone, locale=state.locale)


def _decimal(value: Any) -> Decimal:
    if isinstance(value, int | float | str | Decimal) and not isinstance(value, bool):
        try:
            number = Decimal(str(value).strip())
        except (InvalidOperation, ValueError):
            pass
        else:
            # A huge exponent would make Babel write out every digit.
            if number.is_finite() and abs(number.adjusted()) <= 100:
                return number
    raise ValueError(f"{str(value)[:MAX_MESSAGE]!r} is not a number in range")


@pass_context
def _format_number(context: Any, value: Any, format: str | None = None) -> str:
    return numbers.format_decimal(_decimal(value), format, locale=_state().locale)


@pass_context
def _format_currency(context: Any, value: Any, currency: str, format: str | None = None) -> str:
    return numbers.format_currency(_decimal(value), currency, format, locale=_state().locale)


@pass_context
def _format_percent(context: Any, value: Any, format: str | None = None) -> str:
    return numbers.format_percent(_decimal(value), format, locale=_state().locale)


FILTERS: dict[str, Any] = {
    "date": _format_date,
    "datetime": _format_datetime,
    "time": _format_time,
    "number": _format_number,
    "currency": _format_currency,
    "percent": _format_percent,
}
