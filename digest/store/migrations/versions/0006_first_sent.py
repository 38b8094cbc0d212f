"""Each edition keeps when its first delivery was sent.

The archive, its feed and the welcome page list the editions that went out. They found
them by grouping every sent row of the ledger, a scan of the whole table on each page
view (tens of millions of rows after a year of weekly editions to a million readers).
The time is now kept on the edition and filled here from the rows already sent.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("editions")}
    if "first_sent_at" not in columns:
        op.add_column("editions", sa.Column("first_sent_at", sa.DateTime()))  # UTC, as every time
    op.execute(
        "UPDATE editions SET first_sent_at = (SELECT min(d.sent_at) FROM deliveries d"
        " WHERE d.edition_key = editions.key AND d.state = 'sent')"
    )


def downgrade() -> None:
    op.drop_column("editions", "first_sent_at")
