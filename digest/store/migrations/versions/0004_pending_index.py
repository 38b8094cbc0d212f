"""A cheaper ledger: pending rows indexed on their own, and the name each row is sent to.

Only pending rows are in the send loop's index now, so a row leaves it once when claimed
and never moves in it again (the old index on every state moved each row twice more).
The recipient's name is kept on the row at planning time, as the address already is, so
reading a batch needs no join.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

PENDING = sa.text("state = 'pending'")


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    # A store made before migrations existed may have some of these already.
    if "name" not in {c["name"] for c in inspector.get_columns("deliveries")}:
        op.add_column("deliveries", sa.Column("name", sa.Text(), nullable=False, server_default=""))
        op.execute(
            "UPDATE deliveries SET name = coalesce((SELECT s.name FROM subscribers s"
            " WHERE s.id = deliveries.subscriber_id), '') WHERE state IN ('pending', 'sending')"
        )
    indexes = {i["name"] for i in inspector.get_indexes("deliveries")}
    if "ix_deliveries_edition_state" in indexes:
        op.drop_index("ix_deliveries_edition_state", table_name="deliveries")
    if "ix_deliveries_pending" not in indexes:
        op.create_index(
            "ix_deliveries_pending",
            "deliveries",
            ["edition_key", "content_key", "id"],
            sqlite_where=PENDING,
            postgresql_where=PENDING,
        )


def downgrade() -> None:
    op.drop_index("ix_deliveries_pending", table_name="deliveries")
    op.create_index(
        "ix_deliveries_edition_state", "deliveries", ["edition_key", "state", "content_key", "id"]
    )
    op.drop_column("deliveries", "name")
