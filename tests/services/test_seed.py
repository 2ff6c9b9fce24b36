"""``marketplace seed`` against PostgreSQL: deterministic lives through the real service, chains intact.

One small seed (24 customers, 3 tenants, 45 days) is built once for the module; the determinism
test wipes the database and builds it again.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select, text

from webapp import audit
from webapp.cli import main
from webapp.db import Database
from webapp.models import (
    AuditEntry,
    Base,
    Customer,
    DueTimer,
    GovernorInstance,
    OutboxMessage,
    StateSnapshot,
    TransitionRecord,
)
from webapp.services.seed import SeedOptions, SeedReport, customer_id, seed, states_digest

END = datetime(2026, 3, 17, 9, tzinfo=UTC)
_ID = re.compile(r"\b(?:[a-z]{4}-[0-9a-f]{20}|[0-9a-f]{32,64})\b")
OPTIONS = SeedOptions(customers=24, tenants=3, days=45, seed=5, end=END, batch=10)


def _wipe(db: Database) -> None:
    tables = ", ".join(f'"{t.name}"' for t in reversed(Base.metadata.sorted_tables))
    with db.engine.begin() as conn:
        conn.execute(text("ALTER TABLE audit_entries DISABLE TRIGGER USER"))
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        conn.execute(text("ALTER TABLE audit_entries ENABLE TRIGGER USER"))


def _states(db: Database) -> dict[str, list[tuple[str, str, int, int]]]:
    """Each customer's instances as (governor, state, state_seq, version), sorted (ids are random)."""
    out: dict[str, list[tuple[str, str, int, int]]] = {}
    with db.session() as s:
        rows = s.execute(
            select(
                GovernorInstance.customer_id,
                GovernorInstance.governor,
                GovernorInstance.state,
                GovernorInstance.state_seq,
                GovernorInstance.version,
            ).where(GovernorInstance.customer_id.is_not(None))
        ).all()
    for c, g, st, seq, version in rows:
        out.setdefault(str(c), []).append((g, st, seq, version))
    return {c: sorted(v) for c, v in sorted(out.items())}


@pytest.fixture(scope="module")
def seeded(database: Database) -> SeedReport:
    _wipe(database)
    return seed(database, OPTIONS)


def test_the_seed_builds_every_customer_through_the_service(database: Database, seeded: SeedReport) -> None:
    assert (seeded.created, seeded.failed, seeded.skipped) == (24, 0, 0), seeded.errors
    with database.session() as s:
        customers = s.scalars(select(Customer).order_by(Customer.id)).all()
        history = s.scalar(select(func.count()).select_from(TransitionRecord))
        snapshots = s.scalar(select(func.count()).select_from(StateSnapshot))
        outbox = s.scalar(select(func.count()).select_from(OutboxMessage))
        timer_rows = s.scalar(
            select(func.count()).select_from(TransitionRecord).where(TransitionRecord.role == "timer")
        )
        overdue = s.scalars(
            select(DueTimer).where(DueTimer.due_at <= END, DueTimer.customer_id.is_not(None))
        ).all()
    assert [c.id for c in customers] == [customer_id(5, i) for i in range(24)]
    assert Counter(c.tenant_id for c in customers) == {"tenant-01": 8, "tenant-02": 8, "tenant-03": 8}
    assert all(c.created_at <= END for c in customers)
    assert history == seeded.transitions + 12, "every applied step is a history row (+ the 3 SKUs' 4 rows)"
    assert history is not None and history > 24 * 15
    assert timer_rows == seeded.timers_fired and seeded.timers_fired > 24
    assert snapshots is not None
    assert outbox is not None and outbox > 0
    with database.session() as s:
        undelivered = s.scalar(
            select(func.count()).select_from(OutboxMessage).where(OutboxMessage.delivered_at.is_(None))
        )
    assert undelivered == 0, "the simulated history's effects are settled, not left for the workers"
    assert overdue == [], "every timer due before the end has fired"


def test_every_chain_verifies(database: Database, seeded: SeedReport) -> None:
    with database.session() as s:
        tenants = audit.tenants_with_chains(s)
        results = {t: audit.verify_tenant(s, t) for t in tenants}
        entries = s.scalar(select(func.count()).select_from(AuditEntry))
    assert set(tenants) == {"platform", "tenant-01", "tenant-02", "tenant-03"}
    assert all(r.ok for r in results.values()), results
    assert sum(r.checked for r in results.values()) == entries


def test_customers_are_spread_over_the_states_of_every_governor(
    database: Database, seeded: SeedReport
) -> None:
    with database.session() as s:
        rows = s.execute(
            select(GovernorInstance.governor, GovernorInstance.state).where(
                GovernorInstance.customer_id.is_not(None)
            )
        ).all()
    by_governor: dict[str, set[str]] = {}
    for governor, state in rows:
        by_governor.setdefault(governor, set()).add(state)
    assert set(by_governor) >= {
        "customer_account",
        "subscription",
        "entitlement",
        "billing",
        "quota_sla",
        "compliance_audit",
        "multi_tenant",
    }
    for governor in ("customer_account", "subscription", "entitlement", "billing"):
        assert len(by_governor[governor]) >= 3, (governor, by_governor[governor])
    assert len(by_governor["quota_sla"]) >= 2 and len(by_governor["compliance_audit"]) >= 2, by_governor
    assert {g: dict(c) for g, c in seeded.states.items()} == {
        g: dict(Counter(st for gg, st in rows if gg == g)) for g in by_governor
    }


def test_a_rerun_skips_existing_customers(database: Database, seeded: SeedReport) -> None:
    before = _states(database)
    again = seed(database, OPTIONS)
    assert (again.created, again.skipped, again.events) == (0, 24, 0)
    assert _states(database) == before


def test_the_same_seed_gives_the_same_states_and_another_seed_does_not(
    database: Database, seeded: SeedReport
) -> None:
    first = _states(database)
    with database.session() as s:
        digest = states_digest(s, first)
    _wipe(database)
    report = seed(database, OPTIONS)
    assert report.created == 24 and report.transitions == seeded.transitions
    assert _states(database) == first
    with database.session() as s:
        assert states_digest(s, first) == digest
    _wipe(database)
    other = seed(database, SeedOptions(**{**OPTIONS.__dict__, "seed": 6}))
    ids = [customer_id(6, i) for i in range(24)]
    with database.session() as s:
        assert other.created == 24 and states_digest(s, ids) != digest


def _lives(db: Database) -> dict[str, Any]:
    """Everything a seed wrote, less the random ids: each customer's history in order, each chain's
    entries in order, the due timers, the outbox, the snapshots and the final states."""
    with db.session() as s:
        history = s.execute(
            select(
                TransitionRecord.customer_id,
                TransitionRecord.governor,
                TransitionRecord.event,
                TransitionRecord.from_state,
                TransitionRecord.to_state,
                TransitionRecord.state_seq,
                TransitionRecord.actor,
                TransitionRecord.role,
                TransitionRecord.reason,
                TransitionRecord.changes,
                TransitionRecord.occurred_at,
            ).order_by(TransitionRecord.id)
        ).all()
        entries = s.execute(
            select(
                AuditEntry.tenant_id,
                AuditEntry.seq,
                AuditEntry.action,
                AuditEntry.actor,
                AuditEntry.occurred_at,
            ).order_by(AuditEntry.tenant_id, AuditEntry.seq)
        ).all()
        timers = s.execute(
            select(DueTimer.customer_id, DueTimer.governor, DueTimer.name, DueTimer.event, DueTimer.due_at)
        ).all()
        outbox = s.execute(
            select(
                OutboxMessage.customer_id, OutboxMessage.governor, OutboxMessage.job, OutboxMessage.created_at
            )
        ).all()
        snapshots = s.scalar(select(func.count()).select_from(StateSnapshot))
    by_customer: dict[str, list[Any]] = {}
    for row in history:
        # Instance ids are random: the ones a change names (a subscription's, keys made from ids) are
        # blanked.
        changes = _ID.sub("<id>", json.dumps(row.changes, sort_keys=True))
        by_customer.setdefault(str(row[0]), []).append((*row[1:9], changes, row[10]))
    return {
        "history": by_customer,
        "entries": [tuple(e) for e in entries],
        "timers": sorted(map(tuple, timers), key=str),
        "outbox": sorted(map(tuple, outbox), key=str),
        "snapshots": snapshots,
        "states": _states(db),
    }


def test_bulk_writes_change_where_rows_go_not_what_happens(database: Database) -> None:
    """The seed's BulkStore and the event-by-event database store give the same lives, row for row."""
    options = SeedOptions(customers=12, tenants=2, days=40, seed=8, end=END, batch=5)
    _wipe(database)
    bulk = seed(database, options)
    with_bulk = _lives(database)
    _wipe(database)
    direct = seed(database, SeedOptions(**{**options.__dict__, "bulk": False}))
    assert (bulk.created, bulk.events, bulk.transitions, bulk.timers_fired) == (
        direct.created,
        direct.events,
        direct.transitions,
        direct.timers_fired,
    )
    assert bulk.created == 12 and bulk.events > 12 * 5
    assert _lives(database) == with_bulk
    with database.session() as s:
        assert all(audit.verify_tenant(s, t).ok for t in audit.tenants_with_chains(s))


def test_cli_seed_prints_a_summary(database: Database, pg_url: str) -> None:
    _wipe(database)
    result = CliRunner(env={"DATABASE_URL": pg_url}).invoke(
        main,
        ["seed", "--customers", "3", "--tenants", "2", "--days", "10", "--seed", "9", "--end", "2026-03-01"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert '"created": 3' in result.stdout
    with database.session() as s:
        assert s.scalar(select(func.count()).select_from(Customer)) == 3
    bad = CliRunner(env={"DATABASE_URL": pg_url}).invoke(main, ["seed", "--customers", "0"])
    assert bad.exit_code == 2
