"""staff sign-in hardening: passwords set by someone else are for one sign-in only

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29 06:00:00

A password an administrator chose or was shown (a new account's generated password, a reset) must be
replaced by the user right after their first sign-in, like an expired one (PCI DSS 8.3.5-style).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "staff_users",
        sa.Column("password_must_change", sa.Boolean(), server_default=sa.false(), nullable=False),
    )


def downgrade() -> None:
    op.drop_column("staff_users", "password_must_change")
