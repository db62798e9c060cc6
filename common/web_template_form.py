"""A notification template's document as a web form: one textarea per locale, channel and
part, read back from a post into a document (errors beside each field)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from common.errors import ValidationError
from common.templates import document as documents
from common.templates.engine import CHANNELS, LOCALE_PATTERN

CHANNEL_LABELS = {"email": "Email", "sms": "SMS", "in_app": "In-app"}
PART_LABELS = {
    "subject": "Subject",
    "text": "Text",
    "html": "HTML",
    "title": "Title",
    "body": "Body",
    "action_url": "Action URL",
}
LABELS = {
    "key": "Key",
    "description": "Description",
    "default_locale": "Default locale",
    "variables": "Variables schema",
    "locales": "Locales",
}
MAX_LOCALES = 10  # 8 form fields each: the page stays under MAX_FORM_FIELDS
MAX_HISTORY = 50


def field_id(path: str) -> str:
    """The element id of the field for a document path (`locales.en.email.subject`)."""
    return "f-" + path.replace(".", "-")


def empty_parts() -> dict[str, dict[str, str]]:
    return {channel: dict.fromkeys(parts, "") for channel, parts in CHANNELS.items()}


@dataclass(frozen=True)
class TemplateForm:
    """A template as typed: every locale shows every channel's parts ("" when unused)."""

    key: str
    description: str = ""
    default_locale: str = "en"
    variables: str = ""  # the JSON Schema as typed
    locales: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # by document path (or field)
    form_error: str | None = None

    @classmethod
    def blank(cls) -> TemplateForm:
        return cls("", locales={"en": empty_parts()})

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> TemplateForm:
        locales = {}
        for tag, channels in document["locales"].items():
            parts = empty_parts()
            for channel, sources in channels.items():
                parts[channel].update({k: v or "" for k, v in sources.items()})
            locales[tag] = parts
        variables = document.get("variables")
        return cls(
            document["key"],
            document.get("description") or "",
            document["default_locale"],
            json.dumps(variables, indent=2) if variables is not None else "",
            locales,
        )

    @classmethod
    def from_post(cls, form: Mapping[str, str], key: str | None = None) -> TemplateForm:
        tags = [tag.strip() for tag in form.getlist("locale") if tag.strip()][:MAX_LOCALES]
        locales = {}
        for tag in dict.fromkeys(tags):
            parts = empty_parts()
            for channel, names in CHANNELS.items():
                for name in names:
                    parts[channel][name] = str(form.get(f"locales.{tag}.{channel}.{name}") or "")
            locales[tag] = parts
        return cls(
            key if key is not None else str(form.get("key") or "").strip(),
            str(form.get("description") or ""),
            str(form.get("default_locale") or "").strip(),
            str(form.get("variables") or ""),
            locales,
        )

    def with_locale(self, tag: str) -> TemplateForm:
        """The form with one more (empty) locale, or an error beside the new locale's field."""
        tag = tag.strip()
        if not LOCALE_PATTERN.fullmatch(tag):
            return replace(self, errors={"add_locale": "Locale is not a tag like fr or pt-BR"})
        if tag.lower() in {known.lower() for known in self.locales}:
            return replace(self, errors={"add_locale": f"Locale {tag} is there already"})
        if len(self.locales) >= MAX_LOCALES:
            return replace(self, errors={"add_locale": f"At most {MAX_LOCALES} locales"})
        return replace(self, locales={**self.locales, tag: empty_parts()})

    def document(self) -> dict:
        """The document to save, or a ValidationError naming every bad field (the variables'
        JSON and the catalog's own checks together)."""
        problems: dict[str, str] = {}
        variables = None
        if self.variables.strip():
            try:
                variables = json.loads(self.variables)
            except ValueError as error:
                problems["variables"] = f"is not valid JSON: {error}"
        locales = {}
        for tag, channels in self.locales.items():
            used = {
                channel: {name: source for name, source in parts.items() if source.strip()}
                for channel, parts in channels.items()
                if any(source.strip() for source in parts.values())
            }
            if used or tag == self.default_locale:  # an emptied locale is removed
                locales[tag] = used
        document = {
            "key": self.key,
            "description": self.description,
            "default_locale": self.default_locale,
            "variables": variables,
            "locales": locales,
        }
        try:
            document = documents.validate_document(document)
        except ValidationError as error:
            problems = {**(error.fields or {"form": error.message}), **problems}
        if problems:
            raise ValidationError("invalid template", problems)
        return document

    def with_errors(self, fields: Mapping[str, str]) -> TemplateForm:
        """Each problem beside the field it names, or the nearest group that holds it."""
        errors: dict[str, str] = {}
        unplaced: list[str] = []
        for path, text in fields.items():
            target = self._target(path)
            if target is None:
                unplaced.append(f"{path} {text}")
                continue
            message = f"{self._label(target)} {text}"
            if path != target:
                message = f"{self._label(target)} ({path.removeprefix(target + '.')}) {text}"
            errors[target] = f"{errors[target]}; {message}" if target in errors else message
        return replace(self, errors=errors, form_error="; ".join(unplaced) or None)

    def _target(self, path: str) -> str | None:
        head, *rest = path.split(".")
        if head in ("key", "description", "default_locale", "variables"):
            return head
        if head == "locales" and rest and rest[0] in self.locales:
            for size in (3, 2, 1):  # a part, a channel, the locale
                candidate = ".".join(["locales", *rest[:size]])
                if len(rest) >= size and self._is_field(candidate):
                    return candidate
        return None

    def _is_field(self, path: str) -> bool:
        _, tag, *more = path.split(".")
        if not more:
            return True
        channel = more[0]
        if channel not in CHANNELS:
            return False
        return len(more) == 1 or (len(more) == 2 and more[1] in CHANNELS[channel])

    @staticmethod
    def _label(path: str) -> str:
        if path in LABELS:
            return LABELS[path]
        _, tag, *more = path.split(".")
        if not more:
            return f"Locale {tag}"
        words = [CHANNEL_LABELS[more[0]], *(PART_LABELS[name].lower() for name in more[1:])]
        return f"{' '.join(words)} ({tag})"

    def errors_under(self, path: str) -> bool:
        return any(name == path or name.startswith(path + ".") for name in self.errors)

    @property
    def has_errors(self) -> bool:
        return bool(self.errors or self.form_error)
