"""Firing due governor timers (GOVERNORS.md §0.3): the batched sweep and the one-timer fire.

PostgreSQL is the source of truth for what is due (``due_timers``). Each timer is fired through the
one transition service as the actor ``timer``. A timer is claimed by locking its owner, the customer
row (or, for a customer-less Product Catalog instance, the instance row), with ``FOR UPDATE SKIP
LOCKED``, and then its due row the same way; a concurrent sweeper simply skips an owner that is
taken, and finds the row gone once the first one commits. On SQLite the locks compile away and the
database serializes writers instead.

The sweep fires up to ``TIMERS_PER_TRANSACTION`` timers of one tenant's customers per transaction
(one commit, one audit-chain head lock instead of one each). Such a transaction locks the tenant's
chain head first and then only ever skips, never waits for, a busy customer, so it cannot deadlock
with a staff action (customer, instances, then head). If anything in it fails, it is rolled back
whole and its timers are fired again one per transaction, so one failure never costs the others
their effects. A single timer (``fire_due_timer``, the RQ job) gets its own transaction.

A timer whose instance has moved on (the engine answers ``stale_timer``, or the row no longer matches
the instance's timers) is discarded, and so is one the engine refuses for another reason: like the
in-memory executor, a refused timer is used up rather than retried forever.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, select
from sqlalchemy.orm import Session

from governors import Settings
from webapp import audit
from webapp.db import Database
from webapp.models import Customer, DueTimer, GovernorInstance
from webapp.runtime import Runtime
from webapp.services.transitions import Actor, EventRequest, fire_event

TIMER_ACTOR = Actor("timer", "timer")
"""The pseudo-actor of every timer fire (the engine's ``timer`` role)."""

RELAY_EVERY = 100
"""Hand the outbox rows of fired timers to the relay once this many have collected (and at the end)."""

OnCommit = Callable[[Sequence[int]], Any]


@dataclass(frozen=True)
class TimerFire:
    """What happened to one due timer: fired, stale, refused, busy, gone, not_due or failed."""

    timer_id: int
    outcome: str
    event: str | None = None
    code: str | None = None
    outbox_ids: tuple[int, ...] = ()


@dataclass
class SweepReport:
    """Counts of one sweep."""

    fired: int = 0
    stale: int = 0
    refused: int = 0
    busy: int = 0
    gone: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    def add(self, fire: TimerFire) -> None:
        """Count one timer's outcome."""
        if fire.outcome == "not_due":
            return
        setattr(self, fire.outcome, getattr(self, fire.outcome) + 1)
        if fire.outcome == "failed" and fire.code:
            self.errors.append(fire.code)

    def as_dict(self) -> dict[str, int]:
        """The counts as a plain dict (job results, logs)."""
        return {k: getattr(self, k) for k in ("fired", "stale", "refused", "busy", "gone", "failed")}


@dataclass(frozen=True)
class DueRef:
    """Where a due timer lives: enough to claim it without reading its row first."""

    id: int
    customer_id: str | None
    instance_id: str
    tenant_id: str | None = None


_TIMERS = cast(Table, DueTimer.__table__)
_INSTANCES = cast(Table, GovernorInstance.__table__)
_DUE_ROW = (
    select(
        _TIMERS.c.id,
        _TIMERS.c.instance_id,
        _TIMERS.c.name,
        _TIMERS.c.event,
        _TIMERS.c.state_seq,
        _TIMERS.c.due_at,
        _TIMERS.c.payload,
        _INSTANCES.c.tenant_id.label("instance_tenant_id"),
        _INSTANCES.c.timers,
    )
    .select_from(_TIMERS.outerjoin(_INSTANCES, _INSTANCES.c.id == _TIMERS.c.instance_id))
    .where(_TIMERS.c.id == bindparam("timer_id"))
    .with_for_update(of=_TIMERS, skip_locked=True)
)
_DELETE_TIMER = delete(_TIMERS).where(_TIMERS.c.id == bindparam("timer_id"))
_CLAIM_CUSTOMERS = (
    select(Customer.id)
    .where(Customer.id.in_(bindparam("ids", expanding=True)))
    .order_by(Customer.id)
    .with_for_update(skip_locked=True)
)


def _claim(session: Session, ref: DueRef) -> bool:
    """Lock the timer's owner the way the service does, skipping it if another transaction holds it."""
    if ref.customer_id is not None:
        owner = select(Customer.id).where(Customer.id == ref.customer_id)
    else:
        owner = select(GovernorInstance.id).where(GovernorInstance.id == ref.instance_id)
    return session.execute(owner.with_for_update(skip_locked=True)).first() is not None


def _is_stale(row: Any, instance: Any) -> bool:
    """True when the row no longer matches the instance's own record of its timers."""
    if instance is None:
        return True
    timer = (instance.timers or {}).get(row.name)
    if not isinstance(timer, dict):
        return True
    due = timer.get("due_at")
    return int(timer.get("state_seq", -1)) != row.state_seq or (
        row.due_at is not None and due is not None and datetime.fromisoformat(due) != row.due_at
    )


def fire_due_timer(runtime: Runtime, timer: int | DueRef, now: datetime) -> TimerFire:
    """Fire one due timer in its own transaction (claimed with SKIP LOCKED); never raises."""
    return fire_timer_row(runtime.db, runtime.settings, timer, now)


def fire_timer_row(db: Database, settings: Settings | None, timer: int | DueRef, now: datetime) -> TimerFire:
    """``fire_due_timer`` for callers without a runtime (the demo's simulated clock); never raises."""
    timer_id = timer if isinstance(timer, int) else timer.id
    try:
        with db.session() as session:
            if isinstance(timer, int):
                found = session.get(DueTimer, timer)
                if found is None:
                    return TimerFire(timer, "gone")
                timer = DueRef(found.id, found.customer_id, found.instance_id, found.tenant_id)
            return _fire(session, settings, timer, now)
    except Exception as exc:  # one bad timer must not stop the sweep; it stays due for the next one
        return TimerFire(timer_id, "failed", code=f"{type(exc).__name__}: {exc}"[:300])


def _fire(
    session: Session,
    settings: Settings | None,
    ref: DueRef,
    now: datetime,
    claimed: frozenset[str] | None = None,
) -> TimerFire:
    """Fire one timer in ``session``; ``claimed``: the customers the caller already locked (SKIP LOCKED)."""
    if not (ref.customer_id in claimed if claimed is not None else _claim(session, ref)):
        return TimerFire(ref.id, "busy")
    # Read under the owner's lock: a sweeper that committed meanwhile has deleted or replaced the row.
    # Plain rows, not ORM objects: a batch fires many timers in one session, and each must see the
    # rows as the previous ones left them.
    found = session.connection().execute(_DUE_ROW, {"timer_id": ref.id}).first()
    if found is None:
        return TimerFire(ref.id, "gone")
    row = found
    instance = found if found.instance_tenant_id is not None else None
    if row.due_at is None or row.due_at > now:
        return TimerFire(ref.id, "not_due", row.event)
    if instance is None or _is_stale(row, instance):
        session.connection().execute(_DELETE_TIMER, {"timer_id": ref.id})
        return TimerFire(ref.id, "stale", row.event, "stale_row")
    result = fire_event(
        session,
        EventRequest(
            tenant_id=row.instance_tenant_id,
            event=row.event,
            instance_id=row.instance_id,
            payload=dict(row.payload or {}),
            # The due time identifies this arming of the timer: a re-armed recurring timer gets a new
            # event id, and a duplicate delivery of an old arming is discarded as stale.
            timer=row.name,
            timer_seq=row.state_seq,
            timer_due=row.due_at,
        ),
        TIMER_ACTOR,
        now,
        settings=settings,
    )
    if result.ok and not result.replayed:
        # The decision cancelled, used up or re-armed this timer: the service already replaced its row.
        return TimerFire(ref.id, "fired", row.event, outbox_ids=result.outbox_ids)
    # A refusal or a replay leaves the row: it is used up here so it cannot fire again.
    session.connection().execute(_DELETE_TIMER, {"timer_id": ref.id})
    code = "replayed" if result.ok else str(result.body.get("error", {}).get("code"))
    return TimerFire(ref.id, "stale" if code in ("stale_timer", "replayed") else "refused", row.event, code)


def due_timers(runtime: Runtime, now: datetime, batch: int) -> list[DueRef]:
    """The timers due at ``now``, earliest first (a plain read: claiming happens per timer)."""
    with runtime.db.session() as session:
        rows = session.execute(
            select(DueTimer.id, DueTimer.customer_id, DueTimer.instance_id, DueTimer.tenant_id)
            .where(DueTimer.due_at.is_not(None), DueTimer.due_at <= now)
            .order_by(DueTimer.due_at, DueTimer.id)
            .limit(batch)
        )
        return [DueRef(r.id, r.customer_id, r.instance_id, r.tenant_id) for r in rows]


TIMERS_PER_TRANSACTION = 25
"""Due timers of one tenant fired in one transaction by the sweep (one commit, one chain-head lock)."""


def sweep_timers(
    runtime: Runtime, now: datetime, batch: int = 500, *, on_commit: OnCommit | None = None
) -> SweepReport:
    """Fire up to ``batch`` due timers, a tenant's customers' timers several to a transaction.

    ``on_commit`` receives the outbox ids the fired timers wrote (default: the outbox relay).
    """
    if on_commit is None:
        from webapp.jobs import after_commit

        def on_commit(ids: Sequence[int]) -> Any:
            return after_commit(runtime, ids)

    report = SweepReport()
    pending: list[int] = []
    for group in _groups(due_timers(runtime, now, batch)):
        fires = _fire_group(runtime.db, runtime.settings, group, now)
        for fire in fires:
            report.add(fire)
            pending.extend(fire.outbox_ids)
        if len(pending) >= RELAY_EVERY:
            on_commit(pending)
            pending = []
    if pending:
        on_commit(pending)
    return report


def _groups(refs: Sequence[DueRef]) -> list[list[DueRef]]:
    """The due timers in transactions: a tenant's customers' timers together (in due order, up to
    ``TIMERS_PER_TRANSACTION``), and every customer-less timer (a catalog entry's) alone."""
    groups: list[list[DueRef]] = []
    open_groups: dict[str, list[DueRef]] = {}
    for ref in refs:
        if ref.customer_id is None or ref.tenant_id is None:
            groups.append([ref])
            continue
        group = open_groups.get(ref.tenant_id)
        if group is None or len(group) >= TIMERS_PER_TRANSACTION:
            group = open_groups[ref.tenant_id] = []
            groups.append(group)
        group.append(ref)
    return groups


def _fire_group(
    db: Database, settings: Settings | None, group: Sequence[DueRef], now: datetime
) -> list[TimerFire]:
    """Fire a group of one tenant's due timers in one transaction; never raises.

    Lock order: the tenant's audit-chain head first (the only lock the group waits for), then all the
    group's customers in one statement with SKIP LOCKED. A transaction that holds a customer and waits
    for the head never blocks this one, which skips busy customers instead of waiting. If anything in
    the group fails, the whole transaction is rolled back and each timer is fired again in its own
    transaction, so one bad timer never costs the others their effects.
    """
    if len(group) == 1:
        return [fire_timer_row(db, settings, group[0], now)]
    tenant_id = group[0].tenant_id
    assert tenant_id is not None
    try:
        with db.session() as session:
            audit.lock_heads(session, [tenant_id])
            customers = sorted({ref.customer_id for ref in group if ref.customer_id is not None})
            claimed = frozenset(session.connection().execute(_CLAIM_CUSTOMERS, {"ids": customers}).scalars())
            return [_fire(session, settings, ref, now, claimed) for ref in group]
    except Exception:
        return [fire_timer_row(db, settings, ref, now) for ref in group]


__all__ = [
    "TIMER_ACTOR",
    "DueRef",
    "SweepReport",
    "TimerFire",
    "due_timers",
    "fire_due_timer",
    "sweep_timers",
]
