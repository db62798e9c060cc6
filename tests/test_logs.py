"""The log format: one line per event, whatever the logged values contain."""

from __future__ import annotations

import logging
import sys

from common.logs import FORMAT, OneLineFormatter, configure_logging


def record(message: str, *args, exc_info=None) -> logging.LogRecord:
    return logging.LogRecord("common.test", logging.WARNING, __file__, 1, message, args, exc_info)


def test_line_breaks_in_values_are_escaped():
    line = OneLineFormatter(FORMAT).format(
        record(
            "event=send_failed detail=%s key=%s",
            "refused\r\n2026-11-25 INFO common.service event=sent",
            "k1\nk2\rk3\u2028k4\x85k5",
        )
    )

    assert "\n" not in line and "\r" not in line
    assert len(line.splitlines()) == 1
    assert line.endswith(
        "detail=refused\\r\\n2026-11-25 INFO common.service event=sent"
        " key=k1\\nk2\\rk3\\u2028k4\\x85k5"
    )


def test_message_without_line_breaks_is_unchanged():
    line = OneLineFormatter("%(message)s").format(record("event=sent id=%s", "abc"))

    assert line == "event=sent id=abc"


def test_traceback_keeps_its_lines_and_the_message_is_escaped():
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        exc_info = sys.exc_info()

    text = OneLineFormatter("%(message)s").format(record("path=%s", "/a\n/b", exc_info=exc_info))

    first, *traceback = text.splitlines()
    assert first == "path=/a\\n/b"
    assert traceback[0] == "Traceback (most recent call last):"
    assert traceback[-2:] == ["ValueError: bad", "value"]


def test_configured_handler_uses_the_escaping_formatter():
    root = logging.getLogger()
    before = list(root.handlers), root.level
    try:
        configure_logging("INFO")
        ours = [h for h in root.handlers if getattr(h, "_notification_service", False)]
        assert ours and isinstance(ours[0].formatter, OneLineFormatter)
    finally:
        for handler in root.handlers[:]:
            if handler not in before[0]:
                root.removeHandler(handler)
        root.setLevel(before[1])
