"""`local_runner.py check`: does each configured backend answer? One line per part."""

from __future__ import annotations

from collections.abc import Iterator

from common.config import Settings


def run_checks(settings: Settings) -> Iterator[tuple[str, bool, str]]:
    from common.channels import make_channels
    from common.queue import make_queue
    from common.store import make_store

    where = (
        f"MongoDB {settings.mongo_db}" if settings.mongo_uri else f"SQLite in {settings.data_dir}"
    )
    yield _probe("store", where, lambda: make_store(settings).ping())
    if settings.rabbitmq_url:
        yield _probe(
            "queue", f"RabbitMQ queue {settings.queue_name}", lambda: make_queue(settings).ping()
        )
    else:
        yield "queue", True, "in-process queue (RABBITMQ_URL unset)"
    for channel in make_channels(settings).values():
        yield _probe(channel.notification_type, channel.description, channel.check)


def _probe(part: str, what: str, action) -> tuple[str, bool, str]:
    try:
        action()
        return part, True, what
    except Exception as error:  # any failure is a finding to print, not a crash
        return part, False, f"{what}: {type(error).__name__}: {error}"
