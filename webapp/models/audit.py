"""The tamper-evident audit log: per-tenant hash chains, and the head row that serializes appends."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from webapp.models.base import Base, UTCDateTime


class AuditEntry(Base):
    """One audit entry. Append-only: no code path updates or deletes it (PostgreSQL enforces it)."""

    __tablename__ = "audit_entries"
    __table_args__ = (
        Index("ix_audit_customer", "tenant_id", "customer_id", "seq"),
        Index("ix_audit_actor", "actor", "occurred_at"),
    )

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor: Mapped[str] = mapped_column(String(120))
    role: Mapped[str] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(64))
    customer_id: Mapped[str | None] = mapped_column(String(64), default=None)
    instance_id: Mapped[str | None] = mapped_column(String(80), default=None)
    # Canonical JSON text (sorted keys, no spaces), exactly the bytes the hash covers; never PII.
    payload: Mapped[str] = mapped_column(Text, default="{}")
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """The last sequence number and hash of a tenant's chain; locking it serializes appends."""

    __tablename__ = "audit_heads"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, default=0)
    hash: Mapped[str] = mapped_column(String(64))
