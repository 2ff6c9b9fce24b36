"""Customer Account governor (GOVERNORS.md §5): who the customer is and whether they may act at all.

Onboarding/KYC, adaptive fraud scoring (§5.3 band table, D-26), abuse handling, security lockdown with a
set of lock reasons, human review, deactivation and the GDPR archive. One instance per customer; the
signup (A01) also starts the trial subscription and enrols the customer in Compliance & Audit.

Data kept by the rows: email_verified, profile_completed, is_verified (KYC), fraud_score (0–100),
monitoring_every / next_fraud_check_at (adaptive check), fraud_monitoring (X22), suspension_causes,
abuse_reports, lock_reasons (a set, stored sorted), lock_overdue, banned, delinquent, kyc_reverification,
deactivated_at / deactivation_cause, payment_method_fingerprints.
"""

from __future__ import annotations

from typing import Any, Final

from governors.spec import ANY, SAME, STAFF, Cascade, FourEyes, Governor, Input, State, Timer, Transition, fx

LOCK_REASONS: Final = (
    "unauthorized_access",
    "compromised_account",
    "chargeback",
    "kyc_failed_3x",
    "compliance",
    "manual",
)
"""A11: the only reasons an account may be locked for."""

ACCOUNT_HOLDS: Final = ("account_locked", "account_suspended", "account_review")
"""Entitlement holds this governor places and lifts (X12–X15)."""

_STAFF_LOCKERS: Final = ("support", "manager", "admin", "compliance")

SETTINGS: dict[str, object] = {
    # Timers (§5.3).
    "customer_account.onboarding_window": "7d",
    "customer_account.suspension_window": "30d",
    "customer_account.review_window": "14d",
    "customer_account.review_reminder_after": "10d",
    "customer_account.deactivated_retention": "30d",
    "customer_account.locked_attention_after": "7d",
    # A24 / A04: reactivation window, and the shorter KYC resubmission window [R].
    "customer_account.reactivation_window": "30d",
    "customer_account.kyc_resubmission_window": "7d",
    # Fraud bands (§5.3, D-26): 0–30 low, 31–70 medium, 71–90 high, 91–100 critical.
    "customer_account.fraud_low_max": 30,
    "customer_account.fraud_medium_max": 70,
    "customer_account.fraud_high_max": 90,
    # Adaptive check interval per band; suspended accounts and X22 monitoring check daily.
    "customer_account.fraud_check_every_low": "7d",
    "customer_account.fraud_check_every_medium": "3d",
    "customer_account.fraud_check_every_high": "1d",
    # A22 (D-27): the review timeout is "ban-like" in the sources; configurable.
    "customer_account.review_timeout_bans": True,
    # X24: lock reasons a system unlock may clear (everything else needs a manual A13).
    "customer_account.compliance_owned_lock_reasons": ["compliance"],
    # Sub-operation: the processor validation of a new payment method must be this recent (§5.2).
    "customer_account.payment_method_validation_window": "5m",
}

_OPEN_TO_SUB_OPS: Final = ("onboarding", "active", "suspended", "locked")

STATES: Final = (
    State(
        "onboarding",
        "Signed up. Email, profile and KYC still pending (7 d)",
        attention="account_kyc_in_manual_review",
        attention_reason="KYC is waiting for a manual review",
        timers=(
            Timer("onboarding_timeout", "onboarding_timeout", after="customer_account.onboarding_window"),
        ),
    ),
    State(
        "active",
        "Normal operation. Continuous fraud monitoring",
        timers=(Timer("fraud_check", "fraud_check_due", at="next_fraud_check_at"),),
    ),
    State(
        "suspended",
        "Operations blocked (fraud score 71–90, abuse). 30 d to resolve",
        attention=True,
        attention_reason="Suspended: resolve, accept an appeal or escalate to review",
        timers=(
            Timer("suspension_timeout", "suspension_timeout", after="customer_account.suspension_window"),
            Timer("fraud_check", "fraud_check_due", at="next_fraud_check_at"),
        ),
    ),
    State(
        "under_review",
        "Human fraud/compliance review (14 d)",
        attention=True,
        attention_reason="Fraud/compliance review waiting for a decision",
        timers=(
            Timer("review_timeout", "review_timeout", after="customer_account.review_window"),
            Timer("review_reminder", "review_reminder", after="customer_account.review_reminder_after"),
        ),
    ),
    # §5.1 says "attention: yes"; §5.3 narrows it to "locked for more than 7 d" [I]. We follow §5.3:
    # a timer sets lock_overdue after 7 d (Ax8) and the attention guard reads it.
    State(
        "locked",
        "Security lockdown: all access revoked at once, manual unlock only",
        attention="account_lock_overdue",
        attention_reason="Locked for more than 7 days: verify identity and unlock, or erase",
        timers=(Timer("lock_overdue", "lock_overdue", after="customer_account.locked_attention_after"),),
    ),
    State(
        "deactivated",
        "Closed or banned. Data kept 30 d. May be reactivated unless banned",
        timers=(
            Timer("retention_complete", "retention_complete", after="customer_account.deactivated_retention"),
        ),
    ),
    State("archived", "PII deleted or anonymized. Read-only", terminal=True),
)

_DEACTIVATE: Final = {"deactivated_at": "$now", "reactivated_at": None}

TRANSITIONS: Final = (
    Transition(
        "A01",
        ("signup",),
        (),
        "onboarding",
        ("sys",),
        set={
            "signed_up_at": "$now",
            "email_verified": False,
            "profile_completed": False,
            "is_verified": False,
            "fraud_score": 0,
            "banned": False,
            "delinquent": False,
            "two_factor_enabled": False,
        },
        effects=(fx("notify_customer", template="verify_email"),),
        doc="Starts the trial subscription (Xi1) and the compliance record (Xi2).",
    ),
    Transition(
        "A02",
        ("email_verified", "profile_completed"),
        ("onboarding",),
        SAME,
        ("sys",),
        updates=("account_set_onboarding_flag",),
        effects=(fx("account_onboarding_step", step="$event"),),
    ),
    Transition(
        "A03",
        ("kyc_passed",),
        ("onboarding",),
        "active",
        ("sys", "compliance"),
        guards=("account_onboarding_complete", "account_kyc_manual_check"),
        # Overriding a failed provider result needs a second person (§11 #38).
        four_eyes=FourEyes(("compliance", "manager"), when="account_kyc_override"),
        inputs=(
            Input("provider_request_id", "code"),
            Input("document_check", "code", required=False, choices=("passed", "failed")),
            Input("provider_result", "code", required=False, choices=("passed", "failed", "manual_review")),
        ),
        set={"is_verified": True, "kyc_passed_at": "$now", "kyc_request_id": "$payload.provider_request_id"},
        updates=("account_clear_kyc_review", "account_schedule_fraud_check"),
        effects=(fx("notify_customer", template="welcome"),),
        title="Approve KYC (manual review)",
    ),
    Transition(
        "A04",
        ("kyc_failed",),
        ("onboarding",),
        "deactivated",
        ("sys", "compliance"),
        inputs=(Input("resubmission_allowed", "bool", required=False),),
        set={
            **_DEACTIVATE,
            "deactivation_cause": "kyc_failed",
            "resubmission_allowed": "$payload.resubmission_allowed",
        },
        updates=("account_clear_kyc_review",),
        effects=(fx("notify_customer", template="kyc_failed", reason="$payload.reason"),),
        title="Reject KYC",
    ),
    Transition(
        "A05",
        ("fraud_detected",),
        ("onboarding",),
        "under_review",
        ("sys",),
        inputs=(Input("score", "int", required=False, min=0, max=100),),
        updates=("account_record_optional_score",),
        effects=(fx("account_audit_report", cause="fraud_detected"),),
    ),
    Transition(
        "A06",
        ("onboarding_timeout",),
        ("onboarding",),
        "deactivated",
        ("timer",),
        set={**_DEACTIVATE, "deactivation_cause": "onboarding_timeout"},
        effects=(fx("account_schedule_data_deletion"),),
    ),
    # A07–A09 share (active, fraud_check) and are told apart by the §5.3 band guards (D-26: one band
    # table for both fraud_check and fraud_alert). The score comes in the payload (the scoring job's
    # answer, see Ax16) or the fact "fraud_score".
    Transition(
        "A07",
        ("fraud_check",),
        ("active",),
        SAME,
        ("sys",),
        guards=("account_score_not_high",),
        inputs=(Input("score", "int", required=False, min=0, max=100),),
        updates=("account_record_score", "account_schedule_fraud_check"),
    ),
    Transition(
        "A08",
        ("fraud_check", "fraud_alert"),
        ("active",),
        "suspended",
        ("sys",),
        guards=("account_score_high",),
        inputs=(Input("score", "int", required=False, min=0, max=100),),
        set={"suspension_causes": ["fraud"], "suspended_at": "$now"},
        updates=("account_record_score", "account_schedule_fraud_check"),
        effects=(
            fx("account_block_operations"),
            fx("notify_customer", template="account_suspended", cause="fraud"),
        ),
    ),
    Transition(
        "A09",
        ("fraud_check", "fraud_alert"),
        ("active",),
        "under_review",
        ("sys",),
        guards=("account_score_critical",),
        inputs=(Input("score", "int", required=False, min=0, max=100),),
        updates=("account_record_score",),
        effects=(fx("account_preserve_data"), fx("account_audit_report", cause="critical_fraud_score")),
    ),
    Transition(
        "A10",
        ("abuse_report",),
        ("active",),
        "suspended",
        ("support", "sys"),
        inputs=(Input("evidence", "text"), Input("report_id", "code")),
        set={"suspension_causes": ["abuse"], "suspended_at": "$now"},
        updates=("account_add_abuse_report", "account_schedule_fraud_check"),
        effects=(
            fx("account_block_operations"),
            fx("notify_customer", template="account_suspended", cause="abuse", reason="$payload.reason"),
        ),
        title="Record abuse report",
    ),
    # The lock reason code comes as "reason_code" from staff (their "reason" is the free-text note the
    # engine requires) and as "reason" from the system and cascades (X11, X21, X23).
    Transition(
        "A11",
        ("lock",),
        ("onboarding", "active", "suspended", "under_review"),
        "locked",
        ("sys", "cascade", *_STAFF_LOCKERS),
        guards=("account_lock_reason_valid",),
        inputs=(Input("reason_code", "code", required=False, choices=LOCK_REASONS),),
        set={"locked_at": "$now", "auto_unlock": False, "lock_overdue": None, "identity_reverified_at": None},
        updates=("account_start_lock",),
        effects=(
            fx("account_revoke_access"),
            fx("notify_customer", template="account_locked", channels=["email", "sms"]),
            fx("notify_staff", queue="security", template="account_locked"),
        ),
        title="Account lockdown",
    ),
    Transition(
        "A12",
        ("lock",),
        ("locked",),
        SAME,
        ("sys", "cascade", *_STAFF_LOCKERS),
        guards=("account_lock_reason_valid", "account_lock_reason_new"),
        inputs=(Input("reason_code", "code", required=False, choices=LOCK_REASONS),),
        updates=("account_add_lock_reason",),
        title="Account lockdown",
    ),
    # Manual unlock: support or compliance, approved by a manager or compliance officer (§11 #42).
    # X24 sends it as the system, which clears compliance-owned reasons only (no four-eyes: the engine
    # asks for approval from staff roles only).
    Transition(
        "A13",
        ("unlock",),
        ("locked",),
        "active",
        ("support", "compliance", "cascade"),
        guards=(
            "account_no_open_investigation",
            "account_lock_reasons_cleared",
            "account_identity_reverified",
        ),
        four_eyes=FourEyes(("manager", "compliance")),
        inputs=(
            Input("verification_method", "list", required=STAFF),
            Input("verifier_id", "code", required=STAFF),
        ),
        set={"lock_reasons": [], "locked_at": None, "lock_overdue": None, "two_factor_required": True},
        updates=("account_record_unlock", "account_schedule_fraud_check"),
        effects=(
            fx("account_force_password_reset"),
            fx("account_require_mfa"),
            fx("notify_customer", template="account_unlocked"),
        ),
        title="Unlock account",
    ),
    Transition(
        "A14",
        ("issue_resolved",),
        ("suspended",),
        "active",
        ("manager", "sys"),
        guards=("account_suspension_cause_cleared",),
        # Required from the manager; the system sends the new score / abuse_resolved instead.
        inputs=(Input("resolution_note", "text", required=STAFF),),
        updates=("account_clear_suspension", "account_schedule_fraud_check"),
        effects=(fx("notify_customer", template="welcome_back"),),
        title="Lift suspension",
    ),
    Transition(
        "A15",
        ("appeal_received",),
        ("suspended",),
        SAME,
        ("support", "sys"),
        inputs=(Input("text", "text"),),
        set={"appeal_text": "$payload.text", "appeal_received_at": "$now"},
        effects=(
            fx("notify_customer", template="appeal_received"),
            fx("notify_staff", queue="appeals", template="appeal_received"),
        ),
        title="Record appeal",
    ),
    Transition(
        "A16",
        ("appeal_accepted",),
        ("suspended",),
        "active",
        ("manager",),
        guards=("account_appeal_on_file",),
        inputs=(Input("resolution_note", "text"),),
        updates=("account_clear_suspension", "account_schedule_fraud_check"),
        effects=(fx("notify_customer", template="welcome_back"),),
        title="Accept appeal",
    ),
    Transition(
        "A17",
        ("escalate_to_review",),
        ("suspended",),
        "under_review",
        ("support", "manager"),
        effects=(fx("account_audit_report", cause="escalated"),),
        title="Escalate to review",
    ),
    Transition(
        "A18",
        ("suspension_timeout",),
        ("suspended",),
        "deactivated",
        ("timer",),
        set={**_DEACTIVATE, "deactivation_cause": "suspension_timeout"},
        effects=(fx("account_schedule_data_deletion"),),
    ),
    Transition(
        "A19",
        ("review_approved",),
        ("under_review",),
        "active",
        ("compliance",),
        inputs=(Input("findings", "text"),),
        set={"is_verified": True, "suspension_causes": None, "review_findings": "$payload.findings"},
        updates=("account_schedule_fraud_check",),
        effects=(fx("notify_customer", template="welcome_back"),),
        title="Review decision: approve",
    ),
    Transition(
        "A20",
        ("review_banned",),
        ("under_review",),
        "deactivated",
        ("compliance",),
        four_eyes=FourEyes(("manager",)),
        set={**_DEACTIVATE, "deactivation_cause": "banned", "banned": True, "ban_reason": "$payload.reason"},
        effects=(fx("notify_customer", template="account_banned", reason="$payload.reason"),),
        title="Review decision: ban",
    ),
    Transition(
        "A21",
        ("appeal_denied",),
        ("under_review",),
        "deactivated",
        ("compliance",),
        set={
            **_DEACTIVATE,
            "deactivation_cause": "appeal_denied",
            "banned": True,
            "ban_reason": "$payload.reason",
        },
        effects=(fx("notify_customer", template="account_banned", reason="$payload.reason"),),
        title="Review decision: deny appeal",
    ),
    Transition(
        "A22",
        ("review_timeout",),
        ("under_review",),
        "deactivated",
        ("timer",),
        set={**_DEACTIVATE, "deactivation_cause": "review_timeout"},
        updates=("account_review_timeout_decision",),
        effects=(fx("notify_staff", queue="compliance", template="review_auto_decision"),),
        doc="Auto-decision after 14 d without a human decision (D-27).",
    ),
    Transition(
        "A23",
        ("close_account",),
        ("active",),
        "deactivated",
        ("support",),
        guards=("account_no_open_dispute",),
        inputs=(Input("customer_confirmation_ref", "code"),),
        set={**_DEACTIVATE, "deactivation_cause": "closed"},
        effects=(fx("notify_customer", template="account_closed"),),
        title="Close account (customer request)",
    ),
    # A24 has two targets (§5.2): active, or onboarding with a new 7 d window when KYC never passed.
    Transition(
        "A24",
        ("reactivate",),
        ("deactivated",),
        "active",
        ("support",),
        guards=("account_not_banned", "account_within_reactivation_window", "account_kyc_passed"),
        set={"reactivated_at": "$now", "deactivated_at": None, "deactivation_cause": None},
        updates=("account_schedule_fraud_check",),
        effects=(fx("notify_customer", template="welcome_back"),),
        title="Reactivate account",
    ),
    Transition(
        "A24b",
        ("reactivate",),
        ("deactivated",),
        "onboarding",
        ("support",),
        guards=("account_not_banned", "account_within_reactivation_window"),
        set={"reactivated_at": "$now", "deactivated_at": None, "deactivation_cause": None},
        effects=(fx("notify_customer", template="resume_onboarding"),),
        title="Reactivate account",
        doc="KYC never passed: back to onboarding with a new 7 d window (also the A04 resubmission path).",
    ),
    Transition(
        "A25",
        ("retention_complete", "erasure_request"),
        ("deactivated",),
        "archived",
        ("timer", "compliance"),
        guards=(
            "account_no_open_invoice",
            "account_no_open_dispute",
            "account_no_legal_hold",
            "account_compliance_settled",
            "account_erasure_checks",
        ),
        four_eyes=FourEyes(("compliance",)),
        inputs=(
            Input("customer_id", "code", required=STAFF),
            Input("ownership_verification", "code", required=STAFF),
            Input("legal_hold_checked", "bool", required=STAFF),
        ),
        set={"archived_at": "$now"},
        effects=(fx("account_anonymize_pii"),),
        title="Erasure / GDPR deletion",
    ),
    Transition(
        "A26",
        ("erasure_request",),
        ("locked",),
        "archived",
        ("compliance",),
        guards=(
            "account_no_open_invoice",
            "account_billing_all_settled",
            "account_no_open_dispute",
            "account_no_legal_hold",
            "account_compliance_settled",
            "account_erasure_checks",
        ),
        four_eyes=FourEyes(("compliance",)),
        inputs=(
            Input("customer_id", "code"),
            Input("ownership_verification", "code"),
            Input("legal_hold_checked", "bool"),
        ),
        set={"archived_at": "$now"},
        effects=(fx("account_anonymize_pii"),),
        title="Erasure / GDPR deletion",
    ),
    Transition(
        "A27",
        ("activity_detected", "inactivity_detected"),
        ("active",),
        SAME,
        ("sys",),
        updates=("account_record_activity",),
        effects=(fx("account_activity_signal", signal="$event"),),
    ),
    # ---- Additional rows the spec implies (cascades sent to the account, self-events, sub-operations).
    Transition(
        "Ax1",
        ("flag_delinquent",),
        (ANY,),
        SAME,
        ("cascade",),
        set={"delinquent": True, "delinquent_since": "$now"},
        doc="X10: collections reached; a flag only, no lock and no compliance case (D-12).",
    ),
    Transition(
        "Ax2",
        ("flag_kyc_reverification",),
        (ANY,),
        SAME,
        ("cascade",),
        inputs=(Input("active", "bool", required=False),),
        updates=("account_set_kyc_reverification",),
        doc="X20: Compliance asked for KYC re-verification; released (active=false) on C03.",
    ),
    Transition(
        "Ax3",
        ("fraud_monitoring_on",),
        (ANY,),
        SAME,
        ("cascade",),
        updates=("account_fraud_monitoring_on",),
        doc="X22: Compliance fraud_detection_active; fraud checks every day.",
    ),
    Transition(
        "Ax4",
        ("fraud_monitoring_off",),
        (ANY,),
        SAME,
        ("cascade",),
        updates=("account_fraud_monitoring_off",),
        doc="X22: cleared (C07); back to the band's check interval.",
    ),
    Transition(
        "Ax5",
        ("degraded_notice",),
        (ANY,),
        SAME,
        ("cascade",),
        effects=(fx("notify_customer", template="service_degraded"),),
        doc="X39: resource contention in the customer's pool.",
    ),
    Transition(
        "Ax6",
        ("maintenance_notice",),
        (ANY,),
        SAME,
        ("cascade",),
        effects=(fx("notify_customer", template="maintenance", kind="$payload.kind"),),
        doc="X40: emergency shutdown / recovery broadcast.",
    ),
    Transition(
        "Ax7",
        ("usage_notice",),
        (ANY,),
        SAME,
        ("cascade",),
        effects=(fx("notify_customer", template="usage", kind="$payload.kind"),),
        doc="X26/X27: overage charged or circuit breaker (recovery payment needed).",
    ),
    Transition(
        "Ax8",
        ("lock_overdue",),
        ("locked",),
        SAME,
        ("timer",),
        set={"lock_overdue": True},
        effects=(fx("notify_staff", queue="security", template="lock_overdue"),),
        doc="Locked for more than 7 d: raise attention (§5.3 [I]).",
    ),
    Transition(
        "Ax9",
        ("review_reminder",),
        ("under_review",),
        SAME,
        ("timer",),
        set={"review_reminder_sent_at": "$now"},
        effects=(fx("notify_staff", queue="compliance", template="review_reminder"),),
        doc="Reminder 4 d before the A22 auto-decision (D-27).",
    ),
    Transition(
        "Ax10",
        ("fraud_check",),
        ("suspended",),
        SAME,
        ("sys",),
        guards=("account_score_given",),
        inputs=(Input("score", "int", required=False, min=0, max=100),),
        updates=("account_record_score", "account_schedule_fraud_check"),
        doc="A08 'check daily': records the score; A14 lifts once it is back in band.",
    ),
    Transition(
        "Ax11",
        ("abuse_report",),
        ("suspended",),
        SAME,
        ("support", "sys"),
        guards=("account_abuse_report_new",),
        inputs=(Input("evidence", "text"), Input("report_id", "code")),
        updates=("account_add_abuse_report",),
        title="Record abuse report",
        doc="§5.4: later reports while suspended only add evidence; they never suspend again.",
    ),
    Transition(
        "Ax12",
        ("kyc_manual_review",),
        ("onboarding",),
        SAME,
        ("sys",),
        inputs=(Input("provider_request_id", "code"),),
        set={"kyc_manual_review": True, "kyc_request_id": "$payload.provider_request_id"},
        effects=(fx("notify_staff", queue="compliance", template="kyc_manual_review"),),
        doc="The KYC provider asks for a manual review: onboarding needs attention (§5.1).",
    ),
    Transition(
        "Ax13",
        ("update_payment_method",),
        _OPEN_TO_SUB_OPS,
        SAME,
        ("support", "sys"),
        guards=("account_sub_op_allowed", "account_payment_method_validated", "account_payment_method_new"),
        inputs=(
            Input("method_token", "code"),
            Input("fingerprint", "code"),
            Input("make_primary", "bool", required=False),
        ),
        updates=("account_add_payment_method",),
        effects=(fx("account_update_subrecord", record="payment_method", token="$payload.method_token"),),
        title="Update payment method",
        doc="§5.2 sub-operation; emits X19 to the failed invoices.",
    ),
    Transition(
        "Ax14",
        ("update_comm_prefs",),
        _OPEN_TO_SUB_OPS,
        SAME,
        ("support", "sys"),
        guards=("account_sub_op_allowed",),
        inputs=(Input("channels", "list", choices=("email", "sms", "push", "none")),),
        updates=("account_set_comm_prefs",),
        effects=(fx("account_update_subrecord", record="comm_prefs"),),
        title="Update communication preferences",
    ),
    Transition(
        "Ax15",
        ("update_billing_address",),
        _OPEN_TO_SUB_OPS,
        SAME,
        ("support", "sys"),
        guards=("account_sub_op_allowed", "account_address_validated"),
        inputs=(Input("address", "mapping"),),
        set={"billing_address_updated_at": "$now"},
        effects=(fx("account_update_subrecord", record="billing_address"),),
        title="Update billing address",
    ),
    Transition(
        "Ax16",
        ("fraud_check_due",),
        ("active", "suspended"),
        SAME,
        ("timer",),
        effects=(fx("account_request_fraud_score"),),
        doc=(
            "[I] The spec's adaptive timer sends fraud_check(score), but a clock cannot know a score: the"
            " timer fires fraud_check_due, which asks the fraud-scoring provider from a job (no call out"
            " while rows are locked); its answer arrives as fraud_check(score) (A07–A09, Ax10), whose"
            " updater moves next_fraud_check_at and so re-arms this timer."
        ),
    ),
)


def _hold(hold: str) -> dict[str, Any]:
    return {"hold": hold}


CASCADES: Final = (
    # X12: locking the account suspends every entitlement (must), holds dunning and tells Compliance.
    Cascade(
        "X12",
        ("A11",),
        "entitlement",
        "suspend",
        where="account_entitlement_can_take_hold",
        payload=_hold("account_locked"),
        must=True,
    ),
    Cascade(
        "X12",
        ("A11",),
        "billing",
        "dunning_hold",
        where="account_invoice_open",
        payload=_hold("account_locked"),
    ),
    Cascade(
        "X12",
        ("A11",),
        "compliance_audit",
        "security_event",
        where="account_compliance_open",
        payload={"kind": "account_locked", "lock_reasons": "$data.lock_reasons"},
    ),
    # X13: unlock lifts the lock hold and releases dunning.
    Cascade(
        "X13",
        ("A13",),
        "entitlement",
        "lift_hold",
        where="account_entitlement_has_hold",
        payload=_hold("account_locked"),
    ),
    Cascade(
        "X13",
        ("A13",),
        "billing",
        "dunning_release",
        where="account_invoice_open",
        payload=_hold("account_locked"),
    ),
    # X14: suspension / back to active.
    Cascade(
        "X14",
        ("A08", "A10"),
        "entitlement",
        "suspend",
        where="account_entitlement_can_take_hold",
        payload=_hold("account_suspended"),
    ),
    Cascade(
        "X14",
        ("A14", "A16"),
        "entitlement",
        "lift_hold",
        where="account_entitlement_has_hold",
        payload=_hold("account_suspended"),
    ),
    # X15: under review / approved. Compliance hears of A09 and A17 here; A05 tells it through X18
    # (the same anomaly_detected event, sent once).
    Cascade(
        "X15",
        ("A05", "A09", "A17"),
        "entitlement",
        "suspend",
        where="account_entitlement_can_take_hold",
        payload=_hold("account_review"),
    ),
    Cascade(
        "X15",
        ("A09", "A17"),
        "compliance_audit",
        "anomaly_detected",
        where="account_compliance_is_compliant",
        payload={"score": "$data.fraud_score", "indicators": ["account_review"]},
    ),
    Cascade(
        "X15",
        ("A19",),
        "entitlement",
        "lift_hold",
        where="account_entitlement_has_hold",
        payload=_hold("account_review"),
    ),
    # X16: deactivation closes the subscription and ends the entitlements (E14 from active, E12 from
    # suspended).
    Cascade(
        "X16",
        ("A18", "A20", "A21", "A22", "A23"),
        "subscription",
        "account_closed",
        where="account_subscription_closable",
    ),
    Cascade(
        "X16",
        ("A18", "A20", "A21", "A22", "A23"),
        "entitlement",
        "cancel_early",
        where="account_entitlement_is_active",
    ),
    Cascade(
        "X16",
        ("A18", "A20", "A21", "A22", "A23"),
        "entitlement",
        "escalate_to_cancellation",
        where="account_entitlement_is_suspended",
    ),
    # X17: archive → Compliance data retention (must); C17 then archives everything else (X25).
    Cascade(
        "X17",
        ("A25", "A26"),
        "compliance_audit",
        "start_retention",
        where="account_compliance_open",
        must=True,
    ),
    # X18: KYC passed → next re-verification in 365 d and start pending entitlements' approval clock;
    # fraud detected during onboarding → Compliance anomaly.
    Cascade("X18", ("A03",), "compliance_audit", "kyc_verified", where="account_compliance_open"),
    Cascade("X18", ("A03",), "entitlement", "start_approval_clock", where="account_entitlement_is_pending"),
    Cascade(
        "X18",
        ("A05",),
        "compliance_audit",
        "anomaly_detected",
        where="account_compliance_is_compliant",
        payload={"score": "$data.fraud_score", "indicators": ["onboarding_fraud"]},
    ),
    # X19: a new payment method retries the failed invoices once (B17).
    Cascade(
        "X19",
        ("Ax13",),
        "billing",
        "payment_method_updated",
        where="account_invoice_in_dunning",
        payload={"method_token": "$payload.method_token"},
    ),
    # Xi1/Xi2 [I]: the signup command also starts the trial subscription (A01 "starts the trial
    # subscription (S01)") and opens the customer's compliance record.
    Cascade(
        "Xi1",
        ("A01",),
        "subscription",
        "start_trial",
        select="new",
        payload={"tier": "$payload.tier", "cycle": "$payload.cycle"},
        doc="A01: the same signup command starts the trial subscription (S01).",
    ),
    Cascade(
        "Xi2",
        ("A01",),
        "compliance_audit",
        "enroll",
        select="new",
        payload={"frameworks": "$payload.frameworks"},
        doc="Every customer gets a Compliance & Audit record at signup (compliant, re-verification clock).",
    ),
    # Xi3/Xi4 [I]: an account that becomes active again leaves no account_* hold behind. X14 lifts
    # account_suspended only on A14/A16 and X15 lifts account_review only on A19, but an account can
    # also reach active through A19 after A17 (suspended → under_review) or through A13 after a lock
    # from suspended/under_review.
    Cascade(
        "Xi3",
        ("A13", "A19"),
        "entitlement",
        "lift_hold",
        where="account_entitlement_has_hold",
        payload=_hold("account_suspended"),
        doc="Back to active from review or lock: lift a leftover account_suspended hold.",
    ),
    Cascade(
        "Xi4",
        ("A13",),
        "entitlement",
        "lift_hold",
        where="account_entitlement_has_hold",
        payload=_hold("account_review"),
        doc="Back to active from a lock: lift a leftover account_review hold.",
    ),
)

GOVERNOR: Final = Governor(
    name="customer_account",
    title="Customer Account",
    description="Who the customer is and whether they may act: KYC, fraud, abuse, lockdown, review, GDPR.",
    instance_of="customer",
    states=STATES,
    transitions=TRANSITIONS,
    cascades=CASCADES,
)
