"""The timer sweep on PostgreSQL: exactly once under concurrent sweepers, stale timers discarded."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from sqlalchemy import event, func, select

from tests.jobs.conftest import instance_of, new_customer
from webapp.db import Database
from webapp.models import DueTimer, GovernorInstance, TransitionRecord
from webapp.runtime import Runtime
from webapp.services.timers import SweepReport, fire_due_timer, sweep_timers

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _no_relay(ids: object) -> None:
    return None


def _escalations(db: Database, instance_id: str) -> int:
    with db.session() as s:
        return int(
            s.scalar(
                select(func.count())
                .select_from(TransitionRecord)
                .where(
                    TransitionRecord.instance_id == instance_id,
                    TransitionRecord.event == "approval_escalation",
                )
            )
            or 0
        )


def test_two_concurrent_sweepers_fire_each_due_timer_once_and_discard_stale_ones(rt: Runtime) -> None:
    customers = [new_customer(rt, f"c-{n}", now=T0, active=False, kyc=True) for n in range(16)]
    now = T0 + timedelta(hours=25)  # approval_escalation_1 (24 h after KYC) is due for every entitlement
    with rt.db.session() as s:
        entitlements = {c: instance_of(s, c, "entitlement").id for c in customers}
        due = s.scalars(select(DueTimer).where(DueTimer.due_at <= now)).all()
        assert sorted(d.instance_id for d in due) == sorted(entitlements.values())
        assert {d.name for d in due} == {"approval_escalation_1"}
        # Two stale timers: a row left over from an earlier state entry (it no longer matches the
        # instance's timers), and one whose instance also still lists it (only the engine can tell).
        leftover = next(d for d in due if d.instance_id == entitlements["c-0"])
        leftover.state_seq -= 1
        engine_stale = next(d for d in due if d.instance_id == entitlements["c-1"])
        engine_stale.state_seq -= 1
        inst = s.get(GovernorInstance, entitlements["c-1"])
        assert inst is not None
        timers = dict(inst.timers)
        timers["approval_escalation_1"] = {
            **timers["approval_escalation_1"],
            "state_seq": engine_stale.state_seq,
        }
        inst.timers = timers

    reports: list[SweepReport] = []
    start = threading.Barrier(2)

    def sweeper() -> None:
        start.wait()
        reports.append(sweep_timers(rt, now, on_commit=_no_relay))

    threads = [threading.Thread(target=sweeper) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert sum(r.fired for r in reports) == 14, reports
    assert sum(r.stale for r in reports) == 2, reports
    assert sum(r.failed for r in reports) == 0, [r.errors for r in reports]
    for customer, entitlement in entitlements.items():
        assert _escalations(rt.db, entitlement) == (0 if customer in ("c-0", "c-1") else 1), customer
    with rt.db.session() as s:
        assert s.scalar(select(func.count()).select_from(DueTimer).where(DueTimer.due_at <= now)) == 0
        assert instance_of(s, "c-2", "entitlement").data["needs_review"] is True
    assert sweep_timers(rt, now, on_commit=_no_relay).as_dict() == SweepReport().as_dict()


def test_a_timer_rearmed_at_the_same_state_entry_fires_every_time(rt: Runtime) -> None:
    new_customer(rt, "c-1", now=T0)  # also publishes the catalog at T0
    with rt.db.session() as s:
        sku = s.scalars(select(GovernorInstance).where(GovernorInstance.governor == "catalog")).first()
        assert sku is not None and sku.state == "published"
        seq = sku.state_seq
    first = T0 + timedelta(days=7, hours=1)
    second = first + timedelta(days=7, hours=1)
    assert sweep_timers(rt, first, on_commit=_no_relay).failed == 0
    assert sweep_timers(rt, second, on_commit=_no_relay).failed == 0
    with rt.db.session() as s:
        checks = s.scalars(
            select(TransitionRecord).where(
                TransitionRecord.instance_id == sku.id, TransitionRecord.event == "compliance_check"
            )
        ).all()
        assert [(c.state_seq, c.occurred_at) for c in checks] == [(seq, first), (seq, second)]
        (rearmed,) = s.scalars(select(DueTimer).where(DueTimer.instance_id == sku.id)).all()
        assert rearmed.due_at == second + timedelta(days=7)


def test_paused_and_future_timers_are_left_alone(rt: Runtime) -> None:
    new_customer(rt, "c-1", now=T0, active=False)  # entitlement timers wait (paused) for KYC
    with rt.db.session() as s:
        paused = s.scalars(select(DueTimer).where(DueTimer.due_at.is_(None))).all()
        assert {p.name for p in paused} >= {"approval_escalation_1", "approval_final_timeout"}
        before = s.scalar(select(func.count()).select_from(DueTimer))
    report = sweep_timers(rt, T0 + timedelta(days=1), on_commit=_no_relay)
    assert report.as_dict() == SweepReport().as_dict()
    with rt.db.session() as s:
        assert s.scalar(select(func.count()).select_from(DueTimer)) == before
    future = paused[0].id
    assert fire_due_timer(rt, future, T0 + timedelta(days=1)).outcome == "not_due"


def test_onboarding_timeout_fires_through_the_service_as_the_timer(rt: Runtime) -> None:
    customer = new_customer(rt, "c-1", now=T0, active=False)
    report = sweep_timers(rt, T0 + timedelta(days=7, minutes=1), on_commit=_no_relay)
    assert report.fired >= 1 and report.failed == 0
    with rt.db.session() as s:
        account = instance_of(s, customer, "customer_account")
        assert account.state == "deactivated" and account.data["deactivation_cause"] == "onboarding_timeout"
        record = s.scalars(
            select(TransitionRecord).where(
                TransitionRecord.instance_id == account.id, TransitionRecord.event == "onboarding_timeout"
            )
        ).one()
        assert (record.actor, record.role) == ("timer", "timer")


def test_a_failing_timer_in_a_batch_costs_the_others_nothing(rt: Runtime) -> None:
    customers = [new_customer(rt, f"c-{n}", now=T0, active=False, kyc=True) for n in range(6)]
    now = T0 + timedelta(hours=25)
    with rt.db.session() as s:
        entitlements = {c: instance_of(s, c, "entitlement").id for c in customers}
        # A broken record of the timer on one instance: checking the due row against it raises.
        broken = s.get(GovernorInstance, entitlements["c-3"])
        assert broken is not None
        timers = dict(broken.timers)
        timers["approval_escalation_1"] = {**timers["approval_escalation_1"], "due_at": "not a time"}
        broken.timers = timers
    report = sweep_timers(rt, now, on_commit=_no_relay)
    assert (report.fired, report.failed) == (5, 1), report
    assert "ValueError" in report.errors[0]
    for customer, entitlement in entitlements.items():
        assert _escalations(rt.db, entitlement) == (0 if customer == "c-3" else 1), customer
    with rt.db.session() as s:
        (left,) = s.scalars(select(DueTimer).where(DueTimer.due_at <= now)).all()
        assert left.instance_id == entitlements["c-3"]  # still due: the next sweep tries it again


def test_one_sweep_transaction_fires_several_timers_of_a_tenant(rt: Runtime) -> None:
    for n in range(4):
        new_customer(rt, f"c-{n}", now=T0, active=False, kyc=True)
    commits: list[object] = []

    def count(conn: object) -> None:
        commits.append(conn)

    event.listen(rt.db.engine, "commit", count)
    try:
        report = sweep_timers(rt, T0 + timedelta(hours=25), on_commit=_no_relay)
    finally:
        event.remove(rt.db.engine, "commit", count)
    assert report.fired == 4
    assert len(commits) <= 2  # the read of what is due, and one transaction for the four timers
