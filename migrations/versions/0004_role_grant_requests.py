"""role grant requests: four-eyes approval of an admin role grant

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 04:30:00

CONSOLE.md §1.3: only a second admin may approve a role grant to an admin. The request waits in
role_grant_requests until a different admin approves it with a fresh TOTP code (or rejects it, or it
expires after 24 h). The governor approvals table does not fit: it is bound to an instance and fired
through the transition service.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import webapp.models.base

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "role_grant_requests",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("requested_by", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", webapp.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", webapp.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("decided_by", sa.String(length=64), nullable=True),
        sa.Column("decided_at", webapp.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("decision_note", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["staff_users.id"], name=op.f("fk_role_grant_requests_user_id_staff_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_role_grant_requests")),
    )
    with op.batch_alter_table("role_grant_requests", schema=None) as batch_op:
        batch_op.create_index("ix_role_grant_requests_status", ["status", "created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_role_grant_requests_user_id"), ["user_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("role_grant_requests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_role_grant_requests_user_id"))
        batch_op.drop_index("ix_role_grant_requests_status")
    op.drop_table("role_grant_requests")
