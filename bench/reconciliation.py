"""Payment reconciliation (B08): settlement lines imported/s, invoices reconciled/s, and an idle pass.

Both sides archive the same kind and number of paid invoices (payment_received, paid two days ago, one
processor charge each) through the same service path (``fire_event`` as the system, one transaction
per invoice). Ours is ``reconcile_due`` after ``import_settlements``: it finds the candidates, matches
each against the imported settlement lines (one query per batch, and again under the lock in the
world facts) and fires. The baseline fires the same event on the other side's invoices with a facts
hook that simply says the processor matches (no import, no lookup): the cost of the transition alone.
``idle_ms`` is one reconciliation pass of the periodic sweep when nothing is new but ``--mismatched``
invoices are still waiting for finance (they are read and matched every pass, never fired).

Real PostgreSQL (a fresh database, dropped afterwards); no Redis (effects stay in the outbox). Prints
one JSON line::

    {"bench": "reconciliation", "ours": <invoices/s>, "baseline": <invoices/s>, "ratio": ours/baseline,
     "import_lines_per_s": ..., "idle_ms": ..., "invoices": N, "mismatched": M}

Run: ``.venv/bin/python -m bench.reconciliation [--invoices N] [--mismatched M]``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import create_engine, func, select, text

from webapp.config import Config
from webapp.jobs import install_runtime
from webapp.migrate import upgrade
from webapp.models import Customer, GovernorInstance, SandboxCharge, Tenant
from webapp.runtime import Runtime
from webapp.services.facts import world_facts
from webapp.services.reconciliation import import_settlements, reconcile_due
from webapp.services.transitions import SYSTEM, EventRequest, fire_event

PG_ADMIN_URL = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def make_invoices(rt: Runtime, prefix: str, count: int, paid_at: datetime, *, charged: bool) -> list[str]:
    """``count`` customers with one invoice each in payment_received; ``charged``: the processor has it."""
    ids = []
    with rt.db.session() as session:
        for n in range(count):
            customer, invoice, ref = f"{prefix}-c{n}", f"bill-{prefix}-{n}", f"ch_{prefix}_{n}"
            session.add(
                Customer(
                    id=customer,
                    tenant_id="t-1",
                    name="Bench",
                    email=f"{customer}@x.test",
                    tier="starter",
                    created_at=paid_at,
                )
            )
            session.flush()
            session.add(
                GovernorInstance(
                    id=invoice,
                    tenant_id="t-1",
                    customer_id=customer,
                    governor="billing",
                    state="payment_received",
                    entered_at=paid_at,
                    created_at=paid_at,
                    updated_at=paid_at,
                    data={
                        "invoice_id": invoice,
                        "currency": "USD",
                        "total_cents": 2999,
                        "paid_cents": 2999,
                        "payment_ids": [ref],
                        "paid_at": paid_at.isoformat(),
                    },
                    timers={},
                )
            )
            if charged:
                session.add(
                    SandboxCharge(
                        idempotency_key=f"key-{ref}",
                        kind="charge",
                        reference=ref,
                        customer_ref=customer,
                        amount_cents=2999,
                        currency="USD",
                        token="tok_visa",
                        status="succeeded",
                        created_at=paid_at,
                    )
                )
            ids.append(invoice)
    return ids


def baseline(rt: Runtime, invoices: list[str], now: datetime) -> float:
    """Seconds to fire B08 on ``invoices`` with the match taken for granted."""

    def matches(*args: Any) -> dict[str, Any]:
        return {**world_facts(*args), "processor_record_matches": True}

    started = time.perf_counter()
    for invoice in invoices:
        with rt.db.session() as session:
            result = fire_event(
                session,
                EventRequest("t-1", "accounting_reconciled", invoice),
                SYSTEM,
                now,
                settings=rt.settings,
                facts_hook=matches,
            )
        if result.status != 200:
            raise SystemExit(f"baseline refused {invoice}: {result.body}")
    return time.perf_counter() - started


def run(count: int, mismatched: int) -> dict[str, object]:
    """Build both sides, reconcile them, and return the JSON line's fields."""
    name = f"mc_bench_recon_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    rt: Runtime | None = None
    try:
        upgrade(url)
        rt = Runtime.from_config(Config.from_env({"DATABASE_URL": url}, testing=True))
        install_runtime(rt)
        now = datetime.now(UTC)
        paid_at = now - timedelta(days=2)
        with rt.db.session() as session:
            session.add(Tenant(id="t-1", name="Bench", created_at=paid_at))
        make_invoices(rt, "ours", count, paid_at, charged=True)
        make_invoices(rt, "left", mismatched, paid_at, charged=False)  # no processor record: for finance

        started = time.perf_counter()
        imported = import_settlements(rt, now)
        import_seconds = time.perf_counter() - started
        if imported.imported != count:
            raise SystemExit(f"imported {imported.imported} of {count}")
        started = time.perf_counter()
        report = reconcile_due(rt, now)
        ours_seconds = time.perf_counter() - started
        if report.reconciled != count or report.mismatched != mismatched:
            raise SystemExit(f"reconciled {report.as_dict()} (expected {count} / {mismatched} mismatched)")

        started = time.perf_counter()
        idle_import = import_settlements(rt, now)
        idle = reconcile_due(rt, now)
        idle_seconds = time.perf_counter() - started
        if idle_import.imported or idle.reconciled or idle.mismatched != mismatched:
            raise SystemExit(f"idle pass did work: {idle_import.as_dict()} {idle.as_dict()}")

        base = make_invoices(rt, "base", count, paid_at, charged=False)
        base_seconds = baseline(rt, base, now)
        with rt.db.session() as session:
            archived = session.scalar(
                select(func.count()).select_from(GovernorInstance).where(GovernorInstance.state == "archived")
            )
        if archived != 2 * count:
            raise SystemExit(f"expected {2 * count} archived invoices, found {archived}")
        ours_rate, base_rate = count / ours_seconds, count / base_seconds
        return {
            "bench": "reconciliation",
            "ours": round(ours_rate, 1),
            "baseline": round(base_rate, 1),
            "ratio": round(ours_rate / base_rate, 3),
            "import_lines_per_s": round(count / import_seconds, 1),
            "idle_ms": round(idle_seconds * 1000, 1),
            "invoices": count,
            "mismatched": mismatched,
        }
    finally:
        if rt is not None:
            rt.close()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invoices", type=int, default=500)
    parser.add_argument("--mismatched", type=int, default=1000)
    args = parser.parse_args()
    print(json.dumps(run(args.invoices, args.mismatched)))


if __name__ == "__main__":
    main()
