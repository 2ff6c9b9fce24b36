"""payment reconciliation: the processor's settlement lines and the import cursor

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29 06:30:00

processor_records holds each settled charge or refund of the processor's settlement report (unique by
the processor's reference); processor_cursors holds where the next import of that report starts. The
billing reconciliation (B08) matches invoices against these rows, never against the processor live.
The sandbox processor's ledger gets an index on (created_at, id), the order its settlement report pages in.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import webapp.models.base

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "processor_records",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("processor", sa.String(length=32), nullable=False),
        sa.Column("reference", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("amount_cents", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("customer_ref", sa.String(length=64), nullable=False),
        sa.Column("settled_at", webapp.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("imported_at", webapp.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_processor_records")),
        sa.UniqueConstraint("reference", name=op.f("uq_processor_records_reference")),
    )
    op.create_index("ix_processor_records_customer", "processor_records", ["customer_ref", "settled_at"])
    op.create_index("ix_sandbox_charges_settled", "sandbox_charges", ["created_at", "id"])
    op.create_table(
        "processor_cursors",
        sa.Column("processor", sa.String(length=32), nullable=False),
        sa.Column("cursor", sa.String(length=200), nullable=True),
        sa.Column("imported_at", webapp.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("processor", name=op.f("pk_processor_cursors")),
    )


def downgrade() -> None:
    op.drop_index("ix_sandbox_charges_settled", table_name="sandbox_charges")
    op.drop_table("processor_cursors")
    op.drop_index("ix_processor_records_customer", table_name="processor_records")
    op.drop_table("processor_records")
