"""Renders a template's parts for one channel and locale: the public face of templates.

Pure code: the document arrives validated (common/templates/document.py), the data as JSON.
The sandbox lives in common/templates/sandbox.py, its limits in limits.py, the locale filters in
common/templates/formatting.py; what they export that callers use is re-exported here.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import css_inline
from inscriptis import get_text
from inscriptis.css_profiles import CSS_PROFILES
from inscriptis.model.config import ParserConfig
from jinja2 import Template
from jinja2.exceptions import SecurityError, TemplateSyntaxError
from jinja2.utils import missing
from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.exceptions import Unresolvable

from common.errors import ValidationError
from common.templates.formatting import MAX_MESSAGE, localized, time_zone
from common.templates.sandbox import (
    OUTPUT_LIMITS,
    RENDER_SECONDS,
    LimitExceeded,
    MissingVariable,
    check_safe,
    compile_part,
    deadline,
    generate,
)

__all__ = [
    "CHANNELS",
    "LOCALE_PATTERN",
    "MAX_DATA_BYTES",
    "OUTPUT_LIMITS",
    "RENDER_SECONDS",
    "Rendered",
    "RenderError",
    "check_safe",
    "compile_part",
    "html_to_text",
    "pick_locale",
    "render",
    "validate_data",
]

# The parts of each channel; email's html is the one part rendered with HTML autoescaping.
CHANNELS: dict[str, tuple[str, ...]] = {
    "email": ("subject", "text", "html"),
    "sms": ("text",),
    "in_app": ("title", "body", "action_url"),
}
REQUIRED_PARTS = {"email": "subject", "sms": "text", "in_app": "body"}
LOCALE_PATTERN = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")

MAX_DATA_BYTES = 64 * 1024


class RenderError(ValidationError):
    """The template broke a sandbox rule or a limit (time, size) while it rendered."""


@dataclass(frozen=True)
class Rendered:
    locale: str
    parts: dict[str, str]


# -- rendering --------------------------------------------------------------------------------


def pick_locale(document: dict, requested: str | None) -> str:
    """The document's locale for `requested`: fr-CA, then fr, then the default locale."""
    known = {tag.lower(): tag for tag in document["locales"]}
    tag = requested.replace("_", "-") if isinstance(requested, str) else ""
    subtags = tag.split("-") if LOCALE_PATTERN.fullmatch(tag.lower()) else []
    while subtags:
        found = known.get("-".join(subtags).lower())
        if found:
            return found
        subtags.pop()
    return document["default_locale"]


def validate_data(document: dict, data: Any) -> None:
    """Refuse data that is not a JSON object, is too big, or breaks the template's schema."""
    if not isinstance(data, dict):
        raise ValidationError("invalid template data", {"data": "must be a JSON object"})
    try:
        size = len(json.dumps(data, ensure_ascii=False, allow_nan=False).encode())
    except (TypeError, ValueError, RecursionError):
        raise ValidationError("invalid template data", {"data": "must be JSON"}) from None
    if size > MAX_DATA_BYTES:
        raise ValidationError("template data too big", {"data": f"is over {MAX_DATA_BYTES} bytes"})
    schema = document.get("variables")
    if schema is None:
        return
    # An empty registry: jsonschema's default would fetch a remote $ref over HTTP.
    validator = Draft202012Validator(
        schema, registry=Registry(), format_checker=Draft202012Validator.FORMAT_CHECKER
    )
    problems: dict[str, str] = {}
    try:
        for error in validator.iter_errors(data):
            path = ".".join(["data", *map(str, error.absolute_path)])
            if error.validator == "required" and isinstance(error.instance, dict):
                for name in error.validator_value:
                    if name not in error.instance:
                        problems.setdefault(f"{path}.{name}", "is a required property")
            else:
                problems.setdefault(path, error.message[:MAX_MESSAGE])
    except Unresolvable as exc:
        raise ValidationError(
            "the template's variables schema is broken",
            {"template.variables": f"has a $ref that does not resolve: {exc}"[:MAX_MESSAGE]},
        ) from None
    if problems:
        raise ValidationError("the data does not match the template's variables", problems)


def render(
    document: dict, channel: str, locale: str | None, data: dict, *, timezone: str | None = None
) -> Rendered:
    """The channel's parts rendered with `data` in the best locale for `locale`."""
    if channel not in CHANNELS:
        raise ValidationError(
            "unknown channel", {"channel": f"must be one of {', '.join(CHANNELS)}"}
        )
    validate_data(document, data)
    tag = pick_locale(document, locale)
    sources = document["locales"][tag].get(channel)
    if not sources:
        raise ValidationError(
            f"the template has no {channel} parts", {"template": f"has no {channel} parts"}
        )
    where = f"locales.{tag}.{channel}"
    zone = time_zone(timezone)
    templates = {
        part: (f"{where}.{part}", _compiled(f"{where}.{part}", source, part == "html"))
        for part, source in sources.items()
        if source is not None
    }
    with deadline(RENDER_SECONDS), localized(tag, zone):
        parts = {
            part: _render_part(path, template, data) for part, (path, template) in templates.items()
        }
    return Rendered(locale=tag, parts=_finish(where, channel, parts))


def _compiled(path: str, source: str, html: bool) -> Template:
    try:
        return compile_part(source, html=html)
    except TemplateSyntaxError as exc:  # only a document that skipped validate_document
        raise RenderError("the template does not compile", {path: exc.message or ""}) from None


def _render_part(path: str, template: Template, data: dict) -> str:
    try:
        text = generate(template, data, path.rsplit(".", 1)[1])
    except MissingVariable as exc:
        field = _missing_field(exc, data)
        if field is None:
            raise ValidationError("the template uses a missing value", {path: str(exc)}) from None
        raise ValidationError(
            "the data lacks a value the template uses", {field: f"is missing (used by {path})"}
        ) from None
    except LimitExceeded as exc:
        raise RenderError("the template went over a limit", {path: str(exc)}) from None
    except SecurityError as exc:
        raise RenderError("the sandbox refused the template", {path: f"unsafe: {exc}"}) from None
    except Exception as exc:  # noqa: BLE001 -- a template is user code: any failure is a 400
        problem = f"{type(exc).__name__}: {exc}"[:MAX_MESSAGE]
        raise RenderError("the template could not be rendered", {path: problem}) from None
    return text.strip()


def _missing_field(exc: MissingVariable, data: dict) -> str | None:
    """`data.user.name` for a missing `user.name`; None if the owner is not in the data."""
    if exc.owner is missing:
        return f"data.{exc.name}"
    stack: list[tuple[Any, tuple]] = [(data, ())]
    while stack:  # iterative: JSON may nest deeper than the recursion limit
        value, path = stack.pop()
        if value is exc.owner:
            return ".".join(["data", *map(str, path), str(exc.name)])
        if isinstance(value, dict):
            stack.extend((child, (*path, key)) for key, child in value.items())
        elif isinstance(value, list):
            stack.extend((child, (*path, index)) for index, child in enumerate(value))
    return None


_INLINER = css_inline.CSSInliner(load_remote_stylesheets=False)  # no fetch for <link href>
_TEXT_CONFIG = ParserConfig(css=CSS_PROFILES["strict"], display_links=True)


def html_to_text(html: str) -> str:
    """A plain-text rendering of an HTML email: block layout, lists, and links as [text](url)."""
    lines = (line.rstrip() for line in get_text(html, _TEXT_CONFIG).splitlines())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _finish(where: str, channel: str, parts: dict[str, str]) -> dict[str, str]:
    required = REQUIRED_PARTS[channel]
    if not parts.get(required):
        raise ValidationError("a required part renders empty", {f"{where}.{required}": "is empty"})
    if channel != "email":
        return parts
    subject = parts["subject"]
    if len(subject.splitlines()) > 1:
        raise ValidationError(
            "the subject must be one line", {f"{where}.subject": "renders to more than one line"}
        )
    finished = {"subject": subject, "text": parts.get("text", "")}
    if parts.get("html"):
        html = _INLINER.inline(parts["html"])
        if len(html) > OUTPUT_LIMITS["html"]:
            raise RenderError(
                "the template went over a limit",
                {f"{where}.html": f"is over {OUTPUT_LIMITS['html']} characters with CSS inlined"},
            )
        finished["html"] = html
        finished["text"] = finished["text"] or html_to_text(html)
    if not finished["text"]:
        raise ValidationError("the email renders empty", {f"{where}.text": "is empty"})
    return finished
