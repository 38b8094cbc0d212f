"""`digest build`: select and freeze an edition."""

from __future__ import annotations

import click

from digest import select
from digest.cli import Env, pass_env
from digest.cli.edition import print_edition
from digest.cli.periods import period_options
from digest.lifecycle import SKIPPED
from digest.periods import containing


@click.command("build")
@click.argument("digest")
@period_options(required=False)
@click.option("--force", is_flag=True, help="Select again, replacing an edition not yet sent.")
@click.option("--json", "as_json", is_flag=True, help="Print the edition as JSON only.")
@pass_env
def build_command(env: Env, digest: str, period: str | None, force: bool, as_json: bool) -> None:
    """Select the period's articles for DIGEST and freeze them as an edition.

    Every later step (preview, send, resend) reads this frozen edition. An existing
    edition is rebuilt only with --force, and never once it has been sent. A period with
    fewer than the digest's min_articles is recorded as skipped and never sent.

    \b
    Example:
      digest build weekly --week 2026-W48
      digest build weekly --week 2026-W48 --force --json
    """
    config = env.config
    if period is None:
        chosen = config.digest(digest)
        period = containing(chosen.cadence, env.now(), config.digest_timezone(chosen)).label
    edition = select.select_edition(config, env.store, digest, period, now=env.now(), force=force)
    print_edition(env, edition, as_json)
    if edition.status == SKIPPED and not as_json:
        click.echo(f"skipped: {edition.key} will not be sent")


COMMANDS: list[click.Command] = [build_command]
