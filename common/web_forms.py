"""The send form: what a person typed, which fields apply to each type, errors per field, and
the one-time submission key that makes a double submit send once."""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from common.model import (
    EMAIL,
    IN_APP,
    MAX_EMAIL_LENGTH,
    MAX_MESSAGE_LENGTH,
    MAX_SUBJECT_LENGTH,
    MAX_USER_ID_LENGTH,
    SMS,
    normalise_type,
)

FIELDS = ("user_id", "notification_type", "message", "email", "phone", "subject")
LABELS = {
    "user_id": "User id",
    "notification_type": "Type",
    "message": "Message",
    "email": "Email address",
    "phone": "Phone number",
    "subject": "Subject",
}
# The fields beyond user, type and message that each type uses; the others are hidden and ignored.
TYPE_FIELDS = {IN_APP: (), EMAIL: ("email", "subject"), SMS: ("phone",)}
TYPE_CHOICES = (
    (IN_APP, "In-app", "Stored in the user's inbox"),
    (EMAIL, "Email", "Sent by SMTP"),
    (SMS, "SMS", "Sent by Twilio"),
)
MAX_LENGTHS = {
    "user_id": MAX_USER_ID_LENGTH,
    "message": MAX_MESSAGE_LENGTH,
    "email": MAX_EMAIL_LENGTH,
    "phone": 32,
    "subject": MAX_SUBJECT_LENGTH,
}
# Our forms have under ten fields: a post with more is refused before anything reads them.
MAX_FORM_FIELDS = 100
SUBMISSION_KEY_PATTERN = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
STALE_FORM = "This form was out of date, so nothing was sent. Check it and send it again."


def new_submission_key() -> str:
    return secrets.token_urlsafe(24)


@dataclass(frozen=True)
class SendForm:
    values: dict[str, str]
    submission_key: str
    errors: dict[str, str] = field(default_factory=dict)
    form_error: str | None = None

    @classmethod
    def blank(cls, prefill: Mapping[str, str] | None = None) -> SendForm:
        """A fresh form (new submission key); `prefill` may name the user and the type."""
        prefill = prefill or {}
        kind = normalise_type(prefill.get("type") or prefill.get("notification_type")) or IN_APP
        values = {name: "" for name in FIELDS}
        values.update(user_id=str(prefill.get("user_id") or "")[:MAX_USER_ID_LENGTH])
        values.update(notification_type=kind)
        return cls(values, new_submission_key())

    @classmethod
    def from_post(cls, form: Mapping[str, str]) -> SendForm:
        values = {name: str(form.get(name) or "") for name in FIELDS}
        key = str(form.get("submission_key") or "")
        if not SUBMISSION_KEY_PATTERN.match(key):
            return cls(values, new_submission_key(), form_error=STALE_FORM)
        return cls(values, key)

    @property
    def chosen_type(self) -> str | None:
        return normalise_type(self.values.get("notification_type"))

    def payload(self) -> dict[str, str]:
        """What the service receives: the common fields and only those the chosen type uses."""
        payload = {
            name: self.values[name]
            for name in ("user_id", "message", *TYPE_FIELDS.get(self.chosen_type, ()))
            if self.values[name].strip()
        }
        if self.values["notification_type"].strip():
            payload["notification_type"] = self.values["notification_type"]
        return payload

    def with_errors(self, fields: Mapping[str, str], message: str | None = None) -> SendForm:
        """The form with the service's errors put beside the fields that caused them."""
        errors = {name: f"{LABELS[name]} {text}" for name, text in fields.items() if name in LABELS}
        unplaced = [f"{name} {text}" for name, text in fields.items() if name not in LABELS]
        form_error = "; ".join(unplaced) if unplaced else None
        if not errors and not form_error:
            form_error = message
        return replace(self, errors=errors, form_error=form_error)

    def with_form_error(self, message: str) -> SendForm:
        return replace(self, form_error=message)

    @property
    def has_errors(self) -> bool:
        return bool(self.errors or self.form_error)
