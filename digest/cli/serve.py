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
    "--processes",
    type=click.IntRange(1, 64),
    help="Processes sharing the port; default web.processes in digest.yaml (1).",
)
@click.option(
    "--debug",
    "debug_server",
    is_flag=True,
    help="Use Flask's development server with its debugger (never in production).",
)
@pass_env
def serve(
    env: Env,
    host: str,
    port: int,
    threads: int | None,
    processes: int | None,
    debug_server: bool,
) -> None:
    """Serve unsubscribe, preference and signup pages and the SendGrid webhook.

    Plain one-click POSTs are answered at the door, a burst's unsubscribes committed
    together; with several processes, each accepts on the same port with its own
    threads, so busy pages use every core.

    \b
    Example:
      digest serve --host 0.0.0.0 --port 8080 --threads 16
      digest serve --processes 2        # on a 2-core machine
    """
    from digest.web import create_app
    from digest.web.server import listen, make_server, run_processes

    app = create_app(env.config, env.store, now=env.now)
    if debug_server:
        app.run(host=host, port=port, debug=True, use_reloader=False)
        return
    count = threads or env.config.web.threads
    forks = processes or env.config.web.processes
    listener = listen(host, port)
    bound = listener.getsockname()[1]
    settings = env.config.web

    shape = f"{count} threads" if forks == 1 else f"{forks} processes of {count} threads"
    ready = f"serving {env.config.site.name} on http://{host}:{bound} ({shape})"

    def run(*, say_ready: bool) -> None:
        server = make_server(app, settings, listener=listener, threads=count)
        if say_ready:
            click.echo(ready)  # once its threads run
        try:
            server.run()
        finally:
            server.close()

    if forks == 1:
        try:
            run(say_ready=True)
        except KeyboardInterrupt:
            click.echo("stopped")
        return

    def forked() -> None:
        env.store.engine.dispose(close=False)  # a forked process opens its own connections
        run(say_ready=False)

    status = run_processes(forks, forked, started=lambda: click.echo(ready))
    click.echo("stopped" if status == 0 else f"stopped (a serving process exited {status})")
    if status:
        raise SystemExit(1)


COMMANDS: list[click.Command] = [serve]
