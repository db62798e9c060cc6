"""Settings from the environment and `.env`, read once per process and validated as a whole.

`load_settings` names every problem at once, so that one start-up tells the operator everything
that is wrong with the configuration.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from urllib.parse import urlparse

from dotenv import dotenv_values

from common.errors import ConfigError

DEFAULT_RETRY_SCHEDULE = (30.0, 120.0, 600.0, 1800.0, 3600.0)
# An endpoint that is down gets its events later: over about eight hours in all.
DEFAULT_WEBHOOK_RETRY_SCHEDULE = (5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0)
SECRET_FIELDS = {
    "mail_password",
    "twilio_auth_token",
    "mongo_uri",
    "rabbitmq_url",
    "csrf_secret",
    "admin_api_key",
    "auth_secret",
    "metrics_token",
}
# The seed sent mail through Gmail with only MAIL_USERNAME and MAIL_PASSWORD set.
SEED_MAIL_SERVER = "smtp.gmail.com"
TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class Settings:
    mongo_uri: str | None = None
    mongo_db: str = "notifications"
    data_dir: Path = Path("data")
    rabbitmq_url: str | None = None
    queue_name: str = "notifications"
    dlq_name: str = "notifications_dlq"
    mail_server: str | None = None
    mail_port: int = 587
    mail_use_tls: bool = True
    mail_use_ssl: bool = False
    mail_username: str | None = None
    mail_password: str | None = None
    mail_default_sender: str | None = None
    mail_default_subject: str = "You have a new notification"
    mail_timeout: float = 10.0
    twilio_sid: str | None = None
    twilio_auth_token: str | None = None
    twilio_phone_number: str | None = None
    twilio_api_base_url: str | None = None
    max_retries: int = 5
    retry_schedule: tuple[float, ...] = DEFAULT_RETRY_SCHEDULE
    sweep_interval: float = 30.0
    sweep_batch_size: int = 500
    lease_seconds: float = 30.0
    pending_grace_seconds: float = 5.0
    stale_queued_seconds: float = 600.0
    retry_jitter: float = 0.1
    publish_timeout: float = 1.5
    store_timeout: float = 3.0
    max_handling_failures: int = 5
    prefetch_count: int = 32
    delivery_workers: int = 8
    port: int = 8080
    max_request_bytes: int = 1_048_576
    request_read_timeout: float = 10.0
    log_level: str = "INFO"
    csrf_secret: str | None = None
    admin_api_key: str | None = None
    auth_secret: str | None = None
    auth_jwt_issuer: str | None = None
    auth_jwt_audience: str | None = None
    auth_jwks_url: str | None = None
    user_token_seconds: float = 3600.0
    session_seconds: float = 28800.0
    send_rate_limit: float = 500.0
    sms_per_recipient_per_hour: int = 10
    email_per_recipient_per_hour: int = 50
    sms_allowed_countries: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] | None = None
    max_schedule_days: int = 30
    transactional_categories: tuple[str, ...] = ()
    public_base_url: str | None = None
    metrics_token: str | None = None
    webhook_allow_private: bool = False
    webhook_retry_schedule: tuple[float, ...] = DEFAULT_WEBHOOK_RETRY_SCHEDULE
    webhook_timeout: float = 10.0
    webhook_failure_limit: int = 100
    webhook_secret_grace_seconds: float = 86400.0
    # The inbox's live stream (GET /users/<id>/notifications/stream) and its embeddable bell.
    stream_heartbeat_seconds: float = 15.0
    stream_max_seconds: float = 900.0
    inbox_exchange: str = "notifications.inbox"
    inbox_allowed_origins: tuple[str, ...] = ()

    @property
    def public_url(self) -> str:
        """Where recipients and providers reach this service (links in emails): PUBLIC_BASE_URL,
        else this machine's loopback address and PORT (good for trying it locally only)."""
        return (self.public_base_url or f"http://127.0.0.1:{self.port}").rstrip("/")

    @property
    def sender_address(self) -> str | None:
        return self.mail_default_sender or self.mail_username

    def describe(self) -> dict[str, str]:
        """Every setting as text, secrets masked: what `local_runner.py check` prints."""
        shown = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name in SECRET_FIELDS and value:
                value = _mask(item.name, str(value))
            elif isinstance(value, tuple):
                value = ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
            shown[item.name.upper()] = "(unset)" if value is None else str(value)
        return shown


def _mask(name: str, value: str) -> str:
    """A URL keeps its scheme, host and path; its password, or a token given as the user
    name (as for `amqps://TOKEN@host/vh`), becomes ****. Anything else is hidden whole."""
    if name not in {"mongo_uri", "rabbitmq_url"}:
        return "****"
    scheme, separator, rest = value.partition("://")
    authority_end = min((rest.find(c) for c in "/?#" if c in rest), default=len(rest))
    credentials, at, host = rest[:authority_end].rpartition("@")
    if not separator or not at:
        return value
    user, colon, _password = credentials.partition(":")
    shown = f"{user}:****" if colon else "****"
    return f"{scheme}://{shown}@{host}{rest[authority_end:]}"


def _pika_accepts(url: str) -> bool:
    """The broker client's own parse, at start-up rather than at the first publish."""
    import pika  # only where an AMQP URL is configured

    try:
        pika.URLParameters(url)
    except Exception:  # noqa: BLE001 - whatever it raises, the URL is unusable
        return False
    return True


class _Reader:
    """Reads typed values from a mapping, collecting problems instead of stopping at the first."""

    def __init__(self, env: Mapping[str, str]):
        self.env = env
        self.problems: list[str] = []

    def text(self, name: str, default: str | None = None) -> str | None:
        value = self.env.get(name)
        if value is None or value.strip() == "":
            return default
        return value.strip()

    def number(self, name: str, default, cast=int, minimum=None, maximum=None):
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = cast(raw)
        except ValueError:
            kind = "a whole number" if cast is int else "a number"
            self.problems.append(f"{name}={raw!r} is not {kind}")
            return default
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            bounds = f"from {minimum}" + (f" to {maximum}" if maximum is not None else " up")
            self.problems.append(f"{name}={raw!r} is out of range ({bounds})")
            return default
        return value

    def flag(self, name: str, default: bool) -> bool:
        raw = self.env.get(name)
        if raw is None:
            return default
        lowered = raw.strip().lower()
        if lowered in TRUE_WORDS:
            return True
        if lowered in FALSE_WORDS:
            return False
        self.problems.append(f"{name}={raw!r} is not true or false")
        return default

    def schedule(self, name: str, default=DEFAULT_RETRY_SCHEDULE) -> tuple[float, ...]:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            steps = tuple(float(part) for part in raw.split(","))
        except ValueError:
            steps = ()
        if not steps or any(step < 0 for step in steps):
            self.problems.append(
                f"{name}={raw!r} must be comma-separated delays in seconds, e.g. 30,120,600"
            )
            return default
        return steps

    def words(self, name: str, pattern: str, example: str) -> tuple[str, ...] | None:
        """A comma-separated list, each item matching `pattern`; None when unset."""
        raw = self.text(name)
        if raw is None:
            return None
        items = tuple(part.strip().lower() for part in raw.split(",") if part.strip())
        bad = [item for item in items if not re.fullmatch(pattern, item)]
        if bad or not items:
            self.problems.append(f"{name}={raw!r} must be a comma-separated list such as {example}")
            return None
        return items

    def url(self, name: str, schemes: tuple[str, ...]) -> str | None:
        raw = self.text(name)
        if raw is None:
            return None
        wanted = " or ".join(f"{s}://" for s in schemes)
        problem = f"{name} must be a URL starting with {wanted} and naming a host"
        try:
            parsed = urlparse(raw)
            parsed.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError:
            parsed = None
        if parsed is None or any(char.isspace() for char in raw):
            # The message never repeats the URL: it may hold a password.
            self.problems.append(f"{problem}; it is not a well-formed URL")
            return None
        if parsed.scheme not in schemes or not (parsed.hostname or parsed.netloc):
            self.problems.append(problem)
            return None
        if parsed.scheme in {"amqp", "amqps"} and parsed.username and parsed.password is None:
            self.problems.append(f"{name} names a user without a password: use user:password@")
            return None
        if parsed.scheme in {"amqp", "amqps"} and not _pika_accepts(raw):
            self.problems.append(f"{name} is not a URL the AMQP client can use (check its query)")
            return None
        return raw


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from `env` (default: os.environ); raise ConfigError naming every problem."""
    read = _Reader(os.environ if env is None else env)
    values = dict(
        mongo_uri=read.url("MONGO_URI", ("mongodb", "mongodb+srv")),
        mongo_db=read.text("MONGO_DB", "notifications"),
        data_dir=Path(read.text("DATA_DIR", "data")),
        rabbitmq_url=read.url("RABBITMQ_URL", ("amqp", "amqps")),
        queue_name=read.text("QUEUE_NAME", "notifications"),
        dlq_name=read.text("DLQ_NAME", "notifications_dlq"),
        mail_server=read.text("MAIL_SERVER"),
        mail_port=read.number("MAIL_PORT", 587, minimum=1, maximum=65535),
        mail_use_tls=read.flag("MAIL_USE_TLS", True),
        mail_use_ssl=read.flag("MAIL_USE_SSL", False),
        mail_username=read.text("MAIL_USERNAME"),
        mail_password=read.text("MAIL_PASSWORD"),
        mail_default_sender=read.text("MAIL_DEFAULT_SENDER"),
        mail_default_subject=read.text("MAIL_DEFAULT_SUBJECT", "You have a new notification"),
        mail_timeout=read.number("MAIL_TIMEOUT", 10.0, float, minimum=0.1),
        twilio_sid=read.text("TWILIO_SID"),
        twilio_auth_token=read.text("TWILIO_AUTH_TOKEN"),
        twilio_phone_number=read.text("TWILIO_PHONE_NUMBER"),
        twilio_api_base_url=read.url("TWILIO_API_BASE_URL", ("http", "https")),
        max_retries=read.number("MAX_RETRIES", 5, minimum=0, maximum=100),
        retry_schedule=read.schedule("RETRY_SCHEDULE"),
        sweep_interval=read.number("SWEEP_INTERVAL", 30.0, float, minimum=0.05),
        sweep_batch_size=read.number("SWEEP_BATCH_SIZE", 500, minimum=1, maximum=100_000),
        lease_seconds=read.number("LEASE_SECONDS", 30.0, float, minimum=0.3),
        pending_grace_seconds=read.number("PENDING_GRACE_SECONDS", 5.0, float, minimum=0),
        stale_queued_seconds=read.number("STALE_QUEUED_SECONDS", 600.0, float, minimum=0.1),
        retry_jitter=read.number("RETRY_JITTER", 0.1, float, minimum=0, maximum=1),
        publish_timeout=read.number("PUBLISH_TIMEOUT", 1.5, float, minimum=0.05, maximum=60),
        store_timeout=read.number("STORE_TIMEOUT", 3.0, float, minimum=0.05, maximum=120),
        max_handling_failures=read.number("MAX_HANDLING_FAILURES", 5, minimum=1, maximum=1000),
        prefetch_count=read.number("PREFETCH_COUNT", 32, minimum=1, maximum=65535),
        delivery_workers=read.number("DELIVERY_WORKERS", 8, minimum=1, maximum=256),
        port=read.number("PORT", 8080, minimum=1, maximum=65535),
        max_request_bytes=read.number("MAX_REQUEST_BYTES", 1_048_576, minimum=1024),
        request_read_timeout=read.number(
            "REQUEST_READ_TIMEOUT", 10.0, float, minimum=0.5, maximum=3600
        ),
        log_level=(read.text("LOG_LEVEL", "INFO") or "INFO").upper(),
        # The seed's SECRET_KEY signs what CSRF_SECRET would, so its .env keeps working.
        csrf_secret=read.text("CSRF_SECRET") or read.text("SECRET_KEY"),
        admin_api_key=read.text("ADMIN_API_KEY"),
        auth_secret=read.text("AUTH_SECRET"),
        auth_jwt_issuer=read.text("AUTH_JWT_ISSUER"),
        auth_jwt_audience=read.text("AUTH_JWT_AUDIENCE"),
        auth_jwks_url=read.url("AUTH_JWKS_URL", ("http", "https")),
        user_token_seconds=read.number(
            "USER_TOKEN_SECONDS", 3600.0, float, minimum=10, maximum=86400
        ),
        session_seconds=read.number("SESSION_SECONDS", 28800.0, float, minimum=60, maximum=604800),
        send_rate_limit=read.number("SEND_RATE_LIMIT", 500.0, float, minimum=0),
        sms_per_recipient_per_hour=read.number("SMS_PER_RECIPIENT_PER_HOUR", 10, minimum=0),
        email_per_recipient_per_hour=read.number("EMAIL_PER_RECIPIENT_PER_HOUR", 50, minimum=0),
        sms_allowed_countries=tuple(
            code.lstrip("+")
            for code in read.words("SMS_ALLOWED_COUNTRIES", r"\+?[1-9][0-9]{0,2}", "1,44,33") or ()
        ),
        allowed_hosts=read.words("ALLOWED_HOSTS", r"[a-z0-9.\-\[\]:*]+", "api.example.com,*"),
        max_schedule_days=read.number("MAX_SCHEDULE_DAYS", 30, minimum=1, maximum=3650),
        transactional_categories=read.words(
            "TRANSACTIONAL_CATEGORIES", r"[a-z0-9][a-z0-9._:\-]{0,63}", "password_reset,security"
        )
        or (),
        public_base_url=read.url("PUBLIC_BASE_URL", ("http", "https")),
        metrics_token=read.text("METRICS_TOKEN"),
        webhook_allow_private=read.flag("WEBHOOK_ALLOW_PRIVATE", False),
        webhook_retry_schedule=read.schedule(
            "WEBHOOK_RETRY_SCHEDULE", DEFAULT_WEBHOOK_RETRY_SCHEDULE
        ),
        webhook_timeout=read.number("WEBHOOK_TIMEOUT", 10.0, float, minimum=0.1, maximum=60),
        webhook_failure_limit=read.number("WEBHOOK_FAILURE_LIMIT", 100, minimum=1),
        webhook_secret_grace_seconds=read.number(
            "WEBHOOK_SECRET_GRACE_SECONDS", 86400.0, float, minimum=0, maximum=30 * 86400
        ),
        # At most 25 s: proxies commonly close a connection silent for 30 s or more.
        stream_heartbeat_seconds=read.number(
            "STREAM_HEARTBEAT_SECONDS", 15.0, float, minimum=0.05, maximum=25
        ),
        stream_max_seconds=read.number(
            "STREAM_MAX_SECONDS", 900.0, float, minimum=1, maximum=86400
        ),
        inbox_exchange=read.text("INBOX_EXCHANGE", "notifications.inbox"),
        inbox_allowed_origins=read.words(
            "INBOX_ALLOWED_ORIGINS",
            r"https?://[a-z0-9.\-]+(:[0-9]{1,5})?",
            "https://app.example.com,http://localhost:3000",
        )
        or (),
    )
    _check_combinations(values, read)
    if read.problems:
        raise ConfigError(read.problems)
    return Settings(**values)


def _check_combinations(values: dict, read: _Reader) -> None:
    """Settings that only make sense together: half of a pair is a mistake, not a default."""
    twilio = ("twilio_sid", "twilio_auth_token", "twilio_phone_number")
    given = [name for name in twilio if values[name]]
    if given and len(given) < len(twilio):
        missing = ", ".join(n.upper() for n in twilio if not values[n])
        read.problems.append(f"Twilio is half-configured: {missing} missing")
    if values["twilio_phone_number"] and not values["twilio_phone_number"].startswith("+"):
        read.problems.append("TWILIO_PHONE_NUMBER must be an E.164 number such as +14155550123")
    if values["mail_use_ssl"] and values["mail_use_tls"]:
        if read.env.get("MAIL_USE_TLS") is None:
            values["mail_use_tls"] = False  # implicit TLS replaces the STARTTLS default
        else:
            read.problems.append("MAIL_USE_TLS and MAIL_USE_SSL are both true: choose one")
    if bool(values["mail_username"]) != bool(values["mail_password"]):
        read.problems.append("MAIL_USERNAME and MAIL_PASSWORD must be given together")
    if values["mail_username"] and values["mail_password"] and not values["mail_server"]:
        # The seed's .env: a Gmail login alone, sent through Gmail on 587 with STARTTLS.
        values["mail_server"] = SEED_MAIL_SERVER
    if values["mail_server"] and not (values["mail_default_sender"] or values["mail_username"]):
        read.problems.append("MAIL_SERVER is set but neither MAIL_DEFAULT_SENDER nor MAIL_USERNAME")
    jwt = ("auth_jwt_issuer", "auth_jwt_audience", "auth_jwks_url")
    given = [name for name in jwt if values[name]]
    if given and len(given) < len(jwt):
        missing = ", ".join(n.upper() for n in jwt if not values[n])
        read.problems.append(f"issuer JWTs are half-configured: {missing} missing")
    if values["auth_secret"] and len(values["auth_secret"]) < 32:
        read.problems.append("AUTH_SECRET must be at least 32 characters (it signs tokens)")
    if values["log_level"] not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        read.problems.append(
            f"LOG_LEVEL={values['log_level']!r} is not DEBUG, INFO, WARNING or ERROR"
        )


_lock = threading.Lock()
_settings: Settings | None = None


def get_settings() -> Settings:
    """The process's settings, loaded once: `.env` (path in ENV_FILE) fills what the env lacks."""
    global _settings
    with _lock:
        if _settings is None:
            env_file = os.environ.get("ENV_FILE", ".env")
            merged = {k: v for k, v in dotenv_values(env_file).items() if v is not None}
            merged.update(os.environ)
            _settings = load_settings(merged)
        return _settings


def reset_settings() -> None:
    """Forget the cached settings (tests, and the runner after --env-file)."""
    global _settings
    with _lock:
        _settings = None
