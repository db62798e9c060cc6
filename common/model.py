"""The notification record, its life-cycle statuses, input validation and the retry schedule.

Pure code: no I/O, so every rule here is tested without a database or a broker.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from common.errors import ValidationError
from common.inbox import INBOX_FIELDS, parse_inbox_fields
from common.send_options import SEND_OPTION_FIELDS, parse_send_options

# Life cycle (shared/DESIGN.md; the moves between them are in common/lifecycle.py):
# [scheduled ->] pending -> queued -> sending -> sent | retry_scheduled | failed_permanently,
# and, before a provider has it, cancelled; a recipient's opt-out or a suppressed address
# makes it suppressed at once.
PENDING = "pending"
QUEUED = "queued"
SENDING = "sending"
SENT = "sent"
RETRY_SCHEDULED = "retry_scheduled"
FAILED_PERMANENTLY = "failed_permanently"
SCHEDULED = "scheduled"  # held until send_at (asked for, or the end of quiet hours)
CANCELLED = "cancelled"  # final: cancelled before a provider had it
SUPPRESSED = "suppressed"  # final: the recipient opted out, or the address is suppressed
STATUSES = (
    SCHEDULED,
    PENDING,
    QUEUED,
    SENDING,
    SENT,
    RETRY_SCHEDULED,
    FAILED_PERMANENTLY,
    CANCELLED,
    SUPPRESSED,
)
FINAL_STATUSES = (SENT, FAILED_PERMANENTLY, CANCELLED, SUPPRESSED)

EMAIL = "email"
SMS = "sms"
IN_APP = "in_app"
TYPES = (EMAIL, SMS, IN_APP)
TYPE_ALIASES = {"in-app": IN_APP, "inapp": IN_APP, "text": SMS}

MAX_USER_ID_LENGTH = 128
MAX_MESSAGE_LENGTH = 10_000
MAX_SUBJECT_LENGTH = 200
MAX_EMAIL_LENGTH = 254

USER_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:@+\-]+$")
# Deliberately simple: one @, no spaces, no control characters, a dot in the domain, and none
# of the characters that make a display name, a comment, a list or a group (<>()[],;:"\), so
# that the address stored is the SMTP envelope recipient and nothing else. C0 and C1 control
# characters both: Python's \s also matches U+0085 (a C1), JSON Schema's not. openapi.json's
# EmailAddress pattern is the same rule.
EMAIL_PATTERN = re.compile(
    r'^[^@\s\x00-\x1f\x7f-\x9f<>()\[\],;:"\\]+@[^@\s\x00-\x1f\x7f-\x9f<>()\[\],;:"\\]+'
    r'\.[^@\s\x00-\x1f\x7f-\x9f<>()\[\],;:"\\]+$'
)
E164_PATTERN = re.compile(r"^\+[1-9]\d{6,14}$")
ALLOWED_FIELDS = {
    "user_id",
    "notification_type",
    "type",
    "message",
    "email",
    "phone",
    "subject",
    *SEND_OPTION_FIELDS,
    *INBOX_FIELDS,
}


def utcnow() -> datetime:
    """Now, in UTC, to the millisecond: MongoDB keeps milliseconds, so both stores agree."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


@dataclass
class Notification:
    user_id: str
    notification_type: str
    message: str
    email: str | None = None
    phone: str | None = None
    subject: str | None = None
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    status: str = PENDING
    retry_count: int = 0
    max_retries: int = 5
    last_error: str | None = None
    next_retry_time: datetime | None = None
    lease_until: datetime | None = None
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)
    sent_at: datetime | None = None
    # Claims so far: each delivery attempt claims the notification once.
    attempts: int = 0
    # The current claim's token: only the worker holding it may record an outcome.
    claim_token: str | None = None
    # A failed notification's copy reached the dead-letter queue at this time (None: not yet).
    dead_lettered_at: datetime | None = None
    # Fingerprint of the request that created it, to tell an idempotent repeat from a reuse.
    request_hash: str | None = None
    # Rendered from a template: its key, the version and the locale used (common/templates).
    template: str | None = None
    template_version: int | None = None
    locale: str | None = None
    # An email's HTML part (CSS inlined), sent beside `message` as multipart/alternative.
    html: str | None = None
    # An in-app notification's title and link (from a template's in_app parts, or the send),
    # and the sender's own small JSON object for its inbox (common/inbox.py's limits).
    title: str | None = None
    action_url: str | None = None
    data: dict[str, Any] | None = None
    # The inbox states, as the time each began (None: not seen, unread, not archived).
    seen_at: datetime | None = None
    read_at: datetime | None = None
    archived_at: datetime | None = None
    # When an inbox action (seen, read, archive, ... or a bulk one) last changed it: a status
    # move sets updated_at instead, so these actions never disturb the sweep's timing.
    inbox_updated_at: datetime | None = None
    # The sender's category (preferences and unsubscribe are per category); transactional
    # ones (configured, or declared by their template) ignore opt-outs and quiet hours.
    category: str | None = None
    transactional: bool = False
    # When a scheduled notification goes: asked for with send_at, or the end of quiet hours.
    send_at: datetime | None = None
    # POST /notifications/cancel with this key cancels every notification sent with it.
    cancel_key: str | None = None
    # Why it is scheduled, suppressed or cancelled, in words.
    status_reason: str | None = None
    # The id the provider gave it (Twilio's message SID, the email's Message-ID).
    provider_message_id: str | None = None
    # What the provider reported after accepting it (Twilio status callbacks): queued, sent,
    # delivered, undelivered or failed, with the provider's error code; it only moves forward.
    delivery_status: str | None = None
    delivery_error_code: str | None = None
    delivery_status_at: datetime | None = None
    # The W3C traceparent of the request that accepted it, carried to the delivery's logs.
    traceparent: str | None = None
    # Set (not stored) when a submission repeated an idempotency key and found this one.
    duplicate: bool = field(default=False, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The notification as the JSON API shows it (times in ISO 8601, UTC)."""
        # A shallow copy: every field is a str, int, datetime or None (asdict deep-copies),
        # but for `data`, a JSON object that is only ever replaced whole.
        shown = {name: getattr(self, name) for name in PUBLIC_FIELDS}
        for key, value in shown.items():
            if isinstance(value, datetime):
                shown[key] = value.isoformat().replace("+00:00", "Z")
        return shown

    @property
    def inbox_changed_at(self) -> datetime:
        """The last change its inbox would show: a status move or an inbox action. The live
        stream's event ids and its Last-Event-ID replay count in this time."""
        if self.inbox_updated_at is None:
            return self.updated_at
        return max(self.updated_at, self.inbox_updated_at)

    def with_changes(self, **changes: Any) -> Notification:
        return replace(self, **changes)


# What the API shows: everything but the claim (lease, token), the request's fingerprint and
# the per-reply `duplicate` flag.
PRIVATE_FIELDS = ("lease_until", "claim_token", "request_hash", "duplicate", "inbox_updated_at")
PUBLIC_FIELDS = tuple(f.name for f in fields(Notification) if f.name not in PRIVATE_FIELDS)


def normalise_type(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    lowered = value.strip().lower()
    lowered = TYPE_ALIASES.get(lowered, lowered)
    return lowered if lowered in TYPES else None


class _Unstorable(ValueError):
    """Text that no store can hold: a NUL, or half of a UTF-16 surrogate pair."""


def _text(payload: Mapping[str, Any], name: str) -> str | None:
    value = payload.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise TypeError
    value = str(value).strip()
    if "\x00" in value:
        raise _Unstorable
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate ("\ud800"): valid JSON, not valid text
        raise _Unstorable from None
    return value or None


def user_id_problem(user_id: str | None) -> str | None:
    """Why `user_id` cannot be anyone's id, or None."""
    if not user_id:
        return "is required"
    if len(user_id) > MAX_USER_ID_LENGTH:
        return f"must be at most {MAX_USER_ID_LENGTH} characters"
    if not USER_ID_PATTERN.fullmatch(user_id):
        return "may contain only letters, digits and . _ : @ + -"
    return None


def validate_request(payload: Any, max_retries: int = 5) -> Notification:
    """Turn a client's JSON object into a new pending Notification, or name every bad field."""
    if not isinstance(payload, Mapping):
        raise ValidationError("the request body must be a JSON object")
    errors: dict[str, str] = {}
    values: dict[str, str | None] = {}
    for name in ("user_id", "message", "email", "phone", "subject"):
        try:
            values[name] = _text(payload, name)
        except TypeError:
            errors[name] = "must be a string"
        except _Unstorable:
            errors[name] = "must be text without NUL characters or unpaired surrogates"

    unknown = sorted(set(payload) - ALLOWED_FIELDS)
    for name in unknown:
        shown = str(name)[:64].encode("utf-8", "replace").decode("utf-8")
        errors[shown] = "is not a known field"

    raw_type = payload.get("notification_type", payload.get("type"))
    notification_type = normalise_type(raw_type)
    if raw_type is None:
        errors["notification_type"] = "is required: one of email, sms, in_app"
    elif notification_type is None:
        errors["notification_type"] = "must be one of email, sms, in_app"

    user_id = values.get("user_id")
    if "user_id" not in errors and (problem := user_id_problem(user_id)):
        errors["user_id"] = problem

    message = values.get("message")
    if "message" not in errors:
        if not message:
            errors["message"] = "is required"
        elif len(message) > MAX_MESSAGE_LENGTH:
            errors["message"] = f"must be at most {MAX_MESSAGE_LENGTH} characters"

    email, phone, subject = values.get("email"), values.get("phone"), values.get("subject")
    if email is not None and "email" not in errors:
        if len(email) > MAX_EMAIL_LENGTH or not EMAIL_PATTERN.match(email):
            errors["email"] = "must be a valid email address"
            if re.search(r'[<>()\[\],;:"\\]', email):
                errors["email"] += ", the address alone: no name, comment or second address"
    if phone is not None and "phone" not in errors:
        phone = re.sub(r"[\s().\-]", "", phone)
        if not E164_PATTERN.match(phone):
            errors["phone"] = "must be an E.164 number such as +14155550123"
    if subject is not None and "subject" not in errors:
        if len(subject) > MAX_SUBJECT_LENGTH:
            errors["subject"] = f"must be at most {MAX_SUBJECT_LENGTH} characters"
        elif re.search(r"[\r\n]", subject):
            errors["subject"] = "must be a single line"
    if notification_type == EMAIL and email is None and "email" not in errors:
        errors["email"] = "is required for an email notification"
    if notification_type == SMS and phone is None and "phone" not in errors:
        errors["phone"] = "is required for an sms notification"

    options = parse_send_options(payload, errors)
    options.update(parse_inbox_fields(payload, errors))

    if errors:
        raise ValidationError("invalid notification", errors)
    notification = Notification(
        user_id=user_id,
        notification_type=notification_type,
        message=message,
        email=email,
        phone=phone,
        subject=subject,
        max_retries=max_retries,
        **options,
    )
    notification.request_hash = request_fingerprint(notification)
    return notification


def request_fingerprint(notification: Notification) -> str:
    """What the client asked for, after normalising: equal for an idempotent repeat."""
    asked = [
        notification.user_id,
        notification.notification_type,
        notification.message,
        notification.email,
        notification.phone,
        notification.subject,
    ]
    options = [notification.category, notification.cancel_key, notification.send_at]
    if any(option is not None for option in options):  # older fingerprints stay as they were
        asked.append([str(option) if option is not None else None for option in options])
    inbox = [notification.title, notification.action_url, notification.data]
    if any(part is not None for part in inbox):  # likewise: only sends that carry them
        asked.append(inbox)
    # sort_keys orders `data`'s keys; nothing else in `asked` is an object, so it changes no
    # older fingerprint.
    return hashlib.sha256(json.dumps(asked, sort_keys=True).encode()).hexdigest()


def retry_delay(
    retry_count: int, schedule: Sequence[float], jitter: float = 0.0, spread: float = 0.0
) -> timedelta:
    """Delay before retry number `retry_count` (1-based); past the schedule, its last step.

    `spread` in [-1, 1] (random, from the caller) moves it by up to `jitter` of itself, so that
    the retries of a provider outage do not all fire in one burst."""
    index = min(max(retry_count, 1), len(schedule)) - 1
    return timedelta(seconds=schedule[index] * (1 + jitter * spread))


def retries_left(notification: Notification) -> bool:
    return notification.retry_count < notification.max_retries
