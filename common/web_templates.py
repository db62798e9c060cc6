"""The notification template pages: the list, the editor (the form is common/web_template_form.py),
what a post of it makes, its version history and the preview."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote, urlencode

import flask

from common.errors import Conflict, ValidationError
from common.http import json_response
from common.runtime import get_service
from common.templates.catalog import TemplateCatalog, channels_of
from common.templates.engine import CHANNELS
from common.templates.store import TemplateVersion
from common.web import redirect, render
from common.web_template_form import (
    CHANNEL_LABELS,
    MAX_HISTORY,
    PART_LABELS,
    TemplateForm,
    field_id,
)


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

    def request(self, document: dict | None = None) -> dict:
        """The body for the catalog's preview (of `document`, unsaved, if given), or a
        ValidationError beside the sample data."""
        try:
            data = json.loads(self.data) if self.data.strip() else {}
        except ValueError as error:
            raise ValidationError(
                "bad sample data", {"data": f"is not valid JSON: {error}"}
            ) from None
        body = {"data": data, "locale": self.locale.strip() or None}
        return body if document is None else {**body, "document": document}

    def run(
        self, catalog: TemplateCatalog, key: str, document: dict | None = None
    ) -> tuple[PreviewForm, dict | None]:
        try:
            return self, catalog.preview(key, self.request(document))
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
    preview_form = preview_form or PreviewForm()  # a new template: nothing to render yet
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
    if posted.get("action") == "preview":
        return preview_page(request, form, posted)
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
    form = TemplateForm.from_post(posted, key)
    if action == "preview":
        return preview_page(request, form, posted, current)
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


def preview_page(
    request: flask.Request,
    form: TemplateForm,
    posted: Mapping[str, str],
    current: TemplateVersion | None = None,
) -> flask.Response:
    """The editor again, as typed, with the preview of the unsaved form (the no-script
    Preview button); a form that makes no document shows its errors beside the fields."""
    preview_form = PreviewForm.from_post(posted)
    catalog = get_service().templates
    if current is not None and "locale" not in posted:
        # Only the preview fields (a page from before the preview took the form): the saved.
        form = TemplateForm.from_document(current.document)
        preview_form, preview = preview_form.run(catalog, current.key)
    else:
        try:
            document = form.document()
        except ValidationError as error:
            return render_editor(request, form.with_errors(error.fields or {}), 400, current)
        preview_form, preview = preview_form.run(catalog, document["key"], document)
    status = 400 if preview_form.errors else 200
    return render_editor(request, form, status, current, preview_form, preview)


def preview_json(posted: Mapping[str, str], key: str | None = None) -> flask.Response:
    """The live preview of the posted editor form, unsaved: the preview as JSON, or a 400
    naming each field the form (or its sample data) gets wrong."""
    form = TemplateForm.from_post(posted, key)
    try:
        document = form.document()
        body = PreviewForm.from_post(posted).request(document)
        return json_response(get_service().templates.preview(document["key"], body))
    except ValidationError as error:
        return json_response(error.to_dict(), 400)


def show(request: flask.Request, key: str, version: str | None, notice: str | None):
    catalog = get_service().templates
    current = catalog.get(key)
    shown = current
    if version and re.fullmatch(r"[0-9]{1,7}", version) and int(version) != current.version:
        shown = catalog.get(key, int(version))
        notice = notice or f"Showing version {shown.version}: saving makes it the newest again."
    form = TemplateForm.from_document(shown.document)
    return render_editor(request, form, 200, current, notice=notice)
