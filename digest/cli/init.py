"""`digest init`: start a new project that works as it is."""

from __future__ import annotations

from pathlib import Path

import click

from digest.cli import Env, pass_env


@click.command("init")
@click.argument("folder", default=".", type=click.Path(file_okay=False, path_type=Path))
@pass_env
def init_command(env: Env, folder: Path) -> None:
    """Create a project in FOLDER (default: here): a commented digest.yaml with one
    digest, `weekly`; Markdown articles dated this week; a subscribers file; and the
    email and web templates to customize. Prints the commands to run next.

    Refuses to overwrite any file; nothing is written then.

    \b
    Example:
      digest init my-newsletter
    """
    from digest.project import init_project

    project = init_project(folder, now=env.now())
    click.echo(f"Created a digest project in {folder}:")
    for top in sorted({rel.parts[0] for rel in project.files}):
        count = sum(1 for rel in project.files if rel.parts[0] == top)
        click.echo(f"  {top}" if (folder / top).is_file() else f"  {top}/ ({count} files)")
    click.echo("")
    click.echo("Next, run:")
    for command in project.commands:
        click.echo(f"  {command}")
    click.echo("")
    click.echo(f"Then open outbox/weekly/{project.week}/index.html, and the links in the emails.")


COMMANDS: list[click.Command] = [init_command]
