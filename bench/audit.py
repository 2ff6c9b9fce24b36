"""Audit-chain verification rows/s against a plain streaming read of the same rows (PostgreSQL).

Builds a fresh database with one tenant's chain of N real entries (default 1,000,000): payloads
shaped like the transition service's, real chained SHA-256 hashes, loaded with COPY. Then, in the
same run and on the same rows:

* baseline: a plain streaming read of the rows (``SELECT <every column> ... ORDER BY seq``, the
  server streaming the result to psycopg in chunks of 2,000, default type loading), every row
  fetched and dropped;
* ours: ``webapp.audit.verify_tenant`` as ``marketplace audit verify`` runs it (one REPEATABLE READ
  snapshot; ``--jobs`` processes, one per CPU by default, each verifying a range of the chain in
  that snapshot): its own streaming read of the same rows (same transport, timestamps rendered by
  the server as the text the hash covers) plus rebuilding every canonical entry, hashing it and
  checking the links and the head row. The same verification by one process is measured too
  (``one_process``: its rows/s and ratio), so both are on record.

The two sides alternate ``--repeat`` times and the best run of each is kept (the machine may be
shared; ``loadavg`` in the output says how busy it was). Prints one JSON line::

    {"bench": "audit_verify", "ours": <rows/s>, "baseline": <rows/s>, "ratio": ours/baseline,
     "target": 0.5, "rows": N, "jobs": J, "one_process": {"ours": ..., "ratio": ...},
     "verify_seconds": <best wall time of one whole verification>, "verify_seconds_target": 10.0}

Run: ``.venv/bin/python -m bench.audit [--rows N] [--repeat R] [--keep]``
(``TEST_PG_ADMIN_URL`` names the server, default ``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
from sqlalchemy import create_engine, text

from webapp import audit
from webapp.db import Database
from webapp.migrate import upgrade

ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
TENANT = "bench-tenant"
START = datetime(2026, 1, 1, tzinfo=UTC)


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def create_database() -> str:
    """A fresh, migrated database; returns its SQLAlchemy URL."""
    name = f"bench_audit_{uuid.uuid4().hex[:8]}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    upgrade(url)
    return url


def drop_database(url: str) -> None:
    """Drop the bench database."""
    name = url.rsplit("/", 1)[1]
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def load_chain(url: str, rows: int) -> None:
    """COPY ``rows`` chained entries into the tenant's chain and set its head."""
    prev = audit.GENESIS
    actions = ("transition", "transition", "transition", "transition.rejected", "cascade.ignored")
    governors = ("customer_account", "subscription", "billing", "entitlement", "quota_sla")
    with psycopg.connect(_libpq(url)) as conn:
        with (
            conn.cursor() as cur,
            cur.copy(
                "COPY audit_entries (tenant_id, seq, occurred_at, actor, role, action, customer_id,"
                " instance_id, payload, prev_hash, hash) FROM STDIN"
            ) as copy,
        ):
            for seq in range(1, rows + 1):
                # Every seventh entry lands on a whole second (no microseconds), like real clocks do.
                moment = START + timedelta(seconds=seq * 3, microseconds=0 if seq % 7 == 0 else seq % 999_983)
                customer = f"cus-{seq % 50_000:06d}"
                instance = f"{governors[seq % 5][:4]}-{seq:020x}"
                payload = audit.canonical_payload(
                    {
                        "transition_id": seq,
                        "governor": governors[seq % 5],
                        "event": "payment_received",
                        "row": "B04",
                        "from": "payment_pending",
                        "to": "payment_received",
                        "cascade": None if seq % 3 else "X12",
                        "cause_transition_id": None if seq % 3 else seq - 1,
                        "approval_id": None,
                        "reason_sha256": None,
                    }
                )
                actor, role, action = ("system", "sys", actions[seq % 5])
                digest = hashlib.sha256(
                    audit.canonical_entry(
                        tenant_id=TENANT,
                        seq=seq,
                        occurred_at=moment,
                        actor=actor,
                        role=role,
                        action=action,
                        customer_id=customer,
                        instance_id=instance,
                        payload_json=payload,
                        prev_hash=prev,
                    )
                ).hexdigest()
                copy.write_row(
                    (TENANT, seq, moment, actor, role, action, customer, instance, payload, prev, digest)
                )
                prev = digest
        conn.execute(
            "INSERT INTO audit_heads (tenant_id, seq, hash) VALUES (%s, %s, %s)", (TENANT, rows, prev)
        )
        conn.commit()
    with psycopg.connect(_libpq(url), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE audit_entries")


PLAIN_SQL = (
    "SELECT tenant_id, seq, occurred_at, actor, role, action, customer_id, instance_id, payload,"
    " prev_hash, hash FROM audit_entries WHERE tenant_id = %s ORDER BY seq"
)


def plain_read(url: str, batch: int = 2000) -> tuple[int, float]:
    """Stream every row of the chain from the server and drop it; (rows, seconds)."""
    with psycopg.connect(_libpq(url)) as conn:
        t0 = time.perf_counter()
        n = 0
        for _row in conn.cursor().stream(PLAIN_SQL, (TENANT,), size=batch):
            n += 1
        return n, time.perf_counter() - t0


def verify(db: Database, jobs: int) -> tuple[int, float, audit.VerifyResult]:
    """``verify_tenant`` of the chain as ``marketplace audit verify`` runs it (one snapshot, ``jobs``
    processes); (rows, seconds, result)."""
    with db.sessions() as session:
        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        t0 = time.perf_counter()
        result = audit.verify_tenant(session, TENANT, jobs=jobs)
        seconds = time.perf_counter() - t0
        session.rollback()
    return result.checked, seconds, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the bench database")
    args = parser.parse_args()
    url = create_database()
    db = Database(url)
    try:
        t0 = time.perf_counter()
        load_chain(url, args.rows)
        load_seconds = time.perf_counter() - t0
        jobs = audit.default_verify_jobs()
        best_plain = best_verify = best_one = float("inf")
        for _ in range(args.repeat):
            n, seconds = plain_read(url)
            assert n == args.rows
            best_plain = min(best_plain, seconds)
            checked, seconds, result = verify(db, jobs)
            assert result.ok and checked == args.rows, result
            best_verify = min(best_verify, seconds)
            checked, seconds, result = verify(db, 1)
            assert result.ok and checked == args.rows, result
            best_one = min(best_one, seconds)
        ours, baseline = args.rows / best_verify, args.rows / best_plain
        print(
            json.dumps(
                {
                    "bench": "audit_verify",
                    "ours": round(ours),
                    "baseline": round(baseline),
                    "ratio": round(ours / baseline, 3),
                    "target": 0.5,
                    "rows": args.rows,
                    "jobs": jobs,
                    "one_process": {
                        "ours": round(args.rows / best_one),
                        "ratio": round(best_plain / best_one, 3),
                    },
                    "verify_seconds": round(best_verify, 2),
                    "verify_seconds_target": 10.0,
                    "load_seconds": round(load_seconds, 1),
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
