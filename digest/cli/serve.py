"""`digest serve`: the subscriber pages and the event webhook over HTTP."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import click

from digest.cli import Env, pass_env


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    default=8080,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to listen on; 0 picks a free one (printed on start).",
)
@click.option(
    "--threads",
    type=click.IntRange(1, 256),
    help="Worker threads; default web.threads in digest.yaml (4).",
)
@click.option(
    "--debug",
    "debug_server",
    is_flag=True,
    help="Use Flask's development server with its debugger (never in production).",
)
@pass_env
def serve(env: Env, host: str, port: int, threads: int | None, debug_server: bool) -> None:
    """Serve unsubscribe, preference and signup pages and the SendGrid webhook.

    \b
    Example:
      digest serve --host 0.0.0.0 --port 8080 --threads 16
    """
    from waitress.server import create_server  # type: ignore[import-untyped]

    from digest.web import create_app

    app = create_app(env.config, env.store, now=env.now)
    if debug_server:
        app.run(host=host, port=port, debug=True, use_reloader=False)
        return
    settings = env.config.web
    # Under a burst waitress warns on every queued request and every pass over the
    # connection limit, and each line costs the request path time: one every 10 s is news.
    for name in ("waitress", "waitress.queue"):
        logging.getLogger(name).addFilter(_EveryFew(10.0))
    server = create_server(
        app,
        host=host,
        port=port,
        threads=threads or settings.threads,
        connection_limit=settings.connection_limit,
    )
    click.echo(
        f"serving {env.config.site.name} on http://{host}:{server.effective_port} "
        f"({threads or settings.threads} threads)"
    )
    try:
        server.run()
    except KeyboardInterrupt:
        click.echo("stopped")
    finally:
        server.close()


class _EveryFew(logging.Filter):
    """Lets one warning through per `seconds`; other levels always pass."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._seconds = seconds
        self._clock = clock
        self._next = 0.0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING:
            return True
        now = self._clock()
        if now < self._next:
            return False
        self._next = now + self._seconds
        return True


COMMANDS: list[click.Command] = [serve]
