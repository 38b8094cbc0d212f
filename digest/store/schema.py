"""Tables of the store. Timestamps are stored as UTC and read back as aware UTC."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    Connection,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC out, on SQLite (no tz) and PostgreSQL alike."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def changed(conn: Connection, statement: Any, key: Column[Any]) -> int:
    """How many rows `statement` inserted, updated or deleted, counted from RETURNING `key`.

    Never `rowcount`: through SQLAlchemy, PostgreSQL reports -1 for INSERT … ON CONFLICT
    DO NOTHING, which made replayed rows read as new.
    """
    return len(conn.execute(statement.returning(key)).all())


metadata = MetaData()

articles = Table(
    "articles",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("url", Text, nullable=False),
    Column("title", Text, nullable=False),
    Column("published_at", UTCDateTime, nullable=False, index=True),
    Column("content_hash", String(64), nullable=False),
    Column("data", JSON, nullable=False),  # Article.to_dict()
    Column("ingested_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

editions = Table(
    "editions",
    metadata,
    Column("key", String(128), primary_key=True),  # "weekly/2026-W05"
    Column("digest", String(64), nullable=False),
    Column("period", String(32), nullable=False),
    Column("status", String(16), nullable=False, default="draft"),
    Column("created_at", UTCDateTime, nullable=False),
    Column("approved_at", UTCDateTime),
    Column("data", JSON, nullable=False),  # Edition.to_dict()
    # When its first delivery was sent (the earliest sent_at of its sent rows), kept by the
    # ledger as rows become sent or are withdrawn: the archive lists published editions
    # without reading their deliveries.
    Column("first_sent_at", UTCDateTime),
)

# Which articles an edition carried, so later editions of the same digest never repeat one.
edition_articles = Table(
    "edition_articles",
    metadata,
    Column("edition_key", String(128), primary_key=True),
    Column("article_id", String(64), primary_key=True),
    Column("digest", String(64), nullable=False, index=True),
)

subscribers = Table(
    "subscribers",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("email", String(320), nullable=False, unique=True),  # normalized, lower-case
    Column("name", Text, nullable=False, default=""),
    Column("topics", JSON, nullable=False),  # list of topic keys
    Column("digests", JSON),  # digest keys chosen; null or empty: the first digest only
    Column("timezone", String(64), nullable=False, default="UTC"),
    Column("locale", String(16), nullable=False, default="en"),
    Column("status", String(16), nullable=False, index=True),
    Column("status_reason", Text, nullable=False, default=""),
    Column("consent_at", UTCDateTime),
    Column("consent_method", String(32), nullable=False, default=""),
    Column("consent_source", Text, nullable=False, default=""),
    Column("consent_ip", String(64), nullable=False, default=""),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

# Percent of each page PostgreSQL fills with new rows: the rest takes the next version of a
# row (planned, then claimed, then recorded) on the same page.
DELIVERIES_FILLFACTOR = 45

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("edition_key", String(128), nullable=False),
    Column("subscriber_id", Integer, nullable=False),
    Column("email", String(320), nullable=False),  # address at planning time
    Column("name", Text, nullable=False, server_default=""),  # name at planning time
    Column("variant", String(32), nullable=False, default="A"),
    Column("content_key", String(256), nullable=False),  # same key => same rendered content
    Column("state", String(16), nullable=False),  # pending|sending|sent|failed|suppressed
    Column("attempts", Integer, nullable=False, default=0),
    Column("provider_message_id", String(256)),
    Column("provider_batch_id", String(128)),  # SendGrid batch of the last attempt
    Column("last_error", Text),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("sent_at", UTCDateTime),
    Column("send_after", UTCDateTime),  # local-time delivery: not sent before this moment
    UniqueConstraint("edition_key", "subscriber_id", name="uq_delivery_edition_subscriber"),
    # Rows in send order, whatever their state: no index names `state`, so moving a row
    # (claim, record) writes no index entry, and on PostgreSQL, with room left on its page,
    # the new version stays there (a heap-only update: one write instead of four).
    Index("ix_deliveries_send_order", "edition_key", "content_key", "id"),
    postgresql_with={"fillfactor": DELIVERIES_FILLFACTOR},
)

# Provider batches this store cancelled. SendGrid lets at most 10 batches hold a pause or
# cancel at once; a hold lapses when the batch's send time passes (`until`).
provider_holds = Table(
    "provider_holds",
    metadata,
    Column("batch_id", String(128), primary_key=True),
    Column("edition_key", String(128), nullable=False),
    Column("until", UTCDateTime, nullable=False, index=True),
    Column("created_at", UTCDateTime, nullable=False),
)

events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("provider", String(32), nullable=False),
    Column("provider_event_id", String(128), nullable=False),
    Column("event", String(32), nullable=False, index=True),
    Column("email", String(320), nullable=False, default=""),
    Column("subscriber_id", Integer, index=True),
    Column("delivery_id", Integer, index=True),
    Column("edition_key", String(128), index=True),
    Column("variant", String(32)),
    Column("occurred_at", UTCDateTime, nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
    Column("data", JSON, nullable=False),
    UniqueConstraint("provider", "provider_event_id", name="uq_event_provider_id"),
)

# The A/B decision of an edition, taken once (by the rule at the end of the wait, or by a
# person); the rest of the list gets `variant`.
experiment_decisions = Table(
    "experiment_decisions",
    metadata,
    Column("edition_key", String(128), primary_key=True),
    Column("verdict", String(32), nullable=False),
    Column("winner", String(32)),
    Column("variant", String(32), nullable=False),
    Column("decided_by", String(16), nullable=False),  # rule | person
    Column("decided_at", UTCDateTime, nullable=False),
    Column("report", JSON, nullable=False),  # the figures the decision was taken on
)

# Every consent record ever given, kept when a newer one replaces it on the subscriber row:
# each web signup (pending until confirmed), and the earlier record a confirmation replaced.
consents = Table(
    "consents",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("subscriber_id", Integer, nullable=False, index=True),
    Column("email", String(320), nullable=False),
    Column("name", Text, nullable=False, default=""),
    Column("topics", JSON, nullable=False),
    Column("method", String(32), nullable=False),
    Column("source", Text, nullable=False, default=""),
    Column("ip", String(64), nullable=False, default=""),
    Column("given_at", UTCDateTime),
    Column("confirmed_at", UTCDateTime),  # null: a signup not (yet) confirmed
    Column("created_at", UTCDateTime, nullable=False),
)

# Once a send has planned an edition's audience, later runs never add to it.
audiences = Table(
    "audiences",
    metadata,
    Column("edition_key", String(128), primary_key=True),
    Column("fixed_at", UTCDateTime, nullable=False),
)

# Every change of an edition's state (draft, test-sent, approved, ...), with why.
edition_log = Table(
    "edition_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("edition_key", String(128), nullable=False, index=True),
    Column("state", String(16), nullable=False),
    Column("note", Text, nullable=False, default=""),
    Column("at", UTCDateTime, nullable=False),
)

# One row per step (build, test, send) of each scheduled send, so no step runs twice.
schedule_runs = Table(
    "schedule_runs",
    metadata,
    Column("digest", String(64), primary_key=True),
    Column("due_at", UTCDateTime, primary_key=True),  # the cron occurrence
    Column("step", String(16), primary_key=True),
    Column("outcome", String(16), nullable=False),  # done | skipped | missed | failed
    Column("edition_key", String(128), nullable=False),
    Column("note", Text, nullable=False, default=""),
    Column("at", UTCDateTime, nullable=False),
)

# How far `digest run-due` has looked, per digest: runs missed since then are reported.
schedule_marks = Table(
    "schedule_marks",
    metadata,
    Column("digest", String(64), primary_key=True),
    Column("checked_to", UTCDateTime, nullable=False),
)
