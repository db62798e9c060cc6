"""The template use cases: save versions, read them, preview, and turn a send that names a
template into the text that will be stored and sent.

Rendering happens when a notification is accepted, so what is stored is what is sent, and a
retry sends the same text. The store keeps versions immutable; a notification records the
key, version and locale it was rendered from.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from common.errors import NotFound, ValidationError
from common.model import EMAIL, IN_APP, SMS, normalise_type
from common.templates import document as documents
from common.templates import engine, sms
from common.templates.store import TemplateStore, TemplateVersion

# What a send may carry to use a template (beside user_id, type, email, phone, idempotency_key).
TEMPLATE_FIELDS = ("template", "template_version", "data", "locale", "timezone")
CHANNELS = {EMAIL: "email", SMS: "sms", IN_APP: "in_app"}
MAX_VERSION = 1_000_000
PREVIEW_FIELDS = ("data", "locale", "version", "timezone", "document")


class TemplateCatalog:
    def __init__(self, store: TemplateStore, clock: Callable[[], datetime]):
        self.store = store
        self.clock = clock

    # -- writing and reading -----------------------------------------------------------------

    def create(self, body: Any) -> TemplateVersion:
        document = documents.validate_document(body)
        return self.store.create(document["key"], document, self.clock())

    def update(self, key: str, body: Any) -> TemplateVersion:
        document = documents.validate_document(body, key)
        return self.store.add_version(key, document, self.clock())

    def get(self, key: str, version: int | None = None) -> TemplateVersion:
        if not documents.KEY_PATTERN.fullmatch(key):  # from a path: no template has it
            raise NotFound("no template has this key")
        found = self.store.latest(key) if version is None else self.store.get(key, version)
        if found is None:
            which = f"template {key!r}" + (f" version {version}" if version else "")
            raise NotFound(f"{which} not found")
        return found

    def list(self) -> list[TemplateVersion]:
        return self.store.list()

    def archive(self, key: str) -> TemplateVersion:
        self.get(key)  # a key no template can have is a 404 before the store is asked
        archived = self.store.archive(key, self.clock())
        if archived is None:
            raise NotFound(f"template {key!r} not found")
        return archived

    # -- preview -----------------------------------------------------------------------------

    def preview(self, key: str, body: Any) -> dict:
        """Every channel the template covers, rendered with `data` in `locale`: the parts,
        an SMS's segments and encoding, and the problems found. Sends nothing."""
        body = body if body is not None else {}
        if not isinstance(body, Mapping) or set(body) - set(PREVIEW_FIELDS):
            raise ValidationError(
                "invalid preview request",
                {"body": "a JSON object with " + ", ".join(PREVIEW_FIELDS) + " (all optional)"},
            )
        key, version, document = self._previewed(key, body)
        data = body.get("data", {})
        problems: dict[str, str] = {}
        try:
            engine.validate_data(document, data)
        except ValidationError as error:
            problems.update(error.fields or {"data": error.message})
            data = data if isinstance(data, Mapping) else {}
        locale = _text_or_none(body.get("locale"), "locale")
        channels: dict[str, dict] = {}
        for channel in channels_of(document):
            try:
                rendered = engine.render(
                    document,
                    channel,
                    locale,
                    dict(data),
                    timezone=_text_or_none(body.get("timezone"), "timezone"),
                )
            except ValidationError as error:
                problems.update({f"{channel}.{k}": v for k, v in error.fields.items()})
                if not error.fields:
                    problems[channel] = error.message
                continue
            result: dict[str, Any] = {"locale": rendered.locale, "parts": rendered.parts}
            if channel == "sms":
                encoding, count = sms.segments(rendered.parts["text"])
                result["sms"] = {"encoding": encoding, "segments": count}
            channels[channel] = result
        return {"key": key, "version": version, "channels": channels, "problems": problems}

    def _previewed(self, key: str, body: Mapping) -> tuple[str, int | None, Mapping[str, Any]]:
        """(key, version, document) to render: a stored version, or the unsaved `document`
        (version None), which is never looked up so that a template not saved yet works."""
        version = _version_number(body.get("version"), "version")
        if "document" not in body:
            template = self.get(key, version)
            return template.key, template.version, template.document
        if version is not None:
            raise ValidationError(
                "a version and a document together",
                {"version": "give either a saved version or an unsaved document, not both"},
            )
        try:
            document = documents.validate_document(body["document"], key)
        except ValidationError as error:
            fields = {f"document.{name}": text for name, text in (error.fields or {}).items()}
            raise ValidationError(error.message, fields or {"document": error.message}) from None
        return key, None, document

    # -- sending with a template --------------------------------------------------------------

    def expand(self, payload: Any, looked_up: dict | None = None) -> tuple[Any, dict[str, Any]]:
        """For a send that names a template: (the payload with its message and subject
        rendered, the fields to set on the notification). Other payloads pass unchanged.

        `looked_up` remembers the versions read for one request, so that a batch of 1,000
        sends of one template reads it once, not once per item."""
        if not isinstance(payload, Mapping) or "template" not in payload:
            return payload, {}
        both = [name for name in ("message", "subject") if name in payload]
        if both:
            raise ValidationError(
                "a template and a message together",
                {both[0]: "give either a template (with data) or the text, not both"},
            )
        key = payload.get("template")
        if not isinstance(key, str) or not documents.KEY_PATTERN.fullmatch(key):
            raise ValidationError(
                "invalid template", {"template": "must be a template key such as welcome"}
            )
        pinned = _version_number(payload.get("template_version"), "template_version")
        looked_up = {} if looked_up is None else looked_up
        if (key, pinned) not in looked_up:
            found = self.store.latest(key) if pinned is None else self.store.get(key, pinned)
            looked_up[key, pinned] = found
        template = looked_up[key, pinned]
        if template is None:
            which = "no template " + repr(key) + (f" with version {pinned}" if pinned else "")
            raise ValidationError("unknown template", {"template": which})
        if template.archived and pinned is None:
            raise ValidationError(
                "archived template", {"template": f"{key!r} is archived; pin a template_version"}
            )
        kind = normalise_type(payload.get("notification_type", payload.get("type")))
        if kind is None:  # validate_request names the type's problem
            return {k: v for k, v in payload.items() if k not in TEMPLATE_FIELDS}, {}
        data = payload.get("data", {})
        engine.validate_data(template.document, data)
        rendered = engine.render(
            template.document,
            CHANNELS[kind],
            _text_or_none(payload.get("locale"), "locale"),
            dict(data),
            timezone=_text_or_none(payload.get("timezone"), "timezone"),
        )
        plain = {k: v for k, v in payload.items() if k not in TEMPLATE_FIELDS}
        parts = rendered.parts
        extras: dict[str, Any] = {
            "template": template.key,
            "template_version": template.version,
            "locale": rendered.locale,
            "request_hash": fingerprint(payload),
        }
        if template.document.get("category") and payload.get("category") is None:
            plain["category"] = template.document["category"]
        if template.document.get("transactional"):
            extras["transactional"] = True
        if kind == EMAIL:
            plain.update(message=parts.get("text"), subject=parts.get("subject"))
            extras["html"] = parts.get("html") or None
        elif kind == SMS:
            plain["message"] = parts.get("text")
        else:
            plain["message"] = parts.get("body")
            extras.update(title=parts.get("title") or None, action_url=parts.get("action_url"))
            extras["action_url"] = extras["action_url"] or None
        return plain, extras


def channels_of(document: Mapping[str, Any]) -> list[str]:
    """The channels a template covers (every locale covers the same ones)."""
    parts = document["locales"][document["default_locale"]]
    return [channel for channel in ("email", "sms", "in_app") if channel in parts]


def fingerprint(payload: Mapping[str, Any]) -> str:
    """What the client asked for (the template and its data, not the text it rendered to), so
    that an idempotent repeat matches even after the template got a new version."""
    asked = {k: payload.get(k) for k in sorted(payload) if k != "idempotency_key"}
    return hashlib.sha256(json.dumps(asked, sort_keys=True, default=str).encode()).hexdigest()


def _version_number(value: Any, field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON does not tell 3 from 3.0
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_VERSION:
        raise ValidationError("invalid template version", {field: "must be a version number"})
    return value


def _text_or_none(value: Any, field: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 64:
        raise ValidationError(f"invalid {field}", {field: "must be a short string"})
    return value
