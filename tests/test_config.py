"""Configuration: every problem named at once, secrets masked, seed's names honoured."""

import subprocess
import sys

import pytest

from common.config import load_settings
from common.errors import ConfigError


def test_nothing_set_means_embedded_defaults():
    settings = load_settings({})
    assert settings.mongo_uri is None and settings.rabbitmq_url is None
    assert settings.retry_schedule == (30, 120, 600, 1800, 3600)
    assert settings.max_retries == 5 and settings.port == 8080


def test_every_problem_is_named_in_one_error():
    with pytest.raises(ConfigError) as caught:
        load_settings(
            {
                "MONGO_URI": "localhost:27017",
                "TWILIO_SID": "AC123",
                "PORT": "eighty",
                "RETRY_SCHEDULE": "a,b",
            }
        )
    text = " | ".join(caught.value.problems)
    for name in ("MONGO_URI", "TWILIO_AUTH_TOKEN", "PORT", "RETRY_SCHEDULE"):
        assert name in text


def test_ssl_alone_turns_starttls_off():
    settings = load_settings(
        {"MAIL_SERVER": "smtp.example.com", "MAIL_USE_SSL": "true", "MAIL_DEFAULT_SENDER": "a@b.co"}
    )
    assert settings.mail_use_ssl and not settings.mail_use_tls


def test_describe_masks_secrets():
    settings = load_settings(
        {
            "RABBITMQ_URL": "amqp://guest:s3cret@localhost:5672/%2F",
            "MAIL_SERVER": "smtp.example.com",
            "MAIL_USERNAME": "me@example.com",
            "MAIL_PASSWORD": "hunter2",
        }
    )
    shown = " ".join(settings.describe().values())
    assert "s3cret" not in shown and "hunter2" not in shown
    assert "amqp://guest:****@localhost" in shown


def test_runner_refuses_a_bad_configuration_with_one_readable_message(tmp_path):
    env_file = tmp_path / "bad.env"
    env_file.write_text("PORT=eighty\nTWILIO_SID=AC1\n")
    result = subprocess.run(
        [sys.executable, "local_runner.py", "check", "--env-file", str(env_file)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "PORT='eighty' is not a whole number" in result.stderr
    assert "TWILIO_AUTH_TOKEN" in result.stderr
    assert "Traceback" not in result.stderr


def test_every_setting_is_documented_in_env_example():
    from dataclasses import fields
    from pathlib import Path

    from common.config import Settings

    example = (Path(__file__).resolve().parent.parent / ".env.example").read_text()
    missing = [f.name.upper() for f in fields(Settings) if f"# {f.name.upper()}=" not in example]
    assert missing == []
