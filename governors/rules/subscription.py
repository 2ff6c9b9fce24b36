"""Guards, updaters and effects of the Subscription governor (GOVERNORS.md §4).

Prices, cycles, tiers and their SKUs are ``subscription.*`` settings; money is integer cents through
``governors.money`` (period charge and proration, D-20/D-22). A row that charges the customer sets
``charge_kind`` and ``charge_cents`` in the data, and the X03 cascade sends them to Billing.

Facts the service supplies (``ctx.fact``): ``payment_method_valid`` (optional: the account's
validated payment methods are used otherwise), ``sku_states``,
``subscription_renewal_invoice_paid`` and ``subscription_overdue_invoice_paid``; each is documented
in the guard or updater that reads it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from governors.facts import Context, GuardFailed, aware_datetime
from governors.money import period_charge, prorate
from governors.rules.base import declare_effects, guard, updater

declare_effects(
    subscription_prepare_deletion="Mark the subscription's data for deletion at the end of retention",
    subscription_freeze="Make the subscription record read-only",
)

FREE_TIER = "free"
"""The tier that is never sold (S03) and never a downgrade target (S10, D-20)."""

ON_SALE = frozenset({"published", "featured"})


# --------------------------------------------------------------------------- helpers


def _int(value: Any) -> int:
    kind = type(value)
    if kind is int:
        return value  # type: ignore[no-any-return]
    if kind is bool:
        return 0
    return value if isinstance(value, int) else 0


# ``governors.money`` is pure and its Decimal arithmetic dominates the cost of a charge; the handful of
# (price, discount, days) combinations recur, so the results are memoised (typed: 1 and 1.0 are kept apart).
_cached_period_charge = lru_cache(maxsize=1024, typed=True)(period_charge)
_cached_prorate = lru_cache(maxsize=1024, typed=True)(prorate)


def _period_charge(monthly_cents: int, discount_pct: int, days: int) -> int:
    """``period_charge`` (memoised)."""
    try:
        return _cached_period_charge(monthly_cents, discount_pct, days)
    except TypeError:  # an unhashable argument: compute (and raise) as period_charge does
        return period_charge(monthly_cents, discount_pct, days)


def _prorate(old: int, new: int, discount_pct: int, remaining_days: int) -> int:
    """``prorate`` (memoised)."""
    try:
        return _cached_prorate(old, new, discount_pct, remaining_days)
    except TypeError:  # an unhashable argument: compute (and raise) as prorate does
        return prorate(old, new, discount_pct, remaining_days)


def _tiers(ctx: Context) -> list[str]:
    return [str(t) for t in ctx.setting("subscription.tiers")]


def _custom(ctx: Context, tier: str | None) -> bool:
    return tier in tuple(ctx.setting("subscription.custom_price_tiers"))


def _list_price(ctx: Context, tier: str | None) -> int | None:
    """Monthly list price of a tier in cents (None for custom-priced tiers)."""
    prices: Mapping[str, int] = ctx.setting("subscription.monthly_price_cents")
    return prices.get(tier) if tier is not None else None


def _cycle(ctx: Context) -> str:
    return str(ctx.data.get("billing_cycle") or ctx.settings["subscription.default_cycle"])


def _cycle_days(ctx: Context, cycle: str) -> int:
    return int(ctx.settings["subscription.cycle_days"][cycle])


def _discount(ctx: Context, cycle: str) -> int:
    return int(ctx.settings["subscription.cycle_discount_pct"][cycle])


def _skus(ctx: Context, tier: str) -> list[str]:
    mapping: Mapping[str, list[str]] = ctx.setting("subscription.tier_skus")
    return [str(s) for s in mapping.get(tier, ())]


def _target_tier(ctx: Context) -> str | None:
    """The tier being bought: the payload's (S03 purchase) or the subscription's (S04 conversion)."""
    tier = ctx.payload.get("tier") if ctx.event == "purchase" else ctx.data.get("tier")
    return str(tier) if tier else None


def _period(ctx: Context, start: datetime, cycle: str) -> dict[str, Any]:
    return {
        "current_period_start": start,
        "current_period_end": start + timedelta(days=_cycle_days(ctx, cycle)),
    }


def _full_cycle_charge(ctx: Context, monthly: int | None, cycle: str, kind: str) -> dict[str, Any]:
    """charge_kind/charge_cents for one whole cycle (§4: monthly × (1 − discount) × days / 30)."""
    amount = _period_charge(monthly or 0, _discount(ctx, cycle), _cycle_days(ctx, cycle))
    return {"charge_kind": kind, "charge_cents": amount}


def _sku_state(ctx: Context, sku: str) -> str | None:
    """State of ``sku`` (fact ``sku_states``: sku_id -> state, else catalog peers), None if unknown."""
    states = ctx.fact("sku_states")
    if isinstance(states, Mapping) and sku in states:
        return str(states[sku])
    for inst in ctx.peers("catalog"):
        if sku in (inst.subject_id, inst.id, inst.data.get("sku_id")):
            return inst.state
    return None


def _overdue_paid(ctx: Context) -> bool:
    """The overdue invoice is paid: X06 (from Billing) says so, or fact subscription_overdue_invoice_paid."""
    from_billing = ctx.facts.role == "cascade" and ctx.fact("source_governor") == "billing"
    return from_billing or bool(ctx.fact("subscription_overdue_invoice_paid", False))


def _year_pause_days(ctx: Context) -> int:
    """Days already paused in the current calendar year."""
    if ctx.data.get("pause_year") != ctx.now.year:
        return 0
    return _int(ctx.data.get("paused_days_this_year"))


def _cancel(ctx: Context, access_until: Any) -> dict[str, Any]:
    """The cancellation fields shared by every row that enters cancelled."""
    changes: dict[str, Any] = {
        "auto_renew": False,
        "cancelled_at": ctx.now,
        "reactivation_deadline": ctx.now + ctx.duration("subscription.reactivation_window"),
        "access_until": access_until,
        "grace_until": None,
        "pending_tier_change": None,
        "tier_change_request_id": None,
    }
    if ctx.payload.get("reason_code"):
        changes["cancellation_reason"] = ctx.payload["reason_code"]
    if ctx.payload.get("churn_offer_outcome"):
        changes["churn_offer_outcome"] = ctx.payload["churn_offer_outcome"]
    return changes


_CLEARED_CANCELLATION: dict[str, Any] = {
    "cancellation_reason": None,
    "cancelled_at": None,
    "reactivation_deadline": None,
    "access_until": None,
    "churn_offer_outcome": None,
    "past_due": None,
    "grace_until": None,
}


# --------------------------------------------------------------------------- guards: trial and purchase


@guard("subscription_first_trial", "the customer already had a subscription (one trial per customer)")
def subscription_first_trial(ctx: Context) -> bool:
    """S01: no other subscription of the customer exists (one trial per customer)."""
    others = [s for s in ctx.peers("subscription") if s.id != ctx.instance.id]
    if others:
        raise GuardFailed(f"subscription {others[0].id} exists ({others[0].state}); one trial per customer")
    return True


@guard("subscription_tier_not_free", "the free tier cannot be bought")
def subscription_tier_not_free(ctx: Context) -> bool:
    """S03, S04: the tier bought is not free."""
    return _target_tier(ctx) != FREE_TIER


@guard("subscription_tier_has_list_price", "an enterprise plan needs a custom price set by a manager")
def subscription_tier_has_list_price(ctx: Context) -> bool:
    """S03, S04: custom-priced tiers are reached by a tier change a manager prices (S11, D-23)."""
    tier = _target_tier(ctx)
    if _custom(ctx, tier) or _list_price(ctx, tier) is None:
        raise GuardFailed(
            f"{tier} has no list price: buy a listed tier, then request a change a manager prices"
        )
    return True


@guard("subscription_payment_method_valid", "no validated payment method on file")
def subscription_payment_method_valid(ctx: Context) -> bool:
    """S03, S04: fact ``payment_method_valid`` when given, else the account has a validated method on file."""
    given = ctx.fact("payment_method_valid")
    if isinstance(given, bool):
        return given
    return bool(ctx.peer_data("customer_account").get("payment_method_fingerprints"))


@guard("subscription_skus_on_sale", "a SKU of this tier is no longer sold")
def subscription_skus_on_sale(ctx: Context) -> bool:
    """S03 (X36): no SKU of the tier is known to be withdrawn (fact ``sku_states`` or catalog peers)."""
    tier = _target_tier(ctx)
    for sku in _skus(ctx, tier or ""):
        state = _sku_state(ctx, sku)
        if state is not None and state not in ON_SALE:
            raise GuardFailed(f"SKU {sku} of the {tier} tier is {state}; it can no longer be bought")
    return True


@guard("subscription_auto_convert", "auto_convert_trial is off")
def subscription_auto_convert(ctx: Context) -> bool:
    """S04: the customer opted in to converting at the end of the trial."""
    return bool(ctx.data.get("auto_convert_trial"))


@guard("subscription_trial_extendable", "the trial was already extended, or by too many days")
def subscription_trial_extendable(ctx: Context) -> bool:
    """Sx4 (§11 #30): once per trial, at most subscription.trial_extension_max_days."""
    if ctx.data.get("trial_extended"):
        raise GuardFailed("the trial was already extended once")
    days = int(ctx.arg("days"))
    limit = int(ctx.setting("subscription.trial_extension_max_days"))
    if days > limit:
        raise GuardFailed(f"a trial may be extended by at most {limit} days")
    return True


# --------------------------------------------------------------------------- guards: renewal


@guard("subscription_auto_renew_on", "auto-renew is off")
def subscription_auto_renew_on(ctx: Context) -> bool:
    """S08, S18: auto_renew is on."""
    return bool(ctx.data.get("auto_renew"))


@guard("subscription_auto_renew_off", "auto-renew is on")
def subscription_auto_renew_off(ctx: Context) -> bool:
    """S09: auto_renew is off."""
    return not ctx.data.get("auto_renew")


@guard("subscription_long_cycle", "not an annual or longer cycle with auto-renew on")
def subscription_long_cycle(ctx: Context) -> bool:
    """Sx5 and its timer: the −30 d reminder is for annual and longer cycles that will renew (D-18)."""
    minimum = int(ctx.settings["subscription.renewal_reminder_min_cycle_days"])
    return bool(ctx.data.get("auto_renew")) and _cycle_days(ctx, _cycle(ctx)) >= minimum


@guard("subscription_renewal_payment", "the payment is not for this renewal, or was already counted")
def subscription_renewal_payment(ctx: Context) -> bool:
    """S16, S19: a renewal invoice paid (X06 payload kind), keyed (invoice_id, payment_id) once (§4.4)."""
    kind = ctx.payload.get("kind")
    if kind is not None and kind != "renewal":
        raise GuardFailed(f"a {kind} invoice was paid, not the renewal invoice")
    key = f"{ctx.payload.get('invoice_id')}:{ctx.payload.get('payment_id')}"
    if key in (ctx.data.get("paid_renewal_keys") or ()):
        raise GuardFailed(f"payment {key} was already applied to a renewal")
    return True


@guard("subscription_renewal_unpaid", "the renewal invoice is paid")
def subscription_renewal_unpaid(ctx: Context) -> bool:
    """S18: fact ``subscription_renewal_invoice_paid`` is not true."""
    return not ctx.fact("subscription_renewal_invoice_paid", False)


@guard("subscription_reactivation_open", "the 30-day reactivation window has closed")
def subscription_reactivation_open(ctx: Context) -> bool:
    """S22: now <= reactivation_deadline."""
    deadline = aware_datetime(ctx.data.get("reactivation_deadline"))
    if deadline is not None and ctx.now > deadline:
        raise GuardFailed(f"reactivation was possible until {deadline.isoformat()}")
    return True


@guard("subscription_has_charge", "nothing to charge")
def subscription_has_charge(ctx: Context) -> bool:
    """X03 when: the row left a positive charge_cents to invoice."""
    return _int(ctx.data.get("charge_cents")) > 0


# --------------------------------------------------------------------------- guards: tier changes


@guard("subscription_tier_change_valid", "not a valid upgrade or downgrade")
def subscription_tier_change_valid(ctx: Context) -> bool:
    """S10: another known tier; a downgrade may not go to free (cancel instead, D-20)."""
    tiers = _tiers(ctx)
    new, current = str(ctx.arg("new_tier")), ctx.data.get("tier")
    if new not in tiers or current not in tiers:
        raise GuardFailed(f"unknown tier {new if new not in tiers else current}")
    if new == current:
        raise GuardFailed(f"the subscription is already {current}")
    if new == FREE_TIER:
        raise GuardFailed("free is reached by cancelling, not by a downgrade")
    return True


@guard("subscription_no_pending_change", "another tier change is pending")
def subscription_no_pending_change(ctx: Context) -> bool:
    """S10: one pending tier change at a time (§4.4)."""
    pending = ctx.data.get("pending_tier_change")
    if pending:
        raise GuardFailed(f"a change to {pending} ({ctx.data.get('tier_change_request_id')}) is pending")
    return True


@guard("subscription_request_unseen", "this tier change request was already applied")
def subscription_request_unseen(ctx: Context) -> bool:
    """S10: tier changes are keyed by request_id (§4.4)."""
    return ctx.arg("request_id") not in (ctx.data.get("applied_tier_requests") or ())


@guard("subscription_has_pending_change", "no tier change is pending")
def subscription_has_pending_change(ctx: Context) -> bool:
    """S11, S12: a pending tier change exists (and matches request_id when one is given)."""
    if not ctx.data.get("pending_tier_change"):
        return False
    given = ctx.payload.get("request_id")
    if given and given != ctx.data.get("tier_change_request_id"):
        raise GuardFailed(f"the pending request is {ctx.data.get('tier_change_request_id')}, not {given}")
    return True


@guard("subscription_tier_change_approvable", "an enterprise change needs a manager and a price")
def subscription_tier_change_approvable(ctx: Context) -> bool:
    """S11: the system approves listed tiers; a custom-priced tier needs a manager and a price."""
    target = ctx.data.get("pending_tier_change")
    if not _custom(ctx, target):
        return True
    if ctx.facts.role != "manager":
        raise GuardFailed(f"a change to {target} needs a manager to set the price")
    ctx.arg("enterprise_price_cents")
    return True


@guard("subscription_auto_approvable", "the target tier needs a manager")
def subscription_auto_approvable(ctx: Context) -> bool:
    """Xi2 when: the pending change targets a listed (non-custom) tier."""
    target = ctx.data.get("pending_tier_change")
    return bool(target) and not _custom(ctx, target)


@guard("subscription_tier_change_waiting", "no tier change waits")
def subscription_tier_change_waiting(ctx: Context) -> bool:
    """Attention of active: a tier change waits for a manager."""
    return bool(ctx.data.get("pending_tier_change"))


# --------------------------------------------------------------------------- guards: pause


@guard("subscription_pause_allowed", "the pause exceeds the allowance")
def subscription_pause_allowed(ctx: Context) -> bool:
    """S13: days <= max_pause_days and this year's paused days + days <= max_pause_days_per_year."""
    days = int(ctx.arg("days"))
    per_pause = int(ctx.setting("subscription.max_pause_days"))
    per_year = int(ctx.setting("subscription.max_pause_days_per_year"))
    if days > per_pause:
        raise GuardFailed(f"a pause may last at most {per_pause} days")
    used = _year_pause_days(ctx)
    if used + days > per_year:
        raise GuardFailed(f"only {max(0, per_year - used)} pause days are left this year")
    return True


@guard("subscription_pause_near_limit", "the pause allowance is not nearly used up")
def subscription_pause_near_limit(ctx: Context) -> bool:
    """Attention of paused: this pause brings the year within pause_attention_remaining_days of the limit."""
    per_year = int(ctx.setting("subscription.max_pause_days_per_year"))
    margin = int(ctx.setting("subscription.pause_attention_remaining_days"))
    planned = _year_pause_days(ctx) + _int(ctx.data.get("pause_days_requested"))
    return per_year - planned <= margin


# --------------------------------------------------------------------------- guards: cascades


@guard("subscription_voids_renewal", "auto-renew did not turn off while awaiting renewal")
def subscription_voids_renewal(ctx: Context) -> bool:
    """Xi5 when (after S27): auto-renew is now off in awaiting_renewal."""
    return ctx.state == "awaiting_renewal" and not ctx.data.get("auto_renew")


@guard("subscription_invoice_unissued", "the invoice is already issued")
def subscription_invoice_unissued(ctx: Context) -> bool:
    """Cascade where (on a Billing invoice): awaiting_invoice, and of this subscription when it names one."""
    owner = ctx.data.get("subscription_id")
    return ctx.state == "awaiting_invoice" and (owner is None or owner == ctx.fact("source_instance_id"))


# --------------------------------------------------------------------------- updaters


@updater("subscription_start_trial")
def subscription_start_trial(ctx: Context) -> dict[str, Any]:
    """S01: the chosen (or default) tier and cycle; trial_ends_at = now + trial_length."""
    tier = str(ctx.payload.get("tier") or ctx.setting("subscription.trial_default_tier"))
    auto_convert = ctx.payload.get("auto_convert_trial")
    return {
        "tier": tier,
        "billing_cycle": ctx.payload.get("cycle") or ctx.setting("subscription.default_cycle"),
        "skus": _skus(ctx, tier),
        "monthly_price_cents": _list_price(ctx, tier),
        "auto_renew": bool(ctx.setting("subscription.auto_renew_default")),
        "auto_convert_trial": bool(
            auto_convert
            if isinstance(auto_convert, bool)
            else ctx.setting("subscription.auto_convert_trial_default")
        ),
        "trial_started_at": ctx.now,
        "trial_ends_at": ctx.now + ctx.duration("subscription.trial_length"),
        "paused_days_this_year": 0,
    }


@updater("subscription_purchase")
def subscription_purchase(ctx: Context) -> dict[str, Any]:
    """S03: the bought tier and cycle; a period from now, charged in full (X03 initial)."""
    tier, cycle = str(ctx.arg("tier")), str(ctx.arg("cycle"))
    monthly = _list_price(ctx, tier)
    return {
        "tier": tier,
        "billing_cycle": cycle,
        "skus": _skus(ctx, tier),
        "monthly_price_cents": monthly,
        "trial_ends_at": None,
        "converted_at": ctx.now,
        **_CLEARED_CANCELLATION,
        **_period(ctx, ctx.now, cycle),
        **_full_cycle_charge(ctx, monthly, cycle, "initial"),
    }


@updater("subscription_convert_trial")
def subscription_convert_trial(ctx: Context) -> dict[str, Any]:
    """S04: the paid period starts exactly at the trial end (no gap), charged in full (X03 initial)."""
    start = aware_datetime(ctx.data.get("trial_ends_at")) or ctx.now
    cycle = _cycle(ctx)
    monthly = _list_price(ctx, str(ctx.data.get("tier")))
    return {
        "monthly_price_cents": monthly,
        "trial_ends_at": None,
        "converted_at": ctx.now,
        **_period(ctx, start, cycle),
        **_full_cycle_charge(ctx, monthly, cycle, "initial"),
    }


@updater("subscription_extend_trial")
def subscription_extend_trial(ctx: Context) -> dict[str, Any]:
    """Sx4: push trial_ends_at (the engine re-arms the trial timers on the moved anchor)."""
    end = aware_datetime(ctx.data.get("trial_ends_at")) or ctx.now
    return {"trial_ends_at": end + timedelta(days=int(ctx.arg("days"))), "trial_extended": True}


@updater("subscription_cancel_now")
def subscription_cancel_now(ctx: Context) -> dict[str, Any]:
    """S06, S07, S20, S21: cancelled with access_until = now."""
    return _cancel(ctx, ctx.now)


@updater("subscription_cancel_at_period_end")
def subscription_cancel_at_period_end(ctx: Context) -> dict[str, Any]:
    """S09, S15: cancelled with access until the current period end."""
    return _cancel(ctx, ctx.data.get("current_period_end") or ctx.now)


@updater("subscription_account_closed")
def subscription_account_closed(ctx: Context) -> dict[str, Any]:
    """S26: access ends now; an already cancelled subscription keeps its reason and deadline."""
    if ctx.state != "cancelled":
        return {**_cancel(ctx, ctx.now), "cancellation_reason": "account_deactivated"}
    current = aware_datetime(ctx.data.get("access_until"))
    return {"access_until": ctx.now if current is None or current > ctx.now else current}


@updater("subscription_renewal_invoice")
def subscription_renewal_invoice(ctx: Context) -> dict[str, Any]:
    """S08: the renewal charge (a price change of X37 applies now), less any downgrade credit (S11)."""
    cycle = _cycle(ctx)
    monthly = ctx.data.get("next_monthly_price_cents") or ctx.data.get("monthly_price_cents")
    full = _period_charge(_int(monthly), _discount(ctx, cycle), _cycle_days(ctx, cycle))
    credit = _int(ctx.data.get("credit_cents"))
    net = max(0, full - credit)
    return {
        "monthly_price_cents": monthly,
        "next_monthly_price_cents": None,
        "charge_kind": "renewal",
        "charge_cents": net,
        "credit_cents": (credit - (full - net)) or None,
        "renewal_invoiced_at": ctx.now,
    }


@updater("subscription_renewed")
def subscription_renewed(ctx: Context) -> dict[str, Any]:
    """S16, S19: the new period starts at the old period end; remember the payment key (§4.4)."""
    start = aware_datetime(ctx.data.get("current_period_end")) or ctx.now
    key = f"{ctx.payload.get('invoice_id')}:{ctx.payload.get('payment_id')}"
    keys = [*(ctx.data.get("paid_renewal_keys") or ()), key]
    return {
        **_period(ctx, start, _cycle(ctx)),
        "paid_renewal_keys": keys,
        "past_due": None,
        "grace_until": None,
    }


@updater("subscription_grace")
def subscription_grace(ctx: Context) -> dict[str, Any]:
    """S17, S18: past due; grace_until = now + grace_period."""
    return {"past_due": True, "grace_until": ctx.now + ctx.duration("subscription.grace_period")}


@updater("subscription_request_tier_change")
def subscription_request_tier_change(ctx: Context) -> dict[str, Any]:
    """S10: record the pending change and its request id."""
    return {
        "pending_tier_change": ctx.arg("new_tier"),
        "tier_change_request_id": ctx.arg("request_id"),
        "tier_change_requested_at": ctx.now,
    }


@updater("subscription_apply_tier_change")
def subscription_apply_tier_change(ctx: Context) -> dict[str, Any]:
    """S11: apply now; prorate (new − old) × remaining days / 30 on discounted prices (D-20, D-22).

    An upgrade is charged (X03 proration); a downgrade becomes credit on the next renewal invoice.
    Remaining days are whole days, a started day counting as remaining.
    """
    target = str(ctx.data.get("pending_tier_change"))
    cycle = _cycle(ctx)
    old = _int(ctx.data.get("monthly_price_cents") or _list_price(ctx, ctx.data.get("tier")))
    new = int(ctx.arg("enterprise_price_cents")) if _custom(ctx, target) else _int(_list_price(ctx, target))
    end = aware_datetime(ctx.data.get("current_period_end"))
    left = (end - ctx.now) if end is not None else timedelta(0)
    remaining = max(0, math.ceil(left / timedelta(days=1)))
    amount = _prorate(old, new, _discount(ctx, cycle), remaining)
    requests = [*(ctx.data.get("applied_tier_requests") or ()), ctx.data.get("tier_change_request_id")]
    changes: dict[str, Any] = {
        "previous_tier": ctx.data.get("tier"),
        "tier": target,
        "skus": _skus(ctx, target),
        "monthly_price_cents": new,
        "next_monthly_price_cents": None,
        "pending_tier_change": None,
        "tier_change_request_id": None,
        "applied_tier_requests": requests,
        "last_proration_cents": amount,
        "charge_kind": "proration",
        "charge_cents": max(0, amount),
    }
    if amount < 0:
        changes["credit_cents"] = _int(ctx.data.get("credit_cents")) - amount
    return changes


@updater("subscription_pause")
def subscription_pause(ctx: Context) -> dict[str, Any]:
    """S13: paused_until = now + days; the yearly counter restarts in a new calendar year."""
    days = int(ctx.arg("days"))
    return {
        "paused_at": ctx.now,
        "paused_until": ctx.now + timedelta(days=days),
        "pause_days_requested": days,
        "pause_year": ctx.now.year,
        "paused_days_this_year": _year_pause_days(ctx),
    }


@updater("subscription_resume")
def subscription_resume(ctx: Context) -> dict[str, Any]:
    """S14: move period_end forward by the time actually paused; count whole (started) days for the year."""
    started = aware_datetime(ctx.data.get("paused_at")) or ctx.now
    paused = max(timedelta(0), ctx.now - started)
    end = aware_datetime(ctx.data.get("current_period_end"))
    return {
        "current_period_end": end + paused if end is not None else None,
        "paused_days_this_year": _int(ctx.data.get("paused_days_this_year"))
        + math.ceil(paused / timedelta(days=1)),
        "paused_at": None,
        "paused_until": None,
        "pause_days_requested": None,
    }


@updater("subscription_reactivate")
def subscription_reactivate(ctx: Context) -> dict[str, Any]:
    """S22: nonpayment and the overdue invoice paid: the paid period, no charge; else a new charged period."""
    cycle = _cycle(ctx)
    base = {**_CLEARED_CANCELLATION, "auto_renew": bool(ctx.setting("subscription.auto_renew_default"))}
    if ctx.data.get("cancellation_reason") == "nonpayment" and _overdue_paid(ctx):
        start = aware_datetime(ctx.data.get("current_period_end")) or ctx.now
        return {**base, **_period(ctx, start, cycle), "charge_kind": None, "charge_cents": 0}
    monthly = _int(ctx.data.get("monthly_price_cents"))
    return {**base, **_period(ctx, ctx.now, cycle), **_full_cycle_charge(ctx, monthly, cycle, "initial")}


@updater("subscription_manual_reset")
def subscription_manual_reset(ctx: Context) -> dict[str, Any]:
    """S25: clear the cancellation fields; a new period from now needs a new invoice (X03)."""
    cycle = _cycle(ctx)
    monthly = _int(ctx.data.get("monthly_price_cents"))
    return {
        **_CLEARED_CANCELLATION,
        "auto_renew": bool(ctx.setting("subscription.auto_renew_default")),
        "archived_at": None,
        "reset_incident_ref": ctx.payload.get("incident_ref"),
        **_period(ctx, ctx.now, cycle),
        **_full_cycle_charge(ctx, monthly, cycle, "initial"),
    }


@updater("subscription_price_changed")
def subscription_price_changed(ctx: Context) -> dict[str, Any]:
    """Sx2 (X37): a new price of the tier's price SKU (tier_price_sku) applies from the next renewal."""
    tier = ctx.data.get("tier")
    price_sku: Mapping[str, str] = ctx.setting("subscription.tier_price_sku")
    changes: dict[str, Any] = {"last_price_notice_at": ctx.now}
    price = ctx.payload.get("price_cents")
    if not _custom(ctx, tier) and price_sku.get(str(tier)) == ctx.payload.get("sku_id") and _int(price) > 0:
        changes["next_monthly_price_cents"] = price
    return changes
