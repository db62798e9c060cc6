"""The send form: what a person typed, which fields apply to each type, errors per field, and
the one-time submission key that makes a double submit send once. With a template chosen, the
message and subject come from it, and its variables are fields of their own (`var.<name>`)."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from common.errors import ValidationError
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

FIELDS = (
    "user_id",
    "notification_type",
    "message",
    "email",
    "phone",
    "subject",
    "template",
    "locale",
    "data",
)
LABELS = {
    "template": "Template",
    "locale": "Locale",
    "data": "Data",
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
    "locale": 35,
}
VARIABLE_PREFIX = "var."


@dataclass(frozen=True)
class Variable:
    """One property of a template's variables schema, as a field of the send form."""

    name: str
    label: str
    kind: str  # string, integer, number, boolean, json
    required: bool = False
    hint: str = ""


def variables_of(schema: Any) -> list[Variable] | None:
    """The schema's top-level properties as fields; None when there is no schema to go by
    (the form then offers the data as one JSON text)."""
    properties = schema.get("properties") if isinstance(schema, Mapping) else None
    if not isinstance(properties, Mapping) or not properties:
        return None
    required = schema.get("required") if isinstance(schema.get("required"), list) else []
    fields = []
    for name, spec in properties.items():
        spec = spec if isinstance(spec, Mapping) else {}
        kind = (
            spec.get("type")
            if spec.get("type") in ("string", "integer", "number", "boolean")
            else "json"
        )
        if kind == "json" and "type" not in spec:
            kind = "string"
        hint = str(spec.get("description") or ("JSON" if kind == "json" else ""))
        label = str(spec.get("title") or name)
        fields.append(Variable(str(name), label, kind, name in required, hint))
    return fields


def _converted(variable: Variable, text: str) -> Any:
    """The typed value of a variable's field, or ValueError saying what it should be."""
    if variable.kind == "string":
        return text
    if variable.kind == "boolean":
        if text not in ("true", "false"):
            raise ValueError("must be yes or no")
        return text == "true"
    if variable.kind == "integer":
        try:
            return int(text.strip())
        except ValueError:
            raise ValueError("must be a whole number") from None
    if variable.kind == "number":
        try:
            number = float(text.strip())
        except ValueError:
            raise ValueError("must be a number") from None
        return int(number) if number.is_integer() and "." not in text else number
    try:
        return json.loads(text)
    except ValueError as error:
        raise ValueError(f"is not valid JSON: {error}") from None


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
    variables: dict[str, str] = field(default_factory=dict)  # the chosen template's, as typed

    @classmethod
    def blank(cls, prefill: Mapping[str, str] | None = None) -> SendForm:
        """A fresh form (new submission key); `prefill` may name the user and the type."""
        prefill = prefill or {}
        kind = normalise_type(prefill.get("type") or prefill.get("notification_type")) or IN_APP
        values = {name: "" for name in FIELDS}
        values.update(user_id=str(prefill.get("user_id") or "")[:MAX_USER_ID_LENGTH])
        values.update(notification_type=kind, template=str(prefill.get("template") or "")[:64])
        return cls(values, new_submission_key())

    @classmethod
    def from_post(cls, form: Mapping[str, str]) -> SendForm:
        values = {name: str(form.get(name) or "") for name in FIELDS}
        variables = {
            name.removeprefix(VARIABLE_PREFIX): str(value or "")
            for name, value in form.items()
            if name.startswith(VARIABLE_PREFIX)
        }
        key = str(form.get("submission_key") or "")
        if not SUBMISSION_KEY_PATTERN.match(key):
            return cls(values, new_submission_key(), form_error=STALE_FORM, variables=variables)
        return cls(values, key, variables=variables)

    @property
    def chosen_type(self) -> str | None:
        return normalise_type(self.values.get("notification_type"))

    @property
    def template(self) -> str:
        return self.values["template"].strip()

    def payload(self, data: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """What the service receives: the common fields and only those the chosen type uses;
        with a template, its key, locale and `data` in place of the message and subject."""
        names = ["user_id", "message", *TYPE_FIELDS.get(self.chosen_type, ())]
        if self.template:
            names = [name for name in names if name not in ("message", "subject")]
        payload: dict[str, Any] = {
            name: self.values[name] for name in names if self.values[name].strip()
        }
        if self.values["notification_type"].strip():
            payload["notification_type"] = self.values["notification_type"]
        if self.template:
            payload.update(template=self.template, data=dict(data or {}))
            if self.values["locale"].strip():
                payload["locale"] = self.values["locale"].strip()
        return payload

    def template_data(self, variables: Sequence[Variable] | None) -> dict[str, Any]:
        """The chosen template's data from its fields (or from the JSON text when it has no
        schema); a ValidationError names each field that does not convert."""
        if variables is None:
            text = self.values["data"].strip()
            try:
                data = json.loads(text) if text else {}
            except ValueError as error:
                raise ValidationError("bad data", {"data": f"is not valid JSON: {error}"}) from None
            if not isinstance(data, dict):
                raise ValidationError("bad data", {"data": "must be a JSON object"})
            return data
        data: dict[str, Any] = {}
        problems: dict[str, str] = {}
        for variable in variables:
            text = self.variables.get(variable.name, "")
            if not text.strip():
                continue  # left out: the schema says whether it was required
            try:
                data[variable.name] = _converted(variable, text)
            except ValueError as error:
                problems[f"data.{variable.name}"] = str(error)
        if problems:
            raise ValidationError("bad data", problems)
        return data

    def anchor(self, name: str) -> str:
        """The id of the field an error names (for the error summary's links)."""
        if name == "notification_type":
            return f"f-type-{self.values['notification_type'] or 'in_app'}"
        if name == "data" and self.template:
            return f"f-data-{self.template}"
        if name.startswith(VARIABLE_PREFIX):
            return f"f-var-{self.template}-{name.removeprefix(VARIABLE_PREFIX)}"
        return f"f-{name}"

    def with_errors(self, fields: Mapping[str, str], message: str | None = None) -> SendForm:
        """The form with the service's errors put beside the fields that caused them."""
        errors, unplaced = {}, []
        for name, text in fields.items():
            head, _, rest = name.partition(".")
            if name in LABELS:
                errors[name] = f"{LABELS[name]} {text}"
            elif head == "data" and rest and self.template:  # a template variable's field
                variable = rest.split(".")[0]
                errors.setdefault(f"{VARIABLE_PREFIX}{variable}", f"{rest} {text}")
            else:
                unplaced.append(f"{name} {text}")
        form_error = "; ".join(unplaced) if unplaced else None
        if not errors and not form_error:
            form_error = message
        return replace(self, errors=errors, form_error=form_error)

    def with_form_error(self, message: str) -> SendForm:
        return replace(self, form_error=message)

    @property
    def has_errors(self) -> bool:
        return bool(self.errors or self.form_error)
