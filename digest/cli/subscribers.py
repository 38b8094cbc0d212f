"""`digest subscribers` commands: import, export, list, add, remove, show."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

import click

from digest.cli import Env, pass_env
from digest.errors import ExitCode
from digest.subscriber import STATUSES
from digest.subscriber_files import export_fields, write_csv, write_yaml
from digest.subscriber_import import RowOutcome, import_subscribers
from digest.subscribers import add_subscriber, find_subscriber, remove_subscriber

_status = click.Choice(STATUSES)
_LABELS = {"added": "added      ", "updated": "updated    ", "kept": ""}  # rows an import lists


@click.group("subscribers")
def subscribers() -> None:
    """Manage subscribers: import lists, export, list, add, remove, show."""


@subscribers.command("import")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--skip-invalid", is_flag=True, help="Import the valid rows; list the invalid.")
@click.option("--dry-run", is_flag=True, help="Check and report; change nothing.")
@pass_env
@click.pass_context
def import_(
    ctx: click.Context, env: Env, paths: tuple[Path, ...], skip_invalid: bool, dry_run: bool
) -> None:
    """Add or update subscribers from YAML/CSV files (a folder: every file in it).

    Any invalid row stops the whole import (exit 2) unless --skip-invalid. Imports never
    resubscribe someone who unsubscribed, bounced or complained.

    \b
    Example:
      digest subscribers import subscribers/ --skip-invalid
    """
    out, err = sys.stdout, sys.stderr

    def show(rows: Sequence[RowOutcome]) -> None:
        # Rows are printed as they are decided (invalid ones during the check, the others
        # a chunk at a time, after their chunk was written): a large import holds none.
        for row in rows:
            if row.kind == "invalid":
                err.write(f"invalid    {row.file}:{row.line}: {row.note}\n")
        out.write("".join([
            f"kept       {r.file}:{r.line}  {r.email}  (kept {r.note})\n" if r.kind == "kept"
            else f"{_LABELS[r.kind]}{r.file}:{r.line}  {r.email}\n"
            for r in rows if r.kind in _LABELS
        ]))  # fmt: skip

    report = import_subscribers(
        env.config, env.store, paths, now=env.now(), skip_invalid=skip_invalid,
        dry_run=dry_run, on_rows=show,
    )  # fmt: skip
    verb = "imported" if report.applied else "would import (nothing changed)"
    click.echo(
        f"{verb}: {report.added} added, {report.updated} updated, "
        f"{report.unchanged} unchanged, {report.kept} kept suppressed, {report.invalid} invalid"
        + (" (skipped)" if report.applied and report.invalid else "")
    )
    if report.invalid and not skip_invalid:
        click.echo(
            f"error: {report.invalid} invalid row(s); nothing was imported "
            "(fix them, or pass --skip-invalid)",
            err=True,
        )
        ctx.exit(int(ExitCode.BAD_INPUT))


@contextmanager
def _output(path: Path | None) -> Iterator[TextIO]:
    if path is None:
        yield sys.stdout
        return
    with path.open("w", encoding="utf-8", newline="") as out:
        yield out


@subscribers.command("export")
@click.option(
    "--format", "fmt", type=click.Choice(["csv", "yaml"]), default="csv", show_default=True
)
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), help="File to write; default stdout."
)
@click.option("--status", type=_status, help="Only subscribers with this status.")
@pass_env
def export(env: Env, fmt: str, output: Path | None, status: str | None) -> None:
    """Write subscribers (with their consent record) as CSV or YAML that imports back as is.

    \b
    Example:
      digest subscribers export --format yaml -o backup.yaml
    """
    write = write_csv if fmt == "csv" else write_yaml
    with _output(output) as out:
        count = write(env.store.subscribers.iter_all(status=status), out)
    if output is not None:
        click.echo(f"exported {count} subscriber(s) to {output}", err=True)


@subscribers.command("list")
@click.option("--status", type=_status, help="Only subscribers with this status.")
@click.option("--topic", help="Only subscribers of this topic key.")
@click.option("--json", "as_json", is_flag=True, help="One JSON array, for scripts.")
@pass_env
def list_(env: Env, status: str | None, topic: str | None, as_json: bool) -> None:
    """List subscribers, oldest first.

    \b
    Example:
      digest subscribers list --status active --topic climate
    """
    if topic is not None:
        env.config.topic(topic)  # an unknown key is an error that names it
    found = env.store.subscribers.iter_all(status=status, topic=topic)
    if as_json:
        click.echo("[", nl=False)
        for i, s in enumerate(found):
            item = {**export_fields(s), "topics": list(s.topics)}
            click.echo(("," if i else "") + json.dumps(item, ensure_ascii=False), nl=False)
        click.echo("]")
        return
    for s in found:
        click.echo(f"{s.email}\t{s.status}\t{','.join(s.topics)}\t{s.timezone}\t{s.name}")


@subscribers.command("add")
@click.argument("email")
@click.option("--name", default="", help="Display name.")
@click.option("--topic", "topics", multiple=True, required=True, help="Topic key; repeat for more.")
@click.option("--timezone", default="", help="IANA time zone; default the site's.")
@click.option("--status", type=_status, default="active", show_default=True)
@pass_env
def add(
    env: Env, email: str, name: str, topics: tuple[str, ...], timezone: str, status: str
) -> None:
    """Add one subscriber, recording consent as given on the command line ("cli").

    \b
    Example:
      digest subscribers add new.reader@example.com --name Noor --topic tech --topic climate
    """
    s = add_subscriber(
        env.config, env.store, email, topics=topics, name=name, timezone=timezone,
        status=status, now=env.now(),
    )  # fmt: skip
    click.echo(f"added {s.email} ({s.status}; {', '.join(s.topics)})")


@subscribers.command("remove")
@click.argument("email")
@pass_env
def remove(env: Env, email: str) -> None:
    """Delete the subscriber's record: address, name, topics and consent are gone.

    This is erasure, not unsubscribing: a later import can add the address again.
    Past delivery rows keep the address they were sent to.

    \b
    Example:
      digest subscribers remove ana.lima@example.com
    """
    s = remove_subscriber(env.store, email)
    click.echo(f"removed {s.email}")


@subscribers.command("show")
@click.argument("email")
@pass_env
def show(env: Env, email: str) -> None:
    """Show every stored field of one subscriber, its consent record and its deliveries.

    \b
    Example:
      digest subscribers show ana.lima@example.com
    """
    record = find_subscriber(env.store, email)
    s = record.subscriber
    lines = {
        "email": s.email, "name": s.name, "status": s.status,
        "status reason": record.status_reason, "topics": ", ".join(s.topics),
        "timezone": s.timezone, "locale": s.locale,
        "consent at": s.consent_at.isoformat() if s.consent_at else "",
        "consent method": s.consent_method, "consent source": s.consent_source,
        "consent ip": s.consent_ip,
        "created": record.created_at.isoformat(), "updated": record.updated_at.isoformat(),
        "deliveries": ", ".join(f"{k} {v}" for k, v in sorted(record.deliveries.items()))
        or "none",
    }  # fmt: skip
    for key, value in lines.items():
        click.echo(f"{key + ':':<16}{value}")


COMMANDS: list[click.Command] = [subscribers]
