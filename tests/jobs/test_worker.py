"""A real ``marketplace worker`` whose work horse is killed with SIGKILL in the middle of a charge."""

from __future__ import annotations

import os
import signal

from rq.job import Job
from rq.worker import Worker
from sqlalchemy import func, select

from tests.jobs.conftest import (
    WorkerProcess,
    children_of,
    deliver_invoice,
    issued_invoice,
    new_customer,
    process_group,
    utcnow,
    wait_for,
    worker_env,
)
from webapp.jobs import get_queue, relay_outbox, rq_job_id
from webapp.models import GovernorInstance, OutboxMessage, TransitionRecord
from webapp.models.background import EffectRun, SandboxCharge
from webapp.runtime import Runtime


def test_killed_work_horse_is_retried_and_the_charge_happens_once(
    rt: Runtime, pg_url: str, redis_url: str, queue_name: str
) -> None:
    now = utcnow()
    customer = new_customer(rt, "c-1", now=now)
    invoice = issued_invoice(rt, customer, "tok_slow", now)
    (charge,) = deliver_invoice(rt, invoice, now)
    with rt.db.session() as s:  # only the charge matters here: the set-up's effects are settled
        for row in s.scalars(select(OutboxMessage).where(OutboxMessage.id != charge)):
            row.delivered_at = now
        outbox_job = s.get(OutboxMessage, charge).job_id  # type: ignore[union-attr]
    relay_outbox(rt)
    queue = get_queue(rt)
    job_id = rq_job_id(outbox_job)
    assert queue.get_job_ids() == [job_id]

    # tok_slow: the processor records the charge, then takes 600 s to answer.
    worker = WorkerProcess(worker_env(pg_url, redis_url, queue_name, SANDBOX_SLOW_SECONDS="600"))
    try:

        def charged_upstream() -> bool:
            with rt.db.session() as s:
                return bool(s.scalar(select(func.count()).select_from(SandboxCharge)))

        wait_for(charged_upstream, "the sandbox processor to record the charge")
        job = Job.fetch(job_id, connection=queue.connection)
        assert job.get_status() == "started"
        assert job.worker_name is not None
        registered = Worker.find_by_key(
            Worker.redis_worker_namespace_prefix + job.worker_name, connection=queue.connection
        )
        assert registered is not None and registered.pid == worker.pid
        # The work horse is the worker's child that leads its own process group (RQ calls setpgrp).
        (horse,) = [p for p in children_of(worker.pid) if process_group(p) == p]
        os.kill(horse, signal.SIGKILL)

        def finished() -> bool:
            with rt.db.session() as s:
                return s.get(EffectRun, outbox_job) is not None

        wait_for(finished, "the retried job to record the charge", timeout=120)
    finally:
        log = worker.stop()

    assert "Work-horse terminated unexpectedly" in log or "Work horse killed" in log, log[-3000:]
    job = Job.fetch(job_id, connection=queue.connection)
    assert job.get_status() == "finished" and job.retries_left == 2  # retried once (of 3)
    with rt.db.session() as s:
        charges = s.scalars(select(SandboxCharge)).all()
        assert [(c.kind, c.status, c.amount_cents, c.idempotency_key) for c in charges] == [
            ("charge", "succeeded", 2999, f"{invoice}:attempt:0")
        ]
        run = s.get(EffectRun, outbox_job)
        assert run is not None and (run.status, run.attempts) == ("done", 2)
        assert run.detail["replayed"] is True  # the retry got the processor's stored answer
        paid = s.scalars(select(TransitionRecord).where(TransitionRecord.event == "payment_received")).all()
        assert len(paid) == 1
        inv = s.get(GovernorInstance, invoice)
        assert inv is not None and inv.state == "payment_received" and inv.data["paid_cents"] == 2999
