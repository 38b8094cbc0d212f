"""The store's schema is versioned: `digest db upgrade` makes it, every command checks it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from alembic.autogenerate import compare_metadata
from alembic.config import Config as AlembicConfig
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, create_engine, inspect, text

from digest.config import Config
from digest.errors import ExitCode
from digest.store import open_store
from digest.store.migrate import SCHEMA_VERSION, VERSION_TABLE
from digest.store.schema import metadata


def _versions(url: str) -> list[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [r[0] for r in conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}"))]
    finally:
        engine.dispose()


@contextmanager
def _store_at(url: str, version: str) -> Iterator[Connection]:
    """A store migrated up to `version` (not further), in one transaction to write rows in."""
    from alembic import command

    engine = create_engine(url)
    alembic = AlembicConfig()
    alembic.set_main_option("script_location", "digest.store:migrations")
    try:
        with engine.begin() as conn:
            alembic.attributes["connection"] = conn
            command.upgrade(alembic, version)
            yield conn
    finally:
        engine.dispose()


def test_schema_version_is_the_head_of_the_migrations() -> None:
    config = AlembicConfig()
    config.set_main_option("script_location", "digest.store:migrations")
    assert ScriptDirectory.from_config(config).get_heads() == [SCHEMA_VERSION]


def test_db_upgrade_creates_the_tables_the_code_expects(config: Config, run) -> None:  # type: ignore[no-untyped-def]
    result = run("db", "upgrade")
    assert f"schema empty -> {SCHEMA_VERSION}" in result.output
    assert _versions(config.store_url) == [SCHEMA_VERSION]
    engine = create_engine(config.store_url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
    finally:
        engine.dispose()
    assert diff == []  # the migrations build exactly digest.store.schema
    again = run("db", "upgrade")
    assert f"schema {SCHEMA_VERSION}, up to date" in again.output


def test_a_store_from_before_migrations_is_refused_then_upgraded_keeping_its_rows(
    config: Config,
    run,  # type: ignore[no-untyped-def]
) -> None:
    engine = create_engine(config.store_url)
    metadata.create_all(engine)  # what digest did before it had migrations
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO subscribers (email, name, topics, timezone, locale, status,"
                " status_reason, consent_method, consent_source, consent_ip, created_at,"
                " updated_at) VALUES ('old@example.org', 'Old', '[\"tech\"]', 'UTC', 'en',"
                " 'active', '', '', '', '', '2026-01-05 09:00:00', '2026-01-05 09:00:00')"
            )
        )
    engine.dispose()

    refused = run("subscribers", "list", expect=ExitCode.ERROR)
    assert "schema version from before migrations" in refused.output
    assert "hint: run: digest db upgrade" in refused.output
    assert VERSION_TABLE not in inspect(create_engine(config.store_url)).get_table_names()

    result = run("db", "upgrade")
    assert f"schema unversioned -> {SCHEMA_VERSION}" in result.output
    assert "old@example.org" in run("subscribers", "list").output


def test_a_store_upgraded_by_a_newer_digest_is_refused(config: Config, run) -> None:  # type: ignore[no-untyped-def]
    open_store(config.store_url).close()
    engine = create_engine(config.store_url)
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = '9999'"))
    engine.dispose()
    result = run("subscribers", "list", expect=ExitCode.ERROR)
    assert f"schema version 9999 is newer than this digest's ({SCHEMA_VERSION})" in result.output
    assert _versions(config.store_url) == ["9999"]  # left as it was


def test_upgrading_a_0003_ledger_names_its_unsent_rows_and_indexes_rows_in_send_order(
    config: Config,
    run,  # type: ignore[no-untyped-def]
) -> None:
    with _store_at(config.store_url, "0003") as conn:
        conn.execute(
            text(
                "INSERT INTO subscribers (id, email, name, topics, timezone, locale, status,"
                " status_reason, consent_method, consent_source, consent_ip, created_at,"
                " updated_at) VALUES (7, 'ana@example.org', 'Ana', '[\"tech\"]', 'UTC', 'en',"
                " 'active', '', '', '', '', '2026-01-05 09:00:00', '2026-01-05 09:00:00')"
            )
        )
        for state in ("pending", "sent"):
            conn.execute(
                text(
                    "INSERT INTO deliveries (edition_key, subscriber_id, email, variant,"
                    " content_key, state, attempts, created_at, updated_at) VALUES (:e, 7,"
                    " 'ana@example.org', 'A', 'tech|A', :s, 0, '2026-01-05 09:00:00',"
                    " '2026-01-05 09:00:00')"
                ),
                {"e": f"weekly/2026-W0{1 if state == 'pending' else 2}", "s": state},
            )

    assert "schema 0003 -> " in run("db", "upgrade").output
    engine = create_engine(config.store_url)
    try:
        with engine.connect() as conn:
            names = dict(conn.execute(text("SELECT state, name FROM deliveries")).all())
        indexes = {i["name"] for i in inspect(engine).get_indexes("deliveries")}
    finally:
        engine.dispose()
    assert names == {"pending": "Ana", "sent": ""}  # a sent row keeps what it was sent with
    assert "ix_deliveries_send_order" in indexes
    assert not {"ix_deliveries_pending", "ix_deliveries_edition_state"} & indexes


def test_upgrading_a_0005_store_fills_each_editions_first_sent_time_from_its_sent_rows(
    config: Config,
    run,  # type: ignore[no-untyped-def]
) -> None:
    rows = [  # (edition, state, sent_at)
        ("weekly/2026-W01", "sent", "2026-01-05 09:00:00"),
        ("weekly/2026-W01", "sent", "2026-01-05 08:00:00"),
        ("weekly/2026-W01", "failed", "2026-01-05 07:00:00"),  # not sent: not counted
        ("weekly/2026-W02", "pending", None),
    ]
    with _store_at(config.store_url, "0005") as conn:
        for key in ("weekly/2026-W01", "weekly/2026-W02"):
            conn.execute(
                text(
                    "INSERT INTO editions (key, digest, period, status, created_at, data)"
                    " VALUES (:k, 'weekly', :p, 'sent', '2026-01-05 06:00:00', '{}')"
                ),
                {"k": key, "p": key.split("/")[1]},
            )
        for i, (key, state, sent_at) in enumerate(rows):
            conn.execute(
                text(
                    "INSERT INTO deliveries (edition_key, subscriber_id, email, name, variant,"
                    " content_key, state, attempts, created_at, updated_at, sent_at) VALUES"
                    " (:e, :i, :m, '', 'A', 'tech|A', :s, 1, '2026-01-05 06:00:00',"
                    " '2026-01-05 06:00:00', :t)"
                ),
                {"e": key, "i": i + 1, "m": f"r{i}@example.org", "s": state, "t": sent_at},
            )

    assert "schema 0005 -> " in run("db", "upgrade").output
    engine = create_engine(config.store_url)
    try:
        with engine.connect() as conn:
            query = "SELECT key, first_sent_at FROM editions ORDER BY key"
            first = [(k, str(at)[:19] if at else None) for k, at in conn.execute(text(query))]
    finally:
        engine.dispose()
    assert first == [("weekly/2026-W01", "2026-01-05 08:00:00"), ("weekly/2026-W02", None)]
