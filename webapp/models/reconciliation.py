"""The payment processor's settlement report as we imported it, for reconciling invoices (B08).

- ``processor_records``: one row per settled line of the processor's report (a charge or a refund), unique
  by the processor's reference, exactly as reported; ``webapp.services.reconciliation`` imports them and
  the billing world facts (``processor_record_matches``, ``processor_confirms_payment``) read them.
- ``processor_cursors``: how far the report of each processor has been imported (its opaque cursor).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from webapp.models.base import Base, BigId, UTCDateTime


class ProcessorRecord(Base):
    """A charge or refund the processor settled, as its settlement report listed it."""

    __tablename__ = "processor_records"
    __table_args__ = (Index("ix_processor_records_customer", "customer_ref", "settled_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    processor: Mapped[str] = mapped_column(String(32))
    reference: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # "charge" or "refund"
    amount_cents: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(16))  # "succeeded", "declined" or "failed"
    customer_ref: Mapped[str] = mapped_column(String(64))
    settled_at: Mapped[datetime] = mapped_column(UTCDateTime())
    imported_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ProcessorCursor(Base):
    """Where the next import of a processor's settlement report starts."""

    __tablename__ = "processor_cursors"

    processor: Mapped[str] = mapped_column(String(32), primary_key=True)
    cursor: Mapped[str | None] = mapped_column(String(200), default=None)
    imported_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
