"""Races against the real PostgreSQL: row locks, optimistic versions and idempotency keys.

Each contender runs in its own thread with its own connection; a barrier releases them together.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.services.conftest import NOW
from webapp.audit import verify_tenant
from webapp.db import Database
from webapp.models import AuditEntry, GovernorInstance, OutboxMessage, TransitionRecord
from webapp.services.transitions import Actor, EventRequest, EventResult, TransitionError, fire_event

SUPPORT = Actor("u-support", "support")
MANAGER = Actor("u-manager", "manager")


def _race(db: Database, calls: list[Callable[[Any], EventResult]]) -> list[EventResult]:
    """Run each call in its own thread and transaction, all released at once; results in call order."""
    barrier = threading.Barrier(len(calls))
    results: list[EventResult | None] = [None] * len(calls)
    errors: list[BaseException] = []

    def run(i: int, call: Callable[[Any], EventResult]) -> None:
        try:
            with db.session() as session:
                barrier.wait(timeout=30)
                results[i] = call(session)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert all(r is not None for r in results)
    return [r for r in results if r is not None]


def _one(db: Database, customer: str, governor: str) -> GovernorInstance:
    with db.session() as s:
        return s.scalars(
            select(GovernorInstance).where(
                GovernorInstance.customer_id == customer, GovernorInstance.governor == governor
            )
        ).one()


@pytest.mark.parametrize("commit", [False, True], ids=["caller-commits", "write-commits"])
def test_two_concurrent_transitions_one_wins_the_other_is_stale(
    db: Database, make_customer: Callable[..., str], commit: bool
) -> None:
    customer = make_customer(active=True)
    account = _one(db, customer, "customer_account")
    lock = {"reason_code": "manual", "reason": "suspicious login pattern"}
    abuse = {
        "reason": "abuse reported by a seller",
        "report_id": "r-1",
        "evidence": "ticket 77",
        "abuse_reason": "spam",
    }
    results = _race(
        db,
        [
            lambda s: fire_event(
                s,
                EventRequest("t-1", "lock", account.id, lock, expected_version=account.version),
                SUPPORT,
                NOW,
                commit=commit,
            ),
            lambda s: fire_event(
                s,
                EventRequest("t-1", "abuse_report", account.id, abuse, expected_version=account.version),
                SUPPORT,
                NOW,
                commit=commit,
            ),
        ],
    )
    statuses = sorted(r.status for r in results)
    assert statuses == [200, 409], [r.body for r in results]
    loser = next(r for r in results if r.status == 409)
    assert loser.body["error"]["code"] == "stale_version"
    with db.session() as s:
        row = s.get(GovernorInstance, account.id)
        assert row is not None and row.version == account.version + 1, "exactly one update, none lost"
        applied = s.scalar(
            select(func.count())
            .select_from(TransitionRecord)
            .where(
                TransitionRecord.instance_id == account.id,
                TransitionRecord.occurred_at == NOW + timedelta(0),
                TransitionRecord.event.in_(("lock", "abuse_report")),
            )
        )
        assert applied == 1
        assert verify_tenant(s, "t-1").ok


@pytest.mark.parametrize("commit", [False, True], ids=["caller-commits", "write-commits"])
def test_twenty_concurrent_requests_with_one_key_apply_once(
    db: Database, make_customer: Callable[..., str], commit: bool
) -> None:
    customer = make_customer(active=True)
    account = _one(db, customer, "customer_account")
    body = {"reason_code": "compromised_account", "reason": "customer reports a takeover"}
    with db.session() as s:
        audit_before = s.scalar(
            select(func.count()).select_from(AuditEntry).where(AuditEntry.tenant_id == "t-1")
        )
        outbox_before = s.scalar(select(func.count()).select_from(OutboxMessage))
    results = _race(
        db,
        [
            (
                lambda s: fire_event(
                    s,
                    EventRequest("t-1", "lock", account.id, body, idempotency_key="lock-once"),
                    SUPPORT,
                    NOW,
                    commit=commit,
                )
            )
            for _ in range(20)
        ],
    )
    assert {r.status for r in results} == {200}
    assert sum(1 for r in results if not r.replayed) == 1
    assert all(r.body == results[0].body for r in results), "every caller sees the first response"
    with db.session() as s:
        locks = s.scalar(
            select(func.count()).select_from(TransitionRecord).where(TransitionRecord.event == "lock")
        )
        assert locks == 1
        audit_after = s.scalar(
            select(func.count()).select_from(AuditEntry).where(AuditEntry.tenant_id == "t-1")
        )
        applied = len([d for d in results[0].body["decisions"] if d["status"] in ("applied", "ignored")])
        assert audit_after == audit_before + applied, "one audit entry per applied step, once"
        effects = s.scalar(select(func.count()).select_from(OutboxMessage))
        assert effects > outbox_before
        assert len({m.job_id for m in s.scalars(select(OutboxMessage))}) == effects
        assert verify_tenant(s, "t-1").ok


def test_same_key_with_a_different_body_is_409_and_changes_nothing(
    db: Database, make_customer: Callable[..., str]
) -> None:
    customer = make_customer(active=True)
    account = _one(db, customer, "customer_account")
    with db.session() as s:
        first = fire_event(
            s,
            EventRequest(
                "t-1",
                "lock",
                account.id,
                {"reason_code": "manual", "reason": "suspicious login pattern"},
                idempotency_key="k1",
            ),
            SUPPORT,
            NOW,
        )
    assert first.status == 200
    with pytest.raises(TransitionError) as refused, db.session() as s:
        fire_event(
            s,
            EventRequest(
                "t-1",
                "lock",
                account.id,
                {"reason_code": "chargeback", "reason": "suspicious login pattern"},
                idempotency_key="k1",
            ),
            SUPPORT,
            NOW,
        )
    assert refused.value.status == 409 and refused.value.code == "idempotency_key_reused"
    with db.session() as s:
        locks = s.scalar(
            select(func.count()).select_from(TransitionRecord).where(TransitionRecord.event == "lock")
        )
        assert locks == 1


def test_timer_and_staff_action_race_always_end_in_a_legal_serial_outcome(
    db: Database, make_customer: Callable[..., str]
) -> None:
    """trial_expired (timer) against a support cancel of the same trial, many times over."""
    outcomes: set[tuple[str, int, int]] = set()
    for n in range(12):
        customer = make_customer(customer_id=f"c-race-{n}")
        sub = _one(db, customer, "subscription")
        timer = sub.timers["trial_expired"]
        due = NOW + timedelta(days=15)
        cancel = {
            "reason": "customer changed their mind",
            "reason_code": "too_expensive",
            "churn_offer_outcome": "declined",
        }
        timer_req = EventRequest(
            "t-1",
            timer["event"],
            sub.id,
            dict(timer.get("payload") or {}),
            timer="trial_expired",
            timer_seq=int(timer["state_seq"]),
        )
        cancel_req = EventRequest("t-1", "cancel", sub.id, cancel)
        calls = [
            lambda s, r=timer_req, at=due: fire_event(s, r, Actor("timer", "timer"), at),
            lambda s, r=cancel_req, at=due: fire_event(s, r, SUPPORT, at),
        ]
        if n % 2:
            calls.reverse()
        results = _race(db, calls)
        timer_result, cancel_result = results if n % 2 == 0 else results[::-1]
        final = _one(db, customer, "subscription").state
        outcomes.add((final, timer_result.status, cancel_result.status))
        # Legal serial outcomes: the timer first (trial ended; cancel no longer valid from trial_ended)
        # or the cancel first (cancelled; the timer belongs to an earlier state entry and is stale).
        assert (final, timer_result.status, cancel_result.status) in {
            ("trial_ended", 200, 409),
            ("cancelled", 409, 200),
        }, (final, timer_result.body, cancel_result.body)
        if final == "cancelled":
            assert timer_result.body["error"]["code"] in ("stale_timer", "invalid_transition")
    assert outcomes, "the race ran"


def test_an_event_waiting_for_the_customer_sees_the_instances_the_lock_holder_created(
    db: Database, make_customer: Callable[..., str]
) -> None:
    """The load locks the customer, then reads its instances with a fresh snapshot: an instance
    created by the transaction that held the customer lock (committed while the event waited) is in
    the plan's snapshot, not missed because the event's first statement started earlier."""
    from sqlalchemy import text

    from webapp.services.transitions import SQL_STORE

    customer = make_customer("c-9", active=True)
    with db.session() as s:
        account = s.scalars(
            select(GovernorInstance.id).where(
                GovernorInstance.customer_id == customer, GovernorInstance.governor == "customer_account"
            )
        ).one()
    holder = db.sessions()
    holder.execute(text("SELECT id FROM customers WHERE id = :c FOR UPDATE"), {"c": customer})
    holder.execute(
        text(
            "INSERT INTO governor_instances (id, tenant_id, customer_id, governor, state, state_seq, version,"
            " entered_at, attention, attention_reason, data, timers, created_at, updated_at)"
            " VALUES ('bill-created-while-locked', 't-1', :c, 'billing', 'awaiting_invoice', 1, 1, :t,"
            " false, '', '{}', '{}', :t, :t)"
        ),
        {"c": customer, "t": NOW},
    )
    seen: list[set[str]] = []

    def load() -> None:
        with db.session() as s:
            seen.append(set(SQL_STORE.load(s, EventRequest("t-1", "lock", account)).snapshot))

    waiter = threading.Thread(target=load)
    waiter.start()
    waiter.join(timeout=1.0)
    assert waiter.is_alive(), "the load waits for the customer lock"
    holder.commit()
    holder.close()
    waiter.join(timeout=30)
    assert seen and "bill-created-while-locked" in seen[0] and account in seen[0]


@pytest.mark.parametrize("commit", [False, True], ids=["caller-commits", "write-commits"])
def test_events_of_one_tenant_racing_for_its_audit_chain_lose_and_repeat_nothing(
    db: Database, make_customer: Callable[..., str], monkeypatch: pytest.MonkeyPatch, commit: bool
) -> None:
    """Four threads lock and unlock four customers of one tenant, each event in its own transaction,
    with ids and the audit head read by the load (``Reservation``): a write that finds the head moved
    chains again onto it (or, when the write was to commit, the event starts again: it committed
    nothing), and the tenant's later events lock the head up front. Every event applies once, the
    chain has no gap and verifies, and every transition has exactly one audit entry."""
    from sqlalchemy import event

    from webapp.services import transitions

    monkeypatch.setattr(transitions, "_RESERVE_HINTS", {"lock": (4, 8), "unlock": (4, 8)})
    monkeypatch.setattr(transitions, "CONTENDED_SECONDS", 600.0)
    accounts = [_one(db, make_customer(f"c-{n}", active=True), "customer_account").id for n in range(4)]
    with db.session() as s:
        history_before = s.scalar(select(func.count()).select_from(TransitionRecord)) or 0
    guarded: list[bool] = []

    def write_seen(_conn: object, _cursor: object, sql: str, *_rest: object) -> None:
        if "jsonb_to_recordset" in sql:
            guarded.append("FOR UPDATE OF t" in sql)

    rounds = 12
    barrier = threading.Barrier(len(accounts))
    applied: list[int] = []
    errors: list[BaseException] = []
    lock = {"reason_code": "compromised_account", "reason": "a race between staff members"}
    unlock = {
        "verification_method": ["document", "phone"],
        "verifier_id": "u-c",
        "reason": "identity confirmed again",
    }

    def run(account: str) -> None:
        try:
            barrier.wait(timeout=30)
            for n in range(rounds):
                name, payload = ("lock", lock) if n % 2 == 0 else ("unlock", unlock)
                with db.session() as s:
                    result = fire_event(
                        s,
                        EventRequest("t-1", name, account, payload),
                        SUPPORT,
                        NOW,
                        approved_by="u-manager",
                        commit=commit,
                    )
                assert result.status == 200, result.body
                applied.append(sum(1 for d in result.body["decisions"] if d["status"] == "applied"))
        except BaseException as exc:  # handed to the test thread
            errors.append(exc)

    event.listen(db.engine, "before_cursor_execute", write_seen)
    try:
        threads = [threading.Thread(target=run, args=(a,)) for a in accounts]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        event.remove(db.engine, "before_cursor_execute", write_seen)
    assert not errors, errors
    assert len(applied) == len(accounts) * rounds
    with db.session() as s:
        seqs = list(
            s.scalars(select(AuditEntry.seq).where(AuditEntry.tenant_id == "t-1").order_by(AuditEntry.seq))
        )
        history = (s.scalar(select(func.count()).select_from(TransitionRecord)) or 0) - history_before
        audited = [
            json.loads(p)["transition_id"]
            for p in s.scalars(select(AuditEntry.payload).where(AuditEntry.action == "transition"))
        ]
        history_ids = set(s.scalars(select(TransitionRecord.id)))
        assert verify_tenant(s, "t-1").ok
    assert seqs == list(range(1, len(seqs) + 1))
    assert history == sum(applied)
    assert sorted(audited) == sorted(history_ids)  # each transition audited once, none twice
    # Once a write has found the head moved, the tenant's next events lock it up front (unguarded
    # writes): only the events already under way then write twice.
    repeated = len(guarded) - len(applied)
    assert 0 < repeated <= len(accounts) and guarded.count(True) <= 2 * len(accounts), guarded
    assert transitions._CONTENDED.get("t-1", 0) > 0
