"""`digest ingest`: read the configured sources into the store."""

from __future__ import annotations

import json
import sys

import click

from digest.cli import Env, pass_env
from digest.errors import ExitCode
from digest.sources import IngestReport, ingest

COMMANDS: list[click.Command] = []


@click.command("ingest")
@click.option(
    "--source",
    "-s",
    "names",
    multiple=True,
    metavar="NAME",
    help="Read only this source (repeatable); default: every source.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_env
def ingest_command(env: Env, names: tuple[str, ...], as_json: bool) -> None:
    """Read articles from the sources in digest.yaml into the store.

    Each source is stored whole or not at all; a broken entry is skipped and listed, and
    feed categories that map to no topic are listed by name with counts. Exits 2 when a
    source could not be read whole, e.g. a truncated feed (the other sources are still stored).

    \b
    Example:
      digest ingest
      digest ingest --source "Prism Wire" --source "Global Desk"
    """
    progress = (lambda line: click.echo(line + "…", err=True)) if sys.stderr.isatty() else None
    report = ingest(env.config, env.store, now=env.now, names=names or None, progress=progress)
    if as_json:
        data = {"sources": [s.to_dict() for s in report.sources], "ok": report.ok}
        click.echo(json.dumps(data, indent=2))
    else:
        _print(report)
    if not report.ok:
        raise click.exceptions.Exit(int(ExitCode.BAD_INPUT))


def _print(report: IngestReport) -> None:
    for s in report.sources:
        if s.error is not None:
            click.echo(f"{s.name}: failed, nothing stored", err=False)
            click.echo(f"error: {s.name}: {s.error}", err=True)
        else:
            click.echo(
                f"{s.name}: {s.added} added, {s.updated} updated, "
                f"{s.unchanged} unchanged, {len(s.skipped)} skipped"
            )
        if s.unmapped:
            click.echo(f"{s.name}: categories with no topic: {s.unmapped_text()}")
        for skipped in s.skipped:
            click.echo(f"warning: {s.name}: skipped {skipped}", err=True)
    failed = f", {len(report.failed)} sources failed" if report.failed else ""
    click.echo(
        f"total: {report.added} added, {report.updated} updated, "
        f"{report.unchanged} unchanged, {report.skipped} skipped{failed}"
    )


COMMANDS.append(ingest_command)
