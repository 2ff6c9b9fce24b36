"""Four-eyes approvals: the queue, approve, reject, expire and void (CONSOLE.md §1.3, GOVERNORS.md §0.5).

``fire_event`` creates the request (status 202) with the what-if preview, the input hash and the
instance's ``state_seq``. This module decides it:

* The requester can never approve (or reject) their own request: 403.
* The approver must hold one of the request's ``approver_roles`` (a user holding several roles acts in
  the first matching one) and pass a step-up TOTP check (``users.verify_step_up``).
* A request expires ``APPROVAL_TTL`` after it was made (24 h, setting ``engine.approval_expiry`` when
  present); expired requests are marked ``expired`` whenever they are read.
* An approval is bound to ``input_hash`` (instance + event + payload, recomputed from the stored
  payload) and to the state it was made in: if the instance's ``state_seq`` changed since, the request
  is voided ("voided: the invoice moved from payment_received to archived after the request"). The
  engine re-checks every guard when the approved event is fired; a rejection then voids it too.

Recorded actor (decision): the approved transition is the *requester's* action, approved by a second
person. ``fire_event`` runs as ``Actor(requested_by, requester_role)`` with ``approved_by=<approver
id>`` and ``approval_id``: the history row's actor/role are the requester's and it carries the
``approval_id``; the audit chain gets an ``approval.approved`` entry naming the approver and the role
they approved in, followed by the transition entries (which carry the same ``approval_id``). So
"who asked" and "who allowed it" are both recorded, and neither can be mistaken for the other.

Everything happens in the caller's transaction (``with runtime().db.session() as s:``); the approval
row is locked first (``SELECT ... FOR UPDATE``) so two approvers cannot both fire the event, and the
event is fired with the idempotency key ``approval:<id>`` as a second guard against double firing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from governors import Settings, default_settings, get_governor
from webapp import audit
from webapp.models import Approval, GovernorInstance
from webapp.services.transitions import (
    Actor,
    EventRequest,
    EventResult,
    TransitionError,
    approval_input_hash,
    fire_event,
)

APPROVAL_TTL: Final = timedelta(hours=24)
"""How long a four-eyes request stays open (CONSOLE.md §1.3: 24 h, configurable)."""

TTL_SETTING: Final = "engine.approval_expiry"

MAX_NOTE: Final = 2000

OPEN: Final = "pending"


@dataclass(frozen=True)
class Decided:
    """Outcome of approve/reject: HTTP-like ``status`` (200, 403, 404, 409), a message, the approval.

    ``result`` is the fired event's result when an approval applied the event.
    """

    status: int
    code: str
    message: str
    approval: Approval | None = None
    result: EventResult | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when the decision was recorded."""
        return self.status == 200

    def body(self) -> dict[str, Any]:
        """JSON for the API: the approval on success, else INTERFACES.md's error shape."""
        if self.ok and self.approval is not None:
            out = approval_json(self.approval)
            if self.result is not None:
                out["result"] = self.result.body
            return out
        return {"error": {"code": self.code, "message": self.message}}


def ttl(settings: Settings | None = None) -> timedelta:
    """The request lifetime (setting ``engine.approval_expiry``, 24 h by default)."""
    return (settings or default_settings()).duration(TTL_SETTING)


def expire_due(session: Session, now: datetime, *, tenant_id: str | None = None) -> int:
    """Mark every pending request past its expiry as ``expired`` (called on every read); returns the count."""
    stmt = update(Approval).where(Approval.status == OPEN, Approval.expires_at <= now)
    if tenant_id is not None:
        stmt = stmt.where(Approval.tenant_id == tenant_id)
    result = session.execute(
        stmt.values(
            status="expired", decided_at=now, decision_note="expired: nobody approved it within 24 h"
        ).execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def get(session: Session, approval_id: str, now: datetime) -> Approval | None:
    """One request (expired ones marked so first)."""
    expire_due(session, now)
    return session.get(Approval, approval_id, populate_existing=True)


def pending_for(
    session: Session, user_id: str, roles: Iterable[str], now: datetime, limit: int = 200
) -> list[Approval]:
    """Pending requests the user may decide: one of their roles approves, and they did not ask."""
    expire_due(session, now)
    held = set(roles)
    rows = session.scalars(
        select(Approval)
        .where(Approval.status == OPEN, Approval.requested_by != user_id)
        .order_by(Approval.expires_at, Approval.id)
        .limit(limit * 4)
    ).all()
    return [a for a in rows if held & set(a.approver_roles)][:limit]


def requested_by(session: Session, user_id: str, now: datetime, limit: int = 100) -> list[Approval]:
    """The user's own requests, newest first (any status)."""
    expire_due(session, now)
    return list(
        session.scalars(
            select(Approval)
            .where(Approval.requested_by == user_id)
            .order_by(Approval.created_at.desc(), Approval.id)
            .limit(limit)
        )
    )


def for_instance(session: Session, instance_id: str, now: datetime) -> list[Approval]:
    """Pending requests on one instance (the cockpit shows them on the card)."""
    expire_due(session, now)
    return list(
        session.scalars(
            select(Approval)
            .where(Approval.instance_id == instance_id, or_(Approval.status == OPEN))
            .order_by(Approval.created_at)
        )
    )


def approver_role(approval: Approval, roles: Iterable[str]) -> str | None:
    """The role the user approves in: the first of the request's approver roles they hold."""
    held = set(roles)
    return next((r for r in approval.approver_roles if r in held), None)


def why_not_approver(approval: Approval, user_id: str, roles: Iterable[str]) -> str | None:
    """Why this user may not decide the request (None when they may)."""
    if approval.requested_by == user_id:
        return "you made this request: a different person must approve it (four-eyes)"
    if approver_role(approval, roles) is None:
        needed = " or ".join(approval.approver_roles) or "an approver role"
        have = ", ".join(sorted(roles)) or "no role"
        return f"needs {needed}; you have {have}"
    return None


def _locked(session: Session, approval_id: str) -> Approval | None:
    return session.execute(
        select(Approval)
        .where(Approval.id == approval_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()


NOUNS: Final = {
    "billing": "invoice",
    "customer_account": "account",
    "entitlement": "entitlement",
    "subscription": "subscription",
    "quota_sla": "quota",
    "compliance_audit": "compliance record",
    "catalog": "SKU",
    "multi_tenant": "tenant",
}
"""What people call one instance of each governor ("the invoice moved from ... to ...")."""


def noun(governor: str) -> str:
    """The everyday name of one instance of ``governor``."""
    if governor in NOUNS:
        return NOUNS[governor]
    try:
        return get_governor(governor).title.lower()
    except KeyError:
        return governor


def _from_state(approval: Approval) -> str | None:
    steps = (approval.preview or {}).get("steps") or []
    return steps[0].get("from_state") if steps else None


def _close(
    session: Session, approval: Approval, status: str, now: datetime, note: str, actor: Actor | None
) -> None:
    approval.status = status
    approval.decided_at = now
    approval.decision_note = note
    if actor is not None and status in ("approved", "rejected"):
        approval.decided_by = actor.id
    audit.append(
        session,
        approval.tenant_id,
        actor=actor.id if actor else "system",
        role=actor.role if actor else "sys",
        action=f"approval.{status}",
        occurred_at=now,
        customer_id=approval.customer_id,
        instance_id=approval.instance_id,
        payload={
            "approval_id": approval.id,
            "governor": approval.governor,
            "event": approval.event,
            "requested_by": approval.requested_by,
            "requester_role": approval.requester_role,
            "input_hash": approval.input_hash,
            "note_chars": len(note),
        },
    )


def _refuse(status: int, code: str, message: str, approval: Approval | None = None) -> Decided:
    return Decided(status, code, message, approval)


def _check_open(approval: Approval | None, now: datetime) -> Decided | None:
    if approval is None:
        return _refuse(404, "not_found", "no such approval request")
    if approval.status == OPEN and approval.expires_at <= now:
        approval.status = "expired"
        approval.decided_at = now
        approval.decision_note = "expired: nobody approved it within 24 h"
    if approval.status != OPEN:
        return _refuse(
            409, f"approval_{approval.status}", f"this request is already {approval.status}", approval
        )
    return None


def void_if_stale(session: Session, approval: Approval, now: datetime) -> str | None:
    """Void a pending request whose instance changed state (or whose inputs no longer match); the reason."""
    row = session.get(GovernorInstance, approval.instance_id)
    if row is None:
        reason = "voided: the instance no longer exists"
    elif approval.input_hash != approval_input_hash(approval.instance_id, approval.event, approval.payload):
        reason = "voided: the stored inputs do not match the hash they were approved for"
    elif row.state_seq != approval.state_seq:
        before = _from_state(approval) or "its earlier state"
        reason = f"voided: the {noun(approval.governor)} moved from {before} to {row.state} after the request"
    else:
        return None
    _close(session, approval, "voided", now, reason, None)
    return reason


def approve(
    session: Session,
    approval_id: str,
    *,
    user_id: str,
    roles: Iterable[str],
    code: str,
    note: str = "",
    now: datetime,
    settings: Settings | None = None,
) -> Decided:
    """Approve (step-up required) and fire the event as the requester's, approved by ``user_id``."""
    held = frozenset(roles)
    approval = _locked(session, approval_id)
    refused = _check_open(approval, now)
    if refused is not None:
        return refused
    assert approval is not None
    reason = why_not_approver(approval, user_id, held)
    if reason is not None:
        return _refuse(403, "forbidden", reason, approval)
    role = approver_role(approval, held)
    assert role is not None
    from webapp.services.users import StepUpError, verify_step_up

    try:
        verify_step_up(session, user_id, code, now=now)
    except StepUpError as exc:
        return Decided(403, "step_up_required", exc.message, approval, details={"field": "code"})
    voided = void_if_stale(session, approval, now)
    if voided is not None:
        return _refuse(409, "approval_voided", voided, approval)
    approver = Actor(user_id, role)
    try:
        result = fire_event(
            session,
            EventRequest(
                tenant_id=approval.tenant_id,
                event=approval.event,
                instance_id=approval.instance_id,
                payload=dict(approval.payload),
                idempotency_key=f"approval:{approval.id}",
                approval_id=approval.id,
            ),
            Actor(approval.requested_by, approval.requester_role),
            now,
            settings=settings,
            approved_by=user_id,
        )
    except TransitionError as exc:
        _close(session, approval, "voided", now, f"voided: {exc.message}", approver)
        return _refuse(
            exc.status if exc.status != 200 else 409, "approval_voided", f"voided: {exc.message}", approval
        )
    if result.status != 200:
        message = str(result.body.get("error", {}).get("message", "the event was refused"))
        _close(session, approval, "voided", now, f"voided: {message}", approver)
        return Decided(409, "approval_voided", f"voided: {message}", approval, result)
    _close(session, approval, "approved", now, (note or "").strip(), approver)
    return Decided(200, "approved", "approved and applied", approval, result)


def reject(
    session: Session,
    approval_id: str,
    *,
    user_id: str,
    roles: Iterable[str],
    note: str,
    now: datetime,
) -> Decided:
    """Reject with a note (no step-up: refusing is never the risky direction)."""
    held = frozenset(roles)
    approval = _locked(session, approval_id)
    refused = _check_open(approval, now)
    if refused is not None:
        return refused
    assert approval is not None
    reason = why_not_approver(approval, user_id, held)
    if reason is not None:
        return _refuse(403, "forbidden", reason, approval)
    role = approver_role(approval, held)
    assert role is not None
    text = (note or "").strip()
    if len(text) < 3:
        return Decided(422, "invalid_input", "say why you reject it", approval, details={"field": "note"})
    _close(session, approval, "rejected", now, text[:MAX_NOTE], Actor(user_id, role))
    return Decided(200, "rejected", "rejected", approval)


def approval_json(a: Approval) -> dict[str, Any]:
    """An approval as the API and the pages see it."""
    return {
        "id": a.id,
        "status": a.status,
        "governor": a.governor,
        "event": a.event,
        "instance_id": a.instance_id,
        "customer_id": a.customer_id,
        "payload": a.payload,
        "preview": a.preview,
        "requested_by": a.requested_by,
        "requester_role": a.requester_role,
        "approver_roles": list(a.approver_roles),
        "created_at": a.created_at.isoformat(),
        "expires_at": a.expires_at.isoformat(),
        "decided_by": a.decided_by,
        "decided_at": a.decided_at.isoformat() if a.decided_at else None,
        "decision_note": a.decision_note,
    }


__all__ = [
    "APPROVAL_TTL",
    "Decided",
    "approval_json",
    "approve",
    "approver_role",
    "expire_due",
    "for_instance",
    "get",
    "noun",
    "pending_for",
    "reject",
    "requested_by",
    "ttl",
    "void_if_stale",
    "why_not_approver",
]
