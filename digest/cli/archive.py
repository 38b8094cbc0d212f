"""`digest export-archive`: the web archive as static files."""

from __future__ import annotations

import json
from pathlib import Path

import click

from digest.cli import Env, pass_env


@click.command("export-archive")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@pass_env
def export_archive_command(env: Env, folder: Path, as_json: bool) -> None:
    """Write the archive pages and Atom feeds of sent editions into FOLDER.

    The same pages `digest serve` shows under /archive/, one index.html per page, for any
    static web host; serve FOLDER at <site.base_url>/archive/ so email links find them.

    \b
    Example:
      digest export-archive public/archive
    """
    from digest.web.export import export_archive

    done = export_archive(env.config, env.store, folder)
    summary = {
        "folder": str(done.folder),
        "editions": done.editions,
        "pages": done.pages,
        "feeds": done.feeds,
    }
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        click.echo(
            f"wrote {done.pages} pages and {done.feeds} feeds for {done.editions} editions "
            f"to {done.folder}"
        )


COMMANDS: list[click.Command] = [export_archive_command]
