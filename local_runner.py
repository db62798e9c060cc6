"""Local runner: hosts every function on one port, consumes the queue, fires the sweep.

python local_runner.py serve [--host H] [--port P] [--env-file F]
python local_runner.py check [--env-file F]
python local_runner.py sweep [--env-file F]
python local_runner.py keys create --name N --scope S [...] | keys list | keys revoke ID
python local_runner.py templates import DIR | templates export DIR
"""

from __future__ import annotations

import os
import sys

import click

from common.config import get_settings, reset_settings
from common.errors import ConfigError

# The API's field names, as the `keys create` options spell them, for error messages.
OPTION_NAMES = {"expires_in": "--expires-in", "rate_limit": "--rate-limit", "scopes": "--scope"}
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


def _load_settings(env_file: str | None):
    """Read the settings once, or stop with one readable message naming every problem."""
    if env_file:
        if not os.path.exists(env_file):
            raise click.ClickException(f"env file not found: {env_file}")
        os.environ["ENV_FILE"] = env_file
    reset_settings()
    try:
        return get_settings()
    except ConfigError as error:
        problems = "\n".join(f"  - {problem}" for problem in error.problems)
        raise click.ClickException(f"configuration error:\n{problems}") from None


env_file_option = click.option(
    "--env-file", type=click.Path(dir_okay=False), help="A .env file to read (default: ./.env)."
)


@click.group()
def cli() -> None:
    """Notification service: local host for the function handlers."""


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), help="Port (default: PORT or 8080).")
@click.option(
    "--threads", type=click.IntRange(1, 1024), help="HTTP worker threads (default: 4 per core)."
)
@env_file_option
def serve(host: str, port: int | None, threads: int | None, env_file: str | None) -> None:
    """Serve the HTTP API and web pages, deliver queued notifications, sweep for retries."""
    settings = _load_settings(env_file)
    if host in LOOPBACK_HOSTS and settings.allowed_hosts is None:
        # Bound to loopback, the service answers to loopback names only (DNS rebinding).
        os.environ["ALLOWED_HOSTS"] = ",".join(LOOPBACK_NAMES)
        settings = _load_settings(env_file)
    _say_where_the_admin_key_is(settings)
    _import_repository_templates(settings)
    from common.hosting import BackgroundWork, FunctionRouter, asgi_routes
    from common.http import BODY_LIMIT_FACTORS
    from common.logs import configure_logging
    from common.serving import serve_asgi

    configure_logging(settings.log_level)
    if not settings.rabbitmq_url:
        from common.runtime import host_in_process_delivery

        host_in_process_delivery()  # this process's consumer reads the in-process queue
    app = FunctionRouter()
    # One process serves HTTP and runs the consumer and the sweep timer, so the in-process
    # queue and the HTTP handlers share it.
    work = BackgroundWork(settings.sweep_interval)
    click.echo(f"notification service on http://{host}:{port or settings.port}/", err=True)
    # One event loop (uvicorn): an open stream or a slow client holds no thread
    # (common/serving.py); the Flask functions answer on `threads` worker threads.
    serve_asgi(
        app,
        host,
        port or settings.port,
        asgi_routes=asgi_routes(),
        threads=threads,
        read_timeout=settings.request_read_timeout,
        max_body=settings.max_request_bytes * max(BODY_LIMIT_FACTORS.values()),
        on_start=work.start,
        on_drain=_end_open_streams,
        on_stop=work.stop,
    )


def _end_open_streams() -> None:
    """At a stop, before the requests in flight are waited for: the open inbox streams end
    (their clients reconnect elsewhere), or they would hold the stop for GRACEFUL_TIMEOUT.
    The feed stays closed, so a stream still opening gets its end at once too."""
    import logging

    from common.runtime import get_inbox_feed

    try:
        get_inbox_feed().close()
    except Exception as error:  # noqa: BLE001 - no feed (e.g. bad settings) is no stream to end
        logging.getLogger("notifications.runner").warning("event=feed_not_closed error=%r", error)


@cli.command()
@env_file_option
def check(env_file: str | None) -> None:
    """Print the effective configuration and whether each backend answers."""
    settings = _load_settings(env_file)
    from common.checks import run_checks

    for name, value in settings.describe().items():
        click.echo(f"{name:24} {value}")
    click.echo("")
    failures = 0
    for part, ok, detail in run_checks(settings):
        failures += not ok
        click.echo(f"{'ok  ' if ok else 'FAIL'} {part:8} {detail}")
    sys.exit(1 if failures else 0)


@cli.command()
@env_file_option
def sweep(env_file: str | None) -> None:
    """Run one retry sweep and exit (for cron)."""
    _load_settings(env_file)
    from common.runtime import get_service

    report = get_service().sweep()
    click.echo(f"requeued {report.requeued}, publish failed {report.publish_failed}")
    sys.exit(1 if report.publish_failed else 0)


def _say_where_the_admin_key_is(settings) -> None:
    from common.auth.secret_files import bootstrap_admin_key
    from common.errors import ServiceError

    try:
        message = bootstrap_admin_key(settings)
    except ServiceError as error:
        raise click.ClickException(error.message) from None
    if message:
        click.echo(message, err=True)


@cli.group()
def keys() -> None:
    """Create, list and revoke API keys (stored hashed; a key is shown once)."""


def _access(env_file: str | None):
    _load_settings(env_file)
    from common.errors import ServiceError
    from common.runtime import get_access

    try:
        return get_access()
    except ServiceError as error:
        raise click.ClickException(error.message) from None


def _service_errors_as_messages(work):
    """Run `work`; a domain error (bad input, store down) is one readable line, exit 1."""
    from common.errors import ServiceError

    try:
        return work()
    except ServiceError as error:
        details = "; ".join(
            f"{OPTION_NAMES.get(name, name)} {problem}" for name, problem in error.fields.items()
        )
        message = f"{error.message}: {details}" if details else error.message
        raise click.ClickException(message) from None


@keys.command("create")
@click.option("--name", required=True, help="What the key is for, e.g. 'billing backend'.")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    required=True,
    help="send, read, retry, templates or admin; repeat for several.",
)
@click.option("--expires-in", help="Lifetime, e.g. 90d, 12h (default: never expires).")
@click.option("--rate-limit", type=float, help="Its own SEND_RATE_LIMIT (per second).")
@env_file_option
def keys_create(name, scopes, expires_in, rate_limit, env_file) -> None:
    """Create a key and print it (the only time it is shown)."""
    access = _access(env_file)
    key, secret = _service_errors_as_messages(
        lambda: access.create_key(name, list(scopes), expires_in, rate_limit)
    )
    click.echo(secret)
    expiry = key.expires_at.isoformat() if key.expires_at else "never"
    click.echo(f"id {key.id}, scopes {','.join(key.scopes)}, expires {expiry}", err=True)
    click.echo("Store the key now: it cannot be shown again.", err=True)


@keys.command("list")
@env_file_option
def keys_list(env_file) -> None:
    """List every key (never the secrets)."""
    access = _access(env_file)
    rows = _service_errors_as_messages(access.list_keys)
    if not rows:
        click.echo("no API keys")
        return
    click.echo(f"{'ID':14}{'NAME':28}{'SCOPES':24}{'STATE':10}LAST USED")
    for key in rows:
        from common.model import utcnow

        state = key.usable(utcnow())
        state = "revoked" if key.revoked_at else ("expired" if state else "active")
        used = key.last_used_at.strftime("%Y-%m-%d %H:%M") if key.last_used_at else "never"
        click.echo(f"{key.id:14}{key.name[:27]:28}{','.join(key.scopes):24}{state:10}{used}")


@keys.command("revoke")
@click.argument("key_id")
@env_file_option
def keys_revoke(key_id, env_file) -> None:
    """Revoke a key at once (every process refuses it from its next request)."""
    access = _access(env_file)
    key = _service_errors_as_messages(lambda: access.revoke_key(key_id))
    click.echo(f"revoked {key.id} ({key.name})")


@cli.group()
def templates() -> None:
    """Import and export notification templates as <key>/template.json files."""


# What `templates import` says of each template, by what import_documents did.
IMPORT_OUTCOMES = {
    "created": "created version {}",
    "updated": "updated to version {}",
    "unchanged": "unchanged (version {})",
    "archived": "archived, left as it is (version {})",
}


def _template_store(env_file: str | None):
    settings = _load_settings(env_file)
    from common.templates.store import make_template_store

    return _service_errors_as_messages(lambda: make_template_store(settings))


def _import_lines(store, documents) -> list[str]:
    from common.model import utcnow
    from common.templates.files import import_documents

    outcomes = import_documents(store, documents, utcnow())
    return [
        f"{key}: {IMPORT_OUTCOMES[outcome].format(store.latest(key).version)}"
        for key, outcome in outcomes
    ]


@templates.command("import")
@click.argument("directory", type=click.Path(file_okay=False))
@env_file_option
def templates_import(directory, env_file) -> None:
    """Import DIRECTORY/<key>/template.json files.

    A file that differs from its key's latest version becomes the next version; an archived
    key is left as it is.
    """
    from common.templates.files import read_directory

    # Every file is read and checked before anything is written: a bad one changes nothing.
    documents = _service_errors_as_messages(lambda: read_directory(directory))
    if not documents:
        click.echo(f"no templates in {directory}")
        return
    store = _template_store(env_file)
    try:
        lines = _service_errors_as_messages(lambda: _import_lines(store, documents))
    finally:
        store.close()
    click.echo("\n".join(lines))


@templates.command("export")
@click.argument("directory", type=click.Path(file_okay=False))
@env_file_option
def templates_export(directory, env_file) -> None:
    """Export to DIRECTORY/<key>/template.json files.

    Each template's latest version; archived templates are left out.
    """
    from common.templates.files import write_directory

    store = _template_store(env_file)
    try:
        versions = _service_errors_as_messages(store.list)
    finally:
        store.close()
    # An archived template is retired: exported, the next import would bring it back.
    active = [version for version in versions if not version.archived]
    try:
        written = write_directory(directory, active)
    except OSError as error:
        raise click.ClickException(f"cannot write {error.filename}: {error.strerror}") from None
    for version, path in zip(active, written, strict=True):
        click.echo(f"{version.key}: version {version.version} -> {path}")
    for version in versions:
        if version.archived:
            click.echo(f"{version.key}: archived, not exported")
    if not versions:
        click.echo("no templates to export")


def _import_repository_templates(settings) -> None:
    """At start, the repository's templates/notifications/ into the store, said in one line."""
    from collections import Counter
    from pathlib import Path

    from common.errors import ServiceError, Unavailable
    from common.model import utcnow
    from common.templates.files import import_documents, read_directory
    from common.templates.store import make_template_store

    folder = Path(__file__).resolve().parent / "templates" / "notifications"
    if not folder.is_dir():
        return
    documents = _service_errors_as_messages(lambda: read_directory(folder))
    store = _service_errors_as_messages(lambda: make_template_store(settings))
    try:
        outcomes = import_documents(store, documents, utcnow())
    except Unavailable as error:
        # The service starts without its store too (it answers 503 until the store is back).
        click.echo(f"templates: not imported: {error.message}", err=True)
        return
    except ServiceError as error:
        raise click.ClickException(f"templates: {error.message}") from None
    finally:
        store.close()
    counts = Counter(outcome for _, outcome in outcomes)
    summary = ", ".join(f"{counts[name]} {name}" for name in ("created", "updated", "unchanged"))
    archived = f", {counts['archived']} archived (left as they are)" if counts["archived"] else ""
    click.echo(f"templates: {summary}{archived}", err=True)


if __name__ == "__main__":
    cli()
