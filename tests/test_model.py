"""Validation and the retry schedule: pure rules, no I/O."""

from datetime import timedelta

import pytest

from common.errors import ValidationError
from common.model import IN_APP, PENDING, retry_delay, validate_request


def fields_of(payload):
    with pytest.raises(ValidationError) as caught:
        validate_request(payload)
    return caught.value.fields


def test_a_valid_email_notification_becomes_pending():
    n = validate_request(
        {"user_id": "u1", "notification_type": "email", "message": "hi", "email": "a@b.co"}
    )
    assert n.status == PENDING and n.retry_count == 0 and len(n.id) == 36
    assert n.created_at.tzinfo is not None


def test_in_dash_app_is_an_alias_for_in_app():
    n = validate_request({"user_id": "u1", "notification_type": "in-app", "message": "hi"})
    assert n.notification_type == IN_APP


def test_every_bad_field_is_named_at_once():
    errors = fields_of({"notification_type": "fax", "message": ""})
    assert set(errors) == {"user_id", "notification_type", "message"}


def test_email_type_needs_a_valid_address():
    assert "email" in fields_of({"user_id": "u", "notification_type": "email", "message": "m"})
    assert "email" in fields_of(
        {"user_id": "u", "notification_type": "email", "message": "m", "email": "not-an-address"}
    )
    assert "email" in fields_of(
        {
            "user_id": "u",
            "notification_type": "email",
            "message": "m",
            "email": "a@b.co\r\nBcc: x@y.z",
        }
    )


def test_sms_needs_an_e164_number():
    assert "phone" in fields_of({"user_id": "u", "notification_type": "sms", "message": "m"})
    assert "phone" in fields_of(
        {"user_id": "u", "notification_type": "sms", "message": "m", "phone": "0123"}
    )
    n = validate_request(
        {"user_id": "u", "notification_type": "sms", "message": "m", "phone": "+1 (415) 555-0123"}
    )
    assert n.phone == "+14155550123"


def test_lengths_are_bounded():
    assert "user_id" in fields_of(
        {"user_id": "u" * 129, "notification_type": "in_app", "message": "m"}
    )
    assert "message" in fields_of(
        {"user_id": "u", "notification_type": "in_app", "message": "m" * 10_001}
    )


def test_wrong_types_and_unknown_fields_are_named():
    errors = fields_of(
        {"user_id": 5.5, "notification_type": "in_app", "message": ["x"], "colour": 1}
    )
    assert errors == {
        "user_id": "must be a string",
        "message": "must be a string",
        "colour": "is not a known field",
    }


def test_a_body_that_is_not_an_object_is_refused():
    with pytest.raises(ValidationError):
        validate_request(["not", "an", "object"])


def test_retry_schedule_follows_the_seed_and_repeats_its_last_step():
    schedule = (30, 120, 600, 1800, 3600)
    assert [retry_delay(n, schedule) for n in range(1, 6)] == [
        timedelta(seconds=s) for s in schedule
    ]
    assert retry_delay(9, schedule) == timedelta(seconds=3600)


@pytest.mark.parametrize(
    "address",
    [
        "victim<evil@evil.example>",
        '"Name" <a@b.co>',
        "Name <a@b.co>",
        "a@b.co, c@d.co",
        "a@b.co,c@d.co",
        "a@b.co;c@d.co",
        "a@b.co (comment)",
        "a@b.co(comment)",
        "(comment)a@b.co",
        "group: a@b.co;",
        "undisclosed-recipients:;@b.co",
        '"a b"@b.co',
        "a\\@b@c.co",
        "a@[127.0.0.1].co",
    ],
)
def test_an_address_with_a_name_comment_list_or_group_is_refused(address):
    payload = {"user_id": "u", "notification_type": "email", "message": "m", "email": address}

    errors = fields_of(payload)

    assert set(errors) == {"email"}
    assert "no name, comment or second address" in errors["email"]


@pytest.mark.parametrize(
    "address", ["a@b.co", "first.last+tag@sub.example.org", "bounce+x=y.com@a.io", "ü@bü.de"]
)
def test_a_bare_address_is_stored_exactly(address):
    payload = {"user_id": "u", "notification_type": "email", "message": "m", "email": address}

    assert validate_request(payload).email == address
