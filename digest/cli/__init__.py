"""The `digest` command: a thin click layer over the library. Each command module registers
its commands in COMMANDS; this module wires config, store and clock, and turns a
DigestError into one line on stderr and its exit code."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

import click

from digest.config import DEFAULT_CONFIG, Config, load_config
from digest.errors import DigestError, ExitCode
from digest.store import Store, open_store


@dataclass
class Env:
    """What every command needs from the outside world, built once per invocation."""

    config_path: str
    debug: bool = False
    fixed_now: datetime | None = None
    _closers: list[Callable[[], None]] = field(default_factory=list)

    @cached_property
    def config(self) -> Config:
        return load_config(self.config_path)

    @cached_property
    def store(self) -> Store:
        store = open_store(self.config.store_url)
        self._closers.append(store.close)
        return store

    def now(self) -> datetime:
        return self.fixed_now or datetime.now(UTC)

    def close(self) -> None:
        for close in self._closers:
            close()


pass_env = click.make_pass_decorator(Env)


def iso_datetime(
    _ctx: click.Context, _param: click.Parameter, value: str | None
) -> datetime | None:
    """Option callback: an ISO 8601 date-time, UTC when no offset is given."""
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            "expected an ISO 8601 date-time, e.g. 2026-11-25T09:00:00Z"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


class DigestGroup(click.Group):
    """Reports DigestError as `error: WHERE: REASON` (+ hint) with the error's exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DigestError as exc:
            env = ctx.find_object(Env)
            if env is not None and env.debug:
                raise
            click.echo(f"error: {exc}", err=True)
            if exc.hint:
                click.echo(f"hint: {exc.hint}", err=True)
            ctx.exit(int(exc.exit_code))
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(int(ExitCode.INTERRUPTED))
        finally:
            env = ctx.find_object(Env)
            if env is not None:
                env.close()


@click.group(cls=DigestGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "-c",
    "config_path",
    default=DEFAULT_CONFIG,
    show_default=True,
    envvar="DIGEST_CONFIG",
    help="Project config file.",
)
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.option(
    "--now",
    callback=iso_datetime,
    metavar="ISO",
    help="Run as if the current time were ISO (reproducible runs).",
)
@click.version_option(package_name="digest")
@click.pass_context
def cli(ctx: click.Context, config_path: str, debug: bool, now: datetime | None) -> None:
    """Build weekly newsletter digests and deliver them.

    \b
    Typical week:
      digest ingest                          # read the sources into the store
      digest build weekly --week 2026-W05    # select and freeze the edition
      digest preview weekly --week 2026-W05 --subscriber ana.lima@example.com
      digest send weekly --week 2026-W05     # deliver, exactly once per subscriber
    """
    ctx.obj = Env(config_path=config_path, debug=debug, fixed_now=now)


def _register() -> None:
    from digest.cli import (
        ab,
        archive,
        build,
        check,
        db,
        deliveries,
        edition,
        events,
        ingest,
        init,
        preflight,
        preview,
        schedule,
        send,
        serve,
        subscribers,
        worker,
    )

    for module in (
        init,
        check,
        db,
        ingest,
        build,
        edition,
        preview,
        preflight,
        send,
        deliveries,
        ab,
        schedule,
        subscribers,
        events,
        serve,
        worker,
        archive,
    ):
        for command in module.COMMANDS:
            cli.add_command(command)


_register()


def main() -> None:
    cli(prog_name="digest")
