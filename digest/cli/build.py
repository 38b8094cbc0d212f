"""`digest build` (select and freeze an edition) and `digest edition` (editor adjustments)."""

from __future__ import annotations

import json
from collections.abc import Callable

import click

from digest import lifecycle, select
from digest.cli import Env, pass_env
from digest.cli.periods import period_options
from digest.editions import Edition, find_edition
from digest.lifecycle import APPROVED, SKIPPED
from digest.periods import containing

TITLE_WIDTH = 48


def _print(env: Env, edition: Edition, as_json: bool) -> None:
    """The edition as JSON only, or as a table followed by what selection did."""
    if as_json:
        click.echo(json.dumps(edition.to_dict(), indent=2, ensure_ascii=False))
        return
    tz = env.config.digest_timezone(env.config.digest(edition.digest))
    click.echo(f"{edition.key} ({edition.status}): {len(edition.items)} articles")
    rows = [("#", "topic", "id", "title", "published", "reason")]
    for item in edition.items:
        title = item.article.title
        if len(title) > TITLE_WIDTH:
            title = title[: TITLE_WIDTH - 1].rstrip() + "…"
        published = item.article.published_at.astimezone(tz).date().isoformat()
        rows.append((str(item.rank), item.topic, item.article.id, title, published, item.reason))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [c.ljust(w) for c, w in zip(row, widths, strict=False)]
        click.echo("  ".join([*cells, row[-1]]).rstrip())
    for note in edition.notes:
        click.echo(f"- {note}")


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
    _print(env, edition, as_json)
    if edition.status == SKIPPED and not as_json:
        click.echo(f"skipped: {edition.key} will not be sent")


@click.group("edition")
def edition_group() -> None:
    """Show an edition, and pin, drop, move or approve its articles before it is sent.

    \b
    Example:
      digest edition show weekly --week 2026-W48
      digest edition pin weekly --week 2026-W48 3f9c2a7d1e0b4c55
      digest edition approve weekly --week 2026-W48
    """


@edition_group.command("show")
@click.argument("digest")
@period_options(required=True)
@click.option("--json", "as_json", is_flag=True, help="Print the edition as JSON only.")
@pass_env
def show_command(env: Env, digest: str, period: str, as_json: bool) -> None:
    """Print an edition: its articles with ids, ranks and reasons, then its notes.

    \b
    Example:
      digest edition show weekly --week 2026-W48 --json
    """
    _print(env, find_edition(env.config, env.store.editions, digest, period), as_json)


def _adjust(env: Env, digest: str, period: str, change: Callable[[Edition], Edition]) -> None:
    edition = select.adjust_edition(env.config, env.store, digest, period, change, now=env.now())
    _print(env, edition, as_json=False)


@edition_group.command("pin")
@click.argument("digest")
@period_options(required=True)
@click.argument("article_id")
@pass_env
def pin_command(env: Env, digest: str, period: str, article_id: str) -> None:
    """Pin an article: it goes first in its section.

    \b
    Example:
      digest edition pin weekly --week 2026-W48 3f9c2a7d1e0b4c55
    """
    _adjust(env, digest, period, lambda e: select.pin(e, article_id))


@edition_group.command("drop")
@click.argument("digest")
@period_options(required=True)
@click.argument("article_id")
@pass_env
def drop_command(env: Env, digest: str, period: str, article_id: str) -> None:
    """Take an article out of the edition.

    \b
    Example:
      digest edition drop weekly --week 2026-W48 3f9c2a7d1e0b4c55
    """
    _adjust(env, digest, period, lambda e: select.drop(e, article_id))


@edition_group.command("move")
@click.argument("digest")
@period_options(required=True)
@click.argument("article_id")
@click.option(
    "--to", "position", type=int, required=True, help="New position in its section, 1 = first."
)
@pass_env
def move_command(env: Env, digest: str, period: str, article_id: str, position: int) -> None:
    """Move an article to another position within its section.

    \b
    Example:
      digest edition move weekly --week 2026-W48 3f9c2a7d1e0b4c55 --to 1
    """
    _adjust(env, digest, period, lambda e: select.move(e, article_id, position))


@edition_group.command("approve")
@click.argument("digest")
@period_options(required=True)
@pass_env
def approve_command(env: Env, digest: str, period: str) -> None:
    """Approve an edition for sending; after this it can no longer be changed.

    A digest with schedule.require_approval (the default) sends approved editions only.
    Approving a cancelled edition lets its send resume where it stopped.

    \b
    Example:
      digest edition approve weekly --week 2026-W48
    """
    edition = find_edition(env.config, env.store.editions, digest, period)
    select.approve(edition)  # refuses an edition with no articles
    note = "approved by an editor"
    lifecycle.move_or_explain(env.store.schedules, edition, APPROVED, note=note, now=env.now())
    _print(env, env.store.editions.get(edition.key) or edition, as_json=False)


COMMANDS: list[click.Command] = [build_command, edition_group]
