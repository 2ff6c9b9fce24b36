"""Time travel against PostgreSQL: ``state_as_of`` rebuilt from snapshots and history.

A customer lives for 40 simulated days through the real service: usage samples moving the quota
between bands, account self-transitions, a purchase that creates an invoice later in life, staff
actions, and every timer firing as the clock passes it (fraud checks, trial reminders, the invoice's
generation, delivery and payment window, the quota period rollover). After every applied event the
test photographs the live rows; ``state_as_of`` must reproduce the photograph at any instant.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text

from tests.services.conftest import NOW
from webapp.db import Database
from webapp.models import Base, DueTimer, GovernorInstance, StateSnapshot, TransitionRecord
from webapp.services.history import state_as_of
from webapp.services.transitions import Actor, EventRequest, EventResult, fire_event

TENANT = "t-1"
SYSTEM = Actor("system", "sys")
TIMER = Actor("system", "timer")
SUPPORT = Actor("u-support", "support")

Photo = dict[str, tuple[Any, ...]]


def _sandbox(_s: Any, _snapshot: Any, _target: Any, _event: str) -> Mapping[str, Any]:
    """The payment processor's sandbox: a card is validated the moment it is added."""
    return {"payment_method_validated_at": _CLOCK[0]}


_CLOCK: list[datetime] = [NOW]


def _photo(db: Database, customer: str) -> Photo:
    """The live rows of the customer, as state_as_of reports them."""
    with db.session() as s:
        rows = s.scalars(select(GovernorInstance).where(GovernorInstance.customer_id == customer)).all()
        return {
            r.id: (
                r.state,
                r.state_seq,
                r.version,
                r.entered_at,
                r.data,
                sorted(r.timers),
            )
            for r in rows
        }


def _rebuilt(db: Database, customer: str, instant: datetime) -> Photo:
    with db.session() as s:
        views = state_as_of(s, TENANT, customer, instant)
    return {
        i: (v.state, v.state_seq, v.version, v.entered_at, dict(v.data), list(v.timers))
        for i, v in views.items()
    }


class Life:
    """Drives one customer through the service and photographs it after every applied event."""

    def __init__(self, db: Database, customer: str) -> None:
        self.db, self.customer = db, customer
        self.photos: list[tuple[datetime, Photo]] = [(NOW, _photo(db, customer))]
        self.applied = 0

    def _run(self, req: EventRequest, actor: Actor, at: datetime) -> EventResult:
        _CLOCK[0] = at
        with self.db.session() as s:
            result = fire_event(s, req, actor, at, facts_hook=_sandbox)
        if result.status == 200:
            self.applied += 1
            self.photos.append((at, _photo(self.db, self.customer)))
        return result

    def timers_until(self, until: datetime) -> None:
        """Fire every due timer up to ``until``, in due order, through the service."""
        while True:
            with self.db.session() as s:
                due = s.scalars(
                    select(DueTimer)
                    .where(DueTimer.customer_id == self.customer, DueTimer.due_at <= until)
                    .order_by(DueTimer.due_at, DueTimer.instance_id, DueTimer.name)
                ).first()
                if due is None:
                    return
                payload = dict(due.payload)
                at = due.due_at
                assert at is not None
                req = EventRequest(
                    TENANT,
                    due.event,
                    due.instance_id,
                    payload,
                    timer=due.name,
                    timer_seq=due.state_seq,
                    timer_due=at,
                )
            result = self._run(req, TIMER, at)
            if result.status != 200:
                with self.db.session() as s:  # a stale timer is discarded, as the sweep does
                    s.delete(s.get(DueTimer, due.id))

    def fire(
        self, governor: str, event: str, at: datetime, actor: Actor = SYSTEM, **payload: Any
    ) -> EventResult:
        self.timers_until(at)
        with self.db.session() as s:
            iid = s.scalars(
                select(GovernorInstance.id).where(
                    GovernorInstance.customer_id == self.customer, GovernorInstance.governor == governor
                )
            ).first()
        assert iid is not None
        return self._run(EventRequest(TENANT, event, iid, payload), actor, at)

    def expected_at(self, instant: datetime) -> Photo:
        """The last photograph taken at or before ``instant``."""
        found: Photo = {}
        for at, photo in self.photos:
            if at <= instant:
                found = photo
        return found


@pytest.fixture(scope="module")
def life(database: Database) -> Life:
    """One long life, built once for the module (the tests here only read it)."""
    from webapp.services.setup import activate_customer, ensure_catalog, ensure_tenant, signup_customer

    db = database
    tables = ", ".join(f'"{t.name}"' for t in reversed(Base.metadata.sorted_tables))
    with db.engine.begin() as conn:
        conn.execute(text("ALTER TABLE audit_entries DISABLE TRIGGER USER"))
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        conn.execute(text("ALTER TABLE audit_entries ENABLE TRIGGER USER"))
    customer = "c-long"
    with db.session() as s:
        ensure_tenant(s, TENANT, NOW)
        ensure_catalog(s, NOW)
    with db.session() as s:
        signup_customer(
            s, TENANT, customer, name="Ada Long", email="ada@example.test", tier="starter", now=NOW
        )
    with db.session() as s:
        activate_customer(s, TENANT, customer, now=NOW)
    lived = Life(db, customer)
    rng = random.Random(3)
    start = NOW + timedelta(minutes=5)
    # Monthly usage counters as a share of the limit: up through the warning band and over the limit.
    shares = [0.3, 0.5, 0.82, 0.85, 0.9, 0.97, 1.02, 1.1, 1.2, 0.4]
    for step in range(160):
        at = start + timedelta(hours=6 * step, minutes=rng.randint(0, 50))
        if step == 9:
            r = lived.fire(
                "customer_account", "update_payment_method", at, method_token="tok_visa", fingerprint="fp-1"
            )
            assert r.ok, r.body
        elif step == 10:
            assert lived.fire("subscription", "purchase", at, tier="starter", cycle="monthly").ok
        elif step % 11 == 5:
            channels = rng.choice([["email"], ["sms"], ["email", "push"]])
            lived.fire(
                "customer_account",
                "update_comm_prefs",
                at,
                SUPPORT,
                channels=channels,
                reason="asked by phone",
            )
        else:
            with db.session() as s:
                quota = s.scalars(
                    select(GovernorInstance).where(
                        GovernorInstance.customer_id == customer, GovernorInstance.governor == "quota_sla"
                    )
                ).one()
                limit = int(quota.data["limits"]["api_requests"])
            used = int(limit * shares[step % len(shares)])
            lived.fire(
                "quota_sla", "usage_sample", at, metrics={"api_requests": used}, sample_ts=at.isoformat()
            )
    lived.timers_until(start + timedelta(days=41))
    return lived


def test_the_long_life_really_happened(life: Life) -> None:
    db = life.db
    with db.session() as s:
        history = s.scalar(select(func.count()).select_from(TransitionRecord))
        snapshots = s.scalar(select(func.count()).select_from(StateSnapshot))
        governors = set(s.scalars(select(TransitionRecord.governor).where(TransitionRecord.role == "timer")))
        quota_states = set(
            s.scalars(select(TransitionRecord.to_state).where(TransitionRecord.governor == "quota_sla"))
        )
    assert life.applied > 150 and history is not None and history > 200
    assert snapshots is not None and snapshots >= 8, "versions pass multiples of 20, so snapshots exist"
    assert {"customer_account", "subscription", "billing", "quota_sla"} <= governors, "timers fired"
    assert {"within_limits", "warning", "exceeded"} <= quota_states


def test_state_as_of_now_equals_the_live_rows(life: Life) -> None:
    db = life.db
    end = life.photos[-1][0] + timedelta(days=1)
    live = _photo(db, life.customer)
    assert _rebuilt(db, life.customer, end) == live
    with db.session() as s:
        views = state_as_of(s, TENANT, life.customer, end)
    quota = next(v for v in views.values() if v.governor == "quota_sla")
    assert quota.version > 60 and quota.replayed < 20, "rebuilt from a snapshot plus a short replay"


def test_state_as_of_matches_the_photographs_at_random_past_instants(life: Life) -> None:
    db = life.db
    rng = random.Random(11)
    first, last = life.photos[0][0], life.photos[-1][0]
    instants = [at for at, _ in rng.sample(life.photos, 25)]  # exactly at an event
    instants += [at + timedelta(seconds=1) for at, _ in rng.sample(life.photos, 10)]
    instants += [first + (last - first) * rng.random() for _ in range(25)]
    for instant in instants:
        assert _rebuilt(db, life.customer, instant) == life.expected_at(instant), instant


def test_instances_created_later_are_absent_before_and_nothing_exists_before_signup(life: Life) -> None:
    db = life.db
    with db.session() as s:
        billing = s.scalars(
            select(GovernorInstance).where(
                GovernorInstance.customer_id == life.customer, GovernorInstance.governor == "billing"
            )
        ).first()
    assert billing is not None
    born = billing.created_at
    assert billing.id not in _rebuilt(db, life.customer, born - timedelta(seconds=1))
    assert billing.id not in life.expected_at(born - timedelta(seconds=1))
    at_birth = _rebuilt(db, life.customer, born)
    assert at_birth[billing.id] == life.expected_at(born)[billing.id]
    assert _rebuilt(db, life.customer, NOW - timedelta(seconds=1)) == {}
    with pytest.raises(ValueError, match="timezone-aware"), db.session() as s:
        state_as_of(s, TENANT, life.customer, NOW.replace(tzinfo=None))


def test_state_as_of_agrees_with_the_history_rows_to_state(life: Life) -> None:
    """An independent replay: the last history row of each instance at or before the instant."""
    db = life.db
    with db.session() as s:
        records = s.execute(
            select(TransitionRecord.instance_id, TransitionRecord.to_state, TransitionRecord.occurred_at)
            .where(TransitionRecord.customer_id == life.customer)
            .order_by(TransitionRecord.id)
        ).all()
    rng = random.Random(5)
    first, last = records[0].occurred_at, records[-1].occurred_at
    for _ in range(30):
        instant = first + (last - first) * rng.random()
        expected: dict[str, str] = {}
        for r in records:
            if r.occurred_at <= instant:
                expected[r.instance_id] = r.to_state
        assert {i: p[0] for i, p in _rebuilt(db, life.customer, instant).items()} == expected
