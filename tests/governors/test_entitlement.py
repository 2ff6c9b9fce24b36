"""Entitlement governor (GOVERNORS.md §1): every row, its rejections, timers, four-eyes and cascades."""

from __future__ import annotations

from datetime import timedelta
from functools import partial
from typing import Any

import pytest

from governors import Decision, Instance, Rejection, decide
from governors.definitions.entitlement import GOVERNOR
from governors.facts import TimerState
from governors.settings import default_settings
from governors.spec import FourEyes
from tests.governors.tables import NOW, Case, Table, case_id_with_note, make_facts, peer, timer_ops

DAY = timedelta(days=1)
PERIOD_END = NOW + 20 * DAY


def world(
    account: str = "active",
    compliance: str = "compliant",
    subscription: str = "active",
    sku: str = "published",
) -> dict[str, tuple[Instance, ...]]:
    return {
        "customer_account": (peer("customer_account", account),),
        "compliance_audit": (peer("compliance_audit", compliance),),
        "subscription": (peer("subscription", subscription, "sub1", current_period_end=PERIOD_END),),
        "catalog": (
            Instance("catalog", "sku-core", state=sku, subject_id="sku-core", data={"sku_id": "sku-core"}),
        ),
    }


def ent(state: str | None, seq: int = 3, **data: Any) -> Instance:
    base: dict[str, Any] = {"sku_id": "sku-core", "holds": [], "subscription_id": "sub1"}
    base.update(data)
    return Instance(
        "entitlement", "ent-1", state=state, state_seq=seq, version=7, customer_id="c1", data=base
    )


# The staff reason, the actor and no settings (the engine's defaults) as these tests always had them.
facts = partial(
    make_facts, reason="customer called the support line", settings=None, actor="u1", peers=world()
)


SUSPENDED_PF = {"holds": ["payment_failed"], "suspended_at": NOW - 3 * DAY}
REFUND_DUE = {"refund_due_cents": 2999, "refund_request_id": "ent-1/refund/5", "cancelled_at": NOW - DAY}
IN_FLIGHT = {"refund_due_cents": 2999, "refund_request_id": "ent-1/refund/5", "refund_amount_cents": 2000}
SKU = {"item": "sku-core", "tier": "starter", "subscription_id": "sub1"}

CASES: tuple[Case, ...] = (
    # E01 creation (X01 fan-out: the SKU arrives as 'item').
    Case(
        "E01",
        None,
        "entitlement_requested",
        "cascade",
        "pending_approval",
        SKU,
        changes={"sku_id": "sku-core", "tier": "starter", "approval_clock_started": True, "holds": []},
    ),
    Case(
        "E01",
        None,
        "entitlement_requested",
        "cascade",
        "pending_approval",
        {"sku_id": "sku-core"},
        changes={"sku_id": "sku-core"},
        note="sku_id directly",
    ),
    Case(
        "E01",
        None,
        "entitlement_requested",
        "cascade",
        "pending_approval",
        SKU,
        peers=world(account="onboarding"),
        changes={"approval_clock_started": False},
        note="onboarding: clock waits for X18",
    ),
    Case(
        "E01",
        None,
        "entitlement_requested",
        "cascade",
        "!guard_failed:entitlement_sku_offered",
        SKU,
        peers=world(sku="deprecated"),
        note="SKU not on sale",
    ),
    Case(
        "E01",
        None,
        "entitlement_requested",
        "cascade",
        "!guard_failed:entitlement_sku_offered",
        {"item": "sku-unknown"},
        note="SKU unknown to the catalog",
    ),
    Case(
        "E01",
        None,
        "entitlement_requested",
        "cascade",
        "!guard_failed:entitlement_account_open",
        SKU,
        peers=world(account="locked"),
        note="account locked",
    ),
    Case(
        "E01",
        None,
        "entitlement_requested",
        "cascade",
        "!guard_failed:entitlement_unique_for_sku",
        SKU,
        peers={
            **world(),
            "entitlement": (Instance("entitlement", "ent-0", state="expired", data={"sku_id": "sku-core"}),),
        },
        note="another non-archived entitlement for the SKU",
    ),
    Case(
        "E01",
        None,
        "entitlement_requested",
        "cascade",
        "pending_approval",
        SKU,
        peers={
            **world(),
            "entitlement": (Instance("entitlement", "ent-0", state="archived", data={"sku_id": "sku-core"}),),
        },
        note="an archived one does not count",
    ),
    Case("E01", None, "entitlement_requested", "cascade", "!invalid_input", {}, note="no SKU"),
    Case("E01", None, "entitlement_requested", "sys", "!role_not_allowed", SKU),
    Case("E01", None, "approve", "manager", "!not_created", {"note": "n"}),
    Case("E01", "pending_approval", "entitlement_requested", "cascade", "!invalid_transition", SKU),
    # E02 approve.
    Case(
        "E02",
        "pending_approval",
        "approve",
        "manager",
        "active",
        {"note": "checked the order"},
        changes={"expires_at": PERIOD_END, "needs_review": False},
    ),
    Case("E02", "pending_approval", "approve", "sys", "active", note="approval service, no note needed"),
    Case("E02", "pending_approval", "approve", "admin", "active", {"note": "queue"}),
    Case("E02", "pending_approval", "approve", "manager", "!invalid_input", note="staff must add a note"),
    Case(
        "E02",
        "pending_approval",
        "approve",
        "manager",
        "!invalid_input",
        {"note": "n", "reason": "short"},
        note="reason too short",
    ),
    Case(
        "E02",
        "pending_approval",
        "approve",
        "sys",
        "!guard_failed:entitlement_account_active",
        peers=world(account="onboarding"),
        note="KYC not passed",
    ),
    Case(
        "E02",
        "pending_approval",
        "approve",
        "sys",
        "!guard_failed:entitlement_compliance_clear",
        peers=world(compliance="investigation"),
    ),
    Case("E02", "pending_approval", "approve", "finance", "!role_not_allowed", {"note": "n"}),
    Case("E02", "active", "approve", "sys", "!invalid_transition"),
    # E03 deny.
    Case(
        "E03",
        "pending_approval",
        "deny",
        "compliance",
        "cancelled",
        {"reason_code": "fraud", "note": "n"},
        extra={"entitlement_captured_cents": 2999},
        changes={
            "cancellation_reason": "fraud",
            "refund_due_cents": 2999,
            "refund_request_id": "ent-1/refund/8",
            "cancelled_at": NOW,
        },
    ),
    Case(
        "E03",
        "pending_approval",
        "deny",
        "sys",
        "cancelled",
        {"reason_code": "marketplace_rejected"},
        changes={"refund_due_cents": 0, "refund_request_id": None},
    ),
    Case(
        "E03",
        "pending_approval",
        "deny",
        "manager",
        "!invalid_input",
        {"reason_code": "boredom", "note": "n"},
    ),
    Case(
        "E03",
        "pending_approval",
        "deny",
        "manager",
        "!invalid_input",
        {"note": "n"},
        note="reason code missing",
    ),
    Case(
        "E03",
        "pending_approval",
        "deny",
        "support",
        "!role_not_allowed",
        {"reason_code": "other", "note": "n"},
    ),
    # E04 customer cancel.
    Case(
        "E04",
        "pending_approval",
        "customer_cancel",
        "support",
        "cancelled",
        changes={"cancellation_reason": "customer_cancel"},
    ),
    Case("E04", "pending_approval", "customer_cancel", "manager", "!role_not_allowed"),
    # E05 escalation timers.
    Case(
        "E05",
        "pending_approval",
        "approval_escalation",
        "timer",
        "pending_approval",
        {"level": 1, "queue": "manager", "response_target": "4h"},
        changes={"needs_review": True, "escalation_level": 1},
    ),
    Case("E05", "pending_approval", "approval_escalation", "manager", "!role_not_allowed"),
    # E06 / E06b final timeout.
    Case(
        "E06",
        "pending_approval",
        "approval_final_timeout",
        "timer",
        "cancelled",
        changes={"cancellation_reason": "approval_timeout"},
    ),
    # E07 suspend from active.
    Case(
        "E07",
        "active",
        "suspend",
        "cascade",
        "suspended",
        {"hold": "payment_failed"},
        changes={"holds": ["payment_failed"], "suspended_at": NOW},
    ),
    Case(
        "E07", "active", "suspend", "manager", "suspended", {"hold": "tos_violation", "evidence": "ticket 42"}
    ),
    Case("E07", "active", "suspend", "compliance", "suspended", {"hold": "fraud", "evidence": "case 7"}),
    Case(
        "E07",
        "active",
        "suspend",
        "manager",
        "!guard_failed:entitlement_hold_permitted",
        {"hold": "compliance_hold", "evidence": "x"},
        note="manager may not place a compliance hold",
    ),
    Case(
        "E07",
        "active",
        "suspend",
        "compliance",
        "!guard_failed:entitlement_hold_permitted",
        {"hold": "account_locked", "evidence": "x"},
        note="account holds come from cascades only",
    ),
    Case(
        "E07", "active", "suspend", "manager", "!invalid_input", {"hold": "tos_violation"}, note="no evidence"
    ),
    Case("E07", "active", "suspend", "cascade", "!invalid_input", {"hold": "bored"}),
    Case(
        "E07", "active", "suspend", "support", "!role_not_allowed", {"hold": "tos_violation", "evidence": "x"}
    ),
    Case("E07", "expired", "suspend", "cascade", "!invalid_transition", {"hold": "payment_failed"}),
    # E08 another hold while suspended.
    Case(
        "E08",
        "suspended",
        "suspend",
        "cascade",
        "suspended",
        {"hold": "account_locked"},
        SUSPENDED_PF,
        changes={"holds": ["payment_failed", "account_locked"]},
    ),
    Case(
        "E08",
        "suspended",
        "suspend",
        "cascade",
        "!guard_failed:entitlement_hold_absent",
        {"hold": "payment_failed"},
        SUSPENDED_PF,
        note="the hold is already there (§1.4)",
    ),
    # E09 / E10 lift.
    Case(
        "E09",
        "suspended",
        "lift_hold",
        "cascade",
        "active",
        {"hold": "payment_failed"},
        SUSPENDED_PF,
        changes={"holds": [], "suspended_at": None},
    ),
    Case(
        "E09",
        "suspended",
        "lift_hold",
        "manager",
        "active",
        {"hold": "tos_violation"},
        {"holds": ["tos_violation"]},
    ),
    Case(
        "E09",
        "suspended",
        "lift_hold",
        "manager",
        "!guard_failed:entitlement_hold_permitted",
        {"hold": "fraud"},
        {"holds": ["fraud"]},
        note="only compliance lifts fraud",
    ),
    Case("E09", "suspended", "lift_hold", "compliance", "active", {"hold": "fraud"}, {"holds": ["fraud"]}),
    Case(
        "E10",
        "suspended",
        "lift_hold",
        "cascade",
        "suspended",
        {"hold": "account_locked"},
        {"holds": ["payment_failed", "account_locked"]},
        changes={"holds": ["payment_failed"]},
    ),
    Case(
        "E10",
        "suspended",
        "lift_hold",
        "cascade",
        "!guard_failed:entitlement_hold_present",
        {"hold": "account_review"},
        SUSPENDED_PF,
        note="lifting an absent hold does nothing",
    ),
    Case("E10", "suspended", "lift_hold", "cascade", "!invalid_input", {}, SUSPENDED_PF),
    # E11 suspension timeout.
    Case(
        "E11",
        "suspended",
        "suspension_timeout",
        "timer",
        "cancelled",
        data=SUSPENDED_PF,
        extra={"entitlement_unused_prepaid_cents": 1500},
        changes={"cancellation_reason": "payment_failed", "refund_due_cents": 1500, "holds": []},
    ),
    Case(
        "E11",
        "suspended",
        "suspension_timeout",
        "timer",
        "cancelled",
        data={"holds": ["tos_violation", "payment_failed"]},
        changes={"cancellation_reason": "tos_violation", "refund_due_cents": 0},
        note="oldest hold; unpaid",
    ),
    Case(
        "E11",
        "suspended",
        "suspension_timeout",
        "timer",
        "!guard_failed:entitlement_all_holds_timer_arming",
        data={"holds": ["payment_failed", "account_review"]},
        note="a freezing hold is present",
    ),
    # E12 escalate.
    Case(
        "E12",
        "suspended",
        "escalate_to_cancellation",
        "manager",
        "cancelled",
        data={"holds": ["fraud", "tos_violation"]},
        changes={"cancellation_reason": "fraud"},
    ),
    Case("E12", "suspended", "escalate_to_cancellation", "cascade", "cancelled", data=SUSPENDED_PF),
    Case("E12", "suspended", "escalate_to_cancellation", "support", "!role_not_allowed", data=SUSPENDED_PF),
    # E13 period ended.
    Case(
        "E13",
        "active",
        "period_ended",
        "cascade",
        "expired",
        data={"expires_at": NOW - DAY},
        changes={"expired_at": NOW},
    ),
    Case(
        "E13",
        "active",
        "period_ended",
        "cascade",
        "expired",
        {"ends_at": NOW.isoformat()},
        data={"expires_at": NOW + 9 * DAY},
        changes={"expires_at": NOW},
        note="X32 access_until = now",
    ),
    Case(
        "E13",
        "active",
        "period_ended",
        "cascade",
        "!guard_failed:entitlement_period_over",
        data={"expires_at": NOW + DAY},
        note="paid through tomorrow",
    ),
    # E14 cancel early.
    Case(
        "E14",
        "active",
        "cancel_early",
        "support",
        "cancelled",
        {"confirmation_ref": "CALL-9"},
        extra={"entitlement_unused_prepaid_cents": 1200},
        changes={"cancellation_reason": "customer_request", "refund_due_cents": 1200},
    ),
    Case(
        "E14",
        "active",
        "cancel_early",
        "cascade",
        "cancelled",
        extra={"source_governor": "customer_account"},
        changes={"cancellation_reason": "account_closed"},
        note="X16",
    ),
    Case("E14", "active", "cancel_early", "support", "!invalid_input", note="confirmation ref missing"),
    # E15 reactivate.
    Case(
        "E15",
        "expired",
        "reactivate",
        "cascade",
        "active",
        {"expires_at": (NOW + 30 * DAY).isoformat()},
        {"expired_at": NOW - 10 * DAY},
        changes={"expires_at": NOW + 30 * DAY, "expired_at": None},
    ),
    Case(
        "E15",
        "expired",
        "reactivate",
        "cascade",
        "!guard_failed:entitlement_expired_recently",
        data={"expired_at": NOW - 31 * DAY},
    ),
    Case(
        "E15",
        "expired",
        "reactivate",
        "cascade",
        "!guard_failed:entitlement_subscription_active",
        data={"expired_at": NOW - DAY},
        peers=world(subscription="cancelled"),
    ),
    # E16 refund for the last period.
    Case(
        "E16",
        "expired",
        "refund_requested",
        "support",
        "cancelled",
        data={"expired_at": NOW - 5 * DAY},
        extra={"entitlement_last_period_cents": 2999},
        changes={"refund_due_cents": 2999, "cancellation_reason": "refund_requested"},
    ),
    Case(
        "E16",
        "expired",
        "refund_requested",
        "support",
        "!guard_failed:entitlement_expired_recently",
        data={"expired_at": NOW - 40 * DAY},
    ),
    Case(
        "E16", "expired", "refund_requested", "finance", "!role_not_allowed", data={"expired_at": NOW - DAY}
    ),
    # E17.
    Case("E17", "expired", "expiry_archive_timeout", "timer", "archived", changes={"archived_at": NOW}),
    # E18 approve refund (4E finance, manager).
    Case(
        "E18",
        "cancelled",
        "approve_refund",
        "finance",
        "refund_issued",
        {"amount_cents": 2000, "reason_code": "unused_time"},
        REFUND_DUE,
        changes={"refund_amount_cents": 2000, "refund_decision": "approved"},
    ),
    Case(
        "E18",
        "cancelled",
        "approve_refund",
        "finance",
        "!guard_failed:entitlement_refund_amount_ok",
        {"amount_cents": 3000, "reason_code": "unused_time"},
        REFUND_DUE,
        note="more than refundable",
    ),
    Case(
        "E18",
        "cancelled",
        "approve_refund",
        "finance",
        "!guard_failed:entitlement_refund_amount_ok",
        {"amount_cents": 100, "reason_code": "goodwill"},
        note="nothing refundable",
    ),
    Case(
        "E18",
        "cancelled",
        "approve_refund",
        "finance",
        "!invalid_input",
        {"amount_cents": 0, "reason_code": "x"},
        REFUND_DUE,
    ),
    Case(
        "E18",
        "cancelled",
        "approve_refund",
        "support",
        "!role_not_allowed",
        {"amount_cents": 10, "reason_code": "x"},
        REFUND_DUE,
    ),
    # E19 request reinstatement.
    Case(
        "E19",
        "cancelled",
        "request_reinstatement",
        "support",
        "reinstate_pending",
        {"note": "customer paid"},
        {"cancelled_at": NOW - 3 * DAY, "cancellation_reason": "tos_violation"},
        changes={"reinstatement_requested_at": NOW, "reinstatement_auto": False},
    ),
    Case(
        "E19",
        "cancelled",
        "request_reinstatement",
        "cascade",
        "reinstate_pending",
        {"auto_approve": True},
        {"cancelled_at": NOW - 3 * DAY, "cancellation_reason": "payment_failed"},
        changes={"reinstatement_auto": True},
    ),
    Case(
        "E19",
        "cancelled",
        "request_reinstatement",
        "support",
        "!guard_failed:entitlement_cancelled_recently",
        {"note": "n"},
        {"cancelled_at": NOW - 15 * DAY},
        note="window over",
    ),
    Case(
        "E19",
        "cancelled",
        "request_reinstatement",
        "support",
        "!guard_failed:entitlement_not_fraud",
        {"note": "n"},
        {"cancelled_at": NOW - DAY, "cancellation_reason": "fraud"},
    ),
    Case(
        "E19",
        "cancelled",
        "request_reinstatement",
        "support",
        "!guard_failed:entitlement_account_active",
        {"note": "n"},
        {"cancelled_at": NOW - DAY},
        peers=world(account="locked"),
    ),
    # E20 refund window.
    Case("E20", "cancelled", "refund_window_timeout", "timer", "archived", data={"refund_due_cents": 0}),
    Case(
        "E20",
        "cancelled",
        "refund_window_timeout",
        "timer",
        "!guard_failed:entitlement_no_refund_awaiting",
        data=REFUND_DUE,
    ),
    # E21 approve reinstatement.
    Case(
        "E21",
        "reinstate_pending",
        "approve_reinstatement",
        "manager",
        "active",
        {"note": "ok"},
        {"cancellation_reason": "payment_failed", "cancelled_at": NOW - DAY},
        changes={"cancellation_reason": None, "cancelled_at": None, "expires_at": PERIOD_END},
    ),
    Case("E21", "reinstate_pending", "approve_reinstatement", "cascade", "active"),
    Case(
        "E21",
        "reinstate_pending",
        "approve_reinstatement",
        "manager",
        "!guard_failed:entitlement_subscription_active",
        {"note": "ok"},
        peers=world(subscription="cancelled"),
    ),
    Case("E21", "reinstate_pending", "approve_reinstatement", "support", "!role_not_allowed", {"note": "ok"}),
    # E22 / E23.
    Case(
        "E22",
        "reinstate_pending",
        "reject_reinstatement",
        "manager",
        "cancelled",
        {"note": "no"},
        {"cancelled_at": NOW - 2 * DAY},
        changes={"reinstatement_requested_at": None},
    ),
    Case("E22", "reinstate_pending", "reject_reinstatement", "admin", "!role_not_allowed", {"note": "no"}),
    Case("E23", "reinstate_pending", "reinstatement_timeout", "timer", "cancelled"),
    # E24–E27 refund in flight.
    Case(
        "E24",
        "refund_issued",
        "refund_completed",
        "sys",
        "archived",
        {"refund_request_id": "ent-1/refund/5"},
        IN_FLIGHT,
        changes={"refunded_cents": 2000, "refund_due_cents": 0},
    ),
    Case(
        "E24",
        "refund_issued",
        "refund_completed",
        "sys",
        "!guard_failed:entitlement_refund_matches",
        {"refund_request_id": "other"},
        IN_FLIGHT,
    ),
    Case("E24", "refund_issued", "refund_completed", "sys", "!invalid_input", {}, IN_FLIGHT),
    Case(
        "E25",
        "refund_issued",
        "refund_failed",
        "sys",
        "cancelled",
        {"failure_code": "card_closed"},
        IN_FLIGHT,
        changes={"refund_request_id": "ent-1/refund/8", "refund_due_cents": 2999, "refund_failures": 1},
    ),
    Case(
        "E26",
        "refund_issued",
        "refund_disputed",
        "support",
        "refund_issued",
        data=IN_FLIGHT,
        changes={"refund_issue": "disputed"},
    ),
    Case(
        "E27",
        "refund_issued",
        "refund_overdue",
        "timer",
        "refund_issued",
        data=IN_FLIGHT,
        changes={"refund_issue": "overdue"},
    ),
    # E28 archive.
    Case("E28", "active", "archive", "admin", "archived", changes={"archived_at": NOW}),
    Case("E28", "suspended", "archive", "cascade", "archived", data=SUSPENDED_PF, note="X25"),
    Case(
        "E28",
        "refund_issued",
        "archive",
        "cascade",
        "!guard_failed:entitlement_no_refund_pending",
        data=IN_FLIGHT,
    ),
    Case(
        "E28", "cancelled", "archive", "admin", "!guard_failed:entitlement_no_refund_pending", data=REFUND_DUE
    ),
    Case("E28", "active", "archive", "compliance", "!role_not_allowed"),
    Case("E28", "archived", "archive", "admin", "!terminal_state"),
    # Added rows.
    Case(
        "Ex1",
        "pending_approval",
        "start_approval_clock",
        "cascade",
        "pending_approval",
        data={"approval_clock_started": False},
        changes={"approval_clock_started": True},
    ),
    Case(
        "Ex2",
        "suspended",
        "update_features",
        "cascade",
        "suspended",
        {"tier": "professional"},
        SUSPENDED_PF,
        changes={"tier": "professional"},
    ),
    Case(
        "Ex3",
        "active",
        "extend_expiry",
        "cascade",
        "active",
        {"expires_at": (NOW + 30 * DAY).isoformat()},
        changes={"expires_at": (NOW + 30 * DAY).isoformat()},
    ),
    Case("Ex3", "active", "extend_expiry", "cascade", "!invalid_input", {"expires_at": "next week"}),
    Case(
        "Ex4",
        "active",
        "sku_withdrawn",
        "cascade",
        "active",
        {"sku_id": "sku-core", "withdrawal": "deprecated"},
        changes={"sku_withdrawal": "deprecated"},
    ),
    Case(
        "Ex5",
        "cancelled",
        "decline_refund",
        "finance",
        "cancelled",
        data=REFUND_DUE,
        changes={"refund_due_cents": 0, "refund_decision": "declined"},
    ),
    Case(
        "Ex5",
        "cancelled",
        "decline_refund",
        "finance",
        "!guard_failed:entitlement_refund_awaiting",
        data={"refund_due_cents": 0},
    ),
    Case("Ex5", "cancelled", "decline_refund", "support", "!role_not_allowed", data=REFUND_DUE),
    Case("E05", "pending_approval", "no_such_event", "sys", "!unknown_event"),
)


TABLE = Table(
    GOVERNOR,
    CASES,
    lambda case: (
        ent(case.state, **case.data) if case.state else Instance("entitlement", "new:1", customer_id="c1")
    ),
    facts=facts,
    world=world(),
    ids=case_id_with_note,
    rejection_row="unchecked",
    spec_rows={f"E{n:02d}" for n in range(1, 29)},
    also_covered={"E06b"},  # by test_final_timeout_cancels_by_default_and_approves_when_configured
)
test_row, test_every_row_is_covered, test_every_row_id_is_from_the_spec_or_marked_added = TABLE.tests()


# ------------------------------------------------------------------ E06 / E06b (D-02)


def test_final_timeout_cancels_by_default_and_approves_when_configured() -> None:
    pending = ent("pending_approval")
    assert (
        TABLE.run(Case("E06", "pending_approval", "approval_final_timeout", "timer", "")).to_state
        == "cancelled"
    )  # type: ignore[union-attr]
    on = default_settings().override({"entitlement.approve_on_timeout": True})
    approved = decide(GOVERNOR, pending, "approval_final_timeout", facts("timer", settings=on))
    assert isinstance(approved, Decision)
    assert approved.row_id == "E06b"
    assert approved.to_state == "active"
    assert any(e.name == "audit_note" and "auto-decision" in e.args["note"] for e in approved.effects)
    blocked = decide(
        GOVERNOR,
        pending,
        "approval_final_timeout",
        facts("timer", peers=world(account="suspended"), settings=on),
    )
    assert isinstance(blocked, Decision)
    assert blocked.row_id == "E06"
    assert blocked.to_state == "cancelled"


# ------------------------------------------------------------------ timers


def test_creation_arms_the_approval_clock_or_waits_for_kyc() -> None:
    new = Instance("entitlement", "new:1", customer_id="c1")
    ops = timer_ops(decide(GOVERNOR, new, "entitlement_requested", facts("cascade", SKU)))
    assert {n: (o, t.due_at) for n, (o, t) in ops.items()} == {
        "approval_escalation_1": ("arm", NOW + timedelta(hours=24)),
        "approval_escalation_2": ("arm", NOW + timedelta(hours=48)),
        "approval_final_timeout": ("arm", NOW + timedelta(hours=72)),
    }
    assert dict(ops["approval_escalation_1"][1].payload) == {
        "level": 1,
        "queue": "manager",
        "response_target": "4h",
    }
    assert dict(ops["approval_escalation_2"][1].payload) == {
        "level": 2,
        "queue": "admin",
        "response_target": "1h",
    }
    waiting = timer_ops(
        decide(
            GOVERNOR, new, "entitlement_requested", facts("cascade", SKU, peers=world(account="onboarding"))
        )
    )
    assert all(t.paused and o == "arm" for o, t in waiting.values())
    assert waiting["approval_final_timeout"][1].remaining == timedelta(hours=72)


def test_x18_starts_the_paused_approval_clock() -> None:
    paused = {
        "approval_escalation_1": TimerState(
            "approval_escalation_1", "approval_escalation", 3, remaining=timedelta(hours=24)
        ),
        "approval_final_timeout": TimerState(
            "approval_final_timeout", "approval_final_timeout", 3, remaining=timedelta(hours=72)
        ),
    }
    inst = Instance(
        "entitlement",
        "ent-1",
        state="pending_approval",
        state_seq=3,
        data={"sku_id": "sku-core"},
        timers=paused,
    )
    ops = timer_ops(decide(GOVERNOR, inst, "start_approval_clock", facts("cascade")))
    assert ops["approval_escalation_1"][0] == "resume"
    assert ops["approval_escalation_1"][1].due_at == NOW + timedelta(hours=24)
    assert ops["approval_final_timeout"][1].due_at == NOW + timedelta(hours=72)


def test_suspension_timer_runs_only_while_every_hold_is_timer_arming() -> None:
    armed = timer_ops(
        decide(GOVERNOR, ent("active"), "suspend", facts("cascade", {"hold": "payment_failed"}))
    )
    assert armed["suspension_timeout"][0] == "arm"
    assert armed["suspension_timeout"][1].due_at == NOW + timedelta(hours=72)
    frozen = timer_ops(
        decide(GOVERNOR, ent("active"), "suspend", facts("cascade", {"hold": "account_locked"}))
    )
    assert frozen["suspension_timeout"][1].paused
    assert frozen["suspension_timeout"][1].remaining == timedelta(hours=72)

    running = TimerState("suspension_timeout", "suspension_timeout", 3, due_at=NOW + timedelta(hours=30))
    inst = Instance(
        "entitlement",
        "ent-1",
        state="suspended",
        state_seq=3,
        data={"holds": ["payment_failed"]},
        timers={"suspension_timeout": running},
    )
    paused = timer_ops(decide(GOVERNOR, inst, "suspend", facts("cascade", {"hold": "account_review"})))
    assert paused["suspension_timeout"][0] == "pause"
    assert paused["suspension_timeout"][1].remaining == timedelta(hours=30)

    held = TimerState("suspension_timeout", "suspension_timeout", 3, remaining=timedelta(hours=30))
    both = Instance(
        "entitlement",
        "ent-1",
        state="suspended",
        state_seq=3,
        data={"holds": ["payment_failed", "account_review"]},
        timers={"suspension_timeout": held},
    )
    resumed = timer_ops(decide(GOVERNOR, both, "lift_hold", facts("cascade", {"hold": "account_review"})))
    assert resumed["suspension_timeout"][0] == "resume"
    assert resumed["suspension_timeout"][1].due_at == NOW + timedelta(hours=30)


def test_refund_window_waits_for_the_finance_decision() -> None:
    cancelled = timer_ops(
        decide(
            GOVERNOR,
            ent("active"),
            "cancel_early",
            facts("support", {"confirmation_ref": "C1"}, extra={"entitlement_unused_prepaid_cents": 500}),
        )
    )
    assert cancelled["refund_window_timeout"][1].paused
    timer = TimerState("refund_window_timeout", "refund_window_timeout", 3, remaining=timedelta(days=14))
    inst = Instance(
        "entitlement",
        "ent-1",
        state="cancelled",
        state_seq=3,
        data=REFUND_DUE,
        timers={"refund_window_timeout": timer},
    )
    declined = timer_ops(decide(GOVERNOR, inst, "decline_refund", facts("finance")))
    assert declined["refund_window_timeout"] == (
        "resume",
        TimerState("refund_window_timeout", "refund_window_timeout", 3, due_at=NOW + timedelta(days=14)),
    )
    no_refund = timer_ops(
        decide(GOVERNOR, ent("active"), "cancel_early", facts("support", {"confirmation_ref": "C1"}))
    )
    assert no_refund["refund_window_timeout"][1].due_at == NOW + timedelta(days=14)


@pytest.mark.parametrize(
    ("state", "event", "timer", "after"),
    [
        ("expired", "expiry_archive_timeout", "expiry_archive_timeout", timedelta(days=30)),
        ("reinstate_pending", "reinstatement_timeout", "reinstatement_timeout", timedelta(days=7)),
        ("refund_issued", "refund_overdue", "refund_overdue", timedelta(days=14)),
    ],
)
def test_state_timers_are_armed_on_entry(state: str, event: str, timer: str, after: timedelta) -> None:
    entering = {
        "expired": ("active", "period_ended", "cascade", {}, {"expires_at": NOW}),
        "reinstate_pending": (
            "cancelled",
            "request_reinstatement",
            "support",
            {"note": "n"},
            {"cancelled_at": NOW},
        ),
        "refund_issued": (
            "cancelled",
            "approve_refund",
            "finance",
            {"amount_cents": 5, "reason_code": "x"},
            REFUND_DUE,
        ),
    }[state]
    src, ev, role, payload, data = entering
    ops = timer_ops(decide(GOVERNOR, ent(src, **data), ev, facts(role, payload, approved_by="u2")))
    assert ops[timer][0] == "arm"
    assert ops[timer][1].due_at == NOW + after
    assert ops[timer][1].event == event


def test_stale_timer_is_ignored() -> None:
    out = decide(
        GOVERNOR,
        ent("suspended", seq=5, **SUSPENDED_PF),
        "suspension_timeout",
        facts("timer", timer="suspension_timeout", seq=4),
    )
    assert isinstance(out, Rejection)
    assert out.code == "stale_timer"


# ------------------------------------------------------------------ four-eyes and requests


def test_four_eyes_rules() -> None:
    refund = decide(
        GOVERNOR,
        ent("cancelled", **REFUND_DUE),
        "approve_refund",
        facts("finance", {"amount_cents": 100, "reason_code": "x"}),
    )
    assert isinstance(refund, Decision)
    assert refund.needs_approval == FourEyes(approvers=("finance", "manager"))
    approved = decide(
        GOVERNOR,
        ent("cancelled", **REFUND_DUE),
        "approve_refund",
        facts("finance", {"amount_cents": 100, "reason_code": "x"}, approved_by="m1"),
    )
    assert isinstance(approved, Decision)
    assert approved.needs_approval is None
    archive = decide(GOVERNOR, ent("active"), "archive", facts("admin"))
    assert isinstance(archive, Decision)
    assert archive.needs_approval == FourEyes(approvers=("compliance",))
    by_cascade = decide(GOVERNOR, ent("active"), "archive", facts("cascade"))
    assert isinstance(by_cascade, Decision)
    assert by_cascade.needs_approval is None
    request = decide(
        GOVERNOR, ent("pending_approval"), "approve", facts("support", {"note": "customer waits"})
    )
    assert isinstance(request, Decision)
    assert request.needs_approval is not None
    assert set(request.needs_approval.approvers) == {"manager", "admin"}
    direct = decide(GOVERNOR, ent("pending_approval"), "approve", facts("manager", {"note": "ok"}))
    assert isinstance(direct, Decision)
    assert direct.needs_approval is None


# ------------------------------------------------------------------ effects and attention


def test_effects_and_attention() -> None:
    esc = decide(
        GOVERNOR,
        ent("pending_approval"),
        "approval_escalation",
        facts("timer", {"level": 2, "queue": "admin", "response_target": "1h"}),
    )
    assert isinstance(esc, Decision)
    assert esc.attention
    assert [dict(e.args) for e in esc.effects if e.name == "notify_staff"] == [
        {"queue": "admin", "template": "entitlement_approval_overdue", "response_target": "1h"}
    ]
    refund = decide(
        GOVERNOR,
        ent("cancelled", **REFUND_DUE),
        "approve_refund",
        facts("finance", {"amount_cents": 2000, "reason_code": "x"}, approved_by="m1"),
    )
    assert isinstance(refund, Decision)
    assert [dict(e.args) for e in refund.effects if e.name == "entitlement_process_refund"] == [
        {"entitlement_id": "ent-1", "refund_request_id": "ent-1/refund/5", "amount_cents": 2000}
    ]
    cancelled = decide(
        GOVERNOR,
        ent("active"),
        "cancel_early",
        facts("support", {"confirmation_ref": "C1"}, extra={"entitlement_unused_prepaid_cents": 900}),
    )
    assert isinstance(cancelled, Decision)
    assert cancelled.attention
    assert {e.name for e in cancelled.effects} >= {
        "entitlement_revoke_access",
        "entitlement_open_refund_request",
    }
    quiet = decide(GOVERNOR, ent("active"), "cancel_early", facts("support", {"confirmation_ref": "C1"}))
    assert isinstance(quiet, Decision)
    assert not quiet.attention
    disputed = decide(GOVERNOR, ent("refund_issued", **IN_FLIGHT), "refund_disputed", facts("sys"))
    assert isinstance(disputed, Decision)
    assert disputed.attention


# ------------------------------------------------------------------ outgoing cascades


def test_x04_on_activation() -> None:
    out = decide(GOVERNOR, ent("pending_approval", tier="starter"), "approve", facts("sys"))
    assert isinstance(out, Decision)
    got = {(c.id, c.target, c.event, c.select, c.create_event): dict(c.payload) for c in out.cascades}
    assert got == {
        ("X04", "quota_sla", "allocate", "upsert", "allocate"): {"tier": "starter", "sku_id": "sku-core"},
        ("X04", "multi_tenant", "register_tenant", "upsert", "register_tenant"): {"tier": "starter"},
    }
    on = default_settings().override({"entitlement.approve_on_timeout": True})
    auto = decide(
        GOVERNOR, ent("pending_approval", tier="pro"), "approval_final_timeout", facts("timer", settings=on)
    )
    assert isinstance(auto, Decision)
    assert {c.id for c in auto.cascades} == {"X04"}


def _overdue(state: str) -> dict[str, tuple[Instance, ...]]:
    return {**world(), "billing": (peer("billing", state, "inv-1", kind="renewal"),)}


@pytest.mark.parametrize(
    ("payload", "data", "peers", "auto"),
    [
        ({"auto_approve": True}, {"cancellation_reason": "account_closed"}, world(), True),
        ({}, {"cancellation_reason": "payment_failed"}, _overdue("payment_received"), True),
        ({}, {"cancellation_reason": "payment_failed"}, _overdue("retry_2"), False),
        ({}, {"cancellation_reason": "tos_violation"}, world(), False),
    ],
)
def test_xi1_auto_approves_reinstatement(
    payload: dict[str, Any], data: dict[str, Any], peers: dict[str, tuple[Instance, ...]], auto: bool
) -> None:
    out = decide(
        GOVERNOR,
        ent("cancelled", cancelled_at=NOW - DAY, **data),
        "request_reinstatement",
        facts("cascade", payload, peers=peers),
    )
    assert isinstance(out, Decision)
    assert out.to_state == "reinstate_pending"
    emitted = [(c.id, c.target, c.event, c.select) for c in out.cascades]
    assert emitted == ([("Xi1", "entitlement", "approve_reinstatement", "self")] if auto else [])
