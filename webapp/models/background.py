"""What background work did: effect runs (the exactly-once marker), notices, alerts, sandbox charges.

``effect_runs`` is keyed by the outbox job id: a row exists once an effect has been carried out, so a
retried or redelivered job finds it and does nothing again. ``notifications`` and ``alerts`` are the
sinks the console lists; ``sandbox_charges`` is the deterministic payment processor's own ledger
(standing in for the processor's side, so idempotency survives process restarts).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from webapp.models.base import Base, BigId, JSONType, UTCDateTime


class EffectRun(Base):
    """One executed effect of an outbox row: what it did (``detail``) and how it ended (``status``)."""

    __tablename__ = "effect_runs"
    __table_args__ = (
        Index("ix_effect_runs_customer", "customer_id", "finished_at"),
        Index("ix_effect_runs_effect", "effect", "finished_at"),
    )

    job_id: Mapped[str] = mapped_column(String(120), primary_key=True)
    outbox_id: Mapped[int | None] = mapped_column(BigId, default=None)
    tenant_id: Mapped[str] = mapped_column(String(64))
    customer_id: Mapped[str | None] = mapped_column(String(64), default=None)
    instance_id: Mapped[str | None] = mapped_column(String(80), default=None)
    governor: Mapped[str | None] = mapped_column(String(32), default=None)
    effect: Mapped[str] = mapped_column(String(64))
    family: Mapped[str] = mapped_column(String(32))
    # done (carried out), skipped (nothing to do, e.g. a zero refund), rejected (the feedback event was
    # refused by the governor), failed (retries exhausted).
    status: Mapped[str] = mapped_column(String(16))
    summary: Mapped[str] = mapped_column(Text, default="")
    detail: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    finished_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Notification(Base):
    """A notice to a customer or a staff queue (templates are rendered by the mailer, not here)."""

    __tablename__ = "notifications"
    __table_args__ = (
        Index("ix_notifications_customer", "customer_id", "created_at"),
        Index("ix_notifications_queue", "audience", "queue", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(120), index=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    customer_id: Mapped[str | None] = mapped_column(String(64), default=None)
    instance_id: Mapped[str | None] = mapped_column(String(80), default=None)
    audience: Mapped[str] = mapped_column(String(16))
    queue: Mapped[str | None] = mapped_column(String(32), default=None)
    channel: Mapped[str] = mapped_column(String(16))
    template: Mapped[str] = mapped_column(String(64))
    args: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Alert(Base):
    """A critical alert (e.g. a must-apply cascade that failed) waiting for a person to acknowledge it."""

    __tablename__ = "alerts"
    __table_args__ = (Index("ix_alerts_open", "acknowledged_at", "created_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(120), unique=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    customer_id: Mapped[str | None] = mapped_column(String(64), default=None)
    instance_id: Mapped[str | None] = mapped_column(String(80), default=None)
    governor: Mapped[str | None] = mapped_column(String(32), default=None)
    level: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    acknowledged_by: Mapped[str | None] = mapped_column(String(64), default=None)


class SandboxCharge(Base):
    """A charge or refund as the sandbox processor recorded it, under the caller's idempotency key."""

    __tablename__ = "sandbox_charges"
    __table_args__ = (
        Index("ix_sandbox_charges_customer", "customer_ref", "created_at"),
        # The settlement report pages through the ledger by (time, id) from a cursor.
        Index("ix_sandbox_charges_settled", "created_at", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    reference: Mapped[str] = mapped_column(String(64), unique=True)
    customer_ref: Mapped[str] = mapped_column(String(64))
    amount_cents: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    token: Mapped[str | None] = mapped_column(String(64), default=None)
    status: Mapped[str] = mapped_column(String(16))
    decline_code: Mapped[str | None] = mapped_column(String(64), default=None)
    decline_message: Mapped[str | None] = mapped_column(String(200), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
