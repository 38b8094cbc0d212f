"""`digest run-due`, `digest scheduler`, `digest schedule list` and `digest editions`."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import click

from digest import runner, scheduler
from digest.cli import Env, iso_datetime, pass_env
from digest.config import secret
from digest.editions import Edition
from digest.errors import ExitCode
from digest.status import edition_rows, schedule_rows
from digest.store.locks import LockedError
from digest.transports import TRANSPORTS, make_transport
from digest.transports.base import Transport


def _runner(
    env: Env,
    transport: str | None,
    dry_run: bool,
    now: Callable[[], datetime] | None = None,
    **more: Any,
) -> runner.Runner:
    name, clock = transport or env.config.delivery.transport, now or env.now

    def make(edition: Edition) -> Transport:
        return make_transport(name, env.config, edition_key=edition.key, now=clock)

    return runner.Runner(
        config=env.config,
        store=env.store,
        make_transport=make,
        secret="" if dry_run else secret(),
        now=clock,
        dry_run=dry_run,
        **more,
    )


def _now_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--now",
        "now",
        callback=iso_datetime,
        metavar="ISO",
        help="Run as if the current time were ISO (rehearsals, tests).",
    )(command)


_transport_option = click.option(
    "--transport", type=click.Choice(sorted(TRANSPORTS)), help="Default: delivery.transport."
)


@click.command("run-due")
@_now_option
@_transport_option
@click.option("--dry-run", is_flag=True, help="Only print what would be done; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print what was done as JSON.")
@pass_env
def run_due_command(
    env: Env, now: datetime | None, transport: str | None, dry_run: bool, as_json: bool
) -> None:
    """Do what the schedules say is due now (build, test send, send), then exit.

    Safe to run every minute from cron or a systemd timer: each step is recorded and
    never done twice, and a second copy started meanwhile exits at once. A send missed
    while nothing ran is caught up within schedule.grace, else reported as missed.
    Exit code 1 when a step failed (the output says which).

    \b
    Example:
      * * * * *  cd /srv/digest && digest run-due >> run-due.log 2>&1
      digest run-due --now 2026-11-30T07:00:00+01:00 --dry-run
    """
    if now is not None:
        env.fixed_now = now
    run = _runner(env, transport, dry_run)
    try:
        actions = runner.run_due(run)
    except LockedError:
        click.echo("another digest run-due is running; nothing done")
        return
    if as_json:
        click.echo(json.dumps([a.to_dict() for a in actions], indent=2))
    else:
        for action in actions:
            click.echo(action.line())
        if not actions:
            click.echo(f"nothing due at {env.now().isoformat(timespec='minutes')}")
    if run.errors:
        raise SystemExit(int(ExitCode.ERROR))


@click.command("scheduler")
@_now_option
@_transport_option
@click.option(
    "--interval", type=click.IntRange(1, 3600), default=60, show_default=True,
    help="Seconds between runs.",
)  # fmt: skip
@pass_env
def scheduler_command(env: Env, now: datetime | None, transport: str | None, interval: int) -> None:
    """Run `digest run-due` every minute, in the foreground, until SIGTERM or Ctrl-C.

    Logs each action with its time. On SIGTERM a send in progress stops after its batch
    in flight, which is recorded: the ledger stays consistent and the next run resumes.
    With --now the clock starts at ISO and runs on from there.

    \b
    Example:
      digest scheduler
      systemd: ExecStart=/srv/digest/.venv/bin/digest scheduler (Restart=on-failure)
    """
    stop = threading.Event()
    clock = env.now
    if now is not None:  # a clock that starts at --now and runs on
        started, start = time.monotonic(), now
        clock = lambda: start + timedelta(seconds=time.monotonic() - started)  # noqa: E731
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        scheduler.loop(
            lambda: _runner(env, transport, False, now=clock, should_stop=stop.is_set),
            stop=stop, interval=interval, log=_log,
        )  # fmt: skip
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    click.echo("scheduler stopped", err=True)


def _log(line: str) -> None:
    click.echo(line, err=True)


@click.group("schedule")
def schedule_group() -> None:
    """Show the digests' schedules.

    \b
    Example:
      digest schedule list --count 3
    """


@schedule_group.command("list")
@click.argument("digest", required=False)
@click.option("--count", type=click.IntRange(1, 100), default=5, show_default=True,
              help="Scheduled sends to show per digest.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
@pass_env
def schedule_list_command(env: Env, digest: str | None, count: int, as_json: bool) -> None:
    """The next scheduled sends of each digest: when (in the schedule's zone) it builds,
    test-sends and sends, and the edition each step concerns.

    \b
    Example:
      digest schedule list weekly --count 3
    """
    digests = [env.config.digest(digest)] if digest else env.config.digests
    rows = [r for d in digests for r in schedule_rows(env.config, d, env.now(), count)]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no digest has a schedule (digests[].schedule.cron)")
    for row in rows:
        click.echo(f"{row['at']}  {row['edition']:<22}  {row['step']:<5}  {row['detail']}")


@click.command("editions")
@click.argument("digest", required=False)
@click.option(
    "--last",
    type=click.IntRange(min=0),
    default=20,
    show_default=True,
    help="List the editions made most recently, this many; 0 lists every one.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
@pass_env
def editions_command(env: Env, digest: str | None, last: int, as_json: bool) -> None:
    """List editions with their state, delivery counts and what happens next.

    Each edition listed has its deliveries counted, which reads all its rows: the list
    stops at the most recent ones (--last).

    \b
    Example:
      digest editions weekly
      digest editions --last 0 --json
    """
    if digest:
        env.config.digest(digest)  # an unknown digest is an error naming the known ones
    rows, older = edition_rows(env.config, env.store, digest, env.now(), last=last)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no editions yet")
    for row in rows:
        counts = ", ".join(f"{k} {v}" for k, v in row["deliveries"].items() if v) or "-"
        click.echo(f"{row['edition']:<22}  {row['state']:<10}  {counts:<28}  {row['next']}")
    if older:
        click.echo(f"({older} older editions not listed: --last 0 lists every one)")


COMMANDS: list[click.Command] = [
    run_due_command, scheduler_command, schedule_group, editions_command,
]  # fmt: skip
