"""Customer Account governor (GOVERNORS.md §5): every row, its rejections, timers, four-eyes, cascades."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pytest

from governors import Decision, Facts, Instance, Rejection, apply, decide, plan
from governors.definitions.customer_account import GOVERNOR
from governors.facts import TimerState
from tests.governors import tables
from tests.governors.tables import NOW, SETTINGS, Case, Instances, Table, ago, armed, emitted, where

GOV = "customer_account"
REASON = "ticket 4711: customer called"
make_facts = partial(tables.make_facts, reason=REASON)

ONBOARDED = {"email_verified": True, "profile_completed": True, "fraud_score": 0}
ACTIVE = {**ONBOARDED, "is_verified": True, "fraud_score": 10}
UNLOCK = {"verification_method": ["phone", "document"], "verifier_id": "agent-7"}
ERASE = {"customer_id": "cust-1", "ownership_verification": "id-doc-99", "legal_hold_checked": True}
SETTLED = {"compliance_audit": ("compliant",), "billing": ("archived", "payment_received")}


account = Instances(GOV, "acct-1", 3, customer_id="cust-1", subject_id="cust-1")


CASES: tuple[Case, ...] = (
    # A01 signup
    Case("A01", None, "signup", "sys", "onboarding"),
    Case("A01", "onboarding", "signup", "sys", "!invalid_transition", note="signup only creates"),
    Case("A01", None, "lock", "sys", "!not_created", payload={"reason": "manual"}),
    # A02 onboarding flags
    Case("A02", "onboarding", "email_verified", "sys", "onboarding"),
    Case("A02", "onboarding", "profile_completed", "sys", "onboarding"),
    Case("A02", "active", "email_verified", "sys", "!invalid_transition", data=ACTIVE),
    # A03 KYC passed
    Case(
        "A03",
        "onboarding",
        "kyc_passed",
        "sys",
        "active",
        payload={"provider_request_id": "kyc-1"},
        data=ONBOARDED,
    ),
    Case(
        "A03",
        "onboarding",
        "kyc_passed",
        "compliance",
        "active",
        payload={"provider_request_id": "kyc-1", "document_check": "passed"},
        data=ONBOARDED,
    ),
    Case(
        "A03",
        "onboarding",
        "kyc_passed",
        "sys",
        "!guard_failed",
        payload={"provider_request_id": "kyc-1"},
        data={"email_verified": True},
        note="profile not completed",
    ),
    Case(
        "A03",
        "onboarding",
        "kyc_passed",
        "sys",
        "!invalid_input",
        data=ONBOARDED,
        note="no provider request id",
    ),
    Case(
        "A03",
        "onboarding",
        "kyc_passed",
        "compliance",
        "!invalid_input",
        payload={"provider_request_id": "kyc-1"},
        data=ONBOARDED,
        note="manual accept needs the document check",
    ),
    Case(
        "A03",
        "onboarding",
        "kyc_passed",
        "compliance",
        "!guard_failed",
        payload={"provider_request_id": "kyc-1", "document_check": "failed"},
        data=ONBOARDED,
    ),
    Case(
        "A03",
        "onboarding",
        "kyc_passed",
        "support",
        "!role_not_allowed",
        payload={"provider_request_id": "kyc-1"},
        data=ONBOARDED,
    ),
    # A04 KYC failed
    Case("A04", "onboarding", "kyc_failed", "sys", "deactivated"),
    Case(
        "A04", "onboarding", "kyc_failed", "compliance", "deactivated", payload={"resubmission_allowed": True}
    ),
    Case("A04", "onboarding", "kyc_failed", "compliance", "!invalid_input", payload={"reason": "short"}),
    # A05 fraud detected while onboarding
    Case("A05", "onboarding", "fraud_detected", "sys", "under_review", payload={"score": 88}),
    Case("A05", "onboarding", "fraud_detected", "support", "!role_not_allowed"),
    # A06 onboarding timeout
    Case("A06", "onboarding", "onboarding_timeout", "timer", "deactivated"),
    Case("A06", "onboarding", "onboarding_timeout", "sys", "!role_not_allowed"),
    # A07–A09 fraud bands (§5.3, D-26)
    Case("A07", "active", "fraud_check", "sys", "active", extra={"fraud_score": 20}, data=ACTIVE),
    Case("A07", "active", "fraud_check", "timer", "!role_not_allowed", data=ACTIVE),
    Case("A07", "active", "fraud_check", "sys", "active", payload={"score": 70}, data=ACTIVE),
    Case(
        "A07",
        "active",
        "fraud_check",
        "sys",
        "!invalid_input",
        data=ACTIVE,
        note="no score from payload or the scoring job",
    ),
    Case("A07", "active", "fraud_check", "sys", "!invalid_input", payload={"score": 101}, data=ACTIVE),
    Case("A08", "active", "fraud_check", "sys", "suspended", extra={"fraud_score": 71}, data=ACTIVE),
    Case("A08", "active", "fraud_alert", "sys", "suspended", payload={"score": 90}, data=ACTIVE),
    Case(
        "A08",
        "active",
        "fraud_alert",
        "sys",
        "!guard_failed",
        payload={"score": 50},
        data=ACTIVE,
        note="an alert in the low/medium band is refused",
    ),
    Case("A09", "active", "fraud_check", "sys", "under_review", payload={"score": 91}, data=ACTIVE),
    Case("A09", "active", "fraud_alert", "sys", "under_review", payload={"score": 100}, data=ACTIVE),
    # A10 abuse report
    Case(
        "A10",
        "active",
        "abuse_report",
        "support",
        "suspended",
        payload={"evidence": "screenshots", "report_id": "ab-1"},
        data=ACTIVE,
    ),
    Case(
        "A10",
        "active",
        "abuse_report",
        "sys",
        "suspended",
        payload={"evidence": "spam", "report_id": "ab-2"},
        data=ACTIVE,
    ),
    Case(
        "A10",
        "active",
        "abuse_report",
        "support",
        "!invalid_input",
        payload={"report_id": "ab-1"},
        data=ACTIVE,
    ),
    Case(
        "A10",
        "active",
        "abuse_report",
        "finance",
        "!role_not_allowed",
        payload={"evidence": "x", "report_id": "ab-1"},
        data=ACTIVE,
    ),
    # A11 lock
    Case("A11", "active", "lock", "sys", "locked", payload={"reason": "compromised_account"}, data=ACTIVE),
    Case("A11", "onboarding", "lock", "cascade", "locked", payload={"reason": "chargeback"}),
    Case("A11", "suspended", "lock", "cascade", "locked", payload={"reason": "compliance"}),
    Case("A11", "under_review", "lock", "admin", "locked", payload={"reason_code": "manual"}),
    Case("A11", "active", "lock", "compliance", "locked", payload={"reason_code": "compliance"}, data=ACTIVE),
    Case(
        "A11",
        "active",
        "lock",
        "support",
        "!guard_failed",
        payload={"reason_code": "compliance"},
        data=ACTIVE,
        note="only compliance may claim a compliance lock",
    ),
    Case("A11", "active", "lock", "support", "!invalid_input", data=ACTIVE, note="reason code missing"),
    Case("A11", "active", "lock", "support", "!invalid_input", payload={"reason_code": "bored"}, data=ACTIVE),
    Case("A11", "active", "lock", "sys", "!guard_failed", payload={"reason": "bored"}, data=ACTIVE),
    Case("A11", "deactivated", "lock", "sys", "!invalid_transition", payload={"reason": "manual"}),
    Case(
        "A11",
        "active",
        "lock",
        "finance",
        "!role_not_allowed",
        payload={"reason_code": "manual"},
        data=ACTIVE,
    ),
    # A12 another lock reason
    Case(
        "A12",
        "locked",
        "lock",
        "cascade",
        "locked",
        payload={"reason": "chargeback"},
        data={"lock_reasons": ["compliance"]},
    ),
    Case(
        "A12",
        "locked",
        "lock",
        "cascade",
        "!guard_failed",
        payload={"reason": "compliance"},
        data={"lock_reasons": ["compliance"]},
        note="reasons are a set",
    ),
    # A13 unlock
    Case("A13", "locked", "unlock", "support", "active", payload=UNLOCK, data={"lock_reasons": ["manual"]}),
    Case(
        "A13",
        "locked",
        "unlock",
        "compliance",
        "active",
        payload=UNLOCK,
        data={"lock_reasons": ["manual", "compliance"]},
        peers={"compliance_audit": ("compliant",)},
    ),
    Case(
        "A13",
        "locked",
        "unlock",
        "cascade",
        "active",
        data={"lock_reasons": ["compliance"]},
        peers={"compliance_audit": ("compliant",)},
    ),
    Case(
        "A13",
        "locked",
        "unlock",
        "cascade",
        "!guard_failed",
        data={"lock_reasons": ["chargeback", "compliance"]},
        note="X24 clears compliance-owned reasons only",
    ),
    Case(
        "A13",
        "locked",
        "unlock",
        "support",
        "!invalid_input",
        payload={"verification_method": ["phone"]},
        data={"lock_reasons": ["manual"]},
        note="verifier missing",
    ),
    Case(
        "A13",
        "locked",
        "unlock",
        "support",
        "!guard_failed",
        payload={"verification_method": ["phone"], "verifier_id": "agent-7"},
        data={"lock_reasons": ["manual"]},
    ),
    Case(
        "A13",
        "locked",
        "unlock",
        "support",
        "!guard_failed",
        payload=UNLOCK,
        data={"lock_reasons": ["manual"]},
        peers={"compliance_audit": ("investigation",)},
    ),
    Case(
        "A13",
        "locked",
        "unlock",
        "manager",
        "!role_not_allowed",
        payload=UNLOCK,
        data={"lock_reasons": ["manual"]},
        note="managers approve, they do not request",
    ),
    # A14 issue resolved
    Case(
        "A14",
        "suspended",
        "issue_resolved",
        "manager",
        "active",
        payload={"resolution_note": "false alarm"},
        data={"suspension_causes": ["fraud"], "fraud_score": 60},
    ),
    Case(
        "A14",
        "suspended",
        "issue_resolved",
        "sys",
        "active",
        payload={"score": 40},
        data={"suspension_causes": ["fraud"], "fraud_score": 80},
    ),
    Case(
        "A14",
        "suspended",
        "issue_resolved",
        "sys",
        "active",
        payload={"abuse_resolved": True},
        data={"suspension_causes": ["abuse"]},
    ),
    Case("A14", "suspended", "issue_resolved", "sys", "!guard_failed", data={"suspension_causes": ["abuse"]}),
    Case(
        "A14",
        "suspended",
        "issue_resolved",
        "manager",
        "!guard_failed",
        payload={"resolution_note": "looks fine"},
        data={"suspension_causes": ["fraud"], "fraud_score": 85},
    ),
    Case(
        "A14",
        "suspended",
        "issue_resolved",
        "manager",
        "!invalid_input",
        data={"suspension_causes": ["abuse"]},
        note="resolution note required from staff",
    ),
    # A15 appeal received
    Case("A15", "suspended", "appeal_received", "sys", "suspended", payload={"text": "it was my brother"}),
    Case("A15", "suspended", "appeal_received", "support", "!invalid_input"),
    # A16 appeal accepted
    Case(
        "A16",
        "suspended",
        "appeal_accepted",
        "manager",
        "active",
        payload={"resolution_note": "valid"},
        data={"appeal_received_at": ago(days=1), "suspension_causes": ["abuse"]},
    ),
    Case(
        "A16", "suspended", "appeal_accepted", "manager", "!guard_failed", payload={"resolution_note": "ok"}
    ),
    Case(
        "A16",
        "suspended",
        "appeal_accepted",
        "support",
        "!role_not_allowed",
        payload={"resolution_note": "ok"},
    ),
    # A17 escalate to review
    Case("A17", "suspended", "escalate_to_review", "support", "under_review"),
    Case("A17", "suspended", "escalate_to_review", "manager", "under_review"),
    Case("A17", "active", "escalate_to_review", "manager", "!invalid_transition", data=ACTIVE),
    # A18 suspension timeout
    Case("A18", "suspended", "suspension_timeout", "timer", "deactivated"),
    # A19–A22 review decisions
    Case("A19", "under_review", "review_approved", "compliance", "active", payload={"findings": "clean"}),
    Case("A19", "under_review", "review_approved", "compliance", "!invalid_input"),
    Case("A19", "under_review", "review_approved", "manager", "!role_not_allowed", payload={"findings": "x"}),
    Case("A20", "under_review", "review_banned", "compliance", "deactivated"),
    Case("A21", "under_review", "appeal_denied", "compliance", "deactivated"),
    Case("A22", "under_review", "review_timeout", "timer", "deactivated"),
    # A23 close account
    Case(
        "A23",
        "active",
        "close_account",
        "support",
        "deactivated",
        payload={"customer_confirmation_ref": "mail-1"},
        data=ACTIVE,
        peers={"billing": ("payment_received",)},
    ),
    Case(
        "A23",
        "active",
        "close_account",
        "support",
        "!guard_failed",
        payload={"customer_confirmation_ref": "mail-1"},
        data=ACTIVE,
        peers={"billing": ("payment_disputed",)},
    ),
    Case("A23", "active", "close_account", "support", "!invalid_input", data=ACTIVE),
    # A24 / A24b reactivate
    Case(
        "A24",
        "deactivated",
        "reactivate",
        "support",
        "active",
        data={"is_verified": True, "deactivated_at": ago(days=29)},
    ),
    Case(
        "A24",
        "deactivated",
        "reactivate",
        "support",
        "!guard_failed",
        data={"is_verified": True, "deactivated_at": ago(days=31)},
    ),
    Case(
        "A24",
        "deactivated",
        "reactivate",
        "support",
        "!guard_failed",
        data={"is_verified": True, "banned": True, "deactivated_at": ago(days=1)},
    ),
    Case(
        "A24",
        "deactivated",
        "reactivate",
        "manager",
        "!role_not_allowed",
        data={"is_verified": True, "deactivated_at": ago(days=1)},
    ),
    Case(
        "A24b",
        "deactivated",
        "reactivate",
        "support",
        "onboarding",
        data={
            "is_verified": False,
            "deactivated_at": ago(days=20),
            "deactivation_cause": "onboarding_timeout",
        },
    ),
    Case(
        "A24b",
        "deactivated",
        "reactivate",
        "support",
        "onboarding",
        data={
            "deactivated_at": ago(days=6),
            "deactivation_cause": "kyc_failed",
            "resubmission_allowed": True,
        },
    ),
    Case(
        "A24b",
        "deactivated",
        "reactivate",
        "support",
        "!guard_failed",
        data={"deactivated_at": ago(days=8), "deactivation_cause": "kyc_failed"},
        note="KYC resubmission window is 7 d",
    ),
    Case(
        "A24b",
        "deactivated",
        "reactivate",
        "support",
        "!guard_failed",
        data={
            "deactivated_at": ago(days=1),
            "deactivation_cause": "kyc_failed",
            "resubmission_allowed": False,
        },
    ),
    # A25 retention / erasure from deactivated
    Case("A25", "deactivated", "retention_complete", "timer", "archived", peers=SETTLED),
    Case("A25", "deactivated", "erasure_request", "compliance", "archived", payload=ERASE, peers=SETTLED),
    Case(
        "A25",
        "deactivated",
        "retention_complete",
        "timer",
        "archived",
        peers={
            "compliance_audit": ("non_compliant",),
            "billing": (("collection_agency", {"written_off": True}),),
        },
        note="written-off invoices do not block",
    ),
    Case(
        "A25",
        "deactivated",
        "retention_complete",
        "timer",
        "!guard_failed",
        peers={"compliance_audit": ("compliant",), "billing": ("retry_2",)},
    ),
    Case(
        "A25",
        "deactivated",
        "retention_complete",
        "timer",
        "!guard_failed",
        peers={"compliance_audit": ("compliant",), "billing": ("payment_disputed",)},
    ),
    Case(
        "A25",
        "deactivated",
        "retention_complete",
        "timer",
        "!guard_failed",
        peers=SETTLED,
        extra={"legal_hold": True},
    ),
    Case(
        "A25",
        "deactivated",
        "retention_complete",
        "timer",
        "!guard_failed",
        peers={"compliance_audit": ("investigation",)},
    ),
    Case(
        "A25",
        "deactivated",
        "erasure_request",
        "compliance",
        "!guard_failed",
        payload={**ERASE, "customer_id": "cust-2"},
        peers=SETTLED,
    ),
    Case(
        "A25",
        "deactivated",
        "erasure_request",
        "compliance",
        "!invalid_input",
        payload={"customer_id": "cust-1", "legal_hold_checked": True},
        peers=SETTLED,
    ),
    Case("A25", "deactivated", "erasure_request", "admin", "!role_not_allowed", payload=ERASE, peers=SETTLED),
    Case(
        "A25",
        "deactivated",
        "retention_complete",
        "compliance",
        "!role_not_allowed",
        payload=ERASE,
        peers=SETTLED,
        note="staff send erasure_request; retention_complete is the timer's",
    ),
    # A26 erasure while locked
    Case("A26", "locked", "erasure_request", "compliance", "archived", payload=ERASE, peers=SETTLED),
    Case(
        "A26",
        "locked",
        "erasure_request",
        "compliance",
        "!guard_failed",
        payload=ERASE,
        peers={
            "compliance_audit": ("compliant",),
            "billing": (("collection_agency", {"written_off": True}),),
        },
        note="every billing cycle must be settled",
    ),
    Case(
        "A26",
        "locked",
        "erasure_request",
        "compliance",
        "!invalid_input",
        payload={"customer_id": "cust-1"},
        peers=SETTLED,
    ),
    # A27 activity
    Case("A27", "active", "activity_detected", "sys", "active", data=ACTIVE),
    Case("A27", "active", "inactivity_detected", "sys", "active", data=ACTIVE),
    # Ax rows: cascades into the account
    Case("Ax1", "suspended", "flag_delinquent", "cascade", "suspended"),
    Case("Ax1", "active", "flag_delinquent", "support", "!role_not_allowed", data=ACTIVE),
    Case(
        "Ax2", "active", "flag_kyc_reverification", "cascade", "active", payload={"active": True}, data=ACTIVE
    ),
    Case("Ax3", "active", "fraud_monitoring_on", "cascade", "active", data=ACTIVE),
    Case("Ax4", "active", "fraud_monitoring_off", "cascade", "active", data=ACTIVE),
    Case("Ax5", "active", "degraded_notice", "cascade", "active", data=ACTIVE),
    Case("Ax6", "locked", "maintenance_notice", "cascade", "locked", payload={"kind": "maintenance"}),
    Case("Ax7", "active", "usage_notice", "cascade", "active", payload={"kind": "overage"}, data=ACTIVE),
    Case("Ax7", "archived", "usage_notice", "cascade", "!terminal_state"),
    # Ax rows: self-events and sub-operations
    Case("Ax8", "locked", "lock_overdue", "timer", "locked"),
    Case("Ax9", "under_review", "review_reminder", "timer", "under_review"),
    Case("Ax10", "suspended", "fraud_check", "sys", "suspended", extra={"fraud_score": 55}),
    Case("Ax16", "active", "fraud_check_due", "timer", "active", data=ACTIVE),
    Case("Ax16", "suspended", "fraud_check_due", "timer", "suspended"),
    Case("Ax16", "active", "fraud_check_due", "support", "!role_not_allowed", data=ACTIVE),
    Case(
        "Ax11",
        "suspended",
        "abuse_report",
        "support",
        "suspended",
        payload={"evidence": "more logs", "report_id": "ab-2"},
        data={"abuse_reports": [{"report_id": "ab-1", "evidence": "logs"}]},
    ),
    Case(
        "Ax11",
        "suspended",
        "abuse_report",
        "sys",
        "!guard_failed",
        payload={"evidence": "again", "report_id": "ab-1"},
        data={"abuse_reports": [{"report_id": "ab-1", "evidence": "logs"}]},
    ),
    Case(
        "Ax12",
        "onboarding",
        "kyc_manual_review",
        "sys",
        "onboarding",
        payload={"provider_request_id": "kyc-1"},
    ),
    Case(
        "Ax13",
        "active",
        "update_payment_method",
        "sys",
        "active",
        payload={"method_token": "pm_1", "fingerprint": "fp1"},
        data=ACTIVE,
        extra={"payment_method_validated_at": ago(minutes=2)},
    ),
    Case(
        "Ax13",
        "locked",
        "update_payment_method",
        "support",
        "locked",
        payload={"method_token": "pm_1", "fingerprint": "fp1"},
        extra={"payment_method_validated_at": ago(minutes=1), "identity_verified": True},
    ),
    Case(
        "Ax13",
        "locked",
        "update_payment_method",
        "support",
        "!guard_failed",
        payload={"method_token": "pm_1", "fingerprint": "fp1"},
        extra={"payment_method_validated_at": ago(minutes=1)},
        note="locked: identity first",
    ),
    Case(
        "Ax13",
        "active",
        "update_payment_method",
        "sys",
        "!guard_failed",
        payload={"method_token": "pm_1", "fingerprint": "fp1"},
        data=ACTIVE,
        extra={"payment_method_validated_at": ago(minutes=6)},
        note="validation older than 5 min",
    ),
    Case(
        "Ax13",
        "active",
        "update_payment_method",
        "sys",
        "!guard_failed",
        payload={"method_token": "pm_2", "fingerprint": "fp1"},
        data={**ACTIVE, "payment_method_fingerprints": ["fp1"]},
        extra={"payment_method_validated_at": ago(minutes=1)},
        note="duplicate method",
    ),
    Case(
        "Ax13",
        "under_review",
        "update_payment_method",
        "sys",
        "!invalid_transition",
        payload={"method_token": "pm_1", "fingerprint": "fp1"},
    ),
    Case(
        "Ax14", "suspended", "update_comm_prefs", "sys", "suspended", payload={"channels": ["email", "sms"]}
    ),
    Case(
        "Ax14",
        "active",
        "update_comm_prefs",
        "sys",
        "!invalid_input",
        payload={"channels": ["fax"]},
        data=ACTIVE,
    ),
    Case(
        "Ax15",
        "onboarding",
        "update_billing_address",
        "sys",
        "onboarding",
        payload={"address": {"city": "Oslo"}},
        extra={"address_validated": True},
    ),
    Case(
        "Ax15",
        "onboarding",
        "update_billing_address",
        "sys",
        "!guard_failed",
        payload={"address": {"city": "Oslo"}},
    ),
    # Generic engine answers on this governor
    Case("A25", "archived", "erasure_request", "compliance", "!terminal_state", payload=ERASE),
    Case("A27", "active", "teleport", "sys", "!unknown_event", data=ACTIVE),
)


TABLE = Table(
    GOVERNOR,
    CASES,
    lambda case: account(case.state, case.data),
    facts=make_facts,
    rejection_row="unchecked",
    spec_rows={f"A{n:02d}" for n in range(1, 28)},
)
test_row, test_table_covers_every_row, test_every_row_id_is_from_the_spec_or_marked_added = TABLE.tests()
decided = TABLE.decided


# --------------------------------------------------------------------------- data changes


def test_lock_reasons_are_a_set() -> None:
    first = decided(
        Case("A11", "active", "lock", "sys", "locked", payload={"reason": "chargeback"}, data=ACTIVE)
    )
    assert first.changes["lock_reasons"] == ["chargeback"]
    assert first.changes["auto_unlock"] is False
    assert first.changes["locked_from"] == "active"
    second = decided(
        Case(
            "A12",
            "locked",
            "lock",
            "compliance",
            "locked",
            payload={"reason_code": "compliance"},
            data={"lock_reasons": ["chargeback"]},
        )
    )
    assert second.changes["lock_reasons"] == ["chargeback", "compliance"]
    assert second.self_transition
    assert second.timer_ops == ()


def test_unlock_records_identity_verification_and_forces_reset() -> None:
    out = decided(
        Case(
            "A13", "locked", "unlock", "support", "active", payload=UNLOCK, data={"lock_reasons": ["manual"]}
        )
    )
    assert out.changes["lock_reasons"] == []
    assert out.changes["identity_verification"] == ["document", "phone"]
    assert out.changes["identity_verifier"] == "agent-7"
    assert out.changes["two_factor_required"] is True
    assert [e.name for e in out.effects][:2] == ["account_force_password_reset", "account_require_mfa"]


def test_fraud_bands_record_score_and_choose_interval() -> None:
    low = decided(Case("A07", "active", "fraud_check", "sys", "active", payload={"score": 30}, data=ACTIVE))
    assert low.changes["fraud_score"] == 30
    assert low.changes["monitoring_every"] == "7d"
    assert low.changes["next_fraud_check_at"] == NOW + timedelta(days=7)
    medium = decided(
        Case("A07", "active", "fraud_check", "sys", "active", payload={"score": 31}, data=ACTIVE)
    )
    assert medium.changes["monitoring_every"] == "3d"
    assert medium.changes["next_fraud_check_at"] == NOW + timedelta(days=3)
    high = decided(
        Case("A08", "active", "fraud_check", "sys", "suspended", payload={"score": 71}, data=ACTIVE)
    )
    assert high.row_id == "A08"
    assert high.changes["monitoring_every"] == "1d"
    assert high.changes["suspension_causes"] == ["fraud"]
    assert (
        decided(
            Case("A08", "active", "fraud_check", "sys", "suspended", payload={"score": 90}, data=ACTIVE)
        ).row_id
        == "A08"
    )
    assert (
        decided(
            Case("A09", "active", "fraud_check", "sys", "under_review", payload={"score": 91}, data=ACTIVE)
        ).row_id
        == "A09"
    )


def test_fraud_bands_follow_settings() -> None:
    tighter = SETTINGS.override({"customer_account.fraud_medium_max": 60})
    facts = Facts(now=NOW, role="sys", payload={"score": 65}, settings=tighter)
    out = decide(GOVERNOR, account("active", ACTIVE), "fraud_alert", facts)
    assert isinstance(out, Decision)
    assert out.row_id == "A08"
    assert out.to_state == "suspended"


def test_review_timeout_bans_unless_configured_off() -> None:
    inst = account("under_review")
    out = decide(GOVERNOR, inst, "review_timeout", make_facts("timer", timer="review_timeout", seq=3))
    assert isinstance(out, Decision)
    assert out.changes["banned"] is True
    lenient = SETTINGS.override({"customer_account.review_timeout_bans": False})
    facts = Facts(now=NOW, role="timer", settings=lenient, timer="review_timeout", timer_seq=3)
    out = decide(GOVERNOR, inst, "review_timeout", facts)
    assert isinstance(out, Decision)
    assert "banned" not in out.changes
    assert out.changes["deactivation_cause"] == "review_timeout"


def test_ban_records_reason() -> None:
    out = decided(Case("A20", "under_review", "review_banned", "compliance", "deactivated"))
    assert out.changes["banned"] is True
    assert out.changes["ban_reason"] == REASON
    assert out.changes["deactivated_at"] == NOW


def test_kyc_reverification_flag_set_and_released() -> None:
    on = decided(
        Case("Ax2", "active", "flag_kyc_reverification", "cascade", "active", payload={"active": True})
    )
    assert on.changes["kyc_reverification"] is True
    off = decided(
        Case(
            "Ax2",
            "active",
            "flag_kyc_reverification",
            "cascade",
            "active",
            payload={"active": False},
            data={"kyc_reverification": True},
        )
    )
    assert off.changes["kyc_reverification"] is None


def test_comm_prefs_none_is_exclusive() -> None:
    out = decided(
        Case("Ax14", "active", "update_comm_prefs", "sys", "active", payload={"channels": ["sms", "none"]})
    )
    assert out.changes["comm_prefs"] == ["none"]


def test_payment_method_primary() -> None:
    out = decided(
        Case(
            "Ax13",
            "active",
            "update_payment_method",
            "sys",
            "active",
            payload={"method_token": "pm_9", "fingerprint": "fp9", "make_primary": True},
            data={"payment_method_fingerprints": ["fp1"]},
            extra={"payment_method_validated_at": ago(minutes=1)},
        )
    )
    assert out.changes["payment_method_fingerprints"] == ["fp1", "fp9"]
    assert out.changes["primary_payment_method"] == "pm_9"


# --------------------------------------------------------------------------- timers


def test_signup_arms_onboarding_timeout() -> None:
    out = decided(Case("A01", None, "signup", "sys", "onboarding"))
    assert armed(out) == {"onboarding_timeout": NOW + timedelta(days=7)}
    assert out.state_seq == 1


def test_kyc_passed_arms_weekly_fraud_check_and_cancels_onboarding_timer() -> None:
    timer = TimerState("onboarding_timeout", "onboarding_timeout", 3, due_at=NOW + timedelta(days=2))
    inst = replace(account("onboarding", ONBOARDED), timers={"onboarding_timeout": timer})
    out = decide(GOVERNOR, inst, "kyc_passed", make_facts(payload={"provider_request_id": "kyc-1"}))
    assert isinstance(out, Decision)
    assert [(op.op, op.timer.name) for op in out.timer_ops if op.op == "cancel"] == [
        ("cancel", "onboarding_timeout")
    ]
    assert armed(out) == {"fraud_check": NOW + timedelta(days=7)}


def test_fraud_check_timer_asks_the_scorer_and_its_answer_rearms_the_timer() -> None:
    timer = TimerState("fraud_check", "fraud_check_due", 3, due_at=NOW)
    inst = replace(account("active", {**ACTIVE, "next_fraud_check_at": NOW}), timers={"fraud_check": timer})
    due = decide(GOVERNOR, inst, "fraud_check_due", make_facts("timer", timer="fraud_check", seq=3))
    assert isinstance(due, Decision)
    assert due.self_transition
    assert [e.name for e in due.effects] == ["account_request_fraud_score"]
    assert armed(due) == {}
    answer = decide(GOVERNOR, inst, "fraud_check", make_facts("sys", payload={"score": 45}))
    assert isinstance(answer, Decision)
    assert answer.self_transition
    assert armed(answer) == {"fraud_check": NOW + timedelta(days=3)}


def test_stale_fraud_check_is_ignored() -> None:
    facts = make_facts("timer", timer="fraud_check", seq=2)
    out = decide(GOVERNOR, account("active", ACTIVE), "fraud_check_due", facts)
    assert isinstance(out, Rejection)
    assert out.code == "stale_timer"


def test_suspension_arms_30d_timeout_and_daily_check() -> None:
    out = decided(
        Case("A08", "active", "fraud_alert", "sys", "suspended", payload={"score": 80}, data=ACTIVE)
    )
    assert armed(out) == {
        "suspension_timeout": NOW + timedelta(days=30),
        "fraud_check": NOW + timedelta(days=1),
    }


def test_review_arms_timeout_and_reminder() -> None:
    out = decided(Case("A17", "suspended", "escalate_to_review", "manager", "under_review"))
    assert armed(out) == {
        "review_timeout": NOW + timedelta(days=14),
        "review_reminder": NOW + timedelta(days=10),
    }


def test_lock_arms_attention_timer_and_attention_follows_it() -> None:
    locked = decided(
        Case("A11", "active", "lock", "sys", "locked", payload={"reason": "manual"}, data=ACTIVE)
    )
    assert armed(locked) == {"lock_overdue": NOW + timedelta(days=7)}
    assert locked.attention is False
    overdue = decided(
        Case("Ax8", "locked", "lock_overdue", "timer", "locked", data={"lock_reasons": ["manual"]})
    )
    assert overdue.attention is True
    assert overdue.attention_reason.startswith("Locked for more than 7 days")


def test_deactivation_arms_retention_timer() -> None:
    out = decided(Case("A04", "onboarding", "kyc_failed", "sys", "deactivated"))
    assert armed(out) == {"retention_complete": NOW + timedelta(days=30)}


def test_reactivation_to_onboarding_gives_a_new_7d_window() -> None:
    out = decided(
        Case(
            "A24b",
            "deactivated",
            "reactivate",
            "support",
            "onboarding",
            data={"deactivated_at": ago(days=2)},
        )
    )
    assert armed(out) == {"onboarding_timeout": NOW + timedelta(days=7)}


def test_fraud_monitoring_on_pulls_the_next_check_forward() -> None:
    timer = TimerState("fraud_check", "fraud_check", 3, due_at=NOW + timedelta(days=6))
    inst = replace(
        account("active", {**ACTIVE, "next_fraud_check_at": NOW + timedelta(days=6)}),
        timers={"fraud_check": timer},
    )
    out = decide(GOVERNOR, inst, "fraud_monitoring_on", make_facts("cascade"))
    assert isinstance(out, Decision)
    assert out.changes["fraud_monitoring"] is True
    assert armed(out) == {"fraud_check": NOW + timedelta(days=1)}
    after = apply(inst, out)
    off = decide(GOVERNOR, after, "fraud_monitoring_off", make_facts("cascade"))
    assert isinstance(off, Decision)
    assert off.changes["fraud_monitoring"] is None
    assert armed(off) == {"fraud_check": NOW + timedelta(days=7)}


def test_onboarding_attention_while_kyc_in_manual_review() -> None:
    out = decided(
        Case(
            "Ax12",
            "onboarding",
            "kyc_manual_review",
            "sys",
            "onboarding",
            payload={"provider_request_id": "kyc-1"},
        )
    )
    assert out.attention is True
    passed = decided(
        Case(
            "A03",
            "onboarding",
            "kyc_passed",
            "sys",
            "active",
            payload={"provider_request_id": "kyc-1"},
            data={**ONBOARDED, "kyc_manual_review": True},
        )
    )
    assert passed.changes["kyc_manual_review"] is None


# --------------------------------------------------------------------------- four-eyes


@pytest.mark.parametrize(
    ("case", "approvers"),
    [
        (
            Case(
                "A13",
                "locked",
                "unlock",
                "support",
                "active",
                payload=UNLOCK,
                data={"lock_reasons": ["manual"]},
            ),
            ("manager", "compliance"),
        ),
        (
            Case(
                "A13",
                "locked",
                "unlock",
                "compliance",
                "active",
                payload=UNLOCK,
                data={"lock_reasons": ["manual"]},
            ),
            ("manager", "compliance"),
        ),
        (Case("A20", "under_review", "review_banned", "compliance", "deactivated"), ("manager",)),
        (
            Case(
                "A25",
                "deactivated",
                "erasure_request",
                "compliance",
                "archived",
                payload=ERASE,
                peers=SETTLED,
            ),
            ("compliance",),
        ),
        (
            Case("A26", "locked", "erasure_request", "compliance", "archived", payload=ERASE, peers=SETTLED),
            ("compliance",),
        ),
        (
            Case(
                "A03",
                "onboarding",
                "kyc_passed",
                "compliance",
                "active",
                payload={"provider_request_id": "k", "document_check": "passed", "provider_result": "failed"},
                data=ONBOARDED,
            ),
            ("compliance", "manager"),
        ),
    ],
    ids=["A13-support", "A13-compliance", "A20", "A25", "A26", "A03-override"],
)
def test_four_eyes_needed(case: Case, approvers: tuple[str, ...]) -> None:
    out = decided(case)
    assert out.needs_approval is not None
    assert out.needs_approval.approvers == approvers
    inst = account(case.state, case.data)
    approved = decide(
        GOVERNOR,
        inst,
        case.event,
        make_facts(case.role, case.payload, case.peers, case.extra, approved_by="u2"),
    )
    assert isinstance(approved, Decision)
    assert approved.needs_approval is None


@pytest.mark.parametrize(
    "case",
    [
        Case("A11", "active", "lock", "support", "locked", payload={"reason_code": "manual"}, data=ACTIVE),
        Case("A13", "locked", "unlock", "cascade", "active", data={"lock_reasons": ["compliance"]}),
        Case("A25", "deactivated", "retention_complete", "timer", "archived", peers=SETTLED),
        Case(
            "A03",
            "onboarding",
            "kyc_passed",
            "compliance",
            "active",
            payload={"provider_request_id": "k", "document_check": "passed"},
            data=ONBOARDED,
        ),
        Case("A21", "under_review", "appeal_denied", "compliance", "deactivated"),
    ],
    ids=["A11-protective", "A13-X24", "A25-timer", "A03-no-override", "A21"],
)
def test_single_actor(case: Case) -> None:
    assert decided(case).needs_approval is None


# --------------------------------------------------------------------------- cascades


def test_signup_starts_trial_and_compliance_record() -> None:
    out = decided(
        Case("A01", None, "signup", "sys", "onboarding", payload={"tier": "starter", "cycle": "monthly"})
    )
    assert emitted(out) == [
        ("Xi1", "subscription", "start_trial", {"tier": "starter", "cycle": "monthly"}, False),
        ("Xi2", "compliance_audit", "enroll", {"frameworks": None}, False),
    ]
    assert all(c.select == "new" for c in out.cascades)


def test_lock_emits_x12_must_suspend_dunning_hold_and_security_event() -> None:
    out = decided(
        Case("A11", "active", "lock", "sys", "locked", payload={"reason": "compromised_account"}, data=ACTIVE)
    )
    assert emitted(out) == [
        ("X12", "entitlement", "suspend", {"hold": "account_locked"}, True),
        ("X12", "billing", "dunning_hold", {"hold": "account_locked"}, False),
        (
            "X12",
            "compliance_audit",
            "security_event",
            {"kind": "account_locked", "lock_reasons": ["compromised_account"]},
            False,
        ),
    ]
    added = decided(
        Case(
            "A12",
            "locked",
            "lock",
            "cascade",
            "locked",
            payload={"reason": "chargeback"},
            data={"lock_reasons": ["manual"]},
        )
    )
    assert added.cascades == ()


def test_unlock_emits_x13_and_lifts_leftover_account_holds() -> None:
    out = decided(
        Case(
            "A13", "locked", "unlock", "support", "active", payload=UNLOCK, data={"lock_reasons": ["manual"]}
        )
    )
    assert emitted(out) == [
        ("X13", "entitlement", "lift_hold", {"hold": "account_locked"}, False),
        ("X13", "billing", "dunning_release", {"hold": "account_locked"}, False),
        ("Xi3", "entitlement", "lift_hold", {"hold": "account_suspended"}, False),
        ("Xi4", "entitlement", "lift_hold", {"hold": "account_review"}, False),
    ]


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        (
            Case("A08", "active", "fraud_alert", "sys", "suspended", payload={"score": 75}, data=ACTIVE),
            [("X14", "entitlement", "suspend", {"hold": "account_suspended"}, False)],
        ),
        (
            Case(
                "A10",
                "active",
                "abuse_report",
                "sys",
                "suspended",
                payload={"evidence": "e", "report_id": "r"},
            ),
            [("X14", "entitlement", "suspend", {"hold": "account_suspended"}, False)],
        ),
        (
            Case(
                "A14",
                "suspended",
                "issue_resolved",
                "sys",
                "active",
                payload={"score": 10},
                data={"suspension_causes": ["fraud"]},
            ),
            [("X14", "entitlement", "lift_hold", {"hold": "account_suspended"}, False)],
        ),
        (
            Case(
                "A16",
                "suspended",
                "appeal_accepted",
                "manager",
                "active",
                payload={"resolution_note": "ok"},
                data={"appeal_received_at": NOW},
            ),
            [("X14", "entitlement", "lift_hold", {"hold": "account_suspended"}, False)],
        ),
        (
            Case("A05", "onboarding", "fraud_detected", "sys", "under_review", payload={"score": 92}),
            [
                ("X15", "entitlement", "suspend", {"hold": "account_review"}, False),
                (
                    "X18",
                    "compliance_audit",
                    "anomaly_detected",
                    {"score": 92, "indicators": ["onboarding_fraud"]},
                    False,
                ),
            ],
        ),
        (
            Case("A09", "active", "fraud_check", "sys", "under_review", payload={"score": 95}, data=ACTIVE),
            [
                ("X15", "entitlement", "suspend", {"hold": "account_review"}, False),
                (
                    "X15",
                    "compliance_audit",
                    "anomaly_detected",
                    {"score": 95, "indicators": ["account_review"]},
                    False,
                ),
            ],
        ),
        (
            Case(
                "A17", "suspended", "escalate_to_review", "support", "under_review", data={"fraud_score": 80}
            ),
            [
                ("X15", "entitlement", "suspend", {"hold": "account_review"}, False),
                (
                    "X15",
                    "compliance_audit",
                    "anomaly_detected",
                    {"score": 80, "indicators": ["account_review"]},
                    False,
                ),
            ],
        ),
        (
            Case(
                "A19", "under_review", "review_approved", "compliance", "active", payload={"findings": "ok"}
            ),
            [
                ("X15", "entitlement", "lift_hold", {"hold": "account_review"}, False),
                ("Xi3", "entitlement", "lift_hold", {"hold": "account_suspended"}, False),
            ],
        ),
        (
            Case(
                "A03",
                "onboarding",
                "kyc_passed",
                "sys",
                "active",
                payload={"provider_request_id": "k"},
                data=ONBOARDED,
            ),
            [
                ("X18", "compliance_audit", "kyc_verified", {}, False),
                ("X18", "entitlement", "start_approval_clock", {}, False),
            ],
        ),
        (
            Case("A25", "deactivated", "retention_complete", "timer", "archived", peers=SETTLED),
            [("X17", "compliance_audit", "start_retention", {}, True)],
        ),
        (
            Case("A26", "locked", "erasure_request", "compliance", "archived", payload=ERASE, peers=SETTLED),
            [("X17", "compliance_audit", "start_retention", {}, True)],
        ),
        (
            Case(
                "Ax13",
                "suspended",
                "update_payment_method",
                "sys",
                "suspended",
                payload={"method_token": "pm_5", "fingerprint": "fp5"},
                extra={"payment_method_validated_at": NOW},
            ),
            [("X19", "billing", "payment_method_updated", {"method_token": "pm_5"}, False)],
        ),
    ],
    ids=["A08", "A10", "A14", "A16", "A05", "A09", "A17", "A19", "A03", "A25", "A26", "Ax13"],
)
def test_cascades(case: Case, expected: list[tuple[str, str, str, dict[str, Any], bool]]) -> None:
    assert emitted(decided(case)) == expected


X16 = [
    ("X16", "subscription", "account_closed", {}, False),
    ("X16", "entitlement", "cancel_early", {}, False),
    ("X16", "entitlement", "escalate_to_cancellation", {}, False),
]


@pytest.mark.parametrize(
    "case",
    [
        Case("A18", "suspended", "suspension_timeout", "timer", "deactivated"),
        Case("A20", "under_review", "review_banned", "compliance", "deactivated"),
        Case("A21", "under_review", "appeal_denied", "compliance", "deactivated"),
        Case("A22", "under_review", "review_timeout", "timer", "deactivated"),
        Case(
            "A23",
            "active",
            "close_account",
            "support",
            "deactivated",
            payload={"customer_confirmation_ref": "m"},
        ),
    ],
    ids=["A18", "A20", "A21", "A22", "A23"],
)
def test_deactivation_emits_x16(case: Case) -> None:
    assert emitted(decided(case)) == X16


def test_no_cascade_from_quiet_rows() -> None:
    for case in (
        Case("A02", "onboarding", "email_verified", "sys", "onboarding"),
        Case("A04", "onboarding", "kyc_failed", "sys", "deactivated"),
        Case("A06", "onboarding", "onboarding_timeout", "timer", "deactivated"),
        Case("A24", "deactivated", "reactivate", "support", "active", data={"is_verified": True}),
        Case("A27", "active", "activity_detected", "sys", "active"),
    ):
        assert decided(case).cascades == (), case.row


# --------------------------------------------------------------------------- where guards (cascade targets)


@pytest.mark.parametrize(
    ("name", "governor", "state", "data", "payload", "expected"),
    [
        ("account_entitlement_can_take_hold", "entitlement", "active", {}, {"hold": "account_locked"}, True),
        (
            "account_entitlement_can_take_hold",
            "entitlement",
            "suspended",
            {"holds": ["payment_failed"]},
            {"hold": "account_locked"},
            True,
        ),
        (
            "account_entitlement_can_take_hold",
            "entitlement",
            "suspended",
            {"holds": ["account_locked"]},
            {"hold": "account_locked"},
            False,
        ),
        (
            "account_entitlement_can_take_hold",
            "entitlement",
            "pending_approval",
            {},
            {"hold": "account_locked"},
            False,
        ),
        (
            "account_entitlement_can_take_hold",
            "entitlement",
            "archived",
            {},
            {"hold": "account_locked"},
            False,
        ),
        (
            "account_entitlement_has_hold",
            "entitlement",
            "suspended",
            {"holds": ["account_locked"]},
            {"hold": "account_locked"},
            True,
        ),
        (
            "account_entitlement_has_hold",
            "entitlement",
            "suspended",
            {"holds": ["payment_failed"]},
            {"hold": "account_locked"},
            False,
        ),
        ("account_entitlement_is_active", "entitlement", "active", {}, {}, True),
        ("account_entitlement_is_active", "entitlement", "suspended", {}, {}, False),
        ("account_entitlement_is_suspended", "entitlement", "suspended", {}, {}, True),
        ("account_entitlement_is_pending", "entitlement", "pending_approval", {}, {}, True),
        ("account_entitlement_is_pending", "entitlement", "active", {}, {}, False),
        ("account_invoice_open", "billing", "retry_1", {}, {}, True),
        ("account_invoice_open", "billing", "payment_received", {}, {}, False),
        ("account_invoice_open", "billing", "archived", {}, {}, False),
        ("account_invoice_in_dunning", "billing", "retry_3", {}, {}, True),
        ("account_invoice_in_dunning", "billing", "collection_agency", {}, {}, False),
        ("account_compliance_open", "compliance_audit", "investigation", {}, {}, True),
        ("account_compliance_open", "compliance_audit", "data_retention", {}, {}, False),
        ("account_compliance_is_compliant", "compliance_audit", "compliant", {}, {}, True),
        ("account_compliance_is_compliant", "compliance_audit", "investigation", {}, {}, False),
        ("account_subscription_closable", "subscription", "renewal_grace", {}, {}, True),
        ("account_subscription_closable", "subscription", "archived", {}, {}, False),
    ],
)
def test_where_guards(
    name: str, governor: str, state: str, data: dict[str, Any], payload: dict[str, Any], expected: bool
) -> None:
    assert (
        where(
            name,
            Instance(governor, "t1", state, 1, customer_id="cust-1", data=dict(data or {})),
            payload=payload,
        )
        is expected
    )


# --------------------------------------------------------------------------- plans across governors


def test_plan_x24_unlocks_only_compliance_locks() -> None:
    comp = Instance(
        "compliance_audit", "comp-1", "investigation", 2, customer_id="cust-1", data={"violations": []}
    )
    acct = account("locked", {"lock_reasons": ["compliance"]})
    facts = make_facts("compliance", {"findings": "nothing found"}, approved_by="u2")
    result = plan({"comp-1": comp, "acct-1": acct}, "comp-1", "investigation_cleared", facts)
    assert result.ok, result.alerts
    steps = [(s.governor, s.event, s.status) for s in result.steps]
    assert ("customer_account", "unlock", "applied") in steps
    assert result.instances["acct-1"].state == "active"

    both = account("locked", {"lock_reasons": ["chargeback", "compliance"]})
    result = plan({"comp-1": comp, "acct-1": both}, "comp-1", "investigation_cleared", facts)
    assert result.instances["acct-1"].state == "locked"
    assert all(s.event != "unlock" for s in result.steps)


def test_plan_erasure_starts_retention() -> None:
    comp = Instance(
        "compliance_audit", "comp-1", "compliant", 2, customer_id="cust-1", data={"frameworks": ["GDPR"]}
    )
    acct = account("deactivated", {"deactivated_at": ago(days=30)})
    facts = make_facts("timer", timer="retention_complete", seq=3)
    result = plan({"comp-1": comp, "acct-1": acct}, "acct-1", "retention_complete", facts)
    assert result.ok, result.alerts
    assert result.instances["acct-1"].state == "archived"
    assert result.instances["comp-1"].state == "data_retention"
    assert result.instances["comp-1"].data["retention_until"] == datetime(2033, 1, 15, 12, tzinfo=UTC)


def test_plan_signup_creates_trial_and_compliance_record() -> None:
    new = account(None)
    result = plan({}, new, "signup", make_facts(payload={"tier": "starter"}))
    applied = {(s.governor, s.event, s.cascade) for s in result.steps if s.status == "applied"}
    assert ("customer_account", "signup", None) in applied
    assert ("subscription", "start_trial", "Xi1") in applied
    assert ("compliance_audit", "enroll", "Xi2") in applied
    comp = next(i for i in result.instances.values() if i.governor == "compliance_audit")
    assert comp.state == "compliant"
    assert comp.data["next_verification_at"] == NOW + timedelta(days=365)


def test_plan_lockdown_suspends_entitlements_and_holds_dunning() -> None:
    ent = Instance(
        "entitlement", "ent-1", "active", 2, customer_id="cust-1", subject_id="sku-1", data={"holds": []}
    )
    pending = Instance(
        "entitlement", "ent-2", "pending_approval", 1, customer_id="cust-1", subject_id="sku-2"
    )
    inv = Instance("billing", "inv-1", "retry_1", 3, customer_id="cust-1", subject_id="inv-1")
    snap = {i.id: i for i in (ent, pending, inv, account("active", ACTIVE))}
    facts = make_facts("support", {"reason_code": "compromised_account"})
    result = plan(snap, "acct-1", "lock", facts)
    assert result.ok, result.alerts
    assert result.instances["ent-1"].state == "suspended"
    assert list(result.instances["ent-1"].data["holds"]) == ["account_locked"]
    assert result.instances["ent-2"].state == "pending_approval"
    assert [(s.instance_id, s.event, s.cascade) for s in result.steps[1:]] == [
        ("ent-1", "suspend", "X12"),
        ("inv-1", "dunning_hold", "X12"),
    ]
    unlock = make_facts("support", UNLOCK, approved_by="u2")
    back = plan(dict(result.instances), "acct-1", "unlock", unlock)
    assert back.ok, back.alerts
    assert back.instances["acct-1"].state == "active"
    assert back.instances["ent-1"].state == "active"
