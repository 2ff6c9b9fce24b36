"""a partial index for finance's issued-refunds list

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-29 07:10:00

The issued-refunds page lists billing history rows of the refund events newest first; they are rare
among the history's millions of rows, so without an index the page scans the table backwards. The
index holds only those rows (PostgreSQL and SQLite both support partial indexes).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

REFUND_ROWS = "governor = 'billing' AND event IN ('issue_refund', 'dispute_resolved')"


def upgrade() -> None:
    op.create_index(
        "ix_transitions_refunds",
        "transitions",
        ["id"],
        postgresql_where=sa.text(REFUND_ROWS),
        sqlite_where=sa.text(REFUND_ROWS),
    )


def downgrade() -> None:
    op.drop_index("ix_transitions_refunds", table_name="transitions")
