"""Multi-Tenant governor (GOVERNORS.md §8): every row, rejection, sustained rule, timer and cascade."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import pytest

from governors import Decision, Facts, Instance, Rejection, apply, decide
from governors.definitions.multi_tenant import GOVERNOR
from governors.rules.multi_tenant import tracking
from governors.spec import FourEyes
from tests.governors.tables import NOW, SETTINGS, Case, Instances, Table, ago, make_facts, where

REASON = "on-call decision after paging"

BASE: dict[str, Any] = {
    "tier": "professional",
    "tier_weight_percent": 35.0,
    "allocation_percent": 35.0,
    "pool_id": "pool-a",
    "last_snapshot_ts": NOW - timedelta(seconds=10),
}
CAPPED: dict[str, Any] = {**BASE, "allocation_cap_percent": 50.0, "allocation_percent": 17.5, "culprit": True}
MEASURES: dict[str, Any] = {**CAPPED, "breaker_open": True, "shed_features": ["analytics", "recommendations"]}


def metrics(**over: float) -> dict[str, float]:
    base = {
        "cpu": 40.0,
        "memory": 50.0,
        "network": 20.0,
        "disk_io": 10.0,
        "error_rate": 0.2,
        "impact_percent": 1.0,
    }
    return {**base, **over}


def snap(**over: float) -> dict[str, Any]:
    return {"metrics": metrics(**over), "snapshot_ts": NOW}


# A tenant of customer c1 in pool-a.
make = Instances("multi_tenant", "mt-1", 4, timedelta(hours=1), customer_id="c1")


# A timer fires at the instance's seq; staff give REASON; the actor is always u1.
facts = partial(make_facts, reason=REASON, seq=4, actor="u1")


FAN_OUT = {"pool_event_id": "pe-1", "origin_tenant_id": "c9"}

CASES: list[Any] = [
    # M01 noisy neighbour (else Mx7 records the snapshot)
    pytest.param(
        Case(
            "M01",
            "healthy",
            "metrics_snapshot",
            "sys",
            "resource_contention",
            snap(cpu=80, impact_percent=6),
            {**BASE, "high_usage_since": ago(seconds=40)},
        ),
        id="M01-ok",
    ),
    pytest.param(
        Case(
            "Mx7",
            "healthy",
            "metrics_snapshot",
            "sys",
            "healthy",
            snap(cpu=80, impact_percent=6),
            {**BASE, "high_usage_since": ago(seconds=30)},
        ),
        id="M01-not-yet-30s",
    ),
    pytest.param(
        Case(
            "Mx7",
            "healthy",
            "metrics_snapshot",
            "sys",
            "healthy",
            snap(cpu=80, impact_percent=4),
            {**BASE, "high_usage_since": ago(minutes=5)},
        ),
        id="M01-impact-too-small",
    ),
    pytest.param(
        Case("M01", "healthy", "metrics_snapshot", "sys", "resource_contention", snap(disk_io=95), BASE),
        id="M01-disk-io-signal",
    ),
    pytest.param(
        Case(
            "M01",
            "healthy",
            "metrics_snapshot",
            "sys",
            "resource_contention",
            snap(cpu=85, others_max_cpu=10),
            BASE,
        ),
        id="M01-cpu-dominant-signal",
    ),
    pytest.param(
        Case(
            "M01",
            "healthy",
            "metrics_snapshot",
            "sys",
            "resource_contention",
            snap(impact_percent=7),
            {**BASE, "noisy_flagged_at": ago(minutes=2)},
        ),
        id="M01-quota-flag",
    ),
    pytest.param(
        Case(
            "Mx7",
            "healthy",
            "metrics_snapshot",
            "sys",
            "healthy",
            snap(impact_percent=7),
            {**BASE, "noisy_flagged_at": ago(minutes=6)},
        ),
        id="M01-quota-flag-expired",
    ),
    pytest.param(
        Case(
            "M01",
            "healthy",
            "metrics_snapshot",
            "sys",
            "guard_failed",
            {"metrics": {"cpu": 10}, "snapshot_ts": NOW},
            BASE,
        ),
        id="snapshot-incomplete",
    ),
    pytest.param(
        Case(
            "M01",
            "healthy",
            "metrics_snapshot",
            "sys",
            "guard_failed",
            {**snap(), "snapshot_ts": ago(seconds=20)},
            BASE,
        ),
        id="snapshot-out-of-order",
    ),
    pytest.param(
        Case("M01", "healthy", "metrics_snapshot", "sys", "invalid_input", {"metrics": metrics()}, BASE),
        id="snapshot-no-timestamp",
    ),
    pytest.param(
        Case("M01", "healthy", "metrics_snapshot", "admin", "role_not_allowed", snap(), BASE),
        id="snapshot-by-staff",
    ),
    # M02 contention clears
    pytest.param(
        Case(
            "M02",
            "resource_contention",
            "metrics_snapshot",
            "sys",
            "healthy",
            snap(),
            {**CAPPED, "low_usage_since": ago(minutes=5)},
        ),
        id="M02-ok",
    ),
    pytest.param(
        Case(
            "Mx7",
            "resource_contention",
            "metrics_snapshot",
            "sys",
            "resource_contention",
            snap(),
            {**CAPPED, "low_usage_since": ago(minutes=5)},
            entered=ago(minutes=2),
        ),
        id="M02-entered-recently",
    ),
    pytest.param(
        Case(
            "Mx7",
            "resource_contention",
            "metrics_snapshot",
            "sys",
            "resource_contention",
            snap(memory=76),
            {**CAPPED, "low_usage_since": ago(minutes=9)},
        ),
        id="M02-usage-high-again",
    ),
    # M03 rebalance
    pytest.param(
        Case(
            "M03",
            "resource_contention",
            "rebalance_authorized",
            "admin",
            "load_balancing",
            {"target_node": "node-7"},
            CAPPED,
        ),
        id="M03-admin",
    ),
    pytest.param(
        Case(
            "M03",
            "resource_contention",
            "rebalance_authorized",
            "timer",
            "load_balancing",
            {"target_node": "auto"},
            CAPPED,
        ),
        id="M03-auto",
    ),
    pytest.param(
        Case("M03", "resource_contention", "rebalance_authorized", "admin", "invalid_input", {}, CAPPED),
        id="M03-no-target",
    ),
    pytest.param(
        Case(
            "M03",
            "resource_contention",
            "rebalance_authorized",
            "manager",
            "role_not_allowed",
            {"target_node": "node-7"},
            CAPPED,
        ),
        id="M03-manager",
    ),
    pytest.param(
        Case(
            "-",
            "healthy",
            "rebalance_authorized",
            "admin",
            "invalid_transition",
            {"target_node": "node-7"},
            BASE,
        ),
        id="M03-not-contended",
    ),
    # M04 / M07 cascade signs
    pytest.param(
        Case("M04", "resource_contention", "cascade_signs", "sys", "cascade_prevention", {}, CAPPED),
        id="M04-ok",
    ),
    pytest.param(
        Case(
            "M07",
            "healthy",
            "cascade_signs",
            "sys",
            "cascade_prevention",
            {"metrics": metrics(error_rate=12, baseline_error_rate=1)},
            BASE,
        ),
        id="M07-error-spike",
    ),
    pytest.param(
        Case(
            "M07", "healthy", "cascade_signs", "sys", "cascade_prevention", {"independent_failures": 3}, BASE
        ),
        id="M07-independent-failures",
    ),
    pytest.param(
        Case(
            "M07",
            "healthy",
            "cascade_signs",
            "sys",
            "guard_failed",
            {"metrics": metrics(error_rate=9, baseline_error_rate=1), "independent_failures": 2},
            BASE,
        ),
        id="M07-no-evidence",
    ),
    pytest.param(
        Case(
            "M07", "healthy", "cascade_signs", "sys", "invalid_input", {"independent_failures": "many"}, BASE
        ),
        id="M07-bad-count",
    ),
    # M05 / M06 load balancing
    pytest.param(
        Case(
            "M05",
            "load_balancing",
            "metrics_snapshot",
            "sys",
            "healthy",
            snap(pool_peak_cpu=70),
            {**CAPPED, "pool_calm_since": ago(minutes=5)},
        ),
        id="M05-ok",
    ),
    pytest.param(
        Case(
            "Mx7",
            "load_balancing",
            "metrics_snapshot",
            "sys",
            "load_balancing",
            snap(pool_peak_memory=80),
            {**CAPPED, "pool_calm_since": ago(minutes=9)},
        ),
        id="M05-pool-still-hot",
    ),
    pytest.param(
        Case("M06", "load_balancing", "rebalance_failed", "sys", "cascade_prevention", {}, CAPPED),
        id="M06-failed",
    ),
    pytest.param(
        Case("M06", "load_balancing", "metrics_worsening", "sys", "cascade_prevention", {}, CAPPED),
        id="M06-worsening",
    ),
    pytest.param(
        Case("M06", "load_balancing", "rebalance_timeout", "timer", "cascade_prevention", {}, CAPPED),
        id="M06-timeout",
    ),
    # M08 / M09 cascade prevention
    pytest.param(
        Case(
            "M08", "cascade_prevention", "circuit_breaker_engaged", "sys", "cascade_prevention", {}, MEASURES
        ),
        id="M08-breaker",
    ),
    pytest.param(
        Case("M08", "cascade_prevention", "tenant_auto_throttled", "sys", "cascade_prevention", {}, MEASURES),
        id="M08-throttled",
    ),
    pytest.param(
        Case(
            "M09",
            "cascade_prevention",
            "metrics_snapshot",
            "sys",
            "healthy",
            snap(error_rate=0.5),
            {**MEASURES, "quiet_since": ago(minutes=10)},
        ),
        id="M09-ok",
    ),
    pytest.param(
        Case(
            "Mx7",
            "cascade_prevention",
            "metrics_snapshot",
            "sys",
            "cascade_prevention",
            snap(error_rate=0.5),
            {**MEASURES, "quiet_since": ago(minutes=10)},
            entered=ago(minutes=3),
        ),
        id="M09-entered-recently",
    ),
    pytest.param(
        Case(
            "Mx7",
            "cascade_prevention",
            "metrics_snapshot",
            "sys",
            "cascade_prevention",
            snap(error_rate=1.0),
            {**MEASURES, "quiet_since": ago(minutes=30)},
        ),
        id="M09-errors-at-1pct",
    ),
    # M10 / Mx8 emergency
    pytest.param(
        Case(
            "M10",
            "cascade_prevention",
            "emergency_trigger",
            "sys",
            "emergency_shutdown",
            {"metrics": metrics(error_rate=26)},
            MEASURES,
        ),
        id="M10-error-rate",
    ),
    pytest.param(
        Case(
            "M10",
            "cascade_prevention",
            "emergency_trigger",
            "sys",
            "emergency_shutdown",
            {},
            {**MEASURES, "metrics": metrics(cpu=97), "cpu_critical_since": ago(seconds=30)},
        ),
        id="M10-cpu-sustained",
    ),
    pytest.param(
        Case(
            "M10",
            "cascade_prevention",
            "emergency_trigger",
            "sys",
            "guard_failed",
            {},
            {**MEASURES, "metrics": metrics(cpu=97, error_rate=25), "cpu_critical_since": ago(seconds=20)},
        ),
        id="M10-not-warranted",
    ),
    pytest.param(
        Case(
            "M10",
            "cascade_prevention",
            "emergency_trigger",
            "admin",
            "emergency_shutdown",
            {"scope": "pool", "message": "pool-a is being isolated"},
            MEASURES,
        ),
        id="M10-manual",
    ),
    pytest.param(
        Case(
            "M10",
            "cascade_prevention",
            "emergency_trigger",
            "admin",
            "invalid_input",
            {"scope": "world"},
            MEASURES,
        ),
        id="M10-bad-scope",
    ),
    pytest.param(
        Case("M10", "cascade_prevention", "emergency_trigger", "support", "role_not_allowed", {}, MEASURES),
        id="M10-support",
    ),
    pytest.param(
        Case("Mx8", "healthy", "emergency_trigger", "sys", "emergency_shutdown", FAN_OUT, BASE),
        id="Mx8-fan-out-healthy",
    ),
    pytest.param(
        Case(
            "Mx8", "cascade_prevention", "emergency_trigger", "sys", "emergency_shutdown", FAN_OUT, MEASURES
        ),
        id="Mx8-fan-out-cascade-prevention",
    ),
    pytest.param(
        Case(
            "Mx8",
            "healthy",
            "emergency_trigger",
            "sys",
            "guard_failed",
            {"pool_event_id": "pe-1", "origin_tenant_id": "c1"},
            BASE,
        ),
        id="Mx8-own-event",
    ),
    pytest.param(
        Case("Mx8", "healthy", "emergency_trigger", "admin", "role_not_allowed", FAN_OUT, BASE),
        id="Mx8-manual-from-healthy",
    ),
    pytest.param(
        Case("-", "emergency_shutdown", "emergency_trigger", "sys", "invalid_transition", FAN_OUT, MEASURES),
        id="emergency-twice",
    ),
    # M11 .. M13 recovery
    pytest.param(
        Case("M11", "emergency_shutdown", "start_recovery", "admin", "recovery", {}, MEASURES), id="M11-admin"
    ),
    pytest.param(
        Case("M11", "emergency_shutdown", "start_recovery", "timer", "recovery", {}, MEASURES), id="M11-auto"
    ),
    pytest.param(
        Case(
            "M12",
            "recovery",
            "metrics_snapshot",
            "sys",
            "healthy",
            snap(),
            {**MEASURES, "stable_since": ago(minutes=30)},
        ),
        id="M12-ok",
    ),
    pytest.param(
        Case(
            "Mx7",
            "recovery",
            "metrics_snapshot",
            "sys",
            "recovery",
            snap(),
            {**MEASURES, "stable_since": ago(minutes=29)},
        ),
        id="M12-not-stable-long-enough",
    ),
    pytest.param(
        Case(
            "Mx7",
            "recovery",
            "metrics_snapshot",
            "sys",
            "recovery",
            snap(cpu=90),
            {**MEASURES, "stable_since": ago(hours=1)},
        ),
        id="M12-usage-high",
    ),
    pytest.param(
        Case("M13", "recovery", "deterioration", "sys", "cascade_prevention", {}, MEASURES),
        id="M13-deterioration",
    ),
    pytest.param(
        Case("M13", "recovery", "recovery_timeout", "timer", "cascade_prevention", {}, MEASURES),
        id="M13-timeout",
    ),
    pytest.param(
        Case("M13", "recovery", "recovery_timeout", "admin", "role_not_allowed", {}, MEASURES),
        id="M13-manual",
    ),
    # M14 / M15 suspension
    pytest.param(Case("M14", "healthy", "suspend_tenant", "admin", "suspended", {}, BASE), id="M14-healthy"),
    pytest.param(
        Case("M14", "emergency_shutdown", "suspend_tenant", "admin", "suspended", {}, MEASURES),
        id="M14-emergency",
    ),
    pytest.param(
        Case("M14", "healthy", "suspend_tenant", "admin", "invalid_input", {"reason": "abuse"}, BASE),
        id="M14-short-reason",
    ),
    pytest.param(
        Case("-", "suspended", "suspend_tenant", "admin", "invalid_transition", {}, BASE),
        id="M14-already-suspended",
    ),
    pytest.param(Case("M15", "suspended", "resume_tenant", "admin", "healthy", {}, BASE), id="M15-ok"),
    pytest.param(
        Case("M15", "suspended", "resume_tenant", "support", "role_not_allowed", {}, BASE), id="M15-support"
    ),
    # Mx1 .. Mx6 self-events
    pytest.param(
        Case("Mx1", None, "register_tenant", "cascade", "healthy", {"tier": "enterprise"}), id="Mx1-create"
    ),
    pytest.param(
        Case("Mx1", None, "register_tenant", "admin", "role_not_allowed", {"tier": "enterprise"}),
        id="Mx1-staff",
    ),
    pytest.param(Case("-", None, "metrics_snapshot", "sys", "not_created", snap()), id="not-registered"),
    pytest.param(
        Case(
            "Mx2",
            "load_balancing",
            "register_tenant",
            "cascade",
            "load_balancing",
            {"tier": "enterprise"},
            CAPPED,
        ),
        id="Mx2-upsert",
    ),
    pytest.param(
        Case(
            "Mx3",
            "resource_contention",
            "set_tier_weight",
            "cascade",
            "resource_contention",
            {"tier": "starter"},
            CAPPED,
        ),
        id="Mx3-tier-change",
    ),
    pytest.param(
        Case("Mx3", "healthy", "set_tier_weight", "admin", "role_not_allowed", {"tier": "starter"}, BASE),
        id="Mx3-staff",
    ),
    pytest.param(
        Case(
            "Mx4", "healthy", "noisy_flag", "cascade", "healthy", {"resource": "cpu", "share_pct": 92}, BASE
        ),
        id="Mx4-flag",
    ),
    pytest.param(Case("Mx5", "suspended", "breaker_on", "admin", "suspended", {}, BASE), id="Mx5-on"),
    pytest.param(
        Case(
            "Mx5", "healthy", "breaker_on", "admin", "invalid_input", {"error_threshold_percent": 150}, BASE
        ),
        id="Mx5-bad-threshold",
    ),
    pytest.param(
        Case("Mx5", "healthy", "breaker_on", "manager", "role_not_allowed", {}, BASE), id="Mx5-manager"
    ),
    pytest.param(
        Case("Mx6", "healthy", "breaker_off", "admin", "healthy", {}, {**BASE, "breaker_open": True}),
        id="Mx6-off",
    ),
    pytest.param(Case("Mx6", "healthy", "breaker_off", "admin", "guard_failed", {}, BASE), id="Mx6-not-on"),
    pytest.param(
        Case("Mx6", "cascade_prevention", "breaker_off", "admin", "guard_failed", {}, MEASURES),
        id="Mx6-still-capped",
    ),
    pytest.param(
        Case(
            "Mx7",
            "suspended",
            "metrics_snapshot",
            "sys",
            "suspended",
            snap(cpu=99, impact_percent=50),
            {**BASE, "high_usage_since": ago(minutes=5)},
        ),
        id="Mx7-suspended-records",
    ),
    pytest.param(Case("-", "healthy", "explode", "sys", "unknown_event", {}, BASE), id="unknown-event"),
]


TABLE = Table(
    GOVERNOR,
    CASES,
    lambda case: make(case.state, case.data, entered=case.entered),
    facts=facts,
    rejection_row="exact",
    spec_rows={f"M{n:02d}" for n in range(1, 16)},
)
(
    test_multi_tenant_table,
    test_every_row_is_in_the_table,
    test_every_row_id_is_from_the_spec_or_marked_added,
) = TABLE.tests()


def _decide(
    state: str | None,
    data: Mapping[str, Any],
    event: str,
    role: str,
    payload: Mapping[str, Any] | None = None,
    **kw: Any,
) -> Decision:
    entered = kw.pop("entered", None)
    out = decide(GOVERNOR, make(state, data, entered=entered), event, facts(role, payload, **kw))
    assert isinstance(out, Decision), out
    return out


# ------------------------------------------------------------------ sustained-duration tracking


def test_tracking_keeps_first_seen_and_clears_when_condition_stops() -> None:
    first = tracking({}, metrics(cpu=80), NOW, SETTINGS)
    assert first["high_usage_since"] == NOW
    assert first["low_usage_since"] is None
    assert first["quiet_since"] == NOW
    assert first["stable_since"] is None
    later = tracking(first, metrics(cpu=81), NOW + timedelta(seconds=10), SETTINGS)
    assert later["high_usage_since"] == NOW, "kept while the condition holds"
    calm = tracking(later, metrics(cpu=50), NOW + timedelta(seconds=20), SETTINGS)
    assert calm["high_usage_since"] is None
    assert calm["low_usage_since"] == NOW + timedelta(seconds=20)
    assert tracking({}, metrics(cpu=96), NOW, SETTINGS)["cpu_critical_since"] == NOW


def test_snapshots_walk_a_tenant_into_contention_after_30_seconds() -> None:
    inst = make("healthy", BASE, entered=ago(hours=2))
    rows = []
    for i in range(5):
        now = NOW + timedelta(seconds=10 * i)
        d = decide(
            GOVERNOR,
            inst,
            "metrics_snapshot",
            facts("sys", {"metrics": metrics(memory=90, impact_percent=8), "snapshot_ts": now}, now=now),
        )
        assert isinstance(d, Decision), d
        rows.append(d.row_id)
        inst = apply(inst, d)
    assert rows == ["Mx7", "Mx7", "Mx7", "Mx7", "M01"], "seen at 0 s; > 30 s only at 40 s"
    assert inst.state == "resource_contention"
    assert inst.data["high_usage_since"] == NOW
    assert inst.data["culprit_signals"] == ["sustained_usage"]


def test_contention_caps_allocation_at_half_the_tier_share() -> None:
    d = _decide(
        "healthy",
        {**BASE, "high_usage_since": ago(minutes=1)},
        "metrics_snapshot",
        "sys",
        snap(cpu=80, impact_percent=6),
    )
    assert d.changes["allocation_cap_percent"] == 50.0
    assert d.changes["allocation_percent"] == 17.5
    assert d.changes["culprit"] is True
    assert d.attention
    assert d.effects[0].args == {"cap_percent": 50.0}


def test_clearing_contention_restores_the_allocation() -> None:
    d = _decide(
        "resource_contention",
        {**CAPPED, "low_usage_since": ago(minutes=6)},
        "metrics_snapshot",
        "sys",
        snap(),
    )
    assert d.changes["allocation_cap_percent"] is None
    assert d.changes["allocation_percent"] == 35.0
    assert d.changes["low_usage_since"] == ago(minutes=6)
    assert not d.attention


def test_tier_weights() -> None:
    created = _decide(None, {}, "register_tenant", "cascade", {"tier": "enterprise", "pool_id": "pool-b"})
    assert created.changes == {
        "tier": "enterprise",
        "tier_weight_percent": 40.0,
        "allocation_percent": 40.0,
        "pool_id": "pool-b",
    }
    capped = _decide("resource_contention", CAPPED, "set_tier_weight", "cascade", {"tier": "starter"})
    assert capped.changes["allocation_percent"] == 12.5
    unknown = _decide("healthy", BASE, "set_tier_weight", "cascade", {"tier": "trial"})
    assert unknown.changes["tier_weight_percent"] == 25.0, "tiers without a weight get the smallest share"


def test_cascade_prevention_entry_actions_and_lifting() -> None:
    d = _decide("resource_contention", CAPPED, "cascade_signs", "sys", {"culprit": True})
    assert d.changes["breaker_open"] is True
    assert d.changes["rate_limit_rps"] == 10
    assert d.changes["shed_features"] == ["analytics", "recommendations"]
    assert d.changes["system_cpu_reserve_percent"] == 20
    assert d.changes["breaker_error_threshold_percent"] == 50
    assert dict(d.effects[0].args) == {
        "error_threshold_percent": 50,
        "timeout_ms": 1000,
        "rate_limit_rps": 10,
        "shed": ["analytics", "recommendations"],
        "balancing": "least_loaded",
    }
    lifted = _decide(
        "cascade_prevention", {**MEASURES, "quiet_since": ago(minutes=20)}, "metrics_snapshot", "sys", snap()
    )
    assert lifted.changes["breaker_open"] is False
    assert lifted.changes["shed_features"] is None
    assert lifted.changes["allocation_percent"] == 35.0
    assert [e.name for e in lifted.effects] == ["mt_lift_measures", "notify_customer"]


def test_emergency_sheds_more_and_fans_out_to_the_pool() -> None:
    d = _decide(
        "cascade_prevention", MEASURES, "emergency_trigger", "sys", {"metrics": metrics(error_rate=40)}
    )
    assert d.changes["shed_features"] == ["analytics", "recommendations", "caching", "logging", "metrics"]
    assert d.changes["db_connections_cut"] is True
    pool_event = f"mt-1:{NOW.isoformat()}"
    fan = next(e for e in d.effects if e.name == "mt_pool_fan_out")
    assert dict(fan.args) == {
        "event": "emergency_trigger",
        "pool_id": "pool-a",
        "pool_event_id": pool_event,
        "origin_tenant_id": "c1",
    }
    received = decide(
        GOVERNOR,
        Instance("multi_tenant", "mt-2", "healthy", 2, customer_id="c2", data=BASE),
        "emergency_trigger",
        facts("sys", dict(fan.args)),
    )
    assert isinstance(received, Decision)
    assert received.row_id == "Mx8"
    assert received.changes["pool_event_id"] == pool_event
    assert not any(e.name == "mt_pool_fan_out" for e in received.effects), "a fan-out is not fanned out again"


def test_breaker_on_records_defaults_and_impact() -> None:
    d = _decide("healthy", {**BASE, "metrics": metrics(impact_percent=7.5)}, "breaker_on", "admin")
    assert d.changes["breaker_open"] is True
    assert d.changes["breaker_impact_percent"] == 7.5
    assert (d.changes["breaker_error_threshold_percent"], d.changes["breaker_timeout_ms"]) == (50, 1000)
    custom = _decide(
        "healthy", BASE, "breaker_on", "admin", {"error_threshold_percent": 30, "timeout_ms": 500}
    )
    assert dict(custom.effects[0].args) == {"on": True, "error_threshold_percent": 30, "timeout_ms": 500}


def test_suspend_and_resume_reset_the_clocks() -> None:
    d = _decide(
        "resource_contention", {**CAPPED, "high_usage_since": ago(minutes=3)}, "suspend_tenant", "admin"
    )
    assert d.changes["high_usage_since"] is None
    assert d.needs_approval == FourEyes(("manager",))
    back = _decide("suspended", {**MEASURES}, "resume_tenant", "admin")
    assert back.changes["breaker_open"] is False
    assert back.changes["allocation_cap_percent"] is None


# ------------------------------------------------------------------ timers


def _ops(d: Decision) -> list[tuple[str, str, datetime | None]]:
    return [(op.op, op.timer.name, op.timer.due_at) for op in d.timer_ops]


@pytest.mark.parametrize(
    ("state", "data", "event", "role", "payload", "armed"),
    [
        (
            "healthy",
            {**BASE, "high_usage_since": ago(minutes=1)},
            "metrics_snapshot",
            "sys",
            snap(cpu=80, impact_percent=6),
            ("auto_rebalance", NOW + timedelta(minutes=2)),
        ),
        (
            "resource_contention",
            CAPPED,
            "rebalance_authorized",
            "admin",
            {"target_node": "n1"},
            ("rebalance_timeout", NOW + timedelta(minutes=5)),
        ),
        (
            "cascade_prevention",
            MEASURES,
            "emergency_trigger",
            "admin",
            {},
            ("auto_recovery", NOW + timedelta(hours=1)),
        ),
        (
            "emergency_shutdown",
            MEASURES,
            "start_recovery",
            "admin",
            {},
            ("recovery_timeout", NOW + timedelta(hours=2)),
        ),
    ],
)
def test_entering_a_state_arms_its_timer(
    state: str,
    data: Mapping[str, Any],
    event: str,
    role: str,
    payload: Mapping[str, Any],
    armed: tuple[str, datetime],
) -> None:
    d = _decide(state, data, event, role, payload)
    assert ("arm", *armed) in _ops(d)


def test_auto_rebalance_timer_sends_target_auto_and_leaving_cancels_it() -> None:
    d = _decide(
        "healthy",
        {**BASE, "high_usage_since": ago(minutes=1)},
        "metrics_snapshot",
        "sys",
        snap(cpu=80, impact_percent=6),
    )
    inst = apply(make("healthy", BASE), d)
    timer = inst.timers["auto_rebalance"]
    assert timer.event == "rebalance_authorized"
    assert dict(timer.payload) == {"target_node": "auto"}
    fired = decide(
        GOVERNOR,
        inst,
        "rebalance_authorized",
        Facts(
            now=timer.due_at or NOW,
            role="timer",
            payload=timer.payload,
            settings=SETTINGS,
            timer=timer.name,
            timer_seq=timer.state_seq,
        ),
    )
    assert isinstance(fired, Decision)
    assert fired.to_state == "load_balancing"
    assert ("cancel", "auto_rebalance", timer.due_at) in _ops(fired)
    stale = decide(
        GOVERNOR, inst, "rebalance_authorized", facts("timer", timer.payload, seq=timer.state_seq - 1)
    )
    assert isinstance(stale, Rejection)
    assert stale.code == "stale_timer"


def test_self_events_keep_timers_running() -> None:
    inst = apply(
        make("emergency_shutdown", MEASURES),
        _decide("cascade_prevention", MEASURES, "emergency_trigger", "admin"),
    )
    d = decide(GOVERNOR, inst, "breaker_on", facts("admin"))
    assert isinstance(d, Decision)
    assert d.self_transition
    assert d.timer_ops == ()


# ------------------------------------------------------------------ four-eyes


def test_four_eyes() -> None:
    manual = _decide("cascade_prevention", MEASURES, "emergency_trigger", "admin")
    assert manual.needs_approval == FourEyes(("manager",), when="mt_staff_triggered")
    assert (
        _decide("cascade_prevention", MEASURES, "emergency_trigger", "admin", approved_by="u2").needs_approval
        is None
    )
    auto = _decide(
        "cascade_prevention", MEASURES, "emergency_trigger", "sys", {"metrics": metrics(error_rate=30)}
    )
    assert auto.needs_approval is None
    assert _decide("healthy", BASE, "suspend_tenant", "admin").needs_approval == FourEyes(("manager",))
    for event, data in (
        ("breaker_on", BASE),
        ("breaker_off", {**BASE, "breaker_open": True}),
        ("resume_tenant", BASE),
    ):
        state = "suspended" if event == "resume_tenant" else "healthy"
        assert _decide(state, data, event, "admin").needs_approval is None


# ------------------------------------------------------------------ cascades


def test_contention_emits_x39_degraded_notice() -> None:
    d = _decide(
        "healthy",
        {**BASE, "high_usage_since": ago(minutes=1)},
        "metrics_snapshot",
        "sys",
        snap(cpu=80, impact_percent=6),
    )
    assert [(c.id, c.target, c.event, dict(c.payload)) for c in d.cascades] == [
        ("X39", "customer_account", "degraded_notice", {"pool_id": "pool-a", "allocation_cap_percent": 50.0})
    ]


def test_emergency_and_recovery_emit_x40() -> None:
    d = _decide("healthy", BASE, "emergency_trigger", "sys", FAN_OUT)
    assert [(c.id, c.target, c.event, c.payload["kind"]) for c in d.cascades] == [
        ("X40", "customer_account", "maintenance_notice", "maintenance"),
        ("X40", "compliance_audit", "maintenance_logged", "maintenance"),
    ]
    assert d.cascades[0].payload["pool_event_id"] == "pe-1"
    done = _decide(
        "recovery",
        {**MEASURES, "pool_event_id": "pe-1", "stable_since": ago(hours=1)},
        "metrics_snapshot",
        "sys",
        snap(),
    )
    assert [(c.target, dict(c.payload)) for c in done.cascades] == [
        ("customer_account", {"pool_id": "pool-a", "pool_event_id": "pe-1", "kind": "restored"}),
        ("compliance_audit", {"pool_id": "pool-a", "pool_event_id": "pe-1", "kind": "restored"}),
    ]


@pytest.mark.parametrize(
    ("state", "data", "event", "role", "payload", "emits"),
    [
        ("resource_contention", CAPPED, "cascade_signs", "sys", {}, True),
        ("healthy", BASE, "cascade_signs", "sys", {"independent_failures": 4}, False),
        ("healthy", BASE, "cascade_signs", "sys", {"independent_failures": 4, "culprit": True}, True),
        ("load_balancing", {**CAPPED, "culprit": False}, "rebalance_failed", "sys", {}, False),
        ("recovery", MEASURES, "deterioration", "sys", {}, True),
    ],
)
def test_x41_only_when_this_tenant_is_the_culprit(
    state: str, data: Mapping[str, Any], event: str, role: str, payload: Mapping[str, Any], emits: bool
) -> None:
    d = _decide(state, data, event, role, payload)
    x41 = [c for c in d.cascades if c.id == "X41"]
    assert bool(x41) is emits
    if x41:
        assert (x41[0].target, x41[0].event, x41[0].where) == (
            "quota_sla",
            "cascade_detected",
            "mt_quota_throttled",
        )


def test_where_guards() -> None:
    assert where("mt_quota_throttled", Instance("quota_sla", "q", "throttled"))
    assert not where("mt_quota_throttled", Instance("quota_sla", "q", "exceeded"))
    from governors import get_governor

    account = get_governor("customer_account")
    final = sorted(account.terminal_states)
    assert where("mt_target_open", Instance("customer_account", "a", "active"))
    if final:
        assert not where("mt_target_open", Instance("customer_account", "a", final[0]))


def test_quota_noisy_flag_is_stored_and_counts_for_five_minutes() -> None:
    d = _decide("healthy", BASE, "noisy_flag", "cascade", {"resource": "cpu", "share_pct": 92})
    assert d.changes == {"noisy_flagged_at": NOW, "noisy_flag": {"resource": "cpu", "share_pct": 92}}
    flagged = apply(make("healthy", BASE), d)
    late = NOW + timedelta(minutes=5, seconds=1)
    out = decide(
        GOVERNOR,
        flagged,
        "metrics_snapshot",
        facts("sys", {"metrics": metrics(impact_percent=9), "snapshot_ts": late}, now=late),
    )
    assert isinstance(out, Decision)
    assert out.row_id == "Mx7"


def test_rejection_messages_are_actionable() -> None:
    bad = decide(
        GOVERNOR,
        make("healthy", BASE),
        "metrics_snapshot",
        facts("sys", {"metrics": {"cpu": 10, "memory": "high"}, "snapshot_ts": NOW}),
    )
    assert isinstance(bad, Rejection)
    assert bad.message == "the snapshot lacks numeric memory, network, disk_io, error_rate, impact_percent"
    calm = decide(
        GOVERNOR,
        make("cascade_prevention", MEASURES),
        "emergency_trigger",
        facts("sys", {"metrics": metrics(error_rate=5)}),
    )
    assert isinstance(calm, Rejection)
    assert (calm.row_id, calm.message) == ("M10", "error rate ≤ 25 % and CPU not above 95 % long enough")
    closed = decide(GOVERNOR, make("healthy", BASE), "breaker_off", facts("admin"))
    assert isinstance(closed, Rejection)
    assert closed.message == "the tenant's circuit breaker is not on"


def test_plan_delivers_x39_to_the_customers_account() -> None:
    from governors import plan

    tenant = make("healthy", {**BASE, "high_usage_since": ago(minutes=1)})
    account = Instance("customer_account", "acct", "active", 2, customer_id="c1")
    p = plan(
        {"mt-1": tenant, "acct": account},
        "mt-1",
        "metrics_snapshot",
        facts("sys", snap(cpu=80, impact_percent=6)),
    )
    assert isinstance(p.root, Decision)
    assert p.root.to_state == "resource_contention"
    assert [(s.instance_id, s.event, s.cascade) for s in p.steps[1:]] == [("acct", "degraded_notice", "X39")]
