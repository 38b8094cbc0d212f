"""`digest edition`: show an edition, and the editor's changes before it is approved."""

from __future__ import annotations

import getpass
import json
import os
import textwrap
from collections.abc import Callable

import click

from digest import editing, lifecycle
from digest.cli import Env, pass_env
from digest.cli.periods import period_options
from digest.editions import Edition, find_edition
from digest.lifecycle import APPROVED

TITLE_WIDTH = 48
EDITOR_ENV = "DIGEST_EDITOR"


def print_edition(env: Env, edition: Edition, as_json: bool, *, cards: bool = False) -> None:
    """The edition as JSON only, or as a table (then, with `cards`, each card in full)
    followed by what selection and editors did."""
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
    if cards:
        _print_cards(edition)
    for note in edition.notes:
        click.echo(f"- {note}")


def _print_cards(edition: Edition) -> None:
    """What each card will say: intro, then per card its title, sources, summary, prompt."""
    wrap = textwrap.TextWrapper(width=88, initial_indent="    ", subsequent_indent="    ")
    click.echo()
    if edition.intro:
        click.echo("intro:")
        click.echo("\n".join(wrap.fill(p) for p in edition.intro.split("\n\n")))
    for item in edition.items:
        origin = item.prompt_origin or "unknown"
        click.echo(f"card {item.rank}: {item.article.title}")
        click.echo(f"  sources: {' · '.join(item.sources) or 'none'}")
        click.echo("  summary:")
        click.echo(wrap.fill(item.article.summary or "(none)"))
        click.echo(f"  prompt ({origin}):")
        click.echo(wrap.fill(item.thoughts or "(none)"))
    click.echo()


@click.group("edition")
def edition_group() -> None:
    """Show an edition; pin, drop, move, rewrite or approve its cards before it is sent.

    \b
    Example:
      digest edition show weekly --week 2026-W48
      digest edition pin weekly --week 2026-W48 3f9c2a7d1e0b4c55
      digest edition set weekly --week 2026-W48 --card 2 --prompt "Would you pay more?"
      digest edition approve weekly --week 2026-W48
    """


@edition_group.command("show")
@click.argument("digest")
@period_options(required=True)
@click.option("--json", "as_json", is_flag=True, help="Print the edition as JSON only.")
@pass_env
def show_command(env: Env, digest: str, period: str, as_json: bool) -> None:
    """Print an edition: its cards with ids, ranks and reasons, then each card's sources,
    summary and Thoughts prompt with the prompt's origin (own, derived, fallback or
    editor), then the notes.

    \b
    Example:
      digest edition show weekly --week 2026-W48 --json
    """
    edition = find_edition(env.config, env.store.editions, digest, period)
    print_edition(env, edition, as_json, cards=True)


def _adjust(env: Env, digest: str, period: str, change: Callable[[Edition], Edition]) -> Edition:
    return editing.adjust_edition(env.config, env.store, digest, period, change, now=env.now())


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
    print_edition(env, _adjust(env, digest, period, lambda e: editing.pin(e, article_id)), False)


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
    print_edition(env, _adjust(env, digest, period, lambda e: editing.drop(e, article_id)), False)


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
    change = lambda e: editing.move(e, article_id, position)  # noqa: E731
    print_edition(env, _adjust(env, digest, period, change), False)


@edition_group.command("set")
@click.argument("digest")
@period_options(required=True)
@click.option("--card", type=int, metavar="N", help="The card's # in `digest edition show`.")
@click.option("--prompt", help="The card's new Thoughts prompt.")
@click.option("--summary", help="The card's new summary.")
@click.option("--title", help="The card's new title.")
@click.option("--intro", help="The editor's note at the top of the email ('' removes it).")
@click.option(
    "--by",
    metavar="NAME",
    help=f"Who makes the change, for the history. Default: ${EDITOR_ENV}, else the login name.",
)
@pass_env
def set_command(
    env: Env,
    digest: str,
    period: str,
    card: int | None,
    prompt: str | None,
    summary: str | None,
    title: str | None,
    intro: str | None,
    by: str | None,
) -> None:
    """Rewrite a card's prompt, summary or title, or the email's intro, before approval.

    Each change is recorded with who made it, when, and the old and new text
    (`digest edition history`). Refused once the edition is approved or has deliveries.

    \b
    Example:
      digest edition set weekly --week 2026-W48 --card 2 --prompt "Would you pay more?"
      digest edition set weekly --week 2026-W48 --intro "A quieter week, and a good one."
    """
    fields = {"prompt": prompt, "summary": summary, "title": title}
    given = {k: v for k, v in fields.items() if v is not None}
    if given and card is None:
        raise click.UsageError("--prompt, --summary and --title need --card N")
    if not given and intro is None:
        raise click.UsageError("give --card N with --prompt, --summary or --title, or --intro")
    who = by or os.environ.get(EDITOR_ENV) or getpass.getuser()
    now = env.now()

    def change(edition: Edition) -> Edition:
        for field, value in given.items():
            edition = editing.set_card(edition, card or 0, field, value, who=who, at=now)
        if intro is not None:
            edition = editing.set_intro(edition, intro, who=who, at=now)
        return edition

    print_edition(env, _adjust(env, digest, period, change), False, cards=True)


@edition_group.command("history")
@click.argument("digest")
@period_options(required=True)
@click.option("--json", "as_json", is_flag=True, help="Print the changes as JSON.")
@pass_env
def history_command(env: Env, digest: str, period: str, as_json: bool) -> None:
    """List the editors' changes to an edition: when, who, what, old and new text.

    \b
    Example:
      digest edition history weekly --week 2026-W48
    """
    edition = find_edition(env.config, env.store.editions, digest, period)
    if as_json:
        click.echo(json.dumps([c.to_dict() for c in edition.changes], indent=2))
        return
    if not edition.changes:
        click.echo(f"{edition.key}: no changes by editors")
    for c in edition.changes:
        what = "intro" if c.card is None else f"card {c.card} {c.field}"
        click.echo(f"{c.at.isoformat(timespec='seconds')}  {c.who}  {what}")
        click.echo(f"  old: {c.old or '(empty)'}")
        click.echo(f"  new: {c.new or '(empty)'}")


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
    editing.approve(edition)  # refuses an edition with no articles
    note = "approved by an editor"
    lifecycle.move_or_explain(env.store.schedules, edition, APPROVED, note=note, now=env.now())
    print_edition(env, env.store.editions.get(edition.key) or edition, False)


COMMANDS: list[click.Command] = [edition_group]
