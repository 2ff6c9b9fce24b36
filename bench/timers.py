"""Due timers fired per second: the batched sweep against one RQ job per timer.

Both sides fire the same kind and number of due timers on fresh customers (each customer signed up
25 h ago, so exactly one timer, its entitlement's first approval escalation, is due now), through the
same service path (claim, fire_event as the timer actor, relay the new outbox rows to Redis). Ours
is ``sweep_timers`` in one process (several of a tenant's timers per transaction); the baseline
enqueues one ``fire_timer(timer_id)`` RQ job per timer (one transaction each) and lets a real
``marketplace worker --burst`` (a forking RQ worker) run them. The baseline's time is the span from
its first job's start to its last job's end, so worker start-up and enqueueing are not counted
against it. Real PostgreSQL (a fresh database, dropped afterwards) and real Redis (a queue of its
own, emptied afterwards). Prints one JSON line::

    {"bench": "timers", "ours": <timers/s>, "baseline": <timers/s>, "ratio": ours/baseline, "target": 10}

Run: ``.venv/bin/python -m bench.timers [--timers N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from redis import Redis
from rq import Queue
from rq.job import Job
from sqlalchemy import create_engine, func, select, text, update

from governors.scenarios import onboard
from webapp.config import Config
from webapp.jobs import enqueue_timer, install_runtime
from webapp.migrate import upgrade
from webapp.models import DueTimer, GovernorInstance, OutboxMessage
from webapp.runtime import Runtime
from webapp.services.setup import ensure_catalog, ensure_tenant, run_step, signup_customer
from webapp.services.timers import sweep_timers

PG_ADMIN_URL = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
ROOT = Path(__file__).resolve().parents[1]


def make_customers(rt: Runtime, tenant: str, count: int, signed_up: datetime) -> None:
    """``count`` fresh starter customers of ``tenant``, signed up and through KYC at ``signed_up``.

    KYC starts the entitlement's approval clock (X18) and the entitlement is left pending, so 25 h
    later exactly one timer per customer is due: ``approval_escalation_1``.
    """
    with rt.db.session() as session:
        ensure_tenant(session, tenant, signed_up)
        ensure_catalog(session, signed_up)
    for n in range(count):
        with rt.db.session() as session:
            signup_customer(
                session,
                tenant,
                f"{tenant}-c{n}",
                name="Bench Customer",
                email=f"{tenant}-c{n}@example.test",
                tier="starter",
                now=signed_up,
            )
        with rt.db.session() as session:
            account = session.scalars(
                select(GovernorInstance.id).where(
                    GovernorInstance.customer_id == f"{tenant}-c{n}",
                    GovernorInstance.governor == "customer_account",
                )
            ).one()
            for step in onboard(f"kyc-{tenant}-c{n}"):
                run_step(session, step, tenant_id=tenant, now=signed_up, instance_id=account)


def due_ids(rt: Runtime, tenant: str, now: datetime) -> list[int]:
    """The ids of ``tenant``'s timers due at ``now``."""
    with rt.db.session() as session:
        return list(
            session.scalars(
                select(DueTimer.id)
                .where(DueTimer.tenant_id == tenant, DueTimer.due_at <= now)
                .order_by(DueTimer.id)
            )
        )


def settle_outbox(rt: Runtime) -> None:
    """Mark the set-up's outbox rows delivered: the bench measures timers, not the sign-up effects."""
    with rt.db.session() as session:
        session.execute(
            update(OutboxMessage).where(OutboxMessage.delivered_at.is_(None)).values(delivered_at=func.now())
        )


def run(count: int) -> dict[str, object]:
    """Build both sides, fire them, and return the JSON line's fields."""
    name = f"mc_bench_timers_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    queue_name = f"bench-timers-{uuid.uuid4().hex[:8]}"
    redis = Redis.from_url(REDIS_URL)
    queue = Queue(queue_name, connection=redis)
    rt: Runtime | None = None
    try:
        upgrade(url)
        config = Config.from_env({"DATABASE_URL": url, "REDIS_URL": REDIS_URL}, testing=True)
        rt = Runtime.from_config(config)
        rt.extras["queue_name"] = queue_name
        install_runtime(rt)
        signed_up = datetime.now(UTC) - timedelta(hours=25)
        make_customers(rt, "bench-ours", count, signed_up)
        make_customers(rt, "bench-rq", count, signed_up)
        settle_outbox(rt)
        now = datetime.now(UTC)
        ours_ids, rq_ids = due_ids(rt, "bench-ours", now), due_ids(rt, "bench-rq", now)
        if len(ours_ids) != count or len(rq_ids) != count:
            raise SystemExit(f"expected {count} due timers per side, got {len(ours_ids)} and {len(rq_ids)}")

        # Ours: the batched sweep (only the first side's timers are due for it: the other side's are
        # claimed by the baseline afterwards, so the sweep is limited to the first `count`).
        started = time.perf_counter()
        report = sweep_timers(rt, now, batch=count)
        ours_seconds = time.perf_counter() - started
        if report.fired != count:
            raise SystemExit(f"sweep fired {report.fired} of {count}: {report.as_dict()} {report.errors[:3]}")
        queue.delete(delete_jobs=True)

        # Baseline: one RQ job per timer, run by a real forking worker in burst mode.
        jobs = [job for job in (enqueue_timer(rt, timer_id) for timer_id in rq_ids) if job is not None]
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "REDIS_URL": REDIS_URL,
            "MARKETPLACE_QUEUE": queue_name,
            "SECRET_KEY": "bench-only-secret",
        }
        subprocess.run(
            [str(Path(sys.executable).parent / "marketplace"), "worker", "--burst"],
            env=env,
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        fetched = [j for j in Job.fetch_many([j.id for j in jobs], connection=redis) if j is not None]
        fired = [j for j in fetched if (j.return_value() or {}).get("outcome") == "fired"]
        if len(fired) != count:
            raise SystemExit(f"the RQ baseline fired {len(fired)} of {count}")
        first = min(j.started_at for j in fetched if j.started_at is not None)
        last = max(j.ended_at for j in fetched if j.ended_at is not None)
        baseline_seconds = (last - first).total_seconds()
    finally:
        queue.delete(delete_jobs=True)
        for registry in (
            queue.finished_job_registry,
            queue.failed_job_registry,
            queue.scheduled_job_registry,
        ):
            for job_id in registry.get_job_ids():
                Job(job_id, connection=redis).delete()
            redis.delete(registry.key)
        queue.delete(delete_jobs=True)
        if rt is not None:
            rt.close()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    ours = count / ours_seconds
    baseline = count / baseline_seconds
    return {
        "bench": "timers",
        "ours": round(ours, 1),
        "baseline": round(baseline, 1),
        "ratio": round(ours / baseline, 2),
        "target": 10,
        "timers": count,
    }


def main() -> None:
    """Run the benchmark and print its JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timers", type=int, default=100, help="due timers per side")
    args = parser.parse_args()
    print(json.dumps(run(args.timers)))


if __name__ == "__main__":
    main()
