"""Transitions/s through the one transition service against raw psycopg INSERTs/s, 4 threads each.

Builds a fresh PostgreSQL database with 4 tenants and ``--customers`` active customers per tenant
(signed up and onboarded through the service). Then, in the same run:

* ours: 4 threads, one tenant each, cycle over their customers sending ``lock`` and then ``unlock``
  (support; the unlock approved by a manager) through ``fire_event``, one database transaction per
  event: plan with its cascades (the lock suspends the entitlements and logs a security event; the
  unlock lifts the hold), row locks, new states, history rows, the audit chain, due timers,
  outbox rows for the effects, commit. Every event really applies. Counted: applied transitions
  (decisions), and events;
* baseline: 4 threads, one connection each, each transaction one ``INSERT`` of an audit row of
  the same shape (same columns, a payload of the same size, precomputed hashes) and a commit.

Each side runs for ``--seconds``; the two alternate ``--rounds`` times and the best round of each
is kept. Prints one JSON line::

    {"bench": "service", "ours": <transitions/s>, "baseline": <inserts/s>, "ratio": ours/baseline,
     "target": 0.33, "events_per_second": ..., "transitions_per_event": ...}

Run: ``.venv/bin/python -m bench.service [--customers N] [--seconds S] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import psycopg
from sqlalchemy import select

from bench.audit import create_database, drop_database
from webapp import audit
from webapp.db import Database
from webapp.models import GovernorInstance
from webapp.runtime import ready_process
from webapp.services.setup import activate_customer, ensure_catalog, ensure_tenant, signup_customer
from webapp.services.transitions import Actor, EventRequest, fire_event

THREADS = 4
SUPPORT = Actor("bench-support", "support")
LOCK = {"reason_code": "compromised_account", "reason": "customer reports an account takeover"}
UNLOCK = {
    "verification_method": ["document", "phone"],
    "verifier_id": "bench-compliance",
    "reason": "identity confirmed by document and phone",
}


def _now() -> datetime:
    return datetime.now(UTC)


def setup(db: Database, customers: int) -> dict[str, list[str]]:
    """Tenants and active customers through the service; returns each tenant's account instance ids."""
    now = _now()
    with db.session() as s:
        ensure_catalog(s, now)
    accounts: dict[str, list[str]] = {}
    for t in range(THREADS):
        tenant = f"bench-t{t}"
        with db.session() as s:
            ensure_tenant(s, tenant, now)
        for c in range(customers):
            cid = f"bench-c{t}-{c}"
            with db.session() as s:
                signup_customer(
                    s,
                    tenant,
                    cid,
                    name="Bench Customer",
                    email=f"{cid}@example.test",
                    tier="starter",
                    now=now,
                )
                activate_customer(s, tenant, cid, now=now)
        with db.session() as s:
            accounts[tenant] = list(
                s.scalars(
                    select(GovernorInstance.id)
                    .where(
                        GovernorInstance.tenant_id == tenant, GovernorInstance.governor == "customer_account"
                    )
                    .order_by(GovernorInstance.id)
                )
            )
    return accounts


def _threads(work: Callable[[int, float], tuple[int, int]], seconds: float) -> tuple[int, int, float]:
    """Run ``work(thread, deadline)`` in 4 threads released together; (units, events, seconds)."""
    barrier = threading.Barrier(THREADS + 1)
    results: list[tuple[int, int]] = [(0, 0)] * THREADS
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait()
            results[i] = work(i, time.perf_counter() + seconds)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return sum(r[0] for r in results), sum(r[1] for r in results), elapsed


def service_round(
    db: Database, accounts: dict[str, list[str]], seconds: float, locked: set[str]
) -> tuple[int, int, float]:
    """4 threads of lock/unlock events through fire_event; (transitions, events, seconds)."""
    tenants = sorted(accounts)

    def work(i: int, deadline: float) -> tuple[int, int]:
        tenant = tenants[i]
        ids = accounts[tenant]
        transitions = events = 0
        n = 0
        while time.perf_counter() < deadline:
            iid = ids[n % len(ids)]
            n += 1
            unlocking = iid in locked
            with db.session() as s:
                result = fire_event(
                    s,
                    EventRequest(
                        tenant, "unlock" if unlocking else "lock", iid, UNLOCK if unlocking else LOCK
                    ),
                    SUPPORT,
                    _now(),
                    approved_by="bench-manager" if unlocking else None,
                    commit=True,  # as the JSON API applies an event: its transaction ends with it
                )
            if result.status != 200:
                raise RuntimeError(f"{iid}: {result.body}")
            if unlocking:
                locked.discard(iid)
            else:
                locked.add(iid)
            transitions += sum(1 for d in result.body["decisions"] if d["status"] == "applied")
            events += 1
        return transitions, events

    return _threads(work, seconds)


def baseline_round(url: str, seconds: float, start_seq: list[int]) -> tuple[int, int, float]:
    """4 threads, each its own connection: INSERT one audit-shaped row, commit; (rows, rows, seconds)."""
    payload = audit.canonical_payload(
        {
            "transition_id": 123456,
            "governor": "customer_account",
            "event": "lock",
            "row": "A11",
            "from": "active",
            "to": "locked",
            "cascade": None,
            "cause_transition_id": None,
            "approval_id": None,
            "reason_sha256": "9" * 64,
        }
    )
    sql = (
        "INSERT INTO audit_entries (tenant_id, seq, occurred_at, actor, role, action, customer_id,"
        " instance_id, payload, prev_hash, hash) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
    )

    def work(i: int, deadline: float) -> tuple[int, int]:
        n = 0
        with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
            while time.perf_counter() < deadline:
                start_seq[i] += 1
                conn.execute(
                    sql,
                    (
                        f"raw-t{i}",
                        start_seq[i],
                        _now(),
                        "bench-support",
                        "support",
                        "transition",
                        f"bench-c{i}-0",
                        "cust-0123456789abcdef0123",
                        payload,
                        "a" * 64,
                        "b" * 64,
                    ),
                )
                conn.commit()
                n += 1
        return n, n

    return _threads(work, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=12, help="active customers per tenant")
    parser.add_argument("--seconds", type=float, default=6.0, help="length of one measured round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the bench database")
    args = parser.parse_args()
    url = create_database()
    db = Database(url, pool_size=THREADS + 2)
    try:
        accounts = setup(db, args.customers)
        ready_process()  # as a serving process does once it is ready (webapp.runtime)
        locked: set[str] = set()
        start_seq = [0] * THREADS
        service_round(db, accounts, 1.0, locked)  # warm-up: caches, prepared statements
        baseline_round(url, 1.0, start_seq)
        best_ours = best_events = best_base = 0.0
        for _ in range(args.rounds):
            transitions, events, seconds = service_round(db, accounts, args.seconds, locked)
            if transitions / seconds > best_ours:
                best_ours, best_events = transitions / seconds, events / seconds
            rows, _, seconds = baseline_round(url, args.seconds, start_seq)
            best_base = max(best_base, rows / seconds)
        with db.session() as s:
            chains_ok = all(audit.verify_tenant(s, t).ok for t in accounts)
        print(
            json.dumps(
                {
                    "bench": "service",
                    "ours": round(best_ours),
                    "baseline": round(best_base),
                    "ratio": round(best_ours / best_base, 3),
                    "target": 0.33,
                    "events_per_second": round(best_events),
                    "transitions_per_event": round(best_ours / best_events, 2) if best_events else None,
                    "threads": THREADS,
                    "chains_verified": chains_ok,
                    "loadavg": round(os.getloadavg()[0], 1),
                }
            )
        )
    finally:
        db.dispose()
        if not args.keep:
            drop_database(url)


if __name__ == "__main__":
    main()
