"""Customers/s of ``marketplace seed`` on PostgreSQL, against the same lives written event by event.

Both sides replay every life through the one transition service over simulated time (sign-up,
onboarding, purchases, invoices, usage, staff actions, every timer that falls due), on a fresh
migrated database each:

* ours: ``seed`` as the command runs it: the ``BulkStore`` keeps the customer being built in memory
  and writes its whole life in one statement, in ``--workers`` processes (one per tenant at most);
* baseline: the same seed with ``bulk=False``: every event locks, reads and writes the database as
  a console action does (4 round trips per event), in the same number of processes.

The baseline builds fewer customers (``--baseline-customers``): it is only a rate. Prints one JSON
line::

    {"bench": "seed", "ours": <customers/s>, "baseline": <customers/s>, "ratio": ours/baseline,
     "projected_100k_minutes": 100000 / ours / 60, "target_minutes": 30, ...}

Run: ``.venv/bin/python -m bench.seed [--customers N] [--baseline-customers M] [--workers W]``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import UTC, datetime

from bench.audit import create_database, drop_database
from webapp import audit
from webapp.db import Database
from webapp.services.seed import SeedOptions, SeedReport, seed

END = datetime(2026, 11, 1, tzinfo=UTC)


def run(customers: int, workers: int, bulk: bool, check: bool = False) -> tuple[float, SeedReport, bool]:
    """Seed ``customers`` into a fresh database; (customers/s, report, every chain verified)."""
    url = create_database()
    db = Database(url)
    try:
        options = SeedOptions(
            customers=customers, tenants=4, days=30, seed=1, workers=workers, end=END, bulk=bulk
        )
        started = time.perf_counter()
        report = seed(db, options)
        seconds = time.perf_counter() - started
        verified = True
        if check:
            with db.session() as s:
                verified = all(audit.verify_tenant(s, t).ok for t in audit.tenants_with_chains(s))
        return report.created / seconds, report, verified
    finally:
        db.dispose()
        drop_database(url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--baseline-customers", type=int, default=300)
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    args = parser.parse_args()
    baseline, _, _ = run(args.baseline_customers, args.workers, bulk=False)
    ours, report, verified = run(args.customers, args.workers, bulk=True, check=True)
    print(
        json.dumps(
            {
                "bench": "seed",
                "ours": round(ours, 1),
                "baseline": round(baseline, 1),
                "ratio": round(ours / baseline, 2),
                "projected_100k_minutes": round(100_000 / ours / 60, 1),
                "target_minutes": 30,
                "customers": report.created,
                "failed": report.failed,
                "events": report.events,
                "transitions": report.transitions,
                "timers_fired": report.timers_fired,
                "workers": args.workers,
                "chains_verified": verified,
                "loadavg": round(os.getloadavg()[0], 1),
            }
        )
    )


if __name__ == "__main__":
    main()
