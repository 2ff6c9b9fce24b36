"""Compliance & Audit governor (GOVERNORS.md §7): every row, its rejections, timers, four-eyes, cascades."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pytest

from governors import Decision, Instance, apply, decide, plan
from governors.definitions.compliance_audit import GOVERNOR
from governors.facts import TimerState
from tests.governors import tables
from tests.governors.tables import NOW, SETTINGS, Case, Instances, Table, ago, armed, emitted, where

GOV = "compliance_audit"
REASON = "case 881: periodic review"
make_facts = partial(tables.make_facts, reason=REASON)

FAILED = {"non_compliant_cause": "verification", "verification_attempts": 1}
ARCHIVED_ACCOUNT = {"customer_account": ("archived",)}


record = Instances(GOV, "comp-1", 4, customer_id="cust-1", subject_id="cust-1")


CASES: tuple[Case, ...] = (
    # Cx1 enroll (creation)
    Case("Cx1", None, "enroll", "cascade", "compliant"),
    Case("Cx1", None, "enroll", "sys", "compliant", payload={"frameworks": ["GDPR", "PCI-DSS"]}),
    Case("Cx1", None, "enroll", "sys", "!invalid_input", payload={"frameworks": ["ISO9001"]}),
    Case("Cx1", None, "enroll", "compliance", "!role_not_allowed"),
    Case("Cx1", "compliant", "enroll", "cascade", "!invalid_transition"),
    Case("Cx1", None, "request_verification", "compliance", "!not_created"),
    # C01 / C02 verification requested
    Case("C01", "compliant", "verification_due", "timer", "verification_pending"),
    Case("C01", "compliant", "verification_due", "compliance", "!role_not_allowed"),
    Case("C02", "compliant", "request_verification", "compliance", "verification_pending"),
    Case("C02", "compliant", "request_verification", "support", "!role_not_allowed"),
    Case(
        "C02", "compliant", "request_verification", "compliance", "!invalid_input", payload={"reason": "kyc"}
    ),
    Case("C02", "investigation", "request_verification", "compliance", "!invalid_transition"),
    # C03 verification passed
    Case(
        "C03",
        "verification_pending",
        "verification_passed",
        "sys",
        "compliant",
        payload={"provider_ref": "prov-1"},
    ),
    Case(
        "C03",
        "verification_pending",
        "verification_passed",
        "compliance",
        "compliant",
        payload={"provider_ref": "prov-1"},
    ),
    Case(
        "C03",
        "verification_pending",
        "verification_passed",
        "sys",
        "!guard_failed",
        payload={"provider_ref": "prov-1"},
        extra={"fraud_indicators": ["velocity"]},
    ),
    Case(
        "C03",
        "verification_pending",
        "verification_passed",
        "sys",
        "!guard_failed",
        payload={"provider_ref": "prov-1", "fraud_indicators": ["geo"]},
    ),
    Case("C03", "verification_pending", "verification_passed", "sys", "!invalid_input"),
    # C04 verification failed / deadline
    Case(
        "C04",
        "verification_pending",
        "verification_failed",
        "sys",
        "non_compliant",
        payload={"provider_ref": "p"},
    ),
    Case("C04", "verification_pending", "verification_deadline", "timer", "non_compliant"),
    Case(
        "C04",
        "verification_pending",
        "verification_failed",
        "compliance",
        "non_compliant",
        payload={"provider_ref": "prov-2"},
    ),
    Case("C04", "verification_pending", "verification_failed", "compliance", "!invalid_input"),
    Case("C04", "verification_pending", "verification_failed", "support", "!role_not_allowed"),
    Case(
        "C04",
        "verification_pending",
        "verification_deadline",
        "compliance",
        "!role_not_allowed",
        payload={"provider_ref": "prov-2"},
        note="the deadline is the timer's event",
    ),
    # C05 resubmission
    Case(
        "C05",
        "non_compliant",
        "resubmission_received",
        "sys",
        "verification_pending",
        data={**FAILED, "verification_failed_at": ago(days=3)},
    ),
    Case(
        "C05",
        "non_compliant",
        "resubmission_received",
        "support",
        "verification_pending",
        data={**FAILED, "verification_attempts": 2, "verification_failed_at": ago(days=7)},
    ),
    Case(
        "C05",
        "non_compliant",
        "resubmission_received",
        "sys",
        "!guard_failed",
        data={**FAILED, "verification_failed_at": ago(days=8)},
        note="7 d window",
    ),
    Case(
        "C05",
        "non_compliant",
        "resubmission_received",
        "sys",
        "!guard_failed",
        data={**FAILED, "verification_attempts": 3, "verification_failed_at": ago(days=1)},
        note="attempts < 3",
    ),
    Case(
        "C05",
        "non_compliant",
        "resubmission_received",
        "sys",
        "!guard_failed",
        data={"non_compliant_cause": "violation"},
        note="only after a verification failure",
    ),
    Case("C05", "non_compliant", "resubmission_received", "compliance", "!role_not_allowed", data=FAILED),
    # C06 anomaly
    Case("C06", "compliant", "anomaly_detected", "sys", "fraud_detection_active", payload={"score": 70}),
    Case(
        "C06",
        "compliant",
        "anomaly_detected",
        "sys",
        "fraud_detection_active",
        payload={"score": 20, "indicators": ["impossible_travel"]},
    ),
    Case(
        "C06",
        "compliant",
        "anomaly_detected",
        "cascade",
        "fraud_detection_active",
        payload={"indicators": ["chargeback"]},
    ),
    Case("C06", "compliant", "anomaly_detected", "sys", "!guard_failed", payload={"score": 69}),
    Case("C06", "compliant", "anomaly_detected", "sys", "!invalid_input", payload={"score": 101}),
    Case("C06", "investigation", "anomaly_detected", "cascade", "!invalid_transition"),
    # C07 fraud cleared
    Case(
        "C07",
        "fraud_detection_active",
        "fraud_check_passed",
        "compliance",
        "compliant",
        payload={"review_notes": "no fraud"},
        data={"flagged_at": ago(hours=25)},
    ),
    Case(
        "C07",
        "fraud_detection_active",
        "fraud_check_passed",
        "compliance",
        "!guard_failed",
        payload={"review_notes": "no fraud"},
        data={"flagged_at": ago(hours=23)},
    ),
    Case(
        "C07",
        "fraud_detection_active",
        "fraud_check_passed",
        "compliance",
        "!guard_failed",
        payload={"review_notes": "no fraud"},
        data={"flagged_at": ago(days=3)},
        extra={"last_suspicious_activity_at": ago(hours=2)},
    ),
    Case(
        "C07",
        "fraud_detection_active",
        "fraud_check_passed",
        "compliance",
        "!invalid_input",
        data={"flagged_at": ago(days=3)},
    ),
    Case(
        "C07",
        "fraud_detection_active",
        "fraud_check_passed",
        "sys",
        "!role_not_allowed",
        payload={"review_notes": "x"},
    ),
    # C08 fraud confirmed
    Case(
        "C08",
        "fraud_detection_active",
        "fraud_confirmed",
        "compliance",
        "investigation",
        payload={"tx_ids": ["tx-9"]},
    ),
    Case(
        "C08",
        "fraud_detection_active",
        "fraud_confirmed",
        "sys",
        "investigation",
        payload={"tx_ids": ["tx-1", "tx-2"]},
    ),
    Case(
        "C08",
        "fraud_detection_active",
        "fraud_confirmed",
        "sys",
        "!guard_failed",
        payload={"tx_ids": ["tx-1", "tx-1"]},
        note="the system needs two distinct flagged transactions",
    ),
    Case("C08", "fraud_detection_active", "fraud_confirmed", "compliance", "!invalid_input"),
    # C09 investigation opened
    Case(
        "C09",
        "compliant",
        "violation_detected",
        "compliance",
        "investigation",
        payload={"kind": "regulatory_concern", "description": "complaint from regulator"},
    ),
    Case(
        "C09",
        "compliant",
        "violation_detected",
        "sys",
        "investigation",
        payload={"kind": "data_breach", "description": "bucket exposed", "incident_id": "inc-1"},
    ),
    Case(
        "C09",
        "compliant",
        "violation_detected",
        "compliance",
        "!invalid_input",
        payload={"kind": "gossip", "description": "x"},
    ),
    Case(
        "C09",
        "compliant",
        "violation_detected",
        "compliance",
        "!invalid_input",
        payload={"kind": "violation"},
    ),
    # C10 investigation cleared
    Case(
        "C10",
        "investigation",
        "investigation_cleared",
        "compliance",
        "compliant",
        payload={"findings": "unfounded"},
    ),
    Case(
        "C10",
        "investigation",
        "investigation_cleared",
        "compliance",
        "!guard_failed",
        payload={"findings": "unfounded"},
        data={"violations": [{"control": "a.1"}]},
    ),
    Case(
        "C10",
        "investigation",
        "investigation_cleared",
        "manager",
        "!role_not_allowed",
        payload={"findings": "unfounded"},
    ),
    # C11 violation confirmed
    Case(
        "C11",
        "investigation",
        "violation_confirmed",
        "compliance",
        "non_compliant",
        payload={
            "violations": [{"framework": "GDPR", "control": "art-32", "severity": "high"}],
            "notify_regulator": True,
        },
    ),
    Case(
        "C11",
        "investigation",
        "violation_confirmed",
        "compliance",
        "!invalid_input",
        payload={"violations": ["art-32"]},
    ),
    Case(
        "C11",
        "investigation",
        "violation_confirmed",
        "compliance",
        "!invalid_input",
        payload={"violations": ["art-32"], "notify_regulator": False, "deadline": "2026-02-01"},
        note="deadline without a time zone",
    ),
    # C12 audit failed
    Case(
        "C12",
        "compliant",
        "audit_failed",
        "sys",
        "non_compliant",
        payload={"framework": "SOC2", "violations": ["cc6.1", "cc7.2"]},
    ),
    Case(
        "C12",
        "compliant",
        "audit_failed",
        "sys",
        "!guard_failed",
        payload={"framework": "SOC2", "violations": []},
    ),
    Case(
        "C12",
        "compliant",
        "audit_failed",
        "sys",
        "!invalid_input",
        payload={"framework": "ISO", "violations": ["x"]},
    ),
    # C13 remediation plan
    Case(
        "C13",
        "non_compliant",
        "remediation_plan_approved",
        "compliance",
        "remediation_in_progress",
        payload={"plan": "rotate keys, retrain staff"},
    ),
    Case("C13", "non_compliant", "remediation_plan_approved", "compliance", "!invalid_input"),
    # C14 appeal / enforcement
    Case("C14", "non_compliant", "customer_appeal", "compliance", "non_compliant"),
    Case("C14", "non_compliant", "escalate_to_enforcement", "compliance", "non_compliant"),
    Case("C14", "non_compliant", "customer_appeal", "support", "!role_not_allowed"),
    # C15 remediation completed
    Case(
        "C15",
        "remediation_in_progress",
        "remediation_completed",
        "compliance",
        "compliant",
        payload={"steps_verified": True},
    ),
    Case(
        "C15",
        "remediation_in_progress",
        "remediation_completed",
        "compliance",
        "compliant",
        payload={"steps_verified": True, "signoff_ref": "ico-77"},
        data={"regulator_notified": True},
    ),
    Case(
        "C15",
        "remediation_in_progress",
        "remediation_completed",
        "compliance",
        "!guard_failed",
        payload={"steps_verified": True},
        data={"regulator_notified": True},
        note="regulator sign-off needed",
    ),
    Case(
        "C15",
        "remediation_in_progress",
        "remediation_completed",
        "compliance",
        "!guard_failed",
        payload={"steps_verified": False},
    ),
    Case("C15", "remediation_in_progress", "remediation_completed", "compliance", "!invalid_input"),
    # C16 remediation failed / deadline
    Case("C16", "remediation_in_progress", "remediation_failed", "compliance", "non_compliant"),
    Case("C16", "remediation_in_progress", "remediation_deadline", "timer", "non_compliant"),
    Case("C16", "remediation_in_progress", "remediation_deadline", "compliance", "!role_not_allowed"),
    # C17 start retention
    Case("C17", "compliant", "start_retention", "cascade", "data_retention", peers=ARCHIVED_ACCOUNT),
    Case(
        "C17",
        "non_compliant",
        "start_retention",
        "cascade",
        "data_retention",
        extra={"source_governor": "customer_account"},
    ),
    Case(
        "C17",
        "compliant",
        "start_retention",
        "compliance",
        "data_retention",
        payload={"erasure_ref": "gdpr-17-42"},
        peers={"customer_account": ("deactivated",)},
    ),
    Case(
        "C17",
        "compliant",
        "start_retention",
        "compliance",
        "data_retention",
        extra={"retention_period_expired": True},
        peers={"billing": ("archived",)},
    ),
    Case(
        "C17",
        "compliant",
        "start_retention",
        "compliance",
        "!invalid_input",
        peers={"customer_account": ("deactivated",)},
        note="manual retention needs the erasure reference",
    ),
    Case(
        "C17",
        "compliant",
        "start_retention",
        "cascade",
        "!guard_failed",
        peers={"customer_account": ("deactivated",)},
        note="no trigger",
    ),
    Case(
        "C17",
        "compliant",
        "start_retention",
        "cascade",
        "!guard_failed",
        peers={**ARCHIVED_ACCOUNT, "billing": ("payment_disputed",)},
    ),
    Case(
        "C17",
        "compliant",
        "start_retention",
        "cascade",
        "!guard_failed",
        peers={**ARCHIVED_ACCOUNT, "entitlement": ("refund_issued",)},
    ),
    Case(
        "C17",
        "compliant",
        "start_retention",
        "cascade",
        "!guard_failed",
        peers={**ARCHIVED_ACCOUNT, "entitlement": (("cancelled", {"refund_due_cents": 500}),)},
    ),
    Case(
        "C17",
        "compliant",
        "start_retention",
        "cascade",
        "!guard_failed",
        peers={**ARCHIVED_ACCOUNT, "billing": ("payment_pending",)},
    ),
    Case(
        "C17",
        "compliant",
        "start_retention",
        "cascade",
        "!guard_failed",
        peers=ARCHIVED_ACCOUNT,
        data={"legal_hold": True},
    ),
    Case(
        "C17",
        "compliant",
        "start_retention",
        "cascade",
        "!guard_failed",
        peers=ARCHIVED_ACCOUNT,
        extra={"legal_hold": True},
    ),
    Case("C17", "investigation", "start_retention", "cascade", "!invalid_transition", peers=ARCHIVED_ACCOUNT),
    Case("C17", "compliant", "start_retention", "admin", "!role_not_allowed", payload={"erasure_ref": "g"}),
    Case("C17", "data_retention", "start_retention", "cascade", "!terminal_state"),
    # Cx rows: cascades in and self-events
    Case(
        "Cx2",
        "investigation",
        "security_event",
        "cascade",
        "investigation",
        payload={"kind": "account_locked"},
    ),
    Case("Cx3", "compliant", "kyc_verified", "cascade", "compliant"),
    Case("Cx3", "compliant", "kyc_verified", "compliance", "!role_not_allowed"),
    Case(
        "Cx4", "non_compliant", "maintenance_logged", "cascade", "non_compliant", payload={"kind": "restored"}
    ),
    Case("Cx5", "remediation_in_progress", "deadline_approaching", "timer", "remediation_in_progress"),
    Case("Cx6", "investigation", "investigation_overdue", "timer", "investigation"),
    Case("Cx6", "investigation", "investigation_overdue", "timer", "!stale_timer", stale=True),
    Case(
        "Cx7",
        "compliant",
        "breach_phase_update",
        "compliance",
        "compliant",
        payload={"incident_id": "inc-1", "phase": "detected"},
    ),
    Case(
        "Cx7",
        "investigation",
        "breach_phase_update",
        "sys",
        "investigation",
        payload={"incident_id": "inc-1", "phase": "contained"},
        data={"breach_incidents": [{"incident_id": "inc-1", "phase": "detected"}]},
    ),
    Case(
        "Cx7",
        "investigation",
        "breach_phase_update",
        "compliance",
        "!guard_failed",
        payload={"incident_id": "inc-1", "phase": "detected"},
        data={"breach_incidents": [{"incident_id": "inc-1", "phase": "contained"}]},
        note="no going back",
    ),
    Case(
        "Cx7",
        "compliant",
        "breach_phase_update",
        "compliance",
        "!guard_failed",
        payload={"incident_id": "inc-2", "phase": "remediated"},
        note="new incidents start at detected",
    ),
    Case(
        "Cx7",
        "compliant",
        "breach_phase_update",
        "compliance",
        "!invalid_input",
        payload={"incident_id": "inc-2", "phase": "forgotten"},
    ),
    Case("Cx8", "verification_pending", "verification_reminder", "timer", "verification_pending"),
    Case("Cx8", "verification_pending", "bake", "sys", "!unknown_event"),
)


TABLE = Table(
    GOVERNOR,
    CASES,
    lambda case: record(case.state, case.data),
    facts=make_facts,
    rejection_row="if_named",
    spec_rows={f"C{n:02d}" for n in range(1, 18)},
)
test_row, test_table_covers_every_row, test_every_row_id_is_from_the_spec_or_marked_added = TABLE.tests()
decided = TABLE.decided


# --------------------------------------------------------------------------- data changes


def test_enroll_sets_frameworks_and_first_verification() -> None:
    out = decided(Case("Cx1", None, "enroll", "cascade", "compliant", payload={"frameworks": None}))
    assert out.changes["frameworks"] == ["GDPR"]
    assert out.changes["next_verification_at"] == NOW + timedelta(days=365)
    assert out.changes["violations"] == []


def test_security_events_keep_the_latest_and_count_them_all() -> None:
    def recorded(data: dict[str, Any], kept: int | None = None) -> Mapping[str, Any]:
        case = Case(
            "Cx2",
            "compliant",
            "security_event",
            "cascade",
            "compliant",
            data=data,
            payload={"kind": "account_locked"},
        )
        settings = (
            SETTINGS if kept is None else SETTINGS.override({"compliance_audit.security_events_kept": kept})
        )
        return decided(case, settings=settings).changes

    first = recorded({})
    assert first["security_event_count"] == 1
    assert first["security_events"] == [{"kind": "account_locked", "at": NOW}]
    old = [{"kind": "account_locked", "at": ago(days=d)} for d in range(30, 0, -1)]
    # A record from before the count was kept starts counting from its list.
    assert recorded({"security_events": old[:5]})["security_event_count"] == 6
    full = recorded({"security_events": old[-20:], "security_event_count": 57})
    assert full["security_event_count"] == 58
    assert full["security_events"] == [*old[-19:], {"kind": "account_locked", "at": NOW}]
    assert len(recorded({"security_events": old}, kept=3)["security_events"]) == 3


def test_verification_passed_sets_next_verification_in_365_days() -> None:
    out = decided(
        Case(
            "C03",
            "verification_pending",
            "verification_passed",
            "sys",
            "compliant",
            payload={"provider_ref": "prov-1"},
            data={"verification_attempts": 2},
        )
    )
    assert out.changes["next_verification_at"] == NOW + timedelta(days=365)
    assert out.changes["provider_ref"] == "prov-1"


def test_resubmission_counts_attempts() -> None:
    out = decided(
        Case(
            "C05",
            "non_compliant",
            "resubmission_received",
            "sys",
            "verification_pending",
            data={**FAILED, "verification_attempts": 2, "verification_failed_at": ago(days=1)},
        )
    )
    assert out.changes["verification_attempts"] == 3
    again = decided(
        Case(
            "C01",
            "compliant",
            "verification_due",
            "timer",
            "verification_pending",
            data={"verification_attempts": 3},
        )
    )
    assert again.changes["verification_attempts"] == 1


def test_violations_get_a_30_day_deadline_unless_given() -> None:
    out = decided(
        Case(
            "C12",
            "compliant",
            "audit_failed",
            "sys",
            "non_compliant",
            payload={"framework": "SOC2", "violations": ["cc6.1"]},
        )
    )
    assert out.changes["violations"] == [
        {"control": "cc6.1", "framework": "SOC2", "deadline": NOW + timedelta(days=30), "recorded_at": NOW}
    ]
    given = datetime(2026, 3, 1, tzinfo=UTC)
    out = decided(
        Case(
            "C11",
            "investigation",
            "violation_confirmed",
            "compliance",
            "non_compliant",
            payload={
                "violations": [{"control": "art-32"}],
                "notify_regulator": False,
                "deadline": given.isoformat(),
            },
        )
    )
    assert out.changes["violations"] == [{"control": "art-32", "deadline": given, "recorded_at": NOW}]
    assert out.changes["regulator_notified"] is False


def test_fraud_confirmation_is_keyed_by_sorted_tx_ids_and_queues_reversal() -> None:
    out = decided(
        Case(
            "C08",
            "fraud_detection_active",
            "fraud_confirmed",
            "sys",
            "investigation",
            payload={"tx_ids": ["tx-2", "tx-1", "tx-2"]},
        )
    )
    assert out.changes["fraud_tx_ids"] == ["tx-1", "tx-2"]
    reversal = [e for e in out.effects if e.name == "compliance_request_fraud_reversal"]
    assert [dict(e.args) for e in reversal] == [{"tx_ids": ["tx-1", "tx-2"]}]


def test_data_breach_opens_incident_with_72h_notice() -> None:
    discovered = NOW - timedelta(hours=5)
    out = decided(
        Case(
            "C09",
            "compliant",
            "violation_detected",
            "sys",
            "investigation",
            payload={
                "kind": "data_breach",
                "description": "dump",
                "incident_id": "inc-9",
                "discovered_at": discovered.isoformat(),
            },
        )
    )
    assert out.changes["breach_incidents"] == [
        {
            "incident_id": "inc-9",
            "phase": "detected",
            "discovered_at": discovered,
            "regulator_notice_due": discovered + timedelta(hours=72),
            "updated_at": NOW,
        }
    ]


def test_breach_phase_moves_forward() -> None:
    out = decided(
        Case(
            "Cx7",
            "investigation",
            "breach_phase_update",
            "compliance",
            "investigation",
            payload={"incident_id": "inc-1", "phase": "notified_authorities"},
            data={"breach_incidents": [{"incident_id": "inc-1", "phase": "contained"}]},
        )
    )
    assert out.changes["breach_incidents"] == [
        {"incident_id": "inc-1", "phase": "notified_authorities", "updated_at": NOW}
    ]


def test_retention_period_is_the_longest_framework_period() -> None:
    case = Case(
        "C17",
        "compliant",
        "start_retention",
        "cascade",
        "data_retention",
        peers=ARCHIVED_ACCOUNT,
        data={"frameworks": ["GDPR", "HIPAA"]},
    )
    assert decided(case).changes["retention_until"] == datetime(2033, 1, 15, 12, tzinfo=UTC)
    longer = SETTINGS.override({"compliance_audit.retention_years": {"GDPR": 7, "HIPAA": 10}})
    facts = make_facts("cascade", peers=ARCHIVED_ACCOUNT, settings=longer)
    out = decide(GOVERNOR, record("compliant", case.data), "start_retention", facts)
    assert isinstance(out, Decision)
    assert out.changes["retention_until"] == datetime(2036, 1, 15, 12, tzinfo=UTC)


# --------------------------------------------------------------------------- timers and attention


def test_enroll_arms_yearly_verification() -> None:
    out = decided(Case("Cx1", None, "enroll", "cascade", "compliant"))
    assert armed(out) == {"verification_due": NOW + timedelta(days=365)}


def test_verification_pending_arms_deadline_and_reminder() -> None:
    timer = TimerState("verification_due", "verification_due", 4, due_at=NOW)
    inst = replace(record("compliant", {"next_verification_at": NOW}), timers={"verification_due": timer})
    out = decide(GOVERNOR, inst, "verification_due", make_facts("timer", timer="verification_due", seq=4))
    assert isinstance(out, Decision)
    assert [op.timer.name for op in out.timer_ops if op.op == "cancel"] == ["verification_due"]
    assert armed(out) == {
        "verification_deadline": NOW + timedelta(days=30),
        "verification_reminder": NOW + timedelta(days=21),
    }
    assert out.attention is False
    reminded = decide(
        GOVERNOR,
        apply(inst, out),
        "verification_reminder",
        make_facts("timer", timer="verification_reminder", seq=5),
    )
    assert isinstance(reminded, Decision)
    assert reminded.attention is True
    # The fired reminder is consumed; the 30 d deadline keeps running.
    assert [(op.op, op.timer.name) for op in reminded.timer_ops] == [("cancel", "verification_reminder")]


def test_kyc_verified_moves_the_verification_timer() -> None:
    timer = TimerState("verification_due", "verification_due", 4, due_at=NOW + timedelta(days=3))
    inst = replace(
        record("compliant", {"next_verification_at": NOW + timedelta(days=3)}),
        timers={"verification_due": timer},
    )
    out = decide(GOVERNOR, inst, "kyc_verified", make_facts("cascade"))
    assert isinstance(out, Decision)
    assert out.self_transition
    assert armed(out) == {"verification_due": NOW + timedelta(days=365)}


def test_back_to_compliant_rearms_at_the_stored_date() -> None:
    due = NOW + timedelta(days=100)
    out = decided(
        Case(
            "C07",
            "fraud_detection_active",
            "fraud_check_passed",
            "compliance",
            "compliant",
            payload={"review_notes": "ok"},
            data={"flagged_at": ago(days=2), "next_verification_at": due},
        )
    )
    assert armed(out) == {"verification_due": due}


def test_remediation_arms_deadline_and_warning_7d_before() -> None:
    out = decided(
        Case(
            "C13",
            "non_compliant",
            "remediation_plan_approved",
            "compliance",
            "remediation_in_progress",
            payload={"plan": "fix it all"},
        )
    )
    assert out.changes["remediation_deadline"] == NOW + timedelta(days=30)
    assert armed(out) == {
        "remediation_deadline": NOW + timedelta(days=30),
        "deadline_approaching": NOW + timedelta(days=23),
    }
    assert out.attention is False
    warned = decided(
        Case("Cx5", "remediation_in_progress", "deadline_approaching", "timer", "remediation_in_progress")
    )
    assert warned.attention is True


def test_investigation_arms_legal_escalation() -> None:
    out = decided(
        Case(
            "C09",
            "compliant",
            "violation_detected",
            "compliance",
            "investigation",
            payload={"kind": "violation", "description": "pii in logs"},
        )
    )
    assert armed(out) == {"investigation_overdue": NOW + timedelta(days=30)}
    overdue = decided(Case("Cx6", "investigation", "investigation_overdue", "timer", "investigation"))
    assert overdue.changes["escalated_to_legal_at"] == NOW
    assert [dict(e.args)["queue"] for e in overdue.effects] == ["legal"]


# --------------------------------------------------------------------------- four-eyes


@pytest.mark.parametrize(
    ("case", "approvers"),
    [
        (
            Case(
                "C10",
                "investigation",
                "investigation_cleared",
                "compliance",
                "compliant",
                payload={"findings": "unfounded"},
            ),
            ("compliance", "manager"),
        ),
        (
            Case(
                "C17",
                "compliant",
                "start_retention",
                "compliance",
                "data_retention",
                payload={"erasure_ref": "gdpr-1"},
            ),
            ("compliance",),
        ),
    ],
    ids=["C10", "C17-manual"],
)
def test_four_eyes_needed(case: Case, approvers: tuple[str, ...]) -> None:
    assert decided(case).needs_approval is not None
    assert decided(case).needs_approval.approvers == approvers  # type: ignore[union-attr]
    approved = decide(
        GOVERNOR,
        record(case.state, case.data),
        case.event,
        make_facts(case.role, case.payload, case.peers, case.extra, approved_by="u2"),
    )
    assert isinstance(approved, Decision)
    assert approved.needs_approval is None


def test_retention_from_x17_needs_no_approval() -> None:
    out = decided(
        Case("C17", "compliant", "start_retention", "cascade", "data_retention", peers=ARCHIVED_ACCOUNT)
    )
    assert out.needs_approval is None


# --------------------------------------------------------------------------- cascades


def test_x20_flags_account_and_holds_collections_only_when_score_high() -> None:
    low = decided(
        Case(
            "C02",
            "compliant",
            "request_verification",
            "compliance",
            "verification_pending",
            data={"fraud_score": 69},
        )
    )
    assert emitted(low) == [("X20", "customer_account", "flag_kyc_reverification", {"active": True}, False)]
    high = decided(
        Case(
            "C01", "compliant", "verification_due", "timer", "verification_pending", data={"fraud_score": 70}
        )
    )
    assert emitted(high) == [
        ("X20", "customer_account", "flag_kyc_reverification", {"active": True}, False),
        ("X20", "billing", "dunning_hold", {"hold": "kyc_reverification"}, False),
    ]


def test_c03_releases_x20_and_unlocks_after_resubmission() -> None:
    first = decided(
        Case(
            "C03",
            "verification_pending",
            "verification_passed",
            "sys",
            "compliant",
            payload={"provider_ref": "p"},
            data={"verification_attempts": 1, "fraud_score": 80},
        )
    )
    assert emitted(first) == [
        ("X20", "customer_account", "flag_kyc_reverification", {"active": False}, False),
        ("X20", "billing", "dunning_release", {"hold": "kyc_reverification"}, False),
    ]
    resubmitted = decided(
        Case(
            "C03",
            "verification_pending",
            "verification_passed",
            "sys",
            "compliant",
            payload={"provider_ref": "p"},
            data={"verification_attempts": 2},
        )
    )
    assert emitted(resubmitted) == [
        ("X20", "customer_account", "flag_kyc_reverification", {"active": False}, False),
        ("X24", "customer_account", "unlock", {}, False),
        ("X24", "billing", "dunning_release", {"hold": "compliance"}, False),
    ]


def test_x21_locks_and_holds_collections() -> None:
    out = decided(
        Case(
            "C04",
            "verification_pending",
            "verification_failed",
            "sys",
            "non_compliant",
            payload={"provider_ref": "p"},
        )
    )
    assert emitted(out) == [
        ("X21", "customer_account", "lock", {"reason": "compliance"}, False),
        ("X21", "billing", "dunning_hold", {"hold": "compliance"}, False),
    ]


def test_x22_fraud_checks_on_and_off() -> None:
    on = decided(
        Case("C06", "compliant", "anomaly_detected", "sys", "fraud_detection_active", payload={"score": 90})
    )
    assert emitted(on) == [
        ("X22", "billing", "fraud_checks_on", {}, False),
        ("X22", "customer_account", "fraud_monitoring_on", {}, False),
    ]
    off = decided(
        Case(
            "C07",
            "fraud_detection_active",
            "fraud_check_passed",
            "compliance",
            "compliant",
            payload={"review_notes": "ok"},
        )
    )
    assert emitted(off) == [
        ("X22", "billing", "fraud_checks_off", {}, False),
        ("X22", "customer_account", "fraud_monitoring_off", {}, False),
    ]


@pytest.mark.parametrize(
    "case",
    [
        Case(
            "C08",
            "fraud_detection_active",
            "fraud_confirmed",
            "compliance",
            "investigation",
            payload={"tx_ids": ["t"]},
        ),
        Case(
            "C09",
            "compliant",
            "violation_detected",
            "compliance",
            "investigation",
            payload={"kind": "violation", "description": "d"},
        ),
    ],
    ids=["C08", "C09"],
)
def test_x23_must_lock(case: Case) -> None:
    assert emitted(decided(case)) == [("X23", "customer_account", "lock", {"reason": "compliance"}, True)]


@pytest.mark.parametrize(
    "case",
    [
        Case(
            "C10",
            "investigation",
            "investigation_cleared",
            "compliance",
            "compliant",
            payload={"findings": "f"},
        ),
        Case(
            "C15",
            "remediation_in_progress",
            "remediation_completed",
            "compliance",
            "compliant",
            payload={"steps_verified": True},
        ),
    ],
    ids=["C10", "C15"],
)
def test_x24_unlock_and_release(case: Case) -> None:
    assert emitted(decided(case)) == [
        ("X24", "customer_account", "unlock", {}, False),
        ("X24", "billing", "dunning_release", {"hold": "compliance"}, False),
    ]


def test_x25_archives_everything_must() -> None:
    out = decided(
        Case("C17", "non_compliant", "start_retention", "cascade", "data_retention", peers=ARCHIVED_ACCOUNT)
    )
    assert emitted(out) == [
        ("X25", "entitlement", "archive", {}, True),
        ("X25", "subscription", "retention_archive", {}, True),
    ]


def test_quiet_rows_emit_nothing() -> None:
    for case in (
        Case(
            "C05",
            "non_compliant",
            "resubmission_received",
            "sys",
            "x",
            data={**FAILED, "verification_failed_at": NOW},
        ),
        Case(
            "C11",
            "investigation",
            "violation_confirmed",
            "compliance",
            "x",
            payload={"violations": ["v"], "notify_regulator": False},
        ),
        Case(
            "C12", "compliant", "audit_failed", "sys", "x", payload={"framework": "GDPR", "violations": ["v"]}
        ),
        Case("C13", "non_compliant", "remediation_plan_approved", "compliance", "x", payload={"plan": "p"}),
        Case("C16", "remediation_in_progress", "remediation_failed", "compliance", "x"),
    ):
        assert decided(case).cascades == (), case.row


# --------------------------------------------------------------------------- where guards


@pytest.mark.parametrize(
    ("name", "governor", "state", "data", "expected"),
    [
        ("compliance_account_open", "customer_account", "locked", {}, True),
        ("compliance_account_open", "customer_account", "archived", {}, False),
        ("compliance_account_lockable", "customer_account", "active", {}, True),
        ("compliance_account_lockable", "customer_account", "locked", {"lock_reasons": ["chargeback"]}, True),
        (
            "compliance_account_lockable",
            "customer_account",
            "locked",
            {"lock_reasons": ["compliance"]},
            False,
        ),
        ("compliance_account_lockable", "customer_account", "deactivated", {}, False),
        (
            "compliance_account_unlockable",
            "customer_account",
            "locked",
            {"lock_reasons": ["compliance"]},
            True,
        ),
        (
            "compliance_account_unlockable",
            "customer_account",
            "locked",
            {"lock_reasons": ["compliance", "manual"]},
            False,
        ),
        ("compliance_account_unlockable", "customer_account", "active", {}, False),
        ("compliance_invoice_open", "billing", "retry_3", {}, True),
        ("compliance_invoice_open", "billing", "payment_received", {}, False),
        ("compliance_invoice_not_archived", "billing", "payment_received", {}, True),
        ("compliance_invoice_not_archived", "billing", "archived", {}, False),
        ("compliance_entitlement_not_archived", "entitlement", "cancelled", {}, True),
        ("compliance_entitlement_not_archived", "entitlement", "archived", {}, False),
        ("compliance_subscription_not_archived", "subscription", "lapsed", {}, True),
        ("compliance_subscription_not_archived", "subscription", "archived", {}, False),
    ],
)
def test_where_guards(name: str, governor: str, state: str, data: dict[str, Any], expected: bool) -> None:
    assert (
        where(name, Instance(governor, "t1", state, 1, customer_id="cust-1", data=dict(data or {})))
        is expected
    )


# --------------------------------------------------------------------------- plans across governors


def _account(state: str, data: Mapping[str, Any] | None = None) -> Instance:
    return Instance("customer_account", "acct-1", state, 2, customer_id="cust-1", data=dict(data or {}))


def test_plan_verification_failure_locks_the_account() -> None:
    comp = record("verification_pending")
    result = plan(
        {"comp-1": comp, "acct-1": _account("active")},
        "comp-1",
        "verification_failed",
        make_facts(payload={"provider_ref": "p"}),
    )
    assert result.ok, result.alerts
    assert result.instances["acct-1"].state == "locked"
    assert result.instances["acct-1"].data["lock_reasons"] == ["compliance"]


def test_plan_investigation_must_lock_is_skipped_for_an_already_locked_account() -> None:
    comp = record("compliant")
    acct = _account("locked", {"lock_reasons": ["compliance"]})
    facts = make_facts("compliance", {"kind": "violation", "description": "pii in logs"})
    result = plan({"comp-1": comp, "acct-1": acct}, "comp-1", "violation_detected", facts)
    assert result.ok
    assert result.alerts == ()
    assert [s.event for s in result.steps] == ["violation_detected"]


def test_plan_investigation_locks_and_adds_reason() -> None:
    comp = record("compliant")
    acct = _account("locked", {"lock_reasons": ["chargeback"]})
    facts = make_facts("compliance", {"kind": "violation", "description": "pii in logs"})
    result = plan({"comp-1": comp, "acct-1": acct}, "comp-1", "violation_detected", facts)
    assert result.ok, result.alerts
    assert result.instances["acct-1"].data["lock_reasons"] == ["chargeback", "compliance"]
