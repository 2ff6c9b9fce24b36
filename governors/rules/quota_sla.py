"""Guards and updaters of the Quota & SLA governor (GOVERNORS.md §6, one instance per customer).

The evaluation is pure: a ``_View`` combines the stored usage and limits with what the event brings
(a sample's metrics, a new tier, a new override) and gives the utilisation of the most constrained soft
metric, its band (within / warning / exceeded) and the first-crossing timestamps the noise filters
compare with the ``*_hold`` settings.

Facts: none from the outside world. Cascade ``where`` guards read the target instance only. Samples
carry ``metrics`` (metric → current value; monthly counters for the soft metrics, current levels for the
hard ones) and ``sample_ts``; ``sla_period_closed`` carries ``period``, ``uptime_pct``, ``p99_ms`` and
``error_rate_pct`` (numbers or decimal strings).

Admission (not an event): ``hard_limit_breach`` / the guard ``quota_admission_within_hard_limits``
(code ``hard_limit_reached``) tell the request path to refuse a request that would pass a hard limit,
without a state change; ``throttle_delay_ms`` and ``token_bucket_rate`` serve the 429 path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import MappingProxyType
from typing import Any

from governors.definitions.quota_sla import HARD_METRICS, SOFT_METRICS
from governors.facts import Context, GuardFailed, as_datetime
from governors.money import sla_credit_percent, to_decimal
from governors.rules.base import declare_effects, guard, updater
from governors.settings import Settings

declare_effects(
    quota_start_metering="Start metering overage per unit for the exceeded soft metric",
    quota_stop_metering="Stop overage metering (usage back under the limit)",
    quota_clear_warning="Clear the customer's quota warning banner",
    quota_apply_throttle="Answer new requests 429 with Retry-After; clients back off min(2^n × 100 ms, 10 s)",
    quota_open_breaker="Reject every request of the customer (circuit breaker open)",
    quota_prepare_reset="Prepare the quota reset (counters, throttle, breaker) for approval",
    quota_lift_throttle_and_breaker="Lift the throttle and the circuit breaker",
    quota_run_reset_job="Run the reset job (clear counters and flags); it reports reset_completed",
    quota_reset_soft_counters="Reset the soft usage counters for the new billing month",
    quota_apply_limits="Push the effective limits (tier allocation and overrides) to the enforcement layer",
    quota_activate_burst="Allow 2× the token-bucket rate until the time in args (overage at 1.5× cost)",
)

_BANDS = ("within_limits", "warning", "exceeded")
_NOT_NOTIFIABLE_ACCOUNT = frozenset({"deactivated", "archived"})
_OPEN_INVOICE_STATES = frozenset({"awaiting_invoice", "invoice_issued", "payment_pending"})
_SUBSCRIPTION_KINDS = frozenset({"initial", "renewal"})
_SOFT_METRIC_SET = frozenset(SOFT_METRICS)


# --------------------------------------------------------------------------- pure helpers


_isfinite = math.isfinite


def _number(value: Any) -> float | None:
    kind = type(value)
    if kind is float:
        return value if _isfinite(value) else None
    if kind is bool:
        return None
    if isinstance(value, int | float):
        return float(value) if _isfinite(value) else None
    if isinstance(value, str):
        try:
            parsed = float(value)
        except ValueError:
            return None
        return parsed if _isfinite(parsed) else None
    return None


def _int(value: Any) -> int:
    kind = type(value)
    if kind is int:
        return value  # type: ignore[no-any-return]
    if kind is bool:
        return 0
    return value if isinstance(value, int) else 0


def _mapping(value: Any) -> Mapping[str, Any]:
    kind = type(value)
    if kind is dict or kind is MappingProxyType:
        return value  # type: ignore[no-any-return]
    return value if isinstance(value, Mapping) else {}


def _add_numbers(out: dict[str, float], value: Any) -> dict[str, float]:
    """Add the finite numbers of the mapping ``value`` to ``out`` (keys as strings); returns ``out``."""
    for key, raw in _mapping(value).items():
        if type(raw) is float:
            if not _isfinite(raw):
                continue
            number: float | None = raw
        else:
            number = _number(raw)
            if number is None:
                continue
        out[key if type(key) is str else str(key)] = number  # type: ignore[assignment]
    return out


def _numbers(value: Any) -> dict[str, float]:
    return _add_numbers({}, value)


def _limits(value: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for k, v in _mapping(value).items():
        kind = type(v)
        if kind is int:
            out[k if type(k) is str else str(k)] = v
        elif kind is not bool and isinstance(v, int):
            out[str(k)] = int(v)
    return out


def next_month_start(moment: datetime) -> datetime:
    """The first instant (00:00 UTC on the 1st) of the month after ``moment``'s month."""
    utc = moment.astimezone(UTC)
    if utc.month == 12:
        return datetime(utc.year + 1, 1, 1, tzinfo=UTC)
    return datetime(utc.year, utc.month + 1, 1, tzinfo=UTC)


def tier_limits(settings: Settings, tier: str, base_tier: str | None = None) -> dict[str, int]:
    """Limits of a tier from the §6 table (a trial adds its base tier's limits for metrics it lacks)."""
    table = _mapping(settings["quota_sla.tier_limits"])
    limits = _limits(table.get(tier))
    if tier == "trial":
        base = _limits(table.get(base_tier or str(settings["quota_sla.trial_base_tier"])))
        limits = {**{k: v for k, v in base.items() if k in HARD_METRICS}, **limits}
    return limits


def effective_limits(
    limits: Mapping[str, int], overrides: Mapping[str, Any], now: datetime
) -> dict[str, int]:
    """Tier allocation overlaid by the overrides that have not expired (auto-revert at expiry, Q17)."""
    return _overlay_overrides(dict(limits), overrides, now)


def _overlay_overrides(out: dict[str, int], overrides: Mapping[str, Any], now: datetime) -> dict[str, int]:
    """``out`` overlaid in place by the overrides that have not expired at ``now``; returns ``out``."""
    for metric, spec in overrides.items():
        entry = _mapping(spec)
        expires = as_datetime(entry.get("expires_at"))
        if expires is not None and expires > now and isinstance(entry.get("limit"), int):
            out[str(metric)] = int(entry["limit"])
    return out


def utilisation(
    usage: Mapping[str, float], limits: Mapping[str, int], metrics: Sequence[str]
) -> tuple[float, str | None]:
    """(percent, metric) of the most constrained metric among ``metrics``; unlimited ones are skipped."""
    best: tuple[float, str | None] = (0.0, None)
    for metric in metrics:
        limit = limits.get(metric)
        if limit is None:
            continue
        used = usage.get(metric, 0.0)
        pct = (used * 100.0 / limit) if limit > 0 else (math.inf if used > 0 else 0.0)
        if best[1] is None or pct > best[0]:
            best = (pct, metric)
    return best


def band(pct: float, warning_pct: float, exceeded_pct: float) -> str:
    """The state a utilisation belongs to: within_limits, warning or exceeded."""
    if pct >= exceeded_pct:
        return "exceeded"
    if pct >= warning_pct:
        return "warning"
    return "within_limits"


def hard_limit_breach(
    usage: Mapping[str, float],
    limits: Mapping[str, int],
    hard_metrics: Sequence[str],
    request: Mapping[str, float],
) -> str | None:
    """The first hard metric that ``request`` (extra units per metric) would take over its limit, or None."""
    for metric in hard_metrics:
        limit = limits.get(metric)
        if limit is not None and usage.get(metric, 0.0) + request.get(metric, 0.0) > limit:
            return metric
    return None


def throttle_delay_ms(attempt: int, base_ms: int, cap_ms: int) -> int:
    """Client backoff of the n-th throttled retry: min(2^n × base, cap) [G]."""
    return int(min(cap_ms, base_ms * (2 ** max(0, attempt))))


def token_bucket_rate(settings: Settings, tier: str, burst_until: datetime | None, now: datetime) -> float:
    """Requests per second of the tier's token bucket, doubled while a burst is active."""
    rates = _mapping(settings["quota_sla.token_bucket_per_s"])
    rate = float(rates.get(tier, rates.get("starter", 0)))
    if burst_until is not None and now < burst_until:
        rate *= float(settings["quota_sla.burst_rate_factor"])
    return rate


def overage_lines(
    usage: Mapping[str, float],
    limits: Mapping[str, int],
    metrics: Sequence[str],
    prices: Mapping[str, Any],
    previous: Mapping[str, Any],
) -> dict[str, dict[str, Any]]:
    """One upserted line per metric: units over the limit and their price; never lower than before."""
    lines: dict[str, dict[str, Any]] = {k: dict(_mapping(v)) for k, v in previous.items()}
    for metric in metrics:
        limit = limits.get(metric)
        if limit is None:
            continue
        price = _mapping(prices.get(metric))
        if not price:
            continue
        units = max(0.0, usage.get(metric, 0.0) - limit)
        per = max(1, _int(price.get("per")))
        cents = math.ceil(units / per) * _int(price.get("cents"))
        old = _mapping(lines.get(metric))
        if units > 0 and cents >= _int(old.get("cents")):
            lines[metric] = {"units": units, "cents": cents}
    return lines


def _lines_total(lines: Mapping[str, Any]) -> int:
    return sum(_int(_mapping(v).get("cents")) for v in lines.values())


class _View:
    """The prospective evaluation of one event: usage, limits, the top soft metric and its band.

    A plain slotted class (built on every sample, read-only by convention); ``warning`` and
    ``exceeded`` are the band thresholds it was evaluated with.
    """

    __slots__ = ("band", "exceeded", "limits", "metric", "pct", "ts", "usage", "warning")

    def __init__(
        self,
        ts: datetime,
        usage: dict[str, float],
        limits: dict[str, int],
        pct: float,
        metric: str | None,
        band: str,
        warning: float,
        exceeded: float,
    ) -> None:
        self.ts = ts
        self.usage = usage
        self.limits = limits
        self.pct = pct
        self.metric = metric
        self.band = band
        self.warning = warning
        self.exceeded = exceeded


def _tier_choice(ctx: Context) -> tuple[str, str | None]:
    """(tier, base tier) an allocate or tier_upgraded asks for.

    X02 sends the trial's chosen tier with ``trial: true``: trial limits on that base tier. An X04
    re-allocation during a trial keeps the trial (the conversion arrives as X30 tier_upgraded).
    """
    return ctx.cached("quota_tier_choice", _compute_tier_choice)


def _compute_tier_choice(ctx: Context) -> tuple[str, str | None]:
    tier = str(ctx.arg("tier"))
    if tier == "trial":
        return "trial", str(ctx.data.get("base_tier") or ctx.setting("quota_sla.trial_base_tier"))
    in_trial = ctx.event == "allocate" and ctx.state is not None and ctx.data.get("tier") == "trial"
    if ctx.payload.get("trial") is True or in_trial:
        return "trial", tier
    return tier, None


_TIER_EVENTS = frozenset({"tier_upgraded", "allocate"})


def _new_limits(ctx: Context) -> dict[str, int]:
    if ctx.event in _TIER_EVENTS and isinstance(ctx.payload.get("tier"), str):
        tier, base = _tier_choice(ctx)
        return {**tier_limits(ctx.settings, tier, base), **_limits(ctx.payload.get("limits"))}
    return _limits(ctx.data.get("limits"))


def _new_overrides(ctx: Context) -> dict[str, Any]:
    overrides = dict(_mapping(ctx.data.get("overrides")))
    if ctx.event == "quota_override":
        metric, entry = ctx.cached("quota_override_entry", _override_entry)
        overrides[metric] = entry
    return overrides


def _override_entry(ctx: Context) -> tuple[str, dict[str, Any]]:
    """(metric, stored override) a quota_override asks for; ``above_tier`` as ``_above_tier``."""
    metric = str(ctx.arg("metric"))
    limit = int(ctx.arg("limit"))
    expires = as_datetime(ctx.arg("expires_at"))
    allocation = _limits(ctx.data.get("limits")).get(metric)
    return metric, {
        "limit": limit,
        "expires_at": expires,
        "above_tier": allocation is not None and limit > allocation,
    }


def _view(ctx: Context) -> _View:
    """The sample's view (usage, limits, utilisation, band), computed once per context."""
    return ctx.cached("quota_view", _compute_view)


def _compute_view(ctx: Context) -> _View:
    data = ctx.data
    facts = ctx.facts
    payload = facts.payload
    ts = as_datetime(payload.get("sample_ts")) or facts.now
    usage = _add_numbers(_numbers(data.get("usage")), payload.get("metrics"))
    event = ctx.event
    if event in _TIER_EVENTS and isinstance(payload.get("tier"), str):
        limits = _new_limits(ctx)
    else:
        limits = _limits(data.get("limits"))
    # The stored overrides are only read here, so no copy unless the event adds one.
    overrides = _new_overrides(ctx) if event == "quota_override" else _mapping(data.get("overrides"))
    limits = _overlay_overrides(limits, overrides, ts)
    pct, metric = utilisation(usage, limits, SOFT_METRICS)
    settings = ctx.settings
    warning = float(settings["quota_sla.warning_pct"])
    exceeded = float(settings["quota_sla.exceeded_pct"])
    return _View(ts, usage, limits, pct, metric, band(pct, warning, exceeded), warning, exceeded)


def _crossings(ctx: Context, view: _View) -> dict[str, datetime | None]:
    """First-crossing timestamps after this sample: each is kept while its condition holds."""
    data = ctx.data
    pct = view.pct
    ts = view.ts
    return {
        "over_warning_since": (as_datetime(data.get("over_warning_since")) or ts)
        if pct >= view.warning
        else None,
        "over_limit_since": (as_datetime(data.get("over_limit_since")) or ts)
        if pct >= view.exceeded
        else None,
        "under_warning_since": (as_datetime(data.get("under_warning_since")) or ts)
        if pct < view.warning
        else None,
    }


def _held(ctx: Context, view: _View, field: str, holds: bool, setting: str) -> bool:
    """The crossing ``field`` (kept while ``holds``, as ``_crossings``) is older than the ``setting`` hold."""
    if not holds:
        return False
    since = as_datetime(ctx.data.get(field)) or view.ts
    return view.ts - since > ctx.settings.duration(setting)


# --------------------------------------------------------------------------- samples and bands


@guard("quota_sample_fresh", "the sample is older than the last one processed: dropped")
def quota_sample_fresh(ctx: Context) -> bool:
    """§6.4: samples older than (or as old as) the last one processed are dropped."""
    last = as_datetime(ctx.data.get("last_sample_ts"))
    if last is None:
        return True
    facts = ctx.facts
    return (as_datetime(facts.payload.get("sample_ts")) or facts.now) > last


@guard("quota_warning_held", "utilisation has not stayed in [80 %, 100 %) for 5 minutes yet")
def quota_warning_held(ctx: Context) -> bool:
    """Q01: 80 % ≤ u < 100 % now, and u ≥ 80 % held for more than the warning filter (5 min)."""
    view = _view(ctx)
    return view.band == "warning" and _held(
        ctx, view, "over_warning_since", view.pct >= view.warning, "quota_sla.warning_hold"
    )


@guard("quota_exceeded_held", "utilisation has not stayed at or above 100 % for 1 minute yet")
def quota_exceeded_held(ctx: Context) -> bool:
    """Q02: u ≥ 100 % held for more than the exceeded filter (1 min)."""
    view = _view(ctx)
    return view.band == "exceeded" and _held(
        ctx, view, "over_limit_since", view.pct >= view.exceeded, "quota_sla.exceeded_hold"
    )


@guard("quota_recovered_held", "utilisation has not stayed under 80 % for 5 minutes yet")
def quota_recovered_held(ctx: Context) -> bool:
    """Q03: u < 80 % held for more than the recovery filter (5 min)."""
    view = _view(ctx)
    return view.band == "within_limits" and _held(
        ctx, view, "under_warning_since", view.pct < view.warning, "quota_sla.recovery_hold"
    )


@guard("quota_band_within", "utilisation is not under 80 %")
def quota_band_within(ctx: Context) -> bool:
    """Q04b/Q07/Q15/Q17: by thresholds, the most constrained soft metric is under 80 %."""
    return _view(ctx).band == "within_limits"


@guard("quota_band_warning", "utilisation is not in [80 %, 100 %)")
def quota_band_warning(ctx: Context) -> bool:
    """Q04/Q07b/Q15b/Q17b: by thresholds, 80 % ≤ u < 100 %."""
    return _view(ctx).band == "warning"


@guard("quota_band_exceeded", "utilisation is not at or above 100 %")
def quota_band_exceeded(ctx: Context) -> bool:
    """Q07c/Q15c/Q17c: by thresholds, u ≥ 100 %."""
    return _view(ctx).band == "exceeded"


def _top(view: _View) -> dict[str, Any]:
    pct = round(view.pct, 2) if math.isfinite(view.pct) else None
    return {"top_metric": view.metric, "top_utilisation_pct": pct}


def _overage(ctx: Context, view: _View) -> dict[str, dict[str, Any]]:
    return overage_lines(
        view.usage,
        view.limits,
        SOFT_METRICS,
        _mapping(ctx.settings["quota_sla.overage_prices"]),
        _mapping(ctx.data.get("overage_lines")),
    )


def _metered(ctx: Context, view: _View) -> dict[str, Any]:
    lines = _overage(ctx, view)
    return {"overage_lines": lines, "overage_cents": _lines_total(lines)}


@updater("quota_record_sample")
def quota_record_sample(ctx: Context) -> dict[str, Any]:
    """Every usage_sample row: usage, sample time, crossings, top metric and the overage lines."""
    view = _view(ctx)
    data = ctx.data
    pct = view.pct
    ts = view.ts
    lines = _overage(ctx, view)
    return {
        "usage": view.usage,
        "last_sample_ts": ts,
        # the first-crossing timestamps (as ``_crossings``)
        "over_warning_since": (as_datetime(data.get("over_warning_since")) or ts)
        if pct >= view.warning
        else None,
        "over_limit_since": (as_datetime(data.get("over_limit_since")) or ts)
        if pct >= view.exceeded
        else None,
        "under_warning_since": (as_datetime(data.get("under_warning_since")) or ts)
        if pct < view.warning
        else None,
        # the top metric (as ``_top``)
        "top_metric": view.metric,
        "top_utilisation_pct": round(pct, 2) if _isfinite(pct) else None,
        "overage_lines": lines,
        "overage_cents": _lines_total(lines),
    }


# --------------------------------------------------------------------------- allocation and tiers


@updater("quota_allocate")
def quota_allocate(ctx: Context) -> dict[str, Any]:
    """Qx1: a new instance with the tier's limits and the current billing month."""
    tier, base = _tier_choice(ctx)
    return {
        "tier": tier,
        "base_tier": base,
        "limits": _new_limits(ctx),
        "overrides": {},
        "usage": {},
        "allocated_at": ctx.now,
        "period_starts_at": ctx.now,
        "period_ends_at": next_month_start(ctx.now),
        "under_warning_since": ctx.now,
        "overage_lines": {},
        "overage_cents": 0,
        "billed_overage_cents": 0,
        "overage_approved": False,
        "overage_approved_cents": 0,
    }


@updater("quota_apply_tier")
def quota_apply_tier(ctx: Context) -> dict[str, Any]:
    """Q07/Qx2/Qx5: the new tier's limits (recomputed from the table), usage kept."""
    tier, base = _tier_choice(ctx)
    return {"tier": tier, "base_tier": base, "limits": _new_limits(ctx), "tier_changed_at": ctx.now}


@guard("quota_tier_given_for_upgrade", "a tier upgrade needs the new tier")
def quota_tier_given_for_upgrade(ctx: Context) -> bool:
    """Q08: tier_upgraded carries the tier (overage_paid does not)."""
    if ctx.event == "tier_upgraded":
        ctx.arg("tier")
    return True


# --------------------------------------------------------------------------- overage, throttle, breaker


@guard("quota_overage_not_approved", "the customer approved the overage: no throttling while approved")
def quota_overage_not_approved(ctx: Context) -> bool:
    """Q06 and the exceeded_timeout timer: no overage approval is in force."""
    return not ctx.data.get("overage_approved")


@updater("quota_approve_overage")
def quota_approve_overage(ctx: Context) -> dict[str, Any]:
    """Q05: overage_charges += amount with the consent reference; throttling stops while approved."""
    refs = [*list(ctx.data.get("consent_refs", ())), str(ctx.arg("consent_ref"))]
    return {
        "overage_approved": True,
        "overage_approved_cents": _int(ctx.data.get("overage_approved_cents"))
        + _int(ctx.arg("amount_cents")),
        "consent_refs": refs,
    }


@guard("quota_hard_limit_observed", "no hard metric is over its limit")
def quota_hard_limit_observed(ctx: Context) -> bool:
    """Q10: an observed hard metric (sample or stored usage) is above its effective limit."""
    view = _view(ctx)
    return hard_limit_breach(view.usage, view.limits, HARD_METRICS, {}) is not None


@guard("quota_no_hard_breach", "a hard metric is over its limit")
def quota_no_hard_breach(ctx: Context) -> bool:
    """Q16: the rollover resets soft counters only when no hard limit is breached."""
    return not quota_hard_limit_observed(ctx)


_BREAKER_REASONS = {
    "throttled_timeout": "throttle_timeout",
    "cascade_detected": "cascade",
    "hard_limit_breached": "hard_limit",
}


@updater("quota_open_breaker")
def quota_open_breaker(ctx: Context) -> dict[str, Any]:
    """Q09/Q10: the breaker's reason and the recovery invoice of the overage not billed yet (X27)."""
    view = _view(ctx)
    metered = _metered(ctx, view)
    due = max(0, metered["overage_cents"] - _int(ctx.data.get("billed_overage_cents")))
    return {
        "usage": view.usage,
        **metered,
        "breaker_reason": _BREAKER_REASONS.get(ctx.event, ctx.event),
        "breaker_at": ctx.now,
        "recovery_due_cents": due,
        "recovery_lines": metered["overage_lines"] if due else None,
        "billed_overage_cents": _int(ctx.data.get("billed_overage_cents")) + due,
    }


@guard("quota_recovery_due", "no overage to recover")
def quota_recovery_due(ctx: Context) -> bool:
    """When X27: the breaker left an amount to invoice."""
    return _int(ctx.data.get("recovery_due_cents")) > 0


@guard("quota_recovery_invoice_paid", "only a paid recovery invoice reopens the breaker")
def quota_recovery_invoice_paid(ctx: Context) -> bool:
    """Q11: the paid invoice (X06 payload ``kind``) is a recovery invoice."""
    return str(ctx.arg("kind")) == "recovery"


# --------------------------------------------------------------------------- reset


@updater("quota_prepare_reset")
def quota_prepare_reset(ctx: Context) -> dict[str, Any]:
    """Q08/Q11/Q12: why a reset is pending (payment, upgrade or override); a Q08 upgrade applies the tier."""
    changes: dict[str, Any] = {
        "reset_reason": ctx.event,
        "reset_requested_at": ctx.now,
        "reset_approved_at": None,
    }
    if ctx.event == "tier_upgraded":
        changes.update(quota_apply_tier(ctx))
    return changes


@guard("quota_reset_path_allows_role", "this reset path is approved by another party")
def quota_reset_path_allows_role(ctx: Context) -> bool:
    """Q13: the system approves payment/upgrade resets; a manager approves override resets."""
    override = ctx.data.get("reset_reason") == "manual_override"
    if ctx.facts.role == "manager":
        if not override:
            raise GuardFailed("this reset follows a payment or upgrade: the system approves it")
        return True
    if override:
        raise GuardFailed("an override reset needs a manager's approval")
    return True


@guard("quota_reset_not_approved", "the reset is already approved")
def quota_reset_not_approved(ctx: Context) -> bool:
    """Q13: approve once per pending reset."""
    return ctx.data.get("reset_approved_at") is None


@guard("quota_reset_request_unseen", "this reset request was already processed")
def quota_reset_request_unseen(ctx: Context) -> bool:
    """Q13: resets are keyed by reset_request_id (§6.4)."""
    request = ctx.payload.get("reset_request_id")
    return not request or str(request) not in [str(r) for r in ctx.data.get("reset_request_ids", ())]


@updater("quota_approve_reset")
def quota_approve_reset(ctx: Context) -> dict[str, Any]:
    """Q13: clear counters and flags; a paid path also settles the overage (an upgrade keeps it to bill)."""
    changes: dict[str, Any] = {
        "reset_approved_at": ctx.now,
        "usage": {},
        "over_warning_since": None,
        "over_limit_since": None,
        "under_warning_since": ctx.now,
        "overage_approved": False,
        "throttled_at": None,
        "breaker_at": None,
        "breaker_reason": None,
    }
    request = ctx.payload.get("reset_request_id")
    if request:
        changes["reset_request_ids"] = [*list(ctx.data.get("reset_request_ids", ())), str(request)]
    if ctx.data.get("reset_reason") in ("recovery_payment_received", "overage_paid"):
        changes.update(overage_lines={}, overage_cents=0, billed_overage_cents=0, recovery_due_cents=None)
    return changes


@guard("quota_reset_approved", "the reset has not been approved yet")
def quota_reset_approved(ctx: Context) -> bool:
    """Q14: the reset job only completes an approved reset."""
    return ctx.data.get("reset_approved_at") is not None


# --------------------------------------------------------------------------- period rollover (X26)


@updater("quota_roll_period")
def quota_roll_period(ctx: Context) -> dict[str, Any]:
    """Q16/Qx4: bill the accrued overage not billed yet (X26) and reset the soft counters."""
    lines = _mapping(ctx.data.get("overage_lines"))
    to_bill = max(0, _lines_total(lines) - _int(ctx.data.get("billed_overage_cents")))
    end = as_datetime(ctx.data.get("period_ends_at")) or ctx.now
    usage = {k: v for k, v in _numbers(ctx.data.get("usage")).items() if k not in _SOFT_METRIC_SET}
    return {
        "overage_bill_cents": to_bill,
        "overage_bill_lines": dict(lines) if to_bill else None,
        "overage_bill_period": ctx.data.get("period_starts_at"),
        "period_starts_at": end,
        "period_ends_at": next_month_start(max(end, ctx.now)),
        "usage": usage,
        "overage_lines": {},
        "overage_cents": 0,
        "billed_overage_cents": 0,
        "overage_approved": False,
        "over_warning_since": None,
        "over_limit_since": None,
        "under_warning_since": ctx.now,
    }


@guard("quota_overage_billable", "no overage to bill")
def quota_overage_billable(ctx: Context) -> bool:
    """When X26 (billing): the rollover left an overage amount to invoice."""
    return _int(ctx.data.get("overage_bill_cents")) > 0


# --------------------------------------------------------------------------- overrides (Q17)


def _above_tier(ctx: Context) -> bool:
    metric = str(ctx.arg("metric"))
    allocation = _limits(ctx.data.get("limits")).get(metric)
    return allocation is not None and int(ctx.arg("limit")) > allocation


@guard("quota_override_above_tier", "the override stays within the tier allocation")
def quota_override_above_tier(ctx: Context) -> bool:
    """Q17 four-eyes condition: the new limit is above the tier allocation (CONSOLE.md §1.3)."""
    return _above_tier(ctx)


@guard("quota_override_expiry_ok", "the override must expire in the future and within 30 days")
def quota_override_expiry_ok(ctx: Context) -> bool:
    """Q17: now < expires_at ≤ now + 30 d."""
    expires = as_datetime(ctx.arg("expires_at"))
    if expires is None:
        return False
    now = ctx.facts.now
    return now < expires <= now + ctx.settings.duration("quota_sla.override_max")


@updater("quota_set_override")
def quota_set_override(ctx: Context) -> dict[str, Any]:
    """Q17: the new effective limit of one metric until its expiry."""
    return {"overrides": _new_overrides(ctx), **_top(_view(ctx))}


# --------------------------------------------------------------------------- burst, SLA, noisy neighbour


@guard("quota_burst_within_max", "a burst lasts at most 300 seconds")
def quota_burst_within_max(ctx: Context) -> bool:
    """Qx6: duration ≤ burst_max (300 s)."""
    return timedelta(seconds=_int(ctx.arg("duration_s"))) <= ctx.duration("quota_sla.burst_max")


@updater("quota_start_burst")
def quota_start_burst(ctx: Context) -> dict[str, Any]:
    """Qx6: 2× rate until now + duration."""
    return {"burst_until": ctx.now + timedelta(seconds=_int(ctx.arg("duration_s")))}


def _sla_key(ctx: Context) -> str:
    return f"{ctx.instance.customer_id}:{ctx.arg('period')}"


@guard("quota_sla_period_unseen", "this SLA period is already closed")
def quota_sla_period_unseen(ctx: Context) -> bool:
    """Qx7: key (customer_id, period) is new."""
    return _sla_key(ctx) not in [
        str(p.get("key")) for p in ctx.data.get("sla_periods", ()) if isinstance(p, Mapping)
    ]


@guard("quota_sla_measurements_valid", "give uptime_pct (0–100) and, if measured, error_rate_pct (0–100)")
def quota_sla_measurements_valid(ctx: Context) -> bool:
    """Qx7: uptime_pct is a number in [0, 100]; error_rate_pct, when given, too."""
    uptime = to_decimal(ctx.arg("uptime_pct"))
    if uptime is None or not Decimal(0) <= uptime <= Decimal(100):
        return False
    raw_error = ctx.payload.get("error_rate_pct")
    error = to_decimal(raw_error)
    return raw_error is None or (error is not None and Decimal(0) <= error <= Decimal(100))


def sla_credit_for(ctx: Context) -> Decimal:
    """§6.3 credit % of this period for the customer's tier (0 for tiers without an SLA)."""
    targets = _mapping(_mapping(ctx.setting("quota_sla.sla_targets")).get(str(ctx.data.get("tier"))))
    if not targets:
        return Decimal(0)
    p99 = ctx.payload.get("p99_ms")
    raw_error = ctx.payload.get("error_rate_pct")
    return sla_credit_percent(
        uptime_pct=to_decimal(ctx.arg("uptime_pct")) or Decimal(0),
        uptime_target_pct=to_decimal(targets.get("uptime_pct")) or Decimal(0),
        p99_ms=_int(p99) if p99 is not None else None,
        p99_target_ms=_int(targets.get("p99_ms")) if targets.get("p99_ms") is not None else None,
        error_rate_pct=to_decimal(raw_error),
        error_rate_target_pct=to_decimal(targets.get("error_rate_pct")),
        uptime_cap_pct=Decimal(ctx.setting("quota_sla.sla_uptime_cap_pct")),
        uptime_factor=Decimal(ctx.setting("quota_sla.sla_uptime_factor")),
        p99_penalty_pct=Decimal(ctx.setting("quota_sla.sla_p99_penalty_pct")),
        error_penalty_pct=Decimal(ctx.setting("quota_sla.sla_error_penalty_pct")),
        total_cap_pct=Decimal(ctx.setting("quota_sla.sla_total_cap_pct")),
    )


def _pct_text(value: Decimal) -> str:
    """A percentage as a plain decimal string ("12.5", "0", "25")."""
    text = format(value.normalize(), "f")
    return "0" if value == 0 else text


@updater("quota_close_sla_period")
def quota_close_sla_period(ctx: Context) -> dict[str, Any]:
    """Qx7: record the period's measurements and its credit % (X29 carries it to the next invoice)."""
    credit = sla_credit_for(ctx)
    period = str(ctx.arg("period"))
    record = {
        "key": _sla_key(ctx),
        "period": period,
        "uptime_pct": str(ctx.arg("uptime_pct")),
        "p99_ms": ctx.payload.get("p99_ms"),
        "error_rate_pct": None
        if ctx.payload.get("error_rate_pct") is None
        else str(ctx.payload["error_rate_pct"]),
        "credit_pct": _pct_text(credit),
        "at": ctx.now,
    }
    return {
        "sla_periods": [*list(ctx.data.get("sla_periods", ())), record],
        "last_sla_period": period,
        "last_sla_credit_pct": _pct_text(credit),
    }


@guard("quota_sla_credit_due", "no SLA credit is due")
def quota_sla_credit_due(ctx: Context) -> bool:
    """When X29: the period just closed earned a credit above 0 %."""
    credit = to_decimal(ctx.data.get("last_sla_credit_pct"))
    return credit is not None and credit > 0


def _top_share(ctx: Context) -> tuple[str | None, float]:
    shares = _numbers(ctx.arg("shares"))
    if not shares:
        return None, 0.0
    resource = max(sorted(shares), key=lambda k: shares[k])
    return resource, shares[resource]


@guard("quota_noisy_share", "no metric reaches 90 % of a shared resource")
def quota_noisy_share(ctx: Context) -> bool:
    """Qx8: some shared resource share (percent) ≥ noisy_share_pct (90)."""
    return _top_share(ctx)[1] >= float(ctx.setting("quota_sla.noisy_share_pct"))


@updater("quota_mark_noisy")
def quota_mark_noisy(ctx: Context) -> dict[str, Any]:
    """Qx8: remember the resource and share for Multi-Tenant (X42)."""
    resource, share = _top_share(ctx)
    return {"noisy_resource": resource, "noisy_share_pct": share, "noisy_at": ctx.now}


# --------------------------------------------------------------------------- admission (no event)


@guard(
    "quota_admission_within_hard_limits",
    "a hard limit would be passed: request refused",
    "hard_limit_reached",
)
def quota_admission_within_hard_limits(ctx: Context) -> bool:
    """Admission (request path): payload ``request`` (metric → extra units) passes no hard limit."""
    view = _view(ctx)
    request = _numbers(ctx.payload.get("request"))
    metric = hard_limit_breach(view.usage, view.limits, HARD_METRICS, request)
    if metric is not None:
        raise GuardFailed(f"{metric} would pass its hard limit of {view.limits[metric]}: request refused")
    return True


# --------------------------------------------------------------------------- cascade targets (where)


@guard("quota_x26_account_open", "the account no longer takes notices")
def quota_x26_account_open(ctx: Context) -> bool:
    """Where X26/X27 (account notice): the account is neither deactivated nor archived."""
    return ctx.state not in _NOT_NOTIFIABLE_ACCOUNT


@guard("quota_x29_invoice_open", "not an open subscription invoice")
def quota_x29_invoice_open(ctx: Context) -> bool:
    """Where X29: an unpaid subscription invoice outside dunning (Bx3's key keeps the credit single)."""
    return ctx.state in _OPEN_INVOICE_STATES and ctx.data.get("kind") in _SUBSCRIPTION_KINDS


@guard("quota_x42_tenant_running", "the tenant is suspended")
def quota_x42_tenant_running(ctx: Context) -> bool:
    """Where X42: the Multi-Tenant instance is not suspended."""
    return ctx.state != "suspended"
