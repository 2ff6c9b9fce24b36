"""``fire_event(..., commit=True)``: the event's write carries its transaction's COMMIT (PostgreSQL).

For callers whose transaction ends with the event (the JSON API, the console's action form): the
write goes out as ``EXECUTE <psycopg's prepared statement>(doc); COMMIT`` in one round trip
(``webapp.db.execute_committing``), and the caller's own commit afterwards sends nothing. These tests
hold it to the same guarantees as the caller's commit: all or nothing, nothing written twice, the
chain intact.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from psycopg.pq import TransactionStatus
from sqlalchemy import delete, event, func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tests.services.conftest import NOW
from tests.services.test_transitions import LOCK, SUPPORT, UNLOCK, _chain_seqs, _instance, _statements
from webapp.audit import verify_tenant
from webapp.db import Database
from webapp.models import AuditEntry, Customer, IdempotencyRecord, OutboxMessage, TransitionRecord
from webapp.services.transitions import EventRequest, fire_event


def _status(session: Session) -> TransactionStatus:
    driver = session.connection().connection.driver_connection
    assert driver is not None
    return TransactionStatus(driver.pgconn.transaction_status)


def _locks(db: Database, customer: str) -> int:
    """Committed ``lock`` transitions of the customer, read on a connection of its own."""
    with db.session() as other:
        return (
            other.scalar(
                select(func.count())
                .select_from(TransitionRecord)
                .where(TransitionRecord.customer_id == customer, TransitionRecord.event == "lock")
            )
            or 0
        )


def _counts(db: Database) -> tuple[int, int, int]:
    with db.session() as s:
        return (
            s.scalar(select(func.count()).select_from(TransitionRecord)) or 0,
            s.scalar(select(func.count()).select_from(AuditEntry)) or 0,
            s.scalar(select(func.count()).select_from(OutboxMessage)) or 0,
        )


@pytest.mark.parametrize("reserved", [True, False], ids=["reserved-guarded", "allocated-unguarded"])
def test_the_write_commits_in_its_own_round_trip_and_the_callers_commit_sends_nothing(
    db: Database, make_customer: Callable[..., str], monkeypatch: pytest.MonkeyPatch, reserved: bool
) -> None:
    from webapp.services import transitions

    monkeypatch.setattr(transitions, "_RESERVE_HINTS", {"lock": (8, 8)} if reserved else {})
    account = _instance(db, make_customer("c-1", active=True), "customer_account")
    seen, stop = _statements(db)
    with db.session() as s:
        try:
            result = fire_event(s, EventRequest("t-1", "lock", account.id, LOCK), SUPPORT, NOW, commit=True)
        finally:
            stop()
        assert result.status == 200, result.body
        # Committed before the caller's commit: another connection sees it, and none is open here.
        assert _status(s) == TransactionStatus.IDLE
        assert _locks(db, "c-1") == 1
    assert len(seen) == (2 if reserved else 3), seen  # load, (allocate,) write: no COMMIT of its own
    with db.session() as s:
        assert verify_tenant(s, "t-1").ok
        applied = [d for d in result.body["decisions"] if d["status"] == "applied"]
        audited = s.scalar(
            select(func.count()).select_from(AuditEntry).where(AuditEntry.action == "transition")
        )
        assert audited is not None and audited >= len(applied)
    assert _chain_seqs(db, "t-1") == list(range(1, len(_chain_seqs(db, "t-1")) + 1))


def test_the_commit_joins_the_write_once_psycopg_has_prepared_it_and_again_after_a_deallocation(
    db: Database, make_customer: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Until psycopg has prepared the write on the connection (and again after it deallocated its
    statements, which it does after a rollback), the write goes the usual way and the COMMIT
    follows on its own; then they go together. Every event is committed when ``fire_event`` returns."""
    from webapp.services import transitions

    monkeypatch.setattr(transitions, "_RESERVE_HINTS", {"lock": (8, 8)})  # every write the same text
    accounts = [_instance(db, make_customer(f"c-{n}", active=True), "customer_account").id for n in range(5)]
    db.engine.dispose()  # a connection that has prepared nothing yet
    writes: list[str] = []

    def record(_conn: object, cursor: object, sql: str, *_rest: object) -> None:
        if "jsonb_to_recordset" in sql:
            writes.append(type(cursor).__name__)  # RawCursor: the usual way; ClientCursor: with COMMIT

    def lock(s: Session, n: int) -> None:
        result = fire_event(s, EventRequest("t-1", "lock", accounts[n], LOCK), SUPPORT, NOW, commit=True)
        assert result.ok, result.body
        assert _status(s) == TransactionStatus.IDLE and _locks(db, f"c-{n}") == 1

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        with db.session() as s:
            lock(s, 0)
            lock(s, 1)
            s.execute(select(func.count()).select_from(TransitionRecord))
            savepoint = s.begin_nested()
            savepoint.rollback()  # ROLLBACK TO SAVEPOINT: psycopg deallocates its statements
            s.commit()
            lock(s, 2)
            lock(s, 3)
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
    assert writes == ["RawCursor", "ClientCursor", "RawCursor", "ClientCursor"], writes
    with db.session() as s:
        assert verify_tenant(s, "t-1").ok


def test_a_committing_write_that_fails_commits_nothing(
    db: Database, make_customer: Callable[..., str]
) -> None:
    """The write fails on the server (an event id already taken): the COMMIT sent after it is skipped,
    the transaction rolls back with the caller's session, and the pooled connection stays usable."""
    account = _instance(db, make_customer(active=True), "customer_account")
    with db.session() as s:
        locking = EventRequest("t-1", "lock", account.id, LOCK, idempotency_key="k")
        assert fire_event(s, locking, SUPPORT, NOW, commit=True).ok
        s.execute(delete(IdempotencyRecord))  # the stored response expired; the event id did not
    before = _counts(db)
    unlock = EventRequest("t-1", "unlock", account.id, UNLOCK, idempotency_key="k")
    with pytest.raises(IntegrityError, match="event_id"), db.session() as s:
        fire_event(s, unlock, SUPPORT, NOW, approved_by="u-manager", commit=True)
    assert _counts(db) == before
    assert _instance(db, "c-1", "customer_account").state == "locked"
    with db.session() as s:
        assert verify_tenant(s, "t-1").ok
        again = fire_event(
            s, replace(unlock, idempotency_key="k2"), SUPPORT, NOW, approved_by="u-manager", commit=True
        )
        assert again.status == 200, again.body


def test_inside_a_savepoint_the_commit_is_left_to_the_caller(
    db: Database, make_customer: Callable[..., str]
) -> None:
    account = _instance(db, make_customer(active=True), "customer_account")
    with db.session() as s:
        with s.begin_nested():
            result = fire_event(s, EventRequest("t-1", "lock", account.id, LOCK), SUPPORT, NOW, commit=True)
            assert result.ok
        assert _status(s) == TransactionStatus.INTRANS
        assert _locks(db, "c-1") == 0
        s.rollback()
    assert _locks(db, "c-1") == 0
    assert _instance(db, "c-1", "customer_account").state == "active"


def test_changes_the_session_made_before_the_event_commit_with_it(
    db: Database, make_customer: Callable[..., str]
) -> None:
    """An ORM change made before the event is flushed by its load and committed by its write: both or
    neither, as with the caller's commit."""
    account = _instance(db, make_customer(active=True), "customer_account")
    with db.session() as s:
        customer = s.get(Customer, "c-1")
        assert customer is not None
        customer.name = "Ada Renamed"  # pending, not flushed
        s.execute(update(Customer).where(Customer.id == "c-0").values(name="nobody"))  # no such row
        assert fire_event(s, EventRequest("t-1", "lock", account.id, LOCK), SUPPORT, NOW, commit=True).ok
        assert _status(s) == TransactionStatus.IDLE
        with db.session() as other:
            assert other.get(Customer, "c-1").name == "Ada Renamed"  # type: ignore[union-attr]
    assert _locks(db, "c-1") == 1


@pytest.mark.parametrize("keyed", [False, True], ids=["no-key", "idempotency-key"])
def test_an_event_is_two_queries_on_the_wire_once_its_write_is_prepared(
    db: Database,
    make_customer: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    keyed: bool,
) -> None:
    """What libpq sends for an event, once psycopg has prepared its write on the connection: the
    BEGIN with the event's planner settings, its load (and its key's record, read after the load's
    locks), then the write with the COMMIT. Nothing else: no Parse, no Bind, no COMMIT of its own."""
    from psycopg import pq

    from webapp.services import transitions

    monkeypatch.setattr(transitions, "_RESERVE_HINTS", {"lock": (8, 8)})
    accounts = [_instance(db, make_customer(f"c-{n}", active=True), "customer_account").id for n in range(3)]

    def lock(s: Session, n: int) -> None:
        request = EventRequest("t-1", "lock", accounts[n], LOCK, idempotency_key=f"k-{n}" if keyed else None)
        assert fire_event(s, request, SUPPORT, NOW, commit=True).ok

    trace = tmp_path / "libpq.trace"
    with db.session() as s:
        lock(s, 0)
        lock(s, 1)  # the write is prepared by now
        driver = s.connection().connection.driver_connection
        assert driver is not None
        with open(trace, "w") as out:
            driver.pgconn.trace(out.fileno())
            driver.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
            try:
                lock(s, 2)
            finally:
                driver.pgconn.untrace()
    sent = [line.split("\t")[2] for line in trace.read_text().splitlines() if line.startswith("F")]
    assert sent == ["Query", "Query"], sent
    queries = [line for line in trace.read_text().splitlines() if line.startswith("F")]
    assert "BEGIN" in queries[0] and "SET LOCAL enable_seqscan = off" in queries[0]
    assert "governor_event_load" in queries[0]
    assert ("FROM idempotency_records" in queries[0]) == keyed
    assert "EXECUTE _pg3_" in queries[1] and queries[1].rstrip('"').endswith("; COMMIT")
    assert _locks(db, "c-2") == 1


@pytest.mark.parametrize("commit", [False, True], ids=["caller-commits", "write-commits"])
def test_the_events_planner_settings_end_with_its_transaction(
    db: Database, make_customer: Callable[..., str], commit: bool
) -> None:
    account = _instance(db, make_customer(active=True), "customer_account")
    show = (
        "SELECT current_setting('enable_seqscan'), current_setting('plan_cache_mode'),"
        " current_setting('enable_mergejoin')"
    )
    with db.session() as s:
        assert fire_event(s, EventRequest("t-1", "lock", account.id, LOCK), SUPPORT, NOW, commit=commit).ok
        inside = s.execute(text(show)).one()
        s.commit()
        after = s.execute(text(show)).one()
    # Within the event's transaction the settings hold; the next transaction has the defaults.
    assert tuple(inside) == (("on", "auto", "on") if commit else ("off", "force_generic_plan", "off"))
    assert tuple(after) == ("on", "auto", "on")


def test_the_events_write_touches_every_row_by_key(db: Database, make_customer: Callable[..., str]) -> None:
    """The write with every part present, planned as an event's transaction plans it: index probes
    in nested loops, never a table or index read through (the tables here are small, as a young
    marketplace's are, which is when the planner would otherwise scan them)."""
    from sqlalchemy.dialects import postgresql

    from webapp.db import simple_query
    from webapp.services.transitions import _KEYED_PLANS, _WRITES

    make_customer(active=True)
    every = [w.key for w in _WRITES.writes] + ["expect"]
    sql = _WRITES.sql(postgresql.dialect(), every)
    with db.session() as s:
        connection = s.connection()
        simple_query(connection, _KEYED_PLANS + "SELECT 1", ())
        driver = connection.connection.driver_connection
        assert driver is not None
        driver.execute("PREPARE keyed_write_check(text) AS " + sql)
        plan = "\n".join(r[0] for r in driver.execute("EXPLAIN EXECUTE keyed_write_check('{}')"))
        driver.execute("DEALLOCATE keyed_write_check")
        s.rollback()
    for scan in ("Seq Scan", "Merge Join", "Hash Join", "Bitmap"):
        assert scan not in plan, plan
    assert plan.count("Index Scan") >= 4, plan  # instances, heads (guard and move), timers


def test_a_keyed_replay_read_with_the_load_returns_the_stored_answer_and_a_new_body_is_409(
    db: Database, make_customer: Callable[..., str]
) -> None:
    """The key is read once, in the load's query after its locks: the same key and body answer what
    was stored (nothing applied again), another body is 409, and nothing changes."""
    from webapp.services.transitions import TransitionError

    account = _instance(db, make_customer(active=True), "customer_account")
    request = EventRequest("t-1", "lock", account.id, LOCK, idempotency_key="once")
    with db.session() as s:
        first = fire_event(s, request, SUPPORT, NOW, commit=True)
    before = _counts(db)
    with db.session() as s:
        again = fire_event(s, request, SUPPORT, NOW, commit=True)
    assert first.status == again.status == 200 and again.replayed and again.body == first.body
    assert _counts(db) == before
    other = replace(request, payload={**LOCK, "reason": "another reason"})
    with pytest.raises(TransitionError) as caught, db.session() as s:
        fire_event(s, other, SUPPORT, NOW, commit=True)
    assert caught.value.status == 409 and caught.value.code == "idempotency_key_reused"
    assert _counts(db) == before and _locks(db, "c-1") == 1
