"""Right to erasure (GDPR Art 17; CONSOLE.md §4.16, §5; GOVERNORS.md §11 row 49), with four-eyes.

The flow reuses the one four-eyes mechanism instead of a second one:

1. ``request_erasure``: a compliance officer asks; the service checks legal holds and fires the
   account's ``erasure_request`` event (A25 from deactivated, A26 from locked). The definition marks
   it four-eyes, so ``fire_event`` answers 202 with an ``approvals`` row; the request row keeps its id
   and starts the 30-day clock. A refusal by the governor (wrong state, open invoice, legal hold)
   is a 409 and nothing is written.
2. ``approve_erasure``: a *different* compliance officer approves through ``approvals.approve``
   (step-up code, the requester can never approve); that fires the event, the account is archived
   and X17 → C17 moves Compliance to data_retention. In the same transaction ``anonymize_customer``
   erases the PII everywhere and checks that none is left; the request is then fulfilled.
3. The ``account_anonymize_pii`` effect that the transition also queues calls ``anonymize_customer``
   too (idempotent), so an erasure approved from the generic approvals page is just as complete.

What is PII and where it can be (``anonymize_customer``): the customer's name and email (the
``customers`` row), free text staff typed about them (history reasons, approval notes, request
reasons, prose inputs of governor events kept in payloads and instance data), and any copy of the
name or email anywhere else. The last part is registry-driven: every text and JSON column of every
mapped table is searched for the values, so a table added later is covered without a list to
maintain. The audit chain is the exception by design: its payloads only ever hold hashes of free
text (``reason_sha256``, ``comment_sha256``), so it needs no change and still verifies.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import JSON, String, Table, Text, cast, func, or_, select, update
from sqlalchemy.orm import Session

from webapp import audit
from webapp.models import (
    Approval,
    Base,
    Customer,
    GovernorInstance,
    LegalHold,
    PrivacyRequest,
    StateSnapshot,
    TransitionRecord,
)
from webapp.services import approvals
from webapp.services.transitions import Actor, EventRequest, TransitionError, fire_event

DEADLINE = timedelta(days=30)
"""GDPR Art 12(3): one month to act on a request (tracked as 30 days, CONSOLE.md §5)."""

ERASED = "[erased]"
IMMUTABLE_TABLES = frozenset({"audit_entries", "audit_heads"})
"""Append-only by trigger; they hold ids and hashes only, never PII (see webapp.audit)."""

FREE_TEXT_KEYS = frozenset(
    {
        "reason",
        "note",
        "notes",
        "comment",
        "description",
        "findings",
        "justification",
        "plan",
        "evidence",
        "resolution_note",
        "review_notes",
        "sunset_note",
    }
)
"""Payload/data keys holding prose staff typed (blanked whatever it says). Not every ``text`` input:
most are references (``payment_id``, ``sku_id``, ``*_ref``) the archived records must keep."""


class ErasureError(Exception):
    """A refused request or decision: ``status`` (403/404/409/422) and a message for the officer."""

    def __init__(self, status: int, message: str, field: str | None = None, *, keep: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.keep = keep
        """True when what was written must be committed all the same (the request was closed)."""


@dataclass
class ErasureReport:
    """What ``anonymize_customer`` changed (column → rows) and any PII left (table.column list)."""

    customer_id: str
    changed: dict[str, int] = field(default_factory=dict)
    residue: list[str] = field(default_factory=list)

    def count(self, column: str, n: int = 1) -> None:
        if n:
            self.changed[column] = self.changed.get(column, 0) + n


# --------------------------------------------------------------------------- legal holds


def active_hold(session: Session, customer_id: str) -> LegalHold | None:
    """The legal hold in force on the customer, if any."""
    return session.scalars(
        select(LegalHold).where(LegalHold.customer_id == customer_id, LegalHold.released_at.is_(None))
    ).first()


def place_hold(
    session: Session, customer: Customer, *, reference: str, actor: Actor, now: datetime
) -> LegalHold:
    """Put the customer's data under a legal hold (audited); erasure is refused while it stands."""
    hold = LegalHold(
        id=f"hold-{uuid.uuid4().hex[:16]}",
        tenant_id=customer.tenant_id,
        customer_id=customer.id,
        reference=reference,
        placed_by=actor.id,
        placed_at=now,
    )
    session.add(hold)
    _audit(
        session,
        customer,
        actor,
        now,
        "privacy.legal_hold_placed",
        {"hold_id": hold.id, "reference": reference},
    )
    return hold


def release_hold(session: Session, hold_id: str, *, actor: Actor, now: datetime) -> LegalHold:
    """Release a legal hold (audited)."""
    hold = session.get(LegalHold, hold_id, with_for_update=True)
    if hold is None or hold.released_at is not None:
        raise ErasureError(404, "no legal hold in force with this id")
    hold.released_at, hold.released_by = now, actor.id
    customer = session.get(Customer, hold.customer_id)
    assert customer is not None
    _audit(session, customer, actor, now, "privacy.legal_hold_released", {"hold_id": hold.id})
    return hold


# --------------------------------------------------------------------------- request and decision


def _account(session: Session, customer_id: str) -> GovernorInstance:
    row = session.scalars(
        select(GovernorInstance).where(
            GovernorInstance.customer_id == customer_id, GovernorInstance.governor == "customer_account"
        )
    ).first()
    if row is None:
        raise ErasureError(404, "this customer has no account record")
    return row


def _audit(
    session: Session, customer: Customer, actor: Actor, now: datetime, action: str, payload: Mapping[str, Any]
) -> None:
    audit.append(
        session,
        customer.tenant_id,
        actor=actor.id,
        role=actor.role,
        action=action,
        occurred_at=now,
        customer_id=customer.id,
        payload=payload,
    )


def request_erasure(
    session: Session,
    customer: Customer,
    *,
    reason: str,
    ownership_verification: str,
    actor: Actor,
    now: datetime,
) -> PrivacyRequest:
    """Record the request and ask the account governor for its four-eyes erasure (see module doc)."""
    if customer.erased_at is not None:
        raise ErasureError(409, "this customer's data is already erased")
    hold = active_hold(session, customer.id)
    if hold is not None:
        raise ErasureError(409, f"a legal hold ({hold.reference}) forbids erasing this customer's data")
    open_one = session.scalars(
        select(PrivacyRequest).where(
            PrivacyRequest.customer_id == customer.id,
            PrivacyRequest.kind == "erasure",
            PrivacyRequest.status.in_(("open", "pending_approval")),
        )
    ).first()
    received = now
    if open_one is not None:
        approval = approvals.get(session, open_one.approval_id, now) if open_one.approval_id else None
        if approval is not None and approval.status == approvals.OPEN:
            raise ErasureError(409, f"an erasure request is already open for this customer ({open_one.id})")
        # Its approval expired (24 h) or was closed elsewhere: the old request ends and a new one
        # takes over, on the same clock (the customer's request was received when it was received).
        open_one.status = "voided"
        received = open_one.received_at
    account = _account(session, customer.id)
    result = fire_event(
        session,
        EventRequest(
            tenant_id=customer.tenant_id,
            event="erasure_request",
            instance_id=account.id,
            payload={
                "reason": reason,
                "customer_id": customer.id,
                "ownership_verification": ownership_verification,
                "legal_hold_checked": True,
            },
            expected_version=account.version,
        ),
        actor,
        now,
    )
    if result.status != 202:
        error = result.body.get("error", {})
        message = str(error.get("message") or "the account governor refused the erasure")
        raise ErasureError(result.status if result.status >= 400 else 409, message)
    request = PrivacyRequest(
        id=f"era-{uuid.uuid4().hex[:16]}",
        kind="erasure",
        tenant_id=customer.tenant_id,
        customer_id=customer.id,
        received_at=received,
        due_at=received + DEADLINE,
        requested_by=actor.id,
        requester_role=actor.role,
        reason=reason,
        status="pending_approval",
        approval_id=str(result.body["approval_id"]),
    )
    session.add(request)
    _audit(
        session,
        customer,
        actor,
        now,
        "privacy.erasure_requested",
        {
            "request_id": request.id,
            "approval_id": request.approval_id,
            "due_at": request.due_at.isoformat(),
            "reason_sha256": hashlib.sha256(reason.encode()).hexdigest(),
        },
    )
    return request


def _locked_request(session: Session, request_id: str) -> PrivacyRequest:
    request = session.get(PrivacyRequest, request_id, with_for_update=True)
    if request is None or request.kind != "erasure":
        raise ErasureError(404, "no such erasure request")
    if request.status != "pending_approval":
        raise ErasureError(409, f"this request is already {request.status.replace('_', ' ')}")
    return request


def approve_erasure(
    session: Session,
    request_id: str,
    *,
    user_id: str,
    roles: Iterable[str],
    code: str,
    note: str,
    now: datetime,
) -> ErasureReport:
    """Second officer's approval: fire the erasure, anonymise, verify, fulfil (one transaction)."""
    request = _locked_request(session, request_id)
    if user_id == request.requested_by:
        raise ErasureError(403, "you requested this erasure; a second compliance officer must approve it")
    if "compliance" not in set(roles):
        raise ErasureError(403, "needs compliance; only a compliance officer may approve an erasure")
    hold = active_hold(session, request.customer_id)
    if hold is not None:
        raise ErasureError(
            409, f"a legal hold ({hold.reference}) was placed after the request; erasure is blocked"
        )
    assert request.approval_id is not None
    decided = approvals.approve(
        session, request.approval_id, user_id=user_id, roles=roles, code=code, note=note, now=now
    )
    if not decided.ok:
        if decided.code == "step_up_required":
            raise ErasureError(403, decided.message, field="code")
        if decided.approval is not None and decided.approval.status != approvals.OPEN:
            request.status = "voided"
            request.decided_by = user_id
            raise ErasureError(decided.status, decided.message, keep=True)
        raise ErasureError(decided.status, decided.message)
    request.decided_by = user_id
    report = anonymize_customer(session, request.customer_id, now)
    customer = session.get(Customer, request.customer_id)
    assert customer is not None
    _fulfil(session, request, customer, report, Actor(user_id, "compliance"), now)
    return report


def reject_erasure(
    session: Session, request_id: str, *, user_id: str, roles: Iterable[str], note: str, now: datetime
) -> PrivacyRequest:
    """Reject the request (with a note) through the approvals service; the request is closed."""
    request = _locked_request(session, request_id)
    assert request.approval_id is not None
    decided = approvals.reject(session, request.approval_id, user_id=user_id, roles=roles, note=note, now=now)
    if not decided.ok:
        raise ErasureError(decided.status, decided.message, field=(decided.details or {}).get("field"))
    request.status, request.decided_by = "rejected", user_id
    return request


def _fulfil(
    session: Session,
    request: PrivacyRequest,
    customer: Customer,
    report: ErasureReport,
    actor: Actor,
    now: datetime,
) -> None:
    request.status = "fulfilled"
    request.fulfilled_at, request.fulfilled_by = now, actor.id
    request.result_sha256 = hashlib.sha256(repr(sorted(report.changed.items())).encode()).hexdigest()
    _audit(
        session,
        customer,
        actor,
        now,
        "privacy.erasure_completed",
        {
            "request_id": request.id,
            "approval_id": request.approval_id,
            "columns_changed": dict(sorted(report.changed.items())),
            "pii_left": report.residue,
            "on_time": now <= request.due_at,
        },
    )


# --------------------------------------------------------------------------- anonymisation


def _pattern(values: Iterable[str]) -> re.Pattern[str] | None:
    """The values as whole words, case-insensitive ("Ann" erases "Ann", not "Annual")."""
    parts = sorted({v for v in values if v and len(v) >= 3}, key=len, reverse=True)
    if not parts:
        return None
    return re.compile(r"(?<!\w)(?:" + "|".join(re.escape(p) for p in parts) + r")(?!\w)", re.IGNORECASE)


def _scope(table: Table, customer_id: str) -> list[Any]:
    """Rows the sweep may touch: this customer's, or rows of no customer; never another customer's
    (two customers can share a name, and erasing one must not touch the other)."""
    if table.name == "customers":
        return [table.c.id == customer_id]
    if "customer_id" in table.c:
        return [or_(table.c.customer_id == customer_id, table.c.customer_id.is_(None))]
    return []


def _scrub(value: Any, pattern: re.Pattern[str] | None, *, free_text: bool = False) -> Any:
    """``value`` with free-text keys blanked and PII values replaced, recursively (JSON values)."""
    if isinstance(value, str):
        if free_text and value:
            return ERASED
        return pattern.sub(ERASED, value) if pattern is not None else value
    if isinstance(value, list):
        return [_scrub(v, pattern, free_text=free_text) for v in value]
    if isinstance(value, dict):
        return {k: _scrub(v, pattern, free_text=free_text or k in FREE_TEXT_KEYS) for k, v in value.items()}
    return value


def _text_columns(table: Table) -> Iterator[Any]:
    """The columns that can hold text: strings, text and JSON (JSONB on PostgreSQL)."""
    for column in table.columns:
        if isinstance(column.type, String | Text | JSON):
            yield column


def _like(values: Iterable[str]) -> list[str]:
    return ["%" + v.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%" for v in values if v]


def pii_hits(
    session: Session, values: Iterable[str], *, customer_id: str | None = None, include_immutable: bool = True
) -> list[str]:
    """``table.column`` names (with row counts) where any of ``values`` occurs, over every mapped table
    (only the rows ``customer_id`` may own, when given)."""
    patterns = _like(v for v in values if len(v) >= 3)
    hits: list[str] = []
    if not patterns:
        return hits
    for table in Base.metadata.sorted_tables:
        if not include_immutable and table.name in IMMUTABLE_TABLES:
            continue
        for column in _text_columns(table):
            as_text = cast(column, Text)
            scope = _scope(table, customer_id) if customer_id else []
            n = session.scalar(
                select(func.count())
                .select_from(table)
                .where(or_(*(as_text.ilike(p) for p in patterns)), *scope)
            )
            if n:
                hits.append(f"{table.name}.{column.name} ({n})")
    return hits


def anonymize_customer(session: Session, customer_id: str, now: datetime) -> ErasureReport:
    """Erase the customer's PII everywhere (see module doc); idempotent. Reports changes and residue."""
    report = ErasureReport(customer_id)
    customer = session.get(Customer, customer_id, with_for_update=True)
    if customer is None:
        return report
    values = [v for v in (customer.name, customer.email) if v]
    if customer.erased_at is None:
        customer.name = "erased"
        customer.email = f"erased+{hashlib.sha256(customer_id.encode()).hexdigest()[:12]}@invalid"
        customer.erased_at = now
        report.count("customers.name")
        report.count("customers.email")
    else:
        values = []
    pattern = _pattern(values)
    # Free text typed about this customer: blanked whatever it says (it may name people we cannot list).
    result = session.execute(
        update(TransitionRecord)
        .where(TransitionRecord.customer_id == customer_id, TransitionRecord.reason.is_not(None))
        .values(reason=None)
    )
    report.count("transitions.reason", int(getattr(result, "rowcount", 0) or 0))
    for rec in session.scalars(select(TransitionRecord).where(TransitionRecord.customer_id == customer_id)):
        for name in ("payload", "changes"):
            _replace(report, rec, name, pattern)
    for inst in session.scalars(select(GovernorInstance).where(GovernorInstance.customer_id == customer_id)):
        _replace(report, inst, "data", pattern)
    for snap in session.scalars(
        select(StateSnapshot).where(
            StateSnapshot.instance_id.in_(
                select(GovernorInstance.id).where(GovernorInstance.customer_id == customer_id)
            )
        )
    ):
        _replace(report, snap, "data", pattern)
    for apr in session.scalars(select(Approval).where(Approval.customer_id == customer_id)):
        _replace(report, apr, "payload", pattern)
        _replace(report, apr, "preview", pattern)
        if apr.decision_note and apr.status in ("approved", "rejected"):
            apr.decision_note = ERASED
            report.count("approvals.decision_note")
    for req in session.scalars(select(PrivacyRequest).where(PrivacyRequest.customer_id == customer_id)):
        if req.reason and req.reason != ERASED:
            req.reason = ERASED
            report.count("privacy_requests.reason")
    session.flush()
    if values:
        _sweep(session, customer_id, values, pattern, report)
        report.residue = pii_hits(session, values, customer_id=customer_id)
    return report


def _replace(report: ErasureReport, row: Any, name: str, pattern: re.Pattern[str] | None) -> None:
    before = getattr(row, name)
    after = _scrub(before, pattern)
    if after != before:
        setattr(row, name, after)
        report.count(f"{row.__tablename__}.{name}")


def _sweep(
    session: Session,
    customer_id: str,
    values: list[str],
    pattern: re.Pattern[str] | None,
    report: ErasureReport,
) -> None:
    """Replace the values wherever else they were copied (every text/JSON column of every table)."""
    patterns = _like(values)
    for table in Base.metadata.sorted_tables:
        if table.name in IMMUTABLE_TABLES:
            continue
        keys = list(table.primary_key.columns)
        for column in _text_columns(table):
            if column.primary_key:
                continue
            as_text = cast(column, Text)
            rows = session.execute(
                select(*keys, column).where(
                    or_(*(as_text.ilike(p) for p in patterns)), *_scope(table, customer_id)
                )
            ).all()
            for row in rows:
                new = _scrub(row[-1], pattern)
                if new == row[-1]:
                    continue
                where = [k == row[i] for i, k in enumerate(keys)]
                session.execute(update(table).where(*where).values({column.name: new}))
                report.count(f"{table.name}.{column.name}")


def run_erasure_effect(session: Session, customer_id: str, now: datetime) -> None:
    """The ``*_anonymize_pii`` effects: anonymise, and fulfil the approved request if one is open."""
    report = anonymize_customer(session, customer_id, now)
    request = session.scalars(
        select(PrivacyRequest)
        .where(
            PrivacyRequest.customer_id == customer_id,
            PrivacyRequest.kind == "erasure",
            PrivacyRequest.status == "pending_approval",
        )
        .with_for_update()
    ).first()
    if request is None or request.approval_id is None:
        return
    approval = session.get(Approval, request.approval_id)
    if approval is None or approval.status != "approved":
        return
    customer = session.get(Customer, customer_id)
    assert customer is not None
    request.decided_by = approval.decided_by
    _fulfil(session, request, customer, report, Actor(approval.decided_by or "system", "compliance"), now)


__all__ = [
    "DEADLINE",
    "ErasureError",
    "ErasureReport",
    "TransitionError",
    "active_hold",
    "anonymize_customer",
    "approve_erasure",
    "pii_hits",
    "place_hold",
    "reject_erasure",
    "release_hold",
    "request_erasure",
    "run_erasure_effect",
]
