"""a partial index of the entitlements that still hold their SKU

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-29 07:30:00

The catalog's archive guard (X38) and the cockpit's SKU cards count the live entitlements of a SKU
among all customers'. Without an index that count read every entitlement row (100,000 customers: the
customer page's P50 went from ~60 ms to ~220 ms); the partial index holds only live entitlements by
SKU, so the count is an index-only range.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

SKU_HOLDER_ROWS = "governor = 'entitlement' AND state <> 'archived'"


def upgrade() -> None:
    op.create_index(
        "ix_instances_sku_holders",
        "governor_instances",
        ["subject_id"],
        postgresql_where=sa.text(SKU_HOLDER_ROWS),
        sqlite_where=sa.text(SKU_HOLDER_ROWS),
    )


def downgrade() -> None:
    op.drop_index("ix_instances_sku_holders", table_name="governor_instances")
