"""Rollup tables behind the dashboards (CONSOLE.md §3): small, pre-aggregated, filled by a job.

``webapp.services.rollups.refresh_rollups`` keeps them up to date from the raw tables, reading only
history rows newer than the watermark it stores in ``rollup_watermarks``; the dashboards read only
these tables (and the live, indexed approval/stuck queues), never the history.

- ``rollup_transition_hours``: applied transitions per hour × governor × event × from → to state.
- ``rollup_state_durations``: time spent in a state (entry to exit), per day of exit × governor ×
  state, as a fixed log-spaced histogram (``buckets``: counts per ``DURATION_BOUNDS`` bucket).
- ``rollup_decision_latency``: ``fire_event`` durations per hour × governor, as the Prometheus
  histogram's buckets (each process adds what it observed since its last flush).
- ``rollup_payments``: billing payment outcomes per hour × processor × outcome × decline reason.
- ``rollup_state_counts``: instances per governor × state (with overdue and attention counts), one
  snapshot per hour (the latest hour is "now").
- ``rollup_samples``: gauges sampled at each refresh (queue depth, pending approvals).
- ``rollup_effect_hours``: background effect runs and failures per hour (the error rate).
- ``rollup_sla_periods`` / ``rollup_sla_tiers``: closed SLA periods per customer (the violations
  table) and their per-tier sums (achievement and credits due).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Float, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from webapp.models.base import Base, BigId, JSONType, UTCDateTime


class RollupWatermark(Base):
    """How far a rollup has read its source (``last_id``), and when it last ran."""

    __tablename__ = "rollup_watermarks"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    last_id: Mapped[int] = mapped_column(BigId, default=0)
    refreshed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class RollupTransitionHour(Base):
    """Applied transitions in one hour for one (governor, event, from_state, to_state)."""

    __tablename__ = "rollup_transition_hours"

    # Governor first: every read is one governor over a range of hours (the primary key's index).
    governor: Mapped[str] = mapped_column(String(32), primary_key=True)
    hour: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    event: Mapped[str] = mapped_column(String(64), primary_key=True)
    from_state: Mapped[str] = mapped_column(String(40), primary_key=True)
    to_state: Mapped[str] = mapped_column(String(40), primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)


class RollupStateDuration(Base):
    """Times in a state that ended on this day (UTC): count, total seconds and a histogram.

    Daily, not hourly: stays last hours to weeks and the window is 30 days, so a day is fine enough
    and keeps the rows a request merges to days × states.
    """

    __tablename__ = "rollup_state_durations"

    day: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    governor: Mapped[str] = mapped_column(String(32), primary_key=True)
    state: Mapped[str] = mapped_column(String(40), primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)
    sum_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    buckets: Mapped[list[int]] = mapped_column(JSONType, default=list)


class RollupDecisionLatency(Base):
    """Decision durations observed in this hour for one governor (Prometheus histogram buckets)."""

    __tablename__ = "rollup_decision_latency"

    hour: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    governor: Mapped[str] = mapped_column(String(32), primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)
    sum_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    buckets: Mapped[list[int]] = mapped_column(JSONType, default=list)


class RollupPayment(Base):
    """Payment outcomes (received / declined) in one hour, per processor and decline reason."""

    __tablename__ = "rollup_payments"

    hour: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    processor: Mapped[str] = mapped_column(String(40), primary_key=True)
    outcome: Mapped[str] = mapped_column(String(16), primary_key=True)
    reason: Mapped[str] = mapped_column(String(64), primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)


class RollupStateCount(Base):
    """Instances per governor and state at the last refresh of this hour."""

    __tablename__ = "rollup_state_counts"
    __table_args__ = (Index("ix_rollup_state_counts_governor_hour", "governor", "hour"),)

    hour: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    governor: Mapped[str] = mapped_column(String(32), primary_key=True)
    state: Mapped[str] = mapped_column(String(40), primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)
    overdue: Mapped[int] = mapped_column(Integer, default=0)
    attention: Mapped[int] = mapped_column(Integer, default=0)


class RollupSample(Base):
    """One gauge reading taken by a refresh (``metric``: queue_depth, pending_approvals)."""

    __tablename__ = "rollup_samples"
    __table_args__ = (Index("ix_rollup_samples_metric_at", "metric", "at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    metric: Mapped[str] = mapped_column(String(40))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    value: Mapped[float] = mapped_column(Float)


class RollupEffectHour(Base):
    """Background effect runs that finished in this hour, and how many failed or were refused."""

    __tablename__ = "rollup_effect_hours"

    hour: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    runs: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[int] = mapped_column(Integer, default=0)


class RollupSlaPeriod(Base):
    """One closed SLA period of one customer (quota_sla ``sla_period_closed``) against its tier."""

    __tablename__ = "rollup_sla_periods"
    __table_args__ = (Index("ix_rollup_sla_periods_violated", "violated", "closed_at"),)

    customer_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    period: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    tier: Mapped[str] = mapped_column(String(32))
    uptime_pct: Mapped[str] = mapped_column(String(16))
    p99_ms: Mapped[int | None] = mapped_column(Integer, default=None)
    error_rate_pct: Mapped[str | None] = mapped_column(String(16), default=None)
    uptime_met: Mapped[bool] = mapped_column(Boolean)
    p99_met: Mapped[bool | None] = mapped_column(Boolean, default=None)
    error_met: Mapped[bool | None] = mapped_column(Boolean, default=None)
    violated: Mapped[bool] = mapped_column(Boolean)
    credit_pct: Mapped[str] = mapped_column(String(16))
    credit_cents: Mapped[int] = mapped_column(Integer, default=0)
    closed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    transition_id: Mapped[int] = mapped_column(BigId)
    detail: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)


class RollupSlaTier(Base):
    """Per SLA period and tier: how many customer periods closed, met each target, and credits due."""

    __tablename__ = "rollup_sla_tiers"

    period: Mapped[str] = mapped_column(String(32), primary_key=True)
    tier: Mapped[str] = mapped_column(String(32), primary_key=True)
    periods: Mapped[int] = mapped_column(Integer, default=0)
    uptime_met: Mapped[int] = mapped_column(Integer, default=0)
    p99_measured: Mapped[int] = mapped_column(Integer, default=0)
    p99_met: Mapped[int] = mapped_column(Integer, default=0)
    violations: Mapped[int] = mapped_column(Integer, default=0)
    uptime_sum: Mapped[float] = mapped_column(Float, default=0.0)
    p99_sum: Mapped[float] = mapped_column(Float, default=0.0)
    credit_cents: Mapped[int] = mapped_column(Integer, default=0)
    closed_at: Mapped[datetime] = mapped_column(UTCDateTime())
