"""Tenants (marketplace sellers' organisations) and their customers."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from webapp.models.base import Base, UTCDateTime


class Tenant(Base):
    """A tenant: the unit of data isolation and of the audit hash chain."""

    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    pool_id: Mapped[str] = mapped_column(String(64), default="pool-1")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Customer(Base):
    """A customer of a tenant. Name and email are PII: erasure replaces them (see compliance)."""

    __tablename__ = "customers"
    __table_args__ = (
        Index("ix_customers_tenant_name", "tenant_id", "name"),
        Index("ix_customers_email", "email"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(320))
    tier: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    erased_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
