"""The rollup job: hand-computed counts, times in state, payments, SLA credits; incremental, idempotent.

The fixture is a small history written straight into ``transitions`` (the job's only input for these
rollups), with known timestamps, so every number below is computed by hand in the comments.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.services.conftest import NOW
from webapp.db import Database
from webapp.metrics import observe_decision
from webapp.models import Customer, GovernorInstance, Tenant, TransitionRecord
from webapp.models.rollups import (
    RollupDecisionLatency,
    RollupPayment,
    RollupSlaPeriod,
    RollupSlaTier,
    RollupStateCount,
    RollupStateDuration,
    RollupTransitionHour,
    RollupWatermark,
)
from webapp.services import rollups
from webapp.services.rollups import (
    DURATION_BOUNDS,
    LATENCY_BOUNDS,
    bucket_index,
    flush_decision_latency,
    histogram_quantile,
    refresh_rollups,
)

T0 = NOW - timedelta(days=2)  # 2026-02-28 09:00 UTC
LATER = NOW + timedelta(hours=1)


def test_histogram_quantile_interpolates_inside_the_bucket() -> None:
    bounds = (1.0, 2.0, 4.0)
    # 10 observations: 2 in (0,1], 6 in (1,2], 2 in (2,4].
    counts = [2, 6, 2, 0]
    assert histogram_quantile(bounds, counts, 0.5) == pytest.approx(1.0 + (5 - 2) / 6)  # rank 5
    assert histogram_quantile(bounds, counts, 0.99) == pytest.approx(2.0 + 2.0 * (9.9 - 8) / 2)
    assert histogram_quantile(bounds, [0, 0, 0, 3], 0.5) == 4.0  # +Inf answers the top bound
    assert histogram_quantile(bounds, [0, 0, 0, 0], 0.5) is None


_seq = iter(range(1, 10_000))


def _t(
    instance: str,
    governor: str,
    event: str,
    frm: str | None,
    to: str,
    seq: int,
    at: datetime,
    payload: dict[str, Any] | None = None,
    customer: str = "c-1",
    changes: dict[str, Any] | None = None,
) -> TransitionRecord:
    return TransitionRecord(
        tenant_id="t-1",
        customer_id=customer,
        instance_id=instance,
        governor=governor,
        row_id="R",
        event=event,
        from_state=frm,
        to_state=to,
        state_seq=seq,
        actor="system",
        role="sys",
        payload=payload or {},
        changes=changes or {},
        timers={},
        event_id=f"ev-{next(_seq)}",
        occurred_at=at,
    )


def _instance(iid: str, governor: str, state: str, customer: str = "c-1", **kw: Any) -> GovernorInstance:
    return GovernorInstance(
        id=iid,
        tenant_id="t-1",
        customer_id=customer,
        governor=governor,
        state=state,
        entered_at=kw.pop("entered_at", T0),
        created_at=T0,
        updated_at=T0,
        data=kw.pop("data", {}),
        timers={},
        **kw,
    )


def seed_history(db: Database) -> None:
    """Two customers, two subscriptions, two invoices, two closed SLA periods (see the test)."""
    with db.session() as s:
        s.add(Tenant(id="t-1", name="T", created_at=T0))
        s.flush()
        s.add(
            Customer(
                id="c-1", tenant_id="t-1", name="A", email="a@x.test", tier="professional", created_at=T0
            )
        )
        s.add(Customer(id="c-2", tenant_id="t-1", name="B", email="b@x.test", tier="starter", created_at=T0))
        s.flush()
        s.add_all(
            [
                _instance("sub-1", "subscription", "cancelled", data={"monthly_price_cents": 9999}),
                _instance("sub-2", "subscription", "trial_ended", customer="c-2"),
                # Stuck: its timer is 10 minutes past at LATER (more than the 5-minute grace).
                _instance("inv-1", "billing", "payment_received", timeout_at=LATER - timedelta(minutes=10)),
                _instance("inv-2", "billing", "payment_received", customer="c-2", attention=True),
                _instance("quo-1", "quota_sla", "within_limits", data={"tier": "professional"}),
                _instance("quo-2", "quota_sla", "within_limits", customer="c-2", data={"tier": "starter"}),
            ]
        )
        s.add_all(
            [
                # sub-1: trial 2 h, then active 24 h (a self-transition in between), then cancelled.
                _t("sub-1", "subscription", "create", None, "trial", 1, T0),
                _t("sub-1", "subscription", "purchase", "trial", "active", 2, T0 + timedelta(hours=2)),
                _t("sub-1", "subscription", "renew", "active", "active", 2, T0 + timedelta(hours=3)),
                _t("sub-1", "subscription", "cancel", "active", "cancelled", 3, T0 + timedelta(hours=26)),
                # sub-2: trial 30 min, then trial_ended.
                _t("sub-2", "subscription", "create", None, "trial", 1, T0, customer="c-2"),
                _t(
                    "sub-2",
                    "subscription",
                    "trial_expired",
                    "trial",
                    "trial_ended",
                    2,
                    T0 + timedelta(minutes=30),
                    customer="c-2",
                ),
                # inv-1: declined (insufficient funds), then paid on retry 1 through "stripe".
                _t("inv-1", "billing", "invoice_delivered", "invoice_issued", "payment_pending", 2, T0),
                _t(
                    "inv-1",
                    "billing",
                    "payment_declined",
                    "payment_pending",
                    "payment_failed",
                    3,
                    T0 + timedelta(hours=1),
                    {"decline_code": "insufficient_funds"},
                ),
                _t("inv-1", "billing", "retry_due", "payment_failed", "retry_1", 4, T0 + timedelta(hours=3)),
                _t(
                    "inv-1",
                    "billing",
                    "payment_received",
                    "retry_1",
                    "payment_received",
                    5,
                    T0 + timedelta(hours=3, minutes=20),
                    {"amount_cents": 100, "processor": "stripe"},
                ),
                # inv-2: paid at once on the default processor.
                _t(
                    "inv-2",
                    "billing",
                    "payment_received",
                    "payment_pending",
                    "payment_received",
                    3,
                    T0 + timedelta(hours=1, minutes=10),
                    {"amount_cents": 100},
                    customer="c-2",
                ),
                # SLA periods: c-1 professional misses uptime (99.5 < 99.9) and p99 (700 > 500) ...
                _t(
                    "quo-1",
                    "quota_sla",
                    "sla_period_closed",
                    "within_limits",
                    "within_limits",
                    1,
                    NOW - timedelta(hours=2),
                    {"period": "2026-02", "uptime_pct": "99.5", "p99_ms": 700, "error_rate_pct": "0.05"},
                ),
                # ... c-2 starter meets everything.
                _t(
                    "quo-2",
                    "quota_sla",
                    "sla_period_closed",
                    "within_limits",
                    "within_limits",
                    1,
                    NOW - timedelta(hours=2),
                    {"period": "2026-02", "uptime_pct": "99.9", "p99_ms": 1000},
                    customer="c-2",
                ),
            ]
        )


def _refresh(db: Database, now: datetime = LATER) -> rollups.RefreshReport:
    with db.session() as s:
        return refresh_rollups(s, now)


def _counts(db: Database) -> dict[tuple[str, str, str, str], int]:
    with db.session() as s:
        out: dict[tuple[str, str, str, str], int] = {}
        for r in s.scalars(select(RollupTransitionHour)):
            key = (r.governor, r.event, r.from_state, r.to_state)
            out[key] = out.get(key, 0) + r.count
        return out


def test_refresh_rolls_up_a_known_history(db: Database) -> None:
    seed_history(db)
    report = _refresh(db)
    assert report.transitions == 13
    assert report.watermark == 13
    counts = _counts(db)
    assert counts[("subscription", "create", "", "trial")] == 2
    assert counts[("subscription", "renew", "active", "active")] == 1
    assert counts[("billing", "payment_received", "retry_1", "payment_received")] == 1
    assert sum(counts.values()) == 13

    with db.session() as s:
        stays = {
            (r.governor, r.state, r.day): (r.count, r.sum_seconds, r.buckets)
            for r in s.scalars(select(RollupStateDuration))
        }
    day0 = T0.replace(hour=0)  # 2026-02-28, the day both trials ended
    # Trials: sub-1 2 h = 7200 s (bucket "≤ 7200 s") and sub-2 30 min = 1800 s (bucket "≤ 1800 s").
    count, total, buckets = stays[("subscription", "trial", day0)]
    assert (count, total) == (2, 9000.0)
    assert buckets[bucket_index(DURATION_BOUNDS, 7200)] == 1
    assert DURATION_BOUNDS[bucket_index(DURATION_BOUNDS, 7200)] == 7200
    assert buckets[bucket_index(DURATION_BOUNDS, 1800)] == 1 and sum(buckets) == 2
    # active of sub-1: entered at T0+2h (the self-transition does not restart it), left at T0+26h,
    # on the next day.
    assert stays[("subscription", "active", day0 + timedelta(days=1))][:2] == (1, 86400.0)
    # billing: payment_pending 1 h (T0 → T0+1h), payment_failed 2 h, retry_1 20 min; inv-2's first
    # row has no earlier row of its instance, so its payment_pending stay is not known (not counted).
    assert stays[("billing", "payment_pending", day0)][:2] == (1, 3600.0)
    assert stays[("billing", "payment_failed", day0)][:2] == (1, 7200.0)
    assert stays[("billing", "retry_1", day0)][:2] == (1, 1200.0)
    assert report.durations == 6  # trial ×2, active, payment_pending, payment_failed, retry_1

    with db.session() as s:
        states = rollups.time_in_state(s, T0 - timedelta(days=1), LATER)
    trial = next(x for x in states if (x.governor, x.state) == ("subscription", "trial"))
    # Two trials: 1800 s (bucket (600, 1800]) and 7200 s (bucket (3600, 7200]).
    # P50: rank 1 → fully the first bucket → 1800. P99: rank 1.98 → 3600 + 3600 × 0.98 = 7128.
    assert trial.stats.count == 2
    assert trial.stats.p50 == pytest.approx(1800.0)
    assert trial.stats.p99 == pytest.approx(7128.0)
    assert trial.stats.mean == pytest.approx(4500.0)

    with db.session() as s:
        pays = {(r.processor, r.outcome, r.reason): r.count for r in s.scalars(select(RollupPayment))}
    assert pays == {
        ("sandbox", "declined", "insufficient_funds"): 1,
        ("stripe", "received", ""): 1,
        ("sandbox", "received", ""): 1,
    }

    with db.session() as s:
        periods = {r.customer_id: r for r in s.scalars(select(RollupSlaPeriod))}
        tiers = {r.tier: r for r in s.scalars(select(RollupSlaTier))}
    c1 = periods["c-1"]
    # credit = min(10, 10 × (99.9 − 99.5)) + 5 (p99 700 > 500) = 4 + 5 = 9 %; error 0.05 ≤ 0.1 is met.
    assert (c1.tier, c1.uptime_met, c1.p99_met, c1.error_met, c1.violated) == (
        "professional", False, False, True, True,
    )  # fmt: skip
    assert c1.credit_pct == "9"
    assert c1.credit_cents == 900  # 9 % of 9999 = 899.91 → 900
    assert c1.detail["missed"] == ["uptime", "latency"]
    c2 = periods["c-2"]
    assert (c2.violated, c2.credit_pct, c2.credit_cents) == (False, "0", 0)
    assert (tiers["professional"].periods, tiers["professional"].violations) == (1, 1)
    assert tiers["professional"].credit_cents == 900
    assert (tiers["starter"].uptime_met, tiers["starter"].p99_met) == (1, 1)

    with db.session() as s:
        snap = {
            (r.governor, r.state): (r.count, r.overdue, r.attention)
            for r in s.scalars(select(RollupStateCount))
        }
    assert snap[("billing", "payment_received")] == (2, 1, 1)
    assert snap[("subscription", "cancelled")] == (1, 0, 0)


def test_refresh_is_incremental_and_idempotent(db: Database) -> None:
    seed_history(db)
    _refresh(db)
    first = _counts(db)
    again = _refresh(db)
    assert again.transitions == 0
    assert _counts(db) == first
    with db.session() as s:
        assert s.scalar(select(func.sum(RollupStateDuration.count))) == 6
        assert s.scalar(select(func.count()).select_from(RollupSlaPeriod)) == 2
        assert s.scalar(select(RollupSlaTier.periods).where(RollupSlaTier.tier == "professional")) == 1

    # One new row (sub-2 converts after its trial ended) and one too young to count yet.
    with db.session() as s:
        s.add(_t("sub-2", "subscription", "purchase", "trial_ended", "active", 3, NOW, customer="c-2"))
        s.add(
            _t(
                "sub-2",
                "subscription",
                "pause",
                "active",
                "paused",
                4,
                LATER - timedelta(seconds=10),
                customer="c-2",
            )
        )
    third = _refresh(db)
    assert third.transitions == 1
    assert third.watermark == 14
    counts = _counts(db)
    assert counts[("subscription", "purchase", "trial_ended", "active")] == 1
    assert ("subscription", "pause", "active", "paused") not in counts
    with db.session() as s:
        # trial_ended of sub-2: entered at T0+30min, left at NOW = 2 days − 30 min.
        row = s.scalars(select(RollupStateDuration).where(RollupStateDuration.state == "trial_ended")).one()
        assert row.sum_seconds == (NOW - T0 - timedelta(minutes=30)).total_seconds()

    # A minute later the young row has settled and is counted, once.
    fourth = _refresh(db, LATER + timedelta(minutes=2))
    assert fourth.transitions == 1
    assert _counts(db)[("subscription", "pause", "active", "paused")] == 1
    with db.session() as s:
        assert s.get(RollupWatermark, "transitions").last_id == 15  # type: ignore[union-attr]


def test_a_rolled_back_refresh_counts_nothing(db: Database) -> None:
    seed_history(db)

    def dies_before_commit() -> None:
        with db.session() as s:
            refresh_rollups(s, LATER)
            raise RuntimeError("the job died before committing")

    with pytest.raises(RuntimeError):
        dies_before_commit()
    assert _counts(db) == {}
    assert _refresh(db).transitions == 13


def test_decision_latency_is_flushed_from_the_process_histogram(db: Database) -> None:
    with db.session() as s:
        flush_decision_latency(s, NOW)  # baseline: whatever this process observed before
        s.execute(RollupDecisionLatency.__table__.delete())
    # Five decisions of a governor name no other test uses: 50 ms, 300 ms ×2, 700 ms, 3 s.
    for seconds in (0.05, 0.3, 0.3, 0.7, 3.0):
        observe_decision("rollup_test", seconds)
    with db.session() as s:
        assert flush_decision_latency(s, NOW) >= 5
    with db.session() as s:
        row = s.get(RollupDecisionLatency, (NOW, "rollup_test"))
        assert row is not None
        # Buckets ≤0.1, ≤0.25, ≤0.5, ≤1, ≤2, ≤5, +Inf.
        assert row.buckets == [1, 0, 2, 1, 0, 1, 0]
        assert row.count == 5
        assert row.sum_seconds == pytest.approx(4.35)
        by_gov = rollups.decision_latency_by_governor(s, NOW, NOW + timedelta(hours=1))
    p = by_gov["rollup_test"]
    # P50: rank 2.5 → bucket (0.25, 0.5] holding ranks 2..3 → 0.25 + 0.25 × 1.5/2 = 0.4375.
    assert p.p50 == pytest.approx(0.4375)
    # P99: rank 4.95 → bucket (2, 5] (rank 5) → 2 + 3 × 0.95 = 4.85.
    assert p.p99 == pytest.approx(4.85)
    assert LATENCY_BOUNDS == (0.1, 0.25, 0.5, 1.0, 2.0, 5.0)
    # Flushing again adds nothing new (the process remembers what it flushed).
    with db.session() as s:
        flush_decision_latency(s, NOW)
        assert s.get(RollupDecisionLatency, (NOW, "rollup_test")).count == 5  # type: ignore[union-attr]


def test_the_background_runners_refresh_the_rollups(db: Database, pg_url: str) -> None:
    """The demo's in-process runner (its timer sweep) and the RQ sweep's housekeeping both refresh."""
    from webapp.config import Config
    from webapp.jobs import InProcessRunner, housekeeping
    from webapp.runtime import Runtime

    seed_history(db)
    rt = Runtime.from_config(Config.from_env({"DATABASE_URL": pg_url}, testing=True))
    try:
        InProcessRunner(rt).run_once(LATER, sweep=True)
        with db.session() as s:
            mark = s.get(RollupWatermark, "transitions")
            assert mark is not None and (mark.last_id, mark.refreshed_at) == (13, LATER)
        result = housekeeping(rt, LATER)["rollups"]  # what periodic_sweep runs on an RQ worker
        assert result["transitions"] == 0 and result["watermark"] == 13
    finally:
        rt.close()
    assert sum(_counts(db).values()) == 13


def test_transition_counts_are_summed_into_the_buckets_their_hours_fall_in(db: Database) -> None:
    edges = [datetime(2026, 1, 5, tzinfo=UTC) + timedelta(weeks=i) for i in range(4)]
    until = edges[-1] + timedelta(days=3)
    hours = {
        edges[0] - timedelta(hours=1): None,  # before the first edge: not counted
        edges[0]: 0,  # on an edge: the bucket it starts
        edges[1] - timedelta(hours=1): 0,
        edges[1]: 1,
        edges[2] + timedelta(hours=5): 2,
        edges[3]: 3,
        until - timedelta(hours=1): 3,  # the last bucket runs up to ``until``
        until: None,
    }
    with db.session() as s:
        for n, hour in enumerate(hours, 1):
            s.add(
                RollupTransitionHour(
                    governor="billing", hour=hour, event="pay", from_state="a", to_state="b", count=n
                )
            )
        s.add(
            RollupTransitionHour(
                governor="billing", hour=edges[1], event="fail", from_state="a", to_state="c", count=7
            )
        )
        s.add(
            RollupTransitionHour(
                governor="entitlement", hour=edges[1], event="pay", from_state="a", to_state="b", count=9
            )
        )
    expected: dict[tuple[int, str], int] = {}
    for n, bucket in enumerate(hours.values(), 1):
        if bucket is not None:
            expected[(bucket, "pay")] = expected.get((bucket, "pay"), 0) + n
    expected[(1, "fail")] = 7
    with db.session() as s:
        rows = rollups.transition_counts_by_bucket(s, "billing", edges, until)
    assert {(b, e): n for b, e, _f, _t, n in rows} == expected
    assert [b for b, *_ in rows] == sorted(b for b, *_ in rows)
