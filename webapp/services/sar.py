"""Subject access requests (GDPR Art 12/15/20; CONSOLE.md §4.15, §5): the 30-day clock and the bundle.

A SAR is a ``privacy_requests`` row (kind ``sar``): received, due = received + 30 days, fulfilled
when a compliance officer exports the bundle. The bundle is one JSON document per customer and is
registry-driven: every mapped table with a ``customer_id`` column contributes the customer's rows
(profile, governor states, history, approvals, notifications, effect runs, timers, alerts, privacy
requests, legal holds...), plus the state snapshots of their instances, the payment processor's
records under their reference and the audit entries about them (payloads parsed). A table added
later is included without touching this module. The bundle is never stored (it would be one more
copy of the PII to erase); its SHA-256 is, on the request row and in the ``privacy.sar_exported``
audit entry.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from webapp import audit
from webapp.models import (
    AuditEntry,
    Base,
    Customer,
    GovernorInstance,
    PrivacyRequest,
    SandboxCharge,
    StateSnapshot,
)
from webapp.services.instances import jsonable
from webapp.services.transitions import Actor

DEADLINE = timedelta(days=30)
FORMAT = "marketplace-sar/1"
SKIPPED = frozenset({"customers", "audit_entries", "audit_heads"})
"""Tables handled on their own (profile, audit entries) or holding no customer data."""


class SarError(Exception):
    """A refused SAR operation: ``status`` and a message for the officer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def open_sar(
    session: Session, customer: Customer, *, reason: str, actor: Actor, now: datetime
) -> PrivacyRequest:
    """Record a received SAR and start its 30-day clock (audited)."""
    request = PrivacyRequest(
        id=f"sar-{uuid.uuid4().hex[:16]}",
        kind="sar",
        tenant_id=customer.tenant_id,
        customer_id=customer.id,
        received_at=now,
        due_at=now + DEADLINE,
        requested_by=actor.id,
        requester_role=actor.role,
        reason=reason,
        status="open",
    )
    session.add(request)
    audit.append(
        session,
        customer.tenant_id,
        actor=actor.id,
        role=actor.role,
        action="privacy.sar_received",
        occurred_at=now,
        customer_id=customer.id,
        payload={
            "request_id": request.id,
            "due_at": request.due_at.isoformat(),
            "reason_sha256": hashlib.sha256(reason.encode()).hexdigest(),
        },
    )
    return request


def customer_tables() -> list[Table]:
    """Every mapped table with a ``customer_id`` column (the registry the bundle is built from)."""
    return [t for t in Base.metadata.sorted_tables if "customer_id" in t.columns and t.name not in SKIPPED]


def _rows(session: Session, query: Any) -> list[dict[str, Any]]:
    return [jsonable(dict(m)) for m in session.execute(query).mappings()]


def build_bundle(session: Session, customer: Customer, now: datetime) -> dict[str, Any]:
    """The customer's data as one JSON-ready document (see module doc); no other customer's rows."""
    tables: dict[str, list[dict[str, Any]]] = {}
    for table in customer_tables():
        order = list(table.primary_key.columns)
        tables[table.name] = _rows(
            session, select(table).where(table.c.customer_id == customer.id).order_by(*order)
        )
    instance_ids = select(GovernorInstance.id).where(GovernorInstance.customer_id == customer.id)
    tables["state_snapshots"] = _rows(
        session,
        select(StateSnapshot.__table__)
        .where(StateSnapshot.instance_id.in_(instance_ids))
        .order_by(StateSnapshot.id),
    )
    tables["sandbox_charges"] = _rows(
        session,
        select(SandboxCharge.__table__)
        .where(SandboxCharge.customer_ref == customer.id)
        .order_by(SandboxCharge.id),
    )
    entries = []
    for e in session.scalars(
        select(AuditEntry)
        .where(AuditEntry.tenant_id == customer.tenant_id, AuditEntry.customer_id == customer.id)
        .order_by(AuditEntry.seq)
    ):
        entries.append(
            {
                "tenant_id": e.tenant_id,
                "seq": int(e.seq),
                "occurred_at": e.occurred_at.isoformat(),
                "actor": e.actor,
                "role": e.role,
                "action": e.action,
                "instance_id": e.instance_id,
                "payload": json.loads(e.payload),
                "hash": e.hash,
            }
        )
    return {
        "format": FORMAT,
        "generated_at": now.isoformat(),
        "customer": {
            "id": customer.id,
            "tenant_id": customer.tenant_id,
            "name": customer.name,
            "email": customer.email,
            "tier": customer.tier,
            "created_at": customer.created_at.isoformat(),
            "erased_at": customer.erased_at.isoformat() if customer.erased_at else None,
        },
        "data_sources": [{"table": name, "rows": len(rows)} for name, rows in sorted(tables.items())]
        + [{"table": "audit_entries", "rows": len(entries)}],
        "tables": tables,
        "audit_entries": entries,
        "notes": [
            "Audit entries hold hashes of free text (reason_sha256), never the text itself.",
            "Card numbers are never stored: the payment processor keeps them; we keep its token.",
        ],
    }


def encode(bundle: dict[str, Any]) -> bytes:
    """The bundle as the downloaded bytes (sorted keys, indented, UTF-8)."""
    return (json.dumps(bundle, sort_keys=True, indent=2, ensure_ascii=False, default=str) + "\n").encode()


def export_sar(
    session: Session, request_id: str, *, actor: Actor, now: datetime
) -> tuple[PrivacyRequest, bytes]:
    """Build the bundle for a SAR, mark the request fulfilled and audit the export."""
    request = session.get(PrivacyRequest, request_id, with_for_update=True)
    if request is None or request.kind != "sar":
        raise SarError(404, "no such subject access request")
    if request.status not in ("open", "fulfilled"):
        raise SarError(409, f"this request is {request.status}")
    customer = session.get(Customer, request.customer_id)
    if customer is None:
        raise SarError(404, "the customer of this request no longer exists")
    bundle = build_bundle(session, customer, now)
    body = encode(bundle)
    digest = hashlib.sha256(body).hexdigest()
    first = request.fulfilled_at is None
    if first:
        request.status = "fulfilled"
        request.fulfilled_at, request.fulfilled_by = now, actor.id
    request.result_sha256 = digest
    audit.append(
        session,
        customer.tenant_id,
        actor=actor.id,
        role=actor.role,
        action="privacy.sar_exported",
        occurred_at=now,
        customer_id=customer.id,
        payload={
            "request_id": request.id,
            "bundle_sha256": digest,
            "tables": {d["table"]: d["rows"] for d in bundle["data_sources"]},
            "on_time": now <= request.due_at,
            "first_export": first,
        },
    )
    return request, body


__all__ = [
    "DEADLINE",
    "FORMAT",
    "SarError",
    "build_bundle",
    "customer_tables",
    "encode",
    "export_sar",
    "open_sar",
]
