"""Provider holds (cancelled SendGrid batches, for the limit of 10), A/B decisions, and
every consent record ever given.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

UTC_TIME = sa.DateTime()  # naive UTC; digest.store.schema.UTCDateTime adds the zone


def upgrade() -> None:
    # A store made before migrations existed may have these tables already.
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if "provider_holds" not in existing:
        _holds()
    if "experiment_decisions" not in existing:
        _decisions()
    if "consents" not in existing:
        _consents()


def _holds() -> None:
    op.create_table(
        "provider_holds",
        sa.Column("batch_id", sa.String(128), primary_key=True),
        sa.Column("edition_key", sa.String(128), nullable=False),
        sa.Column("until", UTC_TIME, nullable=False),
        sa.Column("created_at", UTC_TIME, nullable=False),
    )
    op.create_index("ix_provider_holds_until", "provider_holds", ["until"])


def _decisions() -> None:
    op.create_table(
        "experiment_decisions",
        sa.Column("edition_key", sa.String(128), primary_key=True),
        sa.Column("verdict", sa.String(32), nullable=False),
        sa.Column("winner", sa.String(32)),
        sa.Column("variant", sa.String(32), nullable=False),
        sa.Column("decided_by", sa.String(16), nullable=False),
        sa.Column("decided_at", UTC_TIME, nullable=False),
        sa.Column("report", sa.JSON(), nullable=False),
    )


def _consents() -> None:
    op.create_table(
        "consents",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("subscriber_id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("topics", sa.JSON(), nullable=False),
        sa.Column("method", sa.String(32), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("ip", sa.String(64), nullable=False),
        sa.Column("given_at", UTC_TIME),
        sa.Column("confirmed_at", UTC_TIME),
        sa.Column("created_at", UTC_TIME, nullable=False),
    )
    op.create_index("ix_consents_subscriber_id", "consents", ["subscriber_id"])


def downgrade() -> None:
    op.drop_index("ix_consents_subscriber_id", table_name="consents")
    op.drop_table("consents")
    op.drop_table("experiment_decisions")
    op.drop_index("ix_provider_holds_until", table_name="provider_holds")
    op.drop_table("provider_holds")
