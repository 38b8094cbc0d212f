"""`digest db upgrade`: create the store's tables, or bring them to this digest's version."""

from __future__ import annotations

import click

from digest.cli import Env, pass_env


@click.group("db")
def db_group() -> None:
    """Manage the store's schema (SQLite file or PostgreSQL database).

    \b
    Example:
      digest db upgrade
    """


@db_group.command("upgrade")
@pass_env
def upgrade_command(env: Env) -> None:
    """Create the store's tables, or migrate them to the schema this digest reads.

    Safe to run again: an up-to-date store is left as it is. Every other command refuses
    a store of another schema version and names this command.

    \b
    Example:
      digest db upgrade
    """
    from digest.store import connect
    from digest.store.migrate import upgrade

    engine = connect(env.config.store_url)
    try:
        done = upgrade(engine)
    finally:
        engine.dispose()
    where = engine.url.render_as_string(hide_password=True)
    if done.before == done.after:
        click.echo(f"{where}: schema {done.after}, up to date")
    else:
        click.echo(f"{where}: schema {done.before} -> {done.after}")


COMMANDS: list[click.Command] = [db_group]
