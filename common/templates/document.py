"""The template document a client saves: its shape, limits and safety, checked in one pass.

`validate_document` names every bad field by its dotted path (`locales.fr.email.subject`) and
returns the document normalised to the known fields, ready to store and to render.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from jinja2.exceptions import SecurityError, TemplateSyntaxError
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from common.errors import ValidationError
from common.send_options import category_problem
from common.templates.engine import CHANNELS, LOCALE_PATTERN, check_safe, compile_part

KEY_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
FIELDS = (
    "key",
    "description",
    "default_locale",
    "variables",
    "locales",
    "category",
    "transactional",
)
MAX_DESCRIPTION = 500
MAX_SUBJECT_SOURCE = 1_000
MAX_PART_SOURCE = 100_000
REF_KEYWORDS = ("$ref", "$dynamicRef")


def validate_document(body: Any, key: str | None = None) -> dict:
    """The normalised document, or a ValidationError naming each bad field.

    `key` comes from the path of a PUT: the body may repeat it but not contradict it.
    """
    if not isinstance(body, Mapping):
        raise ValidationError("the template must be a JSON object")
    problems: dict[str, str] = {}
    for name in sorted(set(body) - set(FIELDS), key=str):
        problems[str(name)[:64]] = "is not a known field"

    key = _key(body.get("key"), key, problems)
    description = body.get("description")
    if description is None:
        description = ""
    elif not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
        problems["description"] = f"must be a string of at most {MAX_DESCRIPTION} characters"

    variables = body.get("variables")
    if variables is not None:
        _check_schema(variables, problems)

    locales = _locales(body.get("locales"), problems)
    default_locale = body.get("default_locale")
    if default_locale is None:
        problems["default_locale"] = "is required"
    elif not isinstance(default_locale, str) or (
        locales is not None and default_locale not in locales
    ):
        known = f" ({', '.join(map(str, locales))})" if locales else ""
        problems["default_locale"] = f"must be one of the locales{known}"
    elif locales is not None:
        _check_same_channels(locales, default_locale, problems)

    sending = _sending_rules(body, problems)
    if problems:
        raise ValidationError("invalid template", problems)
    return {
        "key": key,
        "description": description,
        "default_locale": default_locale,
        "variables": variables,
        "locales": locales,
        **sending,
    }


def _sending_rules(body: Mapping, problems: dict[str, str]) -> dict:
    """The template's category for its sends, and whether they are transactional (they then
    ignore the recipient's opt-outs and quiet hours: password resets, security codes). Kept
    out of the document when not given, so that older documents stay as they were."""
    rules: dict[str, Any] = {}
    if body.get("category") is not None:
        problem = category_problem(body["category"])
        if problem:
            problems["category"] = problem
        else:
            rules["category"] = body["category"].lower()
    if body.get("transactional") is not None:
        if not isinstance(body["transactional"], bool):
            problems["transactional"] = "must be true or false"
        elif body["transactional"]:
            rules["transactional"] = True
    return rules


def _check_schema(schema: Any, problems: dict[str, str]) -> None:
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        where = ".".join(["variables", *map(str, exc.path)])
        problems[where] = f"is not a valid JSON Schema: {exc.message[:200]}"
        return
    # Only references inside the schema: the data is checked without fetching anything.
    stack: list[tuple[Any, str]] = [(schema, "variables")]
    while stack:
        value, where = stack.pop()
        if isinstance(value, dict):
            for name, child in value.items():
                if name in REF_KEYWORDS and isinstance(child, str) and not child.startswith("#"):
                    problems[f"{where}.{name}"] = "must be a reference inside the schema (#/...)"
                if name == "pattern" and isinstance(child, str):
                    problem = _pattern_problem(child)
                    if problem:
                        problems[f"{where}.{name}"] = problem
                if name == "patternProperties" and isinstance(child, dict):
                    problems[f"{where}.{name}"] = "is not supported: name the properties"
                stack.append((child, f"{where}.{name}"))
        elif isinstance(value, list):
            stack.extend((child, f"{where}.{index}") for index, child in enumerate(value))


# A group holding a quantifier, itself quantified: `(a+)+`, `(\w*)*`, `(a|aa){2,}`. Python's
# `re` backtracks through such patterns exponentially, and it checks every send's data.
NESTED_QUANTIFIER = re.compile(r"\([^()]*[+*}][^()]*\)\s*[+*{]")
MAX_PATTERN = 200


def _pattern_problem(pattern: str) -> str | None:
    """Why a `pattern` could stall the service on crafted data (or is too long), or None."""
    if len(pattern) > MAX_PATTERN:
        return f"is longer than {MAX_PATTERN} characters"
    if NESTED_QUANTIFIER.search(pattern):
        return "repeats a repeated group, which can take exponential time: simplify it"
    return None


def _key(in_body: Any, in_path: str | None, problems: dict[str, str]) -> str | None:
    if in_path is not None and in_body is not None and in_body != in_path:
        problems["key"] = "does not match the key in the path"
        return None
    key = in_path if in_path is not None else in_body
    if key is None:
        problems["key"] = "is required"
    elif not isinstance(key, str) or not KEY_PATTERN.fullmatch(key):
        problems["key"] = "must be 1 to 64 of a-z 0-9 _ . - starting with a letter or digit"
    return key


def _locales(locales: Any, problems: dict[str, str]) -> dict | None:
    if not isinstance(locales, Mapping) or not locales:
        problems["locales"] = 'must be an object of at least one locale, like {"en": {...}}'
        return None
    normalised: dict[str, dict] = {}
    seen: dict[str, str] = {}
    for tag, channels in locales.items():
        where = f"locales.{str(tag)[:64]}"
        if not isinstance(tag, str) or not LOCALE_PATTERN.fullmatch(tag):
            problems[where] = "is not a locale tag like en, fr-CA or zh-Hant"
        elif tag.lower() in seen:
            problems[where] = f"repeats the locale {seen[tag.lower()]}"
        else:
            seen[tag.lower()] = tag
        normalised[tag] = _channels(where, channels, problems)
    return normalised


def _channels(where: str, channels: Any, problems: dict[str, str]) -> dict:
    if not isinstance(channels, Mapping) or not channels:
        problems[where] = f"must cover at least one channel: {', '.join(CHANNELS)}"
        return {}
    normalised: dict[str, dict] = {}
    for channel, parts in channels.items():
        if channel not in CHANNELS:
            problems[f"{where}.{channel}"[:200]] = f"is not a channel: {', '.join(CHANNELS)}"
        else:
            normalised[channel] = _parts(f"{where}.{channel}", channel, parts, problems)
    return normalised


def _parts(where: str, channel: str, parts: Any, problems: dict[str, str]) -> dict:
    if not isinstance(parts, Mapping):
        problems[where] = f"must be an object of parts: {', '.join(CHANNELS[channel])}"
        return {}
    normalised: dict[str, str] = {}
    for name, source in parts.items():
        if name not in CHANNELS[channel]:
            problems[f"{where}.{name}"[:200]] = "is not a known part"
        elif source is not None:
            problem = _part_problem(source, name)
            if problem:
                problems[f"{where}.{name}"] = problem
            normalised[name] = source
    given = {name for name, source in normalised.items() if isinstance(source, str) and source}
    if channel == "email" and "subject" not in given:
        problems.setdefault(f"{where}.subject", "is required")
    if channel == "email" and not given & {"text", "html"}:
        problems.setdefault(f"{where}.text", "is required (or html)")
    if channel == "sms" and "text" not in given:
        problems.setdefault(f"{where}.text", "is required")
    if channel == "in_app" and "body" not in given:
        problems.setdefault(f"{where}.body", "is required")
    return normalised


def _part_problem(source: Any, name: str) -> str | None:
    """Why a part's template source cannot be saved, or None."""
    limit = MAX_SUBJECT_SOURCE if name == "subject" else MAX_PART_SOURCE
    if not isinstance(source, str):
        return "must be a string"
    if len(source) > limit:
        return f"must be at most {limit} characters"
    try:
        check_safe(source)
        compile_part(source, html=name == "html")
    except TemplateSyntaxError as exc:
        return f"syntax error on line {exc.lineno}: {exc.message}"
    except SecurityError as exc:
        return f"unsafe: {exc}"
    return None


def _check_same_channels(locales: dict, default: str, problems: dict[str, str]) -> None:
    """Every locale covers the default locale's channels, so a fallback never lacks one."""
    expected = set(locales[default])
    for tag, channels in locales.items():
        if channels and set(channels) != expected:
            problems.setdefault(
                f"locales.{tag}",
                f"covers {', '.join(sorted(channels)) or 'nothing'} but {default} covers "
                f"{', '.join(sorted(expected))}: every locale covers the same channels",
            )
