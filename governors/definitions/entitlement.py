"""Entitlement governor (GOVERNORS.md §1): may this customer use this SKU's features right now?

One instance per (customer, SKU). It gates feature access from approval through suspension, expiry,
cancellation and refund to archive. Suspension causes are a set of holds (D-05): payment_failed and
tos_violation arm the 72 h suspension timer; every other hold freezes it while present.

Data kept by the rows: sku_id, tier, features, subscription_id, expires_at (paid-through date),
holds (oldest first), suspended_at, needs_review / escalation_level, approval_clock_started,
cancellation_reason, cancelled_at, expired_at, refund_due_cents, refund_request_id,
refund_amount_cents, refunded_cents, refund_issue (disputed / overdue), refund_decision,
reinstatement_requested_at, reinstatement_auto.
"""

from __future__ import annotations

from typing import Any, Final

from governors.spec import ANY, SAME, STAFF, Cascade, FourEyes, Governor, Input, State, Timer, Transition, fx

HOLDS: Final = (
    "payment_failed",
    "tos_violation",
    "fraud",
    "compliance_hold",
    "account_locked",
    "account_suspended",
    "account_review",
    "subscription_paused",
)
"""Every hold an entitlement may carry (§1 Data)."""

DENY_REASONS: Final = ("tos_violation", "fraud", "compliance", "marketplace_rejected", "other")
"""E03: the reason codes of a denial."""

SETTINGS: dict[str, Any] = {
    # pending_approval (E05, E06; D-02): escalate at 24 h and 48 h, decide at 72 h.
    "entitlement.approval_escalation_1_after": "24h",
    "entitlement.approval_escalation_2_after": "48h",
    "entitlement.approval_final_after": "72h",
    "entitlement.escalation_1_response_target": "4h",
    "entitlement.escalation_2_response_target": "1h",
    "entitlement.approve_on_timeout": False,
    # suspended (E11, D-05): the timer runs only while every hold is timer-arming.
    "entitlement.suspension_timeout": "72h",
    "entitlement.timer_arming_holds": ["payment_failed", "tos_violation"],
    # E07–E10 / §11 #3–4: the holds a staff role may place or lift (cascades may use any hold).
    # E07 names manager for tos_violation and fraud, §11 gives fraud to compliance: both may place
    # fraud (protective), only compliance lifts fraud and compliance holds.
    "entitlement.staff_suspend_holds": {
        "manager": ["tos_violation", "fraud"],
        "compliance": ["fraud", "compliance_hold"],
    },
    "entitlement.staff_lift_holds": {
        "manager": ["tos_violation"],
        "compliance": ["fraud", "compliance_hold"],
    },
    # expired (E15–E17).
    "entitlement.expiry_archive_after": "30d",
    "entitlement.expired_reactivation_window": "30d",
    # cancelled (E19, E20).
    "entitlement.refund_window": "14d",
    "entitlement.reinstatement_request_window": "14d",
    # reinstate_pending (E23) and refund_issued (E27, D-06).
    "entitlement.reinstatement_timeout": "7d",
    "entitlement.refund_overdue_after": "14d",
    # E01: catalog states in which a SKU can be requested.
    "entitlement.requestable_sku_states": ["published", "featured"],
    # X34 [I]: cancellation reasons that a subscription reactivation reinstates automatically.
    "entitlement.auto_reinstate_reasons": ["payment_failed", "account_closed"],
}

_PENDING_TIMER = "entitlement_approval_clock_running"
_HOLD = Input("hold", "code", choices=HOLDS)
_NOTE = Input("note", "text", required=STAFF, label="Note")
_OPEN_STATES: Final = (
    "pending_approval",
    "active",
    "suspended",
    "expired",
    "cancelled",
    "refund_issued",
    "reinstate_pending",
)

STATES: Final = (
    State(
        "pending_approval",
        "Created. Waiting for the approval service or a manager. No access",
        attention="entitlement_needs_review",
        attention_reason="Waiting for approval for more than 24 h",
        # E01: the clock starts at creation, or at X18 (KYC passed) for an onboarding account.
        timers=(
            Timer(
                "approval_escalation_1",
                "approval_escalation",
                after="entitlement.approval_escalation_1_after",
                when=_PENDING_TIMER,
                payload={
                    "level": 1,
                    "queue": "manager",
                    "response_target": "$setting.entitlement.escalation_1_response_target",
                },
            ),
            Timer(
                "approval_escalation_2",
                "approval_escalation",
                after="entitlement.approval_escalation_2_after",
                when=_PENDING_TIMER,
                payload={
                    "level": 2,
                    "queue": "admin",
                    "response_target": "$setting.entitlement.escalation_2_response_target",
                },
            ),
            Timer(
                "approval_final_timeout",
                "approval_final_timeout",
                after="entitlement.approval_final_after",
                when=_PENDING_TIMER,
            ),
        ),
    ),
    State("active", "Features enabled"),
    State(
        "suspended",
        "Access revoked while at least one hold is present. Data kept",
        attention=True,
        attention_reason="Suspended: lift the holds or escalate to cancellation",
        timers=(
            Timer(
                "suspension_timeout",
                "suspension_timeout",
                after="entitlement.suspension_timeout",
                when="entitlement_all_holds_timer_arming",
            ),
        ),
    ),
    State(
        "expired",
        "Paid period ended without renewal. No access. Kept 30 d",
        timers=(
            Timer(
                "expiry_archive_timeout", "expiry_archive_timeout", after="entitlement.expiry_archive_after"
            ),
        ),
    ),
    State(
        "cancelled",
        "Ended early. No access. 14 d refund/reinstatement window",
        attention="entitlement_refund_awaiting",
        attention_reason="A refund request is waiting for a finance decision",
        # The archive timer is paused while a refund request awaits finance (E20's guard), so a
        # pending refund is never stranded; a decision (E18 or Ex5) lets it run on.
        timers=(
            Timer(
                "refund_window_timeout",
                "refund_window_timeout",
                after="entitlement.refund_window",
                when="entitlement_no_refund_awaiting",
            ),
        ),
    ),
    State(
        "refund_issued",
        "Refund sent to the processor, awaiting settlement",
        attention="entitlement_refund_trouble",
        attention_reason="The refund is disputed or overdue: finance to follow up",
        timers=(Timer("refund_overdue", "refund_overdue", after="entitlement.refund_overdue_after"),),
    ),
    State(
        "reinstate_pending",
        "Restoring a cancelled entitlement was asked for. Waiting for a decision (7 d)",
        attention=True,
        attention_reason="A reinstatement waits for a manager's decision",
        timers=(
            Timer(
                "reinstatement_timeout", "reinstatement_timeout", after="entitlement.reinstatement_timeout"
            ),
        ),
    ),
    State("archived", "Frozen record", terminal=True),
)

_APPROVE_GUARDS: Final = ("entitlement_account_active", "entitlement_compliance_clear")
_GRANT = fx("entitlement_grant_access")
_REVOKE = fx("entitlement_revoke_access")
_REFUND_REQUEST = fx("entitlement_open_refund_request", amount_cents="$data.refund_due_cents")

TRANSITIONS: Final = (
    Transition(
        "E01",
        ("entitlement_requested",),
        (),
        "pending_approval",
        ("cascade",),
        guards=("entitlement_sku_offered", "entitlement_unique_for_sku", "entitlement_account_open"),
        updates=("entitlement_init",),
        doc="X01 fans out one request per SKU of the tier (the SKU arrives as payload 'item').",
    ),
    Transition(
        "E02",
        ("approve",),
        ("pending_approval",),
        "active",
        ("sys", "manager", "admin"),
        requesters=("support",),
        guards=_APPROVE_GUARDS,
        inputs=(_NOTE,),
        updates=("entitlement_activate",),
        effects=(_GRANT, fx("notify_customer", template="entitlement_activated")),
        title="Approve pending entitlement",
    ),
    Transition(
        "E03",
        ("deny",),
        ("pending_approval",),
        "cancelled",
        ("sys", "manager", "compliance"),
        inputs=(Input("reason_code", "code", choices=DENY_REASONS, label="Reason code"), _NOTE),
        updates=("entitlement_cancel_pending",),
        effects=(fx("notify_customer", template="entitlement_denied"), _REFUND_REQUEST),
        title="Deny entitlement",
    ),
    Transition(
        "E04",
        ("customer_cancel",),
        ("pending_approval",),
        "cancelled",
        ("support",),
        updates=("entitlement_cancel_pending",),
        effects=(fx("notify_customer", template="entitlement_cancelled"), _REFUND_REQUEST),
        title="Cancel pending entitlement (customer request)",
    ),
    Transition(
        "E05",
        ("approval_escalation",),
        ("pending_approval",),
        SAME,
        ("timer",),
        updates=("entitlement_escalate",),
        effects=(
            fx(
                "notify_staff",
                queue="$payload.queue",
                template="entitlement_approval_overdue",
                response_target="$payload.response_target",
            ),
        ),
        doc="Two timers fire this event: 24 h (manager queue, 4 h target), 48 h (admin queue, 1 h target).",
    ),
    # E06 splits on the approve_on_timeout setting (D-02): E06b approves when it is on and E02's guard
    # holds; otherwise (E06, the default) the final timeout cancels.
    Transition(
        "E06b",
        ("approval_final_timeout",),
        ("pending_approval",),
        "active",
        ("timer",),
        guards=("entitlement_approve_on_timeout", *_APPROVE_GUARDS),
        updates=("entitlement_activate",),
        effects=(
            _GRANT,
            fx("notify_customer", template="entitlement_activated"),
            fx("audit_note", note="auto-decision: approved on the final approval timeout"),
        ),
    ),
    Transition(
        "E06",
        ("approval_final_timeout",),
        ("pending_approval",),
        "cancelled",
        ("timer",),
        updates=("entitlement_cancel_pending",),
        effects=(
            fx("notify_customer", template="entitlement_approval_timed_out"),
            fx("audit_note", note="auto-decision: cancelled on the final approval timeout"),
            _REFUND_REQUEST,
        ),
    ),
    Transition(
        "E07",
        ("suspend",),
        ("active",),
        "suspended",
        ("cascade", "manager", "compliance"),
        guards=("entitlement_hold_permitted",),
        inputs=(_HOLD, Input("evidence", "text", required=STAFF)),
        updates=("entitlement_add_hold",),
        effects=(_REVOKE, fx("notify_customer", template="entitlement_suspended", hold="$payload.hold")),
        title="Suspend entitlement",
    ),
    Transition(
        "E08",
        ("suspend",),
        ("suspended",),
        SAME,
        ("cascade", "manager", "compliance"),
        guards=("entitlement_hold_permitted", "entitlement_hold_absent"),
        inputs=(_HOLD, Input("evidence", "text", required=STAFF)),
        updates=("entitlement_add_hold",),
        title="Add a hold",
    ),
    Transition(
        "E09",
        ("lift_hold",),
        ("suspended",),
        "active",
        ("cascade", "manager", "compliance"),
        guards=("entitlement_hold_permitted", "entitlement_hold_present", "entitlement_lift_clears_all"),
        inputs=(_HOLD,),
        updates=("entitlement_remove_hold",),
        effects=(_GRANT, fx("notify_customer", template="suspension_lifted")),
        title="Lift hold",
    ),
    Transition(
        "E10",
        ("lift_hold",),
        ("suspended",),
        SAME,
        ("cascade", "manager", "compliance"),
        guards=("entitlement_hold_permitted", "entitlement_hold_present", "entitlement_lift_leaves_others"),
        inputs=(_HOLD,),
        updates=("entitlement_remove_hold",),
        title="Lift hold",
    ),
    Transition(
        "E11",
        ("suspension_timeout",),
        ("suspended",),
        "cancelled",
        ("timer",),
        guards=("entitlement_all_holds_timer_arming",),
        updates=("entitlement_cancel_suspended",),
        effects=(fx("notify_customer", template="entitlement_cancelled"), _REFUND_REQUEST),
    ),
    Transition(
        "E12",
        ("escalate_to_cancellation",),
        ("suspended",),
        "cancelled",
        ("manager", "cascade"),
        updates=("entitlement_cancel_suspended",),
        effects=(fx("notify_customer", template="entitlement_cancelled"), _REFUND_REQUEST),
        title="Escalate suspension to cancellation",
    ),
    Transition(
        "E13",
        ("period_ended",),
        ("active",),
        "expired",
        ("cascade",),
        guards=("entitlement_period_over",),
        updates=("entitlement_expire",),
        effects=(_REVOKE, fx("notify_customer", template="renewal_offer")),
    ),
    Transition(
        "E14",
        ("cancel_early",),
        ("active",),
        "cancelled",
        ("support", "cascade"),
        inputs=(Input("confirmation_ref", "text", required=STAFF, label="Customer confirmation ref"),),
        updates=("entitlement_cancel_active",),
        effects=(_REVOKE, fx("notify_customer", template="entitlement_cancelled"), _REFUND_REQUEST),
        title="Cancel entitlement early (customer request)",
    ),
    Transition(
        "E15",
        ("reactivate",),
        ("expired",),
        "active",
        ("cascade",),
        guards=("entitlement_expired_recently", "entitlement_subscription_active"),
        updates=("entitlement_reactivate",),
        effects=(_GRANT, fx("notify_customer", template="entitlement_reactivated")),
    ),
    Transition(
        "E16",
        ("refund_requested",),
        ("expired",),
        "cancelled",
        ("support",),
        guards=("entitlement_expired_recently",),
        updates=("entitlement_refund_last_period",),
        effects=(_REFUND_REQUEST,),
        title="Request a refund for the last period",
    ),
    Transition(
        "E17",
        ("expiry_archive_timeout",),
        ("expired",),
        "archived",
        ("timer",),
        set={"archived_at": "$now"},
    ),
    Transition(
        "E18",
        ("approve_refund",),
        ("cancelled",),
        "refund_issued",
        ("finance",),
        four_eyes=FourEyes(approvers=("finance", "manager")),
        guards=("entitlement_refund_amount_ok",),
        inputs=(
            Input("amount_cents", "cents", min=1, label="Amount (cents)"),
            Input("reason_code", "code", label="Reason code"),
        ),
        updates=("entitlement_approve_refund",),
        effects=(
            fx(
                "entitlement_process_refund",
                entitlement_id="$instance.id",
                refund_request_id="$data.refund_request_id",
                amount_cents="$payload.amount_cents",
            ),
        ),
        title="Approve entitlement refund",
    ),
    Transition(
        "E19",
        ("request_reinstatement",),
        ("cancelled",),
        "reinstate_pending",
        ("support", "cascade"),
        guards=(
            "entitlement_cancelled_recently",
            "entitlement_not_fraud",
            "entitlement_account_active",
        ),
        inputs=(_NOTE,),
        updates=("entitlement_request_reinstatement",),
        effects=(fx("notify_staff", queue="manager", template="reinstatement_requested"),),
        title="Request reinstatement",
    ),
    Transition(
        "E20",
        ("refund_window_timeout",),
        ("cancelled",),
        "archived",
        ("timer",),
        guards=("entitlement_no_refund_awaiting",),
        set={"archived_at": "$now"},
    ),
    Transition(
        "E21",
        ("approve_reinstatement",),
        ("reinstate_pending",),
        "active",
        ("manager", "admin", "cascade"),
        guards=("entitlement_account_active", "entitlement_subscription_active"),
        inputs=(_NOTE,),
        updates=("entitlement_reinstate",),
        effects=(_GRANT, fx("notify_customer", template="entitlement_reinstated")),
        title="Approve reinstatement",
    ),
    Transition(
        "E22",
        ("reject_reinstatement",),
        ("reinstate_pending",),
        "cancelled",
        ("manager",),
        inputs=(_NOTE,),
        updates=("entitlement_reinstatement_refused",),
        effects=(fx("notify_customer", template="reinstatement_rejected"),),
        title="Reject reinstatement",
    ),
    Transition(
        "E23",
        ("reinstatement_timeout",),
        ("reinstate_pending",),
        "cancelled",
        ("timer",),
        updates=("entitlement_reinstatement_refused",),
        effects=(fx("notify_customer", template="reinstatement_rejected", auto=True),),
    ),
    Transition(
        "E24",
        ("refund_completed",),
        ("refund_issued",),
        "archived",
        ("sys",),
        guards=("entitlement_refund_matches",),
        inputs=(Input("refund_request_id", "text"), Input("settlement_ref", "text", required=False)),
        updates=("entitlement_refund_completed",),
        effects=(
            fx(
                "entitlement_ledger_entry",
                amount_cents="$data.refund_amount_cents",
                reference="$payload.settlement_ref",
            ),
        ),
        set={"archived_at": "$now"},
    ),
    Transition(
        "E25",
        ("refund_failed",),
        ("refund_issued",),
        "cancelled",
        ("sys",),
        updates=("entitlement_refund_failed",),
        effects=(fx("notify_staff", queue="finance", template="entitlement_refund_failed"),),
    ),
    Transition(
        "E26",
        ("refund_disputed",),
        ("refund_issued",),
        SAME,
        ("sys", "support"),
        set={"refund_issue": "disputed"},
        effects=(fx("notify_staff", queue="finance", template="entitlement_refund_disputed"),),
        title="Record refund dispute",
    ),
    Transition(
        "E27",
        ("refund_overdue",),
        ("refund_issued",),
        SAME,
        ("timer",),
        set={"refund_issue": "overdue"},
        effects=(fx("notify_staff", queue="finance", template="entitlement_refund_overdue"),),
        doc="D-06: escalate, never archive an unsettled refund.",
    ),
    Transition(
        "E28",
        ("archive",),
        (ANY,),
        "archived",
        ("admin", "cascade"),
        four_eyes=FourEyes(approvers=("compliance",)),
        guards=("entitlement_no_refund_pending",),
        effects=(_REVOKE,),
        set={"archived_at": "$now"},
        title="Archive entitlement",
        doc="X25 (data retention) sends it as a must-apply cascade; a staff archive needs compliance.",
    ),
    # ---- events the spec implies but does not number.
    Transition(
        "Ex1",
        ("start_approval_clock",),
        ("pending_approval",),
        SAME,
        ("cascade",),
        set={"approval_clock_started": True},
        doc="X18: KYC passed; the paused approval timers start now (E01's clock start).",
    ),
    Transition(
        "Ex2",
        ("update_features",),
        (ANY,),
        SAME,
        ("cascade",),
        updates=("entitlement_update_features",),
        effects=(fx("entitlement_refresh_features", tier="$data.tier"),),
        doc="X30: the subscription's tier changed; the feature set follows.",
    ),
    Transition(
        "Ex3",
        ("extend_expiry",),
        (ANY,),
        SAME,
        ("cascade",),
        inputs=(Input("expires_at", "datetime"),),
        set={"expires_at": "$payload.expires_at"},
        doc="X35: the subscription's period advanced; keeps E13 from firing after a paid renewal.",
    ),
    Transition(
        "Ex4",
        ("sku_withdrawn",),
        (ANY,),
        SAME,
        ("cascade",),
        set={"sku_withdrawal": "$payload.withdrawal", "replacement_sku": "$payload.replacement_sku"},
        effects=(
            fx("notify_customer", template="sku_withdrawn", replacement_sku="$payload.replacement_sku"),
        ),
        doc="X36: the SKU was deprecated or archived; the entitlement continues, the holder is told.",
    ),
    Transition(
        "Ex5",
        ("decline_refund",),
        ("cancelled",),
        SAME,
        ("finance",),
        guards=("entitlement_refund_awaiting",),
        updates=("entitlement_decline_refund",),
        effects=(fx("notify_customer", template="refund_declined"),),
        title="Decline entitlement refund",
        doc="[I] The cancelled attention reads 'refund_due > 0 and no decision yet': a decision can also be "
        "no. Without it a refund request nobody approves would block E20 and E28 forever.",
    ),
)

CASCADES: Final = (
    # X04: an activated entitlement allocates the tier's quota and registers the tenant's weight.
    Cascade(
        "X04",
        ("E02", "E06b"),
        "quota_sla",
        "allocate",
        select="upsert",
        create_event="allocate",
        payload={"tier": "$data.tier", "sku_id": "$data.sku_id"},
    ),
    Cascade(
        "X04",
        ("E02", "E06b"),
        "multi_tenant",
        "register_tenant",
        select="upsert",
        create_event="register_tenant",
        payload={"tier": "$data.tier"},
    ),
    Cascade(
        "Xi1",
        ("E19",),
        "entitlement",
        "approve_reinstatement",
        select="self",
        when="entitlement_auto_reinstate",
        doc="[I] E21's 'sys auto' approval: cancelled for payment_failed and the overdue invoice is paid, "
        "or asked by a subscription reactivation (X34, payload auto_approve).",
    ),
)

GOVERNOR: Final = Governor(
    name="entitlement",
    title="Entitlement",
    description="Whether a customer may use a given SKU's features right now (§1).",
    instance_of="customer_sku",
    states=STATES,
    transitions=TRANSITIONS,
    cascades=CASCADES,
    multiple=True,
)
