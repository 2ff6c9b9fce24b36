"""rollups: the pre-aggregated tables the dashboards read

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29 05:40:00

Hourly rollups of the transition history (counts, time in state, payments, SLA periods), decision
latency histograms, state-count snapshots, gauge samples and the watermarks of the job that fills
them (webapp.services.rollups.refresh_rollups; CONSOLE.md §3).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import webapp.models.base

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
_BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _at(name: str, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, webapp.models.base.UTCDateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "rollup_watermarks",
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("last_id", _BIGID, nullable=False),
        _at("refreshed_at", nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_rollup_watermarks")),
    )
    op.create_table(
        "rollup_transition_hours",
        sa.Column("governor", sa.String(length=32), nullable=False),
        _at("hour"),
        sa.Column("event", sa.String(length=64), nullable=False),
        sa.Column("from_state", sa.String(length=40), nullable=False),
        sa.Column("to_state", sa.String(length=40), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(
            "governor", "hour", "event", "from_state", "to_state", name=op.f("pk_rollup_transition_hours")
        ),
    )
    for table in ("rollup_state_durations", "rollup_decision_latency"):
        durations = table == "rollup_state_durations"
        keys = ("day", "governor", "state") if durations else ("hour", "governor")
        columns = [_at(keys[0]), sa.Column("governor", sa.String(length=32), nullable=False)]
        if "state" in keys:
            columns.append(sa.Column("state", sa.String(length=40), nullable=False))
        op.create_table(
            table,
            *columns,
            sa.Column("count", sa.Integer(), nullable=False),
            sa.Column("sum_seconds", sa.Float(), nullable=False),
            sa.Column("buckets", _JSON, nullable=False),
            sa.PrimaryKeyConstraint(*keys, name=op.f(f"pk_{table}")),
        )
    op.create_table(
        "rollup_payments",
        _at("hour"),
        sa.Column("processor", sa.String(length=40), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("hour", "processor", "outcome", "reason", name=op.f("pk_rollup_payments")),
    )
    op.create_table(
        "rollup_state_counts",
        _at("hour"),
        sa.Column("governor", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=40), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("overdue", sa.Integer(), nullable=False),
        sa.Column("attention", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("hour", "governor", "state", name=op.f("pk_rollup_state_counts")),
    )
    with op.batch_alter_table("rollup_state_counts", schema=None) as batch_op:
        batch_op.create_index("ix_rollup_state_counts_governor_hour", ["governor", "hour"], unique=False)
    op.create_table(
        "rollup_samples",
        sa.Column("id", _BIGID, autoincrement=True, nullable=False),
        sa.Column("metric", sa.String(length=40), nullable=False),
        _at("at"),
        sa.Column("value", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rollup_samples")),
    )
    with op.batch_alter_table("rollup_samples", schema=None) as batch_op:
        batch_op.create_index("ix_rollup_samples_metric_at", ["metric", "at"], unique=False)
    op.create_table(
        "rollup_effect_hours",
        _at("hour"),
        sa.Column("runs", sa.Integer(), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("hour", name=op.f("pk_rollup_effect_hours")),
    )
    op.create_table(
        "rollup_sla_periods",
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column("period", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("tier", sa.String(length=32), nullable=False),
        sa.Column("uptime_pct", sa.String(length=16), nullable=False),
        sa.Column("p99_ms", sa.Integer(), nullable=True),
        sa.Column("error_rate_pct", sa.String(length=16), nullable=True),
        sa.Column("uptime_met", sa.Boolean(), nullable=False),
        sa.Column("p99_met", sa.Boolean(), nullable=True),
        sa.Column("error_met", sa.Boolean(), nullable=True),
        sa.Column("violated", sa.Boolean(), nullable=False),
        sa.Column("credit_pct", sa.String(length=16), nullable=False),
        sa.Column("credit_cents", sa.Integer(), nullable=False),
        _at("closed_at"),
        sa.Column("transition_id", _BIGID, nullable=False),
        sa.Column("detail", _JSON, nullable=False),
        sa.PrimaryKeyConstraint("customer_id", "period", name=op.f("pk_rollup_sla_periods")),
    )
    with op.batch_alter_table("rollup_sla_periods", schema=None) as batch_op:
        batch_op.create_index("ix_rollup_sla_periods_violated", ["violated", "closed_at"], unique=False)
    op.create_table(
        "rollup_sla_tiers",
        sa.Column("period", sa.String(length=32), nullable=False),
        sa.Column("tier", sa.String(length=32), nullable=False),
        sa.Column("periods", sa.Integer(), nullable=False),
        sa.Column("uptime_met", sa.Integer(), nullable=False),
        sa.Column("p99_measured", sa.Integer(), nullable=False),
        sa.Column("p99_met", sa.Integer(), nullable=False),
        sa.Column("violations", sa.Integer(), nullable=False),
        sa.Column("uptime_sum", sa.Float(), nullable=False),
        sa.Column("p99_sum", sa.Float(), nullable=False),
        sa.Column("credit_cents", sa.Integer(), nullable=False),
        _at("closed_at"),
        sa.PrimaryKeyConstraint("period", "tier", name=op.f("pk_rollup_sla_tiers")),
    )


def downgrade() -> None:
    with op.batch_alter_table("rollup_sla_periods", schema=None) as batch_op:
        batch_op.drop_index("ix_rollup_sla_periods_violated")
    with op.batch_alter_table("rollup_samples", schema=None) as batch_op:
        batch_op.drop_index("ix_rollup_samples_metric_at")
    with op.batch_alter_table("rollup_state_counts", schema=None) as batch_op:
        batch_op.drop_index("ix_rollup_state_counts_governor_hour")
    for table in (
        "rollup_sla_tiers",
        "rollup_sla_periods",
        "rollup_effect_hours",
        "rollup_samples",
        "rollup_state_counts",
        "rollup_payments",
        "rollup_decision_latency",
        "rollup_state_durations",
        "rollup_transition_hours",
        "rollup_watermarks",
    ):
        op.drop_table(table)
