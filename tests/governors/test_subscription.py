"""Subscription governor (GOVERNORS.md §4): every row, its rejections, timers, four-eyes and cascades."""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import partial
from typing import Any

import pytest

from governors import Decision, Instance, Rejection, decide, plan
from governors.definitions.subscription import GOVERNOR
from governors.facts import TimerState
from governors.spec import FourEyes
from tests.governors.tables import NOW, Case, Table, case_id_with_note, make_facts, peer, timer_ops

DAY = timedelta(days=1)
END = NOW + 20 * DAY


def world(sku_state: str = "published", **extra: tuple[Instance, ...]) -> dict[str, tuple[Instance, ...]]:
    skus = tuple(
        Instance(
            "catalog",
            s,
            state=sku_state if s == "sku-core" else "published",
            subject_id=s,
            data={"sku_id": s},
        )
        for s in ("sku-core", "sku-analytics", "sku-sso")
    )
    return {"customer_account": (peer("customer_account", "active"),), "catalog": skus, **extra}


def sub(state: str | None, seq: int = 4, **data: Any) -> Instance:
    base: dict[str, Any] = {
        "tier": "starter",
        "billing_cycle": "monthly",
        "skus": ["sku-core"],
        "monthly_price_cents": 2999,
        "auto_renew": True,
        "current_period_start": NOW - 10 * DAY,
        "current_period_end": END,
    }
    base.update(data)
    return Instance(
        "subscription", "sub1", state=state, state_seq=seq, version=9, customer_id="c1", data=base
    )


# The staff reason, the actor and no settings (the engine's defaults) as these tests always had them.
facts = partial(make_facts, reason="customer asked on the phone", settings=None, actor="u1", peers=world())


PM = {"payment_method_valid": True}
CANCEL = {"reason_code": "too_expensive", "churn_offer_outcome": "declined"}
PAID = {"invoice_id": "inv-7", "payment_id": "pay-1", "kind": "renewal", "amount_cents": 2999}
TRIAL = {"trial_ends_at": NOW, "current_period_start": None, "current_period_end": None}
CANCELLED = {
    "cancellation_reason": "too_expensive",
    "cancelled_at": NOW - 5 * DAY,
    "auto_renew": False,
    "reactivation_deadline": NOW + 25 * DAY,
    "access_until": END,
}
PENDING_PRO = {"pending_tier_change": "professional", "tier_change_request_id": "r1"}

CASES: tuple[Case, ...] = (
    # S01 trial.
    Case(
        "S01",
        None,
        "start_trial",
        "cascade",
        "trial",
        {"tier": "professional", "cycle": "monthly"},
        changes={
            "tier": "professional",
            "skus": ["sku-core", "sku-analytics"],
            "trial_ends_at": NOW + 14 * DAY,
            "auto_renew": True,
            "auto_convert_trial": False,
            "monthly_price_cents": 9999,
        },
    ),
    Case(
        "S01",
        None,
        "start_trial",
        "sys",
        "trial",
        {"tier": None, "cycle": None},
        changes={"tier": "professional", "billing_cycle": "monthly"},
        note="defaults (A01 without a tier)",
    ),
    Case(
        "S01",
        None,
        "start_trial",
        "cascade",
        "!guard_failed",
        peers=world(subscription=(peer("subscription", "archived", "sub0"),)),
        guard="subscription_first_trial",
    ),
    Case("S01", None, "start_trial", "cascade", "!invalid_input", {"tier": "platinum"}),
    Case("S01", None, "start_trial", "support", "!role_not_allowed"),
    Case("S01", "trial", "start_trial", "cascade", "!invalid_transition"),
    # S02.
    Case("S02", "trial", "trial_ending_soon", "timer", "trial", data=TRIAL),
    # S03 purchase.
    Case(
        "S03",
        "trial",
        "purchase",
        "support",
        "active",
        {"tier": "starter", "cycle": "annual"},
        TRIAL,
        extra=PM,
        changes={
            "tier": "starter",
            "billing_cycle": "annual",
            "current_period_start": NOW,
            "current_period_end": NOW + 365 * DAY,
            "charge_kind": "initial",
            "charge_cents": 32839,
            "trial_ends_at": None,
        },
    ),
    Case(
        "S03",
        "trial_ended",
        "purchase",
        "sys",
        "active",
        {"tier": "professional", "cycle": "monthly"},
        TRIAL,
        extra=PM,
        changes={"charge_cents": 9999, "skus": ["sku-core", "sku-analytics"]},
    ),
    Case(
        "S03",
        "trial",
        "purchase",
        "support",
        "active",
        {"tier": "starter", "cycle": "monthly"},
        TRIAL,
        peers=world(
            customer_account=(peer("customer_account", "active", payment_method_fingerprints=["fp1"]),)
        ),
        note="validated method on the account, no fact",
    ),
    Case(
        "S03",
        "trial",
        "purchase",
        "support",
        "!guard_failed",
        {"tier": "free", "cycle": "monthly"},
        TRIAL,
        extra=PM,
        guard="subscription_tier_not_free",
    ),
    Case(
        "S03",
        "trial",
        "purchase",
        "support",
        "!guard_failed",
        {"tier": "enterprise", "cycle": "monthly"},
        TRIAL,
        extra=PM,
        guard="subscription_tier_has_list_price",
    ),
    Case(
        "S03",
        "trial",
        "purchase",
        "support",
        "!guard_failed",
        {"tier": "starter", "cycle": "monthly"},
        TRIAL,
        guard="subscription_payment_method_valid",
    ),
    Case(
        "S03",
        "trial",
        "purchase",
        "support",
        "!guard_failed",
        {"tier": "starter", "cycle": "monthly"},
        TRIAL,
        peers=world("deprecated"),
        extra=PM,
        guard="subscription_skus_on_sale",
        note="X36",
    ),
    Case(
        "S03", "trial", "purchase", "support", "!invalid_input", {"tier": "starter", "cycle": "weekly"}, TRIAL
    ),
    Case("S03", "trial", "purchase", "support", "!invalid_input", {"cycle": "monthly"}, TRIAL),
    Case(
        "S03", "active", "purchase", "support", "!invalid_transition", {"tier": "starter", "cycle": "monthly"}
    ),
    Case("S03", "trial", "purchase", "finance", "!role_not_allowed", {"tier": "starter", "cycle": "monthly"}),
    # S04 / S05 trial end (D-19).
    Case(
        "S04",
        "trial",
        "trial_expired",
        "timer",
        "active",
        data={**TRIAL, "auto_convert_trial": True, "tier": "professional"},
        extra=PM,
        changes={"current_period_start": NOW, "current_period_end": NOW + 30 * DAY, "charge_cents": 9999},
    ),
    Case(
        "S05",
        "trial",
        "trial_expired",
        "timer",
        "trial_ended",
        data=TRIAL,
        extra=PM,
        changes={"trial_ended_at": NOW},
        note="auto_convert off",
    ),
    Case(
        "S05",
        "trial",
        "trial_expired",
        "timer",
        "trial_ended",
        data={**TRIAL, "auto_convert_trial": True},
        note="no payment method",
    ),
    # S06, S07.
    Case(
        "S06",
        "trial",
        "cancel",
        "support",
        "cancelled",
        CANCEL,
        TRIAL,
        changes={
            "access_until": NOW,
            "cancellation_reason": "too_expensive",
            "auto_renew": False,
            "reactivation_deadline": NOW + 30 * DAY,
            "churn_offer_outcome": "declined",
        },
    ),
    Case("S06", "trial", "cancel", "support", "!invalid_input", {"reason_code": "x"}, TRIAL),
    Case(
        "S07",
        "trial_ended",
        "decline",
        "support",
        "cancelled",
        data=TRIAL,
        changes={"cancellation_reason": "trial_not_converted", "access_until": NOW},
    ),
    Case("S07", "trial_ended", "decision_timeout", "timer", "cancelled", data=TRIAL),
    # S08, S09 renewal.
    Case(
        "S08",
        "active",
        "renewal_due",
        "timer",
        "awaiting_renewal",
        changes={"charge_kind": "renewal", "charge_cents": 2999},
    ),
    Case(
        "S08",
        "active",
        "renewal_due",
        "timer",
        "awaiting_renewal",
        data={"credit_cents": 1000},
        changes={"charge_cents": 1999, "credit_cents": None},
        note="downgrade credit",
    ),
    Case(
        "S08",
        "active",
        "renewal_due",
        "timer",
        "awaiting_renewal",
        data={"next_monthly_price_cents": 3499},
        changes={"charge_cents": 3499, "monthly_price_cents": 3499, "next_monthly_price_cents": None},
        note="X37 price from the renewal",
    ),
    Case(
        "S08",
        "active",
        "renewal_due",
        "timer",
        "!guard_failed",
        data={"auto_renew": False},
        guard="subscription_auto_renew_on",
    ),
    Case(
        "S09",
        "active",
        "term_ended",
        "timer",
        "cancelled",
        data={"auto_renew": False},
        changes={"cancellation_reason": "non_renewal", "access_until": END},
    ),
    Case(
        "S09",
        "awaiting_renewal",
        "term_ended",
        "timer",
        "cancelled",
        data={"auto_renew": False},
        note="S27: auto-renew turned off while awaiting renewal",
    ),
    Case("S09", "active", "term_ended", "timer", "!guard_failed", guard="subscription_auto_renew_off"),
    # S10–S12 tier changes.
    Case(
        "S10",
        "active",
        "request_tier_change",
        "support",
        "active",
        {"new_tier": "professional", "request_id": "r1"},
        changes={"pending_tier_change": "professional", "tier_change_request_id": "r1"},
    ),
    Case(
        "S10",
        "active",
        "request_tier_change",
        "sys",
        "!guard_failed",
        {"new_tier": "starter", "request_id": "r1"},
        guard="subscription_tier_change_valid",
        note="same tier",
    ),
    Case(
        "S10",
        "active",
        "request_tier_change",
        "sys",
        "!guard_failed",
        {"new_tier": "free", "request_id": "r1"},
        data={"tier": "professional"},
        guard="subscription_tier_change_valid",
        note="no downgrade to free (D-20)",
    ),
    Case(
        "S10",
        "active",
        "request_tier_change",
        "sys",
        "!guard_failed",
        {"new_tier": "enterprise", "request_id": "r2"},
        data=PENDING_PRO,
        guard="subscription_no_pending_change",
    ),
    Case(
        "S10",
        "active",
        "request_tier_change",
        "sys",
        "!guard_failed",
        {"new_tier": "professional", "request_id": "r0"},
        data={"applied_tier_requests": ["r0"]},
        guard="subscription_request_unseen",
        note="§4.4 keyed by request_id",
    ),
    Case("S10", "active", "request_tier_change", "sys", "!invalid_input", {"new_tier": "professional"}),
    Case(
        "S10",
        "trial",
        "request_tier_change",
        "sys",
        "!invalid_transition",
        {"new_tier": "professional", "request_id": "r1"},
    ),
    Case(
        "S11",
        "active",
        "approve_tier_change",
        "cascade",
        "active",
        data=PENDING_PRO,
        changes={
            "tier": "professional",
            "monthly_price_cents": 9999,
            "last_proration_cents": 4667,
            "charge_kind": "proration",
            "charge_cents": 4667,
            "pending_tier_change": None,
            "applied_tier_requests": ["r1"],
            "skus": ["sku-core", "sku-analytics"],
        },
    ),
    Case(
        "S11",
        "active",
        "approve_tier_change",
        "sys",
        "active",
        data={
            "tier": "professional",
            "monthly_price_cents": 9999,
            "current_period_end": NOW + 15 * DAY,
            "pending_tier_change": "starter",
            "tier_change_request_id": "r3",
            "credit_cents": 100,
        },
        changes={"last_proration_cents": -3500, "charge_cents": 0, "credit_cents": 3600},
        note="downgrade credit",
    ),
    Case(
        "S11",
        "active",
        "approve_tier_change",
        "manager",
        "active",
        {"enterprise_price_cents": 50000},
        data={"pending_tier_change": "enterprise", "tier_change_request_id": "r4"},
        changes={"tier": "enterprise", "monthly_price_cents": 50000, "charge_cents": 31334},
    ),
    Case(
        "S11",
        "active",
        "approve_tier_change",
        "cascade",
        "!guard_failed",
        data={"pending_tier_change": "enterprise", "tier_change_request_id": "r4"},
        guard="subscription_tier_change_approvable",
        note="enterprise needs a manager",
    ),
    Case(
        "S11",
        "active",
        "approve_tier_change",
        "manager",
        "!invalid_input",
        data={"pending_tier_change": "enterprise", "tier_change_request_id": "r4"},
        note="price missing",
    ),
    Case(
        "S11",
        "active",
        "approve_tier_change",
        "manager",
        "!guard_failed",
        {"request_id": "r9"},
        PENDING_PRO,
        guard="subscription_has_pending_change",
        note="another request",
    ),
    Case(
        "S11",
        "active",
        "approve_tier_change",
        "sys",
        "!guard_failed",
        guard="subscription_has_pending_change",
    ),
    Case("S11", "active", "approve_tier_change", "support", "!role_not_allowed", data=PENDING_PRO),
    Case(
        "S12",
        "active",
        "reject_tier_change",
        "manager",
        "active",
        data=PENDING_PRO,
        changes={"pending_tier_change": None, "tier_change_request_id": None},
    ),
    Case(
        "S12",
        "active",
        "reject_tier_change",
        "manager",
        "!guard_failed",
        guard="subscription_has_pending_change",
    ),
    Case("S12", "active", "reject_tier_change", "support", "!role_not_allowed", data=PENDING_PRO),
    # S13, S14 pause.
    Case(
        "S13",
        "active",
        "pause",
        "support",
        "paused",
        {"days": 30},
        changes={
            "paused_until": NOW + 30 * DAY,
            "paused_at": NOW,
            "pause_year": 2026,
            "paused_days_this_year": 0,
        },
    ),
    Case(
        "S13",
        "active",
        "pause",
        "support",
        "paused",
        {"days": 60},
        data={"pause_year": 2025, "paused_days_this_year": 80},
        changes={"paused_days_this_year": 0},
        note="last year's pauses do not count",
    ),
    Case(
        "S13", "active", "pause", "support", "!guard_failed", {"days": 91}, guard="subscription_pause_allowed"
    ),
    Case(
        "S13",
        "active",
        "pause",
        "sys",
        "!guard_failed",
        {"days": 20},
        data={"pause_year": 2026, "paused_days_this_year": 80},
        guard="subscription_pause_allowed",
    ),
    Case("S13", "active", "pause", "support", "!invalid_input", {"days": 0}),
    Case(
        "S14",
        "paused",
        "resume",
        "support",
        "active",
        data={
            "paused_at": NOW - 10 * DAY,
            "paused_until": NOW + 20 * DAY,
            "pause_year": 2026,
            "paused_days_this_year": 5,
        },
        changes={"current_period_end": END + 10 * DAY, "paused_days_this_year": 15, "paused_until": None},
    ),
    Case(
        "S14",
        "paused",
        "pause_expired",
        "timer",
        "active",
        data={"paused_at": NOW - timedelta(days=9, hours=1), "paused_days_this_year": 0},
        changes={"paused_days_this_year": 10},
        note="a started day counts",
    ),
    # S15–S21 cancellation, renewal payments, grace.
    Case(
        "S15",
        "active",
        "cancel",
        "support",
        "cancelled",
        CANCEL,
        changes={"access_until": END, "auto_renew": False, "cancelled_at": NOW},
    ),
    Case("S15", "paused", "cancel", "sys", "cancelled", CANCEL),
    Case("S15", "awaiting_renewal", "cancel", "support", "cancelled", CANCEL),
    Case("S15", "active", "cancel", "manager", "!role_not_allowed", CANCEL),
    Case(
        "S16",
        "awaiting_renewal",
        "renewal_paid",
        "cascade",
        "active",
        PAID,
        changes={
            "current_period_start": END,
            "current_period_end": END + 30 * DAY,
            "paid_renewal_keys": ["inv-7:pay-1"],
        },
    ),
    Case(
        "S16",
        "awaiting_renewal",
        "renewal_paid",
        "cascade",
        "!guard_failed",
        {**PAID, "kind": "overage"},
        guard="subscription_renewal_payment",
    ),
    Case(
        "S16",
        "awaiting_renewal",
        "renewal_paid",
        "cascade",
        "!guard_failed",
        PAID,
        data={"paid_renewal_keys": ["inv-7:pay-1"]},
        guard="subscription_renewal_payment",
        note="replayed payment",
    ),
    Case("S16", "awaiting_renewal", "renewal_paid", "sys", "!role_not_allowed", PAID),
    Case(
        "S17",
        "awaiting_renewal",
        "renewal_payment_failed",
        "cascade",
        "renewal_grace",
        changes={"past_due": True, "grace_until": NOW + 7 * DAY},
    ),
    Case(
        "S18",
        "awaiting_renewal",
        "renewal_deadline_passed",
        "timer",
        "renewal_grace",
        changes={"grace_until": NOW + 7 * DAY},
    ),
    Case(
        "S18",
        "awaiting_renewal",
        "renewal_deadline_passed",
        "timer",
        "!guard_failed",
        extra={"subscription_renewal_invoice_paid": True},
        guard="subscription_renewal_unpaid",
    ),
    Case(
        "S19",
        "renewal_grace",
        "payment_recovered",
        "cascade",
        "active",
        PAID,
        {"past_due": True},
        changes={"past_due": None, "current_period_end": END + 30 * DAY},
    ),
    Case(
        "S20",
        "renewal_grace",
        "grace_expired",
        "timer",
        "cancelled",
        changes={"cancellation_reason": "nonpayment", "access_until": NOW},
    ),
    Case("S21", "renewal_grace", "cancel", "support", "cancelled", CANCEL, changes={"access_until": NOW}),
    # S22–S25 after cancellation.
    Case(
        "S22",
        "cancelled",
        "reactivate",
        "support",
        "active",
        data=CANCELLED,
        changes={
            "current_period_start": NOW,
            "current_period_end": NOW + 30 * DAY,
            "charge_cents": 2999,
            "charge_kind": "initial",
            "cancellation_reason": None,
            "auto_renew": True,
        },
    ),
    Case(
        "S22",
        "cancelled",
        "reactivate",
        "cascade",
        "active",
        PAID,
        {**CANCELLED, "cancellation_reason": "nonpayment", "current_period_end": NOW - 12 * DAY},
        extra={"source_governor": "billing"},
        changes={
            "current_period_start": NOW - 12 * DAY,
            "current_period_end": NOW + 18 * DAY,
            "charge_cents": 0,
        },
        note="X06: overdue invoice paid, no new charge",
    ),
    Case(
        "S22",
        "cancelled",
        "reactivate",
        "support",
        "!guard_failed",
        data={**CANCELLED, "reactivation_deadline": NOW - DAY},
        guard="subscription_reactivation_open",
    ),
    Case(
        "S23", "cancelled", "retention_expired", "timer", "lapsed", data=CANCELLED, changes={"lapsed_at": NOW}
    ),
    Case("S24", "lapsed", "archive_for_compliance", "timer", "archived", changes={"archived_at": NOW}),
    Case("S24", "lapsed", "archive_for_compliance", "compliance", "archived"),
    Case("S24", "lapsed", "archive_for_compliance", "admin", "!role_not_allowed"),
    Case(
        "S25",
        "archived",
        "manual_reset",
        "admin",
        "active",
        {"incident_ref": "INC-12"},
        CANCELLED,
        changes={"cancellation_reason": None, "current_period_start": NOW, "charge_cents": 2999},
    ),
    Case("S25", "archived", "manual_reset", "admin", "!invalid_input", data=CANCELLED),
    Case("S25", "archived", "manual_reset", "manager", "!role_not_allowed", {"incident_ref": "INC-12"}),
    Case("S25", "archived", "toggle_auto_renew", "support", "!invalid_transition", {"auto_renew": True}),
    # S26, S27.
    Case(
        "S26",
        "renewal_grace",
        "account_closed",
        "cascade",
        "cancelled",
        changes={"cancellation_reason": "account_deactivated", "access_until": NOW},
    ),
    Case(
        "S26",
        "cancelled",
        "account_closed",
        "cascade",
        "cancelled",
        data=CANCELLED,
        changes={"access_until": NOW},
        note="already cancelled: stays, keeps its reason",
    ),
    Case("S26", "trial", "account_closed", "cascade", "!invalid_transition", data=TRIAL),
    Case(
        "S27",
        "active",
        "toggle_auto_renew",
        "support",
        "active",
        {"auto_renew": False},
        changes={"auto_renew": False},
    ),
    Case("S27", "cancelled", "toggle_auto_renew", "sys", "cancelled", {"auto_renew": True}, CANCELLED),
    Case("S27", "active", "toggle_auto_renew", "support", "!invalid_input", {"auto_renew": "off"}),
    # Added rows.
    Case("Sx1", "lapsed", "retention_archive", "cascade", "archived", note="X25"),
    Case("Sx1", "archived", "retention_archive", "cascade", "!invalid_transition"),
    Case(
        "Sx2",
        "active",
        "price_changed",
        "cascade",
        "active",
        {"sku_id": "sku-core", "price_cents": 3499},
        changes={"next_monthly_price_cents": 3499},
    ),
    Case(
        "Sx2",
        "active",
        "price_changed",
        "cascade",
        "active",
        {"sku_id": "sku-core", "price_cents": 3499},
        data={"tier": "professional"},
        changes={"next_monthly_price_cents": None},
        note="not the professional tier's price SKU",
    ),
    Case(
        "Sx3",
        "active",
        "sku_withdrawn",
        "cascade",
        "active",
        {"sku_id": "sku-core", "withdrawal": "deprecated"},
        changes={"withdrawn_sku": "sku-core"},
    ),
    Case(
        "Sx4",
        "trial",
        "extend_trial",
        "support",
        "trial",
        {"days": 7},
        TRIAL,
        changes={"trial_ends_at": NOW + 7 * DAY, "trial_extended": True},
    ),
    Case(
        "Sx4",
        "trial",
        "extend_trial",
        "support",
        "!guard_failed",
        {"days": 7},
        {**TRIAL, "trial_extended": True},
        guard="subscription_trial_extendable",
    ),
    Case(
        "Sx4",
        "trial",
        "extend_trial",
        "support",
        "!guard_failed",
        {"days": 15},
        TRIAL,
        guard="subscription_trial_extendable",
    ),
    Case("Sx5", "active", "renewal_reminder", "timer", "active", data={"billing_cycle": "annual"}),
    Case("Sx5", "active", "renewal_reminder", "timer", "!guard_failed", guard="subscription_long_cycle"),
    Case("Sx6", "cancelled", "access_period_ended", "timer", "cancelled", data=CANCELLED),
)


TABLE = Table(
    GOVERNOR,
    CASES,
    lambda case: (
        sub(case.state, **case.data) if case.state else Instance("subscription", "new:1", customer_id="c1")
    ),
    facts=facts,
    world=world(),
    ids=case_id_with_note,
    rejection_row="if_named",
    spec_rows={f"S{n:02d}" for n in range(1, 28)},
)
test_row, test_every_row_is_covered, test_every_row_id_is_from_the_spec_or_marked_added = TABLE.tests()


# ------------------------------------------------------------------ timers


def _due(ops: dict[str, tuple[str, TimerState]]) -> dict[str, tuple[str, datetime | None]]:
    return {name: (op, t.due_at) for name, (op, t) in ops.items()}


def test_trial_timers_follow_trial_end() -> None:
    started = timer_ops(decide(GOVERNOR, Instance("subscription", "new:1"), "start_trial", facts("cascade")))
    assert _due(started) == {
        "trial_ending_soon": ("arm", NOW + 7 * DAY),
        "trial_expired": ("arm", NOW + 14 * DAY),
    }
    trial = Instance(
        "subscription",
        "sub1",
        state="trial",
        state_seq=1,
        data={"trial_ends_at": NOW + 3 * DAY},
        timers={"trial_expired": TimerState("trial_expired", "trial_expired", 1, due_at=NOW + 3 * DAY)},
    )
    extended = timer_ops(decide(GOVERNOR, trial, "extend_trial", facts("support", {"days": 10})))
    assert _due(extended) == {
        "trial_ending_soon": ("arm", NOW + 6 * DAY),
        "trial_expired": ("arm", NOW + 13 * DAY),
    }


def test_active_arms_the_renewal_timers() -> None:
    annual = timer_ops(
        decide(
            GOVERNOR,
            sub("trial", **TRIAL),
            "purchase",
            facts("support", {"tier": "starter", "cycle": "annual"}, extra=PM),
        )
    )
    end = NOW + 365 * DAY
    assert _due(annual) == {
        "renewal_reminder": ("arm", end - 30 * DAY),
        "renewal_due": ("arm", end - 7 * DAY),
        "term_ended": ("arm", end),
    }
    monthly = timer_ops(
        decide(
            GOVERNOR,
            sub("trial", **TRIAL),
            "purchase",
            facts("support", {"tier": "starter", "cycle": "monthly"}, extra=PM),
        )
    )
    assert monthly["renewal_reminder"][1].paused, "the −30 d reminder is for annual and longer cycles"
    assert monthly["renewal_due"][1].due_at == NOW + 23 * DAY


def test_toggle_auto_renew_rearms_the_renewal_timers() -> None:
    active = sub("active", seq=4, auto_renew=False, current_period_end=NOW + 3 * DAY)
    ops = timer_ops(decide(GOVERNOR, active, "toggle_auto_renew", facts("support", {"auto_renew": True})))
    assert _due(ops)["renewal_due"] == ("arm", NOW - 4 * DAY), "overdue: fires at once and invoices (S08)"
    assert _due(ops)["term_ended"] == ("arm", NOW + 3 * DAY)


@pytest.mark.parametrize(
    ("state", "event", "role", "payload", "data", "expected"),
    [
        ("active", "pause", "support", {"days": 30}, {}, {"pause_expired": NOW + 30 * DAY}),
        ("active", "renewal_due", "timer", {}, {}, {"renewal_deadline_passed": END, "term_ended": END}),
        ("awaiting_renewal", "renewal_payment_failed", "cascade", {}, {}, {"grace_expired": NOW + 7 * DAY}),
        (
            "renewal_grace",
            "grace_expired",
            "timer",
            {},
            {},
            {"access_ended": NOW, "retention_expired": NOW + 30 * DAY},
        ),
        (
            "active",
            "cancel",
            "support",
            CANCEL,
            {},
            {"access_ended": END, "retention_expired": NOW + 30 * DAY},
        ),
        ("trial", "trial_expired", "timer", {}, TRIAL, {"decision_timeout": NOW + 3 * DAY}),
        (
            "cancelled",
            "retention_expired",
            "timer",
            {},
            CANCELLED,
            {"archive_for_compliance": NOW + 90 * DAY},
        ),
    ],
)
def test_state_entry_arms_its_timers(
    state: str,
    event: str,
    role: str,
    payload: dict[str, Any],
    data: dict[str, Any],
    expected: dict[str, datetime],
) -> None:
    ops = timer_ops(decide(GOVERNOR, sub(state, **data), event, facts(role, payload)))
    armed = {n: t.due_at for n, (o, t) in ops.items() if o == "arm"}
    assert armed == expected


def test_account_closed_on_a_cancelled_subscription_ends_access_now() -> None:
    inst = Instance(
        "subscription",
        "sub1",
        state="cancelled",
        state_seq=4,
        data=CANCELLED,
        timers={"access_ended": TimerState("access_ended", "access_period_ended", 4, due_at=END)},
    )
    ops = timer_ops(decide(GOVERNOR, inst, "account_closed", facts("cascade")))
    assert ops["access_ended"] == ("arm", TimerState("access_ended", "access_period_ended", 4, due_at=NOW))


# ------------------------------------------------------------------ four-eyes, attention


def test_manual_reset_needs_a_second_admin_or_manager() -> None:
    out = decide(
        GOVERNOR, sub("archived", **CANCELLED), "manual_reset", facts("admin", {"incident_ref": "I-1"})
    )
    assert isinstance(out, Decision)
    assert out.needs_approval == FourEyes(approvers=("admin", "manager"))
    ok = decide(
        GOVERNOR,
        sub("archived", **CANCELLED),
        "manual_reset",
        facts("admin", {"incident_ref": "I-1"}, approved_by="m2"),
    )
    assert isinstance(ok, Decision)
    assert ok.needs_approval is None


def test_attention() -> None:
    waiting = decide(
        GOVERNOR,
        sub("active"),
        "request_tier_change",
        facts("support", {"new_tier": "enterprise", "request_id": "r1"}),
    )
    assert isinstance(waiting, Decision)
    assert waiting.attention
    near = decide(
        GOVERNOR,
        sub("active", pause_year=2026, paused_days_this_year=50),
        "pause",
        facts("support", {"days": 35}),
    )
    assert isinstance(near, Decision)
    assert near.attention
    far = decide(GOVERNOR, sub("active"), "pause", facts("support", {"days": 10}))
    assert isinstance(far, Decision)
    assert not far.attention


# ------------------------------------------------------------------ outgoing cascades


def _emits(outcome: Decision | Rejection) -> list[tuple[str, str, str, str, dict[str, Any]]]:
    assert isinstance(outcome, Decision), outcome
    return [(c.id, c.target, c.event, c.select, dict(c.payload)) for c in outcome.cascades]


def test_trial_start_requests_entitlements_and_quota() -> None:
    out = decide(
        GOVERNOR, Instance("subscription", "new:1"), "start_trial", facts("cascade", {"tier": "professional"})
    )
    tier = {"tier": "professional", "subscription_id": "new:1"}
    assert _emits(out) == [
        ("X01", "entitlement", "entitlement_requested", "new", {**tier, "item": "sku-core"}),
        ("X01", "entitlement", "entitlement_requested", "new", {**tier, "item": "sku-analytics"}),
        ("X02", "quota_sla", "allocate", "upsert", {"tier": "professional", "trial": True}),
    ]
    assert out.cascades[-1].create_event == "allocate"  # type: ignore[union-attr]


def test_purchase_charges_and_sets_the_tier() -> None:
    out = decide(
        GOVERNOR,
        sub("trial_ended", **TRIAL),
        "purchase",
        facts("support", {"tier": "starter", "cycle": "monthly"}, extra=PM),
    )
    emitted = _emits(out)
    charge = [e for e in emitted if e[0] == "X03"]
    assert charge == [
        (
            "X03",
            "billing",
            "cycle_begin",
            "new",
            {"kind": "initial", "amount_cents": 2999, "currency": "USD", "subscription_id": "sub1"},
        )
    ]
    assert out.cascades[[c.id for c in out.cascades].index("X03")].must  # type: ignore[union-attr]
    assert {(e[0], e[1], e[2]) for e in emitted} == {
        ("X01", "entitlement", "entitlement_requested"),
        ("X03", "billing", "cycle_begin"),
        ("X30", "quota_sla", "tier_upgraded"),
        ("X30", "entitlement", "update_features"),
        ("X30", "multi_tenant", "set_tier_weight"),
        ("X34", "entitlement", "reactivate"),
        ("Xi3", "entitlement", "extend_expiry"),
    }
    reactivate = next(e for e in emitted if e[0] == "X34")
    assert reactivate[4] == {"expires_at": NOW + 30 * DAY}


def test_renewal_and_proration_charges() -> None:
    renewal = _emits(decide(GOVERNOR, sub("active"), "renewal_due", facts("timer")))
    assert renewal == [
        (
            "X03",
            "billing",
            "cycle_begin",
            "new",
            {"kind": "renewal", "amount_cents": 2999, "currency": "USD", "subscription_id": "sub1"},
        )
    ]
    covered = _emits(decide(GOVERNOR, sub("active", credit_cents=5000), "renewal_due", facts("timer")))
    assert covered == [], "a renewal fully covered by credit opens no invoice"
    upgrade = _emits(decide(GOVERNOR, sub("active", **PENDING_PRO), "approve_tier_change", facts("cascade")))
    assert next(e for e in upgrade if e[0] == "X03")[4]["amount_cents"] == 4667
    assert {e[0] for e in upgrade} == {"X03", "X30", "Xi4"}
    downgrade = _emits(
        decide(
            GOVERNOR,
            sub(
                "active",
                tier="professional",
                monthly_price_cents=9999,
                pending_tier_change="starter",
                tier_change_request_id="r2",
            ),
            "approve_tier_change",
            facts("sys"),
        )
    )
    assert "X03" not in {e[0] for e in downgrade}


@pytest.mark.parametrize(("new_tier", "auto"), [("professional", True), ("enterprise", False)])
def test_xi2_auto_approves_listed_tiers(new_tier: str, auto: bool) -> None:
    out = _emits(
        decide(
            GOVERNOR,
            sub("active"),
            "request_tier_change",
            facts("support", {"new_tier": new_tier, "request_id": "r1"}),
        )
    )
    assert out == ([("Xi2", "subscription", "approve_tier_change", "self", {})] if auto else [])


def test_pause_and_resume_hold_the_entitlements() -> None:
    paused = _emits(decide(GOVERNOR, sub("active"), "pause", facts("support", {"days": 10})))
    assert paused == [("X31", "entitlement", "suspend", "each", {"hold": "subscription_paused"})]
    resumed = _emits(decide(GOVERNOR, sub("paused", paused_at=NOW - DAY), "resume", facts("support")))
    assert resumed == [
        ("X31", "entitlement", "lift_hold", "each", {"hold": "subscription_paused"}),
        ("X35", "entitlement", "extend_expiry", "each", {"expires_at": END + DAY}),
    ]
    cancelled = _emits(decide(GOVERNOR, sub("paused"), "cancel", facts("support", CANCEL)))
    assert cancelled == [("Xi6", "entitlement", "lift_hold", "each", {"hold": "subscription_paused"})]


def test_grace_expiry_suspends_entitlements_and_voids_unissued_invoices() -> None:
    out = decide(GOVERNOR, sub("renewal_grace"), "grace_expired", facts("timer"))
    assert _emits(out) == [
        ("X07", "entitlement", "suspend", "each", {"hold": "payment_failed"}),
        ("X08", "billing", "void_invoice", "each", {}),
    ]
    assert [c.where for c in out.cascades] == ["entitlement_can_take_hold", "subscription_invoice_unissued"]  # type: ignore[union-attr]


def test_access_end_and_trial_end_expire_entitlements() -> None:
    trial_end = _emits(decide(GOVERNOR, sub("trial", **TRIAL), "trial_expired", facts("timer")))
    assert trial_end == [("X33", "entitlement", "period_ended", "each", {"ends_at": NOW})]
    access = _emits(decide(GOVERNOR, sub("cancelled", **CANCELLED), "access_period_ended", facts("timer")))
    assert access == [("X32", "entitlement", "period_ended", "each", {"ends_at": END})]


def test_reactivation_cascades() -> None:
    out = _emits(decide(GOVERNOR, sub("cancelled", **CANCELLED), "reactivate", facts("support")))
    assert [(e[0], e[2]) for e in out] == [
        ("X03", "cycle_begin"),
        ("X34", "reactivate"),
        ("X34", "request_reinstatement"),
        ("X34", "approve_reinstatement"),
        ("X35", "extend_expiry"),
    ]
    assert out[2][4] == {"auto_approve": True}


def test_auto_renew_off_while_awaiting_renewal_voids_the_invoice() -> None:
    off = _emits(
        decide(
            GOVERNOR, sub("awaiting_renewal"), "toggle_auto_renew", facts("support", {"auto_renew": False})
        )
    )
    assert off == [("Xi5", "billing", "void_invoice", "each", {})]
    on = _emits(
        decide(GOVERNOR, sub("awaiting_renewal"), "toggle_auto_renew", facts("support", {"auto_renew": True}))
    )
    assert on == []


# ------------------------------------------------------------------ plans across governors


def _snapshot(*instances: Instance) -> dict[str, Instance]:
    catalog = world()["catalog"]
    account = peer("customer_account", "active", "acct")
    return {i.id: i for i in (*catalog, account, *instances)}


def test_plan_trial_start_creates_pending_entitlements() -> None:
    new = Instance("subscription", "new:sub", customer_id="c1")
    p = plan(_snapshot(), new, "start_trial", facts("cascade", {"tier": "professional"}))
    assert p.ok, p.alerts
    created = sorted(
        (i.data.get("sku_id"), i.state) for i in p.instances.values() if i.governor == "entitlement"
    )
    assert created == [("sku-analytics", "pending_approval"), ("sku-core", "pending_approval")]
    assert [i.state for i in p.instances.values() if i.governor == "quota_sla"] == ["within_limits"]


def test_plan_grace_expiry_suspends_active_entitlements() -> None:
    active = Instance(
        "entitlement",
        "ent-1",
        state="active",
        state_seq=2,
        customer_id="c1",
        data={"sku_id": "sku-core", "holds": []},
    )
    expired = Instance(
        "entitlement",
        "ent-2",
        state="expired",
        state_seq=2,
        customer_id="c1",
        data={"sku_id": "sku-analytics", "holds": []},
    )
    grace = sub("renewal_grace")
    p = plan(_snapshot(grace, active, expired), "sub1", "grace_expired", facts("timer"))
    assert p.ok, p.alerts
    assert p.instances["sub1"].state == "cancelled"
    assert p.instances["ent-1"].state == "suspended"
    assert p.instances["ent-1"].data["holds"] == ["payment_failed"]
    assert p.instances["ent-2"].state == "expired", "X07 targets active entitlements only"


def test_plan_reactivation_reinstates_entitlements_cancelled_for_nonpayment() -> None:
    ent = Instance(
        "entitlement",
        "ent-1",
        state="cancelled",
        state_seq=5,
        customer_id="c1",
        data={
            "sku_id": "sku-core",
            "holds": [],
            "cancellation_reason": "payment_failed",
            "cancelled_at": NOW - 3 * DAY,
            "subscription_id": "sub1",
        },
    )
    cancelled = sub("cancelled", **{**CANCELLED, "cancellation_reason": "nonpayment"})
    p = plan(_snapshot(cancelled, ent), "sub1", "reactivate", facts("support"))
    assert p.ok, p.alerts
    assert p.instances["sub1"].state == "active"
    assert p.instances["ent-1"].state == "active"
    applied = [(s.cascade, s.event) for s in p.steps if s.instance_id == "ent-1" and s.status == "applied"]
    assert applied == [
        ("X34", "request_reinstatement"),
        ("X35", "extend_expiry"),
        ("Xi1", "approve_reinstatement"),
    ]
    assert [s.event for s in p.steps if s.governor == "billing"] == ["cycle_begin"]
