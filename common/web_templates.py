"""The notification template pages: a template's document as a form (one textarea per locale,
channel and part), what a post of it makes, its version history and a preview without script."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote, urlencode

import flask

from common.errors import Conflict, ValidationError
from common.runtime import get_service
from common.templates import document as documents
from common.templates.catalog import TemplateCatalog, channels_of
from common.templates.engine import CHANNELS, LOCALE_PATTERN
from common.templates.store import TemplateVersion
from common.web import redirect, render
from common.web_forms import SendForm, Variable, variables_of

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


@dataclass(frozen=True)
class PreviewForm:
    """The preview panel as typed: sample data (JSON) and a locale."""

    data: str = "{}"
    locale: str = ""
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def for_template(cls, document: Mapping[str, Any]) -> PreviewForm:
        return cls(json.dumps(sample_data(document.get("variables")), indent=2))

    @classmethod
    def from_post(cls, form: Mapping[str, str]) -> PreviewForm:
        return cls(str(form.get("sample_data") or ""), str(form.get("preview_locale") or ""))

    def request(self) -> dict:
        """The body for the catalog's preview, or a ValidationError beside the sample data."""
        try:
            data = json.loads(self.data) if self.data.strip() else {}
        except ValueError as error:
            raise ValidationError(
                "bad sample data", {"data": f"is not valid JSON: {error}"}
            ) from None
        return {"data": data, "locale": self.locale.strip() or None}

    def run(self, catalog: TemplateCatalog, key: str) -> tuple[PreviewForm, dict | None]:
        try:
            return self, catalog.preview(key, self.request())
        except ValidationError as error:
            fields = error.fields or {"data": error.message}
            errors = {
                "locale" if name == "locale" else "data": f"{name} {text}"
                for name, text in fields.items()
            }
            return replace(self, errors=errors), None


def sample_data(schema: Any) -> dict:
    """Something to preview with: each property's example, default or a value of its type."""
    properties = schema.get("properties") if isinstance(schema, Mapping) else None
    if not isinstance(properties, Mapping):
        return {}
    samples = {
        "string": "Ada",
        "integer": 1,
        "number": 1.5,
        "boolean": True,
        "array": [],
        "object": {},
    }
    formats = {"email": "ada@example.com", "uri": "https://example.com/", "date": "2026-01-31"}
    data = {}
    for name, spec in properties.items():
        spec = spec if isinstance(spec, Mapping) else {}
        examples = spec.get("examples")
        if isinstance(examples, list) and examples:
            data[name] = examples[0]
        elif "default" in spec:
            data[name] = spec["default"]
        elif isinstance(spec.get("enum"), list) and spec["enum"]:
            data[name] = spec["enum"][0]
        elif spec.get("format") in formats:
            data[name] = formats[spec["format"]]
        else:
            kind = spec.get("type")
            data[name] = samples.get(kind if isinstance(kind, str) else "string", "Ada")
    return data


def history(catalog: TemplateCatalog, key: str) -> list[TemplateVersion]:
    """The key's versions, newest first (the last MAX_HISTORY)."""
    numbers = catalog.store.versions(key)[-MAX_HISTORY:]
    return [catalog.get(key, number) for number in reversed(numbers)]


# -- the pages ------------------------------------------------------------------------------


def render_list(request: flask.Request, notice: str | None = None) -> flask.Response:
    templates = get_service().templates.list()
    return render(
        request,
        "message_templates.html",
        active="templates",
        templates=templates,
        notice=notice,
        channels_of=channels_of,
    )


def render_editor(
    request: flask.Request,
    form: TemplateForm,
    status: int = 200,
    template: TemplateVersion | None = None,
    preview_form: PreviewForm | None = None,
    preview: dict | None = None,
    notice: str | None = None,
) -> flask.Response:
    catalog = get_service().templates
    if template is not None and preview_form is None:
        preview_form, preview = PreviewForm.for_template(template.document).run(
            catalog, template.key
        )
    return render(
        request,
        "message_template.html",
        status,
        active="templates",
        form=form,
        current=template,
        versions=history(catalog, template.key) if template else [],
        preview_form=preview_form,
        preview=preview,
        notice=notice,
        channels=CHANNELS,
        channel_labels=CHANNEL_LABELS,
        part_labels=PART_LABELS,
        field_id=field_id,
    )


def edit_url(key: str, **query: str) -> str:
    path = f"/message-templates/{quote(key, safe='')}"
    return f"{path}?{urlencode(query)}" if query else path


def create(request: flask.Request, posted: Mapping[str, str]) -> flask.Response:
    """A new template from the posted form, or the form again with errors beside fields."""
    form = TemplateForm.from_post(posted)
    if posted.get("action") == "add_locale":
        return render_editor(request, form.with_locale(str(posted.get("add_locale") or "")))
    try:
        saved = get_service().templates.create(form.document())
    except ValidationError as error:
        return render_editor(request, form.with_errors(error.fields or {}), 400)
    except Conflict as error:
        return render_editor(request, form.with_errors({"key": error.message}), 409)
    return redirect(edit_url(saved.key, saved=str(saved.version)))


def update(request: flask.Request, key: str, posted: Mapping[str, str]) -> flask.Response:
    """The edit page's post: save (a new version), archive, preview or add a locale."""
    catalog = get_service().templates
    current = catalog.get(key)
    action = posted.get("action")
    if action == "archive":
        catalog.archive(key)
        return redirect(f"/message-templates?{urlencode({'archived': key})}")
    if action == "preview":
        preview_form, preview = PreviewForm.from_post(posted).run(catalog, key)
        form = TemplateForm.from_document(current.document)
        status = 400 if preview_form.errors else 200
        return render_editor(request, form, status, current, preview_form, preview)
    form = TemplateForm.from_post(posted, key)
    if action == "add_locale":
        form = form.with_locale(str(posted.get("add_locale") or ""))
        return render_editor(request, form, 200, current)
    try:
        document = form.document()
        # Saving an archived template starts it again (POST /templates does the same).
        saved = catalog.create(document) if current.archived else catalog.update(key, document)
    except ValidationError as error:
        form = form.with_errors(error.fields or {})
        return render_editor(request, form, 400, current)
    except Conflict as error:
        return render_editor(request, replace(form, form_error=error.message), 409, current)
    return redirect(edit_url(key, saved=str(saved.version)))


def show(request: flask.Request, key: str, version: str | None, notice: str | None):
    catalog = get_service().templates
    current = catalog.get(key)
    shown = current
    if version and version.isdigit() and int(version) != current.version:
        shown = catalog.get(key, int(version))
        notice = notice or f"Showing version {shown.version}: saving makes it the newest again."
    form = TemplateForm.from_document(shown.document)
    return render_editor(request, form, 200, current, notice=notice)


# -- the send form's template picking -------------------------------------------------------


@dataclass(frozen=True)
class TemplateChoice:
    """A template the send form offers: its locales and its variables as fields."""

    key: str
    description: str
    default_locale: str
    locales: list[str]
    channels: list[str]
    variables: list[Variable] | None  # None: no schema, the data is one JSON text


def send_choices() -> list[TemplateChoice]:
    """The templates a send may name without pinning a version (none without a catalog)."""
    catalog = get_service().templates
    if catalog is None:
        return []
    return [
        TemplateChoice(
            t.key,
            t.document.get("description") or "",
            t.document["default_locale"],
            list(t.document["locales"]),
            channels_of(t.document),
            variables_of(t.document.get("variables")),
        )
        for t in catalog.list()
        if not t.archived
    ]


def template_payload(form: SendForm, choices: list[TemplateChoice]) -> dict:
    """The send's payload; with a template, its data from the form's variable fields."""
    if not form.template:
        return form.payload()
    chosen = next((choice for choice in choices if choice.key == form.template), None)
    if chosen is None:
        raise ValidationError("unknown template", {"template": "is not a template you can send"})
    return form.payload(form.template_data(chosen.variables))
