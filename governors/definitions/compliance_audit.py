"""Compliance & Audit governor (GOVERNORS.md §7): is the customer regulatorily in good standing?

Periodic KYC/AML re-verification, fraud monitoring, investigations, confirmed violations and their
remediation, and finally data retention/anonymisation (G's states plus C's remediation_in_progress,
D-33). One instance per customer, created by the account's signup (Cx1 ``enroll``). The audit trail's
hash chain lives in the service; breach incidents are tracked here as data (Cx7).

Data kept by the rows: frameworks, next_verification_at, verification_attempts, verification_failed_at,
verification_overdue, fraud_score, indicators, flagged_at, fraud_tx_ids, investigation, violations[]
(framework, control, severity, deadline), non_compliant_cause, remediation_plan, remediation_deadline,
deadline_warned, breach_incidents[] (incident_id, phase, discovered_at, regulator_notice_due),
security_events[] (the latest, with security_event_count), retention_until, legal_hold.
"""

from __future__ import annotations

from typing import Final

from governors.spec import ANY, SAME, STAFF, Cascade, FourEyes, Governor, Input, State, Timer, Transition, fx

FRAMEWORKS: Final = ("GDPR", "HIPAA", "SOC2", "PCI-DSS", "FedRAMP")

BREACH_PHASES: Final = (
    "detected",
    "contained",
    "notified_authorities",
    "notified_customers",
    "investigating",
    "remediated",
    "verified_fix",
)
"""Breach incident phases in their order [C]."""

INVESTIGATION_KINDS: Final = ("violation", "regulatory_concern", "data_breach")

SETTINGS: dict[str, object] = {
    "compliance_audit.reverification_interval": "365d",
    "compliance_audit.verification_window": "30d",
    "compliance_audit.verification_attention_after": "21d",
    "compliance_audit.resubmission_window": "7d",
    "compliance_audit.max_verification_attempts": 3,
    # C06: score ≥ 70 (7/10) opens fraud monitoring; X20: dunning hold during re-verification from 70.
    "compliance_audit.anomaly_score_threshold": 70,
    "compliance_audit.kyc_hold_fraud_score": 70,
    "compliance_audit.fraud_quiet_period": "24h",
    # C08 by the system: at least this many transactions flagged fraudulent (the count is [I]).
    "compliance_audit.fraud_confirm_min_tx": 2,
    "compliance_audit.investigation_escalation_after": "30d",
    "compliance_audit.violation_deadline": "30d",
    "compliance_audit.remediation_window": "30d",
    "compliance_audit.remediation_reminder_before": "7d",
    "compliance_audit.breach_notice_window": "72h",
    # C17: retention period per framework in years (7–30 y; GDPR 7 y); the longest applicable wins.
    "compliance_audit.retention_years": {"GDPR": 7},
    "compliance_audit.retention_years_default": 7,
    "compliance_audit.default_frameworks": ["GDPR"],
    # [I] Cx2: the compliance record keeps the latest security events (all are in the history and
    # the audit chain) and counts them all; see compliance_record_security_event.
    "compliance_audit.security_events_kept": 20,
}

STATES: Final = (
    State(
        "compliant",
        "Good standing. Monitoring runs",
        timers=(Timer("verification_due", "verification_due", at="next_verification_at"),),
    ),
    State(
        "verification_pending",
        "KYC/AML re-verification requested. Customer has 30 d",
        attention="compliance_verification_overdue",
        attention_reason="Re-verification open for more than 21 days",
        timers=(
            Timer(
                "verification_deadline", "verification_deadline", after="compliance_audit.verification_window"
            ),
            Timer(
                "verification_reminder",
                "verification_reminder",
                after="compliance_audit.verification_attention_after",
            ),
        ),
    ),
    State(
        "fraud_detection_active",
        "Elevated fraud risk: enhanced monitoring, high-risk transactions throttled, manual review flagged",
        attention=True,
        attention_reason="Fraud review: clear or confirm",
    ),
    State(
        "investigation",
        "Formal investigation. Account frozen (locked)",
        attention=True,
        attention_reason="Investigation open: clear it or confirm the violation",
        timers=(
            Timer(
                "investigation_overdue",
                "investigation_overdue",
                after="compliance_audit.investigation_escalation_after",
            ),
        ),
    ),
    State(
        "non_compliant",
        "Violation confirmed or verification failed",
        attention=True,
        attention_reason="Non-compliant: approve a remediation plan",
    ),
    State(
        "remediation_in_progress",
        "Remediation plan approved, deadline running (30 d)",
        attention="compliance_deadline_warned",
        attention_reason="Remediation deadline in less than 7 days",
        timers=(
            Timer("remediation_deadline", "remediation_deadline", at="remediation_deadline"),
            Timer(
                "deadline_approaching",
                "deadline_approaching",
                at="remediation_deadline",
                before="compliance_audit.remediation_reminder_before",
            ),
        ),
    ),
    State(
        "data_retention",
        "PII anonymised, data in cold storage until retention_until",
        terminal=True,
    ),
)

TRANSITIONS: Final = (
    Transition(
        "Cx1",
        ("enroll",),
        (),
        "compliant",
        ("cascade", "sys"),
        inputs=(Input("frameworks", "list", required=False, choices=FRAMEWORKS),),
        updates=("compliance_enroll",),
        doc="Creation (Xi2 from the account's signup A01): compliant, first re-verification in 365 d.",
    ),
    Transition(
        "C01",
        ("verification_due",),
        ("compliant",),
        "verification_pending",
        ("timer",),
        updates=("compliance_start_verification",),
        effects=(fx("compliance_request_verification"),),
    ),
    Transition(
        "C02",
        ("request_verification",),
        ("compliant",),
        "verification_pending",
        ("compliance",),
        updates=("compliance_start_verification",),
        effects=(fx("compliance_request_verification"),),
        title="Request KYC re-verification",
    ),
    # The result of §11 #57 is the event itself (verification_passed / verification_failed).
    Transition(
        "C03",
        ("verification_passed",),
        ("verification_pending",),
        "compliant",
        ("sys", "compliance"),
        guards=("compliance_no_fraud_indicators",),
        inputs=(Input("provider_ref", "code"), Input("fraud_indicators", "list", required=False)),
        updates=("compliance_verification_passed",),
        title="Record verification result: passed",
    ),
    Transition(
        "C04",
        ("verification_failed", "verification_deadline"),
        ("verification_pending",),
        "non_compliant",
        ("sys", "compliance", "timer"),
        inputs=(Input("provider_ref", "code", required=STAFF),),
        set={
            "verification_failed_at": "$now",
            "non_compliant_cause": "verification",
            "verification_overdue": None,
            "failed_provider_ref": "$payload.provider_ref",
        },
        effects=(
            fx("notify_staff", queue="compliance", template="verification_failed"),
            fx("notify_staff", queue="support", template="verification_failed"),
            fx("notify_customer", template="verification_failed"),
        ),
        title="Record verification result: failed",
    ),
    Transition(
        "C05",
        ("resubmission_received",),
        ("non_compliant",),
        "verification_pending",
        ("sys", "support"),
        guards=("compliance_resubmission_allowed",),
        updates=("compliance_count_resubmission",),
        effects=(fx("compliance_request_verification"),),
        title="Record KYC resubmission",
    ),
    Transition(
        "C06",
        ("anomaly_detected",),
        ("compliant",),
        "fraud_detection_active",
        ("sys", "cascade"),
        guards=("compliance_anomaly_significant",),
        inputs=(
            Input("score", "int", required=False, min=0, max=100),
            Input("indicators", "list", required=False),
        ),
        updates=("compliance_record_anomaly",),
        effects=(
            fx("compliance_enhanced_monitoring"),
            fx("compliance_throttle_high_risk"),
            fx("notify_staff", queue="fraud_review", template="anomaly_detected"),
        ),
    ),
    Transition(
        "C07",
        ("fraud_check_passed",),
        ("fraud_detection_active",),
        "compliant",
        ("compliance",),
        guards=("compliance_fraud_quiet",),
        inputs=(Input("review_notes", "text"),),
        set={
            "indicators": None,
            "flagged_at": None,
            "fraud_cleared_at": "$now",
            "review_notes": "$payload.review_notes",
        },
        title="Clear fraud",
    ),
    Transition(
        "C08",
        ("fraud_confirmed",),
        ("fraud_detection_active",),
        "investigation",
        ("compliance", "sys"),
        guards=("compliance_enough_fraud_tx",),
        inputs=(Input("tx_ids", "list"), Input("review_notes", "text", required=False)),
        updates=("compliance_open_fraud_investigation",),
        effects=(
            fx("notify_staff", queue="fraud_team", template="fraud_confirmed"),
            fx("compliance_enhanced_audit_logging"),
            fx("compliance_request_fraud_reversal", tx_ids="$data.fraud_tx_ids"),
        ),
        title="Confirm fraud",
    ),
    Transition(
        "C09",
        ("violation_detected",),
        ("compliant",),
        "investigation",
        ("compliance", "sys"),
        inputs=(
            Input("kind", "code", choices=INVESTIGATION_KINDS),
            Input("description", "text"),
            Input("incident_id", "code", required=False),
            Input("discovered_at", "datetime", required=False),
        ),
        updates=("compliance_open_investigation",),
        effects=(
            fx("compliance_incident_ticket", kind="$payload.kind"),
            fx("compliance_enhanced_audit_logging"),
        ),
        title="Open investigation",
    ),
    Transition(
        "C10",
        ("investigation_cleared",),
        ("investigation",),
        "compliant",
        ("compliance",),
        guards=("compliance_no_violation_confirmed",),
        four_eyes=FourEyes(("compliance", "manager")),
        inputs=(Input("findings", "text"),),
        updates=("compliance_close_investigation",),
        title="Clear investigation",
    ),
    Transition(
        "C11",
        ("violation_confirmed",),
        ("investigation",),
        "non_compliant",
        ("compliance",),
        inputs=(
            Input("violations", "list"),
            Input("notify_regulator", "bool"),
            Input("deadline", "datetime", required=False),
        ),
        set={"non_compliant_cause": "violation", "regulator_notified": "$payload.notify_regulator"},
        updates=("compliance_record_violations",),
        effects=(fx("compliance_regulator_notice", required="$payload.notify_regulator"),),
        title="Confirm violation",
    ),
    Transition(
        "C12",
        ("audit_failed",),
        ("compliant",),
        "non_compliant",
        ("sys",),
        guards=("compliance_violations_found",),
        inputs=(Input("framework", "code", choices=FRAMEWORKS), Input("violations", "list")),
        set={"non_compliant_cause": "audit"},
        updates=("compliance_record_violations",),
        effects=(fx("notify_staff", queue="compliance", template="audit_failed"),),
    ),
    Transition(
        "C13",
        ("remediation_plan_approved",),
        ("non_compliant",),
        "remediation_in_progress",
        ("compliance",),
        inputs=(Input("plan", "text"),),
        updates=("compliance_start_remediation",),
        title="Approve remediation plan",
    ),
    Transition(
        "C14",
        ("customer_appeal", "escalate_to_enforcement"),
        ("non_compliant",),
        SAME,
        ("compliance",),
        updates=("compliance_log_case",),
        # The reason is free text that may name the customer: it stays in case_log (erasable) and
        # the transition's own audit entry keeps its hash; the chain must never hold the text.
        effects=(fx("audit_note", kind="$event"),),
        title="Log appeal / escalate to enforcement",
    ),
    Transition(
        "C15",
        ("remediation_completed",),
        ("remediation_in_progress",),
        "compliant",
        ("compliance",),
        guards=("compliance_remediation_verified",),
        inputs=(Input("steps_verified", "bool"), Input("signoff_ref", "code", required=False)),
        updates=("compliance_clear_violations",),
        title="Mark remediation complete",
    ),
    Transition(
        "C16",
        ("remediation_failed", "remediation_deadline"),
        ("remediation_in_progress",),
        "non_compliant",
        ("compliance", "timer"),
        set={
            "non_compliant_cause": "remediation_failed",
            "remediation_failed_at": "$now",
            "deadline_warned": None,
        },
        effects=(fx("notify_staff", queue="compliance", template="remediation_failed"),),
        title="Mark remediation failed",
    ),
    # D-34: also from compliant. Manual start needs a second compliance officer; X17 does not.
    Transition(
        "C17",
        ("start_retention",),
        ("compliant", "non_compliant"),
        "data_retention",
        ("cascade", "compliance"),
        guards=(
            "compliance_no_money_case_open",
            "compliance_billing_settled",
            "compliance_no_legal_hold",
            "compliance_retention_trigger",
        ),
        four_eyes=FourEyes(("compliance",)),
        inputs=(Input("erasure_ref", "code", required=False),),
        updates=("compliance_start_retention",),
        effects=(
            fx("compliance_anonymize_pii"),
            fx("compliance_cold_storage", until="$data.retention_until"),
        ),
        title="Start data retention",
    ),
    # ---- Additional rows: cascades into Compliance and the self-events of §7.2.
    Transition(
        "Cx2",
        ("security_event",),
        (ANY,),
        SAME,
        ("cascade", "sys"),
        updates=("compliance_record_security_event",),
        effects=(fx("audit_note", kind="security_event", detail="$payload.kind"),),
        doc="X12: the account was locked; audit the security event.",
    ),
    Transition(
        "Cx3",
        ("kyc_verified",),
        (ANY,),
        SAME,
        ("cascade",),
        updates=("compliance_kyc_verified",),
        doc="X18: onboarding KYC passed; next re-verification in 365 d.",
    ),
    Transition(
        "Cx4",
        ("maintenance_logged",),
        (ANY,),
        SAME,
        ("cascade",),
        effects=(fx("audit_note", kind="maintenance", detail="$payload.kind"),),
        doc="X40: emergency shutdown / recovery audit entry.",
    ),
    Transition(
        "Cx5",
        ("deadline_approaching",),
        ("remediation_in_progress",),
        SAME,
        ("timer",),
        set={"deadline_warned": True},
        effects=(fx("notify_staff", queue="compliance", template="remediation_deadline_approaching"),),
        doc="Remediation deadline − 7 d: attention.",
    ),
    Transition(
        "Cx6",
        ("investigation_overdue",),
        ("investigation",),
        SAME,
        ("timer",),
        set={"escalated_to_legal_at": "$now"},
        effects=(fx("notify_staff", queue="legal", template="investigation_overdue"),),
        doc="Investigation open 30 d: escalate to legal, no state change.",
    ),
    Transition(
        "Cx7",
        ("breach_phase_update",),
        (ANY,),
        SAME,
        ("compliance", "sys"),
        guards=("compliance_breach_phase_advances",),
        inputs=(
            Input("incident_id", "code"),
            Input("phase", "code", choices=BREACH_PHASES),
            Input("discovered_at", "datetime", required=False),
        ),
        updates=("compliance_record_breach_phase",),
        effects=(fx("audit_note", kind="breach_phase", detail="$payload.phase"),),
        title="Update breach phase",
        doc="Breach incidents move forward through their phases [C]; GDPR notice due 72 h after discovery.",
    ),
    Transition(
        "Cx8",
        ("verification_reminder",),
        ("verification_pending",),
        SAME,
        ("timer",),
        set={"verification_overdue": True},
        effects=(
            fx("notify_customer", template="verification_reminder"),
            fx("notify_staff", queue="compliance", template="verification_overdue"),
        ),
        doc="Re-verification open 21 d: attention (§7.1 [I]).",
    ),
)

_COMPLIANCE_HOLD: Final = {"hold": "compliance"}
_KYC_HOLD: Final = {"hold": "kyc_reverification"}
_LOCK: Final = {"reason": "compliance"}

CASCADES: Final = (
    # X20: re-verification requested → flag the account; hold collections when the fraud score is high.
    # "Released on C03": the same cascade id clears the flag and releases the hold.
    Cascade(
        "X20",
        ("C01", "C02"),
        "customer_account",
        "flag_kyc_reverification",
        where="compliance_account_open",
        payload={"active": True},
    ),
    Cascade(
        "X20",
        ("C01", "C02"),
        "billing",
        "dunning_hold",
        where="compliance_invoice_open",
        when="compliance_fraud_score_high",
        payload=_KYC_HOLD,
    ),
    Cascade(
        "X20",
        ("C03",),
        "customer_account",
        "flag_kyc_reverification",
        where="compliance_account_open",
        payload={"active": False},
    ),
    Cascade(
        "X20",
        ("C03",),
        "billing",
        "dunning_release",
        where="compliance_invoice_open",
        when="compliance_fraud_score_high",
        payload=_KYC_HOLD,
    ),
    # X21: verification failed → lock(compliance) and block collections.
    Cascade("X21", ("C04",), "customer_account", "lock", where="compliance_account_lockable", payload=_LOCK),
    Cascade(
        "X21", ("C04",), "billing", "dunning_hold", where="compliance_invoice_open", payload=_COMPLIANCE_HOLD
    ),
    # X22: fraud monitoring on (C06) / off (C07).
    Cascade("X22", ("C06",), "billing", "fraud_checks_on", where="compliance_invoice_not_archived"),
    Cascade("X22", ("C06",), "customer_account", "fraud_monitoring_on", where="compliance_account_open"),
    Cascade("X22", ("C07",), "billing", "fraud_checks_off", where="compliance_invoice_not_archived"),
    Cascade("X22", ("C07",), "customer_account", "fraud_monitoring_off", where="compliance_account_open"),
    # X23: investigation → lock(compliance) must. Reversing the confirmed fraudulent charges (B22) is
    # not a cascade here: B22 needs each invoice's own refund amount, and a cascade payload cannot
    # depend on the target instance (see tests/governors/test_engine_gaps_compliance_audit.py). C08
    # queues the §11 #19 reversal for finance instead (effect compliance_request_fraud_reversal).
    Cascade(
        "X23",
        ("C08", "C09"),
        "customer_account",
        "lock",
        where="compliance_account_lockable",
        payload=_LOCK,
        must=True,
    ),
    # X24: back to compliant → system unlock (only when every lock reason is compliance-owned) and
    # release the compliance dunning hold. C03 only after a C05 resubmission.
    Cascade("X24", ("C10", "C15"), "customer_account", "unlock", where="compliance_account_unlockable"),
    Cascade(
        "X24",
        ("C10", "C15"),
        "billing",
        "dunning_release",
        where="compliance_invoice_open",
        payload=_COMPLIANCE_HOLD,
    ),
    Cascade(
        "X24",
        ("C03",),
        "customer_account",
        "unlock",
        where="compliance_account_unlockable",
        when="compliance_after_resubmission",
    ),
    Cascade(
        "X24",
        ("C03",),
        "billing",
        "dunning_release",
        where="compliance_invoice_open",
        when="compliance_after_resubmission",
        payload=_COMPLIANCE_HOLD,
    ),
    # X25: data retention → everything else becomes read-only (must). The account is already archived
    # when retention starts from X17; otherwise it has no archive event of its own.
    Cascade(
        "X25", ("C17",), "entitlement", "archive", where="compliance_entitlement_not_archived", must=True
    ),
    Cascade(
        "X25",
        ("C17",),
        "subscription",
        "retention_archive",
        where="compliance_subscription_not_archived",
        must=True,
    ),
)

GOVERNOR: Final = Governor(
    name="compliance_audit",
    title="Compliance & Audit",
    description="Regulatory standing: KYC re-verification, fraud, investigations, remediation, retention.",
    instance_of="customer",
    states=STATES,
    transitions=TRANSITIONS,
    cascades=CASCADES,
)
