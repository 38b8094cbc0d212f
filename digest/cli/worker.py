"""`digest worker`: run the task queue's tasks (batches of editions sent with --workers)."""

from __future__ import annotations

import logging

import click

from digest.cli import Env, pass_env
from digest.config import secret


@click.command("worker")
@click.option(
    "--concurrency", type=click.IntRange(1, 64), default=None,
    help="Batches sent at once by this process (threads), each claimed when it starts, so a "
    "kill can leave this many in doubt. [default: delivery.in_flight]",
)  # fmt: skip
@click.option(
    "--stalled-after", type=click.FloatRange(1, 3600), default=30.0, show_default=True,
    metavar="SECONDS", help="A worker silent this long is presumed dead; its tasks run again.",
)  # fmt: skip
@click.option(
    "--heartbeat", type=click.FloatRange(0.1, 600), default=10.0, show_default=True,
    metavar="SECONDS", help="How often this worker tells the others it is alive.",
)  # fmt: skip
@pass_env
def worker_command(
    env: Env, concurrency: int | None, stalled_after: float, heartbeat: float
) -> None:
    """Send batches queued by `digest send --workers`, and run `digest run-due` every
    minute, until SIGTERM or Ctrl-C (the batches in flight are finished first).

    Needs a PostgreSQL store; start one or more on any machine that reaches it, each with
    the same digest.yaml and secrets. Its first start creates the queue's tables.

    \b
    Example:
      digest worker
      systemd: ExecStart=/srv/digest/.venv/bin/digest worker (Restart=on-failure)
    """
    from digest.taskqueue import Queue
    from digest.workers import Worker

    if heartbeat >= stalled_after:
        raise click.BadParameter("must be shorter than --stalled-after", param_hint="--heartbeat")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    worker = Worker(
        config=env.config, store=env.store, queue=Queue(env.store), secret=secret(),
        now=env.now, stalled_after=stalled_after,
    )  # fmt: skip
    worker.run(concurrency=concurrency or env.config.delivery.in_flight, heartbeat=heartbeat)
    click.echo("worker stopped", err=True)


COMMANDS: list[click.Command] = [worker_command]
