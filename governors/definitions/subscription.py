"""Subscription governor (GOVERNORS.md §4): the customer's commercial relationship.

Trial, conversion, renewals with payment grace, pause, tier changes with proration, cancellation and
reactivation, then retention and archive (D-17: C's 8 states plus paused). Tiers, prices, cycles and
each tier's SKUs are settings. A charging row leaves ``charge_kind``/``charge_cents`` in the data and
X03 opens the invoice.

Data kept by the rows: tier, skus, billing_cycle, monthly_price_cents (custom for enterprise),
next_monthly_price_cents (X37), credit_cents (downgrade credit for the next renewal),
current_period_start/end, auto_renew, auto_convert_trial, trial_started_at, trial_ends_at,
trial_extended, pending_tier_change, tier_change_request_id, applied_tier_requests, paused_at,
paused_until, pause_days_requested, pause_year, paused_days_this_year, cancellation_reason,
churn_offer_outcome, cancelled_at, reactivation_deadline, access_until, past_due, grace_until,
paid_renewal_keys, charge_kind, charge_cents.
"""

from __future__ import annotations

from typing import Any, Final

from governors.spec import SAME, Cascade, FourEyes, Governor, Input, State, Timer, Transition, fx

TIERS: Final = ("free", "starter", "professional", "enterprise")
CYCLES: Final = ("monthly", "annual", "two_year", "three_year")

SETTINGS: dict[str, Any] = {
    # Tiers in rank order (lowest first), monthly list prices in cents; custom tiers are priced by a
    # manager at approval (D-23). Cycles: length in days and discount (§4).
    "subscription.tiers": list(TIERS),
    "subscription.monthly_price_cents": {"free": 0, "starter": 2999, "professional": 9999},
    "subscription.custom_price_tiers": ["enterprise"],
    "subscription.cycle_days": {"monthly": 30, "annual": 365, "two_year": 730, "three_year": 1095},
    "subscription.cycle_discount_pct": {"monthly": 0, "annual": 10, "two_year": 20, "three_year": 30},
    "subscription.default_cycle": "monthly",
    "subscription.currency": "USD",
    # X01: the SKUs each tier includes (one entitlement per SKU); X37: the SKU whose catalog price is
    # the tier's monthly price.
    "subscription.tier_skus": {
        "free": ["sku-core"],
        "starter": ["sku-core"],
        "professional": ["sku-core", "sku-analytics"],
        "enterprise": ["sku-core", "sku-analytics", "sku-sso"],
    },
    "subscription.tier_price_sku": {"starter": "sku-core", "professional": "sku-analytics"},
    # Trial (S01–S07).
    "subscription.trial_length": "14d",
    "subscription.trial_reminder_before": "7d",
    "subscription.trial_default_tier": "professional",
    "subscription.trial_extension_max_days": 14,
    "subscription.trial_decision_window": "3d",
    "subscription.auto_convert_trial_default": False,
    "subscription.auto_renew_default": True,
    # Renewal (S08, S17–S20; D-18): invoice at −7 d, reminder at −30 d for cycles of 365 d or more.
    "subscription.renewal_invoice_before": "7d",
    "subscription.renewal_reminder_before": "30d",
    "subscription.renewal_reminder_min_cycle_days": 365,
    "subscription.grace_period": "7d",
    # Pause (S13; G): per pause and per calendar year; attention when this close to the yearly limit.
    "subscription.max_pause_days": 90,
    "subscription.max_pause_days_per_year": 90,
    "subscription.pause_attention_remaining_days": 7,
    # Cancellation, retention, archive (S22–S24; D-21).
    "subscription.reactivation_window": "30d",
    "subscription.retention_after_cancel": "30d",
    "subscription.lapsed_archive_after": "90d",
}

_REASON = Input("reason_code", "code", label="Reason code")
_CHURN = Input("churn_offer_outcome", "code", label="Churn-offer outcome")
_DAYS = Input("days", "int", min=1, label="Days")
_NOT_ARCHIVED: Final = (
    "trial",
    "trial_ended",
    "active",
    "paused",
    "awaiting_renewal",
    "renewal_grace",
    "cancelled",
    "lapsed",
)

STATES: Final = (
    State(
        "trial",
        "Free trial (14 d) with the chosen tier's features and trial quota",
        timers=(
            Timer(
                "trial_ending_soon",
                "trial_ending_soon",
                at="trial_ends_at",
                before="subscription.trial_reminder_before",
            ),
            Timer("trial_expired", "trial_expired", at="trial_ends_at"),
        ),
    ),
    State(
        "trial_ended",
        "Trial over, not converted. No access. 3 d to decide",
        attention=True,
        attention_reason="Trial ended without conversion: sales follow-up",
        timers=(Timer("decision_timeout", "decision_timeout", after="subscription.trial_decision_window"),),
    ),
    State(
        "active",
        "Paid and current",
        attention="subscription_tier_change_waiting",
        attention_reason="A tier change waits for a manager's approval",
        timers=(
            Timer(
                "renewal_reminder",
                "renewal_reminder",
                at="current_period_end",
                before="subscription.renewal_reminder_before",
                when="subscription_long_cycle",
            ),
            Timer(
                "renewal_due",
                "renewal_due",
                at="current_period_end",
                before="subscription.renewal_invoice_before",
            ),
            Timer("term_ended", "term_ended", at="current_period_end"),
        ),
    ),
    State(
        "paused",
        "Customer pause. Access suspended without losing data. At most 90 d per year",
        attention="subscription_pause_near_limit",
        attention_reason="The yearly pause allowance is nearly used up",
        timers=(Timer("pause_expired", "pause_expired", at="paused_until"),),
    ),
    State(
        "awaiting_renewal",
        "Renewal invoice out (period end − 7 d)",
        # S27: with auto-renew turned off here, S09 applies at period_end (term_ended).
        timers=(
            Timer("renewal_deadline_passed", "renewal_deadline_passed", at="current_period_end"),
            Timer("term_ended", "term_ended", at="current_period_end"),
        ),
    ),
    State(
        "renewal_grace",
        "Renewal payment failed. 7 d grace with access kept (past due)",
        attention=True,
        attention_reason="Past due: the renewal payment failed",
        timers=(Timer("grace_expired", "grace_expired", after="subscription.grace_period"),),
    ),
    State(
        "cancelled",
        "Ended. Auto-renew off. Reactivation possible for 30 d. Access until access_until",
        attention=True,
        attention_reason="Churn queue: reactivation is possible for 30 d",
        timers=(
            Timer("access_ended", "access_period_ended", at="access_until"),
            Timer("retention_expired", "retention_expired", after="subscription.retention_after_cancel"),
        ),
    ),
    State(
        "lapsed",
        "Retention period. Data prepared for deletion. No reactivation",
        timers=(
            Timer(
                "archive_for_compliance", "archive_for_compliance", after="subscription.lapsed_archive_after"
            ),
        ),
    ),
    # §4.1 marks archived "terminal (manual reset only)", but S25 leaves it and the engine forbids exits
    # from terminal states: it is not terminal here, and only S25 leaves it.
    State("archived", "Read-only record (manual reset only)", terminal=False),
)

_CANCEL_NOTICE = fx("notify_customer", template="subscription_cancelled")

TRANSITIONS: Final = (
    Transition(
        "S01",
        ("start_trial",),
        (),
        "trial",
        ("sys", "cascade"),
        guards=("subscription_first_trial",),
        inputs=(
            Input("tier", "code", required=False, choices=TIERS),
            Input("cycle", "code", required=False, choices=CYCLES),
            Input("auto_convert_trial", "bool", required=False),
        ),
        updates=("subscription_start_trial",),
        effects=(fx("notify_customer", template="trial_started"),),
    ),
    Transition(
        "S02",
        ("trial_ending_soon",),
        ("trial",),
        SAME,
        ("timer",),
        effects=(fx("notify_customer", template="trial_upgrade_prompt"),),
    ),
    Transition(
        "S03",
        ("purchase",),
        ("trial", "trial_ended"),
        "active",
        ("support", "sys"),
        guards=(
            "subscription_tier_not_free",
            "subscription_tier_has_list_price",
            "subscription_skus_on_sale",
            "subscription_payment_method_valid",
        ),
        inputs=(Input("tier", "code", choices=TIERS), Input("cycle", "code", choices=CYCLES)),
        updates=("subscription_purchase",),
        effects=(fx("notify_customer", template="subscription_started"),),
        title="Convert trial / start paid plan",
    ),
    # S04/S05 share the trial_expired timer (D-19): S04 converts when its guards hold, S05 otherwise.
    Transition(
        "S04",
        ("trial_expired",),
        ("trial",),
        "active",
        ("timer",),
        guards=(
            "subscription_auto_convert",
            "subscription_tier_not_free",
            "subscription_tier_has_list_price",
            "subscription_payment_method_valid",
        ),
        updates=("subscription_convert_trial",),
        effects=(fx("notify_customer", template="trial_converted"),),
    ),
    Transition(
        "S05",
        ("trial_expired",),
        ("trial",),
        "trial_ended",
        ("timer",),
        set={"trial_ended_at": "$now"},
        effects=(fx("notify_customer", template="trial_ended_incentive"),),
    ),
    Transition(
        "S06",
        ("cancel",),
        ("trial",),
        "cancelled",
        ("support", "sys"),
        inputs=(_REASON, _CHURN),
        updates=("subscription_cancel_now",),
        effects=(_CANCEL_NOTICE,),
        title="Cancel subscription",
    ),
    Transition(
        "S07",
        ("decline", "decision_timeout"),
        ("trial_ended",),
        "cancelled",
        ("support", "sys", "timer"),
        set={"cancellation_reason": "trial_not_converted"},
        updates=("subscription_cancel_now",),
        effects=(_CANCEL_NOTICE,),
        title="Record that the customer declined",
    ),
    Transition(
        "S08",
        ("renewal_due",),
        ("active",),
        "awaiting_renewal",
        ("timer",),
        guards=("subscription_auto_renew_on",),
        updates=("subscription_renewal_invoice",),
        effects=(fx("notify_customer", template="renewal_invoice"),),
    ),
    # S09 also runs from awaiting_renewal: S27 says that turning auto-renew off there voids the invoice
    # and "S09 applies at period_end".
    Transition(
        "S09",
        ("term_ended",),
        ("active", "awaiting_renewal"),
        "cancelled",
        ("timer",),
        guards=("subscription_auto_renew_off",),
        set={"cancellation_reason": "non_renewal"},
        updates=("subscription_cancel_at_period_end",),
        effects=(_CANCEL_NOTICE,),
    ),
    Transition(
        "S10",
        ("request_tier_change",),
        ("active",),
        SAME,
        ("support", "sys"),
        guards=(
            "subscription_tier_change_valid",
            "subscription_no_pending_change",
            "subscription_request_unseen",
        ),
        inputs=(Input("new_tier", "code", choices=TIERS, label="New tier"), Input("request_id", "code")),
        updates=("subscription_request_tier_change",),
        title="Request tier change",
    ),
    Transition(
        "S11",
        ("approve_tier_change",),
        ("active",),
        SAME,
        ("sys", "cascade", "manager"),
        guards=("subscription_has_pending_change", "subscription_tier_change_approvable"),
        inputs=(
            Input(
                "enterprise_price_cents",
                "cents",
                required=False,
                min=1,
                label="Enterprise price (cents/month)",
            ),
            Input("request_id", "code", required=False),
        ),
        updates=("subscription_apply_tier_change",),
        effects=(
            fx("notify_customer", template="tier_changed", proration_cents="$data.last_proration_cents"),
        ),
        title="Approve tier change",
    ),
    Transition(
        "S12",
        ("reject_tier_change",),
        ("active",),
        SAME,
        ("manager",),
        guards=("subscription_has_pending_change",),
        set={"pending_tier_change": None, "tier_change_request_id": None},
        effects=(fx("notify_customer", template="tier_change_rejected"),),
        title="Reject tier change",
    ),
    Transition(
        "S13",
        ("pause",),
        ("active",),
        "paused",
        ("support", "sys"),
        guards=("subscription_pause_allowed",),
        inputs=(_DAYS,),
        updates=("subscription_pause",),
        effects=(fx("notify_customer", template="subscription_paused"),),
        title="Pause subscription",
    ),
    Transition(
        "S14",
        ("resume", "pause_expired"),
        ("paused",),
        "active",
        ("support", "sys", "timer"),
        updates=("subscription_resume",),
        effects=(fx("notify_customer", template="subscription_resumed"),),
        title="Resume subscription",
    ),
    Transition(
        "S15",
        ("cancel",),
        ("active", "paused", "awaiting_renewal"),
        "cancelled",
        ("support", "sys"),
        inputs=(_REASON, _CHURN),
        updates=("subscription_cancel_at_period_end",),
        effects=(_CANCEL_NOTICE, fx("notify_customer", template="churn_offer")),
        title="Cancel subscription",
    ),
    Transition(
        "S16",
        ("renewal_paid",),
        ("awaiting_renewal",),
        "active",
        ("cascade",),
        guards=("subscription_renewal_payment",),
        updates=("subscription_renewed",),
        effects=(fx("notify_customer", template="renewal_receipt"),),
    ),
    Transition(
        "S17",
        ("renewal_payment_failed",),
        ("awaiting_renewal",),
        "renewal_grace",
        ("cascade",),
        updates=("subscription_grace",),
        effects=(fx("notify_customer", template="renewal_payment_failed", urgent=True),),
    ),
    Transition(
        "S18",
        ("renewal_deadline_passed",),
        ("awaiting_renewal",),
        "renewal_grace",
        ("timer",),
        guards=("subscription_auto_renew_on", "subscription_renewal_unpaid"),
        updates=("subscription_grace",),
        effects=(fx("notify_customer", template="renewal_payment_failed", urgent=True),),
    ),
    Transition(
        "S19",
        ("payment_recovered",),
        ("renewal_grace",),
        "active",
        ("cascade",),
        guards=("subscription_renewal_payment",),
        updates=("subscription_renewed",),
        effects=(fx("notify_customer", template="payment_recovered"),),
    ),
    Transition(
        "S20",
        ("grace_expired",),
        ("renewal_grace",),
        "cancelled",
        ("timer",),
        set={"cancellation_reason": "nonpayment"},
        updates=("subscription_cancel_now",),
        effects=(fx("notify_customer", template="cancelled_nonpayment"),),
    ),
    Transition(
        "S21",
        ("cancel",),
        ("renewal_grace",),
        "cancelled",
        ("support", "sys"),
        inputs=(_REASON, _CHURN),
        updates=("subscription_cancel_now",),
        effects=(_CANCEL_NOTICE,),
        title="Cancel subscription",
    ),
    Transition(
        "S22",
        ("reactivate",),
        ("cancelled",),
        "active",
        ("support", "sys", "cascade"),
        guards=("subscription_reactivation_open",),
        updates=("subscription_reactivate",),
        effects=(fx("notify_customer", template="subscription_reactivated"),),
        title="Reactivate subscription",
    ),
    Transition(
        "S23",
        ("retention_expired",),
        ("cancelled",),
        "lapsed",
        ("timer",),
        set={"lapsed_at": "$now"},
        effects=(fx("subscription_prepare_deletion"),),
    ),
    Transition(
        "S24",
        ("archive_for_compliance",),
        ("lapsed",),
        "archived",
        ("timer", "compliance"),
        set={"archived_at": "$now"},
        effects=(fx("subscription_freeze"),),
        title="Archive for compliance",
    ),
    Transition(
        "S25",
        ("manual_reset",),
        ("archived",),
        "active",
        ("admin",),
        four_eyes=FourEyes(approvers=("admin", "manager")),
        inputs=(Input("incident_ref", "text", label="Incident ref"),),
        updates=("subscription_manual_reset",),
        title="Manual reset of archived subscription",
    ),
    # S26: "already-cancelled stays" is the same row: target == source is a self-transition.
    Transition(
        "S26",
        ("account_closed",),
        ("active", "paused", "awaiting_renewal", "renewal_grace", "cancelled"),
        "cancelled",
        ("cascade",),
        updates=("subscription_account_closed",),
        effects=(_CANCEL_NOTICE,),
    ),
    Transition(
        "S27",
        ("toggle_auto_renew",),
        _NOT_ARCHIVED,
        SAME,
        ("support", "sys"),
        inputs=(Input("auto_renew", "bool", label="Auto-renew on"),),
        set={"auto_renew": "$payload.auto_renew"},
        # The renewal timers are re-evaluated against the new setting (their guards read auto_renew).
        rearm=("renewal_reminder", "renewal_due", "term_ended", "renewal_deadline_passed"),
        title="Toggle auto-renew",
    ),
    # ---- events the spec implies but does not number.
    Transition(
        "Sx1",
        ("retention_archive",),
        _NOT_ARCHIVED,
        "archived",
        ("cascade",),
        set={"archived_at": "$now"},
        effects=(fx("subscription_freeze"),),
        doc="X25: Compliance data retention makes the subscription read-only (must-apply).",
    ),
    Transition(
        "Sx2",
        ("price_changed",),
        _NOT_ARCHIVED,
        SAME,
        ("cascade",),
        updates=("subscription_price_changed",),
        effects=(fx("notify_customer", template="price_change_notice", price_cents="$payload.price_cents"),),
        doc="X37: a catalog price change applies from the next renewal invoice (S08).",
    ),
    Transition(
        "Sx3",
        ("sku_withdrawn",),
        _NOT_ARCHIVED,
        SAME,
        ("cascade",),
        set={"withdrawn_sku": "$payload.sku_id"},
        effects=(
            fx("notify_customer", template="sku_withdrawn", replacement_sku="$payload.replacement_sku"),
        ),
        doc="X36: a SKU of the plan was deprecated or archived; purchases of it are refused (S03).",
    ),
    Transition(
        "Sx4",
        ("extend_trial",),
        ("trial",),
        SAME,
        ("support",),
        guards=("subscription_trial_extendable",),
        inputs=(_DAYS,),
        updates=("subscription_extend_trial",),
        effects=(fx("notify_customer", template="trial_extended"),),
        title="Extend trial",
        doc="§11 #30: once, at most 14 days; the trial timers follow the moved trial_ends_at.",
    ),
    Transition(
        "Sx5",
        ("renewal_reminder",),
        ("active",),
        SAME,
        ("timer",),
        guards=("subscription_long_cycle",),
        effects=(fx("notify_customer", template="renewal_reminder"),),
        doc="S08 / D-18: annual and longer cycles also get a reminder at period_end − 30 d.",
    ),
    Transition(
        "Sx6",
        ("access_period_ended",),
        ("cancelled",),
        SAME,
        ("timer",),
        effects=(fx("notify_customer", template="access_ended"),),
        doc="The cancelled subscription reaches access_until: X32 ends the entitlements.",
    ),
)

_CHARGE = {
    "kind": "$data.charge_kind",
    "amount_cents": "$data.charge_cents",
    "currency": "$setting.subscription.currency",
    "subscription_id": "$instance.id",
}
_TIER = {"tier": "$data.tier", "subscription_id": "$instance.id"}
_PERIOD_END = {"expires_at": "$data.current_period_end"}

CASCADES: Final = (
    # X01: one entitlement request per SKU of the tier (payload item = sku id).
    Cascade(
        "X01",
        ("S01", "S03"),
        "entitlement",
        "entitlement_requested",
        select="new",
        fan_out="$data.skus",
        payload=_TIER,
    ),
    # X02: the trial's quota.
    Cascade(
        "X02",
        ("S01",),
        "quota_sla",
        "allocate",
        select="upsert",
        create_event="allocate",
        payload={"tier": "$data.tier", "trial": True},
    ),
    # X03: purchase, conversion, renewal, tier-change proration (S11), reactivation and reset.
    Cascade(
        "X03",
        ("S03", "S04", "S08", "S11", "S22", "S25"),
        "billing",
        "cycle_begin",
        select="new",
        when="subscription_has_charge",
        payload=_CHARGE,
        must=True,
    ),
    # X07: grace expired; every active entitlement gets the payment_failed hold.
    Cascade(
        "X07",
        ("S20",),
        "entitlement",
        "suspend",
        where="entitlement_can_take_hold",
        payload={"hold": "payment_failed"},
    ),
    # X08: access ends now: void the invoices not issued yet.
    Cascade("X08", ("S20", "S21", "S26"), "billing", "void_invoice", where="subscription_invoice_unissued"),
    # X30: tier set or changed.
    Cascade("X30", ("S03", "S04", "S11"), "quota_sla", "tier_upgraded", payload=_TIER),
    Cascade(
        "X30",
        ("S03", "S04", "S11"),
        "entitlement",
        "update_features",
        where="entitlement_is_open",
        payload=_TIER,
    ),
    Cascade("X30", ("S03", "S04", "S11"), "multi_tenant", "set_tier_weight", payload={"tier": "$data.tier"}),
    # X31: pause / resume.
    Cascade(
        "X31",
        ("S13",),
        "entitlement",
        "suspend",
        where="entitlement_can_take_hold",
        payload={"hold": "subscription_paused"},
    ),
    Cascade(
        "X31",
        ("S14",),
        "entitlement",
        "lift_hold",
        where="entitlement_has_payload_hold",
        payload={"hold": "subscription_paused"},
    ),
    # X32 / X33: access over (cancelled reaching access_until; trial ended).
    Cascade(
        "X32",
        ("Sx6",),
        "entitlement",
        "period_ended",
        where="entitlement_is_active",
        payload={"ends_at": "$data.access_until"},
    ),
    Cascade(
        "X33",
        ("S05",),
        "entitlement",
        "period_ended",
        where="entitlement_is_active",
        payload={"ends_at": "$data.trial_ends_at"},
    ),
    # X34: reactivated, or bought from trial_ended.
    Cascade(
        "X34",
        ("S03", "S22"),
        "entitlement",
        "reactivate",
        where="entitlement_is_expired",
        payload=_PERIOD_END,
    ),
    Cascade(
        "X34",
        ("S22",),
        "entitlement",
        "request_reinstatement",
        where="entitlement_cancelled_by_subscription",
        payload={"auto_approve": True},
    ),
    Cascade(
        "X34",
        ("S22",),
        "entitlement",
        "approve_reinstatement",
        where="entitlement_reinstatement_waiting",
        payload={"auto_approve": True},
    ),
    # X35: the period advanced.
    Cascade(
        "X35",
        ("S14", "S16", "S19", "S22"),
        "entitlement",
        "extend_expiry",
        where="entitlement_is_open",
        payload=_PERIOD_END,
    ),
    # ---- [I] additions.
    Cascade(
        "Xi2",
        ("S10",),
        "subscription",
        "approve_tier_change",
        select="self",
        when="subscription_auto_approvable",
        doc="S11 'sys auto (non-enterprise)': a change to a listed tier is approved at once.",
    ),
    Cascade(
        "Xi3",
        ("S03", "S04", "S25"),
        "entitlement",
        "extend_expiry",
        where="entitlement_is_open",
        payload=_PERIOD_END,
        doc="A paid period starts (conversion, reset): the entitlements get the new paid-through date.",
    ),
    Cascade(
        "Xi4",
        ("S11", "S25"),
        "entitlement",
        "entitlement_requested",
        select="new",
        fan_out="$data.skus",
        payload=_TIER,
        doc="A new tier (or a reset) may include SKUs the customer has no entitlement for yet; E01 refuses "
        "the SKUs that already have one.",
    ),
    Cascade(
        "Xi5",
        ("S27",),
        "billing",
        "void_invoice",
        where="subscription_invoice_unissued",
        when="subscription_voids_renewal",
        doc="S27: auto-renew turned off in awaiting_renewal voids the renewal invoice (if not issued yet).",
    ),
    Cascade(
        "Xi6",
        ("S15",),
        "entitlement",
        "lift_hold",
        where="entitlement_has_payload_hold",
        payload={"hold": "subscription_paused"},
        doc="Cancelling a paused subscription ends the pause: access runs to access_until, then X32.",
    ),
)

GOVERNOR: Final = Governor(
    name="subscription",
    title="Subscription",
    description="The customer's commercial relationship: trial, renewals, grace, pause, tier changes (§4).",
    instance_of="subscription",
    states=STATES,
    transitions=TRANSITIONS,
    cascades=CASCADES,
)
