"""`digest preview`: write the email one subscriber would get, to open in a browser."""

from __future__ import annotations

from pathlib import Path

import click

from digest.cli import Env, pass_env

COMMANDS: list[click.Command] = []


@click.command()
@click.argument("digest")
@click.option("--week", required=True, metavar="YYYY-Www", help="Edition period, e.g. 2026-W48.")
@click.option("--subscriber", "email", required=True, metavar="EMAIL", help="Stored subscriber.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for EMAIL.html and EMAIL.txt [default: preview/DIGEST/WEEK/].",
)
@pass_env
def preview(env: Env, digest: str, week: str, email: str, out: Path | None) -> None:
    """Render a built edition for one subscriber, with real signed links, into files.

    Prints both paths, the HTML size, the article count and any size warnings. When the
    digest has an A/B test, also writes EMAIL.variants.html: every variant side by side.

    \b
    Example:
      digest preview weekly --week 2026-W48 --subscriber ana.lima@example.com
    """
    from digest.render.preview import write_preview

    result = write_preview(env.config, env.store, digest, week, email, out)
    rendered = result.email
    sections = len({i.topic for i in rendered.items})
    click.echo(f"html: {result.html_path} ({rendered.html_bytes / 1024:.1f} KB)")
    click.echo(f"text: {result.text_path}")
    if result.variants_path is not None:
        click.echo(f"variants: {result.variants_path}")
    click.echo(f"subject: {rendered.subject}")
    click.echo(f"articles: {len(rendered.items)} in {sections} sections")
    for warning in rendered.warnings:
        click.echo(f"warning: {warning}")
    if result.note:
        click.echo(f"note: {result.note}")


COMMANDS.append(preview)
