"""Quota & SLA governor (GOVERNORS.md §6): rows, rejections, noise filters, timers, four-eyes, cascades."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any

import pytest

from governors import Decision, Facts, Instance, apply, decide, plan
from governors.definitions.quota_sla import GOVERNOR
from governors.engine import timer_facts
from governors.facts import Context
from governors.rules.base import GUARDS
from governors.rules.quota_sla import (
    band,
    effective_limits,
    hard_limit_breach,
    next_month_start,
    overage_lines,
    throttle_delay_ms,
    tier_limits,
    token_bucket_rate,
    utilisation,
)
from governors.spec import FourEyes
from tests.governors.tables import NOW, SETTINGS, Case, Instances, Table, decided, make_facts, where

REASON = "customer escalation ticket 4711"
SEQ = 3
FEB = datetime(2026, 2, 1, tzinfo=UTC)

STARTER = {"api_requests": 1_000_000, "concurrent_calls": 100, "storage_gb": 100}
BASE: dict[str, Any] = {
    "tier": "starter",
    "limits": STARTER,
    "overrides": {},
    "usage": {"api_requests": 500_000, "storage_gb": 10},
    "last_sample_ts": NOW - timedelta(seconds=10),
    "period_starts_at": datetime(2026, 1, 1, tzinfo=UTC),
    "period_ends_at": FEB,
    "under_warning_since": NOW - timedelta(hours=1),
    "overage_lines": {},
    "overage_cents": 0,
    "billed_overage_cents": 0,
    "overage_approved": False,
}
WITHIN = BASE
WARNING: dict[str, Any] = {
    **BASE,
    "usage": {"api_requests": 850_000},
    "under_warning_since": None,
    "over_warning_since": NOW - timedelta(minutes=10),
}
OVER_LINES = {"api_requests": {"units": 50_000, "cents": 500}}
EXCEEDED: dict[str, Any] = {
    **WARNING,
    "usage": {"api_requests": 1_050_000},
    "over_limit_since": NOW - timedelta(minutes=5),
    "overage_lines": OVER_LINES,
    "overage_cents": 500,
}
THROTTLED: dict[str, Any] = {**EXCEEDED, "throttled_at": NOW - timedelta(hours=2)}
BREAKER: dict[str, Any] = {
    **THROTTLED,
    "breaker_reason": "throttle_timeout",
    "recovery_due_cents": 500,
    "billed_overage_cents": 500,
}
PAID_RESET: dict[str, Any] = {**BREAKER, "reset_reason": "recovery_payment_received"}
OVERRIDE_RESET: dict[str, Any] = {**BREAKER, "reset_reason": "manual_override"}
APPROVED_RESET: dict[str, Any] = {**PAID_RESET, "reset_approved_at": NOW - timedelta(minutes=1), "usage": {}}
RESTORED: dict[str, Any] = {**BASE, "usage": {}, "reset_approved_at": NOW - timedelta(minutes=3)}


# The quota instance of customer c1.
make = Instances("quota_sla", "quota-1", SEQ, timedelta(hours=3), customer_id="c1", subject_id="c1")


# A timer fires at the instance's seq; staff give REASON; the actor is always u1.
facts = partial(make_facts, reason=REASON, seq=SEQ, actor="u1")


def sample(api: int, **more: Any) -> dict[str, Any]:
    return {"metrics": {"api_requests": api, **more}, "sample_ts": NOW}


def override(limit: int, days: int = 7, metric: str = "api_requests") -> dict[str, Any]:
    return {"metric": metric, "limit": limit, "expires_at": NOW + timedelta(days=days)}


def since(**deltas: timedelta) -> dict[str, Any]:
    return {k: NOW - v for k, v in deltas.items()}


SLA = {"period": "2026-01", "uptime_pct": "99.0", "p99_ms": 2500, "error_rate_pct": "2"}
M2, M6, S30 = timedelta(minutes=2), timedelta(minutes=6), timedelta(seconds=30)

CASES: list[Any] = [
    # Qx1 allocate (creation) and Qx2 re-allocation
    pytest.param(Case("Qx1", None, "allocate", "cascade", "within_limits", {"tier": "starter"}), id="Qx1"),
    pytest.param(
        Case("Qx1", None, "allocate", "cascade", "within_limits", {"tier": "professional", "trial": True}),
        id="Qx1-trial",
    ),
    pytest.param(
        Case("Qx1", None, "allocate", "cascade", "invalid_input", {"tier": "gold"}), id="Qx1-bad-tier"
    ),
    pytest.param(Case("Qx1", None, "allocate", "cascade", "invalid_input", {}), id="Qx1-no-tier"),
    pytest.param(
        Case("Qx1", None, "allocate", "support", "role_not_allowed", {"tier": "starter"}), id="Qx1-staff"
    ),
    pytest.param(
        Case("-", None, "usage_sample", "sys", "not_created", sample(1)), id="sample-before-allocate"
    ),
    pytest.param(Case("-", "within_limits", "teleport", "sys", "unknown_event", {}, WITHIN), id="unknown"),
    pytest.param(
        Case("Qx2", "exceeded", "allocate", "cascade", "exceeded", {"tier": "professional"}, EXCEEDED),
        id="Qx2",
    ),
    # Q01 within → warning after 5 min at ≥ 80 %
    pytest.param(
        Case(
            "Q01",
            "within_limits",
            "usage_sample",
            "sys",
            "warning",
            sample(850_000),
            {**WITHIN, **since(over_warning_since=M6)},
        ),
        id="Q01",
    ),
    pytest.param(
        Case(
            "Qx3",
            "within_limits",
            "usage_sample",
            "sys",
            "within_limits",
            sample(850_000),
            {**WITHIN, **since(over_warning_since=M2)},
        ),
        id="Q01-filter-not-held",
    ),
    pytest.param(
        Case("Qx3", "within_limits", "usage_sample", "sys", "within_limits", sample(850_000), WITHIN),
        id="Q01-first-crossing",
    ),
    # Q02 within/warning → exceeded after 1 min at ≥ 100 %
    pytest.param(
        Case(
            "Q02",
            "within_limits",
            "usage_sample",
            "sys",
            "exceeded",
            sample(1_050_000),
            {**WITHIN, **since(over_limit_since=M2)},
        ),
        id="Q02-from-within",
    ),
    pytest.param(
        Case(
            "Q02",
            "warning",
            "usage_sample",
            "sys",
            "exceeded",
            sample(1_050_000),
            {**WARNING, **since(over_limit_since=M2)},
        ),
        id="Q02-from-warning",
    ),
    pytest.param(
        Case(
            "Qx3",
            "warning",
            "usage_sample",
            "sys",
            "warning",
            sample(1_050_000),
            {**WARNING, **since(over_limit_since=S30)},
        ),
        id="Q02-filter-not-held",
    ),
    pytest.param(
        Case(
            "Q02",
            "warning",
            "usage_sample",
            "sys",
            "exceeded",
            {"metrics": {"cpu_hours": 10}, "sample_ts": NOW},
            {**WARNING, "limits": {**STARTER, "cpu_hours": 5}, **since(over_limit_since=M2)},
        ),
        id="Q02-most-constrained-metric",
    ),
    # Q03 warning → within after 5 min under 80 %
    pytest.param(
        Case(
            "Q03",
            "warning",
            "usage_sample",
            "sys",
            "within_limits",
            sample(700_000),
            {**WARNING, "limits": {**STARTER}, **since(under_warning_since=M6)},
        ),
        id="Q03",
    ),
    pytest.param(
        Case(
            "Qx3",
            "warning",
            "usage_sample",
            "sys",
            "warning",
            sample(700_000),
            {**WARNING, **since(under_warning_since=M2)},
        ),
        id="Q03-filter-not-held",
    ),
    # Q04 exceeded → by thresholds, no filter
    pytest.param(
        Case("Q04", "exceeded", "usage_sample", "sys", "warning", sample(900_000), EXCEEDED), id="Q04-warning"
    ),
    pytest.param(
        Case("Q04b", "exceeded", "usage_sample", "sys", "within_limits", sample(100_000), EXCEEDED),
        id="Q04b-within",
    ),
    pytest.param(
        Case("Qx3", "exceeded", "usage_sample", "sys", "exceeded", sample(1_200_000), EXCEEDED),
        id="Qx3-exceeded",
    ),
    pytest.param(
        Case("Qx3", "throttled", "usage_sample", "sys", "throttled", sample(100_000), THROTTLED),
        id="Qx3-throttled",
    ),
    pytest.param(
        Case("Qx3", "circuit_breaker", "usage_sample", "sys", "circuit_breaker", sample(1), BREAKER),
        id="Qx3-breaker",
    ),
    pytest.param(
        Case(
            "-",
            "exceeded",
            "usage_sample",
            "sys",
            "guard_failed",
            {"metrics": {"api_requests": 1}, "sample_ts": NOW - timedelta(minutes=1)},
            EXCEEDED,
        ),
        id="stale-sample-dropped",
    ),
    pytest.param(
        Case("-", "within_limits", "usage_sample", "sys", "invalid_input", {"sample_ts": NOW}, WITHIN),
        id="sample-without-metrics",
    ),
    pytest.param(
        Case("-", "within_limits", "usage_sample", "admin", "role_not_allowed", sample(1), WITHIN),
        id="sample-by-staff",
    ),
    # Q05 / Q06
    pytest.param(
        Case(
            "Q05",
            "exceeded",
            "overage_approved",
            "finance",
            "exceeded",
            {"amount_cents": 5000, "consent_ref": "consent-1"},
            EXCEEDED,
        ),
        id="Q05-finance",
    ),
    pytest.param(
        Case(
            "Q05",
            "exceeded",
            "overage_approved",
            "sys",
            "exceeded",
            {"amount_cents": 5000, "consent_ref": "click-1"},
            EXCEEDED,
        ),
        id="Q05-customer",
    ),
    pytest.param(
        Case(
            "Q05",
            "exceeded",
            "overage_approved",
            "finance",
            "invalid_input",
            {"amount_cents": 5000},
            EXCEEDED,
        ),
        id="Q05-no-consent",
    ),
    pytest.param(
        Case(
            "-",
            "warning",
            "overage_approved",
            "finance",
            "invalid_transition",
            {"amount_cents": 5000, "consent_ref": "c"},
            WARNING,
        ),
        id="Q05-not-exceeded",
    ),
    pytest.param(Case("Q06", "exceeded", "exceeded_timeout", "timer", "throttled", {}, EXCEEDED), id="Q06"),
    pytest.param(
        Case(
            "Q06",
            "exceeded",
            "exceeded_timeout",
            "timer",
            "guard_failed",
            {},
            {**EXCEEDED, "overage_approved": True},
        ),
        id="Q06-approved",
    ),
    # Q07 tier_upgraded (X30) by thresholds
    pytest.param(
        Case(
            "Q07", "warning", "tier_upgraded", "cascade", "within_limits", {"tier": "professional"}, WARNING
        ),
        id="Q07-within",
    ),
    pytest.param(
        Case(
            "Q07b",
            "exceeded",
            "tier_upgraded",
            "cascade",
            "warning",
            {"tier": "professional"},
            {**EXCEEDED, "usage": {"api_requests": 9_000_000}},
        ),
        id="Q07b-warning",
    ),
    pytest.param(
        Case("Q07c", "warning", "tier_upgraded", "cascade", "exceeded", {"tier": "free"}, WARNING),
        id="Q07c-exceeded",
    ),
    pytest.param(
        Case(
            "Q07", "warning", "tier_upgraded", "admin", "role_not_allowed", {"tier": "professional"}, WARNING
        ),
        id="Q07-staff",
    ),
    # Q08 throttled → reset_pending
    pytest.param(
        Case(
            "Q08",
            "throttled",
            "tier_upgraded",
            "cascade",
            "reset_pending",
            {"tier": "professional"},
            THROTTLED,
        ),
        id="Q08-upgrade",
    ),
    pytest.param(
        Case("Q08", "throttled", "overage_paid", "cascade", "reset_pending", {"kind": "overage"}, THROTTLED),
        id="Q08-overage-paid",
    ),
    pytest.param(
        Case("Q08", "throttled", "tier_upgraded", "cascade", "invalid_input", {}, THROTTLED), id="Q08-no-tier"
    ),
    pytest.param(
        Case("-", "exceeded", "overage_paid", "cascade", "invalid_transition", {}, EXCEEDED),
        id="Q08-not-throttled",
    ),
    # Q09 / Q10 → circuit_breaker
    pytest.param(
        Case("Q09", "throttled", "throttled_timeout", "timer", "circuit_breaker", {}, THROTTLED),
        id="Q09-timer",
    ),
    pytest.param(
        Case(
            "Q09", "throttled", "cascade_detected", "cascade", "circuit_breaker", {"pool_id": "p1"}, THROTTLED
        ),
        id="Q09-cascade",
    ),
    pytest.param(
        Case("-", "exceeded", "cascade_detected", "cascade", "invalid_transition", {}, EXCEEDED),
        id="Q09-only-from-throttled",
    ),
    pytest.param(
        Case(
            "Q10",
            "within_limits",
            "hard_limit_breached",
            "sys",
            "circuit_breaker",
            {"metrics": {"storage_gb": 150}},
            WITHIN,
        ),
        id="Q10-storage",
    ),
    pytest.param(
        Case(
            "Q10",
            "throttled",
            "hard_limit_breached",
            "sys",
            "circuit_breaker",
            {"metrics": {"concurrent_calls": 101}},
            THROTTLED,
        ),
        id="Q10-from-throttled",
    ),
    pytest.param(
        Case(
            "Q10",
            "warning",
            "hard_limit_breached",
            "sys",
            "guard_failed",
            {"metrics": {"storage_gb": 100}},
            WARNING,
        ),
        id="Q10-at-limit-not-over",
    ),
    pytest.param(
        Case(
            "-",
            "reset_pending",
            "hard_limit_breached",
            "sys",
            "invalid_transition",
            {"metrics": {"storage_gb": 150}},
            PAID_RESET,
        ),
        id="Q10-reset-pending",
    ),
    # Q11 / Q12 leave the breaker
    pytest.param(
        Case(
            "Q11",
            "circuit_breaker",
            "recovery_payment_received",
            "cascade",
            "reset_pending",
            {"kind": "recovery"},
            BREAKER,
        ),
        id="Q11",
    ),
    pytest.param(
        Case(
            "Q11",
            "circuit_breaker",
            "recovery_payment_received",
            "cascade",
            "guard_failed",
            {"kind": "overage"},
            BREAKER,
        ),
        id="Q11-not-recovery",
    ),
    pytest.param(
        Case("Q11", "circuit_breaker", "recovery_payment_received", "cascade", "invalid_input", {}, BREAKER),
        id="Q11-no-kind",
    ),
    pytest.param(
        Case("Q12", "circuit_breaker", "manual_override", "admin", "reset_pending", {}, BREAKER), id="Q12"
    ),
    pytest.param(
        Case("Q12", "circuit_breaker", "manual_override", "support", "role_not_allowed", {}, BREAKER),
        id="Q12-support",
    ),
    pytest.param(
        Case(
            "Q12",
            "circuit_breaker",
            "manual_override",
            "admin",
            "invalid_input",
            {"reason": "because"},
            BREAKER,
        ),
        id="Q12-short-reason",
    ),
    # Q13 / Q14 reset
    pytest.param(
        Case(
            "Q13",
            "reset_pending",
            "reset_approved",
            "sys",
            "reset_pending",
            {"reset_request_id": "rr-1"},
            PAID_RESET,
        ),
        id="Q13-payment-path",
    ),
    pytest.param(
        Case("Q13", "reset_pending", "reset_approved", "manager", "reset_pending", {}, OVERRIDE_RESET),
        id="Q13-override-path",
    ),
    pytest.param(
        Case("Q13", "reset_pending", "reset_approved", "manager", "guard_failed", {}, PAID_RESET),
        id="Q13-manager-on-payment-path",
    ),
    pytest.param(
        Case("Q13", "reset_pending", "reset_approved", "sys", "guard_failed", {}, OVERRIDE_RESET),
        id="Q13-system-on-override-path",
    ),
    pytest.param(
        Case("Q13", "reset_pending", "reset_approved", "sys", "guard_failed", {}, APPROVED_RESET),
        id="Q13-already-approved",
    ),
    pytest.param(
        Case(
            "Q13",
            "reset_pending",
            "reset_approved",
            "sys",
            "guard_failed",
            {"reset_request_id": "rr-1"},
            {**PAID_RESET, "reset_request_ids": ["rr-1"]},
        ),
        id="Q13-request-seen",
    ),
    pytest.param(
        Case("Q13", "reset_pending", "reset_approved", "admin", "role_not_allowed", {}, OVERRIDE_RESET),
        id="Q13-admin",
    ),
    pytest.param(
        Case("Q14", "reset_pending", "reset_completed", "sys", "restored", {}, APPROVED_RESET), id="Q14"
    ),
    pytest.param(
        Case("Q14", "reset_pending", "reset_completed", "sys", "guard_failed", {}, PAID_RESET),
        id="Q14-unapproved",
    ),
    # Q15 restored → by thresholds, no filter
    pytest.param(
        Case("Q15", "restored", "usage_sample", "sys", "within_limits", sample(10_000), RESTORED),
        id="Q15-within",
    ),
    pytest.param(
        Case("Q15b", "restored", "usage_sample", "sys", "warning", sample(810_000), RESTORED),
        id="Q15b-warning",
    ),
    pytest.param(
        Case("Q15c", "restored", "usage_sample", "sys", "exceeded", sample(1_000_000), RESTORED),
        id="Q15c-exceeded",
    ),
    # Q16 / Qx4 period rollover
    pytest.param(
        Case("Q16", "warning", "period_rollover", "timer", "within_limits", {}, WARNING), id="Q16-warning"
    ),
    pytest.param(
        Case("Q16", "exceeded", "period_rollover", "timer", "within_limits", {}, EXCEEDED), id="Q16-exceeded"
    ),
    pytest.param(
        Case("Q16", "throttled", "period_rollover", "timer", "within_limits", {}, THROTTLED),
        id="Q16-throttled",
    ),
    pytest.param(
        Case(
            "Q16",
            "throttled",
            "period_rollover",
            "timer",
            "guard_failed",
            {},
            {**THROTTLED, "usage": {**THROTTLED["usage"], "storage_gb": 101}},
        ),
        id="Q16-hard-breach",
    ),
    pytest.param(
        Case("Qx4", "within_limits", "period_rollover", "timer", "within_limits", {}, WITHIN), id="Qx4-within"
    ),
    pytest.param(
        Case("Qx4", "circuit_breaker", "period_rollover", "timer", "circuit_breaker", {}, BREAKER),
        id="Qx4-breaker",
    ),
    pytest.param(
        Case("-", "warning", "period_rollover", "timer", "stale_timer", {}, WARNING, stale=True),
        id="rollover-stale-timer",
    ),
    # Q17 quota_override (re-evaluated)
    pytest.param(
        Case("Q17", "within_limits", "quota_override", "admin", "within_limits", override(2_000_000), WITHIN),
        id="Q17-within",
    ),
    pytest.param(
        Case("Q17", "throttled", "quota_override", "admin", "within_limits", override(5_000_000), THROTTLED),
        id="Q17-lifts-throttle",
    ),
    pytest.param(
        Case("Q17b", "within_limits", "quota_override", "admin", "warning", override(600_000), WITHIN),
        id="Q17b-warning",
    ),
    pytest.param(
        Case("Q17c", "within_limits", "quota_override", "admin", "exceeded", override(400_000), WITHIN),
        id="Q17c-reduce",
    ),
    pytest.param(
        Case("Q17d", "throttled", "quota_override", "admin", "throttled", override(1_000_000), THROTTLED),
        id="Q17d-still-over",
    ),
    pytest.param(
        Case(
            "Q17d",
            "reset_pending",
            "quota_override",
            "admin",
            "reset_pending",
            override(2_000_000),
            PAID_RESET,
        ),
        id="Q17d-reset-pending",
    ),
    pytest.param(
        Case(
            "Q17",
            "within_limits",
            "quota_override",
            "admin",
            "guard_failed",
            override(2_000_000, days=31),
            WITHIN,
        ),
        id="Q17-expiry-too-far",
    ),
    pytest.param(
        Case(
            "Q17",
            "within_limits",
            "quota_override",
            "admin",
            "guard_failed",
            override(2_000_000, days=-1),
            WITHIN,
        ),
        id="Q17-expiry-past",
    ),
    pytest.param(
        Case("Q17", "within_limits", "quota_override", "admin", "invalid_input", override(-5), WITHIN),
        id="Q17-negative",
    ),
    pytest.param(
        Case(
            "Q17",
            "within_limits",
            "quota_override",
            "admin",
            "invalid_input",
            override(5, metric="bandwidth"),
            WITHIN,
        ),
        id="Q17-unknown-metric",
    ),
    pytest.param(
        Case("Q17", "within_limits", "quota_override", "manager", "role_not_allowed", override(5), WITHIN),
        id="Q17-manager",
    ),
    pytest.param(
        Case("-", "circuit_breaker", "quota_override", "admin", "invalid_transition", override(5), BREAKER),
        id="Q17-not-in-breaker",
    ),
    # Qx5 tier_upgraded elsewhere
    pytest.param(
        Case(
            "Qx5",
            "within_limits",
            "tier_upgraded",
            "cascade",
            "within_limits",
            {"tier": "professional"},
            WITHIN,
        ),
        id="Qx5-within",
    ),
    pytest.param(
        Case(
            "Qx5",
            "circuit_breaker",
            "tier_upgraded",
            "cascade",
            "circuit_breaker",
            {"tier": "enterprise"},
            BREAKER,
        ),
        id="Qx5-breaker",
    ),
    # Qx6 burst
    pytest.param(
        Case("Qx6", "exceeded", "burst_activate", "support", "exceeded", {"duration_s": 300}, EXCEEDED),
        id="Qx6",
    ),
    pytest.param(
        Case("Qx6", "warning", "burst_activate", "support", "guard_failed", {"duration_s": 301}, WARNING),
        id="Qx6-too-long",
    ),
    pytest.param(
        Case("Qx6", "warning", "burst_activate", "support", "invalid_input", {"duration_s": 0}, WARNING),
        id="Qx6-zero",
    ),
    pytest.param(
        Case("Qx6", "warning", "burst_activate", "admin", "role_not_allowed", {"duration_s": 60}, WARNING),
        id="Qx6-admin",
    ),
    pytest.param(
        Case(
            "-", "throttled", "burst_activate", "support", "invalid_transition", {"duration_s": 60}, THROTTLED
        ),
        id="Qx6-throttled",
    ),
    # Qx7 SLA period close
    pytest.param(
        Case("Qx7", "within_limits", "sla_period_closed", "sys", "within_limits", SLA, WITHIN), id="Qx7"
    ),
    pytest.param(
        Case("Qx7", "throttled", "sla_period_closed", "sys", "throttled", SLA, THROTTLED), id="Qx7-throttled"
    ),
    pytest.param(
        Case(
            "Qx7",
            "within_limits",
            "sla_period_closed",
            "sys",
            "guard_failed",
            SLA,
            {**WITHIN, "sla_periods": [{"key": "c1:2026-01"}]},
        ),
        id="Qx7-period-closed-twice",
    ),
    pytest.param(
        Case(
            "Qx7",
            "within_limits",
            "sla_period_closed",
            "sys",
            "guard_failed",
            {**SLA, "uptime_pct": "101"},
            WITHIN,
        ),
        id="Qx7-uptime-out-of-range",
    ),
    pytest.param(
        Case(
            "Qx7",
            "within_limits",
            "sla_period_closed",
            "sys",
            "invalid_input",
            {k: v for k, v in SLA.items() if k != "uptime_pct"},
            WITHIN,
        ),
        id="Qx7-no-uptime",
    ),
    # Qx8 noisy flag
    pytest.param(
        Case(
            "Qx8", "warning", "noisy_flag", "sys", "warning", {"shares": {"cpu": 95, "network": 20}}, WARNING
        ),
        id="Qx8",
    ),
    pytest.param(
        Case("Qx8", "warning", "noisy_flag", "sys", "guard_failed", {"shares": {"cpu": 89.9}}, WARNING),
        id="Qx8-below-90",
    ),
]


TABLE = Table(
    GOVERNOR,
    CASES,
    lambda case: make(case.state, case.data),
    facts=facts,
    rejection_row="if_named",
    spec_rows={f"Q{n:02d}" for n in range(1, 18)},
)
test_row, test_every_row_is_in_the_table, test_every_row_id_is_from_the_spec_or_marked_added = TABLE.tests()


def test_every_spec_row_and_state_is_defined() -> None:
    assert GOVERNOR.state_names == (
        "within_limits",
        "warning",
        "exceeded",
        "throttled",
        "circuit_breaker",
        "reset_pending",
        "restored",
    )
    assert not GOVERNOR.terminal_states


# --------------------------------------------------------------------------- evaluation helpers


def test_tier_table_is_the_spec_table() -> None:
    assert tier_limits(SETTINGS, "starter") == STARTER
    assert tier_limits(SETTINGS, "professional") == {
        "api_requests": 10_000_000,
        "concurrent_calls": 1000,
        "storage_gb": 1000,
    }
    assert tier_limits(SETTINGS, "enterprise") == {"concurrent_calls": 10_000, "storage_gb": 10_000}
    assert tier_limits(SETTINGS, "free") == {
        "api_requests": 10_000,
        "concurrent_calls": 100,
        "storage_gb": 100,
    }
    assert tier_limits(SETTINGS, "trial", "professional") == {
        "api_requests": 100_000,
        "report_runs": 1000,
        "concurrent_calls": 1000,
        "storage_gb": 1000,
    }


def test_most_constrained_soft_metric_decides_the_band() -> None:
    limits = {"api_requests": 1000, "cpu_hours": 10, "storage_gb": 1}
    pct, metric = utilisation(
        {"api_requests": 500, "cpu_hours": 9, "storage_gb": 50}, limits, ["api_requests", "cpu_hours"]
    )
    assert (pct, metric) == (90.0, "cpu_hours"), "hard metrics never set the band"
    assert band(pct, 80, 100) == "warning"
    assert band(79.99, 80, 100) == "within_limits"
    assert band(100.0, 80, 100) == "exceeded"
    assert utilisation({"api_requests": 10**9}, {}, ["api_requests"]) == (0.0, None), "unlimited"


def test_overrides_revert_at_expiry() -> None:
    overrides = {"api_requests": {"limit": 5, "expires_at": NOW + timedelta(hours=1)}}
    assert effective_limits(STARTER, overrides, NOW)["api_requests"] == 5
    assert effective_limits(STARTER, overrides, NOW + timedelta(hours=1))["api_requests"] == 1_000_000


def test_overage_lines_are_upserted_per_metric() -> None:
    prices = SETTINGS["quota_sla.overage_prices"]
    lines = overage_lines({"api_requests": 1_001_001}, STARTER, ["api_requests"], prices, {})
    assert lines == {"api_requests": {"units": 1001, "cents": 20}}  # 2 started blocks of 1000 at 10 c
    again = overage_lines(
        {"api_requests": 1_000_500}, {"api_requests": 1_000_000}, ["api_requests"], prices, lines
    )
    assert again == lines, "a later, smaller figure never lowers a line"


def test_admission_and_backoff_helpers() -> None:
    usage = {"concurrent_calls": 99.0, "storage_gb": 10.0}
    hard = ["concurrent_calls", "storage_gb", "deployments"]
    assert hard_limit_breach(usage, STARTER, hard, {"concurrent_calls": 1}) is None
    assert hard_limit_breach(usage, STARTER, hard, {"concurrent_calls": 2}) == "concurrent_calls"
    assert hard_limit_breach(usage, STARTER, hard, {"deployments": 10**6}) is None, "no deployments limit"
    assert [throttle_delay_ms(n, 100, 10_000) for n in (0, 1, 2, 6, 7, 20)] == [
        100,
        200,
        400,
        6400,
        10_000,
        10_000,
    ]
    assert token_bucket_rate(SETTINGS, "professional", None, NOW) == 1000
    assert token_bucket_rate(SETTINGS, "professional", NOW + timedelta(seconds=1), NOW) == 2000
    assert next_month_start(datetime(2026, 12, 31, 23, tzinfo=UTC)) == datetime(2027, 1, 1, tzinfo=UTC)


def test_admission_guard_says_hard_limit_reached() -> None:
    spec = GUARDS["quota_admission_within_hard_limits"]
    assert spec.code == "hard_limit_reached"
    inst = make("within_limits", {**WITHIN, "usage": {"concurrent_calls": 100}})
    ok = Facts(now=NOW, role="sys", payload={"request": {"storage_gb": 1}}, settings=SETTINGS)
    assert spec.fn(Context(GOVERNOR, inst, "-", ok, SETTINGS, inst.data)) is True
    over = Facts(now=NOW, role="sys", payload={"request": {"concurrent_calls": 1}}, settings=SETTINGS)
    with pytest.raises(Exception, match="concurrent_calls would pass its hard limit of 100"):
        spec.fn(Context(GOVERNOR, inst, "-", over, SETTINGS, inst.data))


# --------------------------------------------------------------------------- data changes


def test_allocation_sets_limits_and_the_billing_month() -> None:
    d = decided(decide(GOVERNOR, make(None), "allocate", facts("cascade", {"tier": "starter"})))
    assert d.changes["limits"] == STARTER
    assert d.changes["period_starts_at"] == NOW
    assert d.changes["period_ends_at"] == FEB
    trial = decided(
        decide(GOVERNOR, make(None), "allocate", facts("cascade", {"tier": "professional", "trial": True}))
    )
    assert trial.changes["tier"] == "trial"
    assert trial.changes["base_tier"] == "professional"
    assert trial.changes["limits"]["api_requests"] == 100_000
    assert trial.changes["limits"]["storage_gb"] == 1000


def test_reallocation_during_a_trial_keeps_the_trial() -> None:
    data = {**WITHIN, "tier": "trial", "base_tier": "starter", "limits": {"api_requests": 100_000}}
    d = decided(
        decide(GOVERNOR, make("within_limits", data), "allocate", facts("cascade", {"tier": "professional"}))
    )
    assert d.changes["tier"] == "trial"
    assert d.changes["limits"]["api_requests"] == 100_000
    assert d.changes["limits"]["concurrent_calls"] == 1000
    converted = decided(
        decide(
            GOVERNOR, make("within_limits", data), "tier_upgraded", facts("cascade", {"tier": "professional"})
        )
    )
    assert converted.changes["tier"] == "professional"
    assert converted.changes["limits"]["api_requests"] == 10_000_000


def test_sample_records_usage_crossings_and_overage() -> None:
    d = decided(decide(GOVERNOR, make("exceeded", EXCEEDED), "usage_sample", facts("sys", sample(1_100_000))))
    assert d.self_transition
    assert d.changes["usage"] == {"api_requests": 1_100_000}
    assert d.changes["last_sample_ts"] == NOW
    assert d.changes["over_limit_since"] == NOW - timedelta(minutes=5), "first crossing kept"
    assert d.changes["under_warning_since"] is None
    assert d.changes["top_metric"] == "api_requests"
    assert d.changes["top_utilisation_pct"] == 110.0
    assert d.changes["overage_lines"] == {"api_requests": {"units": 100_000, "cents": 1000}}
    assert d.changes["overage_cents"] == 1000


def test_noise_filter_timeline() -> None:
    inst = apply(
        make(None), decided(decide(GOVERNOR, make(None), "allocate", facts("cascade", {"tier": "starter"})))
    )
    seen = []
    for seconds, api in (
        (0, 850_000),
        (290, 850_000),
        (301, 860_000),
        (330, 1_000_000),
        (389, 1_010_000),
        (391, 1_020_000),
    ):
        at = NOW + timedelta(seconds=seconds)
        d = decided(
            decide(
                GOVERNOR,
                inst,
                "usage_sample",
                facts("sys", {"metrics": {"api_requests": api}, "sample_ts": at}, now=at),
            )
        )
        seen.append((seconds, d.row_id, d.to_state))
        inst = apply(inst, d)
    assert seen == [
        (0, "Qx3", "within_limits"),
        (290, "Qx3", "within_limits"),
        (301, "Q01", "warning"),
        (330, "Qx3", "warning"),
        (389, "Qx3", "warning"),
        (391, "Q02", "exceeded"),
    ]


def test_filters_are_settings() -> None:
    quick = SETTINGS.override({"quota_sla.warning_hold": "1m"})
    data = {**WITHIN, **since(over_warning_since=M2)}
    d = decided(
        decide(
            GOVERNOR,
            make("within_limits", data),
            "usage_sample",
            facts("sys", sample(850_000), settings=quick),
        )
    )
    assert d.row_id == "Q01"


def test_overage_approval_pauses_the_throttle_timer() -> None:
    inst = make("warning", {**WARNING, **since(over_limit_since=M2)}, seq=1)
    inst = apply(inst, decided(decide(GOVERNOR, inst, "usage_sample", facts("sys", sample(1_050_000)))))
    timer = inst.timers["exceeded_timeout"]
    assert timer.due_at == NOW + timedelta(hours=1)
    later = NOW + timedelta(minutes=20)
    d = decided(
        decide(
            GOVERNOR,
            inst,
            "overage_approved",
            facts("finance", {"amount_cents": 2000, "consent_ref": "c-1"}, now=later),
        )
    )
    assert [op.op for op in d.timer_ops] == ["pause"]
    assert d.timer_ops[0].timer.remaining == timedelta(minutes=40)
    assert d.changes["overage_approved_cents"] == 2000
    assert d.changes["consent_refs"] == ["c-1"]


def test_throttle_then_breaker_timers() -> None:
    inst = make("exceeded", EXCEEDED, seq=1)
    d = decided(decide(GOVERNOR, inst, "exceeded_timeout", facts("timer", seq=1)))
    assert d.changes["throttled_at"] == NOW
    assert d.effects[0].args == {"status": 429, "retry_after": "1h"}
    inst = apply(inst, d)
    assert inst.timers["throttled_timeout"].due_at == NOW + timedelta(hours=24)
    assert inst.timers["period_rollover"].due_at == FEB
    t = inst.timers["throttled_timeout"]
    inst = apply(
        inst, decided(decide(GOVERNOR, inst, t.event, timer_facts(inst, t, t.due_at or NOW, SETTINGS)))
    )
    assert inst.state == "circuit_breaker"
    assert set(inst.timers) == {"period_rollover"}


def test_rollover_rearms_for_the_next_month_and_bills_overage() -> None:
    inst = make(
        "within_limits", {**WITHIN, "overage_lines": OVER_LINES, "overage_cents": 500}, seq=2, timers={}
    )
    d = decided(decide(GOVERNOR, inst, "period_rollover", facts("timer", now=FEB, seq=2)))
    assert d.row_id == "Qx4"
    assert [(op.op, op.timer.due_at) for op in d.timer_ops] == [("arm", datetime(2026, 3, 1, tzinfo=UTC))]
    assert d.changes["period_starts_at"] == FEB
    assert d.changes["usage"] == {"storage_gb": 10}, "soft counters reset, hard levels kept"
    assert d.changes["overage_bill_cents"] == 500
    assert d.changes["overage_cents"] == 0
    billing = [c for c in d.cascades if c.target == "billing"]
    assert len(billing) == 1
    assert billing[0].id == "X26"
    assert (billing[0].event, billing[0].select) == ("cycle_begin", "new")
    assert billing[0].payload == {
        "kind": "overage",
        "amount_cents": 500,
        "currency": "USD",
        "period": datetime(2026, 1, 1, tzinfo=UTC),
        "lines": OVER_LINES,
    }


def test_rollover_does_not_bill_twice_what_the_recovery_invoice_billed() -> None:
    d = decided(
        decide(GOVERNOR, make("circuit_breaker", BREAKER), "period_rollover", facts("timer", now=FEB))
    )
    assert d.changes["overage_bill_cents"] == 0
    assert d.cascades == ()


def test_reset_clears_counters_and_a_paid_overage() -> None:
    d = decided(
        decide(
            GOVERNOR,
            make("reset_pending", PAID_RESET),
            "reset_approved",
            facts("sys", {"reset_request_id": "rr-1"}),
        )
    )
    assert d.changes["usage"] == {}
    assert d.changes["overage_cents"] == 0
    assert d.changes["reset_request_ids"] == ["rr-1"]
    assert d.changes["reset_approved_at"] == NOW
    upgraded = {**THROTTLED, "reset_reason": "tier_upgraded"}
    d2 = decided(decide(GOVERNOR, make("reset_pending", upgraded), "reset_approved", facts("sys")))
    assert "overage_cents" not in d2.changes, (
        "an upgrade does not pay the overage: it is billed at period close"
    )


def test_override_is_recorded_with_its_expiry() -> None:
    d = decided(
        decide(GOVERNOR, make("within_limits", WITHIN), "quota_override", facts("admin", override(600_000)))
    )
    assert d.changes["overrides"] == {
        "api_requests": {"limit": 600_000, "expires_at": NOW + timedelta(days=7), "above_tier": False}
    }
    assert d.changes["top_utilisation_pct"] == 83.33


def test_burst_until() -> None:
    d = decided(
        decide(
            GOVERNOR, make("within_limits", WITHIN), "burst_activate", facts("support", {"duration_s": 120})
        )
    )
    assert d.changes["burst_until"] == NOW + timedelta(seconds=120)
    assert d.effects[0].args == {
        "until": NOW + timedelta(seconds=120),
        "rate_factor": 2.0,
        "cost_factor": 1.5,
    }


# --------------------------------------------------------------------------- SLA credits (§6.3, D-30)


@pytest.mark.parametrize(
    ("tier", "payload", "credit"),
    [
        ("starter", SLA, "15"),  # 10 × 0.5 pp = 5, + 5 (p99 2500 > 2000) + 5 (2 % > 1 %)
        ("starter", {"period": "p", "uptime_pct": "99.5", "p99_ms": 2000, "error_rate_pct": "1"}, "0"),
        ("professional", {"period": "p", "uptime_pct": "99.85"}, "0.5"),
        ("professional", {"period": "p", "uptime_pct": "95", "p99_ms": 501, "error_rate_pct": "0.2"}, "20"),
        ("enterprise", {"period": "p", "uptime_pct": "99.98", "p99_ms": 100}, "0.1"),
        ("free", {"period": "p", "uptime_pct": "50", "p99_ms": 99_999, "error_rate_pct": "90"}, "0"),
        ("trial", {"period": "p", "uptime_pct": "50"}, "0"),
    ],
)
def test_sla_credit_percent(tier: str, payload: dict[str, Any], credit: str) -> None:
    d = decided(
        decide(
            GOVERNOR,
            make("within_limits", {**WITHIN, "tier": tier}),
            "sla_period_closed",
            facts("sys", payload),
        )
    )
    assert d.changes["last_sla_credit_pct"] == credit
    assert Decimal(d.changes["sla_periods"][-1]["credit_pct"]) == Decimal(credit)
    x29 = [c for c in d.cascades if c.id == "X29"]
    if Decimal(credit) > 0:
        assert len(x29) == 1
        assert x29[0].payload == {"period": payload["period"], "credit_pct": credit, "kind": "sla"}
        assert (x29[0].target, x29[0].event, x29[0].where) == (
            "billing",
            "apply_credit",
            "quota_x29_invoice_open",
        )
    else:
        assert x29 == []


def test_sla_total_cap_is_25() -> None:
    wide = SETTINGS.override({"quota_sla.sla_uptime_cap_pct": 30})
    payload = {"period": "p", "uptime_pct": "90", "p99_ms": 9999, "error_rate_pct": "50"}
    d = decided(
        decide(
            GOVERNOR, make("within_limits", WITHIN), "sla_period_closed", facts("sys", payload, settings=wide)
        )
    )
    assert d.changes["last_sla_credit_pct"] == "25"


# --------------------------------------------------------------------------- four-eyes


@pytest.mark.parametrize(
    ("state", "data", "event", "payload", "expected"),
    [
        ("within_limits", WITHIN, "quota_override", override(1_000_000), None),
        ("within_limits", WITHIN, "quota_override", override(900_000), None),
        (
            "within_limits",
            WITHIN,
            "quota_override",
            override(1_000_001),
            FourEyes(("manager",), when="quota_override_above_tier"),
        ),
        (
            "throttled",
            THROTTLED,
            "quota_override",
            override(1_000_001),
            FourEyes(("manager",), when="quota_override_above_tier"),
        ),
        ("within_limits", {**WITHIN, "limits": {}}, "quota_override", override(5), None),
        ("circuit_breaker", BREAKER, "manual_override", {}, FourEyes(("manager",))),
    ],
)
def test_four_eyes(
    state: str, data: dict[str, Any], event: str, payload: dict[str, Any], expected: FourEyes | None
) -> None:
    d = decided(decide(GOVERNOR, make(state, data), event, facts("admin", payload)))
    assert d.needs_approval == expected
    approved = decided(decide(GOVERNOR, make(state, data), event, facts("admin", payload, approved_by="m1")))
    assert approved.needs_approval is None


def test_overage_approval_and_reset_need_no_second_person() -> None:
    for state, data, event, role, payload in (
        ("exceeded", EXCEEDED, "overage_approved", "finance", {"amount_cents": 1, "consent_ref": "c"}),
        ("reset_pending", OVERRIDE_RESET, "reset_approved", "manager", {}),
        ("warning", WARNING, "burst_activate", "support", {"duration_s": 10}),
    ):
        assert (
            decided(decide(GOVERNOR, make(state, data), event, facts(role, payload))).needs_approval is None
        )


# --------------------------------------------------------------------------- cascades


def _ids(d: Decision) -> list[tuple[str, str, str]]:
    return [(c.id, c.target, c.event) for c in d.cascades]


def test_x26_notice_on_exceeded() -> None:
    for state, data, payload in (
        ("warning", {**WARNING, **since(over_limit_since=M2)}, sample(1_050_000)),
        ("restored", RESTORED, sample(1_050_000)),
    ):
        d = decided(decide(GOVERNOR, make(state, data), "usage_sample", facts("sys", payload)))
        assert _ids(d) == [("X26", "customer_account", "usage_notice")]
        assert d.cascades[0].payload == {
            "kind": "quota_exceeded",
            "metric": "api_requests",
            "utilisation_pct": 105.0,
        }
        assert d.cascades[0].where == "quota_x26_account_open"


def test_x26_bill_on_rollover() -> None:
    d = decided(decide(GOVERNOR, make("exceeded", EXCEEDED), "period_rollover", facts("timer")))
    assert _ids(d) == [("X26", "billing", "cycle_begin"), ("X26", "customer_account", "usage_notice")]
    assert d.cascades[0].payload["amount_cents"] == 500
    assert d.cascades[1].payload == {"kind": "overage_billed", "amount_cents": 500}
    quiet = decided(decide(GOVERNOR, make("warning", WARNING), "period_rollover", facts("timer")))
    assert quiet.cascades == ()


def test_x27_recovery_invoice_on_the_breaker() -> None:
    d = decided(decide(GOVERNOR, make("throttled", THROTTLED), "throttled_timeout", facts("timer")))
    assert _ids(d) == [("X27", "billing", "cycle_begin"), ("X27", "customer_account", "usage_notice")]
    invoice = d.cascades[0]
    assert invoice.select == "new"
    assert invoice.payload["kind"] == "recovery"
    assert invoice.payload["amount_cents"] == 500
    assert invoice.payload["currency"] == "USD"
    assert d.changes["billed_overage_cents"] == 500
    assert d.cascades[1].payload == {
        "kind": "circuit_breaker",
        "reason": "throttle_timeout",
        "amount_cents": 500,
    }
    hard = decided(
        decide(
            GOVERNOR,
            make("within_limits", WITHIN),
            "hard_limit_breached",
            facts("sys", {"metrics": {"storage_gb": 101}}),
        )
    )
    assert _ids(hard) == [("X27", "customer_account", "usage_notice")], "nothing to invoice: override path"
    assert hard.changes["breaker_reason"] == "hard_limit"


def test_x42_noisy_flag() -> None:
    d = decided(
        decide(
            GOVERNOR, make("warning", WARNING), "noisy_flag", facts("sys", {"shares": {"cpu": 95, "io": 97}})
        )
    )
    assert _ids(d) == [("X42", "multi_tenant", "noisy_flag")]
    assert d.cascades[0].payload == {"resource": "io", "share_pct": 97.0}
    assert d.cascades[0].where == "quota_x42_tenant_running"


def _peer(governor: str, state: str, data: Mapping[str, Any] | None = None) -> Instance:
    return Instance(
        governor=governor, id="p", state=state, state_seq=1, customer_id="c1", data=dict(data or {})
    )


@pytest.mark.parametrize(
    ("name", "target", "expected"),
    [
        ("quota_x26_account_open", _peer("customer_account", "active"), True),
        ("quota_x26_account_open", _peer("customer_account", "deactivated"), False),
        ("quota_x29_invoice_open", _peer("billing", "awaiting_invoice", {"kind": "renewal"}), True),
        ("quota_x29_invoice_open", _peer("billing", "payment_pending", {"kind": "initial"}), True),
        ("quota_x29_invoice_open", _peer("billing", "payment_pending", {"kind": "overage"}), False),
        ("quota_x29_invoice_open", _peer("billing", "retry_1", {"kind": "renewal"}), False),
        ("quota_x42_tenant_running", _peer("multi_tenant", "resource_contention"), True),
        ("quota_x42_tenant_running", _peer("multi_tenant", "suspended"), False),
    ],
)
def test_cascade_targets(name: str, target: Instance, expected: bool) -> None:
    assert where(name, target, governor=GOVERNOR, event="-") is expected


def test_breaker_recovery_loop_through_billing() -> None:
    """Q09 → X27 recovery invoice (B01) → paid (B04) → X06 → Q11 reset_pending."""
    quota = make("throttled", THROTTLED)
    result = plan({quota.id: quota}, quota.id, "throttled_timeout", facts("timer"))
    assert result.ok
    statuses = [(s.governor, s.event, s.status) for s in result.steps]
    assert statuses == [("quota_sla", "throttled_timeout", "applied"), ("billing", "cycle_begin", "applied")]
    world = dict(result.instances)
    (invoice_id,) = [k for k, v in world.items() if v.governor == "billing"]
    invoice = world[invoice_id]
    assert invoice.state == "awaiting_invoice"
    assert invoice.data["kind"] == "recovery"
    assert invoice.data["amount_cents"] == 500
    for event, role, payload in (
        ("invoice_generation_time_reached", "timer", {}),
        ("invoice_delivered", "sys", {"confirmed": True}),
    ):
        f = Facts(
            now=NOW,
            role=role,
            payload=payload,
            settings=SETTINGS,
            timer_seq=world[invoice_id].state_seq if role == "timer" else None,
        )
        world[invoice_id] = apply(world[invoice_id], decided(decide("billing", world[invoice_id], event, f)))
    paid = plan(
        world,
        invoice_id,
        "payment_received",
        Facts(now=NOW, role="sys", payload={"amount_cents": 500, "payment_id": "py-r"}, settings=SETTINGS),
    )
    assert paid.ok
    assert [(s.governor, s.event, s.status) for s in paid.steps] == [
        ("billing", "payment_received", "applied"),
        ("quota_sla", "recovery_payment_received", "applied"),
    ]
    assert paid.instances[quota.id].state == "reset_pending"
    assert paid.instances[quota.id].data["reset_reason"] == "recovery_payment_received"


def test_x29_credits_one_open_subscription_invoice() -> None:
    """Qx7 → X29 → Bx3 on the open renewal invoices; the credit key lets only the first one take it."""
    quota = make("within_limits", WITHIN)
    invoice = {"kind": "renewal", "amount_cents": 2999, "total_cents": 2999, "currency": "USD"}
    world = {
        quota.id: quota,
        "inv-a": Instance(
            "billing", "inv-a", "payment_pending", 2, customer_id="c1", subject_id="inv-a", data=invoice
        ),
        "inv-b": Instance(
            "billing", "inv-b", "invoice_issued", 2, customer_id="c1", subject_id="inv-b", data=invoice
        ),
        "inv-c": Instance(
            "billing",
            "inv-c",
            "payment_pending",
            2,
            customer_id="c1",
            subject_id="inv-c",
            data={**invoice, "kind": "overage"},
        ),
    }
    result = plan(world, quota.id, "sla_period_closed", facts("sys", SLA))
    assert [(s.instance_id, s.event, s.status) for s in result.steps] == [
        ("quota-1", "sla_period_closed", "applied"),
        ("inv-a", "apply_credit", "applied"),
        ("inv-b", "apply_credit", "ignored"),
    ]
    assert result.instances["inv-a"].data["total_cents"] == 2999 - 450  # 15 % of 2999 = 449.85 → 450
    assert "credits" not in result.instances["inv-b"].data
