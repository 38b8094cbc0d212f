"""`digest check`: validate the project before a run."""

from __future__ import annotations

import click

from digest.cli import Env, pass_env

COMMANDS: list[click.Command] = []


@click.command()
@pass_env
def check(env: Env) -> None:
    """Validate digest.yaml and compile every digest's email template.

    Exits 2 naming the file, key or template position of the first problem.

    \b
    Example:
      digest --config digest.yaml check
    """
    config = env.config
    from digest.render import compile_template

    templates = config.resolve(config.templates_dir)
    for digest in config.digests:
        compile_template(templates, digest.template)
    click.echo(
        f"ok: {config.path}: {len(config.topics)} topics, {len(config.sources)} sources, "
        f"{len(config.digests)} digests; templates compile"
    )


COMMANDS.append(check)
