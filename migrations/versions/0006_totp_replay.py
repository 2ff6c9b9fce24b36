"""staff sign-in hardening: the last accepted TOTP time-step of each user

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 05:45:00

A TOTP code stays valid for its 30-second step (and one step either side for clock drift). To make a
code single-use (RFC 6238 §5.2), the console remembers the last step it accepted per user and refuses
any code of that step or an earlier one, at sign-in, enrolment and four-eyes step-up alike.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("staff_users", sa.Column("totp_last_step", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    op.drop_column("staff_users", "totp_last_step")
