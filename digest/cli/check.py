"""`digest check`: validate the project before a run."""

from __future__ import annotations

import click

from digest.cli import Env, pass_env
from digest.errors import ExitCode
from digest.sources import survey

COMMANDS: list[click.Command] = []


@click.command()
@click.option("--no-sources", is_flag=True, help="Do not read the sources.")
@pass_env
def check(env: Env, no_sources: bool) -> None:
    """Validate digest.yaml, compile every digest's email template and read every source.

    Reading stores nothing; it lists each source's entries, skipped entries and feed
    categories that map to no topic. Exits 2 naming the file, key or template position of
    the first problem, or when a source cannot be read whole.

    \b
    Example:
      digest --config digest.yaml check
      digest check --no-sources
    """
    config = env.config
    from digest.render import compile_template

    templates = config.resolve(config.templates_dir)
    for digest in config.digests:
        compile_template(templates, digest.template)
    report = survey(config) if not no_sources else None
    for s in report.sources if report else ():
        if s.error is not None:
            click.echo(f"error: {s.name}: {s.error}", err=True)
            continue
        click.echo(f"{s.name}: {len(s.articles)} articles, {len(s.skipped)} skipped")
        if s.unmapped:
            click.echo(f"{s.name}: categories with no topic: {s.unmapped_text()}")
    if report is not None and not report.ok:
        raise click.exceptions.Exit(int(ExitCode.BAD_INPUT))
    read = "" if report is None else "; sources read"
    click.echo(
        f"ok: {config.path}: {len(config.topics)} topics, {len(config.sources)} sources, "
        f"{len(config.digests)} digests; templates compile{read}"
    )


COMMANDS.append(check)
