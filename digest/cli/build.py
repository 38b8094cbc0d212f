"""`digest build`: select and freeze an edition."""

from __future__ import annotations

import click

from digest import select
from digest.cli import Env, pass_env
from digest.cli.edition import print_edition, week_option
from digest.weeks import current_week


@click.command("build")
@click.argument("digest")
@week_option(required=False)
@click.option("--force", is_flag=True, help="Select again, replacing an edition not yet sent.")
@click.option("--json", "as_json", is_flag=True, help="Print the edition as JSON only.")
@pass_env
def build_command(env: Env, digest: str, week: str | None, force: bool, as_json: bool) -> None:
    """Select the week's articles for DIGEST and freeze them as an edition.

    Every later step (preview, send, resend) reads this frozen edition. An existing
    edition is rebuilt only with --force, and never once it has been sent.

    \b
    Example:
      digest build weekly --week 2026-W48
      digest build weekly --week 2026-W48 --force --json
    """
    config = env.config
    if week is None:
        week = current_week(env.now(), config.digest_timezone(config.digest(digest))).label
    edition = select.select_edition(config, env.store, digest, week, now=env.now(), force=force)
    print_edition(env, edition, as_json)


COMMANDS: list[click.Command] = [build_command]
