"""The rollup job and the dashboards' reads (CONSOLE.md §3: "read rollup tables built by RQ jobs").

``refresh_rollups(session, now)`` brings every table of ``webapp.models.rollups`` up to date, in the
caller's transaction, and is safe to run concurrently and repeatedly:

- It locks its watermark row first, so two refreshes (two workers, or a worker and the demo's
  in-process runner) run one after the other; everything below is read-modify-write under that lock.
- History (``transitions``) is read **only past the stored watermark** (the last id counted), in id
  order and in batches, so a refresh costs what happened since the last one, not the history's size.
  The watermark moves in the same transaction as the counts it covers: running twice counts nothing
  twice, and a rolled-back refresh counts nothing at all. Rows younger than ``SETTLE`` are left for the
  next run (ids are given out before commit; a slightly older transaction may still commit a lower
  id), and the watermark never passes a row that was not counted.
- Time in state: a row leaving state S (``from_state != to_state``) ended the stay that began at the
  first history row of the same instance with ``state_seq`` one lower (GOVERNORS.md §0.2: every state
  entry increments ``state_seq``; self-transitions keep it). The duration goes into a fixed,
  log-spaced histogram (``DURATION_BOUNDS``).
- **Percentiles come from histogram buckets**, the way Prometheus' ``histogram_quantile`` computes
  them: find the bucket holding the rank and interpolate linearly inside it (the +Inf bucket answers
  its lower bound). Buckets add up across hours and governors, so a window's percentile is exact to
  the bucket's resolution whatever the window. Decision latency uses the buckets the service already
  records (CONSOLE.md §2.2: 100, 250, 500 ms, 1, 2, 5 s).
- Decision latency is a per-process Prometheus histogram (``webapp.metrics``), filled by
  ``fire_event`` in whichever process ran it. Each refresh adds what *its* process observed since
  its previous flush into the hour's row, so workers and the demo's single process are covered; web
  nodes flush theirs after requests, at most once a minute (``flush_latency_every``).
- Snapshots that are cheap to take but expensive to scan per request (instances per governor and
  state, with overdue and attention counts; queue depth; pending approvals) are stored per refresh.
- Background effect errors (the error-rate chart) are recounted for the current and the previous
  hour on every refresh (``effect_runs`` has no serial id to keep a watermark on); that is bounded.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final

from sqlalchemy import and_, case, delete, func, literal, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, aliased

from governors.money import to_decimal
from webapp.metrics import DECISION_BUCKETS, DECISION_LATENCY, queue_depth
from webapp.models import Approval, Customer, EffectRun, GovernorInstance, TransitionRecord
from webapp.models.rollups import (
    RollupDecisionLatency,
    RollupEffectHour,
    RollupPayment,
    RollupSample,
    RollupSlaPeriod,
    RollupSlaTier,
    RollupStateCount,
    RollupStateDuration,
    RollupTransitionHour,
    RollupWatermark,
)
from webapp.services.sla import assess_period

HOUR: Final = timedelta(hours=1)
SETTLE: Final = timedelta(seconds=60)
"""History rows younger than this are counted by the next refresh (their ids may still have gaps)."""
BATCH: Final = 5000
STUCK_GRACE: Final = timedelta(minutes=5)
"""An instance is stuck when its next timer is this far past (the sweep runs every minute)."""
SAMPLE_KEEP: Final = timedelta(days=8)
SNAPSHOT_KEEP: Final = timedelta(days=100)
"""Hourly state-count snapshots are kept this long (the churn chart looks back 12 weeks)."""
WATERMARK: Final = "transitions"

DURATION_BOUNDS: Final[tuple[float, ...]] = (
    1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 2 * 3600, 4 * 3600, 8 * 3600, 12 * 3600,
    86400, 2 * 86400, 3 * 86400, 5 * 86400, 7 * 86400, 14 * 86400, 30 * 86400, 60 * 86400,
    90 * 86400, 180 * 86400, 365 * 86400,
)  # fmt: skip
"""Upper bounds (seconds) of the time-in-state buckets; one more bucket holds everything longer."""
LATENCY_BOUNDS: Final[tuple[float, ...]] = tuple(float(b) for b in DECISION_BUCKETS)

PAYMENT_EVENTS: Final = {"payment_received": "received", "payment_declined": "declined"}
DEFAULT_PROCESSOR: Final = "sandbox"
"""Payments whose event payload names no ``processor`` were taken by the configured (sandbox) one."""
SLA_EVENT: Final = "sla_period_closed"


# --------------------------------------------------------------------------- histograms


def bucket_index(bounds: Sequence[float], value: float) -> int:
    """The bucket of ``value``: the first bound ≥ value (``len(bounds)`` for the +Inf bucket)."""
    return bisect.bisect_left(bounds, value)


def empty_buckets(bounds: Sequence[float]) -> list[int]:
    """Zero counts for ``bounds`` plus the +Inf bucket."""
    return [0] * (len(bounds) + 1)


def add_buckets(a: Sequence[int], b: Sequence[int]) -> list[int]:
    """Element-wise sum (a shorter list is padded with zeros)."""
    size = max(len(a), len(b))
    return [(a[i] if i < len(a) else 0) + (b[i] if i < len(b) else 0) for i in range(size)]


def histogram_quantile(bounds: Sequence[float], counts: Sequence[int], q: float) -> float | None:
    """The ``q`` quantile (0..1) of a bucketed distribution, as Prometheus computes it; None if empty.

    The rank ``q × total`` falls into one bucket; the answer interpolates linearly between that
    bucket's lower and upper bound (the first bucket starts at 0; the +Inf bucket answers the
    highest finite bound).
    """
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(counts):
        if n and seen + n >= rank:
            if i >= len(bounds):
                return float(bounds[-1])
            lower = float(bounds[i - 1]) if i > 0 else 0.0
            upper = float(bounds[i])
            return lower + (upper - lower) * ((rank - seen) / n)
        seen += n
    return float(bounds[-1])


@dataclass(frozen=True)
class Percentiles:
    """Count and P50/P95/P99 of one distribution (seconds; None when empty)."""

    count: int
    p50: float | None
    p95: float | None
    p99: float | None
    mean: float | None = None

    @classmethod
    def of(cls, bounds: Sequence[float], counts: Sequence[int], total_seconds: float = 0.0) -> Percentiles:
        """Percentiles of a bucketed distribution."""
        n = sum(counts)
        return cls(
            n,
            histogram_quantile(bounds, counts, 0.50),
            histogram_quantile(bounds, counts, 0.95),
            histogram_quantile(bounds, counts, 0.99),
            total_seconds / n if n else None,
        )


def hour_of(moment: datetime) -> datetime:
    """The start of ``moment``'s hour, UTC."""
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


# --------------------------------------------------------------------------- decision latency flush

_flush_lock = threading.Lock()
_flushed: dict[str, tuple[list[int], float]] = {}
"""Per governor: this process's histogram (per-bucket counts, sum) at its last flush."""


def _latency_now() -> dict[str, tuple[list[int], float]]:
    """This process's decision histogram: per governor, per-bucket counts (not cumulative) and sum."""
    cumulative: dict[str, dict[float, float]] = defaultdict(dict)
    sums: dict[str, float] = defaultdict(float)
    for metric in DECISION_LATENCY.collect():
        for sample in metric.samples:
            governor = sample.labels.get("governor", "unknown")
            if sample.name.endswith("_bucket"):
                le = sample.labels["le"]
                cumulative[governor][math.inf if le == "+Inf" else float(le)] = sample.value
            elif sample.name.endswith("_sum"):
                sums[governor] = sample.value
    out: dict[str, tuple[list[int], float]] = {}
    for governor, by_le in cumulative.items():
        edges = [*LATENCY_BOUNDS, math.inf]
        running = [int(by_le.get(edge, 0)) for edge in edges]
        counts = [running[0]] + [running[i] - running[i - 1] for i in range(1, len(running))]
        out[governor] = (counts, sums[governor])
    return out


FLUSH_EVERY = 60.0
"""Seconds between two flushes of a web node's decision histogram (``flush_latency_every``)."""
_last_flush = 0.0


def flush_latency_every(rt: Any, now: datetime, *, every: float = FLUSH_EVERY) -> int:
    """Flush this process's decisions at most once per ``every`` seconds; how many were added.

    Web nodes call it after their requests: staff actions are decided there, and without it their
    latencies would reach the dashboards only from processes that run the rollup refresh.
    """
    global _last_flush
    moment = time.monotonic()
    with _flush_lock:
        if moment - _last_flush < every:
            return 0
        _last_flush = moment
    with rt.db.session() as session:
        return flush_decision_latency(session, now)


def flush_decision_latency(session: Session, now: datetime) -> int:
    """Add the decisions this process observed since its last flush to ``now``'s hour; how many."""
    added = 0
    with _flush_lock:
        current = _latency_now()
        hour = hour_of(now)
        for governor, (counts, total) in sorted(current.items()):
            before, before_sum = _flushed.get(governor, ([0] * len(counts), 0.0))
            delta = [max(0, c - b) for c, b in zip(counts, before, strict=True)]
            n = sum(delta)
            _flushed[governor] = (counts, total)
            if n == 0:
                continue
            # Web nodes flush too (``flush_latency_every``), so several processes may add to one
            # row at once: make sure it exists (insert-or-nothing), then lock it for the addition.
            session.execute(
                _upsert(session)(RollupDecisionLatency)
                .values(hour=hour, governor=governor, count=0, sum_seconds=0.0, buckets=[])
                .on_conflict_do_nothing()
            )
            row = session.get(
                RollupDecisionLatency, (hour, governor), with_for_update=True, populate_existing=True
            )
            assert row is not None
            row.buckets = add_buckets(row.buckets or [], delta)
            row.count = (row.count or 0) + n
            row.sum_seconds = (row.sum_seconds or 0.0) + max(0.0, total - before_sum)
            added += n
    return added


# --------------------------------------------------------------------------- the refresh


@dataclass
class RefreshReport:
    """What one refresh counted."""

    transitions: int = 0
    durations: int = 0
    payments: int = 0
    sla_periods: int = 0
    decisions: int = 0
    state_rows: int = 0
    watermark: int = 0
    pending: bool = False

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly (the RQ job's result)."""
        return asdict(self)


def _upsert(session: Session) -> Any:
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


def _lock_watermark(session: Session) -> RollupWatermark:
    insert = _upsert(session)
    session.execute(
        insert(RollupWatermark)
        .values(name=WATERMARK, last_id=0)
        .on_conflict_do_nothing(index_elements=["name"])
    )
    mark = session.execute(
        select(RollupWatermark)
        .where(RollupWatermark.name == WATERMARK)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one()
    return mark


@dataclass
class _Batch:
    counts: dict[tuple[datetime, str, str, str, str], int] = field(default_factory=lambda: defaultdict(int))
    durations: dict[tuple[datetime, str, str], list[float]] = field(default_factory=lambda: defaultdict(list))
    payments: dict[tuple[datetime, str, str, str], int] = field(default_factory=lambda: defaultdict(int))
    sla: list[tuple[int, str, str | None, datetime, Mapping[str, Any]]] = field(default_factory=list)


def _history_rows(session: Session, after: int, limit: int) -> list[Any]:
    t = TransitionRecord
    prev = aliased(TransitionRecord)
    leaving = and_(t.from_state.is_not(None), t.from_state != t.to_state)
    entered = (
        select(func.min(prev.occurred_at))
        .where(prev.instance_id == t.instance_id, prev.state_seq == t.state_seq - 1)
        .correlate(t)
        .scalar_subquery()
    )
    wanted = t.event.in_([*PAYMENT_EVENTS, SLA_EVENT])
    return list(
        session.execute(
            select(
                t.id,
                t.governor,
                t.event,
                t.from_state,
                t.to_state,
                t.occurred_at,
                t.tenant_id,
                t.customer_id,
                case((leaving, entered), else_=None).label("entered"),
                case((wanted, t.payload), else_=None).label("payload"),
            )
            .where(t.id > after)
            .order_by(t.id)
            .limit(limit)
        )
    )


def _count_row(batch: _Batch, row: Any) -> None:
    at: datetime = row.occurred_at
    hour = hour_of(at)
    batch.counts[(hour, row.governor, row.event, row.from_state or "", row.to_state)] += 1
    entered: datetime | None = row.entered
    if entered is not None:
        if entered.tzinfo is None:  # SQLite returns the subquery's text without our column type
            entered = datetime.fromisoformat(str(entered)).replace(tzinfo=UTC)
        seconds = max(0.0, (at - entered).total_seconds())
        batch.durations[(hour.replace(hour=0), row.governor, row.from_state)].append(seconds)
    payload = row.payload if isinstance(row.payload, Mapping) else {}
    if row.governor == "billing" and row.event in PAYMENT_EVENTS:
        processor = str(payload.get("processor") or DEFAULT_PROCESSOR)[:40]
        outcome = PAYMENT_EVENTS[row.event]
        reason = "" if outcome == "received" else str(payload.get("decline_code") or "unknown")[:64]
        batch.payments[(hour, processor, outcome, reason)] += 1
    if row.governor == "quota_sla" and row.event == SLA_EVENT and row.customer_id:
        batch.sla.append((row.id, row.tenant_id, row.customer_id, at, payload))


def _add_counts(session: Session, model: Any, keys: Sequence[str], rows: list[dict[str, Any]]) -> None:
    """``count += n`` per key, inserting missing keys: one executemany of a cached upsert statement."""
    if not rows:
        return
    table = model.__table__
    stmt = _upsert(session)(table)
    stmt = stmt.on_conflict_do_update(
        index_elements=list(keys), set_={"count": table.c.count + stmt.excluded.count}
    )
    session.connection().execute(stmt, rows)


def _write_counts(session: Session, batch: _Batch) -> None:
    _add_counts(
        session,
        RollupTransitionHour,
        ("governor", "hour", "event", "from_state", "to_state"),
        [
            {"hour": h, "governor": g, "event": e, "from_state": f, "to_state": t, "count": n}
            for (h, g, e, f, t), n in batch.counts.items()
        ],
    )
    _add_counts(
        session,
        RollupPayment,
        ("hour", "processor", "outcome", "reason"),
        [
            {"hour": h, "processor": p, "outcome": o, "reason": r, "count": n}
            for (h, p, o, r), n in batch.payments.items()
        ],
    )
    if not batch.durations:
        return
    # One read of the rows this batch touches (not one per key): a bulk catch-up spans many days.
    days = [k[0] for k in batch.durations]
    existing = {
        (r.day, r.governor, r.state): r
        for r in session.scalars(
            select(RollupStateDuration).where(
                RollupStateDuration.day >= min(days), RollupStateDuration.day <= max(days)
            )
        )
    }
    with session.no_autoflush:
        for key, seconds in batch.durations.items():
            row = existing.get(key)
            if row is None:
                day, governor, state = key
                row = RollupStateDuration(day=day, governor=governor, state=state, count=0, sum_seconds=0.0)
                row.buckets = empty_buckets(DURATION_BOUNDS)
                session.add(row)
            buckets = list(row.buckets or empty_buckets(DURATION_BOUNDS))
            for sec in seconds:
                buckets[bucket_index(DURATION_BOUNDS, sec)] += 1
            row.buckets = buckets
            row.count = (row.count or 0) + len(seconds)
            row.sum_seconds = (row.sum_seconds or 0.0) + sum(seconds)


def refresh_rollups(
    session: Session,
    now: datetime,
    *,
    settings: Mapping[str, Any] | None = None,
    batch: int = BATCH,
    max_rows: int | None = None,
) -> RefreshReport:
    """Bring the rollup tables up to ``now`` inside ``session``'s transaction (the caller commits).

    ``max_rows`` bounds one run's history reading (the next run continues; ``pending`` says so).
    """
    report = RefreshReport()
    mark = _lock_watermark(session)
    last = int(mark.last_id)
    settled = now - SETTLE
    while max_rows is None or report.transitions < max_rows:
        size = batch if max_rows is None else min(batch, max_rows - report.transitions)
        rows = _history_rows(session, last, size)
        work = _Batch()
        fresh = False
        for row in rows:
            if row.occurred_at > settled:
                fresh = True
                break
            _count_row(work, row)
            last = int(row.id)
            report.transitions += 1
        _write_counts(session, work)
        report.durations += sum(len(v) for v in work.durations.values())
        report.payments += sum(work.payments.values())
        report.sla_periods += _record_sla(session, work.sla, settings)
        if fresh or len(rows) < size:
            break
    else:
        report.pending = True
    mark.last_id = last
    mark.refreshed_at = now
    report.watermark = last
    report.decisions = flush_decision_latency(session, now)
    report.state_rows = _snapshot_states(session, now)
    _recount_effects(session, now)
    _sample_gauges(session, now)
    session.flush()
    return report


def refresh_rollups_for(rt: Any, now: datetime) -> dict[str, Any]:
    """Refresh with a runtime's database and settings (the in-process runner and the job)."""
    with rt.db.session() as session:
        return refresh_rollups(session, now, settings=rt.settings).as_dict()


# --------------------------------------------------------------------------- snapshots


def _snapshot_states(session: Session, now: datetime) -> int:
    hour = hour_of(now)
    g = GovernorInstance
    rows = session.execute(
        select(
            g.governor,
            g.state,
            func.count(),
            func.count().filter(g.timeout_at < now - STUCK_GRACE),
            func.count().filter(g.attention.is_(True)),
        ).group_by(g.governor, g.state)
    ).all()
    session.execute(
        delete(RollupStateCount).where(
            (RollupStateCount.hour == hour) | (RollupStateCount.hour < hour - SNAPSHOT_KEEP)
        )
    )
    if rows:
        session.execute(
            _upsert(session)(RollupStateCount).values(
                [
                    {"hour": hour, "governor": gv, "state": st, "count": n, "overdue": o, "attention": a}
                    for gv, st, n, o, a in rows
                ]
            )
        )
    return len(rows)


def _recount_effects(session: Session, now: datetime) -> None:
    current = hour_of(now)
    for hour in (current - HOUR, current):
        runs, errors = session.execute(
            select(
                func.count(),
                func.count().filter(EffectRun.status.in_(("failed", "rejected"))),
            ).where(EffectRun.finished_at >= hour, EffectRun.finished_at < hour + HOUR)
        ).one()
        row = session.get(RollupEffectHour, hour)
        if row is None and not runs:
            continue
        if row is None:
            row = RollupEffectHour(hour=hour)
            session.add(row)
        row.runs, row.errors = int(runs), int(errors)


def _sample_gauges(session: Session, now: datetime) -> None:
    pending = session.scalar(select(func.count()).select_from(Approval).where(Approval.status == "pending"))
    session.add(RollupSample(metric="queue_depth", at=now, value=float(queue_depth(session))))
    session.add(RollupSample(metric="pending_approvals", at=now, value=float(pending or 0)))
    session.execute(delete(RollupSample).where(RollupSample.at < now - SAMPLE_KEEP))


# --------------------------------------------------------------------------- SLA periods


def _setting(settings: Mapping[str, Any] | None, key: str) -> Any:
    if settings is not None:
        try:
            return settings[key]
        except KeyError:
            pass
    from governors import default_settings

    return default_settings()[key]


def _record_sla(
    session: Session,
    items: Sequence[tuple[int, str, str | None, datetime, Mapping[str, Any]]],
    settings: Mapping[str, Any] | None,
) -> int:
    """Judge and store the batch's closed SLA periods (a handful of reads for the whole batch)."""
    wanted = [(i, t, c, at, p, str(p.get("period") or "")[:32]) for i, t, c, at, p in items if c]
    wanted = [w for w in wanted if w[5]]
    if not wanted:
        return 0
    customers = sorted({w[2] for w in wanted if w[2]})
    seen = {
        (str(c), str(p))
        for c, p in session.execute(
            select(RollupSlaPeriod.customer_id, RollupSlaPeriod.period).where(
                RollupSlaPeriod.customer_id.in_(customers)
            )
        )
    }
    data: dict[tuple[str, str], Mapping[str, Any]] = {}
    for cid, governor, values in session.execute(
        select(GovernorInstance.customer_id, GovernorInstance.governor, GovernorInstance.data).where(
            GovernorInstance.customer_id.in_(customers),
            GovernorInstance.governor.in_(("quota_sla", "subscription")),
        )
    ):
        if isinstance(values, Mapping):
            data.setdefault((str(cid), str(governor)), values)
    listed = {
        str(c): str(t)
        for c, t in session.execute(select(Customer.id, Customer.tier).where(Customer.id.in_(customers)))
    }
    periods = sorted({w[5] for w in wanted})
    tiers = {
        (r.period, r.tier): r
        for r in session.scalars(select(RollupSlaTier).where(RollupSlaTier.period.in_(periods)))
    }
    targets = _setting(settings, "quota_sla.sla_targets")
    formula = {k: _setting(settings, f"quota_sla.{k}") for k in SLA_FORMULA_KEYS}
    prices = _setting(settings, "subscription.monthly_price_cents")
    added = 0
    with session.no_autoflush:
        for transition_id, tenant_id, customer_id, at, payload, period in wanted:
            assert customer_id is not None
            if (customer_id, period) in seen:
                continue  # already counted (a replayed history row)
            seen.add((customer_id, period))
            quota = data.get((customer_id, "quota_sla"), {})
            tier = str(quota.get("tier") or listed.get(customer_id) or "unknown")[:32]
            assessed = assess_period(
                tier,
                payload,
                targets=targets,
                formula=formula,
                monthly_cents=_monthly_cents(data.get((customer_id, "subscription"), {}), tier, prices),
            )
            if assessed is None:
                continue  # a tier without an SLA (free, trial)
            session.add(
                RollupSlaPeriod(
                    customer_id=customer_id,
                    period=period,
                    tenant_id=tenant_id,
                    tier=tier,
                    closed_at=at,
                    transition_id=transition_id,
                    **assessed.columns(),
                )
            )
            tier_row = tiers.get((period, tier))
            if tier_row is None:
                tier_row = RollupSlaTier(
                    period=period,
                    tier=tier,
                    periods=0,
                    uptime_met=0,
                    p99_measured=0,
                    p99_met=0,
                    violations=0,
                    uptime_sum=0.0,
                    p99_sum=0.0,
                    credit_cents=0,
                    closed_at=at,
                )
                tiers[(period, tier)] = tier_row
                session.add(tier_row)
            tier_row.periods += 1
            tier_row.uptime_met += int(assessed.uptime_met)
            tier_row.uptime_sum += float(assessed.uptime_pct)
            if assessed.p99_ms is not None:
                tier_row.p99_measured += 1
                tier_row.p99_sum += assessed.p99_ms
                tier_row.p99_met += int(bool(assessed.p99_met))
            tier_row.violations += int(assessed.violated)
            tier_row.credit_cents += assessed.credit_cents
            tier_row.closed_at = max(tier_row.closed_at, at)
            added += 1
    session.flush()
    return added


SLA_FORMULA_KEYS: Final = (
    "sla_uptime_cap_pct",
    "sla_uptime_factor",
    "sla_p99_penalty_pct",
    "sla_error_penalty_pct",
    "sla_total_cap_pct",
)


def _monthly_cents(subscription: Mapping[str, Any], tier: str, prices: Any) -> int:
    """The customer's monthly price (its subscription's, else the tier's list price; 0 if unknown)."""
    price = subscription.get("monthly_price_cents")
    if isinstance(price, int) and not isinstance(price, bool) and price > 0:
        return price
    listed = prices.get(tier) if isinstance(prices, Mapping) else None
    return int(listed) if isinstance(listed, int) else 0


# --------------------------------------------------------------------------- reads for the dashboards


@dataclass(frozen=True)
class LatencyPoint:
    """One hour of decision latency (all governors together)."""

    hour: datetime
    count: int
    p50: float | None
    p95: float | None
    p99: float | None


def decision_latency_series(session: Session, since: datetime, until: datetime) -> list[LatencyPoint]:
    """Per hour in ``[since, until)``: decisions and P50/P95/P99 (seconds) over every governor."""
    merged: dict[datetime, list[int]] = {}
    for hour, buckets in session.execute(
        select(RollupDecisionLatency.hour, RollupDecisionLatency.buckets).where(
            RollupDecisionLatency.hour >= hour_of(since), RollupDecisionLatency.hour < until
        )
    ):
        merged[hour] = add_buckets(merged.get(hour, []), buckets or [])
    out = []
    for hour in sorted(merged):
        p = Percentiles.of(LATENCY_BOUNDS, merged[hour])
        out.append(LatencyPoint(hour, p.count, p.p50, p.p95, p.p99))
    return out


def decision_latency_by_governor(
    session: Session, since: datetime, until: datetime
) -> dict[str, Percentiles]:
    """Per governor over the window: decisions and P50/P95/P99 (seconds), plus P25/P75 for the box."""
    merged: dict[str, list[int]] = {}
    sums: dict[str, float] = defaultdict(float)
    for governor, buckets, total in session.execute(
        select(
            RollupDecisionLatency.governor, RollupDecisionLatency.buckets, RollupDecisionLatency.sum_seconds
        ).where(RollupDecisionLatency.hour >= hour_of(since), RollupDecisionLatency.hour < until)
    ):
        merged[governor] = add_buckets(merged.get(governor, []), buckets or [])
        sums[governor] += float(total or 0.0)
    return {g: Percentiles.of(LATENCY_BOUNDS, merged[g], sums[g]) for g in sorted(merged)}


def latency_quantiles(
    session: Session, since: datetime, until: datetime, qs: Iterable[float]
) -> dict[str, list[float | None]]:
    """Per governor, the requested quantiles (seconds) over the window (the box plot's five numbers)."""
    merged: dict[str, list[int]] = {}
    for governor, buckets in session.execute(
        select(RollupDecisionLatency.governor, RollupDecisionLatency.buckets).where(
            RollupDecisionLatency.hour >= hour_of(since), RollupDecisionLatency.hour < until
        )
    ):
        merged[governor] = add_buckets(merged.get(governor, []), buckets or [])
    wanted = list(qs)
    return {g: [histogram_quantile(LATENCY_BOUNDS, merged[g], q) for q in wanted] for g in sorted(merged)}


@dataclass(frozen=True)
class StateTime:
    """Time spent in one governor state over the window (seconds)."""

    governor: str
    state: str
    stats: Percentiles


def time_in_state(session: Session, since: datetime, until: datetime) -> list[StateTime]:
    """Per governor and state: completed stays in the window, with P50/P95/P99 durations."""
    merged: dict[tuple[str, str], list[int]] = {}
    sums: dict[tuple[str, str], float] = defaultdict(float)
    for governor, state, buckets, total in session.execute(
        select(
            RollupStateDuration.governor,
            RollupStateDuration.state,
            RollupStateDuration.buckets,
            RollupStateDuration.sum_seconds,
        ).where(RollupStateDuration.day >= hour_of(since).replace(hour=0), RollupStateDuration.day < until)
    ):
        key = (governor, state)
        merged[key] = add_buckets(merged.get(key, []), buckets or [])
        sums[key] += float(total or 0.0)
    return [
        StateTime(g, s, Percentiles.of(DURATION_BOUNDS, merged[(g, s)], sums[(g, s)]))
        for g, s in sorted(merged)
    ]


@dataclass(frozen=True)
class StateCount:
    """Instances of a governor in a state at the last refresh."""

    governor: str
    state: str
    count: int
    overdue: int
    attention: int


def latest_state_counts(session: Session) -> tuple[datetime | None, list[StateCount]]:
    """The newest snapshot (its hour and rows); (None, []) before the first refresh."""
    latest = session.scalar(select(func.max(RollupStateCount.hour)))
    if latest is None:
        return None, []
    rows = session.execute(
        select(
            RollupStateCount.governor,
            RollupStateCount.state,
            RollupStateCount.count,
            RollupStateCount.overdue,
            RollupStateCount.attention,
        )
        .where(RollupStateCount.hour == latest)
        .order_by(RollupStateCount.governor, RollupStateCount.state)
    ).all()
    return latest, [StateCount(*r) for r in rows]


def refreshed_at(session: Session) -> datetime | None:
    """When the rollups were last refreshed (None: never)."""
    return session.scalar(select(RollupWatermark.refreshed_at).where(RollupWatermark.name == WATERMARK))


def transition_counts(
    session: Session, governor: str, since: datetime, until: datetime
) -> list[tuple[datetime, str, str, str, int]]:
    """(hour, event, from_state, to_state, count) rows of one governor in the window."""
    t = RollupTransitionHour
    return [
        (h, e, f, s, int(n))
        for h, e, f, s, n in session.execute(
            select(t.hour, t.event, t.from_state, t.to_state, t.count)
            .where(t.governor == governor, t.hour >= hour_of(since), t.hour < until)
            .order_by(t.hour)
        )
    ]


def transition_counts_by_bucket(
    session: Session, governor: str, edges: Sequence[datetime], until: datetime
) -> list[tuple[int, str, str, str, int]]:
    """(bucket, event, from_state, to_state, count) of one governor, summed in SQL per time bucket.

    Bucket ``i`` holds the hours in ``[edges[i], edges[i + 1])`` (the last one up to ``until``), so a
    12-week chart reads a few dozen sums instead of every hourly row.
    """
    t = RollupTransitionHour
    if session.get_bind().dialect.name == "postgresql":
        # A binary search over the edges per row, in C: the CASE below tests up to one edge after
        # another (12 for a 12-week chart) for each of thousands of hourly rows.
        bounds = postgresql.array([literal(edge, t.hour.type) for edge in edges])
        which: Any = func.width_bucket(t.hour, bounds) - 1
    else:
        which = case(*[(t.hour >= edge, i) for i, edge in reversed(list(enumerate(edges)))], else_=-1)
    inner = (
        select(which.label("bucket"), t.event, t.from_state, t.to_state, t.count)
        .where(t.governor == governor, t.hour >= edges[0], t.hour < until)
        .subquery()
    )
    rows = session.execute(
        select(inner.c.bucket, inner.c.event, inner.c.from_state, inner.c.to_state, func.sum(inner.c.count))
        .group_by(inner.c.bucket, inner.c.event, inner.c.from_state, inner.c.to_state)
        .order_by(inner.c.bucket)
    )
    return [(int(b), e, f, s, int(n)) for b, e, f, s, n in rows]


def hourly_error_rate(session: Session, since: datetime, until: datetime) -> list[tuple[datetime, int, int]]:
    """(hour, effect runs, errors) per hour in the window."""
    return [
        (h, int(r), int(e))
        for h, r, e in session.execute(
            select(RollupEffectHour.hour, RollupEffectHour.runs, RollupEffectHour.errors)
            .where(RollupEffectHour.hour >= hour_of(since), RollupEffectHour.hour < until)
            .order_by(RollupEffectHour.hour)
        )
    ]


def samples(session: Session, metric: str, since: datetime, until: datetime) -> list[tuple[datetime, float]]:
    """Gauge readings of ``metric`` in the window, oldest first."""
    return [
        (at, float(v))
        for at, v in session.execute(
            select(RollupSample.at, RollupSample.value)
            .where(RollupSample.metric == metric, RollupSample.at >= since, RollupSample.at <= until)
            .order_by(RollupSample.at)
        )
    ]


def payments(session: Session, since: datetime, until: datetime) -> list[tuple[datetime, str, str, str, int]]:
    """(hour, processor, outcome, reason, count) payment rows in the window."""
    p = RollupPayment
    return [
        (h, pr, o, r, int(n))
        for h, pr, o, r, n in session.execute(
            select(p.hour, p.processor, p.outcome, p.reason, p.count)
            .where(p.hour >= hour_of(since), p.hour < until)
            .order_by(p.hour)
        )
    ]


def as_decimal(text: str | None) -> Decimal | None:
    """A stored decimal text as Decimal (None stays None)."""
    return None if text is None else to_decimal(text)


__all__ = [
    "DURATION_BOUNDS",
    "LATENCY_BOUNDS",
    "Percentiles",
    "RefreshReport",
    "decision_latency_by_governor",
    "decision_latency_series",
    "flush_decision_latency",
    "histogram_quantile",
    "latest_state_counts",
    "refresh_rollups",
    "refresh_rollups_for",
    "time_in_state",
]
