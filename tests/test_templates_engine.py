"""The store-free core of templates: document validation, the sandbox, rendering, SMS segments."""

from __future__ import annotations

import copy
import time

import pytest
from jinja2.sandbox import SecurityError

from common.errors import ValidationError
from common.templates.document import validate_document
from common.templates.engine import RenderError, check_safe, pick_locale, render, validate_data
from common.templates.sms import segments

GOOD = {
    "key": "welcome",
    "description": "Sent when an account is created",
    "default_locale": "en",
    "variables": {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name"],
    },
    "locales": {
        "en": {
            "email": {"subject": "Hi {{ name }}", "text": "Hello {{ name }}", "html": "<p>x</p>"},
            "sms": {"text": "Hi {{ name }}"},
        },
        "fr": {
            "email": {"subject": "Salut {{ name }}", "html": "<p>Bonjour {{ name }}</p>"},
            "sms": {"text": "Salut {{ name }}"},
        },
        "fr-CA": {
            "email": {"subject": "Allo {{ name }}", "text": "Bonjour {{ name }}"},
            "sms": {"text": "Allo {{ name }}"},
        },
    },
}


def bad(**changes) -> dict:
    """GOOD with the dotted paths in `changes` set (None deletes)."""
    document = copy.deepcopy(GOOD)
    for path, value in changes.items():
        *parents, last = path.split("__")
        target = document
        for name in parents:
            target = target[name.replace("_", "-") if name == "fr_CA" else name]
        if value is None:
            del target[last]
        else:
            target[last] = value
    return document


def fields_of(body, key=None) -> dict:
    with pytest.raises(ValidationError) as caught:
        validate_document(body, key)
    return caught.value.fields


def one_part(source: str, channel: str = "sms", part: str = "text", **extra) -> dict:
    """A document built directly, skipping validate_document (and so check_safe)."""
    parts = {"subject": "s", part: source} if channel == "email" else {part: source}
    return {"key": "t", "default_locale": "en", "locales": {"en": {channel: parts}}, **extra}


# -- the document ---------------------------------------------------------------------------


def test_a_good_document_comes_back_normalised():
    document = validate_document({**GOOD, "description": None}, "welcome")
    assert set(document) == {"key", "description", "default_locale", "variables", "locales"}
    assert document["key"] == "welcome" and document["description"] == ""
    assert document["locales"]["fr"]["sms"] == {"text": "Salut {{ name }}"}


@pytest.mark.parametrize(
    "body, field",
    [
        (bad(key="Welcome!"), "key"),
        (bad(key=None), "key"),
        (bad(colour="red"), "colour"),
        (bad(description="x" * 501), "description"),
        (bad(default_locale=None), "default_locale"),
        (bad(default_locale="de"), "default_locale"),
        (bad(variables={"type": "nonsense"}), "variables.type"),
        (bad(variables={"$ref": "http://169.254.169.254/schema"}), "variables.$ref"),
        (bad(variables__properties__name={"$ref": "other.json"}), "variables.properties.name.$ref"),
        (bad(locales={}), "locales"),
        (bad(locales__EN={"sms": {"text": "x"}}), "locales.EN"),
        (bad(locales__fr={}), "locales.fr"),
        (bad(locales__fr__push={"text": "x"}), "locales.fr.push"),
        (bad(locales__fr__email__subject=None), "locales.fr.email.subject"),
        (bad(locales__fr__email__subject="x" * 1001), "locales.fr.email.subject"),
        (bad(locales__fr__email__html=None), "locales.fr.email.text"),
        (bad(locales__fr__email__footer="x"), "locales.fr.email.footer"),
        (bad(locales__fr__sms__text=42), "locales.fr.sms.text"),
        (bad(locales__fr__sms__text="x" * 100_001), "locales.fr.sms.text"),
        (bad(locales__fr__sms=None), "locales.fr"),
        (bad(locales__fr__in_app={"title": "t"}), "locales.fr.in_app.body"),
    ],
)
def test_each_bad_field_is_named(body, field):
    assert field in fields_of(body)


def test_the_path_key_must_match_the_body():
    assert fields_of(GOOD, "other") == {"key": "does not match the key in the path"}
    assert validate_document({k: v for k, v in GOOD.items() if k != "key"}, "w")["key"] == "w"


def test_every_locale_covers_the_same_channels():
    fields = fields_of(bad(locales__fr_CA__sms=None))
    assert list(fields) == ["locales.fr-CA"] and "sms" in fields["locales.fr-CA"]


def test_a_syntax_error_names_the_part_and_line():
    fields = fields_of(bad(locales__fr__email__html="<p>\n{{ name }\n</p>"))
    assert fields["locales.fr.email.html"].startswith("syntax error on line 2")


# -- the sandbox ----------------------------------------------------------------------------

ESCAPES = [
    "{{ ''.__class__.__mro__ }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ ''|attr('__class__') }}",
    "{{ x['__class__'] }}",
]


@pytest.mark.parametrize(
    "source",
    [
        *ESCAPES,
        "{{ self._TemplateReference__context }}",
        "{{ self }}",
        "{{ namespace() }}",
        "{{ lipsum(10**6) }}",
        "{{ joiner() }}",
        "{{ data|map(attribute='__class__')|list }}",
        "{{ data|selectattr('__class__')|list }}",
        "{{ '{0.__class__}'.format(x) }}",
        "{% include 'other' %}",
        "{% for i in range(1000000) %}{% endfor %}",
    ],
)
def test_check_safe_refuses_a_reach_for_the_interpreter(source):
    with pytest.raises(SecurityError, match=r"\(line 1\)"):
        check_safe(source)
    assert "unsafe" in fields_of(bad(locales__fr__sms__text=source))["locales.fr.sms.text"]


def test_check_safe_lets_ordinary_templates_through():
    check_safe(
        "{% for item in order['items'] if item.qty %}{{ loop.index }}. {{ item.name|upper }}"
        " {{ item.price|currency('EUR') }}{% endfor %}{{ name|default('you')|replace('_', ' ') }}"
    )


@pytest.mark.parametrize("source", ESCAPES)
def test_the_sandbox_refuses_at_render_too(source):
    with pytest.raises(RenderError) as caught:
        render(one_part(source), "sms", "en", {"x": {}})
    assert "class" not in str(caught.value.fields).replace("'__class__'", "")
    assert "locales.en.sms.text" in caught.value.fields


def test_a_template_cannot_change_its_data():
    with pytest.raises(RenderError, match="sandbox"):
        render(one_part("{{ items.append(1) }}"), "sms", "en", {"items": []})


# -- variables and data ---------------------------------------------------------------------


def test_a_missing_variable_is_named():
    with pytest.raises(ValidationError) as caught:
        render(GOOD, "email", "en", {"age": 1})
    assert caught.value.fields == {"data.name": "is a required property"}
    with pytest.raises(ValidationError) as caught:
        render(one_part("Hi {{ user.first }}"), "sms", "en", {"user": {"last": "Lee"}})
    assert caught.value.fields == {"data.user.first": "is missing (used by locales.en.sms.text)"}
    with pytest.raises(ValidationError) as caught:
        render(one_part("Hi {{ name }}", "email", "subject"), "email", None, {})
    assert caught.value.fields == {"data.name": "is missing (used by locales.en.email.subject)"}


def test_a_schema_violation_is_named():
    with pytest.raises(ValidationError) as caught:
        validate_data(GOOD, {"name": "Ann", "age": "old"})
    assert list(caught.value.fields) == ["data.age"]
    for data in ([], {"blob": "x" * 70_000}):
        with pytest.raises(ValidationError, match="data"):
            validate_data(GOOD, data)
    validate_data({**GOOD, "variables": None}, {"anything": [1, 2]})


def test_a_schema_ref_is_never_fetched():
    document = {**GOOD, "variables": {"$ref": "http://127.0.0.1:9/schema.json"}}
    with pytest.raises(ValidationError) as caught:
        validate_data(document, {"name": "Ann"})
    assert list(caught.value.fields) == ["template.variables"]


# -- locales --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "requested, chosen",
    [
        ("fr-CA", "fr-CA"),
        ("FR-ca", "fr-CA"),
        ("fr_CA", "fr-CA"),
        ("fr-BE", "fr"),
        ("fr", "fr"),
        ("de-DE", "en"),
        ("not a locale!", "en"),
        (None, "en"),
    ],
)
def test_locale_fallback(requested, chosen):
    assert pick_locale(GOOD, requested) == chosen
    assert render(GOOD, "sms", requested, {"name": "Ann"}).locale == chosen


# -- rendering ------------------------------------------------------------------------------


def test_html_is_escaped_only_in_the_html_part():
    document = one_part("<p>{{ name }}</p>", "email", "html")
    document["locales"]["en"]["email"]["text"] = "{{ name }}"
    parts = render(document, "email", "en", {"name": "<b>Ann</b>"}).parts
    assert "&lt;b&gt;Ann&lt;/b&gt;" in parts["html"] and "<b>" not in parts["html"]
    assert parts["text"] == "<b>Ann</b>"


def test_css_is_inlined_and_text_derived_from_html():
    html = (
        "<html><head><style>p { color: red }</style></head><body><h1>Welcome</h1>"
        "<p>Hello {{ name }}, <a href='https://example.com/start'>start here</a>.</p></body></html>"
    )
    parts = render(one_part(html, "email", "html"), "email", "en", {"name": "Ann"}).parts
    assert '<p style="color: red;">' in parts["html"] and "<style>" not in parts["html"]
    assert parts["text"].startswith("Welcome\n")
    assert "Hello Ann, [start here](https://example.com/start)." in parts["text"]


def test_a_channel_the_template_lacks_is_named():
    with pytest.raises(ValidationError) as caught:
        render(GOOD, "in_app", "en", {"name": "Ann"})
    assert caught.value.fields == {"template": "has no in_app parts"}
    assert caught.value.message == "the template has no in_app parts"


def test_the_subject_is_one_line_and_parts_are_stripped():
    document = one_part("  Hi {{ name }}  ", "email", "subject")
    document["locales"]["en"]["email"]["text"] = "\n Body \n"
    parts = render(document, "email", "en", {"name": "Ann"}).parts
    assert parts == {"subject": "Hi Ann", "text": "Body"}
    with pytest.raises(ValidationError) as caught:
        render(document, "email", "en", {"name": "Ann\r\nBcc: x@example.com"})
    assert list(caught.value.fields) == ["locales.en.email.subject"]


def test_in_app_parts():
    document = one_part("{{ n }} new", "in_app", "body")
    document["locales"]["en"]["in_app"].update(title="Inbox", action_url="/inbox?u={{ n }}")
    parts = render(document, "in_app", "en", {"n": 3}).parts
    assert parts == {"body": "3 new", "title": "Inbox", "action_url": "/inbox?u=3"}


# -- limits ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source, problem",
    [
        ("{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}", "ms"),
        (
            "{% for a in r %}{% for b in r %}{% for c in r %}{% endfor %}{% endfor %}{% endfor %}",
            "ms",
        ),
        (
            "{% for i in range(10000) %}{% for j in range(10000) %}x{% endfor %}{% endfor %}",
            "more than",
        ),
        ("{{ 'x' * 10**10 }}", "more than"),
        ("{{ 7 ** 999999 }}", "bits"),
        ("{% set a = 'x' * 300000 %}{% set b = a ~ a ~ a ~ a %}", "more than"),
        (
            "{% set a %}{% for i in range(9999) %}{{ 'y' * 999 }}{% endfor %}{% endset %}",
            "more than",
        ),
        ("{{ 'x'|center(10**10) }}", "more than"),
        ("{{ ('x' * 1000)|replace('', 'y' * 1000) }}", "more than"),
        ("{{ '%999999999d'|format(1) }}", "width"),
        ("{{ ('&' * 9999)|forceescape|forceescape|forceescape|forceescape }}", "more than"),
        ("{{ 'x'.ljust(10**10) }}", "not available"),
    ],
)
def test_output_size_and_time_are_bounded(source, problem):
    started = time.monotonic()
    with pytest.raises(RenderError) as caught:
        render(one_part(source), "sms", "en", {"r": list(range(3000))})
    assert time.monotonic() - started < 2
    assert problem in caught.value.fields["locales.en.sms.text"]


def test_a_big_html_part_is_allowed_but_bounded():
    # Few iterations of long words: the size limit is met long before the time limit.
    html = "<p>{% for i in range(n) %}{{ word }} {% endfor %}</p>"
    word = "ok" + "k" * 98
    parts = render(one_part(html, "email", "html"), "email", "en", {"n": 1500, "word": word})
    assert parts.parts["html"].count(word) == 1500  # 150 KB: allowed
    with pytest.raises(RenderError, match="limit") as refused:
        render(one_part(html, "email", "html"), "email", "en", {"n": 2500, "word": word})
    assert "characters" in str(refused.value.fields)  # the size limit, not the clock


# -- locale filters -------------------------------------------------------------------------


def text(source: str, locale: str, data: dict, timezone: str | None = None) -> str:
    document = {"key": "t", "default_locale": "en", "locales": {}}
    for tag in ("en", "fr", "de"):
        document["locales"][tag] = {"sms": {"text": source}}
    return render(document, "sms", locale, data, timezone=timezone).parts["text"]


def test_dates_follow_the_locale():
    assert text("{{ d|date('long') }}", "en", {"d": "2026-03-01"}) == "March 1, 2026"
    assert text("{{ d|date('long') }}", "fr", {"d": "2026-03-01"}) == "1 mars 2026"


def test_numbers_and_currencies_follow_the_locale():
    assert text("{{ n|number }}", "en", {"n": 1234567.5}) == "1,234,567.5"
    assert text("{{ n|number }}", "de", {"n": 1234567.5}) == "1.234.567,5"
    assert text("{{ n|currency('EUR') }}", "fr", {"n": "12.5"}) == "12,50\u00a0€"
    assert text("{{ n|percent }}", "en", {"n": 0.25}) == "25%"


def test_times_shift_to_the_recipients_time_zone():
    data = {"t": "2026-03-01T23:30:00Z"}
    assert text("{{ t|date('short') }} {{ t|time('HH:mm') }}", "en", data) == "3/1/26 23:30"
    shifted = text("{{ t|date('short') }} {{ t|time('HH:mm') }}", "en", data, "Asia/Tokyo")
    assert shifted == "3/2/26 08:30"
    assert "3/2/26, 8:30" in text("{{ t|datetime('short') }}", "en", data, "Asia/Tokyo")


def test_bad_dates_numbers_and_zones_are_refused():
    with pytest.raises(ValidationError, match="data|render"):
        text("{{ d|date }}", "en", {"d": "yesterday"})
    with pytest.raises(ValidationError):
        text("{{ n|number }}", "en", {"n": "1e999999999"})
    with pytest.raises(ValidationError) as caught:
        text("x", "en", {}, "Mars/Olympus")
    assert list(caught.value.fields) == ["timezone"]


# -- SMS segments ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "message, expected",
    [
        ("a" * 160, ("GSM-7", 1)),
        ("a" * 161, ("GSM-7", 2)),
        ("a" * 306, ("GSM-7", 2)),
        ("a" * 307, ("GSM-7", 3)),
        ("hi 😀", ("UCS-2", 1)),
        ("ж" * 70, ("UCS-2", 1)),
        ("ж" * 71, ("UCS-2", 2)),
        ("😀" * 36, ("UCS-2", 2)),
        ("€" * 80, ("GSM-7", 1)),
        ("€" * 81, ("GSM-7", 2)),
        ("a" * 159 + "€", ("GSM-7", 2)),
        ("", ("GSM-7", 0)),
    ],
)
def test_sms_segments(message, expected):
    assert segments(message) == expected
