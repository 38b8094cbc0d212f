"""The first schema: articles, editions, subscribers, the delivery ledger, events.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Timestamps are naive UTC in the database; digest.store.schema.UTCDateTime adds the zone.
UTC_TIME = sa.DateTime()


def upgrade() -> None:
    op.create_table(
        "articles",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("published_at", UTC_TIME, nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("ingested_at", UTC_TIME, nullable=False),
        sa.Column("updated_at", UTC_TIME, nullable=False),
    )
    op.create_index("ix_articles_published_at", "articles", ["published_at"])
    op.create_table(
        "editions",
        sa.Column("key", sa.String(128), primary_key=True),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("period", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("approved_at", UTC_TIME),
        sa.Column("data", sa.JSON(), nullable=False),
    )
    op.create_table(
        "edition_articles",
        sa.Column("edition_key", sa.String(128), primary_key=True),
        sa.Column("article_id", sa.String(64), primary_key=True),
        sa.Column("digest", sa.String(64), nullable=False),
    )
    op.create_index("ix_edition_articles_digest", "edition_articles", ["digest"])
    op.create_table(
        "subscribers",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("email", sa.String(320), nullable=False, unique=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("topics", sa.JSON(), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("locale", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("status_reason", sa.Text(), nullable=False),
        sa.Column("consent_at", UTC_TIME),
        sa.Column("consent_method", sa.String(32), nullable=False),
        sa.Column("consent_source", sa.Text(), nullable=False),
        sa.Column("consent_ip", sa.String(64), nullable=False),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("updated_at", UTC_TIME, nullable=False),
    )
    op.create_index("ix_subscribers_status", "subscribers", ["status"])
    op.create_table(
        "deliveries",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("edition_key", sa.String(128), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("variant", sa.String(32), nullable=False),
        sa.Column("content_key", sa.String(256), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("provider_message_id", sa.String(256)),
        sa.Column("provider_batch_id", sa.String(128)),
        sa.Column("last_error", sa.Text()),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("updated_at", UTC_TIME, nullable=False),
        sa.Column("sent_at", UTC_TIME),
        sa.UniqueConstraint("edition_key", "subscriber_id", name="uq_delivery_edition_subscriber"),
    )
    op.create_index(
        "ix_deliveries_edition_state", "deliveries", ["edition_key", "state", "content_key", "id"]
    )
    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("provider_event_id", sa.String(128), nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("subscriber_id", sa.Integer()),
        sa.Column("delivery_id", sa.Integer()),
        sa.Column("edition_key", sa.String(128)),
        sa.Column("variant", sa.String(32)),
        sa.Column("occurred_at", UTC_TIME, nullable=False),
        sa.Column("received_at", UTC_TIME, nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.UniqueConstraint("provider", "provider_event_id", name="uq_event_provider_id"),
    )
    for column in ("event", "subscriber_id", "delivery_id", "edition_key"):
        op.create_index(f"ix_events_{column}", "events", [column])


def downgrade() -> None:
    for table in ("events", "deliveries", "subscribers", "edition_articles", "editions"):
        op.drop_table(table)
    op.drop_table("articles")
