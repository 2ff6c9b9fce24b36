"""bulk runs: progress and per-item report of finance bulk retries

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 04:35:00

One row per bulk operation started from the finance retry board (CONSOLE.md §3.2): who asked, with
which role and reason, the invoices, progress counters and the per-invoice results.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import webapp.models.base

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "bulk_runs",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=True),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("event", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("instance_ids", _JSON, nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("results", _JSON, nullable=False),
        sa.Column("runs", sa.Integer(), nullable=False),
        sa.Column("created_at", webapp.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("started_at", webapp.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", webapp.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bulk_runs")),
    )
    with op.batch_alter_table("bulk_runs", schema=None) as batch_op:
        batch_op.create_index("ix_bulk_runs_created", ["created_by", "created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("bulk_runs", schema=None) as batch_op:
        batch_op.drop_index("ix_bulk_runs_created")
    op.drop_table("bulk_runs")
