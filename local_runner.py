"""Local runner: hosts every function on one port, consumes the queue, fires the sweep.

python local_runner.py serve [--host H] [--port P] [--env-file F]
python local_runner.py check [--env-file F]
python local_runner.py sweep [--env-file F]
"""

from __future__ import annotations

import os
import sys

import click

from common.config import get_settings, reset_settings
from common.errors import ConfigError


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
    from functions_framework._http.gunicorn import GunicornApplication

    from common.hosting import BackgroundWork, FunctionRouter
    from common.logs import configure_logging

    configure_logging(settings.log_level)
    if not settings.rabbitmq_url:
        from common.runtime import host_in_process_delivery

        host_in_process_delivery()  # this process's consumer reads the in-process queue
    app = FunctionRouter()
    background: list = []

    def start_background(worker) -> None:
        # Runs inside gunicorn's worker process, so the in-process queue and the HTTP
        # handlers share one process, and each worker owns its own broker connections.
        work = BackgroundWork(settings.sweep_interval)
        work.start()
        background.append(work)

    def stop_background(server, worker) -> None:
        for work in background:
            work.stop()

    options = {"post_worker_init": start_background, "worker_exit": stop_background}
    if threads:
        options["threads"] = threads
    options["graceful_timeout"] = 60
    click.echo(f"notification service on http://{host}:{port or settings.port}/", err=True)
    # functions-framework's own gunicorn setup (gthread workers), as a deployed function gets.
    GunicornApplication(app, host, port or settings.port, False, **options).run()


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


if __name__ == "__main__":
    cli()
