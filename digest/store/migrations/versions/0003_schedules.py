"""Schedules and cadence: the digests each subscriber chose, local-time delivery moments,
fixed audiences, the edition log, and the scheduler's record of its steps.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

UTC_TIME = sa.DateTime()  # naive UTC; digest.store.schema.UTCDateTime adds the zone


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    tables = set(inspector.get_table_names())
    # A store made before migrations existed may have some of these already.
    if "digests" not in {c["name"] for c in inspector.get_columns("subscribers")}:
        op.add_column("subscribers", sa.Column("digests", sa.JSON()))
    if "send_after" not in {c["name"] for c in inspector.get_columns("deliveries")}:
        op.add_column("deliveries", sa.Column("send_after", UTC_TIME))
    if "audiences" not in tables:
        op.create_table(
            "audiences",
            sa.Column("edition_key", sa.String(128), primary_key=True),
            sa.Column("fixed_at", UTC_TIME, nullable=False),
        )
    if "edition_log" not in tables:
        op.create_table(
            "edition_log",
            sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
            sa.Column("edition_key", sa.String(128), nullable=False),
            sa.Column("state", sa.String(16), nullable=False),
            sa.Column("note", sa.Text(), nullable=False),
            sa.Column("at", UTC_TIME, nullable=False),
        )
        op.create_index("ix_edition_log_edition_key", "edition_log", ["edition_key"])
    if "schedule_runs" not in tables:
        op.create_table(
            "schedule_runs",
            sa.Column("digest", sa.String(64), primary_key=True),
            sa.Column("due_at", UTC_TIME, primary_key=True),
            sa.Column("step", sa.String(16), primary_key=True),
            sa.Column("outcome", sa.String(16), nullable=False),
            sa.Column("edition_key", sa.String(128), nullable=False),
            sa.Column("note", sa.Text(), nullable=False),
            sa.Column("at", UTC_TIME, nullable=False),
        )
    if "schedule_marks" not in tables:
        op.create_table(
            "schedule_marks",
            sa.Column("digest", sa.String(64), primary_key=True),
            sa.Column("checked_to", UTC_TIME, nullable=False),
        )


def downgrade() -> None:
    op.drop_table("schedule_marks")
    op.drop_table("schedule_runs")
    op.drop_index("ix_edition_log_edition_key", table_name="edition_log")
    op.drop_table("edition_log")
    op.drop_table("audiences")
    op.drop_column("deliveries", "send_after")
    op.drop_column("subscribers", "digests")
