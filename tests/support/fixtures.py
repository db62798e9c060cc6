"""pytest fixtures `smtp_server` and `fake_twilio`: the real SMTP server and the fake Twilio.

A test module imports the `*_fixture` functions; the fixtures keep their short names, and no
test argument shadows an import (which ruff reports as F811):

    (registered for every test module by tests/conftest.py: pytest_plugins)
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from tests.support.fake_twilio import FakeTwilio
from tests.support.smtp_server import SmtpServer


@pytest.fixture(name="smtp_server")
def smtp_server_fixture() -> Iterator[SmtpServer]:
    """A running SmtpServer accepting mail (plain, no AUTH); `.env()` gives its MAIL_* settings."""
    with SmtpServer() as server:
        yield server


@pytest.fixture(name="fake_twilio")
def fake_twilio_fixture() -> Iterator[FakeTwilio]:
    """A running FakeTwilio in mode "ok"; `.env()` gives its TWILIO_* settings."""
    with FakeTwilio() as twilio:
        yield twilio


# The short names work too (`import smtp_server, fake_twilio`), at the price of ruff's F811.
smtp_server = smtp_server_fixture
fake_twilio = fake_twilio_fixture


def unused_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released): connections fail."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
