"""Bulk operations started from the finance board: one row per run, with its progress and report.

A bulk retry (CONSOLE.md §3.2) applies ``retry_now`` to a list of invoices, one ``fire_event`` per
invoice under the idempotency key ``bulk:<run id>:<instance id>``; this row tracks how far it got and
what happened to each invoice (``results``: instance id → {outcome, message, state}).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from webapp.models.base import Base, JSONType, UTCDateTime


class BulkRun(Base):
    """One bulk operation: who asked, with which role and reason, over which instances, and progress."""

    __tablename__ = "bulk_runs"
    __table_args__ = (Index("ix_bulk_runs_created", "created_by", "created_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    tenant_id: Mapped[str | None] = mapped_column(String(64), default=None)
    created_by: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text)
    event: Mapped[str] = mapped_column(String(64))
    # queued → running → finished (or failed when the job itself broke).
    status: Mapped[str] = mapped_column(String(16), default="queued")
    instance_ids: Mapped[list[str]] = mapped_column(JSONType, default=list)
    total: Mapped[int] = mapped_column(Integer, default=0)
    done: Mapped[int] = mapped_column(Integer, default=0)
    results: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    runs: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
