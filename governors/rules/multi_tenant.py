"""Guards, updaters and effects of the Multi-Tenant governor (GOVERNORS.md §8).

Metrics arrive in the ``metrics_snapshot`` payload (``metrics``: percentages of the tenant's
allocation plus pool figures, see ``METRIC_KEYS``). Every sustained-duration rule ("≥ 75 % for
> 30 s", "< 1 % for 10 min") is tracked in the instance data as the first time the condition was
seen (``*_since`` fields); a condition only counts from the later of that time and the entry into
the current state. Every threshold and duration is a ``multi_tenant.*`` setting.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from governors.facts import Context, GuardFailed, aware_datetime
from governors.rules.base import declare_effects, guard, updater

declare_effects(
    mt_apply_allocation="Apply the tenant's allocation (capped or full tier share) in the pool scheduler",
    mt_migrate_workloads="Migrate the tenant's workloads to the target node (weighted round-robin)",
    mt_abort_migration="Abort the running workload migration",
    mt_cascade_measures="Open the tenant's breakers, strict rate limit, reserve system CPU, shed extras",
    mt_lift_measures="Close the breakers, lift the rate limit and restore shed features",
    mt_emergency_measures="Block non-essential requests, cut DB connections, shed caching/logging/metrics",
    mt_pool_fan_out="Send the event to every other tenant of the pool with one pool_event_id (D-36)",
    mt_ramp_up="Ramp the tenant's capacity up gradually (resource-based balancing)",
    mt_stop_workloads="Stop the tenant's workloads (features unchanged)",
    mt_restart_workloads="Restart the tenant's workloads",
    mt_breaker="Set the tenant's circuit breaker (on/off, error threshold, timeout)",
)

RESOURCES = ("cpu", "memory", "network", "disk_io")
"""Utilisation of the tenant's allocation, in percent (the G noisy-neighbour rule)."""

METRIC_KEYS = (
    *RESOURCES,
    "error_rate",  # percent of requests failing
    "impact_percent",  # degradation the tenant causes to the pool's other tenants, in percent
    "baseline_error_rate",  # optional: the tenant's normal error rate, in percent
    "pool_peak_cpu",  # optional: highest CPU % of any tenant in the pool (M05)
    "pool_peak_memory",  # optional: highest memory % of any tenant in the pool (M05)
    "others_max_cpu",  # optional: highest CPU % of the other tenants (C culprit signal)
    "network_pool_share",  # optional: the tenant's share of the pool's network, in percent
    "eviction_rate",  # optional: evictions per interval
    "request_rate",  # optional: requests per second
)
REQUIRED_METRICS = (*RESOURCES, "error_rate", "impact_percent")
SINCE_FIELDS = (
    "high_usage_since",
    "low_usage_since",
    "pool_calm_since",
    "quiet_since",
    "stable_since",
    "cpu_critical_since",
)


# --------------------------------------------------------------------------- pure helpers


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _pct(ctx: Context, key: str) -> float:
    return float(ctx.setting(key))


def _metrics(ctx: Context) -> Mapping[str, Any]:
    """The metrics of this event: the payload's when given, else the last snapshot in data."""
    given = ctx.payload.get("metrics")
    if isinstance(given, Mapping):
        return given
    stored = ctx.data.get("metrics")
    return stored if isinstance(stored, Mapping) else {}


def _metric(metrics: Mapping[str, Any], key: str, default: float | None = None) -> float | None:
    value = _number(metrics.get(key))
    return default if value is None else value


def tracking(
    data: Mapping[str, Any], metrics: Mapping[str, Any], now: datetime, settings: Mapping[str, Any]
) -> dict[str, datetime | None]:
    """The first-seen timestamps after a snapshot: kept while a condition holds, set now when it
    starts, cleared (None) when it stops."""
    usage = max(_metric(metrics, r, 0.0) or 0.0 for r in RESOURCES)
    threshold = float(settings["multi_tenant.usage_threshold_percent"])
    quiet = float(settings["multi_tenant.quiet_error_rate_percent"])
    error_rate = _metric(metrics, "error_rate", 0.0) or 0.0
    pool_cpu = _metric(metrics, "pool_peak_cpu", _metric(metrics, "cpu", 0.0)) or 0.0
    pool_memory = _metric(metrics, "pool_peak_memory", _metric(metrics, "memory", 0.0)) or 0.0
    cpu = _metric(metrics, "cpu", 0.0) or 0.0
    conditions = {
        "high_usage_since": usage >= threshold,
        "low_usage_since": usage < threshold,
        "pool_calm_since": pool_cpu < threshold and pool_memory < threshold,
        "quiet_since": error_rate < quiet,
        "stable_since": error_rate < quiet and usage < threshold,
        "cpu_critical_since": cpu > float(settings["multi_tenant.emergency_cpu_percent"]),
    }
    out: dict[str, datetime | None] = {}
    for name, holds in conditions.items():
        out[name] = (aware_datetime(data.get(name)) or now) if holds else None
    return out


def _held_for(ctx: Context, since: datetime | None) -> timedelta | None:
    """How long a condition has held within the current state (None when it does not hold)."""
    if since is None:
        return None
    entered = ctx.instance.entered_at
    start = max(since, entered) if entered is not None else since
    return ctx.now - start


def _now_tracking(ctx: Context) -> dict[str, datetime | None]:
    return tracking(ctx.data, _metrics(ctx), ctx.now, ctx.settings)


def culprit_signals(ctx: Context) -> list[str]:
    """The noisy-neighbour signals that hold now (D-37: G's rule first, C's rules and X42 as extras)."""
    metrics = _metrics(ctx)
    impact = _metric(metrics, "impact_percent", 0.0) or 0.0
    impacting = impact > _pct(ctx, "multi_tenant.impact_threshold_percent")
    signals: list[str] = []
    held = _held_for(ctx, _now_tracking(ctx)["high_usage_since"])
    if impacting and held is not None and held > ctx.duration("multi_tenant.contention_sustain"):
        signals.append("sustained_usage")
    cpu, others = _metric(metrics, "cpu"), _metric(metrics, "others_max_cpu")
    if (
        cpu is not None
        and others is not None
        and cpu > _pct(ctx, "multi_tenant.culprit_cpu_percent")
        and others < _pct(ctx, "multi_tenant.culprit_others_cpu_percent")
    ):
        signals.append("cpu_dominant")
    extras = (
        ("network_pool_share", "multi_tenant.culprit_network_share_percent", "network_share"),
        ("disk_io", "multi_tenant.culprit_disk_io_percent", "disk_io"),
        ("eviction_rate", "multi_tenant.culprit_eviction_rate", "evictions"),
    )
    for key, setting, name in extras:
        value = _metric(metrics, key)
        if value is not None and value > _pct(ctx, setting):
            signals.append(name)
    flagged = aware_datetime(ctx.data.get("noisy_flagged_at"))
    if (
        impacting
        and flagged is not None
        and ctx.now - flagged <= ctx.duration("multi_tenant.noisy_flag_valid_for")
    ):
        signals.append("quota_noisy_flag")
    return signals


def _tier_fields(ctx: Context, tier: str | None, cap: Any) -> dict[str, Any]:
    """tier, tier_weight_percent and the effective allocation for ``tier`` under ``cap``."""
    weights: Mapping[str, Any] = ctx.setting("multi_tenant.tier_weights")
    if tier is None:
        tier = ctx.data.get("tier")
    # Tiers without a weight (trial, custom) get the smallest share.
    weight = (
        float(weights[tier])
        if isinstance(tier, str) and tier in weights
        else min(map(float, weights.values()))
    )
    allocation = weight * float(cap) / 100.0 if _number(cap) is not None else weight
    return {"tier": tier, "tier_weight_percent": weight, "allocation_percent": allocation}


# --------------------------------------------------------------------------- guards


@guard("mt_snapshot_usable", "the metrics snapshot is incomplete or out of date")
def mt_snapshot_usable(ctx: Context) -> bool:
    """Snapshots carry the core metrics as numbers and are newer than the last one applied (§8.3)."""
    metrics = ctx.arg("metrics")
    missing = [k for k in REQUIRED_METRICS if _number(metrics.get(k)) is None]
    if missing:
        raise GuardFailed("the snapshot lacks numeric " + ", ".join(missing))
    taken, last = aware_datetime(ctx.arg("snapshot_ts")), aware_datetime(ctx.data.get("last_snapshot_ts"))
    if taken is not None and last is not None and taken <= last:
        raise GuardFailed(
            f"snapshot of {taken.isoformat()} is not newer than the last one ({last.isoformat()})"
        )
    return True


@guard("mt_noisy_neighbour", "the tenant is not a noisy neighbour")
def mt_noisy_neighbour(ctx: Context) -> bool:
    """M01: ≥ 75 % on a resource for > 30 s with > 5 % impact, or a secondary culprit signal."""
    return bool(culprit_signals(ctx))


@guard("mt_usage_low_sustained", "usage has not been below the threshold long enough")
def mt_usage_low_sustained(ctx: Context) -> bool:
    """M02: below 75 % on every resource for 5 min."""
    held = _held_for(ctx, _now_tracking(ctx)["low_usage_since"])
    return held is not None and held >= ctx.duration("multi_tenant.contention_clear_after")


@guard("mt_pool_balanced", "the pool's peak CPU or memory is still high")
def mt_pool_balanced(ctx: Context) -> bool:
    """M05: peak CPU and memory of every tenant in the pool below 75 %, held 5 min."""
    held = _held_for(ctx, _now_tracking(ctx)["pool_calm_since"])
    return held is not None and held >= ctx.duration("multi_tenant.balanced_hold")


@guard("mt_cascade_evidence", "no sign of a cascade: error rate near baseline and one failure")
def mt_cascade_evidence(ctx: Context) -> bool:
    """M07: error rate > 10× baseline, or several independent failures.

    The error rates come from payload ``metrics`` or the last snapshot; ``independent_failures``
    from the payload.
    """
    failures = ctx.payload.get("independent_failures")
    if isinstance(failures, int) and failures >= int(
        ctx.setting("multi_tenant.cascade_min_independent_failures")
    ):
        return True
    metrics = _metrics(ctx)
    rate, baseline = _metric(metrics, "error_rate"), _metric(metrics, "baseline_error_rate")
    if baseline is None:
        baseline = _number(ctx.data.get("baseline_error_rate"))
    if rate is None or baseline is None or baseline <= 0:
        return False
    return rate > float(ctx.setting("multi_tenant.cascade_error_multiplier")) * baseline


@guard("mt_errors_quiet_sustained", "the error rate has not been low long enough")
def mt_errors_quiet_sustained(ctx: Context) -> bool:
    """M09: error rate below 1 % for 10 min."""
    held = _held_for(ctx, _now_tracking(ctx)["quiet_since"])
    return held is not None and held >= ctx.duration("multi_tenant.cascade_clear_after")


@guard("mt_staff_triggered", "triggered by the system")
def mt_staff_triggered(ctx: Context) -> bool:
    """M10 four-eyes: a person (not a detector) triggered the emergency."""
    return ctx.facts.role not in ("sys", "timer", "cascade")


@guard("mt_emergency_warranted", "error rate ≤ 25 % and CPU not above 95 % long enough")
def mt_emergency_warranted(ctx: Context) -> bool:
    """M10: manual trigger, or error rate > 25 %, or CPU > 95 % sustained."""
    if mt_staff_triggered(ctx):
        return True
    metrics = _metrics(ctx)
    rate = _metric(metrics, "error_rate", 0.0) or 0.0
    if rate > _pct(ctx, "multi_tenant.emergency_error_rate_percent"):
        return True
    since = aware_datetime(ctx.data.get("cpu_critical_since"))
    cpu = _metric(metrics, "cpu", 0.0) or 0.0
    if since is None or cpu <= _pct(ctx, "multi_tenant.emergency_cpu_percent"):
        return False
    return ctx.now - since >= ctx.duration("multi_tenant.emergency_cpu_sustain")


@guard("mt_pool_fan_out", "not a pool-wide emergency from another tenant")
def mt_pool_fan_out(ctx: Context) -> bool:
    """Mx8: the event is the pool-wide fan-out of another tenant's M10 (carries pool_event_id)."""
    origin = ctx.payload.get("origin_tenant_id")
    return bool(ctx.payload.get("pool_event_id")) and origin not in (None, ctx.instance.customer_id)


@guard("mt_not_fan_out", "this is another tenant's pool-wide emergency (applied by Mx8)")
def mt_not_fan_out(ctx: Context) -> bool:
    """M10: the trigger originates here, not from the pool fan-out."""
    return not mt_pool_fan_out(ctx)


@guard("mt_recovery_stable", "the tenant has not been stable for 30 min")
def mt_recovery_stable(ctx: Context) -> bool:
    """M12: error rate < 1 % and every resource < 75 % for 30 min."""
    held = _held_for(ctx, _now_tracking(ctx)["stable_since"])
    return held is not None and held >= ctx.duration("multi_tenant.recovery_stable_after")


@guard("mt_breaker_can_close", "the breaker is closed, or the allocation is still capped")
def mt_breaker_can_close(ctx: Context) -> bool:
    """breaker_off: the breaker is open and the tenant's allocation is back to 100 % (CONSOLE.md 4.10)."""
    if not ctx.data.get("breaker_open"):
        raise GuardFailed("the tenant's circuit breaker is not on")
    if ctx.data.get("allocation_cap_percent") is not None:
        raise GuardFailed("the allocation is still capped; close the breaker once it is back at 100 %")
    return True


@guard("mt_tenant_is_culprit", "the tenant is not the culprit")
def mt_tenant_is_culprit(ctx: Context) -> bool:
    """X41 when: this tenant is the cause of the cascade."""
    return ctx.data.get("culprit") is True


@guard("mt_quota_throttled", "the tenant's quota is not throttled")
def mt_quota_throttled(ctx: Context) -> bool:
    """X41 where (on quota_sla): Q09 applies only from throttled."""
    return ctx.state == "throttled"


@guard("mt_target_open", "the target is in a final state")
def mt_target_open(ctx: Context) -> bool:
    """X39/X40 where: the customer's instance can still take notices (not in a final state)."""
    return ctx.state not in ctx.governor.terminal_states


# --------------------------------------------------------------------------- updaters


@updater("mt_apply_tier")
def mt_apply_tier(ctx: Context) -> dict[str, Any]:
    """Mx1/Mx2/Mx3: the tier weight (enterprise 40 %, professional 35 %, starter 25 %) and allocation."""
    tier = ctx.payload.get("tier")
    out = _tier_fields(ctx, tier if isinstance(tier, str) else None, ctx.data.get("allocation_cap_percent"))
    pool = ctx.payload.get("pool_id")
    if pool:
        out["pool_id"] = pool
    return out


@updater("mt_note_noisy_flag")
def mt_note_noisy_flag(ctx: Context) -> dict[str, Any]:
    """Mx4 (X42): remember when Quota flagged the tenant as noisy, and on what."""
    detail = {k: ctx.payload[k] for k in ("resource", "share_pct") if ctx.payload.get(k) is not None}
    return {"noisy_flagged_at": ctx.now, "noisy_flag": detail or None}


@updater("mt_breaker_on")
def mt_breaker_on(ctx: Context) -> dict[str, Any]:
    """Mx5: open the breaker; record the thresholds and the impact at activation."""
    threshold = ctx.payload.get("error_threshold_percent")
    timeout = ctx.payload.get("timeout_ms")
    return {
        "breaker_open": True,
        "breaker_opened_at": ctx.now,
        "breaker_error_threshold_percent": threshold
        if threshold is not None
        else ctx.setting("multi_tenant.breaker_error_threshold_percent"),
        "breaker_timeout_ms": timeout
        if timeout is not None
        else ctx.setting("multi_tenant.breaker_timeout_ms"),
        "breaker_impact_percent": _metric(_metrics(ctx), "impact_percent"),
    }


@updater("mt_breaker_off")
def mt_breaker_off(ctx: Context) -> dict[str, Any]:
    """Mx6: close the breaker."""
    return {"breaker_open": False, "breaker_opened_at": None}


@updater("mt_track_metrics")
def mt_track_metrics(ctx: Context) -> dict[str, Any]:
    """Every snapshot: store it and advance the first-seen timestamps."""
    metrics = dict(ctx.arg("metrics"))
    out: dict[str, Any] = dict(tracking(ctx.data, metrics, ctx.now, ctx.settings))
    out["metrics"] = metrics
    out["last_snapshot_ts"] = aware_datetime(ctx.arg("snapshot_ts"))
    if ctx.payload.get("pool_id"):
        out["pool_id"] = ctx.payload["pool_id"]
    return out


@updater("mt_enter_contention")
def mt_enter_contention(ctx: Context) -> dict[str, Any]:
    """M01: mark the tenant as culprit and cap its allocation at 50 % of the tier share."""
    cap = ctx.setting("multi_tenant.contention_cap_percent")
    out = _tier_fields(ctx, None, cap)
    out.update({"allocation_cap_percent": cap, "culprit": True, "culprit_signals": culprit_signals(ctx)})
    return out


@updater("mt_restore_allocation")
def mt_restore_allocation(ctx: Context) -> dict[str, Any]:
    """M02/M05/M09/M12/M15: lift the cap; the full tier share applies again."""
    out = _tier_fields(ctx, None, None)
    out.update({"allocation_cap_percent": None, "culprit": None, "culprit_signals": None})
    return out


@updater("mt_start_rebalance")
def mt_start_rebalance(ctx: Context) -> dict[str, Any]:
    """M03: remember the migration target and when it started."""
    return {"target_node": ctx.arg("target_node"), "last_rebalance_at": ctx.now}


def _cascade_measures(ctx: Context) -> dict[str, Any]:
    out: dict[str, Any] = {
        "breaker_open": True,
        "breaker_opened_at": ctx.data.get("breaker_opened_at") or ctx.now,
        "breaker_error_threshold_percent": ctx.setting("multi_tenant.breaker_error_threshold_percent"),
        "breaker_timeout_ms": ctx.setting("multi_tenant.breaker_timeout_ms"),
        "rate_limit_rps": ctx.setting("multi_tenant.strict_rate_limit_rps"),
        "system_cpu_reserve_percent": ctx.setting("multi_tenant.system_cpu_reserve_percent"),
        "shed_features": list(ctx.setting("multi_tenant.shed_features")),
    }
    culprit = ctx.payload.get("culprit")
    if isinstance(culprit, bool):
        out["culprit"] = culprit
    return out


@updater("mt_enter_cascade_prevention")
def mt_enter_cascade_prevention(ctx: Context) -> dict[str, Any]:
    """M04/M06/M07/M13: the §8.1 entry actions as data (breaker, rate limit, CPU reserve, shedding)."""
    return _cascade_measures(ctx)


@updater("mt_tighten_measures")
def mt_tighten_measures(ctx: Context) -> dict[str, Any]:
    """M08: re-apply the measures; an auto-throttle marks the tenant throttled."""
    out = _cascade_measures(ctx)
    out["throttled"] = True if ctx.event == "tenant_auto_throttled" else ctx.data.get("throttled")
    out["measures_applied_at"] = ctx.now
    return out


@updater("mt_lift_measures")
def mt_lift_measures(ctx: Context) -> dict[str, Any]:
    """M09/M12/M15: lift breakers, rate limits, shedding and emergency flags."""
    return {
        "breaker_open": False,
        "breaker_opened_at": None,
        "rate_limit_rps": None,
        "system_cpu_reserve_percent": None,
        "shed_features": None,
        "throttled": None,
        "db_connections_cut": None,
        "ramp_started_at": None,
    }


@updater("mt_enter_emergency")
def mt_enter_emergency(ctx: Context) -> dict[str, Any]:
    """M10/Mx8: strict mode: breakers on, non-essentials and caching/logging/metrics shed, DB cut."""
    out = _cascade_measures(ctx)
    shed = [*ctx.setting("multi_tenant.shed_features"), *ctx.setting("multi_tenant.emergency_shed_features")]
    out.update(
        {
            "shed_features": shed,
            "db_connections_cut": True,
            "emergency_started_at": ctx.now,
            "pool_event_id": ctx.payload.get("pool_event_id") or f"{ctx.instance.id}:{ctx.now.isoformat()}",
            "emergency_message": ctx.payload.get("message"),
        }
    )
    return out


@updater("mt_start_recovery")
def mt_start_recovery(ctx: Context) -> dict[str, Any]:
    """M11: start the ramp-up; DB connections come back."""
    return {"ramp_started_at": ctx.now, "db_connections_cut": None}


@updater("mt_clear_tracking")
def mt_clear_tracking(ctx: Context) -> dict[str, Any]:
    """M14/M15: forget the sustained-duration clocks (re-evaluated on the next snapshot)."""
    return dict.fromkeys(SINCE_FIELDS)
