"""The outbox relay: inline with fakeredis, then against the real Redis and a real worker process."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta

import fakeredis
import pytest
from redis import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from rq import Queue
from rq.job import Job, JobStatus
from sqlalchemy import func, select, update

from tests.jobs.conftest import (
    deliver_invoice,
    issued_invoice,
    make_runtime,
    new_customer,
    run_burst_worker,
    utcnow,
    worker_env,
)
from webapp.db import Database
from webapp.jobs import (
    SWEEP_EVERY,
    after_commit,
    get_queue,
    jobs_for_customer,
    periodic_sweep,
    relay_outbox,
    rq_job_id,
    schedule_periodic,
)
from webapp.models import GovernorInstance, OutboxMessage, TransitionRecord
from webapp.models.background import EffectRun, SandboxCharge
from webapp.runtime import Runtime


def _count(db: Database, model: type, *where: object) -> int:
    with db.session() as s:
        return int(s.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def _undelivered(db: Database) -> int:
    return _count(db, OutboxMessage, OutboxMessage.delivered_at.is_(None))


# --------------------------------------------------------------------------- unit: fakeredis, inline


def test_inline_queue_runs_the_effect_with_the_customers_ids_in_meta(rt: Runtime) -> None:
    fake = fakeredis.FakeRedis()
    rt.extras.update(queue=Queue("inline", connection=fake, is_async=False), atomic_unique=False)
    now = utcnow()
    customer = new_customer(rt, "c-1", now=now)
    invoice = issued_invoice(rt, customer, "tok_visa", now)
    (charge,) = deliver_invoice(rt, invoice, now)
    report = after_commit(rt, [charge])
    assert report is not None and (report.delivered, report.pending) == (1, 0)
    with rt.db.session() as s:
        row = s.get(OutboxMessage, charge)
        assert row is not None and row.delivered_at is not None
        job = Job.fetch(rq_job_id(row.job_id), connection=fake)
        assert job.get_status() == "finished"
        assert job.meta == {
            "tenant_id": "t-1",
            "customer_id": customer,
            "governor": "billing",
            "instance_id": invoice,
            "outbox_id": charge,
            "effect": "billing_charge",
        }
        assert s.get(GovernorInstance, invoice).state == "payment_received"  # type: ignore[union-attr]
    # The charge's own follow-ups (revenue, receipt) were relayed by the job's after_commit and ran too.
    assert _count(rt.db, EffectRun, EffectRun.effect == "billing_recognise_revenue") == 1


def test_jobs_for_customer_lists_only_that_customers_jobs(rt: Runtime) -> None:
    fake = fakeredis.FakeRedis()
    queue = Queue("listing", connection=fake)  # asynchronous: jobs stay queued
    rt.extras.update(queue=queue, atomic_unique=False)
    now = utcnow()
    for customer in ("c-1", "c-2"):
        new_customer(rt, customer, now=now)
    report = relay_outbox(rt)
    assert report.delivered == _count(rt.db, OutboxMessage) and report.delivered > 0
    with rt.db.session() as s:
        expected = {
            rq_job_id(j)
            for j in s.scalars(select(OutboxMessage.job_id).where(OutboxMessage.customer_id == "c-1"))
        }
    listed = jobs_for_customer(fake, "c-1", queue="listing")
    assert {j.id for j in listed} == expected and expected
    assert {j.status for j in listed} == {"queued"}
    assert all(j.meta["customer_id"] == "c-1" and j.meta["tenant_id"] == "t-1" for j in listed)
    assert jobs_for_customer(fake, "c-404", queue="listing") == []
    # A failed job and a scheduled one (a retry waiting for its turn) are listed too.
    failing, later = sorted(expected)[:2]
    job = Job.fetch(failing, connection=fake)
    queue.remove(job)
    job.set_status(JobStatus.FAILED)
    queue.failed_job_registry.add(job, exc_string="TransientProcessorError: timed out")
    queue.remove(later)
    queue.schedule_job(Job.fetch(later, connection=fake), utcnow() + timedelta(minutes=5))
    statuses = {j.id: (j.status, j.error) for j in jobs_for_customer(queue, "c-1")}
    assert statuses[failing][0] == "failed"
    assert statuses[later] == ("scheduled", None)
    assert len(statuses) == len(expected)


def test_relay_keeps_rows_when_redis_refuses_connections(rt: Runtime) -> None:
    server = fakeredis.FakeServer()
    server.connected = False
    rt.extras.update(queue=Queue("down", connection=fakeredis.FakeRedis(server=server)), atomic_unique=False)
    new_customer(rt, "c-1", now=utcnow())
    before = _undelivered(rt.db)
    report = relay_outbox(rt)
    assert report.delivered == 0 and report.pending == before and "ConnectionError" in (report.error or "")
    assert _undelivered(rt.db) == before
    server.connected = True
    assert relay_outbox(rt).delivered == before
    assert _undelivered(rt.db) == 0


# --------------------------------------------------------------------------- the real Redis and worker


def test_applied_effect_runs_exactly_once_even_when_relayed_twice(
    rt: Runtime, pg_url: str, redis_url: str, queue_name: str
) -> None:
    now = utcnow()
    customer = new_customer(rt, "c-1", now=now)
    relay_outbox(rt)  # the sign-up's own effects
    invoice = issued_invoice(rt, customer, "tok_visa", now)
    charges = deliver_invoice(rt, invoice, now)
    first = relay_outbox(rt)
    assert first.delivered >= 1 and first.error is None
    # A relay that died between the enqueue and its commit: the same rows go out again.
    with rt.db.session() as s:
        s.execute(update(OutboxMessage).values(delivered_at=None))
    again = relay_outbox(rt)
    assert again.delivered == 0 and again.duplicates == _count(rt.db, OutboxMessage)
    queue = get_queue(rt)
    with rt.db.session() as s:
        charge_job = rq_job_id(s.get(OutboxMessage, charges[0]).job_id)  # type: ignore[union-attr]
    assert queue.get_job_ids().count(charge_job) == 1

    run_burst_worker(worker_env(pg_url, redis_url, queue_name))

    assert Job.fetch(charge_job, connection=queue.connection).get_status() == "finished"
    with rt.db.session() as s:
        assert s.get(GovernorInstance, invoice).state == "payment_received"  # type: ignore[union-attr]
        assert s.scalar(select(func.count()).select_from(SandboxCharge)) == 1
        paid = s.scalar(
            select(func.count())
            .select_from(TransitionRecord)
            .where(TransitionRecord.event == "payment_received")
        )
        assert paid == 1
        # Every outbox row, including those the charge's feedback wrote, ran exactly once.
        outbox_jobs = set(s.scalars(select(OutboxMessage.job_id)))
        runs = list(s.scalars(select(EffectRun.job_id)))
        assert sorted(runs) == sorted(outbox_jobs)
        assert _undelivered(rt.db) == 0
    # Delivering once more changes nothing: the jobs are gone or done and the markers hold.
    with rt.db.session() as s:
        s.execute(update(OutboxMessage).values(delivered_at=None))
    relay_outbox(rt)
    run_burst_worker(worker_env(pg_url, redis_url, queue_name))
    assert _count(rt.db, SandboxCharge) == 1
    assert _count(rt.db, EffectRun) == len(outbox_jobs)


THROWAWAY_PORT = 6390


@pytest.fixture
def throwaway_redis() -> Iterator[int]:
    """A redis-server of this test's own on port 6390, shut down afterwards."""
    server = shutil.which("redis-server")
    assert server is not None, "redis-server is needed (Debian package redis-server; .ci/run uses it)"
    probe = Redis(port=THROWAWAY_PORT, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    taken = False
    with contextlib.suppress(Exception):
        taken = bool(probe.ping())
    assert not taken, f"port {THROWAWAY_PORT} is already taken by another Redis; stop it and rerun"
    start = [server, "--port", str(THROWAWAY_PORT), "--save", "", "--appendonly", "no", "--daemonize", "yes"]
    subprocess.run(start, check=True, capture_output=True)
    _wait_ping(probe, True)
    try:
        yield THROWAWAY_PORT
    finally:
        _shutdown(probe)


def _wait_ping(conn: Redis, up: bool) -> None:
    for _ in range(100):
        try:
            conn.ping()
            alive = True
        except Exception:
            alive = False
        if alive == up:
            return
        time.sleep(0.05)
    raise AssertionError(f"redis on {THROWAWAY_PORT} did not come {'up' if up else 'down'}")


def _shutdown(conn: Redis) -> None:
    # redis-py reports the closed connection of a successful SHUTDOWN as an error.
    with contextlib.suppress(Exception):
        conn.shutdown(nosave=True)
    _wait_ping(conn, False)


def test_redis_down_transactions_commit_and_the_outbox_delivers_once_it_is_back(
    db: Database, pg_url: str, queue_name: str, throwaway_redis: int
) -> None:
    url = f"redis://127.0.0.1:{throwaway_redis}/0"
    rt = make_runtime(pg_url, db, url, queue_name)
    from webapp.jobs import install_runtime

    install_runtime(rt)
    probe = Redis(port=throwaway_redis, retry=Retry(NoBackoff(), 0))
    _shutdown(probe)  # Redis goes away before any work is applied

    now = utcnow()
    customer = new_customer(rt, "c-1", now=now)
    invoice = issued_invoice(rt, customer, "tok_visa", now)
    charges = deliver_invoice(rt, invoice, now)
    report = after_commit(rt, charges)
    assert report is not None and report.delivered == 0 and report.pending == 1
    assert "ConnectionError" in (report.error or "")
    with rt.db.session() as s:  # the transactions committed; the work waits in the outbox
        assert s.get(GovernorInstance, invoice).state == "payment_pending"  # type: ignore[union-attr]
    waiting = _undelivered(db)
    assert waiting == _count(db, OutboxMessage) and waiting > 0

    subprocess.run(
        [
            "redis-server",
            "--port",
            str(throwaway_redis),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "yes",
        ],
        check=True,
        capture_output=True,
    )
    _wait_ping(probe, True)
    rt.extras.pop("redis", None)  # reconnect
    rt.extras.pop("queue_cache", None)
    delivered = relay_outbox(rt)
    assert (delivered.delivered, delivered.pending, delivered.error) == (waiting, 0, None)
    assert relay_outbox(rt).delivered == 0
    assert len(get_queue(rt).get_job_ids()) == waiting

    run_burst_worker(worker_env(pg_url, url, queue_name))
    with rt.db.session() as s:
        assert s.get(GovernorInstance, invoice).state == "payment_received"  # type: ignore[union-attr]
        assert s.scalar(select(func.count()).select_from(SandboxCharge)) == 1
        outbox_jobs = set(s.scalars(select(OutboxMessage.job_id)))
        assert sorted(s.scalars(select(EffectRun.job_id))) == sorted(outbox_jobs)


def test_periodic_sweep_books_one_next_run_and_does_the_relay_and_the_timers(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = get_queue(rt)
    # Job ids are global to the Redis database, which earlier tests' workers share, so this test works
    # in minutes far ahead that nothing else can have booked: its own, random, ten years on.
    ahead = utcnow() + timedelta(days=3650 + uuid.uuid4().int % 100_000)
    assert schedule_periodic(rt, ahead) is True
    assert schedule_periodic(rt, ahead) is False  # another worker booked the same minute: no second chain
    far_slot = int(ahead.timestamp()) // SWEEP_EVERY + 1
    assert queue.scheduled_job_registry.get_job_ids() == [f"periodic-sweep-{far_slot}"]

    sweep_at = ahead + timedelta(days=1)
    monkeypatch.setattr("webapp.jobs.utcnow", lambda: sweep_at)
    customer = new_customer(rt, "c-1", now=sweep_at - timedelta(days=8), active=False)
    waiting = _undelivered(rt.db)
    result = periodic_sweep()
    assert result["relay"]["delivered"] == waiting  # the timers' own effects go out right after their commits
    assert result["timers"]["fired"] >= 1 and result["timers"]["failed"] == 0
    with rt.db.session() as s:
        account = s.scalars(
            select(GovernorInstance).where(
                GovernorInstance.customer_id == customer, GovernorInstance.governor == "customer_account"
            )
        ).one()
        assert account.state == "deactivated"  # onboarding_timeout (7 d) fired
    assert _undelivered(rt.db) == 0
    next_slot = int(sweep_at.timestamp()) // SWEEP_EVERY + 1
    assert set(queue.scheduled_job_registry.get_job_ids()) == {
        f"periodic-sweep-{far_slot}",
        f"periodic-sweep-{next_slot}",  # the sweep booked its successor first
    }


def test_a_row_that_cannot_be_enqueued_does_not_hold_up_the_others(rt: Runtime) -> None:
    rt.extras.update(queue=Queue("poison", connection=fakeredis.FakeRedis()), atomic_unique=False)
    now = utcnow()
    with rt.db.session() as s:
        s.add(OutboxMessage(job_id="bad:1", tenant_id="t-1", job="no_such_job", args={}, created_at=now))
        s.add(
            OutboxMessage(
                job_id="fx:good:0",
                tenant_id="t-1",
                job="raise_alert",
                args={"level": "critical", "message": "m"},
                created_at=now,
            )
        )
    report = relay_outbox(rt)
    assert (report.delivered, report.failed) == (1, 1) and "no_such_job" in (report.error or "")
    with rt.db.session() as s:
        rows = {r.job_id: (r.delivered_at is not None, r.attempts) for r in s.scalars(select(OutboxMessage))}
    assert rows == {"bad:1": (False, 1), "fx:good:0": (True, 1)}
