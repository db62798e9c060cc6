"""Configuration: every problem named at once, secrets masked, seed's names honoured."""

import subprocess
import sys

import pytest

from common.config import Settings, load_settings
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


def test_the_seeds_sample_env_works_unchanged():
    """The seed's own `.env` (shared/seed-notification-service.md): a Gmail login alone means
    Gmail's SMTP server with STARTTLS, and its SECRET_KEY signs the web forms."""
    seed_env = {
        "SECRET_KEY": "5f3523797c241b77a8a0b8c1a6b5851f4b1d5f33d81a8e4b",
        "FLASK_DEBUG": "true",
        "MONGO_URI": "mongodb+srv://<username>:<password>@cluster0.jhdxcyy.mongodb.net/flaskdb"
        "?retryWrites=true&w=majority&appName=Cluster0",
        "MAIL_USERNAME": "your.email@gmail.com",
        "MAIL_PASSWORD": "your_app_password",
        "TWILIO_SID": "ACxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        "TWILIO_AUTH_TOKEN": "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        "TWILIO_PHONE_NUMBER": "+1234567890",
        "RABBITMQ_URL": "amqp://guest:guest@localhost:5672/%2F",
    }
    settings = load_settings(seed_env)
    assert (settings.mail_server, settings.mail_port, settings.mail_use_tls) == (
        "smtp.gmail.com",
        587,
        True,
    )
    assert settings.sender_address == "your.email@gmail.com"
    assert settings.csrf_secret == seed_env["SECRET_KEY"]
    # A CSRF_SECRET of its own still wins over the seed's name for it.
    assert load_settings({**seed_env, "CSRF_SECRET": "own"}).csrf_secret == "own"


@pytest.mark.parametrize(
    "url",
    [
        "amqp://guest:hunter2@host:notaport/%2F",
        "amqp://[::1",
        "amqp://guest:hunter2@host:99999/%2F",
        "amqp://guest:hunter2@my host/%2F",
        "amqp://guest:hunter2@host/%2F?heartbeat=often",
        "amqps://hunter2@host/vh",
    ],
)
def test_a_malformed_rabbitmq_url_is_a_configuration_error_naming_it(url):
    with pytest.raises(ConfigError) as caught:
        load_settings({"RABBITMQ_URL": url})
    message = str(caught.value)
    assert "RABBITMQ_URL" in message and "hunter2" not in message


def test_a_token_used_as_the_user_name_is_masked_like_a_password():
    shown = Settings(
        rabbitmq_url="amqps://SECRETTOKEN@host/vh",
        mongo_uri="mongodb+srv://OTHERTOKEN@cluster.example/db?w=majority",
    ).describe()
    assert shown["RABBITMQ_URL"] == "amqps://****@host/vh"
    assert shown["MONGO_URI"] == "mongodb+srv://****@cluster.example/db?w=majority"
    settings = load_settings({"MONGO_URI": "mongodb://TOKEN3@db.example:27017/x"})
    assert settings.describe()["MONGO_URI"] == "mongodb://****@db.example:27017/x"


def test_max_request_bytes_is_read_and_bounded():
    assert load_settings({}).max_request_bytes == 1_048_576
    assert load_settings({"MAX_REQUEST_BYTES": "2048"}).max_request_bytes == 2048
    with pytest.raises(ConfigError, match="MAX_REQUEST_BYTES"):
        load_settings({"MAX_REQUEST_BYTES": "100"})
