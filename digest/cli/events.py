"""`digest events`: provider events from a file (e.g. an export of the Event Webhook)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from digest.cli import Env, pass_env
from digest.errors import InputError
from digest.events import apply_events, parse_sendgrid_payload


@click.group("events")
def events() -> None:
    """Provider events: bounces, complaints, unsubscribes, opens and clicks."""


@events.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_env
def import_events(env: Env, file: Path, as_json: bool) -> None:
    """Store the SendGrid events in FILE (a JSON array) and apply bounces and unsubscribes.

    The file is trusted (no signature); events already stored are skipped.

    \b
    Example:
      digest events import sendgrid-events.json
    """
    try:
        payload = file.read_bytes()
    except OSError as exc:
        raise InputError(str(file), exc.strerror or str(exc)) from None
    parsed = parse_sendgrid_payload(payload, source=str(file))
    report = apply_events(env.store, parsed.events, now=env.now(), ignored=parsed.ignored)
    if as_json:
        click.echo(json.dumps(report.to_dict()))
    else:
        click.echo(
            f"stored {report.stored}, duplicates {report.duplicates}, "
            f"ignored {report.ignored}, suppressed {report.suppressed}"
        )


COMMANDS: list[click.Command] = [events]
