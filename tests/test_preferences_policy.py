"""What preferences decide for one notification, on fixed clocks: opt-outs by channel and by
category, quiet hours across midnight, on some weekdays, over DST changes; transactional ones
go through regardless."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from common.preferences.document import validate_preferences
from common.preferences.policy import Decision, channel_allowed, decide, quiet_until


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def prefs(**document) -> dict:
    return validate_preferences(document)


NIGHTS_IN_PARIS = prefs(timezone="Europe/Paris", quiet_hours={"start": "22:00", "end": "07:00"})


# -- opt-outs -----------------------------------------------------------------------------------


def test_no_preferences_allow_everything():
    assert channel_allowed(None, "sms", "marketing")
    assert channel_allowed({}, "email", None)
    assert quiet_until(None, utc(2026, 1, 1)) is None
    assert decide(None, channel="sms", category=None, transactional=False, at=utc(2026, 1, 1)) == (
        Decision("send")
    )


def test_a_channel_switch_and_a_category_override():
    document = prefs(
        channels={"sms": False},
        categories={"marketing": {"email": False}, "alerts": {"sms": True}},
    )
    assert not channel_allowed(document, "sms", None)
    assert not channel_allowed(document, "sms", "news")
    assert channel_allowed(document, "email", None)
    assert not channel_allowed(document, "email", "marketing")
    assert not channel_allowed(document, "email", "Marketing")
    assert channel_allowed(document, "in_app", "marketing")
    # The category re-enables a channel switched off.
    assert channel_allowed(document, "sms", "alerts")


def test_opted_out_is_suppressed_with_a_reason():
    document = prefs(channels={"sms": False}, categories={"marketing": {"email": False}})
    at = utc(2026, 5, 1, 12)
    by_channel = decide(document, channel="sms", category=None, transactional=False, at=at)
    assert by_channel == Decision("suppress", "the recipient turned off sms")
    by_category = decide(
        document, channel="email", category="marketing", transactional=False, at=at
    )
    assert by_category == Decision(
        "suppress", "the recipient turned off email for the category marketing"
    )
    allowed = decide(document, channel="email", category="news", transactional=False, at=at)
    assert allowed == Decision("send")


def test_transactional_ignores_opt_outs_and_quiet_hours():
    document = prefs(
        channels={"sms": False, "email": False},
        timezone="Europe/Paris",
        quiet_hours={"start": "00:00", "end": "23:59"},
    )
    for channel in ("sms", "email", "in_app"):
        decision = decide(
            document, channel=channel, category="x", transactional=True, at=utc(2026, 5, 1, 12)
        )
        assert decision == Decision("send")


def test_an_opt_out_wins_over_quiet_hours():
    document = prefs(channels={"sms": False}, quiet_hours={"start": "00:00", "end": "23:59"})
    decision = decide(
        document, channel="sms", category=None, transactional=False, at=utc(2026, 5, 1, 12)
    )
    assert decision.action == "suppress"


# -- quiet hours --------------------------------------------------------------------------------


def test_a_window_across_midnight_in_the_users_zone():
    # Paris is UTC+1 in January: 22:00-07:00 local is 21:00-06:00 UTC.
    assert quiet_until(NIGHTS_IN_PARIS, utc(2026, 1, 14, 20, 59)) is None
    assert quiet_until(NIGHTS_IN_PARIS, utc(2026, 1, 14, 21, 0)) == utc(2026, 1, 15, 6)
    assert quiet_until(NIGHTS_IN_PARIS, utc(2026, 1, 14, 23, 30)) == utc(2026, 1, 15, 6)
    assert quiet_until(NIGHTS_IN_PARIS, utc(2026, 1, 15, 5, 59)) == utc(2026, 1, 15, 6)
    assert quiet_until(NIGHTS_IN_PARIS, utc(2026, 1, 15, 6, 0)) is None
    assert quiet_until(NIGHTS_IN_PARIS, utc(2026, 1, 15, 12)) is None


def test_any_aware_time_gives_a_utc_answer():
    at = datetime(2026, 1, 14, 23, 30, tzinfo=timezone(timedelta(hours=1)))
    until = quiet_until(NIGHTS_IN_PARIS, at)
    assert until == utc(2026, 1, 15, 6) and until.utcoffset() == timedelta(0)


def test_hold_until_the_window_ends_with_a_reason_in_local_time():
    decision = decide(
        NIGHTS_IN_PARIS,
        channel="email",
        category=None,
        transactional=False,
        at=utc(2026, 1, 14, 23),
    )
    assert decision == Decision("hold", "quiet hours until 07:00 Europe/Paris", utc(2026, 1, 15, 6))


def test_a_window_applies_on_the_days_it_starts():
    document = prefs(quiet_hours={"start": "22:00", "end": "07:00", "days": ["fri"]})  # UTC
    # 2026-01-16 is a Friday.
    assert quiet_until(document, utc(2026, 1, 16, 23)) == utc(2026, 1, 17, 7)
    assert quiet_until(document, utc(2026, 1, 17, 1)) == utc(2026, 1, 17, 7)  # Saturday 01:00
    assert quiet_until(document, utc(2026, 1, 15, 23)) is None  # Thursday night
    assert quiet_until(document, utc(2026, 1, 16, 1)) is None  # Friday 01:00: started Thursday
    assert quiet_until(document, utc(2026, 1, 17, 23)) is None  # Saturday night


def test_per_weekday_windows():
    document = prefs(
        timezone="America/New_York",
        quiet_hours=[
            {"start": "21:00", "end": "07:00", "days": ["sun", "mon", "tue", "wed", "thu"]},
            {"start": "23:00", "end": "10:00", "days": ["fri", "sat"]},
        ],
    )
    # New York is UTC-5 in January. Friday 2026-01-16 22:00 local: not yet quiet on a Friday.
    assert quiet_until(document, utc(2026, 1, 17, 3)) is None
    assert quiet_until(document, utc(2026, 1, 17, 5)) == utc(2026, 1, 17, 15)
    # Thursday 22:00 local: quiet until Friday 07:00 local.
    assert quiet_until(document, utc(2026, 1, 16, 3)) == utc(2026, 1, 16, 12)


def test_a_same_day_window():
    document = prefs(timezone="Europe/Paris", quiet_hours={"start": "12:00", "end": "14:00"})
    assert quiet_until(document, utc(2026, 1, 14, 11, 30)) == utc(2026, 1, 14, 13)
    assert quiet_until(document, utc(2026, 1, 14, 13)) is None


def test_chained_and_overlapping_windows_end_at_the_last():
    document = prefs(
        quiet_hours=[
            {"start": "22:00", "end": "07:00"},
            {"start": "06:00", "end": "08:00"},
            {"start": "08:00", "end": "09:00"},
        ]
    )
    assert quiet_until(document, utc(2026, 1, 14, 23)) == utc(2026, 1, 15, 9)


def test_windows_covering_every_minute_stop_after_a_bounded_chain():
    document = prefs(
        quiet_hours=[{"start": "00:00", "end": "12:00"}, {"start": "12:00", "end": "00:00"}]
    )
    until = quiet_until(document, utc(2026, 1, 14, 1))
    assert until is not None and until > utc(2026, 1, 14, 1)


@pytest.mark.parametrize(
    "night, end",
    [
        (utc(2026, 3, 28, 23), utc(2026, 3, 29, 5)),  # spring forward: 07:00 CEST = 05:00 UTC
        (utc(2026, 10, 24, 23), utc(2026, 10, 25, 6)),  # fall back: 07:00 CET = 06:00 UTC
    ],
)
def test_dst_changes_in_paris(night, end):
    assert quiet_until(NIGHTS_IN_PARIS, night) == end


def test_window_start_follows_dst_too():
    # 22:00 on 2026-03-28 is CET (21:00 UTC); on 2026-03-29 CEST (20:00 UTC).
    assert quiet_until(NIGHTS_IN_PARIS, utc(2026, 3, 28, 20, 30)) is None
    assert quiet_until(NIGHTS_IN_PARIS, utc(2026, 3, 29, 20, 30)) == utc(2026, 3, 30, 5)


def test_an_end_in_the_dst_gap_is_the_first_instant_after_it():
    # 02:00-03:00 does not exist in Paris on 2026-03-29: the clocks go from 02:00 CET (01:00
    # UTC) to 03:00 CEST.
    document = prefs(timezone="Europe/Paris", quiet_hours={"start": "22:00", "end": "02:30"})
    assert quiet_until(document, utc(2026, 3, 28, 23)) == utc(2026, 3, 29, 1)
    decision = decide(
        document, channel="sms", category=None, transactional=False, at=utc(2026, 3, 28, 23)
    )
    assert decision.reason == "quiet hours until 03:00 Europe/Paris"


def test_an_ambiguous_end_is_its_first_occurrence():
    # 02:30 happens twice in Paris on 2026-10-25: first at 00:30 UTC (CEST), then 01:30 (CET).
    document = prefs(timezone="Europe/Paris", quiet_hours={"start": "22:00", "end": "02:30"})
    assert quiet_until(document, utc(2026, 10, 24, 23)) == utc(2026, 10, 25, 0, 30)


def test_new_york_dst():
    document = prefs(timezone="America/New_York", quiet_hours={"start": "22:00", "end": "07:00"})
    # Spring forward 2026-03-08 at 02:00 EST: 07:00 EDT = 11:00 UTC.
    assert quiet_until(document, utc(2026, 3, 8, 4)) == utc(2026, 3, 8, 11)
    # Fall back 2026-11-01 at 02:00 EDT: 07:00 EST = 12:00 UTC.
    assert quiet_until(document, utc(2026, 11, 1, 4)) == utc(2026, 11, 1, 12)
    gap = prefs(timezone="America/New_York", quiet_hours={"start": "01:00", "end": "02:15"})
    # 02:15 does not exist on 2026-03-08; the gap starts at 07:00 UTC.
    assert quiet_until(gap, utc(2026, 3, 8, 6, 30)) == utc(2026, 3, 8, 7)
