"""Without Redis (the embedded default on SQLite): the in-process runner runs effects, retries and timers."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.jobs.conftest import (
    MARKETPLACE,
    ROOT,
    deliver_invoice,
    instance_of,
    issued_invoice,
    make_runtime,
    new_customer,
    wait_for,
    worker_env,
)
from webapp.db import Database
from webapp.jobs import InProcessRunner, after_commit, install_runtime, start_background
from webapp.migrate import upgrade
from webapp.models import GovernorInstance, OutboxMessage, TransitionRecord
from webapp.models.background import EffectRun, SandboxCharge
from webapp.runtime import Runtime

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'embedded.db'}"
    upgrade(url)
    return url


@pytest.fixture
def local(sqlite_url: str) -> Iterator[Runtime]:
    """A runtime on a fresh SQLite file and no Redis at all."""
    database = Database(sqlite_url)
    rt = make_runtime(sqlite_url, database, None, "unused")
    assert rt.config.redis_url is None
    install_runtime(rt)
    yield rt
    runner = rt.extras.get("inprocess_runner")
    if isinstance(runner, InProcessRunner):
        runner.stop()
    database.dispose()


def _count(rt: Runtime, model: type, *where: object) -> int:
    with rt.db.session() as s:
        return int(s.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def test_runner_carries_out_every_effect_once_without_redis(local: Runtime) -> None:
    customer = new_customer(local, "c-1", now=NOW)
    invoice = issued_invoice(local, customer, "tok_visa", NOW)
    deliver_invoice(local, invoice, NOW)
    runner = InProcessRunner(local)
    report = runner.run_until_idle(NOW)
    assert report.failed == 0 and report.gave_up == 0 and report.executed == _count(local, OutboxMessage)
    with local.db.session() as s:
        assert s.get(GovernorInstance, invoice).state == "payment_received"  # type: ignore[union-attr]
        assert s.scalar(select(func.count()).select_from(SandboxCharge)) == 1
        assert sorted(s.scalars(select(EffectRun.job_id))) == sorted(s.scalars(select(OutboxMessage.job_id)))
    assert _count(local, OutboxMessage, OutboxMessage.delivered_at.is_(None)) == 0
    again = runner.run_until_idle(NOW)
    assert (again.executed, again.timers.get("fired")) == (0, 0)


def test_runner_fires_due_timers_on_sqlite(local: Runtime) -> None:
    customer = new_customer(local, "c-1", now=NOW, active=False, kyc=True)
    runner = InProcessRunner(local)
    assert runner.run_until_idle(NOW + timedelta(hours=1)).timers.get("fired") == 0
    report = runner.run_once(NOW + timedelta(hours=25), sweep=True)
    assert report.timers["fired"] == 1 and report.timers["failed"] == 0
    with local.db.session() as s:
        entitlement = instance_of(s, customer, "entitlement")
        assert entitlement.data["needs_review"] is True
        fired = s.scalars(
            select(TransitionRecord).where(TransitionRecord.event == "approval_escalation")
        ).all()
        assert [(t.instance_id, t.actor) for t in fired] == [(entitlement.id, "timer")]
    assert report.executed >= 1  # the escalation's notify_staff ran in the same round


def test_runner_retries_a_failing_effect_then_gives_up(local: Runtime) -> None:
    customer = new_customer(local, "c-1", now=NOW)
    invoice = issued_invoice(local, customer, "tok_timeout", NOW)
    (charge,) = deliver_invoice(local, invoice, NOW)
    runner = InProcessRunner(local, retry_intervals=(5, 5))
    first = runner.run_once(NOW, sweep=False)
    assert first.failed == 1 and first.gave_up == 0
    assert runner.run_once(NOW + timedelta(seconds=1), sweep=False).failed == 0  # backing off
    assert runner.run_once(NOW + timedelta(seconds=6), sweep=False).failed == 1
    last = runner.run_once(NOW + timedelta(seconds=12), sweep=False)
    assert last.gave_up == 1
    with local.db.session() as s:
        row = s.get(OutboxMessage, charge)
        assert row is not None and row.delivered_at is not None and row.attempts == 3
        run = s.get(EffectRun, row.job_id)
        assert run is not None and (run.status, run.attempts) == ("failed", 3)
        assert "TransientProcessorError" in run.summary
        assert s.get(GovernorInstance, invoice).state == "payment_pending"  # type: ignore[union-attr]
    assert _count(local, SandboxCharge) == 0


def test_after_commit_wakes_the_background_thread(local: Runtime) -> None:
    customer = new_customer(local, "c-1", now=NOW)
    invoice = issued_invoice(local, customer, "tok_visa", NOW)
    runner = start_background(local)
    assert isinstance(runner, InProcessRunner)
    after_commit(local, deliver_invoice(local, invoice, NOW))

    def paid() -> bool:
        with local.db.session() as s:
            return s.get(GovernorInstance, invoice).state == "payment_received"  # type: ignore[union-attr]

    wait_for(paid, "the background thread to take the payment")
    runner.stop()


def test_worker_command_without_redis_runs_in_process(local: Runtime, sqlite_url: str) -> None:
    now = datetime.now(UTC)  # the worker process runs on the real clock
    customer = new_customer(local, "c-1", now=now)
    invoice = issued_invoice(local, customer, "tok_visa", now)
    deliver_invoice(local, invoice, now)
    env = worker_env(sqlite_url, None, "unused")
    done = subprocess.run(
        [MARKETPLACE, "worker", "--burst"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "in-process burst" in done.stdout
    with local.db.session() as s:
        assert s.get(GovernorInstance, invoice).state == "payment_received"  # type: ignore[union-attr]
    assert _count(local, OutboxMessage, OutboxMessage.delivered_at.is_(None)) == 0
