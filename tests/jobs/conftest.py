"""Background-work fixtures: the database, a Redis database of this run's own, runtimes, real workers.

The Redis side: the run claims an empty Redis database number (an ``owner`` key set with NX, so two
test runs on one Redis never share one), uses a queue named after the run, and flushes that database
at the end. Tests about background work start ``marketplace worker`` as a real subprocess.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from sqlalchemy import select, text

from governors import load_settings
from governors.scenarios import onboard
from webapp.config import Config
from webapp.db import Database
from webapp.jobs import install_runtime
from webapp.models import Base, GovernorInstance
from webapp.models.background import EffectRun  # noqa: F401  (registers the background tables)
from webapp.runtime import Runtime
from webapp.services.setup import (
    activate_customer,
    ensure_catalog,
    ensure_tenant,
    run_step,
    signup_customer,
)
from webapp.services.timers import sweep_timers
from webapp.services.transitions import SYSTEM, EventRequest, fire_event

ROOT = Path(__file__).resolve().parents[2]
MARKETPLACE = str(Path(sys.executable).parent / "marketplace")
REDIS_HOST = os.environ.get("TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("TEST_REDIS_PORT", "6379"))
OWNER_KEY = "marketplace-tests:owner"


def wait_for(check: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    """Poll ``check`` until it returns something truthy (a liveness guard, not a speed assertion)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"gave up waiting for {what}")


@pytest.fixture(scope="session")
def database(pg_url: str) -> Iterator[Database]:
    db = Database(pg_url)
    yield db
    db.dispose()


@pytest.fixture
def db(database: Database) -> Database:
    """The database, emptied before each test (append-only audit rows need TRUNCATE's trigger off)."""
    tables = ", ".join(f'"{t.name}"' for t in reversed(Base.metadata.sorted_tables))
    with database.engine.begin() as conn:
        conn.execute(text("ALTER TABLE audit_entries DISABLE TRIGGER USER"))
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        conn.execute(text("ALTER TABLE audit_entries ENABLE TRIGGER USER"))
    return database


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis database number nobody else uses during this run (flushed afterwards)."""
    run_id = uuid.uuid4().hex
    for number in range(15, 0, -1):
        conn = Redis(host=REDIS_HOST, port=REDIS_PORT, db=number)
        if conn.dbsize() == 0 and conn.set(OWNER_KEY, run_id, nx=True, ex=6 * 3600) and conn.dbsize() == 1:
            break
        conn.close()
    else:
        pytest.fail("no free Redis database number for this test run (flush stale test databases)")
    try:
        yield f"redis://{REDIS_HOST}:{REDIS_PORT}/{number}"
    finally:
        if conn.get(OWNER_KEY) == run_id.encode():
            conn.flushdb()
        conn.close()


@pytest.fixture
def queue_name() -> str:
    """A queue of this test's own."""
    return f"jobs-test-{uuid.uuid4().hex[:10]}"


def make_runtime(database_url: str, database: Database, redis_url: str | None, queue_name: str) -> Runtime:
    """A runtime sharing the test's engine, with quick retries (1 s) so retried jobs come back soon."""
    env = {"DATABASE_URL": database_url}
    if redis_url:
        env["REDIS_URL"] = redis_url
    config = Config.from_env(env, testing=True)
    rt = Runtime(config=config, db=database, settings=load_settings(None))
    rt.extras["queue_name"] = queue_name
    rt.extras["retry_intervals"] = [1, 1, 1]
    return rt


@pytest.fixture
def rt(db: Database, pg_url: str, redis_url: str, queue_name: str) -> Iterator[Runtime]:
    """A runtime on the test database and this run's Redis, installed for job functions."""
    runtime = make_runtime(pg_url, db, redis_url, queue_name)
    install_runtime(runtime)
    yield runtime
    conn = runtime.extras.get("redis")
    if isinstance(conn, Redis):
        conn.close()


def worker_env(pg_url: str, redis_url: str | None, queue_name: str, **extra: str) -> dict[str, str]:
    """The environment of a ``marketplace worker`` subprocess."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env.update(
        DATABASE_URL=pg_url, MARKETPLACE_QUEUE=queue_name, SECRET_KEY="jobs-tests-only-secret", **extra
    )
    if redis_url:
        env["REDIS_URL"] = redis_url
    return env


def run_burst_worker(env: dict[str, str], timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run ``marketplace worker --burst`` to completion; fail the test if it does not exit 0."""
    done = subprocess.run(
        [MARKETPLACE, "worker", "--burst"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


class WorkerProcess:
    """A long-running ``marketplace worker`` (with its scheduler) for tests that need retries."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [MARKETPLACE, "worker"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        """The worker's (parent) process id."""
        return self.proc.pid

    def stop(self) -> str:
        """Warm-stop the worker (and its scheduler); return what it logged."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        out, _ = self.proc.communicate()
        return out or ""


def children_of(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (read from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may contain spaces; the fields after its closing parenthesis do not.
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def process_group(pid: int) -> int:
    """The process group of ``pid``."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[2])


# --------------------------------------------------------------------------- domain set-up


def new_customer(
    rt: Runtime,
    customer_id: str,
    *,
    tenant_id: str = "t-1",
    now: datetime,
    active: bool = True,
    kyc: bool = False,
) -> str:
    """A customer signed up at ``now`` through the real service (fully active by default).

    ``kyc=True`` runs only the onboarding steps (email, profile, KYC passed), leaving the entitlement
    pending with its approval clock running.
    """
    with rt.db.session() as session:
        ensure_tenant(session, tenant_id, now)
        ensure_catalog(session, now)
    with rt.db.session() as session:
        signup_customer(
            session,
            tenant_id,
            customer_id,
            name="Ada Example",
            email=f"{customer_id}@example.test",
            tier="starter",
            now=now,
        )
    if active:
        with rt.db.session() as session:
            activate_customer(session, tenant_id, customer_id, now=now)
    elif kyc:
        with rt.db.session() as session:
            account = instance_of(session, customer_id, "customer_account")
            for step in onboard(f"kyc-{customer_id}"):
                run_step(session, step, tenant_id=tenant_id, now=now, instance_id=account.id)
    return customer_id


def instance_of(session: Any, customer_id: str, governor: str) -> GovernorInstance:
    """The customer's one instance of ``governor``."""
    return session.scalars(
        select(GovernorInstance).where(
            GovernorInstance.customer_id == customer_id, GovernorInstance.governor == governor
        )
    ).one()


def issued_invoice(rt: Runtime, customer_id: str, token: str, now: datetime, *, amount: int = 2999) -> str:
    """An invoice of ``amount`` cents on card ``token``, generated and issued (its timer fired)."""
    with rt.db.session() as session:
        result = fire_event(
            session,
            EventRequest(
                "t-1",
                "cycle_begin",
                governor="billing",
                customer_id=customer_id,
                payload={
                    "kind": "initial",
                    "amount_cents": amount,
                    "currency": "USD",
                    "payment_method": token,
                },
            ),
            SYSTEM,
            now,
        )
    assert result.status == 200, result.body
    invoice_id = str(result.body["instance_id"])
    report = sweep_timers(rt, now, on_commit=lambda ids: None)
    assert report.fired >= 1, report
    with rt.db.session() as session:
        assert session.get(GovernorInstance, invoice_id).state == "invoice_issued"  # type: ignore[union-attr]
    return invoice_id


def deliver_invoice(rt: Runtime, invoice_id: str, now: datetime) -> tuple[int, ...]:
    """Confirm delivery (B03): the payment window opens and the charge becomes an outbox row."""
    with rt.db.session() as session:
        result = fire_event(
            session, EventRequest("t-1", "invoice_delivered", invoice_id, {"confirmed": True}), SYSTEM, now
        )
    assert result.status == 200, result.body
    return result.outbox_ids


def utcnow() -> datetime:
    """The real current time (worker subprocesses apply feedback events at the real clock)."""
    return datetime.now(UTC)
