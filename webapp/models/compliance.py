"""Data-subject requests (SAR exports and erasures, each with its 30-day clock) and legal holds.

A ``PrivacyRequest`` is the record GDPR Art 12 asks for: when the request was received, when it is
due (received + 30 days), who asked and who fulfilled it. An erasure request also carries the
four-eyes approval it waits for (``approval_id``, an ``approvals`` row made by the transition
service). ``LegalHold`` blocks erasure while it is in force (CONSOLE.md §4.16 "no legal hold").
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from webapp.models.base import Base, UTCDateTime


class PrivacyRequest(Base):
    """A SAR or erasure request. ``status``: open, pending_approval, fulfilled, rejected, voided."""

    __tablename__ = "privacy_requests"
    __table_args__ = (
        Index("ix_privacy_requests_open", "status", "due_at"),
        Index("ix_privacy_requests_customer", "customer_id", "received_at"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    tenant_id: Mapped[str] = mapped_column(String(64))
    customer_id: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    due_at: Mapped[datetime] = mapped_column(UTCDateTime())
    requested_by: Mapped[str] = mapped_column(String(64))
    requester_role: Mapped[str] = mapped_column(String(32))
    # Free text typed by staff: kept for the file, blanked when the customer is erased.
    reason: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(24), default="open")
    approval_id: Mapped[str | None] = mapped_column(String(64), default=None)
    decided_by: Mapped[str | None] = mapped_column(String(64), default=None)
    fulfilled_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    fulfilled_by: Mapped[str | None] = mapped_column(String(64), default=None)
    result_sha256: Mapped[str | None] = mapped_column(String(64), default=None)


class LegalHold(Base):
    """A legal hold on a customer's data: while ``released_at`` is None, erasure is refused."""

    __tablename__ = "legal_holds"
    __table_args__ = (Index("ix_legal_holds_customer", "customer_id", "released_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    customer_id: Mapped[str] = mapped_column(String(64))
    reference: Mapped[str] = mapped_column(String(80))
    placed_by: Mapped[str] = mapped_column(String(64))
    placed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    released_by: Mapped[str | None] = mapped_column(String(64), default=None)
    released_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
