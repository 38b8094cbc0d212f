"""Schema versions: Alembic migrations run by `digest db upgrade`, checked when a store opens.

A store made by an older version of digest is refused until it is upgraded, and one made
by a newer version is refused outright: reading tables of another shape would lose data.
An empty database is created at the current version on first open, so a new project
needs no extra step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, inspect, text
from sqlalchemy.exc import InterfaceError, OperationalError

from digest.errors import DigestError

SCHEMA_VERSION = "0006"  # the head of digest/store/migrations/versions
BASELINE = "0001"  # the schema that stores made before migrations existed already have
VERSION_TABLE = "alembic_version"
UPGRADE_HINT = "run: digest db upgrade"


@dataclass(frozen=True)
class Upgrade:
    before: str  # a version, "empty" or "unversioned" (tables from before migrations)
    after: str


def stored_version(conn: Connection) -> tuple[str | None, bool]:
    """The schema version recorded in the database, and whether it holds any table."""
    tables = set(inspect(conn).get_table_names())
    if VERSION_TABLE not in tables:
        return None, bool(tables)
    version = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()
    return (str(version) if version is not None else None), True


def check_version(engine: Engine, *, create: bool) -> None:
    """Refuse a store whose schema is not the one this digest reads; create an empty one."""
    with engine.connect() as conn:
        version, has_tables = stored_version(conn)
    if version == SCHEMA_VERSION:
        return
    where = engine.url.render_as_string(hide_password=True)
    if version is None and not has_tables:
        if create:
            upgrade(engine)
            return
        raise DigestError(f"store {where}: no tables yet", hint=UPGRADE_HINT)
    if version is not None and version > SCHEMA_VERSION:
        raise DigestError(
            f"store {where}: schema version {version} is newer than this digest's "
            f"({SCHEMA_VERSION})",
            hint="install the digest version that upgraded it",
        )
    shown = version or "from before migrations"
    raise DigestError(
        f"store {where}: schema version {shown}, this digest needs {SCHEMA_VERSION}",
        hint=UPGRADE_HINT,
    )


def upgrade(engine: Engine) -> Upgrade:
    """Bring the database to SCHEMA_VERSION with the Alembic migrations, in one transaction
    where the database allows it (PostgreSQL does; SQLite commits DDL as it goes)."""
    from alembic import command
    from alembic.config import Config as AlembicConfig

    config = AlembicConfig()
    config.set_main_option("script_location", "digest.store:migrations")
    try:
        return _upgrade(engine, config, command)
    except (OperationalError, InterfaceError) as exc:
        where = engine.url.render_as_string(hide_password=True)
        raise DigestError(f"store {where}: {exc.orig}") from None


def _upgrade(engine: Engine, config: Any, command: Any) -> Upgrade:
    with engine.begin() as conn:
        version, has_tables = stored_version(conn)
        config.attributes["connection"] = conn
        if version is None and has_tables:
            # Tables made before migrations existed: they are the baseline schema.
            command.stamp(config, BASELINE)
        command.upgrade(config, "head")
        after, _ = stored_version(conn)
    if after != SCHEMA_VERSION:
        raise DigestError(f"store: upgrade ended at {after}, expected {SCHEMA_VERSION}")
    before = version or ("unversioned" if has_tables else "empty")
    return Upgrade(before=before, after=SCHEMA_VERSION)
