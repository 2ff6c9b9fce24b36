"""Pending four-eyes requests to grant a role that a second person must approve (the ``admin`` role)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from webapp.models.base import Base, UTCDateTime


class RoleGrantRequest(Base):
    """A role grant waiting for a second admin (CONSOLE.md §1.3: "Only a second ADM may approve a
    role grant to an ADM"). ``status`` is pending, approved, rejected or expired."""

    __tablename__ = "role_grant_requests"
    __table_args__ = (Index("ix_role_grant_requests_status", "status", "created_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("staff_users.id"), index=True)
    role: Mapped[str] = mapped_column(String(32))
    requested_by: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    decided_by: Mapped[str | None] = mapped_column(String(64), default=None)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    decision_note: Mapped[str | None] = mapped_column(Text, default=None)
