"""The preferences document: what a PUT may hold, its normal form, and every problem named."""

from __future__ import annotations

import pytest

from common.errors import ValidationError
from common.preferences.document import (
    DEFAULT_PREFERENCES,
    default_preferences,
    preferences_to_json,
    validate_preferences,
)

EXAMPLE = {
    "channels": {"sms": False},
    "categories": {"Marketing": {"email": False}},
    "timezone": "Europe/Paris",
    "quiet_hours": {"start": "22:00", "end": "07:00"},
}


def problems(document) -> dict[str, str]:
    with pytest.raises(ValidationError) as caught:
        validate_preferences(document)
    assert caught.value.message == "invalid preferences"
    return caught.value.fields


def test_the_example_is_normalised():
    assert validate_preferences(EXAMPLE) == {
        "channels": {"email": True, "sms": False, "in_app": True},
        "categories": {"marketing": {"email": False}},
        "timezone": "Europe/Paris",
        "quiet_hours": [{"start": "22:00", "end": "07:00"}],
    }


def test_an_empty_document_is_the_defaults_and_defaults_are_all_on():
    assert validate_preferences({}) == DEFAULT_PREFERENCES
    assert DEFAULT_PREFERENCES["timezone"] == "UTC"
    assert DEFAULT_PREFERENCES["quiet_hours"] is None
    assert all(DEFAULT_PREFERENCES["channels"].values())
    fresh = default_preferences()
    fresh["channels"]["sms"] = False
    assert DEFAULT_PREFERENCES["channels"]["sms"] is True


def test_the_json_shape_is_the_shape_put():
    one = validate_preferences(EXAMPLE)
    assert preferences_to_json(one)["quiet_hours"] == {"start": "22:00", "end": "07:00"}
    windows = [
        {"start": "22:00", "end": "07:00", "days": ["mon", "tue"]},
        {"start": "23:00", "end": "09:00", "days": ["sat"]},
    ]
    several = validate_preferences({"quiet_hours": windows})
    assert preferences_to_json(several)["quiet_hours"] == windows
    # The normal form survives a round trip through its JSON shape.
    assert validate_preferences(preferences_to_json(several)) == several
    assert validate_preferences(preferences_to_json(one)) == one


def test_days_are_lowercased_deduplicated_and_in_week_order():
    document = validate_preferences(
        {"quiet_hours": {"start": "22:00", "end": "07:00", "days": ["SUN", "mon", "sun"]}}
    )
    assert document["quiet_hours"] == [{"start": "22:00", "end": "07:00", "days": ["mon", "sun"]}]


def test_unknown_keys_anywhere_are_named():
    found = problems(
        {
            "channel": {},
            "channels": {"fax": True},
            "categories": {"news": {"push": False}},
            "quiet_hours": [{"start": "22:00", "end": "07:00", "weekdays": ["mon"]}],
        }
    )
    assert set(found) == {
        "channel",
        "channels.fax",
        "categories.news.push",
        "quiet_hours.0.weekdays",
    }


@pytest.mark.parametrize(
    "document, path",
    [
        ([], "body"),
        ({"channels": {"sms": "no"}}, "channels.sms"),
        ({"channels": {"sms": 0}}, "channels.sms"),
        ({"channels": []}, "channels"),
        ({"categories": {"-bad": {"email": False}}}, "categories.-bad"),
        ({"categories": {"x" * 65: {}}}, "categories." + "x" * 65),
        ({"categories": {"a b": {}}}, "categories.a b"),
        ({"categories": {"News": {}, "news": {}}}, "categories.news"),
        ({"categories": {"news": True}}, "categories.news"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"timezone": "../../etc/passwd"}, "timezone"),
        ({"timezone": "/usr/share/zoneinfo/UTC"}, "timezone"),
        ({"timezone": "Europe"}, "timezone"),
        ({"timezone": 1}, "timezone"),
        ({"timezone": ""}, "timezone"),
        ({"quiet_hours": {"start": "22:00", "end": "22:00"}}, "quiet_hours.end"),
        ({"quiet_hours": {"start": "24:00", "end": "07:00"}}, "quiet_hours.start"),
        ({"quiet_hours": {"start": "7:00", "end": "08:00"}}, "quiet_hours.start"),
        ({"quiet_hours": {"end": "08:00"}}, "quiet_hours.start"),
        ({"quiet_hours": {"start": "22:00", "end": "07:00", "days": []}}, "quiet_hours.days"),
        (
            {"quiet_hours": {"start": "22:00", "end": "07:00", "days": ["funday"]}},
            "quiet_hours.days",
        ),
        ({"quiet_hours": [{"start": "22:00", "end": "07:00"}, "x"]}, "quiet_hours.1"),
        ({"quiet_hours": "22:00-07:00"}, "quiet_hours"),
    ],
)
def test_each_problem_is_named_by_its_path(document, path):
    assert path in problems(document)


def test_every_problem_is_named_at_once():
    found = problems({"channels": {"sms": 1}, "timezone": "Nowhere", "quiet_hours": 5})
    assert set(found) == {"channels.sms", "timezone", "quiet_hours"}


def test_limits_on_categories_and_windows():
    many = {f"c{i}": {"email": False} for i in range(101)}
    assert "categories" in problems({"categories": many})
    del many["c100"]
    assert len(validate_preferences({"categories": many})["categories"]) == 100
    window = {"start": "22:00", "end": "07:00"}
    assert "quiet_hours" in problems({"quiet_hours": [window] * 15})
    assert len(validate_preferences({"quiet_hours": [window] * 14})["quiet_hours"]) == 14


def test_nulls_and_empty_lists_mean_the_defaults():
    document = {"channels": None, "categories": None, "timezone": None, "quiet_hours": []}
    assert validate_preferences(document) == DEFAULT_PREFERENCES
