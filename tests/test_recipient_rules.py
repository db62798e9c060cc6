"""The recipient's rules, through the use cases on both stores: opt-outs by channel and by
category, the transactional bypass, quiet hours (across midnight and across a DST change, on a
still clock), send_at released when due and not a millisecond earlier, the horizon, cancelling
(one, and by cancel_key; 409 once sending or sent), and the suppression list after a permanent
failure at the real Twilio-compatible endpoint.

Each test runs with SQLite files and with MongoDB (mongomock, or a real server when MONGO_URI
is set) holding the notifications, the preferences and the suppression list alike.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from common.channels.base import Channel, DeliveryResult
from common.channels.in_app import InAppChannel
from common.channels.sms import SmsChannel
from common.config import load_settings
from common.errors import Conflict, NotFound, ValidationError
from common.model import (
    CANCELLED,
    FAILED_PERMANENTLY,
    QUEUED,
    SCHEDULED,
    SENT,
    SUPPRESSED,
)
from common.queue.memory import MemoryQueue
from common.service import NotificationService
from common.store.sqlite import SqliteStore
from tests.support.mongo import mongo_database


class RecordingChannel(Channel):
    """Email as a provider would see it: what was handed over, and a scripted answer."""

    notification_type = "email"

    def __init__(self):
        self.handed_over: list[str] = []
        self.answers: list[DeliveryResult] = []

    def deliver(self, notification):
        self.handed_over.append(notification.id)
        return self.answers.pop(0) if self.answers else DeliveryResult.sent("ok")


class StillClock:
    def __init__(self, now: datetime):
        self.now = now

    def __call__(self):
        return self.now


@pytest.fixture(params=["sqlite", "mongo"])
def stores(request, tmp_path):
    """(notification store, preference store, suppression store), all of one kind."""
    if request.param == "sqlite":
        from common.preferences.sqlite import SqlitePreferenceStore
        from common.suppressions.sqlite import SqliteSuppressionStore

        yield (
            SqliteStore(tmp_path / "notifications.db"),
            SqlitePreferenceStore(tmp_path / "preferences.db"),
            SqliteSuppressionStore(tmp_path / "suppressions.db"),
        )
        return
    from common.preferences.mongo import MongoPreferenceStore
    from common.store.mongo import MongoStore
    from common.suppressions.mongo import MongoSuppressionStore

    with mongo_database() as (client, name):
        yield (
            MongoStore(database=name, client=client),
            MongoPreferenceStore(client, name),
            MongoSuppressionStore(client, name),
        )


WINTER_EVENING = datetime(2026, 1, 15, 22, 30, tzinfo=UTC)  # 23:30 in Paris (UTC+1)


@pytest.fixture
def clock():
    return StillClock(datetime(2026, 1, 15, 12, 0, tzinfo=UTC))


@pytest.fixture
def channel():
    return RecordingChannel()


@pytest.fixture
def settings(settings_env):
    return load_settings(
        {**settings_env, "RETRY_JITTER": "0", "TRANSACTIONAL_CATEGORIES": "security"}
    )


@pytest.fixture
def service(settings, stores, channel, clock):
    store, preferences, suppressions = stores
    channels = {"email": channel, "sms": channel, "in_app": InAppChannel()}
    return NotificationService(
        settings,
        store,
        MemoryQueue(),
        channels,
        clock=clock,
        preferences=preferences,
        suppressions=suppressions,
    )


def email(service, **extra):
    payload = {"user_id": "ann", "type": "email", "email": "ann@example.com", "message": "hi"}
    return service.submit({**payload, **extra})


def prefer(service, document: dict, user: str = "ann"):
    from common.preferences.document import validate_preferences

    service.preferences.put(user, validate_preferences(document), service.clock())


def drain(service) -> list[str]:
    outcomes = []
    while (notification_id := service.queue.get(timeout=0)) is not None:
        outcomes.append(service.deliver(notification_id))
    return outcomes


# -- opt-outs ------------------------------------------------------------------------------------


def test_a_channel_turned_off_suppresses_without_sending(service, channel):
    prefer(service, {"channels": {"email": False}})
    notification = email(service)
    assert notification.status == SUPPRESSED
    assert "email" in notification.status_reason
    assert drain(service) == [] and channel.handed_over == []
    assert service.get(notification.id).status == SUPPRESSED
    assert service.stats()["by_status"][SUPPRESSED] == 1


def test_a_category_turned_off_suppresses_that_category_only(service, channel):
    prefer(service, {"categories": {"marketing": {"email": False}}})
    marketing = email(service, category="Marketing")
    receipts = email(service, category="receipts")
    assert marketing.status == SUPPRESSED and "marketing" in marketing.status_reason
    assert receipts.status == QUEUED
    drain(service)
    assert channel.handed_over == [receipts.id]


def test_a_category_override_wins_over_the_channel_switch(service, channel):
    prefer(service, {"channels": {"email": False}, "categories": {"orders": {"email": True}}})
    assert email(service, category="orders").status == QUEUED
    assert email(service).status == SUPPRESSED


def test_transactional_categories_ignore_opt_outs_and_quiet_hours(service, clock, channel):
    prefer(
        service,
        {
            "channels": {"email": False},
            "timezone": "Europe/Paris",
            "quiet_hours": {"start": "22:00", "end": "07:00"},
        },
    )
    clock.now = WINTER_EVENING
    code = email(service, category="security")
    assert code.status == QUEUED and code.transactional is True
    drain(service)
    assert channel.handed_over == [code.id]


def test_a_template_may_declare_its_sends_transactional(service, channel):
    from common.templates.catalog import TemplateCatalog
    from common.templates.sqlite import SqliteTemplateStore
    from tests.support.template_samples import WELCOME

    service.intake.templates = TemplateCatalog(
        SqliteTemplateStore(service.settings.data_dir / "templates.db"), service.clock
    )
    service.intake.templates.create({**WELCOME, "key": "reset", "transactional": True})
    prefer(service, {"channels": {"email": False}})
    sent = service.submit(
        {
            "user_id": "ann",
            "type": "email",
            "email": "ann@example.com",
            "template": "reset",
            "data": {"name": "Ann"},
        }
    )
    assert sent.status == QUEUED and sent.transactional is True


# -- quiet hours -------------------------------------------------------------------------------


def test_quiet_hours_across_midnight_hold_until_the_window_ends(service, clock, channel):
    prefer(
        service,
        {"timezone": "Europe/Paris", "quiet_hours": {"start": "22:00", "end": "07:00"}},
    )
    clock.now = WINTER_EVENING
    held = email(service)
    assert held.status == SCHEDULED
    assert held.send_at == datetime(2026, 1, 16, 6, 0, tzinfo=UTC)  # 07:00 in Paris
    assert "quiet hours" in held.status_reason
    clock.now = held.send_at - timedelta(milliseconds=1)
    assert service.sweep().requeued == 0 and drain(service) == []
    clock.now = held.send_at
    assert service.sweep().requeued == 1
    assert drain(service) == [SENT] and channel.handed_over == [held.id]


def test_quiet_hours_end_in_local_time_across_a_dst_change(service, clock):
    prefer(
        service,
        {"timezone": "Europe/Paris", "quiet_hours": {"start": "22:00", "end": "07:00"}},
    )
    # Paris moves from UTC+1 to UTC+2 at 02:00 on 29 March 2026: 07:00 is then 05:00 UTC.
    clock.now = datetime(2026, 3, 28, 22, 30, tzinfo=UTC)
    assert email(service).send_at == datetime(2026, 3, 29, 5, 0, tzinfo=UTC)
    # And back on 25 October 2026: 07:00 is 06:00 UTC again.
    clock.now = datetime(2026, 10, 24, 21, 30, tzinfo=UTC)
    assert email(service).send_at == datetime(2026, 10, 25, 6, 0, tzinfo=UTC)


def test_outside_quiet_hours_a_notification_goes_at_once(service, clock):
    prefer(
        service,
        {"timezone": "Europe/Paris", "quiet_hours": {"start": "22:00", "end": "07:00"}},
    )
    clock.now = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
    assert email(service).status == QUEUED


def test_a_send_at_inside_quiet_hours_moves_to_the_window_end(service, clock):
    prefer(
        service,
        {"timezone": "Europe/Paris", "quiet_hours": {"start": "22:00", "end": "07:00"}},
    )
    held = email(service, send_at="2026-01-15T23:15:00+01:00")
    assert held.status == SCHEDULED
    assert held.send_at == datetime(2026, 1, 16, 6, 0, tzinfo=UTC)


# -- send_at -----------------------------------------------------------------------------------


def test_send_at_is_released_when_due_and_not_a_millisecond_earlier(service, clock, channel):
    later = email(service, send_at="2026-01-15T14:00:00+01:00")  # 13:00 UTC
    assert later.status == SCHEDULED
    assert later.send_at == datetime(2026, 1, 15, 13, 0, tzinfo=UTC)
    clock.now = later.send_at - timedelta(milliseconds=1)
    assert service.sweep().requeued == 0
    assert service.get(later.id).status == SCHEDULED and channel.handed_over == []
    clock.now = later.send_at
    assert service.sweep().requeued == 1
    assert drain(service) == [SENT]
    assert service.sweep().requeued == 0 and drain(service) == []
    assert channel.handed_over == [later.id]


def test_a_send_at_already_past_goes_at_once(service):
    assert email(service, send_at="2026-01-15T11:00:00Z").status == QUEUED


def test_send_at_needs_an_offset_and_stays_within_the_horizon(service):
    with pytest.raises(ValidationError) as no_offset:
        email(service, send_at="2026-01-16T09:00:00")
    assert "send_at" in no_offset.value.fields
    with pytest.raises(ValidationError) as too_far:
        email(service, send_at="2026-02-15T12:00:01Z")  # 31 days ahead; the limit is 30
    assert "MAX_SCHEDULE_DAYS" in too_far.value.fields["send_at"]
    assert email(service, send_at="2026-02-14T12:00:00Z").status == SCHEDULED
    assert service.stats()["total"] == 1


def test_a_batch_reports_each_item_with_its_own_status(service):
    prefer(service, {"channels": {"sms": False}})
    results = service.submit_batch(
        [
            {"user_id": "ann", "type": "email", "email": "a@example.com", "message": "now"},
            {
                "user_id": "ann",
                "type": "email",
                "email": "a@example.com",
                "message": "later",
                "send_at": "2026-01-16T09:00:00Z",
            },
            {"user_id": "ann", "type": "sms", "phone": "+14155550123", "message": "no"},
        ]
    )
    assert [r["status"] for r in results] == [QUEUED, SCHEDULED, SUPPRESSED]


# -- cancelling --------------------------------------------------------------------------------


def test_a_scheduled_notification_cancelled_is_never_sent(service, clock, channel):
    later = email(service, send_at="2026-01-15T13:00:00Z")
    cancelled = service.cancel(later.id)
    assert cancelled.status == CANCELLED and cancelled.status_reason
    assert service.cancel(later.id).status == CANCELLED  # again: the same answer
    clock.now = datetime(2026, 1, 16, tzinfo=UTC)
    assert service.sweep().requeued == 0 and drain(service) == []
    assert channel.handed_over == []


def test_a_queued_notification_cancelled_before_delivery_is_skipped(service, channel):
    queued = email(service)
    assert service.cancel(queued.id).status == CANCELLED
    assert drain(service) == ["skipped"] and channel.handed_over == []


def test_cancelling_is_refused_once_sent(service):
    sent = email(service)
    drain(service)
    with pytest.raises(Conflict) as refused:
        service.cancel(sent.id)
    assert "sent" in refused.value.message
    with pytest.raises(NotFound):
        service.cancel(str(uuid.uuid4()))


def test_a_cancel_key_cancels_every_notification_sent_with_it(service, clock, channel):
    reminder = email(service, send_at="2026-01-16T09:00:00Z", cancel_key="order-1")
    follow_up = email(service, send_at="2026-01-17T09:00:00Z", cancel_key="order-1")
    other = email(service, send_at="2026-01-16T09:00:00Z", cancel_key="order-2")
    answer = service.cancel_by_key({"cancel_key": "order-1"})
    assert answer["cancelled"] == 2 and sorted(answer["ids"]) == sorted([reminder.id, follow_up.id])
    assert service.get(other.id).status == SCHEDULED
    again = service.cancel_by_key({"cancel_key": "order-1"})
    assert again["cancelled"] == 0 and again["too_late"] == 0
    with pytest.raises(NotFound):
        service.cancel_by_key({"cancel_key": "order-3"})
    with pytest.raises(ValidationError):
        service.cancel_by_key({"key": "order-1"})


def test_a_cancel_key_is_refused_once_everything_with_it_was_sent(service, clock):
    email(service, cancel_key="order-9")
    drain(service)
    with pytest.raises(Conflict):
        service.cancel_by_key({"cancel_key": "order-9"})
    waiting = email(service, send_at="2026-01-16T09:00:00Z", cancel_key="order-9")
    answer = service.cancel_by_key({"cancel_key": "order-9"})
    assert answer["ids"] == [waiting.id] and answer["too_late"] == 1


# -- the suppression list -----------------------------------------------------------------------


def test_an_address_refused_for_good_is_suppressed_for_later_sends(service, channel):
    channel.answers.append(DeliveryResult.permanent("550 5.1.1 no such user", suppress=True))
    first = email(service, email="gone@example.com")
    drain(service)
    assert service.get(first.id).status == FAILED_PERMANENTLY
    entry = service.suppressions.get("email", "gone@example.com")
    assert entry is not None and entry.notification_id == first.id
    again = email(service, email="Gone@Example.com")
    assert again.status == SUPPRESSED and "550" in again.status_reason
    assert drain(service) == [] and channel.handed_over == [first.id]
    assert email(service, email="other@example.com").status == QUEUED
    service.suppressions.remove("email", "gone@example.com")
    assert email(service, email="gone@example.com").status == QUEUED


def test_a_permanent_failure_for_another_reason_suppresses_nothing(service, channel):
    channel.answers.append(DeliveryResult.permanent("554 message refused"))
    email(service, email="fine@example.com")
    drain(service)
    assert service.suppressions.get("email", "fine@example.com") is None
    assert email(service, email="fine@example.com").status == QUEUED


def test_twilio_invalid_number_puts_the_number_on_the_list(settings_env, stores, fake_twilio):
    store, preferences, suppressions = stores
    settings = load_settings({**settings_env, **fake_twilio.env()})
    service = NotificationService(
        settings,
        store,
        MemoryQueue(),
        {"sms": SmsChannel(settings), "in_app": InAppChannel()},
        preferences=preferences,
        suppressions=suppressions,
    )
    fake_twilio.fail_with(21211)
    sms = {"user_id": "bob", "type": "sms", "phone": "+14155550100", "message": "hi"}
    first = service.submit(sms)
    drain(service)
    assert service.get(first.id).status == FAILED_PERMANENTLY
    second = service.submit(sms)
    assert second.status == SUPPRESSED and "21211" in second.status_reason
    drain(service)
    assert len(fake_twilio.requests) == 1  # the provider saw the number once, not twice
