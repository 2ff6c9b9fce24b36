"""The one transition service against PostgreSQL: persistence, history, audit, timers, outbox, idempotency."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest
from sqlalchemy import delete, event, func, select
from sqlalchemy.exc import IntegrityError

from tests.services.conftest import NOW
from webapp.audit import verify_tenant
from webapp.db import Database
from webapp.models import (
    AuditEntry,
    DueTimer,
    GovernorInstance,
    IdempotencyRecord,
    OutboxMessage,
    TransitionRecord,
)
from webapp.services.transitions import SYSTEM, Actor, EventRequest, fire_event

SUPPORT = Actor("u-support", "support")
LOCK = {"reason_code": "compromised_account", "reason": "customer reports an account takeover"}
UNLOCK = {
    "verification_method": ["document", "phone"],
    "verifier_id": "u-compliance",
    "reason": "identity confirmed by document and phone",
}


def _instance(db: Database, customer: str, governor: str) -> GovernorInstance:
    with db.session() as s:
        return s.scalars(
            select(GovernorInstance).where(
                GovernorInstance.customer_id == customer, GovernorInstance.governor == governor
            )
        ).one()


def test_signup_builds_every_governor_through_cascades(
    db: Database, make_customer: Callable[..., str]
) -> None:
    customer = make_customer()
    with db.session() as s:
        rows = s.scalars(select(GovernorInstance).where(GovernorInstance.customer_id == customer)).all()
        by_gov = {r.governor: r.state for r in rows}
        assert by_gov == {
            "customer_account": "onboarding",
            "subscription": "trial",
            "compliance_audit": "compliant",
            "entitlement": "pending_approval",
            "quota_sla": "within_limits",
        }
        history = s.scalars(
            select(TransitionRecord)
            .where(TransitionRecord.customer_id == customer)
            .order_by(TransitionRecord.id)
        ).all()
        assert history[0].governor == "customer_account" and history[0].cause_id is None
        assert all(h.cause_id is not None for h in history[1:]), "every other row was caused by a cascade"
        timers = s.scalars(select(DueTimer).where(DueTimer.customer_id == customer)).all()
        assert {t.name for t in timers} >= {"onboarding_timeout", "trial_expired", "approval_final_timeout"}
        assert verify_tenant(s, "t-1").ok


def test_lock_applies_cascade_and_writes_history_audit_outbox(
    db: Database, make_customer: Callable[..., str]
) -> None:
    customer = make_customer(active=True)
    account = _instance(db, customer, "customer_account")
    with db.session() as s:
        audit_before = s.scalar(select(func.count()).select_from(AuditEntry))
        result = fire_event(
            s,
            EventRequest(
                "t-1",
                "lock",
                account.id,
                {"reason_code": "compromised_account", "reason": "customer reports a takeover"},
                expected_version=account.version,
                idempotency_key="k-lock-1",
            ),
            SUPPORT,
            NOW,
        )
    assert result.status == 200, result.body
    events = [(d["governor"], d["event"], d["status"]) for d in result.body["decisions"]]
    assert events[0] == ("customer_account", "lock", "applied")
    assert ("entitlement", "suspend", "applied") in events
    with db.session() as s:
        assert s.get(GovernorInstance, account.id).state == "locked"  # type: ignore[union-attr]
        assert _instance(db, customer, "entitlement").state == "suspended"
        audit_after = s.scalar(select(func.count()).select_from(AuditEntry))
        assert audit_after == audit_before + len([e for e in events if e[2] == "applied"]) + sum(
            1 for e in events if e[2] == "ignored"
        )
        assert s.scalar(select(func.count()).select_from(OutboxMessage)) > 0
        assert verify_tenant(s, "t-1").ok


def test_replay_with_same_key_returns_stored_response(
    db: Database, make_customer: Callable[..., str]
) -> None:
    customer = make_customer()
    account = _instance(db, customer, "customer_account")
    body = {"reason_code": "manual", "reason": "suspicious activity seen"}
    with db.session() as s:
        first = fire_event(
            s, EventRequest("t-1", "lock", account.id, body, idempotency_key="same"), SUPPORT, NOW
        )
    with db.session() as s:
        history = s.scalar(select(func.count()).select_from(TransitionRecord))
        again = fire_event(
            s, EventRequest("t-1", "lock", account.id, body, idempotency_key="same"), SUPPORT, NOW
        )
        assert again.replayed and again.status == 200 and again.body == first.body
        assert s.scalar(select(func.count()).select_from(TransitionRecord)) == history


def test_stale_version_is_409_audited_and_changes_nothing(
    db: Database, make_customer: Callable[..., str]
) -> None:
    customer = make_customer()
    account = _instance(db, customer, "customer_account")
    with db.session() as s:
        result = fire_event(
            s,
            EventRequest(
                "t-1",
                "lock",
                account.id,
                {"reason_code": "manual", "reason": "suspicious activity seen"},
                expected_version=account.version - 1,
            ),
            SUPPORT,
            NOW,
        )
    assert result.status == 409 and result.body["error"]["code"] == "stale_version"
    with db.session() as s:
        assert s.get(GovernorInstance, account.id).state == account.state  # type: ignore[union-attr]
        last = s.scalars(
            select(AuditEntry).where(AuditEntry.tenant_id == "t-1").order_by(AuditEntry.seq.desc())
        ).first()
        assert last is not None and last.action == "transition.rejected"


def test_data_that_names_instances_created_in_the_same_plan_uses_their_real_ids(
    db: Database, make_customer: Callable[..., str]
) -> None:
    """The entitlement created by the trial's cascade records the subscription's final id."""
    customer = make_customer()
    subscription = _instance(db, customer, "subscription")
    entitlement = _instance(db, customer, "entitlement")
    assert entitlement.data.get("subscription_id") == subscription.id
    assert not any(str(v).startswith("new:") for v in entitlement.data.values())


def _statements(db: Database) -> tuple[list[str], Callable[[], None]]:
    seen: list[str] = []

    def record(conn: object, cursor: object, statement: str, *rest: object) -> None:
        seen.append(statement)

    event.listen(db.engine, "before_cursor_execute", record)
    return seen, lambda: event.remove(db.engine, "before_cursor_execute", record)


def test_an_event_costs_the_same_few_statements_however_far_its_cascades_reach(
    db: Database, make_customer: Callable[..., str]
) -> None:
    quiet = _instance(db, make_customer("c-1"), "customer_account")  # onboarding
    busy = _instance(db, make_customer("c-2", active=True), "customer_account")
    seen, stop = _statements(db)
    try:
        with db.session() as s:
            one = fire_event(s, EventRequest("t-1", "email_verified", quiet.id), SYSTEM, NOW)
        one_step = len(seen)
        seen.clear()
        with db.session() as s:
            lock = fire_event(
                s,
                EventRequest("t-1", "lock", busy.id, LOCK),
                SUPPORT,
                NOW,
            )
    finally:
        stop()
    assert one.status == 200 and len(one.body["decisions"]) == 1, one.body
    applied = [d for d in lock.body["decisions"] if d["status"] == "applied"]
    assert lock.status == 200 and len(applied) >= 3, lock.body
    # One statement per table and event, not one per step (before: ~20 a step, 2,791 for 142 events).
    assert len(seen) <= 14, seen
    assert len(seen) - one_step <= 2, (one_step, seen)  # the lock's timers: a DELETE and an INSERT


def test_an_orm_copy_in_the_callers_session_is_read_afresh_after_the_event(
    db: Database, make_customer: Callable[..., str]
) -> None:
    account = _instance(db, make_customer(active=True), "customer_account")
    with db.session() as s:
        row = s.get(GovernorInstance, account.id)
        assert row is not None and row.state == "active"
        result = fire_event(
            s,
            EventRequest("t-1", "lock", account.id, LOCK),
            SUPPORT,
            NOW,
        )
        assert result.status == 200, result.body
        assert (row.state, row.version) == ("locked", account.version + 1)


def test_a_write_failing_inside_the_batch_rolls_the_whole_event_back(
    db: Database, make_customer: Callable[..., str]
) -> None:
    account = _instance(db, make_customer(active=True), "customer_account")
    with db.session() as s:
        locking = EventRequest("t-1", "lock", account.id, LOCK, idempotency_key="k")
        assert fire_event(s, locking, SUPPORT, NOW).ok
        # The stored response is gone (say, expired): the key's deterministic event id is not.
        s.execute(delete(IdempotencyRecord))
    with db.session() as s:
        before = (
            s.scalar(select(func.count()).select_from(TransitionRecord)),
            s.scalar(select(func.count()).select_from(AuditEntry)),
            s.scalar(select(func.count()).select_from(OutboxMessage)),
        )
    unlock = EventRequest("t-1", "unlock", account.id, UNLOCK, idempotency_key="k")
    with pytest.raises(IntegrityError, match="event_id"), db.session() as s:
        fire_event(s, unlock, SUPPORT, NOW, approved_by="u-manager")
    with db.session() as s:
        row = s.get(GovernorInstance, account.id)
        assert row is not None and (row.state, row.version) == ("locked", account.version + 1)
        after = (
            s.scalar(select(func.count()).select_from(TransitionRecord)),
            s.scalar(select(func.count()).select_from(AuditEntry)),
            s.scalar(select(func.count()).select_from(OutboxMessage)),
        )
        assert after == before
        assert verify_tenant(s, "t-1").ok
    with db.session() as s:  # the pooled connection is fine afterwards
        again = fire_event(s, replace(unlock, idempotency_key="k2"), SUPPORT, NOW, approved_by="u-manager")
        assert again.status == 200, again.body


def test_a_key_another_transaction_stores_meanwhile_fails_the_whole_batch(
    db: Database, make_customer: Callable[..., str]
) -> None:
    """The idempotency record is written in the event's batch: when a concurrent transaction stores
    the same key first (another customer, so no shared lock), the insert fails and nothing applies."""
    import threading

    first = _instance(db, make_customer("c-k1", active=True), "customer_account")
    second = _instance(db, make_customer("c-k2", active=True), "customer_account")
    holder = db.sessions()
    assert fire_event(
        holder, EventRequest("t-1", "lock", first.id, LOCK, idempotency_key="k"), SUPPORT, NOW
    ).ok
    failures: list[BaseException] = []

    def racing() -> None:
        try:
            with db.session() as s:
                fire_event(s, EventRequest("t-1", "lock", second.id, LOCK, idempotency_key="k"), SUPPORT, NOW)
        except BaseException as exc:  # handed to the test thread
            failures.append(exc)

    thread = threading.Thread(target=racing)
    thread.start()
    thread.join(0.5)  # blocked behind the holder (its audit head lock, then its uncommitted key)
    holder.commit()
    holder.close()
    thread.join(10)
    assert not thread.is_alive() and len(failures) == 1 and isinstance(failures[0], IntegrityError)
    assert _instance(db, "c-k2", "customer_account").state == "active"
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(IdempotencyRecord)) == 1
        assert verify_tenant(s, "t-1").ok


def _chain_seqs(db: Database, tenant: str) -> list[int]:
    with db.session() as s:
        return list(
            s.scalars(select(AuditEntry.seq).where(AuditEntry.tenant_id == tenant).order_by(AuditEntry.seq))
        )


def test_once_an_event_name_is_known_its_ids_and_audit_head_come_with_the_load(
    db: Database, make_customer: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first ``lock`` allocates ids and locks the head in a round trip of its own; the next one
    reserves ids and reads the head in its load's round trip, and its write is conditional on the
    head (``webapp.db.JsonGuard``): two statements instead of three, and the same rows."""
    from webapp.services import transitions

    monkeypatch.setattr(transitions, "_RESERVE_HINTS", {})
    first = _instance(db, make_customer("c-1", active=True), "customer_account")
    second = _instance(db, make_customer("c-2", active=True), "customer_account")
    with db.session() as s:
        before_ids = set(s.scalars(select(TransitionRecord.id)))
    seen, stop = _statements(db)
    try:
        with db.session() as s:
            one = fire_event(s, EventRequest("t-1", "lock", first.id, LOCK), SUPPORT, NOW)
        cold = list(seen)
        seen.clear()
        with db.session() as s:
            two = fire_event(s, EventRequest("t-1", "lock", second.id, LOCK), SUPPORT, NOW)
        warm = list(seen)
    finally:
        stop()
    assert one.ok and two.ok
    assert len(cold) == 3 and "FOR UPDATE" in cold[1] and "governor_event_load" not in cold[0], cold
    assert len(warm) == 2 and "governor_event_load" in warm[0], warm
    assert "FOR UPDATE OF t" in warm[1], warm[1]
    applied = [d for d in two.body["decisions"] if d["status"] == "applied"]
    assert transitions._RESERVE_HINTS["lock"][0] == len(applied)
    with db.session() as s:
        assert verify_tenant(s, "t-1").ok
        rows = s.execute(
            select(TransitionRecord.id, TransitionRecord.event, TransitionRecord.cause_id).where(
                TransitionRecord.customer_id == "c-2", TransitionRecord.occurred_at == NOW
            )
        ).all()
    written = [r for r in rows if r.id not in before_ids]
    assert len(written) == len(applied) and written[0].event == "lock"
    assert all(r.cause_id in {w.id for w in written} for r in written[1:])  # causes name reserved ids
    assert _chain_seqs(db, "t-1") == list(range(1, len(_chain_seqs(db, "t-1")) + 1))


@pytest.mark.parametrize("commit", [False, True], ids=["caller-commits", "write-commits"])
def test_a_chain_that_moved_after_the_load_is_chained_again_onto_its_locked_head(
    db: Database, make_customer: Callable[..., str], monkeypatch: pytest.MonkeyPatch, commit: bool
) -> None:
    """Another transaction appends to the tenant's chain between the event's load and its write: the
    conditional write finds the head moved and writes nothing, and the event's entries are chained
    onto the head that statement locked and written with the next one. When the write was to
    commit (``commit=True``), it committed nothing and its locks are gone: the event starts again
    from its load, planned anew, and this time locks the head before writing. Nothing is lost or
    doubled either way."""
    from webapp import audit
    from webapp.services import transitions
    from webapp.services.facts import world_facts

    monkeypatch.setattr(transitions, "_RESERVE_HINTS", {"lock": (8, 8)})
    account = _instance(db, make_customer("c-1", active=True), "customer_account")
    before = _chain_seqs(db, "t-1")

    planned: list[int] = []

    def meanwhile(session: object, snapshot: object, target: object, event: str) -> object:
        planned.append(1)
        if len(planned) == 1:
            with db.session() as other:  # commits before the event writes
                audit.append(
                    other, "t-1", actor="u-auditor", role="compliance", action="audit_read", occurred_at=NOW
                )
        return world_facts(session, snapshot, target, event)

    seen, stop = _statements(db)
    try:
        with db.session() as s:
            result = fire_event(
                s,
                EventRequest("t-1", "lock", account.id, LOCK),
                SUPPORT,
                NOW,
                facts_hook=meanwhile,
                commit=commit,
            )
    finally:
        stop()
    assert result.ok, result.body
    assert len(planned) == (2 if commit else 1)
    writes = [sql for sql in seen if "jsonb_to_recordset" in sql and "INSERT INTO" in sql]
    assert len(writes) == 2 and "FOR UPDATE OF t" in writes[0] and "FOR UPDATE OF t" not in writes[1]
    after = _chain_seqs(db, "t-1")
    assert after == list(range(1, len(after) + 1))
    with db.session() as s:
        assert verify_tenant(s, "t-1").ok
        actions = s.execute(
            select(AuditEntry.seq, AuditEntry.action)
            .where(AuditEntry.seq > len(before))
            .order_by(AuditEntry.seq)
        ).all()
        history = s.scalar(
            select(func.count()).select_from(TransitionRecord).where(TransitionRecord.customer_id == "c-1")
        )
    assert actions[0].action == "audit_read"  # the other transaction's entry came first
    # The tenant is marked contended: its next event locks the head up front instead of reserving.
    other = _instance(db, make_customer("c-2", active=True), "customer_account")
    seen, stop = _statements(db)
    try:
        with db.session() as s:
            assert fire_event(s, EventRequest("t-1", "lock", other.id, LOCK), SUPPORT, NOW).ok
    finally:
        stop()
    assert len(seen) == 3 and "governor_event_load" not in seen[0] and "FOR UPDATE" in seen[1], seen
    applied = [d for d in result.body["decisions"] if d["status"] == "applied"]
    assert [a.action for a in actions[1:]].count("transition") == len(applied)
    assert history is not None and history >= len(applied)


def test_an_event_needing_more_than_its_reservation_allocates_as_before(
    db: Database, make_customer: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hint too small for this plan (one history id for a lock's cascade): the reserved ids are
    left (a gap in the sequence) and the event allocates and locks the head in a round trip of its
    own; the hint grows to what the plan needed."""
    from webapp.services import transitions

    monkeypatch.setattr(transitions, "_RESERVE_HINTS", {"lock": (1, 0)})
    account = _instance(db, make_customer("c-1", active=True), "customer_account")
    seen, stop = _statements(db)
    try:
        with db.session() as s:
            result = fire_event(s, EventRequest("t-1", "lock", account.id, LOCK), SUPPORT, NOW)
    finally:
        stop()
    applied = [d for d in result.body["decisions"] if d["status"] == "applied"]
    assert result.ok and len(applied) > 1
    assert len(seen) == 3 and "governor_event_load" in seen[0] and "FOR UPDATE" in seen[1], seen
    assert "FOR UPDATE OF t" not in seen[2]
    assert transitions._RESERVE_HINTS["lock"][0] == len(applied)
    with db.session() as s:
        assert verify_tenant(s, "t-1").ok
