"""`digest deliveries`: the per-recipient record of an edition's delivery."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import click

from digest.cli import Env, pass_env
from digest.cli.periods import period_options
from digest.editions import find_edition
from digest.store.ledger import STATES

COLUMNS = ("email", "state", "variant", "attempts", "provider_message_id",
           "provider_batch_id", "last_error", "created_at", "updated_at", "sent_at")  # fmt: skip


@click.command("deliveries")
@click.argument("digest")
@period_options(required=True)
@click.option("--state", type=click.Choice(STATES), help="Only rows in this state.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of objects.")
@pass_env
def deliveries_command(
    env: Env, digest: str, period: str, state: str | None, as_json: bool
) -> None:
    """List each recipient of an edition: state, variant, attempts, provider ids, last error.

    `--state failed` lists exactly who did not get the edition, with the reason
    (in-doubt rows say so); `sent_at` of a scheduled send is its send time.

    \b
    Example:
      digest deliveries weekly --week 2026-W48 --state failed --json
    """
    edition = find_edition(env.config, env.store.editions, digest, period)
    rows = (_row(r) for r in env.store.deliveries.rows(edition.key, state=state))
    if as_json:
        click.echo("[", nl=False)
        for i, row in enumerate(rows):
            click.echo(("," if i else "") + "\n  " + json.dumps(row), nl=False)
        click.echo("\n]")
        return
    count = 0
    for row in rows:
        count += 1
        error = f"  {row['last_error']}" if row["last_error"] else ""
        click.echo(
            f"{row['email']:<40} {row['state']:<10} {row['variant']:<3} "
            f"{row['attempts']:>2}  {row['provider_message_id'] or '-'}{error}"
        )
    click.echo(f"{count} deliveries" + (f" {state}" if state else ""), err=True)


def _row(row: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v.isoformat() if isinstance(v, datetime) else v
        for k, v in ((k, row[k]) for k in COLUMNS)
    }


COMMANDS: list[click.Command] = [deliveries_command]
