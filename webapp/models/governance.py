"""Governor instances, their append-only transition history, snapshots for time travel, due timers."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from webapp.models.base import Base, BigId, JSONType, UTCDateTime

SKU_HOLDER_ROWS = "governor = 'entitlement' AND state <> 'archived'"
"""Entitlements that still hold their SKU (every state but archived)."""


class GovernorInstance(Base):
    """One FSM instance (GOVERNORS.md §0.2). Only the transition service writes ``state``."""

    __tablename__ = "governor_instances"
    __table_args__ = (
        Index("ix_instances_customer_governor", "customer_id", "governor"),
        Index("ix_instances_governor_state", "governor", "state"),
        Index("ix_instances_timeout", "timeout_at"),
        # Who still holds a SKU (X38: a SKU cannot be archived while held; the cockpit's SKU cards
        # show it): live entitlements by SKU, counted from the index alone.
        Index(
            "ix_instances_sku_holders",
            "subject_id",
            postgresql_where=text(SKU_HOLDER_ROWS),
            sqlite_where=text(SKU_HOLDER_ROWS),
        ),
    )

    id: Mapped[str] = mapped_column(String(80), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    customer_id: Mapped[str | None] = mapped_column(ForeignKey("customers.id"), default=None)
    governor: Mapped[str] = mapped_column(String(32))
    subject_id: Mapped[str | None] = mapped_column(String(80), default=None)
    state: Mapped[str] = mapped_column(String(40))
    state_seq: Mapped[int] = mapped_column(Integer, default=1)
    version: Mapped[int] = mapped_column(Integer, default=1)
    entered_at: Mapped[datetime] = mapped_column(UTCDateTime())
    timeout_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    attention: Mapped[bool] = mapped_column(Boolean, default=False)
    attention_reason: Mapped[str] = mapped_column(String(200), default="")
    data: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    timers: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


REFUND_ROWS = "governor = 'billing' AND event IN ('issue_refund', 'dispute_resolved')"
"""The history rows that may move money back to a customer (B22 refunds, B21 dispute resolutions)."""


class TransitionRecord(Base):
    """Append-only history: one row per applied decision, with the cascade that caused it."""

    __tablename__ = "transitions"
    __table_args__ = (
        Index("ix_transitions_customer_id_desc", "customer_id", "id"),
        Index("ix_transitions_instance_time", "instance_id", "occurred_at"),
        # Finance's issued-refunds list reads these newest first; refunds are rare among millions of
        # rows, so a partial index keeps that page from scanning the history (and costs other inserts
        # nothing).
        Index(
            "ix_transitions_refunds",
            "id",
            postgresql_where=text(REFUND_ROWS),
            sqlite_where=text(REFUND_ROWS),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    customer_id: Mapped[str | None] = mapped_column(String(64))
    instance_id: Mapped[str] = mapped_column(String(80))
    governor: Mapped[str] = mapped_column(String(32))
    row_id: Mapped[str] = mapped_column(String(16))
    event: Mapped[str] = mapped_column(String(64))
    from_state: Mapped[str | None] = mapped_column(String(40))
    to_state: Mapped[str] = mapped_column(String(40))
    state_seq: Mapped[int] = mapped_column(Integer)
    actor: Mapped[str] = mapped_column(String(120))
    role: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    changes: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    timers: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    cause_id: Mapped[int | None] = mapped_column(ForeignKey("transitions.id"), default=None)
    cascade_id: Mapped[str | None] = mapped_column(String(16), default=None)
    approval_id: Mapped[str | None] = mapped_column(String(64), default=None)
    event_id: Mapped[str] = mapped_column(String(64), unique=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())


class StateSnapshot(Base):
    """A full copy of an instance after a given history row, so time travel replays little."""

    __tablename__ = "state_snapshots"
    __table_args__ = (Index("ix_snapshots_instance_time", "instance_id", "occurred_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    instance_id: Mapped[str] = mapped_column(String(80))
    transition_id: Mapped[int] = mapped_column(BigId)
    state: Mapped[str] = mapped_column(String(40))
    state_seq: Mapped[int] = mapped_column(Integer)
    version: Mapped[int] = mapped_column(Integer)
    entered_at: Mapped[datetime] = mapped_column(UTCDateTime())
    data: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    timers: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())


class DueTimer(Base):
    """A governor timer waiting to fire (PostgreSQL is the source of truth for what is due)."""

    __tablename__ = "due_timers"
    __table_args__ = (
        UniqueConstraint("instance_id", "name", name="uq_due_timers_instance_name"),
        Index("ix_due_timers_due", "due_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    customer_id: Mapped[str | None] = mapped_column(String(64))
    instance_id: Mapped[str] = mapped_column(String(80))
    governor: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(64))
    event: Mapped[str] = mapped_column(String(64))
    state_seq: Mapped[int] = mapped_column(Integer)
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    remaining_seconds: Mapped[int | None] = mapped_column(Integer, default=None)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
