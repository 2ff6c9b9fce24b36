"""customer search: case-insensitive name-prefix index

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 03:52:00

The cockpit's search matches a name prefix case-insensitively (``lower(name) LIKE 'ada%'``) across
every tenant; the existing (tenant_id, name) index cannot serve that. On PostgreSQL the expression
index uses text_pattern_ops so LIKE prefixes use it under any collation.
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE INDEX ix_customers_name_lower ON customers (lower(name) text_pattern_ops)")
    else:
        op.execute("CREATE INDEX ix_customers_name_lower ON customers (lower(name))")


def downgrade() -> None:
    op.execute("DROP INDEX ix_customers_name_lower")
