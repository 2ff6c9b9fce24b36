"""Guards, updaters and effects of the Entitlement governor (GOVERNORS.md §1).

Holds are a set kept in the instance data as a list in the order they were added (the oldest hold
names the cancellation reason, E11). Durations, the timer-arming holds (D-05), which holds a staff
role may place or lift and the auto-reinstatement reasons are ``entitlement.*`` settings.

Facts the service supplies (``ctx.fact``), each documented in the guard or updater that reads it:
``sku_states``, ``entitlement_captured_cents``, ``entitlement_unused_prepaid_cents`` and
``entitlement_last_period_cents``. Peers read: customer_account, compliance_audit, subscription,
billing and catalog (the SKU instances the snapshot carries).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from governors.facts import Context, GuardFailed, Instance, NeedsInput, aware_datetime
from governors.rules.base import declare_effects, guard, updater

declare_effects(
    entitlement_grant_access="Enable the SKU/tier feature flags for the customer",
    entitlement_revoke_access="Disable the SKU's feature flags for the customer at once (data is kept)",
    entitlement_open_refund_request="Queue the refund request (refund_due_cents > 0) for finance; no-op at 0",
    entitlement_process_refund="Billing process_refund, idempotency key (entitlement_id, refund_request_id)",
    entitlement_ledger_entry="Write the refund settlement to the ledger",
    entitlement_refresh_features="Re-sync the feature flags with the entitlement's tier (active ones only)",
)

BLOCKING_ACCOUNT_STATES = frozenset({"locked", "deactivated", "archived"})
"""E01: no new entitlement while the account is in one of these states."""

BLOCKING_COMPLIANCE_STATES = frozenset({"investigation", "non_compliant", "data_retention"})
"""E02: no approval while Compliance is in one of these states."""

OVERDUE_INVOICE_STATES = frozenset({"payment_failed", "retry_1", "retry_2", "retry_3", "collection_agency"})
"""Billing states of an invoice that is still unpaid after its due date (E21 auto-approval)."""


# --------------------------------------------------------------------------- helpers


def _cents(value: Any) -> int:
    """An amount of cents from data or a fact (anything else counts as 0)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def holds_of(data: Mapping[str, Any]) -> list[str]:
    """The hold set of an entitlement, oldest first."""
    return [str(h) for h in data.get("holds") or ()]


def _hold(ctx: Context) -> str:
    return str(ctx.arg("hold"))


def requested_sku(ctx: Context) -> str | None:
    """The SKU of an entitlement_requested event: ``sku_id``, or ``item`` when fanned out (X01)."""
    value = ctx.payload.get("sku_id") or ctx.payload.get("item")
    return str(value) if value else None


def _sku_state(ctx: Context, sku: str) -> str | None:
    """Catalog state of ``sku``: fact ``sku_states`` (sku_id -> state), else the catalog peers."""
    states = ctx.fact("sku_states")
    if isinstance(states, Mapping) and sku in states:
        return str(states[sku])
    for inst in ctx.peers("catalog"):
        if sku in (inst.subject_id, inst.id, inst.data.get("sku_id")):
            return inst.state
    return None


def _subscription(ctx: Context) -> Instance | None:
    """The entitlement's subscription (by subscription_id when known, else the customer's first)."""
    subs = ctx.peers("subscription")
    wanted = ctx.data.get("subscription_id")
    for inst in subs:
        if wanted and inst.id == wanted:
            return inst
    return subs[0] if subs else None


def _paid_through(ctx: Context) -> datetime | None:
    """The subscription's paid-through date: current period end, or the trial end during a trial."""
    sub = _subscription(ctx)
    if sub is None:
        return None
    return aware_datetime(sub.data.get("current_period_end")) or aware_datetime(sub.data.get("trial_ends_at"))


def _refund_request(ctx: Context, amount: int) -> dict[str, Any]:
    """refund_due_cents and, when positive, a new deterministic refund_request_id."""
    if amount <= 0:
        return {"refund_due_cents": 0, "refund_request_id": None}
    return {
        "refund_due_cents": amount,
        "refund_request_id": f"{ctx.instance.id}/refund/{ctx.instance.version + 1}",
    }


# --------------------------------------------------------------------------- guards: creation and approval


@guard("entitlement_sku_offered", "the SKU is not on sale (published or featured)")
def entitlement_sku_offered(ctx: Context) -> bool:
    """E01: the SKU is published or featured (fact ``sku_states``: sku_id -> state, else catalog peers)."""
    sku = requested_sku(ctx)
    if sku is None:
        raise NeedsInput("sku_id")
    state = _sku_state(ctx, sku)
    allowed = tuple(ctx.setting("entitlement.requestable_sku_states"))
    if state is None:
        raise GuardFailed(f"the catalog has no SKU {sku}")
    if state not in allowed:
        raise GuardFailed(f"SKU {sku} is {state}; only {' or '.join(allowed)} SKUs can be requested")
    return True


@guard("entitlement_unique_for_sku", "the customer already has an entitlement for this SKU")
def entitlement_unique_for_sku(ctx: Context) -> bool:
    """E01: no other non-archived entitlement of the customer for the same SKU."""
    sku = requested_sku(ctx)
    for inst in ctx.peers("entitlement"):
        if inst.id == ctx.instance.id or inst.state in (None, "archived"):
            continue
        if sku in (inst.data.get("sku_id"), inst.subject_id):
            raise GuardFailed(f"entitlement {inst.id} for {sku} is already {inst.state}")
    return True


@guard("entitlement_account_open", "the customer account is locked, deactivated or archived")
def entitlement_account_open(ctx: Context) -> bool:
    """E01: the account is not locked, deactivated or archived."""
    state = ctx.peer_state("customer_account")
    if state in BLOCKING_ACCOUNT_STATES:
        raise GuardFailed(f"the customer account is {state}; no new entitlements")
    return True


@guard("entitlement_account_active", "the customer account is not active (KYC not passed)")
def entitlement_account_active(ctx: Context) -> bool:
    """E02, E06b, E19, E21: the customer account is active."""
    state = ctx.peer_state("customer_account")
    if state != "active":
        raise GuardFailed(f"the customer account is {state or 'missing'}; it must be active (KYC passed)")
    return True


@guard(
    "entitlement_compliance_clear", "compliance is under investigation, non-compliant or in data retention"
)
def entitlement_compliance_clear(ctx: Context) -> bool:
    """E02, E06b: Compliance is not in investigation, non_compliant or data_retention."""
    state = ctx.peer_state("compliance_audit")
    if state in BLOCKING_COMPLIANCE_STATES:
        raise GuardFailed(f"compliance is {state}; approval must wait")
    return True


@guard("entitlement_approve_on_timeout", "approve_on_timeout is off: the final timeout cancels")
def entitlement_approve_on_timeout(ctx: Context) -> bool:
    """E06b: setting entitlement.approve_on_timeout (D-02, default off)."""
    return bool(ctx.setting("entitlement.approve_on_timeout"))


@guard("entitlement_approval_clock_running", "the approval clock has not started (account still onboarding)")
def entitlement_approval_clock_running(ctx: Context) -> bool:
    """Timer guard of pending_approval: the clock runs once the account has passed onboarding (E01, X18)."""
    return bool(ctx.data.get("approval_clock_started"))


@guard("entitlement_needs_review", "no review needed")
def entitlement_needs_review(ctx: Context) -> bool:
    """Attention of pending_approval: an escalation timer has fired (needs_review)."""
    return bool(ctx.data.get("needs_review"))


# --------------------------------------------------------------------------- guards: holds


@guard("entitlement_hold_permitted", "your role may not place or lift this hold")
def entitlement_hold_permitted(ctx: Context) -> bool:
    """E07–E10: staff may only place/lift the holds their role owns (settings staff_*_holds); cascades any."""
    hold = _hold(ctx)
    if not ctx.by_staff:
        return True
    key = "entitlement.staff_suspend_holds" if ctx.event == "suspend" else "entitlement.staff_lift_holds"
    owned: Mapping[str, Sequence[str]] = ctx.setting(key)
    mine = tuple(owned.get(ctx.facts.role, ()))
    if hold not in mine:
        action = "place" if ctx.event == "suspend" else "lift"
        allowed = ", ".join(mine) or "no holds"
        raise GuardFailed(f"{ctx.facts.role} may not {action} the {hold} hold (may: {allowed})")
    return True


@guard("entitlement_hold_absent", "the hold is already present")
def entitlement_hold_absent(ctx: Context) -> bool:
    """E08: adding a hold that is already there does nothing (§1.4)."""
    hold = _hold(ctx)
    if hold in holds_of(ctx.data):
        raise GuardFailed(f"the {hold} hold is already present")
    return True


@guard("entitlement_hold_present", "the hold is not present")
def entitlement_hold_present(ctx: Context) -> bool:
    """E09/E10: lifting a hold that is absent does nothing (§1.4)."""
    hold = _hold(ctx)
    if hold not in holds_of(ctx.data):
        present = ", ".join(holds_of(ctx.data)) or "none"
        raise GuardFailed(f"there is no {hold} hold (present: {present})")
    return True


@guard("entitlement_lift_clears_all", "other holds remain")
def entitlement_lift_clears_all(ctx: Context) -> bool:
    """E09: no hold is left after removing this one."""
    return not [h for h in holds_of(ctx.data) if h != _hold(ctx)]


@guard("entitlement_lift_leaves_others", "no other hold remains")
def entitlement_lift_leaves_others(ctx: Context) -> bool:
    """E10: other holds remain after removing this one."""
    return bool([h for h in holds_of(ctx.data) if h != _hold(ctx)])


@guard("entitlement_all_holds_timer_arming", "a freezing hold is present (the 72 h timer is paused)")
def entitlement_all_holds_timer_arming(ctx: Context) -> bool:
    """E11 and the suspension timer: at least one hold, and every hold is timer-arming (D-05)."""
    holds = holds_of(ctx.data)
    arming = set(ctx.setting("entitlement.timer_arming_holds"))
    return bool(holds) and all(h in arming for h in holds)


@guard("entitlement_can_take_hold", "the entitlement cannot take this hold")
def entitlement_can_take_hold(ctx: Context) -> bool:
    """Cascade where (suspend): the entitlement is active, or suspended without the payload's hold."""
    hold = ctx.payload.get("hold")
    return ctx.state == "active" or (ctx.state == "suspended" and hold not in holds_of(ctx.data))


@guard("entitlement_has_payload_hold", "the entitlement does not carry this hold")
def entitlement_has_payload_hold(ctx: Context) -> bool:
    """Cascade where (lift_hold): the entitlement is suspended with the payload's hold."""
    return ctx.state == "suspended" and ctx.payload.get("hold") in holds_of(ctx.data)


# --------------------------------------------------------------------------- guards: expiry, cancellation


@guard("entitlement_period_over", "the paid period has not ended yet")
def entitlement_period_over(ctx: Context) -> bool:
    """E13: now >= period end (payload ends_at of X32/X33, else expires_at, which X35 moves on renewal)."""
    end = aware_datetime(ctx.payload.get("ends_at")) or aware_datetime(ctx.data.get("expires_at"))
    if end is not None and ctx.now < end:
        raise GuardFailed(f"the paid period runs until {end.isoformat()}")
    return True


@guard("entitlement_expired_recently", "more than 30 days have passed since expiry")
def entitlement_expired_recently(ctx: Context) -> bool:
    """E15, E16: within entitlement.expired_reactivation_window of the expiry."""
    since = ctx.since("expired_at")
    return since is None or since <= ctx.duration("entitlement.expired_reactivation_window")


@guard("entitlement_subscription_active", "the subscription is not active")
def entitlement_subscription_active(ctx: Context) -> bool:
    """E15, E21: the entitlement's subscription is active."""
    sub = _subscription(ctx)
    if sub is None or sub.state != "active":
        raise GuardFailed(f"the subscription is {sub.state if sub else 'missing'}; it must be active")
    return True


@guard("entitlement_cancelled_recently", "the 14-day reinstatement window has passed")
def entitlement_cancelled_recently(ctx: Context) -> bool:
    """E19: within entitlement.reinstatement_request_window of the cancellation."""
    since = ctx.since("cancelled_at")
    return since is None or since <= ctx.duration("entitlement.reinstatement_request_window")


@guard("entitlement_not_fraud", "an entitlement cancelled for fraud cannot be reinstated")
def entitlement_not_fraud(ctx: Context) -> bool:
    """E19: cancellation_reason is not fraud."""
    return ctx.data.get("cancellation_reason") != "fraud"


@guard("entitlement_auto_reinstate", "the reinstatement needs a manager")
def entitlement_auto_reinstate(ctx: Context) -> bool:
    """Xi1 when (after E19): auto_approve asked (X06/X34), or payment_failed and no invoice is overdue."""
    if ctx.data.get("reinstatement_auto"):
        return True
    if ctx.data.get("cancellation_reason") != "payment_failed":
        return False
    return not any(inv.state in OVERDUE_INVOICE_STATES for inv in ctx.peers("billing"))


# --------------------------------------------------------------------------- guards: refunds


@guard("entitlement_refund_amount_ok", "the amount exceeds what is refundable")
def entitlement_refund_amount_ok(ctx: Context) -> bool:
    """E18: 0 < amount <= refundable (refund_due_cents minus refunds already made)."""
    amount = int(ctx.arg("amount_cents"))
    refundable = max(0, _cents(ctx.data.get("refund_due_cents")) - _cents(ctx.data.get("refunded_cents")))
    if refundable <= 0:
        raise GuardFailed("nothing is refundable on this entitlement")
    if not 0 < amount <= refundable:
        raise GuardFailed(f"the amount must be between 1 and {refundable} cents")
    return True


@guard("entitlement_no_refund_awaiting", "a refund request is waiting for finance")
def entitlement_no_refund_awaiting(ctx: Context) -> bool:
    """E20 and the refund-window timer: no refund request awaits a finance decision (refund_due_cents > 0)."""
    return _cents(ctx.data.get("refund_due_cents")) <= 0


@guard("entitlement_refund_awaiting", "no refund request is waiting")
def entitlement_refund_awaiting(ctx: Context) -> bool:
    """Ex5 and the cancelled attention: a refund request awaits a finance decision."""
    return _cents(ctx.data.get("refund_due_cents")) > 0


@guard("entitlement_no_refund_pending", "a refund is awaiting approval or in flight")
def entitlement_no_refund_pending(ctx: Context) -> bool:
    """E28: no refund awaiting approval (cancelled, refund_due > 0) or in flight (refund_issued)."""
    if ctx.state == "refund_issued":
        raise GuardFailed("a refund is in flight; wait for refund_completed or refund_failed")
    if _cents(ctx.data.get("refund_due_cents")) > 0:
        raise GuardFailed("a refund request is awaiting finance; approve or decline it first")
    return True


@guard("entitlement_refund_matches", "the settlement is for another refund request")
def entitlement_refund_matches(ctx: Context) -> bool:
    """E24: Billing confirms the settlement of this refund request."""
    given = ctx.arg("refund_request_id")
    if given != ctx.data.get("refund_request_id"):
        raise GuardFailed(
            f"settlement for {given}, but the refund in flight is {ctx.data.get('refund_request_id')}"
        )
    return True


@guard("entitlement_refund_trouble", "no refund problem")
def entitlement_refund_trouble(ctx: Context) -> bool:
    """Attention of refund_issued: the refund is disputed or overdue."""
    return ctx.data.get("refund_issue") in ("disputed", "overdue")


# --------------------------------------------------------------------------- guards: cascade targets (where)


@guard("entitlement_is_active", "the entitlement is not active")
def entitlement_is_active(ctx: Context) -> bool:
    """Cascade where: the entitlement is active."""
    return ctx.state == "active"


@guard("entitlement_is_expired", "the entitlement is not expired")
def entitlement_is_expired(ctx: Context) -> bool:
    """Cascade where: the entitlement is expired."""
    return ctx.state == "expired"


@guard("entitlement_is_open", "the entitlement is archived")
def entitlement_is_open(ctx: Context) -> bool:
    """Cascade where: the entitlement exists and is not archived."""
    return ctx.state not in (None, "archived")


@guard("entitlement_cancelled_by_subscription", "the entitlement was not cancelled for a subscription reason")
def entitlement_cancelled_by_subscription(ctx: Context) -> bool:
    """Cascade where (X34): cancelled for a reason in entitlement.auto_reinstate_reasons."""
    reasons = tuple(ctx.setting("entitlement.auto_reinstate_reasons"))
    return ctx.state == "cancelled" and ctx.data.get("cancellation_reason") in reasons


@guard("entitlement_reinstatement_waiting", "no reinstatement is waiting")
def entitlement_reinstatement_waiting(ctx: Context) -> bool:
    """Cascade where (X34): reinstate_pending after a cancellation in entitlement.auto_reinstate_reasons."""
    reasons = tuple(ctx.setting("entitlement.auto_reinstate_reasons"))
    return ctx.state == "reinstate_pending" and ctx.data.get("cancellation_reason") in reasons


# --------------------------------------------------------------------------- updaters


@updater("entitlement_init")
def entitlement_init(ctx: Context) -> dict[str, Any]:
    """E01: record the SKU and tier; the approval clock starts now unless the account is onboarding."""
    account = ctx.peer_state("customer_account")
    return {
        "sku_id": requested_sku(ctx),
        "tier": ctx.payload.get("tier"),
        "subscription_id": ctx.payload.get("subscription_id"),
        "expires_at": ctx.payload.get("expires_at"),
        "holds": [],
        "needs_review": False,
        "requested_at": ctx.now,
        "approval_clock_started": account != "onboarding",
    }


@updater("entitlement_activate")
def entitlement_activate(ctx: Context) -> dict[str, Any]:
    """E02, E06b: expires_at = the subscription's paid-through date; clear the review flag."""
    return {
        "expires_at": _paid_through(ctx) or ctx.data.get("expires_at"),
        "activated_at": ctx.now,
        "needs_review": False,
        "escalation_level": None,
    }


@updater("entitlement_escalate")
def entitlement_escalate(ctx: Context) -> dict[str, Any]:
    """E05: needs_review and the escalation level from the timer payload."""
    return {"needs_review": True, "escalation_level": ctx.payload.get("level")}


@updater("entitlement_cancel_pending")
def entitlement_cancel_pending(ctx: Context) -> dict[str, Any]:
    """E03, E04, E06: cancel; refund_due = money captured so far (fact entitlement_captured_cents)."""
    if ctx.event == "deny":
        reason = ctx.arg("reason_code")
    elif ctx.event == "customer_cancel":
        reason = "customer_cancel"
    else:
        reason = "approval_timeout"
    return {
        "cancellation_reason": reason,
        "cancelled_at": ctx.now,
        **_refund_request(ctx, _cents(ctx.fact("entitlement_captured_cents", 0))),
    }


@updater("entitlement_add_hold")
def entitlement_add_hold(ctx: Context) -> dict[str, Any]:
    """E07, E08: add the hold (a set, oldest first)."""
    holds = holds_of(ctx.data)
    hold = _hold(ctx)
    if hold not in holds:
        holds.append(hold)
    return {"holds": holds, "suspended_at": ctx.data.get("suspended_at") or ctx.now}


@updater("entitlement_remove_hold")
def entitlement_remove_hold(ctx: Context) -> dict[str, Any]:
    """E09, E10: remove the hold; E09 also clears suspended_at."""
    holds = [h for h in holds_of(ctx.data) if h != _hold(ctx)]
    return {"holds": holds, "suspended_at": ctx.data.get("suspended_at") if holds else None}


@updater("entitlement_cancel_suspended")
def entitlement_cancel_suspended(ctx: Context) -> dict[str, Any]:
    """E11, E12: reason = oldest hold; refund_due = fact entitlement_unused_prepaid_cents (unused value).

    The service gives 0 for that fact when the current invoice is unpaid.
    """
    holds = holds_of(ctx.data)
    reason = holds[0] if holds else "escalated"
    return {
        "cancellation_reason": reason,
        "cancelled_at": ctx.now,
        "holds": [],
        "suspended_at": None,
        **_refund_request(ctx, _cents(ctx.fact("entitlement_unused_prepaid_cents", 0))),
    }


@updater("entitlement_cancel_active")
def entitlement_cancel_active(ctx: Context) -> dict[str, Any]:
    """E14: cancel early; refund_due = unused prepaid value (fact entitlement_unused_prepaid_cents)."""
    closed = ctx.facts.role == "cascade" and ctx.fact("source_governor") == "customer_account"
    return {
        "cancellation_reason": "account_closed" if closed else "customer_request",
        "cancelled_at": ctx.now,
        **_refund_request(ctx, _cents(ctx.fact("entitlement_unused_prepaid_cents", 0))),
    }


@updater("entitlement_expire")
def entitlement_expire(ctx: Context) -> dict[str, Any]:
    """E13: remember when the period ended (the 30-day reactivation window counts from here)."""
    end = aware_datetime(ctx.payload.get("ends_at")) or aware_datetime(ctx.data.get("expires_at"))
    return {"expired_at": ctx.now, "expires_at": end}


@updater("entitlement_reactivate")
def entitlement_reactivate(ctx: Context) -> dict[str, Any]:
    """E15: a new expires_at (payload, else the subscription's paid-through date)."""
    new_end = aware_datetime(ctx.payload.get("expires_at")) or _paid_through(ctx)
    return {"expires_at": new_end, "expired_at": None, "activated_at": ctx.now}


@updater("entitlement_refund_last_period")
def entitlement_refund_last_period(ctx: Context) -> dict[str, Any]:
    """E16: open a refund request for the disputed last period (fact entitlement_last_period_cents)."""
    return {
        "cancellation_reason": "refund_requested",
        "cancelled_at": ctx.now,
        **_refund_request(ctx, _cents(ctx.fact("entitlement_last_period_cents", 0))),
    }


@updater("entitlement_request_reinstatement")
def entitlement_request_reinstatement(ctx: Context) -> dict[str, Any]:
    """E19: queue the request; X34 asks for automatic approval (payload auto_approve)."""
    auto = ctx.facts.role == "cascade" and ctx.payload.get("auto_approve") is True
    return {"reinstatement_requested_at": ctx.now, "reinstatement_auto": auto}


@updater("entitlement_reinstate")
def entitlement_reinstate(ctx: Context) -> dict[str, Any]:
    """E21: restore access; clear the cancellation and refund fields."""
    return {
        "expires_at": _paid_through(ctx) or ctx.data.get("expires_at"),
        "activated_at": ctx.now,
        "cancellation_reason": None,
        "cancelled_at": None,
        "reinstatement_requested_at": None,
        "reinstatement_auto": None,
        "refund_due_cents": None,
        "refund_request_id": None,
        "refund_decision": None,
    }


@updater("entitlement_reinstatement_refused")
def entitlement_reinstatement_refused(ctx: Context) -> dict[str, Any]:
    """E22, E23: back to cancelled; the original cancelled_at keeps the 14-day window from restarting."""
    return {"reinstatement_requested_at": None, "reinstatement_auto": None}


@updater("entitlement_approve_refund")
def entitlement_approve_refund(ctx: Context) -> dict[str, Any]:
    """E18: the approved amount goes to Billing."""
    return {
        "refund_amount_cents": int(ctx.arg("amount_cents")),
        "refund_approved_at": ctx.now,
        "refund_issue": None,
        "refund_decision": "approved",
    }


@updater("entitlement_refund_completed")
def entitlement_refund_completed(ctx: Context) -> dict[str, Any]:
    """E24: the refund settled."""
    refunded = _cents(ctx.data.get("refunded_cents")) + _cents(ctx.data.get("refund_amount_cents"))
    return {
        "refunded_cents": refunded,
        "refund_due_cents": 0,
        "refund_issue": None,
        "refund_settled_at": ctx.now,
    }


@updater("entitlement_refund_failed")
def entitlement_refund_failed(ctx: Context) -> dict[str, Any]:
    """E25: finance may approve again under a new refund_request_id (new idempotency key)."""
    due = _cents(ctx.data.get("refund_due_cents"))
    return {
        **_refund_request(ctx, due),
        "refund_failures": _cents(ctx.data.get("refund_failures")) + 1,
        "refund_failure_code": ctx.payload.get("failure_code"),
        "refund_issue": None,
        "refund_decision": None,
    }


@updater("entitlement_decline_refund")
def entitlement_decline_refund(ctx: Context) -> dict[str, Any]:
    """Ex5: finance declines the open refund request."""
    return {"refund_due_cents": 0, "refund_request_id": None, "refund_decision": "declined"}


@updater("entitlement_update_features")
def entitlement_update_features(ctx: Context) -> dict[str, Any]:
    """Ex2 (X30): the new tier (and feature list when given)."""
    changes: dict[str, Any] = {}
    if ctx.payload.get("tier"):
        changes["tier"] = ctx.payload["tier"]
    if ctx.payload.get("features") is not None:
        changes["features"] = list(ctx.payload["features"])
    return changes
