"""Quota & SLA governor (GOVERNORS.md §6): one instance per customer (tenant).

Soft limits bill overage, hard limits refuse at admission (``hard_limit_reached``, a helper in
``governors.rules.quota_sla``), sustained overuse escalates to throttling (1 h) and a circuit breaker
(24 h), and each billing period close measures the SLA and issues credits (D-30). The state follows the
most constrained soft metric [C]; the 5 min / 1 min noise filters [G] are first-crossing timestamps kept
in the data (over_warning_since, over_limit_since, under_warning_since) compared with settings.

Data kept by the rows: tier, base_tier (the tier a trial runs on), limits, overrides (metric →
limit, expires_at, above_tier), usage, last_sample_ts, the crossing timestamps, top_metric,
top_utilisation_pct, overage_lines / overage_cents, billed_overage_cents, overage_approved(_cents),
consent_refs, period_starts_at / period_ends_at, overage_bill_* (X26), recovery_due_cents /
recovery_lines (X27), breaker_reason, reset_reason, reset_approved_at, reset_request_ids, burst_until,
sla_periods, last_sla_period / last_sla_credit_pct (X29), noisy_resource / noisy_share_pct (X42).
"""

from __future__ import annotations

from typing import Final

from governors.spec import ANY, SAME, Cascade, FourEyes, Governor, Input, State, Timer, Transition, fx

TIERS: Final = ("free", "trial", "starter", "professional", "enterprise")
# §6 Evaluation [S,C]: soft metrics set the state (overage), hard metrics refuse at admission. Trials also
# count report runs (D-32). Not settings: the metric names are the vocabulary of the samples.
SOFT_METRICS: Final = ("api_requests", "data_transfer_gb", "cpu_hours", "report_runs")
HARD_METRICS: Final = ("concurrent_calls", "storage_gb", "deployments")
METRICS: Final = SOFT_METRICS + HARD_METRICS

_STARTER_HARD: Final = {"concurrent_calls": 100, "storage_gb": 100}

SETTINGS: dict[str, object] = {
    # Evaluation (§6, §6.1): utilisation thresholds in percent of the effective limit.
    "quota_sla.warning_pct": 80,
    "quota_sla.exceeded_pct": 100,
    # Noise filters (§6.4, D-28 from G): warning entry 5 min, exceeded entry 1 min, recovery 5 min.
    "quota_sla.warning_hold": "5m",
    "quota_sla.exceeded_hold": "1m",
    "quota_sla.recovery_hold": "5m",
    # Escalation timers (D-31): exceeded → throttled 1 h, throttled → circuit_breaker 24 h.
    "quota_sla.throttle_after": "1h",
    "quota_sla.breaker_after": "24h",
    # Q06: 429 with Retry-After 3600 s; client backoff delay(n) = min(2^n × 100 ms, 10 s) [G].
    "quota_sla.retry_after": "1h",
    "quota_sla.backoff_base_ms": 100,
    "quota_sla.backoff_cap_ms": 10000,
    # Burst (self-event): 2× rate for at most 300 s [S,C]; overage during a burst costs 1.5× (passed to the
    # enforcement and metering layer in the quota_activate_burst effect).
    "quota_sla.burst_max": "5m",
    "quota_sla.burst_rate_factor": 2.0,
    "quota_sla.burst_cost_factor": 1.5,
    # Q17: an override expires at most 30 d ahead.
    "quota_sla.override_max": "30d",
    # X42: any metric at or above 90 % of a shared resource flags a noisy neighbour [C].
    "quota_sla.noisy_share_pct": 90,
    # Tier table of §6 (D-32). A metric missing from a tier is unlimited. free: hard limits as starter;
    # trial: 100K calls + 1K report runs, hard limits of the trial's base tier.
    "quota_sla.tier_limits": {
        "starter": {"api_requests": 1_000_000, **_STARTER_HARD},
        "professional": {"api_requests": 10_000_000, "concurrent_calls": 1000, "storage_gb": 1000},
        "enterprise": {"concurrent_calls": 10_000, "storage_gb": 10_000},
        "free": {"api_requests": 10_000, **_STARTER_HARD},
        "trial": {"api_requests": 100_000, "report_runs": 1000},
    },
    "quota_sla.trial_base_tier": "starter",
    "quota_sla.token_bucket_per_s": {"starter": 100, "professional": 1000, "enterprise": 10_000, "free": 100},
    # SLA targets (D-29, S/C); free and trial have no SLA. Decimals as strings (exact).
    "quota_sla.sla_targets": {
        "starter": {"uptime_pct": "99.5", "p99_ms": 2000, "error_rate_pct": "1"},
        "professional": {"uptime_pct": "99.9", "p99_ms": 500, "error_rate_pct": "0.1"},
        "enterprise": {"uptime_pct": "99.99", "p99_ms": 100, "error_rate_pct": "0.01"},
    },
    # §6.3 credit formula (D-30): min(10, 10 × shortfall pp) + 5 (p99) + 5 (error rate), capped at 25 %.
    "quota_sla.sla_uptime_cap_pct": 10,
    "quota_sla.sla_uptime_factor": 10,
    "quota_sla.sla_p99_penalty_pct": 5,
    "quota_sla.sla_error_penalty_pct": 5,
    "quota_sla.sla_total_cap_pct": 25,
    # Overage prices per metric [I: the sources give none]: `cents` per started block of `per` units.
    "quota_sla.overage_prices": {
        "api_requests": {"per": 1000, "cents": 10},
        "data_transfer_gb": {"per": 1, "cents": 9},
        "cpu_hours": {"per": 1, "cents": 5},
        "report_runs": {"per": 100, "cents": 50},
    },
    "quota_sla.currency": "USD",
}

_ROLL = Timer("period_rollover", "period_rollover", at="period_ends_at")

STATES: Final = (
    State("within_limits", "Every soft metric below 80 %", timers=(_ROLL,)),
    State("warning", "Highest soft utilisation in [80 %, 100 %)", timers=(_ROLL,)),
    State(
        "exceeded",
        "A soft metric at or above 100 %. Overage accrues per unit",
        attention=True,
        attention_reason="soft limit exceeded; overage accruing",
        timers=(
            Timer(
                "exceeded_timeout",
                "exceeded_timeout",
                after="quota_sla.throttle_after",
                when="quota_overage_not_approved",
            ),
            _ROLL,
        ),
    ),
    State(
        "throttled",
        "New requests get 429 with Retry-After 3600 s and backoff",
        attention=True,
        attention_reason="customer throttled",
        timers=(Timer("throttled_timeout", "throttled_timeout", after="quota_sla.breaker_after"), _ROLL),
    ),
    State(
        "circuit_breaker",
        "Every request rejected. Needs payment or an override",
        attention=True,
        attention_reason="circuit breaker open: every request rejected",
        timers=(_ROLL,),
    ),
    State(
        "reset_pending",
        "Recovery paid, tier upgraded or override given. Waiting for the reset",
        attention=True,
        attention_reason="quota reset waiting",
        timers=(_ROLL,),
    ),
    State("restored", "Reset done. The next sample re-evaluates", timers=(_ROLL,)),
)

_SAMPLE: Final = (
    Input("metrics", "mapping"),
    Input("sample_ts", "datetime", required=False),
)
_FRESH = "quota_sample_fresh"
_RECORD = "quota_record_sample"
_TIER_INPUT: Final = (
    Input("tier", "code", choices=TIERS),
    Input("trial", "bool", required=False),
)
_OVERRIDE_INPUTS: Final = (
    Input("metric", "code", choices=METRICS),
    Input("limit", "int", min=0),
    Input("expires_at", "datetime"),
)
_OVERRIDE_4E: Final = FourEyes(("manager",), when="quota_override_above_tier")
_OVERRIDE_GUARDS: Final = ("quota_override_expiry_ok",)
_BREAKER_EFFECTS: Final = (
    fx("quota_open_breaker"),
    fx("notify_customer", template="quota_circuit_breaker", reason="$data.breaker_reason"),
    fx("notify_staff", queue="support", template="quota_circuit_breaker"),
)
_ALL_STATES: Final = (
    "within_limits",
    "warning",
    "exceeded",
    "throttled",
    "circuit_breaker",
    "reset_pending",
    "restored",
)

TRANSITIONS: Final = (
    Transition(
        "Q01",
        ("usage_sample",),
        ("within_limits",),
        "warning",
        ("sys",),
        guards=(_FRESH, "quota_warning_held"),
        inputs=_SAMPLE,
        updates=(_RECORD,),
        effects=(
            fx(
                "notify_customer",
                template="quota_warning",
                metric="$data.top_metric",
                utilisation_pct="$data.top_utilisation_pct",
            ),
        ),
    ),
    Transition(
        "Q02",
        ("usage_sample",),
        ("within_limits", "warning"),
        "exceeded",
        ("sys",),
        guards=(_FRESH, "quota_exceeded_held"),
        inputs=_SAMPLE,
        updates=(_RECORD,),
        effects=(
            fx("quota_start_metering"),
            fx("notify_customer", template="quota_exceeded", metric="$data.top_metric"),
            fx("notify_staff", queue="support", template="quota_exceeded"),
        ),
    ),
    Transition(
        "Q03",
        ("usage_sample",),
        ("warning",),
        "within_limits",
        ("sys",),
        guards=(_FRESH, "quota_recovered_held"),
        inputs=_SAMPLE,
        updates=(_RECORD,),
        effects=(fx("quota_clear_warning"),),
    ),
    # Q04: "warning or within_limits, target by thresholds" (no noise filter), split by band.
    Transition(
        "Q04",
        ("usage_sample",),
        ("exceeded",),
        "warning",
        ("sys",),
        guards=(_FRESH, "quota_band_warning"),
        inputs=_SAMPLE,
        updates=(_RECORD,),
        effects=(fx("quota_stop_metering"),),
    ),
    Transition(
        "Q04b",
        ("usage_sample",),
        ("exceeded",),
        "within_limits",
        ("sys",),
        guards=(_FRESH, "quota_band_within"),
        inputs=_SAMPLE,
        updates=(_RECORD,),
        effects=(fx("quota_stop_metering"),),
    ),
    # Q05: approval pauses the exceeded → throttled timer (its `when` guard), "no throttling while approved".
    Transition(
        "Q05",
        ("overage_approved",),
        ("exceeded",),
        SAME,
        ("sys", "finance"),
        inputs=(Input("amount_cents", "cents", min=1), Input("consent_ref", "text")),
        updates=("quota_approve_overage",),
        effects=(
            fx(
                "audit_note",
                note="overage approved with customer consent",
                consent_ref="$payload.consent_ref",
            ),
        ),
        title="Approve overage for the customer",
    ),
    Transition(
        "Q06",
        ("exceeded_timeout",),
        ("exceeded",),
        "throttled",
        ("timer",),
        guards=("quota_overage_not_approved",),
        set={"throttled_at": "$now"},
        effects=(
            fx("quota_apply_throttle", status=429, retry_after="$setting.quota_sla.retry_after"),
            fx("notify_customer", template="quota_throttled"),
        ),
    ),
    # Q07 (X30): the new tier's limits, then the state by thresholds (split by band).
    Transition(
        "Q07",
        ("tier_upgraded",),
        ("warning", "exceeded"),
        "within_limits",
        ("cascade",),
        guards=("quota_band_within",),
        inputs=_TIER_INPUT,
        updates=("quota_apply_tier",),
        effects=(fx("quota_apply_limits"),),
    ),
    Transition(
        "Q07b",
        ("tier_upgraded",),
        ("warning", "exceeded"),
        "warning",
        ("cascade",),
        guards=("quota_band_warning",),
        inputs=_TIER_INPUT,
        updates=("quota_apply_tier",),
        effects=(fx("quota_apply_limits"),),
    ),
    Transition(
        "Q07c",
        ("tier_upgraded",),
        ("warning", "exceeded"),
        "exceeded",
        ("cascade",),
        guards=("quota_band_exceeded",),
        inputs=_TIER_INPUT,
        updates=("quota_apply_tier",),
        effects=(fx("quota_apply_limits"),),
    ),
    Transition(
        "Q08",
        ("tier_upgraded", "overage_paid"),
        ("throttled",),
        "reset_pending",
        ("cascade",),
        guards=("quota_tier_given_for_upgrade",),
        inputs=(Input("tier", "code", required=False, choices=TIERS),),
        updates=("quota_prepare_reset",),
        effects=(fx("quota_prepare_reset"),),
    ),
    Transition(
        "Q09",
        ("throttled_timeout", "cascade_detected"),
        ("throttled",),
        "circuit_breaker",
        ("timer", "cascade"),
        updates=("quota_open_breaker",),
        effects=_BREAKER_EFFECTS,
    ),
    Transition(
        "Q10",
        ("hard_limit_breached",),
        ("within_limits", "warning", "exceeded", "throttled"),
        "circuit_breaker",
        ("sys",),
        guards=("quota_hard_limit_observed",),
        inputs=(Input("metrics", "mapping", required=False),),
        updates=("quota_open_breaker",),
        effects=_BREAKER_EFFECTS,
    ),
    Transition(
        "Q11",
        ("recovery_payment_received",),
        ("circuit_breaker",),
        "reset_pending",
        ("cascade",),
        guards=("quota_recovery_invoice_paid",),
        updates=("quota_prepare_reset",),
        effects=(fx("quota_prepare_reset"),),
    ),
    Transition(
        "Q12",
        ("manual_override",),
        ("circuit_breaker",),
        "reset_pending",
        ("admin",),
        four_eyes=FourEyes(("manager",)),
        updates=("quota_prepare_reset",),
        effects=(fx("audit_note", note="circuit breaker overridden"), fx("quota_prepare_reset")),
        title="Override circuit breaker",
    ),
    Transition(
        "Q13",
        ("reset_approved",),
        ("reset_pending",),
        SAME,
        ("sys", "manager"),
        guards=("quota_reset_path_allows_role", "quota_reset_not_approved", "quota_reset_request_unseen"),
        inputs=(Input("reset_request_id", "text", required=False),),
        updates=("quota_approve_reset",),
        effects=(fx("quota_lift_throttle_and_breaker"), fx("quota_run_reset_job")),
        title="Approve quota reset",
    ),
    Transition(
        "Q14",
        ("reset_completed",),
        ("reset_pending",),
        "restored",
        ("sys",),
        guards=("quota_reset_approved",),
        set={"restored_at": "$now"},
        effects=(fx("notify_customer", template="quota_restored"),),
    ),
    # Q15: by thresholds, no noise filter (split by band).
    Transition(
        "Q15",
        ("usage_sample",),
        ("restored",),
        "within_limits",
        ("sys",),
        guards=(_FRESH, "quota_band_within"),
        inputs=_SAMPLE,
        updates=(_RECORD,),
    ),
    Transition(
        "Q15b",
        ("usage_sample",),
        ("restored",),
        "warning",
        ("sys",),
        guards=(_FRESH, "quota_band_warning"),
        inputs=_SAMPLE,
        updates=(_RECORD,),
        effects=(
            fx(
                "notify_customer",
                template="quota_warning",
                metric="$data.top_metric",
                utilisation_pct="$data.top_utilisation_pct",
            ),
        ),
    ),
    Transition(
        "Q15c",
        ("usage_sample",),
        ("restored",),
        "exceeded",
        ("sys",),
        guards=(_FRESH, "quota_band_exceeded"),
        inputs=_SAMPLE,
        updates=(_RECORD,),
        effects=(
            fx("quota_start_metering"),
            fx("notify_customer", template="quota_exceeded", metric="$data.top_metric"),
        ),
    ),
    Transition(
        "Q16",
        ("period_rollover",),
        ("warning", "exceeded", "throttled"),
        "within_limits",
        ("timer",),
        guards=("quota_no_hard_breach",),
        updates=("quota_roll_period",),
        effects=(fx("quota_reset_soft_counters"),),
    ),
    # Q17: "(re-evaluated)" by the new effective limit. Throttled stays throttled while still over the limit
    # and reset_pending keeps waiting for its reset (Q17d); the override applies either way.
    Transition(
        "Q17",
        ("quota_override",),
        ("within_limits", "warning", "exceeded", "throttled", "restored"),
        "within_limits",
        ("admin",),
        guards=(*_OVERRIDE_GUARDS, "quota_band_within"),
        four_eyes=_OVERRIDE_4E,
        inputs=_OVERRIDE_INPUTS,
        updates=("quota_set_override",),
        effects=(fx("quota_apply_limits"),),
        title="Quota override",
    ),
    Transition(
        "Q17b",
        ("quota_override",),
        ("within_limits", "warning", "exceeded", "throttled", "restored"),
        "warning",
        ("admin",),
        guards=(*_OVERRIDE_GUARDS, "quota_band_warning"),
        four_eyes=_OVERRIDE_4E,
        inputs=_OVERRIDE_INPUTS,
        updates=("quota_set_override",),
        effects=(fx("quota_apply_limits"),),
        title="Quota override",
    ),
    Transition(
        "Q17c",
        ("quota_override",),
        ("within_limits", "warning", "exceeded", "restored"),
        "exceeded",
        ("admin",),
        guards=(*_OVERRIDE_GUARDS, "quota_band_exceeded"),
        four_eyes=_OVERRIDE_4E,
        inputs=_OVERRIDE_INPUTS,
        updates=("quota_set_override",),
        effects=(fx("quota_apply_limits"),),
        title="Quota override",
    ),
    Transition(
        "Q17d",
        ("quota_override",),
        ("throttled", "reset_pending"),
        SAME,
        ("admin",),
        guards=_OVERRIDE_GUARDS,
        four_eyes=_OVERRIDE_4E,
        inputs=_OVERRIDE_INPUTS,
        updates=("quota_set_override",),
        effects=(fx("quota_apply_limits"),),
        title="Quota override",
    ),
    # ---- Rows the spec implies but does not number.
    Transition(
        "Qx1",
        ("allocate",),
        (),
        "within_limits",
        ("cascade", "sys"),
        inputs=(*_TIER_INPUT, Input("limits", "mapping", required=False)),
        updates=("quota_allocate",),
        doc="X02 (trial limits) and X04 (tier limits): a new instance.",
    ),
    Transition(
        "Qx2",
        ("allocate",),
        (ANY,),
        SAME,
        ("cascade", "sys"),
        inputs=(*_TIER_INPUT, Input("limits", "mapping", required=False)),
        updates=("quota_apply_tier",),
        effects=(fx("quota_apply_limits"),),
        doc="X04 upsert on an existing instance: new limits, usage kept; the next sample re-evaluates.",
    ),
    Transition(
        "Qx3",
        ("usage_sample",),
        (ANY,),
        SAME,
        ("sys",),
        guards=(_FRESH,),
        inputs=_SAMPLE,
        updates=(_RECORD,),
        doc="A sample that changes no state still updates usage, overage and the first-crossing timestamps.",
    ),
    Transition(
        "Qx4",
        ("period_rollover",),
        ("within_limits", "circuit_breaker", "reset_pending", "restored"),
        SAME,
        ("timer",),
        updates=("quota_roll_period",),
        effects=(fx("quota_reset_soft_counters"),),
        doc="The billing month also rolls where Q16 does not apply: counters reset, accrued overage billed.",
    ),
    Transition(
        "Qx5",
        ("tier_upgraded",),
        ("within_limits", "circuit_breaker", "reset_pending", "restored"),
        SAME,
        ("cascade",),
        inputs=_TIER_INPUT,
        updates=("quota_apply_tier",),
        effects=(fx("quota_apply_limits"),),
        doc="X30 where Q07/Q08 do not apply: new limits; the state waits for the next sample or reset.",
    ),
    Transition(
        "Qx6",
        ("burst_activate",),
        ("within_limits", "warning", "exceeded"),
        SAME,
        ("support",),
        guards=("quota_burst_within_max",),
        inputs=(Input("duration_s", "int", min=1),),
        updates=("quota_start_burst",),
        effects=(
            fx(
                "quota_activate_burst",
                until="$data.burst_until",
                rate_factor="$setting.quota_sla.burst_rate_factor",
                cost_factor="$setting.quota_sla.burst_cost_factor",
            ),
        ),
        title="Activate burst",
    ),
    Transition(
        "Qx7",
        ("sla_period_closed",),
        (ANY,),
        SAME,
        ("sys",),
        guards=("quota_sla_period_unseen", "quota_sla_measurements_valid"),
        inputs=(Input("period", "text"), Input("p99_ms", "int", required=False, min=0)),
        updates=("quota_close_sla_period",),
        effects=(
            fx(
                "audit_note",
                note="SLA period closed",
                period="$payload.period",
                credit_pct="$data.last_sla_credit_pct",
            ),
        ),
        doc="§6.3: credit % per D-30 for paid tiers, keyed (customer_id, period); a breach emits X29.",
    ),
    Transition(
        "Qx8",
        ("noisy_flag",),
        (ANY,),
        SAME,
        ("sys",),
        guards=("quota_noisy_share",),
        inputs=(Input("shares", "mapping"),),
        updates=("quota_mark_noisy",),
        doc="§6.2 self-event: ≥ 90 % of a shared resource → Multi-Tenant culprit input (X42).",
    ),
)

_ACCOUNT_NOTICE = "quota_x26_account_open"

CASCADES: Final = (
    # X26: exceeded → tell the customer now; the overage is billed at period close (one line per metric).
    Cascade(
        "X26",
        ("Q02", "Q15c"),
        "customer_account",
        "usage_notice",
        where=_ACCOUNT_NOTICE,
        payload={
            "kind": "quota_exceeded",
            "metric": "$data.top_metric",
            "utilisation_pct": "$data.top_utilisation_pct",
        },
    ),
    Cascade(
        "X26",
        ("Q16", "Qx4"),
        "billing",
        "cycle_begin",
        select="new",
        when="quota_overage_billable",
        payload={
            "kind": "overage",
            "amount_cents": "$data.overage_bill_cents",
            "currency": "$setting.quota_sla.currency",
            "period": "$data.overage_bill_period",
            "lines": "$data.overage_bill_lines",
        },
    ),
    Cascade(
        "X26",
        ("Q16", "Qx4"),
        "customer_account",
        "usage_notice",
        where=_ACCOUNT_NOTICE,
        when="quota_overage_billable",
        payload={"kind": "overage_billed", "amount_cents": "$data.overage_bill_cents"},
    ),
    # X27: the breaker issues a recovery invoice for the accrued, not yet billed overage; paying it is Q11.
    Cascade(
        "X27",
        ("Q09", "Q10"),
        "billing",
        "cycle_begin",
        select="new",
        when="quota_recovery_due",
        payload={
            "kind": "recovery",
            "amount_cents": "$data.recovery_due_cents",
            "currency": "$setting.quota_sla.currency",
            "period": "$data.period_starts_at",
            "lines": "$data.recovery_lines",
        },
    ),
    Cascade(
        "X27",
        ("Q09", "Q10"),
        "customer_account",
        "usage_notice",
        where=_ACCOUNT_NOTICE,
        payload={
            "kind": "circuit_breaker",
            "reason": "$data.breaker_reason",
            "amount_cents": "$data.recovery_due_cents",
        },
    ),
    # X29: an SLA breach credits the next open subscription invoice (Bx3; its key stops a double credit).
    Cascade(
        "X29",
        ("Qx7",),
        "billing",
        "apply_credit",
        when="quota_sla_credit_due",
        where="quota_x29_invoice_open",
        payload={"period": "$data.last_sla_period", "credit_pct": "$data.last_sla_credit_pct", "kind": "sla"},
    ),
    # X42: noisy neighbour input to Multi-Tenant's M01 culprit detection.
    Cascade(
        "X42",
        ("Qx8",),
        "multi_tenant",
        "noisy_flag",
        where="quota_x42_tenant_running",
        payload={"resource": "$data.noisy_resource", "share_pct": "$data.noisy_share_pct"},
    ),
)

GOVERNOR: Final = Governor(
    name="quota_sla",
    title="Quota & SLA",
    description="Resource limits (soft: overage; hard: refusal), throttling, circuit breaker, SLA credits.",
    instance_of="customer",
    states=STATES,
    transitions=TRANSITIONS,
    cascades=CASCADES,
)
