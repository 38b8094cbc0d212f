"""A ledger whose state moves write no index entry: on PostgreSQL, a heap-only update.

The index of pending rows named `state` in its condition, so every claim and record wrote
a new entry in each of the table's indexes. The send order index now holds every row,
without `state`: a claim or a record changes no indexed column, and on PostgreSQL, with
room left on each page (fillfactor 45), the new version of a row stays on its page with
no index entry written at all. Pending rows are still read in send order through it.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

FILLFACTOR = 45  # as digest.store.schema.DELIVERIES_FILLFACTOR when this was written


def upgrade() -> None:
    indexes = {i["name"] for i in sa.inspect(op.get_bind()).get_indexes("deliveries")}
    if "ix_deliveries_pending" in indexes:
        op.drop_index("ix_deliveries_pending", table_name="deliveries")
    if "ix_deliveries_send_order" not in indexes:
        op.create_index(
            "ix_deliveries_send_order", "deliveries", ["edition_key", "content_key", "id"]
        )
    if op.get_bind().dialect.name == "postgresql":
        # pages written from now on keep room for the next version of their rows
        op.execute(f"ALTER TABLE deliveries SET (fillfactor = {FILLFACTOR})")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE deliveries RESET (fillfactor)")
    op.drop_index("ix_deliveries_send_order", table_name="deliveries")
    op.create_index(
        "ix_deliveries_pending",
        "deliveries",
        ["edition_key", "content_key", "id"],
        sqlite_where=sa.text("state = 'pending'"),
        postgresql_where=sa.text("state = 'pending'"),
    )
