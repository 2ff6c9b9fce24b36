"""Background work on RQ: the outbox relay, the job functions, the periodic sweep, the in-process runner.

Effects of a transition are outbox rows committed with it. ``relay_outbox`` moves committed,
undelivered rows to RQ under a deterministic job id (``unique=True``, so a redelivery is a no-op) and
marks them delivered only after Redis accepted them; while Redis is down the rows simply stay
undelivered. It runs right after each commit (``after_commit``, called by whoever committed) and again
from the periodic sweep, so nothing is lost between a commit and an enqueue.

Job functions are plain functions of ids (``run_effect(outbox_id)``, ``raise_alert(outbox_id)``,
``fire_timer(timer_id)``, ``periodic_sweep()``); they reach the process's Runtime through
``runtime()``, which ``marketplace worker`` installs once. Every job carries tenant, customer, governor
and instance ids in ``job.meta`` (``jobs_for_customer`` lists a customer's jobs for the console).

Scheduling: ``periodic_sweep`` (relay + timer sweep) is an RQ scheduled job that books its own next
run for the following minute with ``enqueue_at`` under a job id derived from that minute
(``unique=True``), so any number of workers keep exactly one chain alive; the worker seeds the chain
when it starts. Without ``REDIS_URL`` the same work runs on ``InProcessRunner``, a thread that executes
outbox rows directly, retries failures with the same back-off, and sweeps timers every 60 s.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from redis import Redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry as RedisRetry
from rq import Queue, Retry
from rq.exceptions import DuplicateJobError
from rq.job import Job
from sqlalchemy import select, update

from webapp.effects import Execution, execute, record_failure
from webapp.models import DueTimer, OutboxMessage
from webapp.runtime import Runtime
from webapp.services.timers import SweepReport, fire_due_timer, sweep_timers

log = logging.getLogger(__name__)

DEFAULT_QUEUE = "marketplace"
RETRY_INTERVALS: tuple[int, ...] = (10, 30, 120, 600, 1800)
"""Seconds between the attempts of a failed job (RQ ``Retry``; the in-process runner uses them too)."""

SWEEP_EVERY = 60
"""Seconds between two periodic sweeps (GOVERNORS.md §0.3)."""

SWEEP_BATCH = 500
"""Due timers one sweep batch claims."""

SWEEP_BATCHES = 20
"""A periodic sweep runs at most this many batches before leaving the rest to the next minute's."""

RESULT_TTL = 3600
"""Seconds a finished job (and so its unique id) is kept in Redis; the effect_runs marker stays forever."""

_REDIS_ERRORS = (RedisConnectionError, RedisTimeoutError)


# --------------------------------------------------------------------------- the process's runtime

_runtime: Runtime | None = None
_runtime_pid = 0


def install_runtime(rt: Runtime) -> None:
    """Make ``rt`` the runtime of this process's jobs (the worker does this once, at start)."""
    global _runtime, _runtime_pid
    _runtime, _runtime_pid = rt, os.getpid()


def runtime() -> Runtime:
    """The installed runtime; in a forked work horse, its pooled connections are replaced first."""
    global _runtime_pid
    if _runtime is None:
        raise RuntimeError("no runtime installed: start jobs through `marketplace worker`")
    if os.getpid() != _runtime_pid:
        # Connections inherited across fork() belong to the parent; open fresh ones in this process.
        _runtime.db.engine.dispose(close=False)
        _runtime_pid = os.getpid()
    return _runtime


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


# --------------------------------------------------------------------------- queue plumbing


def queue_name(rt: Runtime) -> str:
    """The RQ queue of this deployment (``MARKETPLACE_QUEUE``, default ``marketplace``)."""
    name = rt.extras.get("queue_name") or os.environ.get("MARKETPLACE_QUEUE") or DEFAULT_QUEUE
    return str(name)


def redis_connection(rt: Runtime) -> Redis | None:
    """The runtime's Redis client, or None when no ``REDIS_URL`` is configured (in-process mode)."""
    if rt.config.redis_url is None:
        return None
    conn = rt.extras.get("redis")
    if not isinstance(conn, Redis):
        # Short timeouts and two quick retries (redis-py's default is ten, backing off up to a second
        # each): a relay with Redis down must give up at once and leave the rows for the next sweep.
        conn = Redis.from_url(
            rt.config.redis_url,
            socket_connect_timeout=2,
            socket_timeout=10,
            retry=RedisRetry(ExponentialBackoff(cap=0.2, base=0.02), 2),
        )
        rt.extras["redis"] = conn
    return conn


def get_queue(rt: Runtime, connection: Redis | None = None) -> Queue:
    """The runtime's queue (tests may put their own, e.g. fakeredis with is_async=False, in extras)."""
    given = rt.extras.get("queue")
    if isinstance(given, Queue):
        return given
    if connection is not None:
        return Queue(queue_name(rt), connection=connection)
    cached = rt.extras.get("queue_cache")
    if isinstance(cached, Queue):
        # Reused: a Queue asks the server for its version once, and every relay would pay for it again.
        return cached
    conn = redis_connection(rt)
    if conn is None:
        raise RuntimeError("no REDIS_URL: background work runs in-process")
    rt.extras["queue_cache"] = queue = Queue(queue_name(rt), connection=conn)
    return queue


def retry_policy(rt: Runtime) -> Retry:
    """RQ's Retry with the runtime's intervals (``extras["retry_intervals"]`` overrides the default)."""
    intervals = list(rt.extras.get("retry_intervals") or RETRY_INTERVALS)
    return Retry(max=len(intervals), interval=intervals)


def rq_job_id(outbox_job_id: str) -> str:
    """The RQ id of an outbox row: its job_id with characters RQ refuses (``:``) turned into ``-``."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", outbox_job_id)


def job_meta(row: OutboxMessage) -> dict[str, Any]:
    """What the console needs to attribute a job: tenant, customer, governor, instance, effect."""
    args = row.args or {}
    return {
        "tenant_id": row.tenant_id,
        "customer_id": row.customer_id,
        "governor": row.governor,
        "instance_id": row.instance_id,
        "outbox_id": row.id,
        "effect": args.get("effect") or row.job,
    }


def _not_before(row: OutboxMessage) -> datetime | None:
    """An effect may ask not to run before a time (catalog propagation retries)."""
    raw = ((row.args or {}).get("args") or {}).get("not_before")
    if not isinstance(raw, str):
        return None
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


# --------------------------------------------------------------------------- the outbox relay


@dataclass
class RelayReport:
    """What one relay run did."""

    delivered: int = 0
    duplicates: int = 0
    pending: int = 0
    failed: int = 0
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The report as a plain dict."""
        return {
            "delivered": self.delivered,
            "duplicates": self.duplicates,
            "pending": self.pending,
            "failed": self.failed,
            "error": self.error,
        }


def _enqueue(rt: Runtime, queue: Queue, row: OutboxMessage, now: datetime) -> bool:
    """Enqueue one row under its deterministic id; False when RQ already holds that id."""
    func = JOB_FUNCTIONS.get(row.job)
    if func is None:
        raise ValueError(f"outbox row {row.id} names an unknown job {row.job!r}")
    job_id = rq_job_id(row.job_id)
    # RQ's unique=True is an atomic Lua script. fakeredis (unit tests) has no Lua: those tests turn it off
    # (extras["atomic_unique"] = False) and get the plain existence check instead.
    atomic = bool(rt.extras.get("atomic_unique", True))
    if not atomic and Job.exists(job_id, connection=queue.connection):
        return False
    options: dict[str, Any] = {
        "job_id": job_id,
        "meta": job_meta(row),
        "retry": retry_policy(rt),
        "unique": atomic,
        "result_ttl": RESULT_TTL,
        "description": f"{job_meta(row)['effect']} for {row.instance_id or row.tenant_id}",
    }
    try:
        at = _not_before(row)
        if at is not None and at > now:
            queue.enqueue_at(at, func, row.id, **options)
        else:
            queue.enqueue(func, row.id, **options)
    except DuplicateJobError:
        return False
    return True


def relay_outbox(
    rt: Runtime, limit: int = 500, *, ids: Iterable[int] | None = None, now: datetime | None = None
) -> RelayReport:
    """Move committed, undelivered outbox rows (all, or just ``ids``) to RQ; rows stay while Redis is down."""
    now = now or utcnow()
    report = RelayReport()
    wanted = list(ids) if ids is not None else None
    if wanted == []:
        return report
    try:
        queue = get_queue(rt)
    except RuntimeError as exc:
        report.error = str(exc)
        return report
    with rt.db.session() as session:
        stmt = select(OutboxMessage).where(OutboxMessage.delivered_at.is_(None))
        if wanted is not None:
            stmt = stmt.where(OutboxMessage.id.in_(wanted))
        # SKIP LOCKED: the after-commit relay and the periodic one never wait on each other's rows.
        stmt = stmt.order_by(OutboxMessage.id).limit(limit).with_for_update(skip_locked=True)
        rows = list(session.scalars(stmt))
        for n, row in enumerate(rows):
            try:
                fresh = _enqueue(rt, queue, row, now)
            except _REDIS_ERRORS as exc:
                # Redis is unreachable: keep this row and the rest for the next relay.
                row.attempts += 1
                report.pending = len(rows) - n
                report.error = f"{type(exc).__name__}: {exc}"
                break
            except Exception as exc:  # one bad row must not hold up the rows behind it
                log.exception("outbox row %s could not be enqueued", row.id)
                row.attempts += 1
                report.failed += 1
                report.error = f"{type(exc).__name__}: {exc}"
                continue
            row.delivered_at = now
            row.attempts += 1
            if fresh:
                report.delivered += 1
            else:
                report.duplicates += 1
    return report


def after_commit(rt: Runtime, outbox_ids: Sequence[int]) -> RelayReport | None:
    """Hand freshly committed outbox rows on (call right after the commit); never raises.

    With Redis this relays them at once; without, it wakes the in-process runner. Whatever fails here
    is picked up by the periodic sweep, because the rows are already durable.
    """
    if not outbox_ids:
        return None
    if rt.config.redis_url is None and not isinstance(rt.extras.get("queue"), Queue):
        runner = rt.extras.get("inprocess_runner")
        if isinstance(runner, InProcessRunner):
            runner.wake()
        return None
    try:
        return relay_outbox(rt, ids=outbox_ids)
    except Exception as exc:  # the commit happened; the periodic relay will deliver
        log.warning("after-commit relay failed (the periodic sweep will retry): %s", exc)
        return RelayReport(pending=len(outbox_ids), error=str(exc))


# --------------------------------------------------------------------------- job functions


def _execution_dict(result: Execution) -> dict[str, Any]:
    return {
        "job_id": result.job_id,
        "effect": result.effect,
        "status": result.status,
        "summary": result.summary,
        "already_done": result.already_done,
    }


def run_effect(outbox_id: int) -> dict[str, Any]:
    """Carry out the effect of one outbox row exactly once, then relay what it caused."""
    rt = runtime()
    result = execute(rt, outbox_id, attempt=_attempt())
    after_commit(rt, result.outbox_ids)
    return _execution_dict(result)


def raise_alert(outbox_id: int) -> dict[str, Any]:
    """Record the critical alert of one outbox row (once)."""
    rt = runtime()
    return _execution_dict(execute(rt, outbox_id))


def fire_timer(timer_id: int) -> dict[str, Any]:
    """Fire one due timer now (one job per timer; the sweep does the same in batches)."""
    rt = runtime()
    fired = fire_due_timer(rt, timer_id, utcnow())
    after_commit(rt, fired.outbox_ids)
    return {"timer_id": timer_id, "outcome": fired.outcome, "event": fired.event, "code": fired.code}


def enqueue_timer(rt: Runtime, timer_id: int) -> Job | None:
    """One ``fire_timer`` job for a due timer (job id ``timer-<id>``); None when it is queued already.

    The periodic sweep is how timers normally fire; this is for firing one timer on its own.
    """
    with rt.db.session() as session:
        row = session.get(DueTimer, timer_id)
        if row is None:
            return None
        meta = {
            "tenant_id": row.tenant_id,
            "customer_id": row.customer_id,
            "governor": row.governor,
            "instance_id": row.instance_id,
            "timer": row.name,
        }
    try:
        return get_queue(rt).enqueue(
            fire_timer,
            timer_id,
            job_id=f"timer-{timer_id}",
            meta=meta,
            retry=retry_policy(rt),
            unique=bool(rt.extras.get("atomic_unique", True)),
            result_ttl=RESULT_TTL,
            description=f"fire {row.name} of {row.instance_id}",
        )
    except DuplicateJobError:
        return None


def periodic_sweep() -> dict[str, Any]:
    """Relay the outbox and fire due timers, after booking the next run a minute later."""
    rt = runtime()
    now = utcnow()
    # Booked first, so an exception below never breaks the chain.
    schedule_periodic(rt, now)
    relayed = relay_outbox(rt, now=now)
    total = SweepReport()
    for _ in range(SWEEP_BATCHES):
        report = sweep_timers(rt, now, SWEEP_BATCH)
        for key, value in report.as_dict().items():
            setattr(total, key, getattr(total, key) + value)
        if sum(report.as_dict().values()) < SWEEP_BATCH:  # a short batch: nothing more is due
            break
    return {"relay": relayed.as_dict(), "timers": total.as_dict(), **housekeeping(rt, now)}


def housekeeping(rt: Runtime, now: datetime) -> dict[str, Any]:
    """The minute's periodic work after timers, for the RQ sweep and the in-process runner alike.

    Alert rules (CONSOLE.md §2.3), payment reconciliation (import the processor's settlement report,
    archive the invoices that match: B08) and, last, the dashboards' rollups, so they never hold up the
    rest. Each part runs in its own transaction; one failing part is logged and the others still run.
    """
    from webapp.services.alerts import evaluate_alerts_for
    from webapp.services.reconciliation import reconcile_for
    from webapp.services.rollups import refresh_rollups_for

    done: dict[str, Any] = {}
    for name, work in (
        ("alerts", evaluate_alerts_for),
        ("reconciliation", reconcile_for),
        ("rollups", refresh_rollups_for),
    ):
        try:
            done[name] = work(rt, now)
        except Exception as exc:  # one broken part must not stop the others (or the sweep's chain)
            log.exception("periodic %s failed", name)
            done[name] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    return done


def _slot(moment: datetime) -> int:
    return int(moment.timestamp()) // SWEEP_EVERY


def schedule_periodic(rt: Runtime, now: datetime | None = None) -> bool:
    """Book ``periodic_sweep`` for the next minute (a no-op when it is already booked)."""
    now = now or utcnow()
    slot = _slot(now) + 1
    at = datetime.fromtimestamp(slot * SWEEP_EVERY, UTC)
    try:
        get_queue(rt).enqueue_at(
            at,
            periodic_sweep,
            job_id=f"periodic-sweep-{slot}",
            unique=True,
            result_ttl=RESULT_TTL,
            meta={"tenant_id": None, "customer_id": None, "governor": None, "instance_id": None},
            description="relay the outbox and fire due timers",
        )
    except DuplicateJobError:
        return False
    return True


def _attempt() -> int:
    """Which attempt of the current RQ job this is (1 outside RQ)."""
    from rq import get_current_job

    job = get_current_job()
    if job is None or not job.retry_intervals:
        return 1
    # retry_policy() sets Retry.max to the number of intervals; RQ counts retries_left down from it.
    return len(job.retry_intervals) - (job.retries_left or 0) + 1


JOB_FUNCTIONS: dict[str, Callable[[int], dict[str, Any]]] = {
    "run_effect": run_effect,
    "raise_alert": raise_alert,
}
"""Outbox ``job`` names and the RQ job functions that carry them out."""


# --------------------------------------------------------------------------- the console's view


@dataclass(frozen=True)
class JobInfo:
    """One RQ job as the console lists it."""

    id: str
    status: str
    effect: str | None
    meta: dict[str, Any]
    created_at: datetime | None
    started_at: datetime | None
    ended_at: datetime | None
    error: str | None


def jobs_for_customer(source: Queue | Redis, customer_id: str, queue: str = DEFAULT_QUEUE) -> list[JobInfo]:
    """The customer's queued, started, failed and scheduled jobs, newest first.

    ``source`` is the queue itself, or a Redis connection plus the queue's name. Scans the queue and
    its registries (one pipelined fetch per 500 ids), so it is meant for one customer's page, not for
    reports.
    """
    q = source if isinstance(source, Queue) else Queue(queue, connection=source)
    connection = q.connection
    ids: list[str] = list(q.get_job_ids())
    for registry in (q.started_job_registry, q.failed_job_registry, q.scheduled_job_registry):
        ids.extend(registry.get_job_ids())
    unique_ids = list(dict.fromkeys(ids))
    found: list[JobInfo] = []
    for start in range(0, len(unique_ids), 500):
        for job in Job.fetch_many(unique_ids[start : start + 500], connection=connection):
            if job is None or (job.meta or {}).get("customer_id") != customer_id:
                continue
            status = job.get_status(refresh=False)
            result = job.latest_result() if status == "failed" else None
            found.append(
                JobInfo(
                    id=job.id,
                    status=str(status.value if status is not None else "unknown"),
                    effect=(job.meta or {}).get("effect"),
                    meta=dict(job.meta or {}),
                    created_at=job.created_at,
                    started_at=job.started_at,
                    ended_at=job.ended_at,
                    error=(result.exc_string or "")[-500:] if result is not None else None,
                )
            )
    far_past = datetime.min.replace(tzinfo=UTC)
    return sorted(found, key=lambda j: j.created_at or far_past, reverse=True)


# --------------------------------------------------------------------------- without Redis


@dataclass
class RunnerReport:
    """What one round of the in-process runner did."""

    executed: int = 0
    failed: int = 0
    gave_up: int = 0
    timers: dict[str, int] = field(default_factory=dict)

    @property
    def busy(self) -> bool:
        """True when the round did any work (run again until it does none)."""
        return bool(self.executed or self.failed or self.gave_up or self.timers.get("fired"))


class InProcessRunner:
    """The embedded default's background worker (no Redis): effects from the outbox, retries, timers.

    One thread runs rounds: execute due outbox rows directly (the same ``effects.execute`` the RQ job
    calls), retry failures after ``RETRY_INTERVALS`` and give up after the last, and sweep due timers
    every ``sweep_every`` seconds. ``run_once``/``run_until_idle`` run rounds in the caller's thread.
    """

    def __init__(
        self,
        rt: Runtime,
        *,
        poll_seconds: float = 1.0,
        sweep_every: float = SWEEP_EVERY,
        retry_intervals: Sequence[int] = RETRY_INTERVALS,
        batch: int = 200,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.rt = rt
        self.poll_seconds = poll_seconds
        self.sweep_every = sweep_every
        self.retry_intervals = tuple(retry_intervals)
        self.batch = batch
        self.clock = clock
        self._retry_at: dict[int, datetime] = {}
        self._last_sweep: datetime | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- rounds

    def run_once(self, now: datetime | None = None, *, sweep: bool | None = None) -> RunnerReport:
        """One round: due outbox rows, then the timer sweep (when due, or ``sweep=True``), then the outbox."""
        now = now or self.clock()
        report = RunnerReport()
        self._run_outbox(now, report)
        due = self._last_sweep is None or (now - self._last_sweep).total_seconds() >= self.sweep_every
        if sweep if sweep is not None else due:
            self._last_sweep = now
            report.timers = sweep_timers(self.rt, now, on_commit=lambda ids: None).as_dict()
            self._run_outbox(now, report)
            housekeeping(self.rt, now)  # alerts, reconciliation, rollups: as periodic_sweep does on RQ
        return report

    def run_until_idle(self, now: datetime | None = None, *, max_rounds: int = 100) -> RunnerReport:
        """Run rounds until one does nothing (effects cause effects; timers fire into new ones)."""
        total = RunnerReport()
        first = True
        for _ in range(max_rounds):
            report = self.run_once(now, sweep=True if first else None)
            first = False
            total.executed += report.executed
            total.failed += report.failed
            total.gave_up += report.gave_up
            for key, value in report.timers.items():
                total.timers[key] = total.timers.get(key, 0) + value
            if not report.busy:
                break
        return total

    def _run_outbox(self, now: datetime, report: RunnerReport) -> None:
        while True:
            # Rows backing off (or not due yet) are left out, so they never hold up the rows behind them.
            waiting = [i for i, at in self._retry_at.items() if at > now]
            with self.rt.db.session() as session:
                stmt = select(OutboxMessage).where(OutboxMessage.delivered_at.is_(None))
                if waiting:
                    stmt = stmt.where(OutboxMessage.id.not_in(waiting))
                rows = list(session.scalars(stmt.order_by(OutboxMessage.id).limit(self.batch)))
            ran = 0
            for row in rows:
                at = _not_before(row)
                if at is not None and at > now:
                    self._retry_at[row.id] = at
                    continue
                ran += 1
                self._run_row(row.id, row.attempts, now, report)
            if ran == 0 or len(rows) < self.batch:
                return

    def _run_row(self, outbox_id: int, attempts: int, now: datetime, report: RunnerReport) -> None:
        try:
            execute(self.rt, outbox_id, now=now, attempt=attempts + 1)
        except Exception as exc:
            attempts += 1
            error = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            log.warning("in-process job of outbox row %s failed (attempt %d): %s", outbox_id, attempts, error)
            if attempts > len(self.retry_intervals):
                record_failure(self.rt, outbox_id, error, attempts, now)
                self._mark(outbox_id, now, attempts)
                self._retry_at.pop(outbox_id, None)
                report.gave_up += 1
            else:
                self._mark(outbox_id, None, attempts)
                self._retry_at[outbox_id] = now + timedelta(seconds=self.retry_intervals[attempts - 1])
                report.failed += 1
            return
        self._mark(outbox_id, now, attempts + 1)
        self._retry_at.pop(outbox_id, None)
        report.executed += 1

    def _mark(self, outbox_id: int, delivered_at: datetime | None, attempts: int) -> None:
        with self.rt.db.session() as session:
            session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id == outbox_id, OutboxMessage.delivered_at.is_(None))
                .values(delivered_at=delivered_at, attempts=attempts)
            )

    # ---------------------------------------------------------------- the thread

    def wake(self) -> None:
        """Run a round soon (called after a commit wrote outbox rows)."""
        self._wake.set()

    def start(self) -> None:
        """Run rounds in a daemon thread until ``stop``."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self.run_forever, name="inprocess-runner", daemon=True)
        self._thread.start()

    def run_forever(self) -> None:
        """Run rounds until ``stop`` is called (waking early on ``wake``)."""
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # a broken round must not kill background work; the next one retries
                log.exception("in-process runner round failed")
            self._wake.wait(self.poll_seconds)
            self._wake.clear()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread after its current round."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None


def start_background(rt: Runtime) -> InProcessRunner | None:
    """Background work for a process serving the console: None with Redis (a worker process runs
    the jobs), else a started in-process runner that ``after_commit`` wakes."""
    if rt.config.redis_url is not None:
        return None
    runner = InProcessRunner(rt)
    rt.extras["inprocess_runner"] = runner
    runner.start()
    return runner


__all__ = [
    "InProcessRunner",
    "JobInfo",
    "RelayReport",
    "after_commit",
    "enqueue_timer",
    "fire_timer",
    "get_queue",
    "install_runtime",
    "jobs_for_customer",
    "periodic_sweep",
    "raise_alert",
    "relay_outbox",
    "run_effect",
    "runtime",
    "schedule_periodic",
    "start_background",
]
