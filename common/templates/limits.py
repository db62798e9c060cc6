"""The limits of time and size a template renders within, and the guards that enforce them.

The sandbox (common/templates/sandbox.py) calls these guards from inside a render.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from jinja2 import Template
from jinja2.exceptions import SecurityError

# Wall-clock time, so it must leave room for a loaded machine: a legitimate big template that
# overran it under load would be refused (400) although nothing is wrong with it.
RENDER_SECONDS = 0.5
OUTPUT_LIMITS = {"html": 200_000}  # characters of a rendered part; other parts: OUTPUT_LIMIT
OUTPUT_LIMIT = 20_000
# No string or list a template builds may pass this (room for a whole html part): a single
# `'x' * 10**10` or join allocates before any deadline could be checked.
MAX_VALUE = 2 * OUTPUT_LIMITS["html"]
MAX_NUMBER_BITS = 4_096
MAX_RANGE = 10_000


class LimitExceeded(Exception):
    """Raised deep in the sandbox; `render` turns it into a RenderError naming the part."""


# -- time -------------------------------------------------------------------------------------

# Per thread (and per asyncio task): the web server renders on several threads at once.
_deadline: ContextVar[float | None] = ContextVar("template_deadline", default=None)


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Inside this block, a template that runs for more than `seconds` raises LimitExceeded."""
    token = _deadline.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _deadline.reset(token)


def tick() -> None:
    until = _deadline.get()
    if until is not None and time.monotonic() > until:
        raise LimitExceeded(f"took longer than {RENDER_SECONDS * 1000:.0f} ms to render")


def generate(template: Template, data: dict, part: str) -> str:
    """The part rendered, stopped by LimitExceeded once it outgrows its limit or the deadline."""
    limit = OUTPUT_LIMITS.get(part, OUTPUT_LIMIT)
    chunks: list[str] = []
    size = 0
    for chunk in template.generate(data):
        size += len(chunk)
        if size > limit:
            raise LimitExceeded(f"renders to more than {limit} characters")
        tick()
        chunks.append(chunk)
    return "".join(chunks)


# -- size -------------------------------------------------------------------------------------


def check_size(size: int) -> None:
    if size > MAX_VALUE:
        raise LimitExceeded(f"builds a value of more than {MAX_VALUE} characters or items")


def checked(value: Any) -> Any:
    if isinstance(value, str | bytes | list | tuple | dict):
        check_size(len(value))
    return value


SEQUENCES = (str, bytes, list, tuple)
_PRINTF_WIDTHS = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")


def check_printf(template: Any) -> None:
    for width, precision in _PRINTF_WIDTHS.findall(str(template)):
        for number in (width, precision):
            if number == "*" or len(number) > 4 or (number and int(number) > 1000):
                raise LimitExceeded("uses a %-format width over 1000")


def check_binop(operator: str, left: Any, right: Any) -> None:
    if operator == "+" and isinstance(left, SEQUENCES) and isinstance(right, SEQUENCES):
        check_size(len(left) + len(right))
    elif operator == "*":
        for sequence, times in ((left, right), (right, left)):
            if isinstance(sequence, SEQUENCES) and isinstance(times, int):
                check_size(len(sequence) * times)
        if isinstance(left, int) and isinstance(right, int):
            _check_bits(abs(left).bit_length() + abs(right).bit_length())
    elif operator == "**" and isinstance(left, int) and isinstance(right, int) and right > 0:
        _check_bits(abs(left).bit_length() * right)
    elif operator == "%" and isinstance(left, str):
        check_printf(left)


def _check_bits(bits: int) -> None:
    if bits > MAX_NUMBER_BITS:
        raise LimitExceeded(f"computes a number of more than {MAX_NUMBER_BITS} bits")


def replaced_size(text: Any, old: Any, new: Any, count: Any = -1) -> int:
    text, old, new = str(text), str(old), str(new)
    hits = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    return len(text) + hits * (len(new) - len(old))


def bounded_range(*args: int) -> range:
    """The template's `range`: refused past MAX_RANGE numbers (also checked at save)."""
    numbers = range(*args)
    try:
        size = len(numbers)
    except OverflowError:
        size = MAX_RANGE + 1
    if size > MAX_RANGE:
        raise LimitExceeded(f"asks for a range of more than {MAX_RANGE} numbers")
    return numbers


# -- methods ----------------------------------------------------------------------------------

# Methods of data values a template may call; the rest (ljust, zfill, expandtabs, translate,
# encode, copy...) can inflate a value or are of no use in a message.
_SAFE_METHODS = frozenset(
    "capitalize casefold count endswith find index isalnum isalpha isdigit islower isnumeric"
    " isspace istitle isupper join lower lstrip partition removeprefix removesuffix replace"
    " rfind rindex rpartition rsplit rstrip split splitlines startswith strip swapcase title"
    " upper get items keys values".split()
)


def check_method(owner: Any, name: str, args: tuple) -> tuple:
    """The call's arguments; a join's iterable comes back as a list, so measuring it first does
    not use it up. SecurityError for a method outside _SAFE_METHODS."""
    if name not in _SAFE_METHODS:
        raise SecurityError(f"the method {name!r} is not available in templates")
    if name == "join" and args:
        items = list(args[0])
        sizes = sum(len(item) for item in items if isinstance(item, str | bytes))
        check_size(len(owner) * len(items) + sizes)
        return (items, *args[1:])
    if name == "replace" and len(args) >= 2:
        check_size(replaced_size(owner, *args[:3]))
    return args
