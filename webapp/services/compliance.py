"""Read side of the compliance desk (CONSOLE.md §3.4): investigations and remediation deadlines, SAR
and erasure queues with their 30-day countdowns.

Investigations are Compliance & Audit instances (GOVERNORS.md §7) in ``investigation``,
``non_compliant`` or ``remediation_in_progress``. Their deadline is the governor's own clock:
the remediation deadline (C13, +30 d), the investigation's legal escalation (30 d after opening,
the ``investigation_overdue`` timer) or the earliest violation deadline (C11/C12). The status
class follows the state's attention rule (``remediation_in_progress``: "yes at deadline − 7 d"):
OVERDUE past the deadline, DUE_SOON within 7 days, OK otherwise, NONE without a deadline. Manual
actions come from ``webapp.services.actions`` (the same merge the cockpit and the forms use) and
link to the existing action forms, so every state change still goes through ``fire_event``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from webapp.models import Approval, AuditEntry, GovernorInstance, LegalHold, PrivacyRequest
from webapp.services.actions import best_actions_for_row

CASE_STATES = ("investigation", "non_compliant", "remediation_in_progress")
DUE_SOON = timedelta(days=7)
RED_DAYS = 5
"""SAR and erasure countdowns turn red at ≤ 5 days left (CONSOLE.md §3.4 [P])."""


@dataclass(frozen=True)
class CaseAction:
    """One manual action on a case as the signed-in person may take it (or why not)."""

    event: str
    title: str
    allowed: bool
    mode: str
    reason: str


@dataclass(frozen=True)
class Case:
    """A compliance case: one Compliance & Audit instance in an investigation or remediation state."""

    instance_id: str
    tenant_id: str
    customer_id: str | None
    state: str
    entered_at: datetime
    deadline: datetime | None
    deadline_kind: str
    age_days: float
    days_left: float | None
    status_class: str
    actions: tuple[CaseAction, ...]


def _moment(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None


def case_deadline(row: GovernorInstance) -> tuple[datetime | None, str]:
    """The deadline that matters in the case's state, and what it is."""
    data = row.data or {}
    if row.state == "remediation_in_progress":
        return _moment(data.get("remediation_deadline")) or row.timeout_at, "remediation deadline"
    if row.state == "investigation":
        return row.timeout_at, "legal escalation"
    deadlines = [
        d
        for d in (_moment(v.get("deadline")) for v in data.get("violations") or [] if isinstance(v, dict))
        if d
    ]
    return (min(deadlines), "violation deadline") if deadlines else (row.timeout_at, "")


def status_class(deadline: datetime | None, now: datetime) -> str:
    """OVERDUE, DUE_SOON (≤ 7 days), OK, or NONE without a deadline."""
    if deadline is None:
        return "NONE"
    if deadline < now:
        return "OVERDUE"
    return "DUE_SOON" if deadline - now <= DUE_SOON else "OK"


def cases(
    session: Session,
    *,
    now: datetime,
    roles: Iterable[str],
    tenants: Sequence[str] | None = None,
    limit: int = 200,
) -> list[Case]:
    """Open investigations and remediations, nearest deadline first, with the person's actions."""
    query = select(GovernorInstance).where(
        GovernorInstance.governor == "compliance_audit", GovernorInstance.state.in_(CASE_STATES)
    )
    if tenants is not None:
        query = query.where(GovernorInstance.tenant_id.in_(list(tenants)))
    rows = list(
        session.scalars(query.order_by(GovernorInstance.entered_at, GovernorInstance.id).limit(limit))
    )
    held = frozenset(roles)
    out = []
    for row in rows:
        deadline, kind = case_deadline(row)
        best = best_actions_for_row(session, row, held, now, None)
        actions = tuple(
            CaseAction(a.event, a.title, a.allowed, a.mode, a.reason) for a, _role in best.values()
        )
        out.append(
            Case(
                instance_id=row.id,
                tenant_id=row.tenant_id,
                customer_id=row.customer_id,
                state=row.state,
                entered_at=row.entered_at,
                deadline=deadline,
                deadline_kind=kind,
                age_days=max(0.0, (now - row.entered_at).total_seconds() / 86400),
                days_left=None if deadline is None else (deadline - now).total_seconds() / 86400,
                status_class=status_class(deadline, now),
                actions=actions,
            )
        )
    far = datetime.max.replace(tzinfo=now.tzinfo)
    return sorted(out, key=lambda c: (c.deadline or far, c.instance_id))


@dataclass(frozen=True)
class QueuedRequest:
    """A SAR or erasure request in the desk's queue, with its countdown."""

    request: PrivacyRequest
    days_left: float
    approval_status: str | None

    @property
    def red(self) -> bool:
        return self.days_left <= RED_DAYS

    @property
    def overdue(self) -> bool:
        return self.days_left < 0


def privacy_queue(
    session: Session, *, now: datetime, kind: str | None = None, tenants: Sequence[str] | None = None
) -> list[QueuedRequest]:
    """Open SAR and erasure requests, nearest due date first."""
    query = select(PrivacyRequest).where(PrivacyRequest.status.in_(("open", "pending_approval")))
    if kind is not None:
        query = query.where(PrivacyRequest.kind == kind)
    if tenants is not None:
        query = query.where(PrivacyRequest.tenant_id.in_(list(tenants)))
    rows = list(session.scalars(query.order_by(PrivacyRequest.due_at, PrivacyRequest.id).limit(500)))
    ids = [r.approval_id for r in rows if r.approval_id]
    statuses: dict[str, str] = {}
    if ids:
        for approval_id, status in session.execute(
            select(Approval.id, Approval.status).where(Approval.id.in_(ids))
        ):
            statuses[approval_id] = status
    return [
        QueuedRequest(r, (r.due_at - now).total_seconds() / 86400, statuses.get(r.approval_id or ""))
        for r in rows
    ]


def recent_requests(
    session: Session, *, limit: int = 20, tenants: Sequence[str] | None = None
) -> list[PrivacyRequest]:
    """The latest closed requests (fulfilled, rejected, voided), newest first."""
    query = select(PrivacyRequest).where(PrivacyRequest.status.not_in(("open", "pending_approval")))
    if tenants is not None:
        query = query.where(PrivacyRequest.tenant_id.in_(list(tenants)))
    return list(session.scalars(query.order_by(PrivacyRequest.received_at.desc()).limit(limit)))


def active_holds(session: Session, *, tenants: Sequence[str] | None = None) -> list[LegalHold]:
    """Legal holds in force, oldest first."""
    query = select(LegalHold).where(LegalHold.released_at.is_(None))
    if tenants is not None:
        query = query.where(LegalHold.tenant_id.in_(list(tenants)))
    return list(session.scalars(query.order_by(LegalHold.placed_at, LegalHold.id)))


@dataclass(frozen=True)
class Integrity:
    """The last integrity run (CONSOLE.md §3.4 "Audit integrity"): when, by whom, what it found."""

    at: datetime
    actor: str
    chains: int
    intact: int
    first_broken: list[tuple[str, int | None]]

    @property
    def percent(self) -> float:
        return 100.0 * self.intact / self.chains if self.chains else 100.0


def last_integrity_run(session: Session, *, tenants: Sequence[str] | None = None) -> Integrity | None:
    """The ``audit.verified`` entries of the latest run (one per chain checked, plus a summary of the
    broken ones on the platform chain), or None when nobody verified yet."""
    base = select(AuditEntry).where(AuditEntry.action == "audit.verified")
    if tenants is not None:
        base = base.where(AuditEntry.tenant_id.in_(list(tenants)))
    last = session.scalars(base.order_by(AuditEntry.occurred_at.desc()).limit(1)).first()
    if last is None:
        return None
    rows = session.scalars(
        base.where(AuditEntry.occurred_at == last.occurred_at, AuditEntry.actor == last.actor)
    )
    results: dict[str, dict[str, Any]] = {}
    for row in rows:
        payload = json.loads(row.payload)
        if "tenants" in payload:  # the summary of broken chains
            for tenant, result in payload["tenants"].items():
                results[tenant] = result
        else:
            results.setdefault(row.tenant_id, payload)
    broken = sorted((t, r.get("first_broken_seq")) for t, r in results.items() if not r.get("ok"))
    return Integrity(last.occurred_at, last.actor, len(results), len(results) - len(broken), broken)
