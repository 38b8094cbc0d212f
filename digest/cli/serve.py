"""`digest serve`: the subscriber pages and the event webhook over HTTP."""

from __future__ import annotations

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
    from digest.web import create_app
    from digest.web.server import make_server

    app = create_app(env.config, env.store, now=env.now)
    if debug_server:
        app.run(host=host, port=port, debug=True, use_reloader=False)
        return
    count = threads or env.config.web.threads
    server = make_server(app, env.config.web, host=host, port=port, threads=count)
    click.echo(
        f"serving {env.config.site.name} on http://{host}:{server.effective_port} ({count} threads)"
    )
    try:
        server.run()
    except KeyboardInterrupt:
        click.echo("stopped")
    finally:
        server.close()


COMMANDS: list[click.Command] = [serve]
