"""The Jinja2 sandbox that templates render in: its environment, filters and save-time checks.

`check_safe` is the half of the sandbox that runs when a template is saved; the sandbox's own
checks, and the limits (common/templates/limits.py), are the half that runs while it renders.
"""

from __future__ import annotations

import functools
import types
from typing import Any

from jinja2 import Template, nodes, pass_context, pass_eval_context
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.filters import FILTERS, make_attrgetter
from jinja2.runtime import StrictUndefined, markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import missing
from jinja2.visitor import NodeTransformer

from common.templates import formatting
from common.templates.limits import (
    OUTPUT_LIMITS,
    RENDER_SECONDS,
    SEQUENCES,
    LimitExceeded,
    bounded_range,
    check_binop,
    check_method,
    check_printf,
    check_size,
    checked,
    deadline,
    generate,
    replaced_size,
    tick,
)

# What engine.py imports from here, the limits it needs among them (re-exported from limits).
__all__ = [
    "OUTPUT_LIMITS",
    "RENDER_SECONDS",
    "LimitExceeded",
    "MissingVariable",
    "check_safe",
    "compile_part",
    "deadline",
    "generate",
]


class MissingVariable(UndefinedError):
    """A missing value, with its name and owner: `render` names the field the data lacks."""

    def __init__(self, message: str | None, name: Any, owner: Any):
        super().__init__(message)
        self.name = name
        self.owner = owner


# -- the sandbox ------------------------------------------------------------------------------


class _Missing(StrictUndefined):
    """StrictUndefined that remembers what was missing, so the error can say `data.user.name`."""

    __slots__ = ()

    def __init__(self, hint=None, obj=missing, name=None, exc=UndefinedError):
        if exc is UndefinedError:  # the sandbox passes SecurityError for an unsafe attribute
            exc = functools.partial(MissingVariable, name=name, owner=obj)
        super().__init__(hint, obj, name, exc)


def _finalize(value: Any) -> Any:
    tick()
    return "" if value is None else value  # a JSON null prints as nothing, not "None"


@pass_context
def _paced(context: Any, iterable: Any) -> Any:
    """Every {% for %} iterates through this (see _Instrument), so no loop outlives the deadline."""
    for item in iterable:
        tick()
        yield item


@pass_eval_context
def _joined(eval_ctx: Any, values: list) -> str:
    """Every `~` goes through this (see _Instrument): the size is known before the join."""
    check_size(sum(len(value) if isinstance(value, str) else len(str(value)) for value in values))
    return (markup_join if eval_ctx.autoescape else str_join)(values)


class _Instrument(NodeTransformer):
    def visit_For(self, node: nodes.For) -> nodes.For:
        self.generic_visit(node)
        node.iter = nodes.Filter(node.iter, "_paced", [], [], None, None, lineno=node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        items = nodes.List(node.nodes, lineno=node.lineno)
        return nodes.Filter(items, "_joined", [], [], None, None, lineno=node.lineno)


class _Sandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"+", "*", "**", "%"})

    def __init__(self, *, html: bool):
        super().__init__(autoescape=html, undefined=_Missing, finalize=_finalize)
        # No lipsum, cycler, joiner or namespace: cycler.__init__.__globals__ and kin.
        self.globals = {"range": bounded_range, "dict": dict}
        self.filters = _filters()

    @staticmethod
    def concat(parts: Any) -> str:  # joins each captured block, macro body and {% set %}
        parts = list(parts)
        check_size(sum(map(len, parts)))
        return "".join(parts)

    def compile(self, source, name=None, filename=None, raw=False, defer_init=False):
        if isinstance(source, str):
            source = _Instrument().visit(self.parse(source, name, filename))
            source.set_environment(self)
        return super().compile(source, name, filename, raw, defer_init)

    def call(self, context, obj, /, *args, **kwargs):
        tick()
        owner = getattr(obj, "__self__", None)
        # Markup's methods are Python methods, str's are built in: both are checked.
        if isinstance(obj, types.BuiltinMethodType | types.MethodType) and isinstance(
            owner, SEQUENCES + (dict,)
        ):
            args = check_method(owner, obj.__name__, args)
        return checked(super().call(context, obj, *args, **kwargs))

    def call_binop(self, context, operator, left, right):
        tick()
        check_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def getattr(self, obj, attribute):
        tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj, argument):
        tick()
        return super().getitem(obj, argument)

    def wrap_str_format(self, value):
        if super().wrap_str_format(value) is None:
            return None

        def refused(*args, **kwargs):
            raise SecurityError("str.format is not available in templates: use the format filter")

        return refused


# -- filters ----------------------------------------------------------------------------------


def _guarded(name: str, check: Any = None) -> Any:
    """Jinja's filter `name`, refused when `check` finds its output would be too big, and with
    its result measured: a chain of small growths (`|forceescape|forceescape...`) stops too."""
    original = FILTERS[name]

    @functools.wraps(original)  # keeps jinja_pass_arg, so the same arguments arrive
    def guarded(*args: Any, **kwargs: Any) -> Any:
        if check is not None:
            check(*args, **kwargs)
        return checked(original(*args, **kwargs))

    return guarded


def _width(width: Any) -> int:
    return len(width) if isinstance(width, str) else int(width)


def _lines(text: Any) -> int:
    return str(text).count("\n") + 1


def _check_indent(indent: Any) -> None:
    if indent is not None and _width(indent) > 8:  # repeated on every line, at every depth
        raise LimitExceeded("indents JSON by more than 8")


# Filters whose output can outgrow their input many times over: checked before they run.
_CHECKS = {
    "center": lambda value, width=80: check_size(_width(width)),
    "indent": lambda s, width=4, *_, **__: check_size(len(str(s)) + _width(width) * _lines(s)),
    "replace": lambda ctx, s, old, new, count=None: check_size(replaced_size(s, old, new, count)),
    "batch": lambda value, linecount, *_, **__: check_size(_width(linecount)),
    "slice": lambda value, slices, *_, **__: check_size(_width(slices)),
    "format": lambda value, *_, **__: check_printf(value),
    "wordwrap": lambda env, s, width=79, words=True, wrapstring=None, *_, **__: check_size(
        len(str(s)) + len(wrapstring or "\n") * (len(str(s)) // max(_width(width), 1) + _lines(s))
    ),
    "tojson": lambda ctx, value, indent=None: _check_indent(indent),
}
# attr reaches any attribute by name; pprint shows Python internals; urlize repeats its
# rel/target arguments once per link found.
_DROPPED = {"attr", "pprint", "urlize"}


@pass_eval_context
def _join(eval_ctx: Any, value: Any, d: str = "", attribute: Any = None) -> str:
    items = list(value)
    if attribute is not None:
        items = list(map(make_attrgetter(eval_ctx.environment, attribute), items))
    check_size(len(str(d)) * len(items) + sum(len(str(item)) for item in items))
    return checked(FILTERS["join"](eval_ctx, items, d))


def _filters() -> dict[str, Any]:
    filters = {name: _guarded(name, _CHECKS.get(name)) for name in FILTERS if name not in _DROPPED}
    filters.update(join=_join, _paced=_paced, _joined=_joined)
    filters.update(formatting.FILTERS)
    return filters


_TEXT = _Sandbox(html=False)
_HTML = _Sandbox(html=True)


# -- saving: check_safe and compile_part ------------------------------------------------------

_REFUSED_NAMES = frozenset({"self", "namespace", "lipsum", "cycler", "joiner"})
# Not underscored, yet a way into the interpreter, or around the sandbox's format checks.
_REFUSED_ATTRIBUTES = frozenset(
    "format format_map mro func_globals func_code gi_frame gi_code cr_frame cr_code ag_frame"
    " ag_code f_globals f_locals f_builtins f_back tb_frame tb_next".split()
)
# Filters whose string arguments name attributes (`|map(attribute='__class__')`).
_ATTRIBUTE_FILTERS = frozenset(
    "map select reject selectattr rejectattr sort groupby unique min max sum".split()
)


def _private(name: Any) -> bool:
    return isinstance(name, str) and any(part.startswith("_") for part in name.split("."))


def _unsafe(node: nodes.Node) -> str | None:
    """Why `node` may not be saved, or None."""
    if isinstance(node, nodes.Extends | nodes.Include | nodes.Import | nodes.FromImport):
        return "a template cannot extend, include or import another"
    if isinstance(node, nodes.Name) and node.name in _REFUSED_NAMES:
        return f"{node.name!r} is not available in templates"
    if isinstance(node, nodes.Getattr) and (
        _private(node.attr) or node.attr in _REFUSED_ATTRIBUTES
    ):
        return f"the attribute {node.attr!r} is not allowed"
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        if _private(node.arg.value):
            return f"the item {node.arg.value!r} is not allowed"
    if isinstance(node, nodes.Filter):
        if node.name == "attr" or node.name.startswith("_"):
            return f"the filter {node.name!r} is not available"
        arguments = [*node.args, *(keyword.value for keyword in node.kwargs)]
        for argument in arguments if node.name in _ATTRIBUTE_FILTERS else ():
            if isinstance(argument, nodes.Const) and _private(argument.value):
                return f"the attribute {argument.value!r} is not allowed"
    if isinstance(node, nodes.Call) and isinstance(node.node, nodes.Name):
        if node.node.name == "range" and all(isinstance(a, nodes.Const) for a in node.args):
            try:
                bounded_range(*(argument.value for argument in node.args))
            except LimitExceeded as exc:
                return str(exc)
            except (TypeError, ValueError):
                pass
    return None


def check_safe(source: str) -> None:
    """Refuse, at save, a template that reaches for the interpreter or for a loop bomb.

    Raises TemplateSyntaxError if it does not parse, SecurityError naming the line otherwise.
    The sandbox refuses the same at render; this says so early, and where.
    """
    for node in _TEXT.parse(source).find_all(nodes.Node):
        problem = _unsafe(node)
        if problem:
            raise SecurityError(f"{problem} (line {node.lineno})")


@functools.lru_cache(maxsize=128)  # a compiled 100 KB part can weigh megabytes
def compile_part(source: str, *, html: bool = False) -> Template:
    """The part compiled in the sandbox (autoescaped if `html`); TemplateSyntaxError if not."""
    return (_HTML if html else _TEXT).from_string(source)
