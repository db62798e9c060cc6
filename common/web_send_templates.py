"""The templates the send form offers, and the send's payload when one is chosen."""

from __future__ import annotations

from dataclasses import dataclass

from common.errors import ValidationError
from common.runtime import get_service
from common.templates.catalog import channels_of
from common.web_forms import SendForm, Variable, variables_of


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
