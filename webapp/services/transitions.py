"""The one place that changes governed state: apply an event for an actor in one DB transaction.

Used by the web console, the JSON API, background jobs and the CLI alike. In one transaction it
locks the customer (then the customer's instances, in id order, so two transactions never wait on
each other in opposite orders), checks the idempotency key and ``expected_version``, asks the
engine for the whole cascade plan, and writes new states, history rows, audit entries, due timers,
outbox rows and the idempotency record. Nothing outside the database happens before the commit;
the outbox relay hands the work to RQ afterwards.

Idempotency follows Stripe: the same key with the same body returns the stored response and
applies nothing again; the same key with a different body is a 409. Rejections (stale version,
event not allowed, guard failed) are 409s that change nothing but are still audited.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert, select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from governors import (
    Decision,
    Facts,
    Instance,
    Plan,
    Rejection,
    Settings,
    apply,
    default_settings,
    get_governor,
    plan,
)
from governors.spec import STAFF_ROLES, frozen_map
from webapp import audit
from webapp.models import (
    Approval,
    Customer,
    DueTimer,
    GovernorInstance,
    IdempotencyRecord,
    OutboxMessage,
    StateSnapshot,
    TransitionRecord,
)
from webapp.services.facts import world_facts
from webapp.services.instances import jsonable, next_due, timers_from_json, timers_to_json, to_instance

SNAPSHOT_EVERY = 20
"""A full state snapshot is stored every this many versions of an instance (time travel)."""

HTTP_STATUS = {
    "role_not_allowed": 403,
    "forbidden": 403,
    "not_found": 404,
    "not_created": 404,
    "invalid_input": 422,
    "unknown_event": 422,
}


class TransitionError(Exception):
    """A request that cannot be applied; ``status`` is the HTTP status the API returns."""

    def __init__(self, status: int, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details

    def body(self) -> dict[str, Any]:
        """The JSON error body of INTERFACES.md."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            error["details"] = jsonable(self.details)
        return {"error": error}


@dataclass(frozen=True)
class Actor:
    """Who is acting: a staff user with one of their roles, or the system (``sys``/``timer``)."""

    id: str
    role: str

    @property
    def is_staff(self) -> bool:
        """True for a person (their actions need reasons, four-eyes, role checks)."""
        return self.role in STAFF_ROLES


SYSTEM = Actor("system", "sys")


@dataclass(frozen=True)
class EventRequest:
    """One event to apply. Give ``instance_id``, or ``governor`` (+ customer) for a creation event."""

    tenant_id: str
    event: str
    instance_id: str | None = None
    payload: Mapping[str, Any] = field(default_factory=dict)
    expected_version: int | None = None
    idempotency_key: str | None = None
    governor: str | None = None
    customer_id: str | None = None
    subject_id: str | None = None
    approval_id: str | None = None
    timer: str | None = None
    timer_seq: int | None = None
    timer_due: datetime | None = None

    def fingerprint(self) -> str:
        """Hash of what the caller asked for (idempotency keys are bound to it)."""
        body = {
            "event": self.event,
            "instance_id": self.instance_id,
            "payload": jsonable(self.payload),
            "expected_version": self.expected_version,
            "governor": self.governor,
            "customer_id": self.customer_id,
            "subject_id": self.subject_id,
        }
        return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class EventResult:
    """What happened: ``status`` 200 (applied), 202 (waiting for approval) or an error status."""

    status: int
    body: dict[str, Any]
    replayed: bool = False
    plan: Plan | None = None
    outbox_ids: tuple[int, ...] = ()

    @property
    def ok(self) -> bool:
        """True when the event applied (or was already applied under the same key)."""
        return self.status == 200


FactsHook = Callable[[Session, Mapping[str, Instance], Instance, str], Mapping[str, Any]]
"""Looks up outside-world facts a plan needs (counts, processor confirmations) for one event."""


def _new_id(governor: str) -> str:
    return f"{governor[:4]}-{uuid.uuid4().hex[:20]}"


def decision_json(
    step_index: int, d: Decision, instance_id: str, cascade: str | None, cause: int | None
) -> dict[str, Any]:
    """A decision as the API returns it."""
    return {
        "step": step_index,
        "governor": d.governor,
        "instance_id": instance_id,
        "event": d.event,
        "row": d.row_id,
        "from_state": d.from_state,
        "to_state": d.to_state,
        "self_transition": d.self_transition,
        "changes": jsonable(d.changes),
        "effects": [{"name": e.name, "args": jsonable(e.args)} for e in d.effects],
        "timers": [
            {
                "op": op.op,
                "name": op.timer.name,
                "event": op.timer.event,
                "due_at": op.timer.due_at.isoformat() if op.timer.due_at else None,
                "remaining_seconds": int(op.timer.remaining.total_seconds()) if op.timer.remaining else None,
            }
            for op in d.timer_ops
        ],
        "cascade": cascade,
        "cause_step": cause,
        "attention": d.attention,
    }


def plan_json(result: Plan, ids: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The whole plan (applied steps, ignored cascades, alerts) for previews and responses."""
    ids = ids or {}
    steps: list[dict[str, Any]] = []
    for s in result.steps:
        real = ids.get(s.instance_id, s.instance_id)
        if isinstance(s.outcome, Decision):
            item = decision_json(s.index, s.outcome, real, s.cascade, s.cause)
        else:
            item = {
                "step": s.index,
                "governor": s.governor,
                "instance_id": real,
                "event": s.event,
                "cascade": s.cascade,
                "cause_step": s.cause,
            }
            if isinstance(s.outcome, Rejection):
                item["rejection"] = {"code": s.outcome.code, "message": s.outcome.message}
        item["status"] = s.status
        steps.append(item)
    return {"steps": steps, "alerts": list(result.alerts), "ok": result.ok}


# --------------------------------------------------------------------------- loading and locking


def _load_target(session: Session, req: EventRequest) -> GovernorInstance | None:
    if req.instance_id is None:
        return None
    row = session.get(GovernorInstance, req.instance_id)
    if row is None or row.tenant_id != req.tenant_id:
        raise TransitionError(404, "not_found", "no such governor instance")
    return row


def _lock_customer(session: Session, tenant_id: str, customer_id: str | None) -> list[GovernorInstance]:
    """Lock the customer row, then every instance of the customer in id order; return them."""
    if customer_id is None:
        return []
    customer = session.execute(
        select(Customer).where(Customer.id == customer_id, Customer.tenant_id == tenant_id).with_for_update()
    ).scalar_one_or_none()
    if customer is None:
        raise TransitionError(404, "not_found", "no such customer")
    rows = session.scalars(
        select(GovernorInstance)
        .where(GovernorInstance.customer_id == customer_id)
        .order_by(GovernorInstance.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return list(rows)


def _catalog(session: Session) -> list[GovernorInstance]:
    return list(session.scalars(select(GovernorInstance).where(GovernorInstance.governor == "catalog")))


def _stored(session: Session, tenant_id: str, key: str, fingerprint: str) -> EventResult | None:
    record = session.get(IdempotencyRecord, (tenant_id, key))
    if record is None:
        return None
    if record.request_hash != fingerprint:
        raise TransitionError(
            409,
            "idempotency_key_reused",
            "this Idempotency-Key was already used with a different request body",
        )
    return EventResult(record.status_code, dict(record.response), replayed=True)


# --------------------------------------------------------------------------- the service


def fire_event(
    session: Session,
    req: EventRequest,
    actor: Actor,
    now: datetime,
    *,
    settings: Settings | None = None,
    facts_hook: FactsHook | None = None,
    approved_by: str | None = None,
) -> EventResult:
    """Apply ``req`` for ``actor`` inside ``session``'s transaction (the caller commits).

    Returns the result; a rejection is also a result (4xx status, audited, nothing applied). Raises
    TransitionError only for requests that name nothing (404) or misuse an idempotency key (409).
    """
    from webapp.metrics import observe_decision

    started = time.perf_counter()
    result = _fire_event(
        session, req, actor, now, settings=settings, facts_hook=facts_hook, approved_by=approved_by
    )
    root = result.plan.root if result.plan is not None else None
    observe_decision(
        root.governor if root is not None else req.governor or "unknown", time.perf_counter() - started
    )
    return result


def _fire_event(
    session: Session,
    req: EventRequest,
    actor: Actor,
    now: datetime,
    *,
    settings: Settings | None = None,
    facts_hook: FactsHook | None = None,
    approved_by: str | None = None,
) -> EventResult:
    """Apply ``req`` (see ``fire_event``)."""
    fingerprint = req.fingerprint()
    if req.idempotency_key:
        replay = _stored(session, req.tenant_id, req.idempotency_key, fingerprint)
        if replay is not None:
            return replay

    target_row = _load_target(session, req)
    customer_id = target_row.customer_id if target_row is not None else req.customer_id
    rows = _lock_customer(session, req.tenant_id, customer_id)
    if target_row is not None and target_row.governor == "catalog" and customer_id is None:
        session.execute(
            select(GovernorInstance).where(GovernorInstance.id == target_row.id).with_for_update()
        )
    if req.idempotency_key:
        # Checked again under the lock: a concurrent request with the same key may have won.
        replay = _stored(session, req.tenant_id, req.idempotency_key, fingerprint)
        if replay is not None:
            return replay

    snapshot: dict[str, Instance] = {r.id: to_instance(r) for r in rows}
    for r in _catalog(session):
        snapshot.setdefault(r.id, to_instance(r))
    if target_row is not None:
        snapshot.setdefault(target_row.id, to_instance(target_row))
        target: Instance = snapshot[target_row.id]
        if target_row.governor == "catalog":
            for holder in _sku_holders(session, target_row.subject_id):
                snapshot.setdefault(holder.id, to_instance(holder))
    else:
        if req.governor is None:
            raise TransitionError(
                422, "invalid_input", "name an instance, or a governor for a creation event"
            )
        try:
            get_governor(req.governor)
        except KeyError as exc:
            raise TransitionError(404, "not_found", str(exc)) from None
        target = Instance(
            governor=req.governor,
            id=_new_id(req.governor),
            customer_id=customer_id,
            subject_id=req.subject_id,
        )

    if (
        req.expected_version is not None
        and target.state is not None
        and req.expected_version != target.version
    ):
        return _reject(
            session,
            req,
            actor,
            now,
            target,
            fingerprint,
            TransitionError(
                409,
                "stale_version",
                f"this {get_governor(target.governor).title} changed since you loaded it "
                f"(version {target.version}, you had {req.expected_version}); reload and try again",
                current_version=target.version,
                current_state=target.state,
            ),
        )

    if req.timer is not None and not _timer_current(target, req):
        # The instance no longer holds this arming of the timer (fired already, re-armed, or the state
        # was left): a duplicate or late delivery, discarded without touching anything.
        return EventResult(409, TransitionError(409, "stale_timer", "the timer is no longer armed").body())

    extra = dict((facts_hook or world_facts)(session, snapshot, target, req.event))
    payload = dict(req.payload)
    facts = Facts(
        now=now,
        role=actor.role,
        actor=actor.id,
        payload=frozen_map(payload),
        extra=frozen_map(extra),
        settings=settings,
        approved_by=approved_by,
        timer=req.timer,
        timer_seq=req.timer_seq,
    )
    result = plan(snapshot, target, req.event, facts, new_id=_new_id)
    root = result.root
    if isinstance(root, Rejection):
        if req.timer is not None and target_row is not None:
            _consume_timer(session, target_row, req.timer)
        status = HTTP_STATUS.get(root.code, 409)
        return _reject(
            session,
            req,
            actor,
            now,
            target,
            fingerprint,
            TransitionError(status, root.code, root.message, **dict(root.details)),
        )
    assert isinstance(root, Decision)
    if root.needs_approval is not None:
        expiry = (settings or default_settings()).duration("engine.approval_expiry")
        return _request_approval(session, req, actor, now, target, fingerprint, result, expiry)
    ids, outbox_ids = _execute(session, req, actor, now, result, settings, frozenset(snapshot))
    body = {
        "decisions": list(plan_json(result, ids)["steps"]),
        "alerts": list(result.alerts),
        "instance_id": ids.get(target.id, target.id),
    }
    _remember(session, req, fingerprint, 200, body, now)
    return EventResult(200, body, plan=result, outbox_ids=tuple(outbox_ids))


def _sku_holders(session: Session, sku_id: str | None) -> Sequence[GovernorInstance]:
    if sku_id is None:
        return []
    entitlements = session.scalars(
        select(GovernorInstance)
        .where(
            GovernorInstance.governor == "entitlement",
            GovernorInstance.subject_id == sku_id,
            GovernorInstance.state != "archived",
        )
        .order_by(GovernorInstance.id)
    ).all()
    customers = {e.customer_id for e in entitlements if e.customer_id}
    subscriptions = (
        session.scalars(
            select(GovernorInstance)
            .where(GovernorInstance.governor == "subscription", GovernorInstance.customer_id.in_(customers))
            .order_by(GovernorInstance.id)
        ).all()
        if customers
        else []
    )
    return [*entitlements, *subscriptions]


def _remember(
    session: Session, req: EventRequest, fingerprint: str, status: int, body: dict[str, Any], now: datetime
) -> None:
    if req.idempotency_key:
        session.add(
            IdempotencyRecord(
                tenant_id=req.tenant_id,
                key=req.idempotency_key,
                request_hash=fingerprint,
                status_code=status,
                response=jsonable(body),
                created_at=now,
            )
        )


def _reject(
    session: Session,
    req: EventRequest,
    actor: Actor,
    now: datetime,
    target: Instance,
    fingerprint: str,
    error: TransitionError,
) -> EventResult:
    """Audit a rejection and remember it under the idempotency key; nothing else changes."""
    audit.append(
        session,
        req.tenant_id,
        actor=actor.id,
        role=actor.role,
        action="transition.rejected",
        occurred_at=now,
        customer_id=target.customer_id,
        instance_id=None if target.state is None else target.id,
        payload={
            "governor": target.governor,
            "event": req.event,
            "state": target.state,
            "code": error.code,
            "message": error.message,
        },
    )
    body = error.body()
    _remember(session, req, fingerprint, error.status, body, now)
    return EventResult(error.status, body)


def _request_approval(
    session: Session,
    req: EventRequest,
    actor: Actor,
    now: datetime,
    target: Instance,
    fingerprint: str,
    result: Plan,
    expiry: timedelta = timedelta(hours=24),
) -> EventResult:
    root = result.root
    assert isinstance(root, Decision) and root.needs_approval is not None
    approval_id = f"apr-{uuid.uuid4().hex[:20]}"
    approval = Approval(
        id=approval_id,
        tenant_id=req.tenant_id,
        customer_id=target.customer_id,
        instance_id=target.id,
        governor=target.governor,
        event=req.event,
        payload=jsonable(req.payload),
        input_hash=approval_input_hash(target.id, req.event, req.payload),
        preview=plan_json(result),
        state_seq=target.state_seq,
        version=target.version,
        requested_by=actor.id,
        requester_role=actor.role,
        approver_roles=list(root.needs_approval.approvers),
        status="pending",
        created_at=now,
        expires_at=now + expiry,
    )
    session.add(approval)
    audit.append(
        session,
        req.tenant_id,
        actor=actor.id,
        role=actor.role,
        action="approval.requested",
        occurred_at=now,
        customer_id=target.customer_id,
        instance_id=target.id,
        payload={
            "approval_id": approval_id,
            "governor": target.governor,
            "event": req.event,
            "approvers": list(root.needs_approval.approvers),
            "input_hash": approval.input_hash,
        },
    )
    body = {
        "approval_id": approval_id,
        "approvers": list(root.needs_approval.approvers),
        "expires_at": approval.expires_at.isoformat(),
        "preview": plan_json(result),
    }
    _remember(session, req, fingerprint, 202, body, now)
    return EventResult(202, body, plan=result)


def approval_input_hash(instance_id: str, event: str, payload: Mapping[str, Any]) -> str:
    """The hash an approval is bound to: the exact instance, event and inputs."""
    body = json.dumps(
        {"instance_id": instance_id, "event": event, "payload": jsonable(payload)}, sort_keys=True
    )
    return hashlib.sha256(body.encode()).hexdigest()


def _consume_timer(session: Session, row: GovernorInstance, name: str) -> None:
    """A timer the engine refused has fired all the same: drop it from the row and from due_timers."""
    timers = dict(row.timers or {})
    timers.pop(name, None)
    row.timers = timers
    row.timeout_at = next_due(timers_from_json(timers))
    session.execute(delete(DueTimer).where(DueTimer.instance_id == row.id, DueTimer.name == name))


def _timer_current(target: Instance, req: EventRequest) -> bool:
    """True when ``req`` fires the arming of the timer the instance holds now (same entry, same due)."""
    armed = target.timers.get(req.timer or "")
    if armed is None or armed.due_at is None:
        return False
    if req.timer_seq is not None and armed.state_seq != req.timer_seq:
        return False
    return req.timer_due is None or armed.due_at == req.timer_due


def _event_id(req: EventRequest, actor: Actor, now: datetime) -> str:
    if req.idempotency_key:
        seed = f"{req.tenant_id}|{req.idempotency_key}"
    elif req.timer is not None:
        # A recurring timer is re-armed within one state entry, so the due time tells its firings apart.
        due = req.timer_due.isoformat() if req.timer_due else now.isoformat()
        seed = f"timer|{req.instance_id}|{req.timer_seq}|{req.timer}|{due}"
    else:
        seed = f"{uuid.uuid4()}"
    return hashlib.sha256(seed.encode()).hexdigest()[:32]


def _execute(
    session: Session,
    req: EventRequest,
    actor: Actor,
    now: datetime,
    result: Plan,
    settings: Settings | None,
    existing: frozenset[str] = frozenset(),
) -> tuple[dict[str, str], list[int]]:
    """Write every applied step: rows, history, audit, timers, outbox.

    Returns (plan id → real id, outbox ids).
    """
    ids: dict[str, str] = {}
    created: set[str] = set()
    records: dict[int, TransitionRecord] = {}
    timer_rows: dict[tuple[str, str], dict[str, Any] | None] = {}
    event_ids: dict[int, str] = {}
    current: dict[str, Instance] = {}
    outbox: list[OutboxMessage] = []
    root_event_id = _event_id(req, actor, now)
    reason = req.payload.get("reason") if isinstance(req.payload.get("reason"), str) else None
    for step in result.steps:
        if step.status != "applied":
            if step.status in ("ignored", "failed", "cycle", "depth_exceeded") and step.index > 0:
                _audit_cascade_problem(session, req, step, ids, now)
                if step.status != "ignored":
                    outbox.append(
                        _outbox(
                            req,
                            step.instance_id,
                            step.governor,
                            "raise_alert",
                            {"level": "critical", "message": _step_message(step)},
                            f"alert:{root_event_id}:{step.index}",
                            now,
                            ids,
                        )
                    )
            continue
        d = step.outcome
        assert isinstance(d, Decision)
        if step.cause is None:
            event_id = root_event_id
        else:
            source = event_ids[step.cause]
            event_id = hashlib.sha256(f"{source}|{step.instance_id}|{step.event}".encode()).hexdigest()[:32]
        event_ids[step.index] = event_id
        before = current.get(step.instance_id) or (
            result_instance_before(result, step.instance_id, session)
            if step.instance_id in existing
            else _planned_new(result, step.instance_id)
        )
        after = apply(before, d)
        current[step.instance_id] = after
        real_id = ids.get(step.instance_id)
        if real_id is None:
            real_id = step.instance_id
            ids[step.instance_id] = real_id
        row = session.get(GovernorInstance, real_id) if real_id in existing or real_id in created else None
        tenant_id = req.tenant_id if row is None else row.tenant_id
        if row is None:
            row = GovernorInstance(
                id=real_id,
                tenant_id=tenant_id,
                customer_id=after.customer_id,
                governor=d.governor,
                subject_id=after.subject_id or _subject_of(after),
                created_at=now,
                entered_at=now,
                state=d.to_state,
            )
            session.add(row)
            created.add(real_id)
        row.state = after.state or d.to_state
        row.state_seq = after.state_seq
        row.version = after.version
        row.entered_at = after.entered_at or now
        row.data = jsonable(after.data)
        row.timers = timers_to_json(after.timers)
        row.timeout_at = next_due(after.timers)
        row.attention = d.attention
        row.attention_reason = d.attention_reason
        row.updated_at = now
        if row.subject_id is None:
            row.subject_id = _subject_of(after)
        cause = records.get(step.cause) if step.cause is not None else None
        record = TransitionRecord(
            tenant_id=tenant_id,
            customer_id=row.customer_id,
            instance_id=real_id,
            governor=d.governor,
            row_id=d.row_id,
            event=d.event,
            from_state=d.from_state,
            to_state=d.to_state,
            state_seq=d.state_seq,
            actor=d.actor,
            role=d.role,
            reason=reason if step.cause is None else None,
            payload=jsonable({k: v for k, v in d.payload.items() if k != "reason"}),
            changes=jsonable(d.changes),
            timers=jsonable({op.timer.name: op.op for op in d.timer_ops}),
            cause_id=cause.id if cause is not None else None,
            cascade_id=step.cascade,
            approval_id=req.approval_id if step.cause is None else None,
            event_id=event_id,
            occurred_at=now,
        )
        session.add(record)
        session.flush()
        records[step.index] = record
        audit.append(
            session,
            tenant_id,
            actor=d.actor,
            role=d.role,
            action="transition",
            occurred_at=now,
            customer_id=row.customer_id,
            instance_id=real_id,
            payload={
                "transition_id": record.id,
                "governor": d.governor,
                "event": d.event,
                "row": d.row_id,
                "from": d.from_state,
                "to": d.to_state,
                "cascade": step.cascade,
                "cause_transition_id": cause.id if cause is not None else None,
                "approval_id": record.approval_id,
                # The reason is free text and may name people: the chain keeps only its hash (erasable PII
                # stays in the history table), so anonymisation never breaks verification.
                "reason_sha256": hashlib.sha256(reason.encode()).hexdigest()
                if reason and step.cause is None
                else None,
            },
        )
        _collect_timers(timer_rows, row, d)
        for n, effect in enumerate(d.effects):
            outbox.append(
                _outbox(
                    req,
                    real_id,
                    d.governor,
                    "run_effect",
                    {"effect": effect.name, "args": jsonable(effect.args), "transition_id": record.id},
                    f"fx:{event_id}:{n}",
                    now,
                    ids,
                    customer_id=row.customer_id,
                    tenant_id=tenant_id,
                )
            )
        if row.version % SNAPSHOT_EVERY == 0:
            session.add(
                StateSnapshot(
                    instance_id=real_id,
                    transition_id=record.id,
                    state=row.state,
                    state_seq=row.state_seq,
                    version=row.version,
                    entered_at=row.entered_at,
                    data=row.data,
                    timers=row.timers,
                    occurred_at=now,
                )
            )
    _write_timers(session, timer_rows)
    for message in outbox:
        session.add(message)
    session.flush()
    return ids, [m.id for m in outbox]


def result_instance_before(result: Plan, plan_id: str, session: Session) -> Instance:
    """The instance as it was before the plan (from the database, or empty for a new one)."""
    row = session.get(GovernorInstance, plan_id)
    if row is not None:
        return to_instance(row)
    planned = result.instances[plan_id]
    return Instance(
        governor=planned.governor, id=plan_id, customer_id=planned.customer_id, subject_id=planned.subject_id
    )


def _subject_of(inst: Instance) -> str | None:
    for key in ("sku_id", "invoice_id", "subject_id"):
        value = inst.data.get(key)
        if isinstance(value, str):
            return value
    return inst.subject_id


def _planned_new(result: Plan, plan_id: str) -> Instance:
    """An instance the plan creates, as it was before its creation event (empty)."""
    planned = result.instances[plan_id]
    return Instance(
        governor=planned.governor, id=plan_id, customer_id=planned.customer_id, subject_id=planned.subject_id
    )


def _collect_timers(
    timer_rows: dict[tuple[str, str], dict[str, Any] | None], row: GovernorInstance, d: Decision
) -> None:
    """Record the decision's timer operations; the last one per (instance, timer) wins."""
    for op in d.timer_ops:
        t = op.timer
        timer_rows[(row.id, t.name)] = (
            None
            if op.op == "cancel"
            else {
                "tenant_id": row.tenant_id,
                "customer_id": row.customer_id,
                "instance_id": row.id,
                "governor": row.governor,
                "name": t.name,
                "event": t.event,
                "state_seq": t.state_seq,
                "due_at": t.due_at,
                "remaining_seconds": int(t.remaining.total_seconds()) if t.remaining is not None else None,
                "payload": jsonable(t.payload),
            }
        )


def _write_timers(session: Session, timer_rows: dict[tuple[str, str], dict[str, Any] | None]) -> None:
    """Mirror the plan's timer operations into due_timers: one DELETE and one multi-row INSERT."""
    if not timer_rows:
        return
    session.flush()
    keys = list(timer_rows)
    session.execute(
        delete(DueTimer)
        .where(tuple_(DueTimer.instance_id, DueTimer.name).in_(keys))
        .execution_options(synchronize_session=False)
    )
    fresh = [values for values in timer_rows.values() if values is not None]
    if fresh:
        session.execute(insert(DueTimer), fresh)


def _outbox(
    req: EventRequest,
    instance_id: str,
    governor: str,
    job: str,
    args: dict[str, Any],
    job_id: str,
    now: datetime,
    ids: Mapping[str, str],
    *,
    customer_id: str | None = None,
    tenant_id: str | None = None,
) -> OutboxMessage:
    return OutboxMessage(
        job_id=job_id,
        tenant_id=tenant_id or req.tenant_id,
        customer_id=customer_id or req.customer_id,
        instance_id=ids.get(instance_id, instance_id),
        governor=governor,
        job=job,
        args=args,
        created_at=now,
    )


def _step_message(step: Any) -> str:
    outcome = step.outcome
    why = outcome.message if isinstance(outcome, Rejection) else step.status
    return f"cascade {step.cascade} → {step.governor}.{step.event}: {why}"


def _audit_cascade_problem(
    session: Session, req: EventRequest, step: Any, ids: Mapping[str, str], now: datetime
) -> None:
    outcome = step.outcome
    audit.append(
        session,
        req.tenant_id,
        actor=f"cascade:{step.cascade}",
        role="cascade",
        action="cascade.ignored" if step.status == "ignored" else "cascade.failed",
        occurred_at=now,
        customer_id=req.customer_id,
        instance_id=ids.get(step.instance_id, step.instance_id),
        payload={
            "governor": step.governor,
            "event": step.event,
            "status": step.status,
            "code": outcome.code if isinstance(outcome, Rejection) else step.status,
        },
    )


def preview(
    session: Session,
    req: EventRequest,
    actor: Actor,
    now: datetime,
    *,
    settings: Settings | None = None,
    facts_hook: FactsHook | None = None,
) -> dict[str, Any]:
    """The what-if plan of ``req`` (every governor that would change, timers, money); applies nothing."""
    target_row = _load_target(session, req)
    customer_id = target_row.customer_id if target_row is not None else req.customer_id
    rows = (
        list(session.scalars(select(GovernorInstance).where(GovernorInstance.customer_id == customer_id)))
        if customer_id
        else []
    )
    snapshot = {r.id: to_instance(r) for r in rows}
    for r in _catalog(session):
        snapshot.setdefault(r.id, to_instance(r))
    if target_row is None:
        if req.governor is None:
            raise TransitionError(
                422, "invalid_input", "name an instance, or a governor for a creation event"
            )
        target = Instance(governor=req.governor, id=_new_id(req.governor), customer_id=customer_id)
    else:
        snapshot.setdefault(target_row.id, to_instance(target_row))
        target = snapshot[target_row.id]
    extra = dict((facts_hook or world_facts)(session, snapshot, target, req.event))
    facts = Facts(
        now=now,
        role=actor.role,
        actor=actor.id,
        payload=frozen_map(dict(req.payload)),
        extra=frozen_map(extra),
        settings=settings,
    )
    result = plan(snapshot, target, req.event, facts, new_id=_new_id)
    body = plan_json(result)
    root = result.root
    if isinstance(root, Decision):
        body["needs_approval"] = list(root.needs_approval.approvers) if root.needs_approval else None
    elif isinstance(root, Rejection):
        body["rejection"] = {
            "code": root.code,
            "message": root.message,
            "status": HTTP_STATUS.get(root.code, 409),
        }
    return body


def apply_with_retry(run: Callable[[], EventResult], attempts: int = 3) -> EventResult:
    """Retry a whole transaction that lost an idempotency-key insert race (IntegrityError)."""
    last: Exception | None = None
    for _ in range(attempts):
        try:
            return run()
        except IntegrityError as exc:
            last = exc
    assert last is not None
    raise last


__all__ = [
    "SYSTEM",
    "Actor",
    "EventRequest",
    "EventResult",
    "TransitionError",
    "approval_input_hash",
    "fire_event",
    "plan_json",
    "preview",
]
