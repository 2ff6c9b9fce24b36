"""Billing governor (GOVERNORS.md §2): every row, rejection, timer, four-eyes rule and cascade."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pytest

from governors import Decision, Facts, Instance, Rejection, apply, decide, plan
from governors.definitions.billing import GOVERNOR
from governors.engine import timer_facts
from governors.facts import Context
from governors.rules.base import GUARDS
from governors.rules.billing import attempt_key, next_batch_at, payment_key, receipt_hash
from governors.spec import FourEyes
from tests.governors.tables import NOW, SETTINGS, Case, Instances, Table, decided, make_facts, where

REASON = "customer called about the invoice"
SEQ = 4

# An issued renewal invoice of 29.99 USD with a backup method on file.
ISSUED: dict[str, Any] = {
    "kind": "renewal",
    "amount_cents": 2999,
    "tax_rate": "0",
    "tax_cents": 0,
    "total_cents": 2999,
    "currency": "USD",
    "subscription_id": "sub-1",
    "payment_method": "pm-primary",
    "backup_methods": ["pm-backup", "pm-secondary"],
    "failed_attempts": 0,
    "retry_number": 0,
    "paid_cents": 0,
    "refunded_cents": 0,
    "payment_in_flight": False,
    "dunning_holds": [],
    "dunning_hold": False,
    "issued_at": NOW - timedelta(days=2),
}
AWAITING: dict[str, Any] = {
    k: v for k, v in ISSUED.items() if k not in ("tax_cents", "total_cents", "issued_at")
} | {"generate_at": NOW - timedelta(minutes=1)}
FAILED: dict[str, Any] = {**ISSUED, "failed_attempts": 1}
RETRY_1: dict[str, Any] = {**FAILED, "retry_number": 1}
RETRY_2: dict[str, Any] = {**FAILED, "retry_number": 2, "failed_attempts": 2}
RETRY_3: dict[str, Any] = {**FAILED, "retry_number": 3, "failed_attempts": 3}
PAID: dict[str, Any] = {
    **ISSUED,
    "paid_cents": 2999,
    "paid_at": NOW - timedelta(days=2),
    "payment_ids": ["py_1"],
    "idempotency_keys": ["k-old"],
}
ARCHIVED_PAID: dict[str, Any] = {**PAID, "reconciled_at": NOW - timedelta(days=1)}
COLLECTIONS: dict[str, Any] = {**RETRY_3, "collections_at": NOW - timedelta(days=1)}
DISPUTED: dict[str, Any] = {**PAID, "dispute_id": "dp-1", "dispute_kind": "dispute"}
HELD: dict[str, Any] = {"dunning_holds": ["account_locked"], "dunning_hold": True}
IN_FLIGHT: dict[str, Any] = {"payment_in_flight": True, "in_flight_key": "inv-1:attempt:1"}


# Invoice inv-1 of customer c1.
make = Instances("billing", "bill-1", SEQ, timedelta(days=2), customer_id="c1", subject_id="inv-1")


# A timer fires at the instance's seq; staff give REASON; the actor is always u1.
facts = partial(make_facts, reason=REASON, seq=SEQ, actor="u1")


CYCLE = {"kind": "renewal", "amount_cents": 2999, "currency": "USD", "subscription_id": "sub-1"}
PAY = {"amount_cents": 2999, "payment_id": "py_9", "paid_at": NOW - timedelta(seconds=5)}
CREDIT_PEER = make("invoice_issued", {**ISSUED, "credits": [{"key": "c1:2026-01:sla", "cents": 100}]})
RELEASE_AT = NOW + timedelta(days=10)
OK_RECON = {"processor_record_matches": True}

CASES: list[Any] = [
    # B01 cycle_begin (creation)
    pytest.param(Case("B01", None, "cycle_begin", "cascade", "awaiting_invoice", CYCLE), id="B01-ok"),
    pytest.param(
        Case("B01", None, "cycle_begin", "sys", "awaiting_invoice", {**CYCLE, "tax_rate": 0.2}), id="B01-sys"
    ),
    pytest.param(
        Case("B01", None, "cycle_begin", "cascade", "guard_failed", {**CYCLE, "amount_cents": 0}),
        id="B01-zero",
    ),
    pytest.param(
        Case("B01", None, "cycle_begin", "cascade", "guard_failed", {**CYCLE, "amount_cents": -500}),
        id="B01-negative-proration",
    ),
    pytest.param(
        Case("B01", None, "cycle_begin", "cascade", "guard_failed", {**CYCLE, "currency": "usd"}),
        id="B01-currency",
    ),
    pytest.param(
        Case("B01", None, "cycle_begin", "cascade", "guard_failed", {**CYCLE, "tax_rate": 1.5}),
        id="B01-tax-rate",
    ),
    pytest.param(
        Case("B01", None, "cycle_begin", "cascade", "invalid_input", {**CYCLE, "kind": "chargeback_case"}),
        id="B01-kind-not-a-cycle",
    ),
    pytest.param(
        Case(
            "B01", None, "cycle_begin", "cascade", "invalid_input", {"kind": "renewal", "amount_cents": 100}
        ),
        id="B01-no-currency",
    ),
    pytest.param(
        Case("B01", None, "cycle_begin", "cascade", "invalid_input", {**CYCLE, "amount_cents": 29.99}),
        id="B01-float-money",
    ),
    pytest.param(Case("B01", None, "cycle_begin", "finance", "role_not_allowed", CYCLE), id="B01-finance"),
    pytest.param(
        Case("-", "awaiting_invoice", "cycle_begin", "cascade", "invalid_transition", CYCLE, AWAITING),
        id="B01-exists",
    ),
    pytest.param(Case("-", None, "payment_received", "sys", "not_created", PAY), id="pay-before-create"),
    pytest.param(Case("-", "payment_pending", "pay_twice", "sys", "unknown_event", {}, ISSUED), id="unknown"),
    # B02 invoice_generation_time_reached
    pytest.param(
        Case(
            "B02",
            "awaiting_invoice",
            "invoice_generation_time_reached",
            "timer",
            "invoice_issued",
            {},
            AWAITING,
        ),
        id="B02-ok",
    ),
    pytest.param(
        Case(
            "B02",
            "awaiting_invoice",
            "invoice_generation_time_reached",
            "timer",
            "guard_failed",
            {},
            {**AWAITING, "generate_at": NOW + timedelta(days=3)},
        ),
        id="B02-too-early",
    ),
    pytest.param(
        Case(
            "B02",
            "awaiting_invoice",
            "invoice_generation_time_reached",
            "timer",
            "guard_failed",
            {},
            AWAITING,
            {"invoice_template_valid": False},
        ),
        id="B02-template-invalid",
    ),
    pytest.param(
        Case(
            "B02",
            "awaiting_invoice",
            "invoice_generation_time_reached",
            "sys",
            "role_not_allowed",
            {},
            AWAITING,
        ),
        id="B02-not-a-timer",
    ),
    # B03 invoice_delivered
    pytest.param(
        Case(
            "B03",
            "invoice_issued",
            "invoice_delivered",
            "sys",
            "payment_pending",
            {"confirmed": True},
            ISSUED,
        ),
        id="B03-confirmed",
    ),
    pytest.param(
        Case("B03", "invoice_issued", "invoice_delivered", "timer", "payment_pending", {}, ISSUED),
        id="B03-fallback-timer",
    ),
    pytest.param(
        Case(
            "B03",
            "invoice_issued",
            "invoice_delivered",
            "sys",
            "guard_failed",
            {},
            {**ISSUED, "issued_at": NOW - timedelta(hours=2)},
        ),
        id="B03-unconfirmed",
    ),
    # B04 payment_received in payment_pending, with the §2.4 idempotence codes
    pytest.param(
        Case("B04", "payment_pending", "payment_received", "sys", "payment_received", PAY, ISSUED), id="B04"
    ),
    pytest.param(
        Case(
            "B04",
            "payment_pending",
            "payment_received",
            "sys",
            "payment_received",
            {**PAY, "amount_cents": 3000},
            ISSUED,
        ),
        id="B04-plus-one-cent",
    ),
    pytest.param(
        Case(
            "B04",
            "payment_pending",
            "payment_received",
            "sys",
            "payment_received",
            {**PAY, "amount_cents": 2998},
            ISSUED,
        ),
        id="B04-minus-one-cent",
    ),
    pytest.param(
        Case(
            "B04",
            "payment_pending",
            "payment_received",
            "sys",
            "amount_mismatch",
            {**PAY, "amount_cents": 3001},
            ISSUED,
        ),
        id="B04-amount-mismatch",
    ),
    pytest.param(
        Case(
            "B04",
            "payment_pending",
            "payment_received",
            "sys",
            "amount_mismatch",
            {**PAY, "amount_cents": 2000},
            ISSUED,
        ),
        id="B04-underpaid",
    ),
    pytest.param(
        Case(
            "B04",
            "payment_pending",
            "payment_received",
            "sys",
            "duplicate_payment",
            PAY,
            {**ISSUED, "payment_ids": ["py_9"]},
        ),
        id="B04-duplicate-payment-id",
    ),
    pytest.param(
        Case(
            "B04",
            "payment_pending",
            "payment_received",
            "sys",
            "duplicate_payment",
            {"amount_cents": 2999, "paid_at": NOW},
            {**ISSUED, "idempotency_keys": [payment_key("c1", "inv-1", 2999, int(NOW.timestamp()))]},
        ),
        id="B04-duplicate-key",
    ),
    pytest.param(
        Case(
            "B04",
            "payment_pending",
            "payment_received",
            "sys",
            "concurrent_payment",
            {**PAY, "attempt_key": "inv-1:attempt:7"},
            {**ISSUED, **IN_FLIGHT},
        ),
        id="B04-concurrent",
    ),
    pytest.param(
        Case(
            "B04",
            "payment_pending",
            "payment_received",
            "sys",
            "payment_received",
            {**PAY, "attempt_key": "inv-1:attempt:1"},
            {**ISSUED, **IN_FLIGHT},
        ),
        id="B04-result-of-the-charge-in-flight",
    ),
    pytest.param(
        Case(
            "B04",
            "payment_pending",
            "payment_received",
            "sys",
            "invalid_input",
            {"payment_id": "py_9"},
            ISSUED,
        ),
        id="B04-no-amount",
    ),
    pytest.param(
        Case("B04", "payment_pending", "payment_received", "finance", "role_not_allowed", PAY, ISSUED),
        id="B04-finance",
    ),
    pytest.param(
        Case("-", "awaiting_invoice", "payment_received", "sys", "invalid_transition", PAY, AWAITING),
        id="pay-unissued",
    ),
    # B05 / B06
    pytest.param(
        Case(
            "B05",
            "payment_pending",
            "payment_declined",
            "sys",
            "payment_failed",
            {"decline_code": "card_declined"},
            ISSUED,
        ),
        id="B05",
    ),
    pytest.param(
        Case("B06", "payment_pending", "payment_window_timeout", "timer", "payment_failed", {}, ISSUED),
        id="B06",
    ),
    pytest.param(
        Case("B06", "payment_pending", "payment_window_timeout", "sys", "role_not_allowed", {}, ISSUED),
        id="B06-not-a-timer",
    ),
    # B07 dispute_opened
    pytest.param(
        Case(
            "B07",
            "payment_pending",
            "dispute_opened",
            "sys",
            "payment_disputed",
            {"dispute_id": "dp-1"},
            ISSUED,
        ),
        id="B07-sys",
    ),
    pytest.param(
        Case("B07", "payment_failed", "dispute_opened", "support", "payment_disputed", {}, FAILED),
        id="B07-support",
    ),
    pytest.param(
        Case(
            "B07", "payment_failed", "dispute_opened", "support", "invalid_input", {"reason": "short"}, FAILED
        ),
        id="B07-short-reason",
    ),
    pytest.param(
        Case("-", "retry_2", "dispute_opened", "sys", "invalid_transition", {}, RETRY_2),
        id="B07-not-from-retry",
    ),
    # B08 accounting_reconciled
    pytest.param(
        Case("B08", "payment_received", "accounting_reconciled", "sys", "archived", {}, PAID, OK_RECON),
        id="B08-job",
    ),
    pytest.param(
        Case(
            "B08",
            "payment_received",
            "accounting_reconciled",
            "finance",
            "archived",
            {"processor_proof_ref": "stripe:ch_1"},
            PAID,
            {"processor_confirms_payment": True},
        ),
        id="B08-force",
    ),
    pytest.param(
        Case(
            "B08",
            "payment_received",
            "accounting_reconciled",
            "sys",
            "guard_failed",
            {},
            {**PAID, "paid_at": NOW - timedelta(hours=5)},
            OK_RECON,
        ),
        id="B08-too-soon",
    ),
    pytest.param(
        Case(
            "B08",
            "payment_received",
            "accounting_reconciled",
            "sys",
            "guard_failed",
            {},
            PAID,
            {"processor_record_matches": False},
        ),
        id="B08-mismatch",
    ),
    pytest.param(
        Case(
            "B08",
            "payment_received",
            "accounting_reconciled",
            "finance",
            "invalid_input",
            {},
            PAID,
            {"processor_confirms_payment": True},
        ),
        id="B08-force-without-proof",
    ),
    pytest.param(
        Case(
            "B08",
            "payment_received",
            "accounting_reconciled",
            "finance",
            "guard_failed",
            {"processor_proof_ref": "stripe:ch_1"},
            PAID,
        ),
        id="B08-force-unconfirmed",
    ),
    pytest.param(
        Case("B08", "payment_received", "accounting_reconciled", "support", "role_not_allowed", {}, PAID),
        id="B08-support",
    ),
    # B09 chargeback
    pytest.param(
        Case(
            "B09",
            "payment_received",
            "chargeback_received",
            "sys",
            "payment_disputed",
            {"dispute_id": "cb-1"},
            PAID,
        ),
        id="B09",
    ),
    pytest.param(
        Case(
            "B09",
            "payment_received",
            "chargeback_received",
            "sys",
            "guard_failed",
            {"dispute_id": "cb-1", "amount_cents": 5000},
            PAID,
        ),
        id="B09-more-than-paid",
    ),
    pytest.param(
        Case("B09", "payment_received", "chargeback_received", "sys", "invalid_input", {}, PAID),
        id="B09-no-id",
    ),
    pytest.param(
        Case(
            "B09b",
            "archived",
            "chargeback_received",
            "sys",
            "archived",
            {"dispute_id": "cb-2", "amount_cents": 2999},
            ARCHIVED_PAID,
        ),
        id="B09b-archived",
    ),
    pytest.param(
        Case(
            "B09c",
            None,
            "chargeback_received",
            "cascade",
            "payment_disputed",
            {"dispute_id": "cb-2", "amount_cents": 2999, "currency": "USD", "linked_invoice_id": "inv-1"},
        ),
        id="B09c-linked-case",
    ),
    pytest.param(
        Case(
            "B09c",
            None,
            "chargeback_received",
            "cascade",
            "invalid_input",
            {"dispute_id": "cb-2", "amount_cents": 2999, "currency": "USD"},
        ),
        id="B09c-no-link",
    ),
    pytest.param(
        Case(
            "-",
            "payment_pending",
            "chargeback_received",
            "sys",
            "invalid_transition",
            {"dispute_id": "cb"},
            ISSUED,
        ),
        id="B09-unpaid",
    ),
    # B10 retry_due / retry_now
    pytest.param(Case("B10", "payment_failed", "retry_due", "timer", "retry_1", {}, FAILED), id="B10-timer"),
    pytest.param(
        Case("B10", "payment_failed", "retry_now", "finance", "retry_1", {}, FAILED), id="B10-manual"
    ),
    pytest.param(
        Case(
            "B10",
            "payment_failed",
            "retry_now",
            "finance",
            "retry_1",
            {"payment_method_id": "pm-new"},
            FAILED,
        ),
        id="B10-manual-method",
    ),
    pytest.param(
        Case("B10", "payment_failed", "retry_now", "finance", "guard_failed", {}, {**FAILED, **HELD}),
        id="B10-held",
    ),
    pytest.param(
        Case(
            "B10", "payment_failed", "retry_now", "finance", "guard_failed", {}, {**FAILED, "retry_number": 3}
        ),
        id="B10-retries-used",
    ),
    pytest.param(
        Case(
            "B10", "payment_failed", "retry_now", "finance", "concurrent_payment", {}, {**FAILED, **IN_FLIGHT}
        ),
        id="B10-in-flight",
    ),
    pytest.param(
        Case("B10", "payment_failed", "retry_now", "manager", "role_not_allowed", {}, FAILED), id="B10-mgr"
    ),
    pytest.param(
        Case("B10", "payment_failed", "retry_now", "finance", "invalid_input", {"reason": "retry"}, FAILED),
        id="B10-short-reason",
    ),
    pytest.param(
        Case("-", "payment_failed", "retry_due", "timer", "stale_timer", {}, FAILED, stale=True),
        id="B10-stale-timer",
    ),
    # B11
    pytest.param(
        Case("B11", "payment_failed", "escalate_to_admin", "finance", "payment_disputed", {}, FAILED),
        id="B11",
    ),
    pytest.param(
        Case("B11", "payment_failed", "escalate_to_admin", "support", "role_not_allowed", {}, FAILED),
        id="B11-support",
    ),
    # B12 / B13 in the retry windows
    pytest.param(
        Case("B12", "retry_1", "payment_received", "sys", "payment_received", PAY, RETRY_1), id="B12-r1"
    ),
    pytest.param(
        Case("B12", "retry_3", "payment_received", "sys", "payment_received", PAY, RETRY_3), id="B12-r3"
    ),
    pytest.param(
        Case(
            "B12",
            "retry_2",
            "payment_received",
            "sys",
            "amount_mismatch",
            {**PAY, "amount_cents": 1},
            RETRY_2,
        ),
        id="B12-mismatch",
    ),
    pytest.param(Case("B13", "retry_1", "payment_declined", "sys", "retry_1", {}, RETRY_1), id="B13-r1"),
    pytest.param(Case("B13", "retry_3", "payment_declined", "sys", "retry_3", {}, RETRY_3), id="B13-r3"),
    # B14–B16 window ends
    pytest.param(Case("B14", "retry_1", "retry_window_elapsed", "timer", "retry_2", {}, RETRY_1), id="B14"),
    pytest.param(
        Case("B14", "retry_1", "retry_window_elapsed", "timer", "guard_failed", {}, {**RETRY_1, **HELD}),
        id="B14-held",
    ),
    pytest.param(Case("B15", "retry_2", "retry_window_elapsed", "timer", "retry_3", {}, RETRY_2), id="B15"),
    pytest.param(
        Case("B16", "retry_3", "retry_window_elapsed", "timer", "collection_agency", {}, RETRY_3), id="B16"
    ),
    pytest.param(
        Case(
            "B16",
            "retry_3",
            "retry_window_elapsed",
            "timer",
            "guard_failed",
            {},
            {**RETRY_3, "dunning_holds": ["manual"], "dunning_hold": True},
        ),
        id="B16-manual-override",
    ),
    # B17 payment_method_updated
    pytest.param(
        Case(
            "B17",
            "payment_failed",
            "payment_method_updated",
            "cascade",
            "payment_failed",
            {"method_token": "pm-new", "validated": True},
            FAILED,
        ),
        id="B17-failed",
    ),
    pytest.param(
        Case(
            "B17",
            "retry_2",
            "payment_method_updated",
            "cascade",
            "retry_2",
            {"method_token": "pm-new"},
            RETRY_2,
            {"payment_method_valid": True},
        ),
        id="B17-retry",
    ),
    pytest.param(
        Case(
            "B17",
            "retry_2",
            "payment_method_updated",
            "cascade",
            "guard_failed",
            {"method_token": "pm-new"},
            RETRY_2,
        ),
        id="B17-not-validated",
    ),
    pytest.param(
        Case(
            "B17",
            "retry_1",
            "payment_method_updated",
            "sys",
            "guard_failed",
            {"method_token": "pm-new", "validated": True},
            {**RETRY_1, "fraud_checks": True},
        ),
        id="B17-fraud-checks",
    ),
    pytest.param(
        Case(
            "B17",
            "retry_1",
            "payment_method_updated",
            "sys",
            "retry_1",
            {"method_token": "pm-new", "validated": True},
            {**RETRY_1, "fraud_checks": True},
            {"compliance_reviewed": True},
        ),
        id="B17-fraud-checks-reviewed",
    ),
    pytest.param(
        Case(
            "B17",
            "retry_1",
            "payment_method_updated",
            "cascade",
            "concurrent_payment",
            {"method_token": "pm-new", "validated": True},
            {**RETRY_1, **IN_FLIGHT},
        ),
        id="B17-in-flight",
    ),
    pytest.param(
        Case(
            "-",
            "payment_pending",
            "payment_method_updated",
            "cascade",
            "invalid_transition",
            {"validated": True},
            ISSUED,
        ),
        id="B17-not-in-dunning",
    ),
    # B18–B20 collections
    pytest.param(
        Case(
            "B18",
            "collection_agency",
            "payment_recovered",
            "finance",
            "archived",
            {"amount_cents": 2999, "payment_ref": "agency-77"},
            COLLECTIONS,
        ),
        id="B18",
    ),
    pytest.param(
        Case(
            "B18",
            "collection_agency",
            "payment_recovered",
            "finance",
            "invalid_input",
            {"payment_ref": "a-1"},
            COLLECTIONS,
        ),
        id="B18-no-amount",
    ),
    pytest.param(
        Case(
            "B18",
            "collection_agency",
            "payment_recovered",
            "sys",
            "guard_failed",
            {"amount_cents": 0, "payment_ref": "a-1"},
            COLLECTIONS,
        ),
        id="B18-zero",
    ),
    pytest.param(
        Case(
            "B19",
            "collection_agency",
            "settlement_agreed",
            "finance",
            "archived",
            {"settlement_cents": 1500, "agreement_ref": "agr-1"},
            COLLECTIONS,
        ),
        id="B19",
    ),
    pytest.param(
        Case(
            "B19",
            "collection_agency",
            "settlement_agreed",
            "finance",
            "guard_failed",
            {"settlement_cents": 3000, "agreement_ref": "agr-1"},
            COLLECTIONS,
        ),
        id="B19-above-outstanding",
    ),
    pytest.param(
        Case(
            "B19",
            "collection_agency",
            "settlement_agreed",
            "finance",
            "guard_failed",
            {"settlement_cents": 0, "agreement_ref": "agr-1"},
            COLLECTIONS,
        ),
        id="B19-zero",
    ),
    pytest.param(
        Case(
            "B19",
            "collection_agency",
            "settlement_agreed",
            "support",
            "role_not_allowed",
            {"settlement_cents": 100, "agreement_ref": "agr-1"},
            COLLECTIONS,
        ),
        id="B19-support",
    ),
    pytest.param(
        Case(
            "B20",
            "collection_agency",
            "account_written_off",
            "finance",
            "archived",
            {"amount_cents": 2999, "justification": "customer insolvent"},
            COLLECTIONS,
        ),
        id="B20",
    ),
    pytest.param(
        Case(
            "B20",
            "collection_agency",
            "account_written_off",
            "finance",
            "invalid_input",
            {"amount_cents": 2999},
            COLLECTIONS,
        ),
        id="B20-no-justification",
    ),
    # B21 dispute_resolved
    pytest.param(
        Case(
            "B21",
            "payment_disputed",
            "dispute_resolved",
            "finance",
            "archived",
            {"outcome": "payment_valid", "evidence_ref": "ev-1"},
            DISPUTED,
        ),
        id="B21-valid",
    ),
    pytest.param(
        Case(
            "B21",
            "payment_disputed",
            "dispute_resolved",
            "finance",
            "archived",
            {"outcome": "refund", "refund_cents": 2999, "evidence_ref": "ev-1"},
            DISPUTED,
        ),
        id="B21-refund",
    ),
    pytest.param(
        Case(
            "B21",
            "payment_disputed",
            "dispute_resolved",
            "finance",
            "archived",
            {
                "outcome": "partial_refund",
                "refund_cents": 1000,
                "retained_cents": 1999,
                "evidence_ref": "ev-1",
            },
            DISPUTED,
        ),
        id="B21-partial",
    ),
    pytest.param(
        Case(
            "B21",
            "payment_disputed",
            "dispute_resolved",
            "finance",
            "guard_failed",
            {"outcome": "payment_valid", "refund_cents": 100, "evidence_ref": "ev-1"},
            DISPUTED,
        ),
        id="B21-valid-with-refund",
    ),
    pytest.param(
        Case(
            "B21",
            "payment_disputed",
            "dispute_resolved",
            "finance",
            "guard_failed",
            {"outcome": "refund", "evidence_ref": "ev-1"},
            DISPUTED,
        ),
        id="B21-refund-without-amount",
    ),
    pytest.param(
        Case(
            "B21",
            "payment_disputed",
            "dispute_resolved",
            "finance",
            "guard_failed",
            {
                "outcome": "partial_refund",
                "refund_cents": 1000,
                "retained_cents": 1000,
                "evidence_ref": "ev-1",
            },
            DISPUTED,
        ),
        id="B21-partial-does-not-add-up",
    ),
    pytest.param(
        Case(
            "B21",
            "payment_disputed",
            "dispute_resolved",
            "finance",
            "guard_failed",
            {"outcome": "refund", "refund_cents": 5000, "evidence_ref": "ev-1"},
            DISPUTED,
        ),
        id="B21-refund-above-paid",
    ),
    pytest.param(
        Case(
            "B21",
            "payment_disputed",
            "dispute_resolved",
            "finance",
            "invalid_input",
            {"outcome": "split", "evidence_ref": "ev-1"},
            DISPUTED,
        ),
        id="B21-unknown-outcome",
    ),
    # B22 issue_refund
    pytest.param(
        Case(
            "B22",
            "payment_received",
            "issue_refund",
            "finance",
            "payment_received",
            {"amount_cents": 500, "reason_code": "duplicate_charge"},
            PAID,
        ),
        id="B22-paid",
    ),
    pytest.param(
        Case(
            "B22",
            "archived",
            "issue_refund",
            "finance",
            "archived",
            {"amount_cents": 2999, "reason_code": "goodwill"},
            ARCHIVED_PAID,
        ),
        id="B22-archived",
    ),
    pytest.param(
        Case(
            "B22",
            "archived",
            "issue_refund",
            "cascade",
            "archived",
            {"amount_cents": 2999, "reason_code": "fraud_reversal"},
            {**ARCHIVED_PAID, "fraud_checks": True},
        ),
        id="B22-fraud-reversal-cascade",
    ),
    pytest.param(
        Case(
            "B22",
            "payment_received",
            "issue_refund",
            "finance",
            "guard_failed",
            {"amount_cents": 2000, "reason_code": "duplicate_charge"},
            {**PAID, "refunded_cents": 1000},
        ),
        id="B22-above-left",
    ),
    pytest.param(
        Case(
            "B22",
            "payment_received",
            "issue_refund",
            "finance",
            "guard_failed",
            {"amount_cents": 100, "reason_code": "duplicate_charge", "refund_id": "r1"},
            {**PAID, "refunds": [{"refund_id": "inv-1:r1", "amount_cents": 100}], "refunded_cents": 100},
        ),
        id="B22-refund-key-seen",
    ),
    pytest.param(
        Case(
            "B22",
            "payment_received",
            "issue_refund",
            "finance",
            "guard_failed",
            {"amount_cents": 100, "reason_code": "duplicate_charge"},
            {**PAID, "fraud_checks": True},
        ),
        id="B22-fraud-checks",
    ),
    pytest.param(
        Case(
            "B22",
            "payment_received",
            "issue_refund",
            "finance",
            "invalid_input",
            {"amount_cents": 0, "reason_code": "duplicate_charge"},
            PAID,
        ),
        id="B22-zero",
    ),
    pytest.param(
        Case(
            "B22",
            "payment_received",
            "issue_refund",
            "compliance",
            "role_not_allowed",
            {"amount_cents": 100, "reason_code": "x"},
            PAID,
        ),
        id="B22-compliance",
    ),
    pytest.param(
        Case(
            "-",
            "payment_pending",
            "issue_refund",
            "finance",
            "invalid_transition",
            {"amount_cents": 100, "reason_code": "x"},
            ISSUED,
        ),
        id="B22-unpaid",
    ),
    # B23 dunning_hold / dunning_release
    pytest.param(
        Case(
            "B23",
            "payment_failed",
            "dunning_hold",
            "cascade",
            "payment_failed",
            {"hold": "account_locked"},
            FAILED,
        ),
        id="B23-hold-cascade",
    ),
    pytest.param(
        Case(
            "B23",
            "payment_pending",
            "dunning_hold",
            "cascade",
            "payment_pending",
            {"hold": "compliance"},
            ISSUED,
        ),
        id="B23-hold-pending",
    ),
    pytest.param(
        Case(
            "B23",
            "retry_2",
            "dunning_release",
            "cascade",
            "retry_2",
            {"hold": "account_locked"},
            {**RETRY_2, **HELD},
        ),
        id="B23-release",
    ),
    pytest.param(
        Case(
            "B23",
            "collection_agency",
            "dunning_hold",
            "finance",
            "collection_agency",
            {"expected_release_at": RELEASE_AT},
            COLLECTIONS,
        ),
        id="B23-finance-hold",
    ),
    pytest.param(
        Case("B23", "retry_1", "dunning_hold", "finance", "invalid_input", {}, RETRY_1),
        id="B23-no-release-date",
    ),
    pytest.param(
        Case(
            "B23",
            "payment_pending",
            "dunning_hold",
            "finance",
            "guard_failed",
            {"expected_release_at": RELEASE_AT},
            ISSUED,
        ),
        id="B23-finance-outside-ladder",
    ),
    pytest.param(
        Case(
            "B23",
            "retry_1",
            "dunning_hold",
            "support",
            "role_not_allowed",
            {"expected_release_at": RELEASE_AT},
            RETRY_1,
        ),
        id="B23-support",
    ),
    pytest.param(
        Case(
            "-",
            "archived",
            "dunning_hold",
            "cascade",
            "invalid_transition",
            {"hold": "account_locked"},
            ARCHIVED_PAID,
        ),
        id="B23-archived",
    ),
    # Bx1 void_invoice (X08)
    pytest.param(
        Case("Bx1", "awaiting_invoice", "void_invoice", "cascade", "archived", {}, AWAITING), id="Bx1"
    ),
    pytest.param(
        Case("-", "invoice_issued", "void_invoice", "cascade", "invalid_transition", {}, ISSUED),
        id="Bx1-issued",
    ),
    # Bx2 fraud_checks_on / off (X22)
    pytest.param(Case("Bx2", "retry_1", "fraud_checks_on", "cascade", "retry_1", {}, RETRY_1), id="Bx2-on"),
    pytest.param(
        Case(
            "Bx2",
            "archived",
            "fraud_checks_off",
            "cascade",
            "archived",
            {},
            {**ARCHIVED_PAID, "fraud_checks": True},
        ),
        id="Bx2-off-archived",
    ),
    # Bx3 apply_credit (X29, §11 #20)
    pytest.param(
        Case(
            "Bx3",
            "awaiting_invoice",
            "apply_credit",
            "cascade",
            "awaiting_invoice",
            {"period": "2026-01", "credit_pct": "10", "kind": "sla"},
            AWAITING,
        ),
        id="Bx3-sla",
    ),
    pytest.param(
        Case(
            "Bx3",
            "payment_pending",
            "apply_credit",
            "finance",
            "payment_pending",
            {"period": "2026-01", "amount_cents": 500},
            ISSUED,
        ),
        id="Bx3-goodwill",
    ),
    pytest.param(
        Case(
            "Bx3",
            "payment_pending",
            "apply_credit",
            "cascade",
            "guard_failed",
            {"period": "2026-01", "credit_pct": "30", "kind": "sla"},
            ISSUED,
        ),
        id="Bx3-above-25",
    ),
    pytest.param(
        Case(
            "Bx3",
            "payment_pending",
            "apply_credit",
            "finance",
            "guard_failed",
            {"period": "2026-01", "credit_pct": "5", "amount_cents": 100},
            ISSUED,
        ),
        id="Bx3-both",
    ),
    pytest.param(
        Case(
            "Bx3", "payment_pending", "apply_credit", "finance", "guard_failed", {"period": "2026-01"}, ISSUED
        ),
        id="Bx3-neither",
    ),
    pytest.param(
        Case(
            "Bx3",
            "awaiting_invoice",
            "apply_credit",
            "cascade",
            "guard_failed",
            {"period": "2026-01", "credit_pct": "10", "kind": "sla"},
            AWAITING,
            {},
            {"billing": (CREDIT_PEER,)},
        ),
        id="Bx3-key-on-another-invoice",
    ),
    pytest.param(
        Case(
            "-",
            "payment_failed",
            "apply_credit",
            "cascade",
            "invalid_transition",
            {"period": "2026-01", "credit_pct": "10"},
            FAILED,
        ),
        id="Bx3-in-dunning",
    ),
    # Bx4 payment on a paid invoice
    pytest.param(
        Case("Bx4", "payment_received", "payment_received", "sys", "payment_received", PAY, PAID),
        id="Bx4-second",
    ),
    pytest.param(
        Case(
            "Bx4",
            "payment_received",
            "payment_received",
            "sys",
            "duplicate_payment",
            {**PAY, "payment_id": "py_1"},
            PAID,
        ),
        id="Bx4-redelivered",
    ),
    # Bx5 / Bx6 during the 2-day wait
    pytest.param(
        Case("Bx5", "payment_failed", "payment_received", "sys", "payment_received", PAY, FAILED), id="Bx5"
    ),
    pytest.param(
        Case("Bx6", "payment_failed", "payment_declined", "sys", "payment_failed", {}, FAILED), id="Bx6"
    ),
]


TABLE = Table(
    GOVERNOR,
    CASES,
    lambda case: make(case.state, case.data),
    facts=facts,
    rejection_row="if_named",
    spec_rows={f"B{n:02d}" for n in range(1, 24)},
)
test_row, test_every_row_is_in_the_table, test_every_row_id_is_from_the_spec_or_marked_added = TABLE.tests()


def test_every_spec_row_and_state_is_defined() -> None:
    assert len(GOVERNOR.states) == 11  # D-08
    assert GOVERNOR.badge_order[0] == "collection_agency"
    assert GOVERNOR.badge_order[-1] == "archived"
    assert set(GOVERNOR.badge_order) == set(GOVERNOR.state_names)


# --------------------------------------------------------------------------- data changes


def test_cycle_begin_records_the_invoice_and_generates_now() -> None:
    d = decided(
        decide(GOVERNOR, make(None), "cycle_begin", facts("cascade", {**CYCLE, "backup_methods": ["pm-b"]}))
    )
    assert d.changes["kind"] == "renewal"
    assert d.changes["amount_cents"] == 2999
    assert d.changes["generate_at"] == NOW
    assert d.changes["backup_methods"] == ["pm-b"]
    assert d.changes["tax_rate"] == "0.0"
    assert d.changes["dunning_holds"] == []
    assert d.changes["failed_attempts"] == 0


def test_overage_invoices_wait_for_the_batch_day() -> None:
    d = decided(decide(GOVERNOR, make(None), "cycle_begin", facts("cascade", {**CYCLE, "kind": "overage"})))
    assert d.changes["generate_at"] == datetime(2026, 2, 5, tzinfo=UTC)
    assert next_batch_at(datetime(2026, 12, 20, tzinfo=UTC), 5) == datetime(2027, 1, 5, tzinfo=UTC)
    assert next_batch_at(datetime(2026, 3, 1, tzinfo=UTC), 5) == datetime(2026, 3, 5, tzinfo=UTC)


def test_issue_computes_tax_credits_and_due_date() -> None:
    data = {**AWAITING, "amount_cents": 10_000, "tax_rate": "0.19", "credits": [{"key": "k", "cents": 1000}]}
    d = decided(
        decide(GOVERNOR, make("awaiting_invoice", data), "invoice_generation_time_reached", facts("timer"))
    )
    assert d.changes["tax_cents"] == 1900
    assert d.changes["total_cents"] == 10_900
    assert d.changes["due_date"] == NOW + timedelta(days=30)
    assert d.effects[2].args == {"entry": "invoice_issued", "amount_cents": 10_900}


def test_tax_rounds_half_away_from_zero() -> None:
    data = {**AWAITING, "amount_cents": 2999, "tax_rate": "0.05"}  # 149.95 → 150
    d = decided(
        decide(GOVERNOR, make("awaiting_invoice", data), "invoice_generation_time_reached", facts("timer"))
    )
    assert d.changes["tax_cents"] == 150
    assert d.changes["total_cents"] == 3149


def test_delivery_auto_charges_a_method_on_file() -> None:
    d = decided(
        decide(
            GOVERNOR, make("invoice_issued", ISSUED), "invoice_delivered", facts("sys", {"confirmed": True})
        )
    )
    assert d.changes["payment_in_flight"] is True
    assert d.changes["in_flight_key"] == attempt_key("inv-1", 0) == "inv-1:attempt:0"
    assert d.effects[0].name == "billing_charge"
    assert d.effects[0].args == {"attempt": 0, "method": "pm-primary", "key": "inv-1:attempt:0"}
    no_method = {**ISSUED, "payment_method": None}
    d2 = decided(decide(GOVERNOR, make("invoice_issued", no_method), "invoice_delivered", facts("timer")))
    assert "payment_in_flight" not in d2.changes
    assert d2.effects[0].args["method"] is None


def test_payment_records_key_and_clears_in_flight() -> None:
    d = decided(
        decide(
            GOVERNOR,
            make("payment_pending", {**ISSUED, **IN_FLIGHT}),
            "payment_received",
            facts("sys", {**PAY, "attempt_key": "inv-1:attempt:1"}),
        )
    )
    key = payment_key("c1", "inv-1", 2999, int((NOW - timedelta(seconds=5)).timestamp()))
    assert d.changes["idempotency_keys"] == [key]
    assert d.changes["payment_ids"] == ["py_9"]
    assert d.changes["last_payment_id"] == "py_9"
    assert d.changes["paid_cents"] == 2999
    assert d.changes["paid_at"] == NOW
    assert d.changes["payment_in_flight"] is False
    assert d.changes["in_flight_key"] is None
    assert [e.name for e in d.effects] == ["billing_recognise_revenue", "notify_customer"]
    assert d.effects[0].args == {"amount_cents": 2999}


def test_payment_key_is_the_c_formula() -> None:
    expected = hashlib.sha256(b"c1|inv-1|2999|1768478400").hexdigest()
    assert payment_key("c1", "inv-1", 2999, 1768478400) == expected
    assert len(expected) == 64


def test_a_redelivered_payment_is_a_duplicate_after_it_was_recorded() -> None:
    inst = make("payment_pending", ISSUED)
    first = decided(decide(GOVERNOR, inst, "payment_received", facts("sys", PAY)))
    paid = apply(inst, first)
    again = decide(GOVERNOR, paid, "payment_received", facts("sys", PAY, now=NOW + timedelta(minutes=3)))
    assert isinstance(again, Rejection)
    assert again.code == "duplicate_payment"
    assert "py_9" in again.message
    assert paid.data["paid_cents"] == 2999


def test_decline_counts_attempts_and_keeps_the_message() -> None:
    d = decided(
        decide(
            GOVERNOR,
            make("retry_1", RETRY_1),
            "payment_declined",
            facts("sys", {"decline_code": "insufficient_funds", "decline_message": "NSF"}),
        )
    )
    assert d.self_transition
    assert d.timer_ops == ()
    assert d.changes["failed_attempts"] == 2
    assert d.changes["last_decline"] == {"code": "insufficient_funds", "message": "NSF", "at": NOW}
    w = decided(decide(GOVERNOR, make("payment_pending", ISSUED), "payment_window_timeout", facts("timer")))
    assert w.changes["failed_attempts"] == 1
    assert w.changes["last_decline"]["code"] == "window_expired"


@pytest.mark.parametrize(
    ("state", "data", "event", "role", "payload", "attempt", "method"),
    [
        ("payment_failed", FAILED, "retry_due", "timer", {}, 1, "pm-backup"),
        ("payment_failed", FAILED, "retry_now", "finance", {"payment_method_id": "pm-x"}, 1, "pm-x"),
        ("payment_failed", {**FAILED, "backup_methods": []}, "retry_due", "timer", {}, 1, "pm-primary"),
        ("retry_1", RETRY_1, "retry_window_elapsed", "timer", {}, 2, "pm-secondary"),
        (
            "retry_1",
            {**RETRY_1, "backup_methods": ["pm-backup"]},
            "retry_window_elapsed",
            "timer",
            {},
            2,
            "pm-primary",
        ),
        ("retry_2", RETRY_2, "retry_window_elapsed", "timer", {}, 3, "pm-primary"),
    ],
)
def test_ladder_attempts_use_the_right_method_and_key(
    state: str,
    data: dict[str, Any],
    event: str,
    role: str,
    payload: dict[str, Any],
    attempt: int,
    method: str,
) -> None:
    d = decided(decide(GOVERNOR, make(state, data), event, facts(role, payload)))
    assert d.changes["retry_number"] == attempt
    assert d.changes["charge_method"] == method
    assert d.changes["in_flight_key"] == f"inv-1:attempt:{attempt}"
    charge = next(e for e in d.effects if e.name == "billing_charge")
    assert charge.args == {"attempt": attempt, "method": method, "key": f"inv-1:attempt:{attempt}"}


def test_final_attempt_sends_the_final_notice() -> None:
    d = decided(decide(GOVERNOR, make("retry_2", RETRY_2), "retry_window_elapsed", facts("timer")))
    assert ("notify_customer", "final_payment_attempt") in [
        (e.name, e.args.get("template")) for e in d.effects
    ]


def test_extra_attempt_does_not_count_toward_the_ladder() -> None:
    d = decided(
        decide(
            GOVERNOR,
            make("retry_2", RETRY_2),
            "payment_method_updated",
            facts("cascade", {"method_token": "pm-new", "validated": True}),
        )
    )
    assert "retry_number" not in d.changes
    assert d.changes["payment_method"] == "pm-new"
    assert d.changes["extra_attempts"] == 1
    assert d.changes["in_flight_key"] == "inv-1:attempt:extra1"
    assert d.timer_ops == (), "the retry window keeps running"


def test_reconcile_writes_a_receipt_hash() -> None:
    d = decided(
        decide(
            GOVERNOR, make("payment_received", PAID), "accounting_reconciled", facts("sys", extra=OK_RECON)
        )
    )
    expected = receipt_hash(
        {
            "invoice_id": "inv-1",
            "customer_id": "c1",
            "currency": "USD",
            "total_cents": 2999,
            "paid_cents": 2999,
            "payment_ids": ["py_1"],
            "reconciled_at": NOW.isoformat(),
        }
    )
    assert d.changes["receipt_hash"] == expected
    assert d.effects[0].args == {"receipt_hash": expected}


def test_chargeback_case_for_an_archived_invoice() -> None:
    payload = {"dispute_id": "cb-2", "amount_cents": 2999, "currency": "USD", "linked_invoice_id": "inv-1"}
    d = decided(decide(GOVERNOR, make(None), "chargeback_received", facts("cascade", payload)))
    assert d.changes["kind"] == "chargeback_case"
    assert d.changes["linked_invoice_id"] == "inv-1"
    assert d.changes["paid_cents"] == 2999
    assert d.changes["dispute_kind"] == "chargeback"


def test_settlement_writes_off_the_remainder() -> None:
    d = decided(
        decide(
            GOVERNOR,
            make("collection_agency", COLLECTIONS),
            "settlement_agreed",
            facts("finance", {"settlement_cents": 1999, "agreement_ref": "agr-1"}, approved_by="m1"),
        )
    )
    assert d.changes["settled_cents"] == 1999
    assert d.changes["written_off_cents"] == 1000
    assert d.changes["written_off"] is True
    assert [e.args["amount_cents"] for e in d.effects] == [1999, 1000]


def test_write_off_marks_the_invoice() -> None:
    d = decided(
        decide(
            GOVERNOR,
            make("collection_agency", COLLECTIONS),
            "account_written_off",
            facts("finance", {"amount_cents": 2999, "justification": "insolvent"}, approved_by="m1"),
        )
    )
    assert d.changes["written_off"] is True
    assert d.changes["written_off_cents"] == 2999


def test_dispute_refund_is_recorded_with_its_key() -> None:
    d = decided(
        decide(
            GOVERNOR,
            make("payment_disputed", DISPUTED),
            "dispute_resolved",
            facts(
                "finance",
                {"outcome": "refund", "refund_cents": 2999, "evidence_ref": "ev-1"},
                approved_by="m1",
            ),
        )
    )
    assert d.changes["refunded_cents"] == 2999
    assert d.changes["last_refund_id"] == "inv-1:dp-1"
    assert d.changes["resolution"]["outcome"] == "refund"
    assert d.effects[0].args == {"amount_cents": 2999, "key": "inv-1:dp-1"}


def test_refunds_accumulate_without_a_state_change() -> None:
    inst = make("payment_received", PAID)
    first = decided(
        decide(
            GOVERNOR,
            inst,
            "issue_refund",
            facts("finance", {"amount_cents": 1000, "reason_code": "duplicate_charge"}, approved_by="m1"),
        )
    )
    assert first.self_transition
    assert first.changes["last_refund_id"] == "inv-1:1"
    inst = apply(inst, first)
    second = decide(
        GOVERNOR,
        inst,
        "issue_refund",
        facts("finance", {"amount_cents": 2000, "reason_code": "goodwill"}, approved_by="m1"),
    )
    assert isinstance(second, Rejection)
    assert "1999" in second.message
    third = decided(
        decide(
            GOVERNOR,
            inst,
            "issue_refund",
            facts("finance", {"amount_cents": 1999, "reason_code": "goodwill"}, approved_by="m1"),
        )
    )
    assert third.changes["refunded_cents"] == 2999
    assert len(third.changes["refunds"]) == 2


def test_dunning_holds_form_a_set() -> None:
    inst = make("payment_failed", FAILED)
    for hold in ("account_locked", "compliance", "account_locked"):
        inst = apply(inst, decided(decide(GOVERNOR, inst, "dunning_hold", facts("cascade", {"hold": hold}))))
    assert inst.data["dunning_holds"] == ["account_locked", "compliance"]
    assert inst.data["dunning_hold"] is True
    inst = apply(
        inst, decided(decide(GOVERNOR, inst, "dunning_release", facts("cascade", {"hold": "account_locked"})))
    )
    assert inst.data["dunning_holds"] == ["compliance"]
    assert inst.data["dunning_hold"] is True
    inst = apply(
        inst, decided(decide(GOVERNOR, inst, "dunning_release", facts("cascade", {"hold": "compliance"})))
    )
    assert inst.data["dunning_holds"] == []
    assert inst.data["dunning_hold"] is False
    manual = decided(
        decide(
            GOVERNOR,
            make("retry_1", RETRY_1),
            "dunning_hold",
            facts("finance", {"expected_release_at": RELEASE_AT}),
        )
    )
    assert manual.changes["dunning_holds"] == ["manual"]
    assert manual.changes["expected_release_at"] == RELEASE_AT


def test_credit_reduces_an_issued_total_at_once_and_a_pending_one_at_issue() -> None:
    issued = decided(
        decide(
            GOVERNOR,
            make("payment_pending", ISSUED),
            "apply_credit",
            facts("cascade", {"period": "2026-01", "credit_pct": "12.5", "kind": "sla"}),
        )
    )
    assert issued.changes["total_cents"] == 2999 - 375  # 12.5 % of 2999 = 374.875 → 375
    assert issued.changes["credits"][0]["key"] == "c1:2026-01:sla"
    pending = decided(
        decide(
            GOVERNOR,
            make("awaiting_invoice", AWAITING),
            "apply_credit",
            facts("cascade", {"period": "2026-01", "credit_pct": "10", "kind": "sla"}),
        )
    )
    assert "total_cents" not in pending.changes
    assert pending.changes["credits"][0]["cents"] == 300
    same_key = decide(
        GOVERNOR,
        apply(make("awaiting_invoice", AWAITING), pending),
        "apply_credit",
        facts("cascade", {"period": "2026-01", "credit_pct": "10", "kind": "sla"}),
    )
    assert isinstance(same_key, Rejection)
    assert same_key.code == "guard_failed"


def test_overpayment_is_kept_for_a_refund() -> None:
    d = decided(decide(GOVERNOR, make("payment_received", PAID), "payment_received", facts("sys", PAY)))
    assert d.changes["extra_payments"][0]["amount_cents"] == 2999
    assert "paid_cents" not in d.changes
    assert d.effects[0].args["queue"] == "finance"


# --------------------------------------------------------------------------- timers


def _walk(inst: Instance, event: str, f: Facts) -> Instance:
    return apply(inst, decided(decide(GOVERNOR, inst, event, f)))


def _fire(inst: Instance, name: str) -> Instance:
    timer = inst.timers[name]
    assert timer.due_at is not None, f"{name} is paused"
    return _walk(inst, timer.event, timer_facts(inst, timer, timer.due_at, SETTINGS))


def test_creation_arms_generation_at_generate_at() -> None:
    d = decided(decide(GOVERNOR, make(None), "cycle_begin", facts("cascade", {**CYCLE, "kind": "overage"})))
    (op,) = d.timer_ops
    assert (op.op, op.timer.name, op.timer.due_at) == (
        "arm",
        "generate_invoice",
        datetime(2026, 2, 5, tzinfo=UTC),
    )


def test_ladder_timeline_delivery_to_collections_is_20_days() -> None:
    inst = _walk(make(None), "cycle_begin", facts("cascade", CYCLE))
    inst = _fire(inst, "generate_invoice")
    assert inst.state == "invoice_issued"
    assert inst.timers["delivery_fallback"].due_at == NOW + timedelta(hours=24)
    delivered = NOW + timedelta(hours=3)
    inst = _walk(inst, "invoice_delivered", facts("sys", {"confirmed": True}, now=delivered))
    assert inst.state == "payment_pending"
    assert inst.timers["payment_window"].due_at == delivered + timedelta(days=7)
    inst = _fire(inst, "payment_window")
    t0 = delivered + timedelta(days=7)
    assert inst.state == "payment_failed"
    assert inst.entered_at == t0
    assert inst.timers["retry_due"].due_at == t0 + timedelta(days=2)
    inst = _fire(inst, "retry_due")
    assert inst.state == "retry_1"
    assert inst.timers["retry_window"].due_at == t0 + timedelta(days=3)
    inst = _fire(inst, "retry_window")
    assert inst.state == "retry_2"
    assert inst.timers["retry_window"].due_at == t0 + timedelta(days=6)
    inst = _fire(inst, "retry_window")
    assert inst.state == "retry_3"
    assert inst.timers["retry_window"].due_at == t0 + timedelta(days=13)
    inst = _fire(inst, "retry_window")
    assert inst.state == "collection_agency"
    assert inst.timers == {}
    assert inst.entered_at == delivered + timedelta(days=20)
    assert inst.data["retry_number"] == 3
    assert inst.data["failed_attempts"] == 1


def test_a_decline_in_a_retry_window_waits_for_the_window_to_end() -> None:
    inst = _walk(make("payment_failed", FAILED), "retry_due", facts("timer"))
    window = inst.timers["retry_window"]
    inst = _walk(inst, "payment_declined", facts("sys", now=NOW + timedelta(minutes=5)))
    assert inst.state == "retry_1"
    assert inst.timers["retry_window"] == window


def test_dunning_hold_pauses_the_ladder_and_release_resumes_the_remainder() -> None:
    inst = _walk(make("payment_pending", ISSUED, seq=1), "payment_declined", facts("sys"))
    assert inst.timers["retry_due"].due_at == NOW + timedelta(days=2)
    later = NOW + timedelta(hours=30)
    d = decided(
        decide(GOVERNOR, inst, "dunning_hold", facts("cascade", {"hold": "account_locked"}, now=later))
    )
    assert [op.op for op in d.timer_ops] == ["pause"]
    inst = apply(inst, d)
    assert inst.timers["retry_due"].paused
    assert inst.timers["retry_due"].remaining == timedelta(hours=18)
    manual = decide(GOVERNOR, inst, "retry_now", facts("finance", now=later))
    assert isinstance(manual, Rejection)
    assert "account_locked" in manual.message
    release = NOW + timedelta(days=5)
    d2 = decided(
        decide(GOVERNOR, inst, "dunning_release", facts("cascade", {"hold": "account_locked"}, now=release))
    )
    assert [op.op for op in d2.timer_ops] == ["resume"]
    assert d2.timer_ops[0].timer.due_at == release + timedelta(hours=18)


def test_a_hold_taken_before_the_window_arms_its_timer_paused() -> None:
    inst = _walk(
        make("invoice_issued", {**ISSUED, **HELD}), "invoice_delivered", facts("sys", {"confirmed": True})
    )
    timer = inst.timers["payment_window"]
    assert timer.paused
    assert timer.remaining == timedelta(days=7)


def test_disputes_cancel_the_ladder_timers() -> None:
    inst = _walk(make("payment_pending", ISSUED, seq=1), "payment_declined", facts("sys"))
    d = decided(decide(GOVERNOR, inst, "dispute_opened", facts("sys", {"dispute_id": "dp-1"})))
    assert [(op.op, op.timer.name) for op in d.timer_ops] == [("cancel", "retry_due")]
    assert d.changes["dispute_id"] == "dp-1"


def test_stale_timer_is_ignored() -> None:
    inst = make("payment_failed", FAILED, seq=7)
    out = decide(GOVERNOR, inst, "retry_due", facts("timer", seq=6))
    assert isinstance(out, Rejection)
    assert out.code == "stale_timer"


def test_ladder_durations_are_settings() -> None:
    pat = SETTINGS.override(
        {
            "billing.retry_1_after": "1h",
            "billing.retry_2_after": "3h",
            "billing.retry_3_after": "1d",
            "billing.collections_after": "7d",
        }
    )
    f = Facts(now=NOW, role="sys", payload={}, settings=pat)
    inst = apply(
        make("payment_pending", ISSUED, seq=1),
        decided(decide(GOVERNOR, make("payment_pending", ISSUED, seq=1), "payment_declined", f)),
    )
    assert inst.timers["retry_due"].due_at == NOW + timedelta(hours=1)
    tf = Facts(now=NOW, role="timer", payload={}, settings=pat, timer="retry_due", timer_seq=inst.state_seq)
    inst = apply(inst, decided(decide(GOVERNOR, inst, "retry_due", tf)))
    assert inst.timers["retry_window"].due_at == NOW + timedelta(hours=3)
    tolerant = SETTINGS.override({"billing.amount_tolerance_cents": 0})
    strict = decide(
        GOVERNOR,
        make("payment_pending", ISSUED),
        "payment_received",
        Facts(now=NOW, role="sys", payload={**PAY, "amount_cents": 3000}, settings=tolerant),
    )
    assert isinstance(strict, Rejection)
    assert strict.code == "amount_mismatch"


# --------------------------------------------------------------------------- attention


def test_unreconciled_attention_after_a_day() -> None:
    d = decided(decide(GOVERNOR, make("payment_pending", ISSUED), "payment_received", facts("sys", PAY)))
    assert d.attention is False
    attention = GUARDS["billing_unreconciled_overdue"].fn
    for age, expected in ((timedelta(hours=23), False), (timedelta(hours=25), True)):
        inst = make("payment_received", {**PAID, "paid_at": NOW - age})
        assert attention(Context(GOVERNOR, inst, "-", facts("sys"), SETTINGS, inst.data)) is expected
    failed = decided(decide(GOVERNOR, make("payment_pending", ISSUED), "payment_declined", facts("sys")))
    assert failed.attention is True
    assert failed.attention_reason


# --------------------------------------------------------------------------- four-eyes


@pytest.mark.parametrize(
    ("state", "data", "event", "role", "payload", "extra", "expected"),
    [
        (
            "payment_received",
            PAID,
            "accounting_reconciled",
            "finance",
            {"processor_proof_ref": "p"},
            {"processor_confirms_payment": True},
            FourEyes(("finance", "manager")),
        ),
        ("payment_received", PAID, "accounting_reconciled", "sys", {}, OK_RECON, None),
        (
            "collection_agency",
            COLLECTIONS,
            "settlement_agreed",
            "finance",
            {"settlement_cents": 100, "agreement_ref": "a"},
            {},
            FourEyes(("manager",)),
        ),
        (
            "collection_agency",
            COLLECTIONS,
            "account_written_off",
            "finance",
            {"amount_cents": 100, "justification": "gone"},
            {},
            FourEyes(("manager",)),
        ),
        (
            "payment_disputed",
            DISPUTED,
            "dispute_resolved",
            "finance",
            {"outcome": "refund", "refund_cents": 10, "evidence_ref": "e"},
            {},
            FourEyes(("finance", "manager"), when="billing_refund_requested"),
        ),
        (
            "payment_disputed",
            DISPUTED,
            "dispute_resolved",
            "finance",
            {"outcome": "payment_valid", "evidence_ref": "e"},
            {},
            None,
        ),
        (
            "payment_received",
            PAID,
            "issue_refund",
            "finance",
            {"amount_cents": 10, "reason_code": "x"},
            {},
            FourEyes(("finance", "manager")),
        ),
        (
            "archived",
            ARCHIVED_PAID,
            "issue_refund",
            "support",
            {"amount_cents": 10, "reason_code": "x"},
            {},
            FourEyes(("finance",)),
        ),
        (
            "archived",
            ARCHIVED_PAID,
            "issue_refund",
            "cascade",
            {"amount_cents": 10, "reason_code": "x"},
            {},
            None,
        ),
        ("payment_failed", FAILED, "retry_now", "support", {}, {}, FourEyes(("finance",))),
        ("payment_failed", FAILED, "retry_now", "finance", {}, {}, None),
        (
            "invoice_issued",
            ISSUED,
            "apply_credit",
            "finance",
            {"period": "p", "amount_cents": 5},
            {},
            FourEyes(("manager",)),
        ),
        ("invoice_issued", ISSUED, "apply_credit", "cascade", {"period": "p", "amount_cents": 5}, {}, None),
    ],
)
def test_four_eyes(
    state: str,
    data: dict[str, Any],
    event: str,
    role: str,
    payload: dict[str, Any],
    extra: dict[str, Any],
    expected: FourEyes | None,
) -> None:
    d = decided(decide(GOVERNOR, make(state, data), event, facts(role, payload, extra=extra)))
    assert d.needs_approval == expected
    if expected is not None:
        approved = decided(
            decide(GOVERNOR, make(state, data), event, facts(role, payload, extra=extra, approved_by="u2"))
        )
        assert approved.needs_approval is None


# --------------------------------------------------------------------------- cascades


def _cascades(d: Decision) -> list[tuple[str, str, str, str | None]]:
    return [(c.id, c.target, c.event, c.where) for c in d.cascades]


def test_x05_on_failure() -> None:
    for event, role in (("payment_declined", "sys"), ("payment_window_timeout", "timer")):
        d = decided(decide(GOVERNOR, make("payment_pending", ISSUED), event, facts(role)))
        assert _cascades(d) == [
            ("X05", "subscription", "renewal_payment_failed", "billing_x05_subscription_awaiting_renewal")
        ]
        assert d.cascades[0].payload == {"invoice_id": "inv-1", "kind": "renewal", "failed_attempts": 1}
        assert d.cascades[0].must is False


X06_EXPECTED = [
    ("X06", "subscription", "renewal_paid", "billing_x06_subscription_awaiting_renewal"),
    ("X06", "subscription", "payment_recovered", "billing_x06_subscription_in_grace"),
    ("X06", "subscription", "reactivate", "billing_x06_subscription_cancelled_nonpayment"),
    ("X06", "entitlement", "lift_hold", "billing_x06_entitlement_payment_hold"),
    ("X06", "entitlement", "request_reinstatement", "billing_x06_entitlement_cancelled_nonpayment"),
    ("X06", "entitlement", "approve_reinstatement", "billing_x06_entitlement_reinstate_pending"),
    ("X06", "quota_sla", "overage_paid", "billing_x06_quota_throttled"),
    ("X06", "quota_sla", "recovery_payment_received", "billing_x06_quota_circuit_breaker"),
]


@pytest.mark.parametrize(
    ("state", "data", "event", "role", "payload"),
    [
        ("payment_pending", ISSUED, "payment_received", "sys", PAY),
        ("retry_2", RETRY_2, "payment_received", "sys", PAY),
        ("payment_failed", FAILED, "payment_received", "sys", PAY),
        (
            "collection_agency",
            COLLECTIONS,
            "payment_recovered",
            "finance",
            {"amount_cents": 2999, "payment_ref": "r"},
        ),
    ],
)
def test_x06_on_payment(
    state: str, data: dict[str, Any], event: str, role: str, payload: dict[str, Any]
) -> None:
    d = decided(decide(GOVERNOR, make(state, data), event, facts(role, payload)))
    assert _cascades(d) == X06_EXPECTED
    body = dict(d.cascades[0].payload)
    assert body["invoice_id"] == "inv-1"
    assert body["kind"] == "renewal"
    assert body["amount_cents"] == 2999
    lift = d.cascades[3].payload
    assert lift["hold"] == "payment_failed"
    assert d.cascades[4].payload["auto_approve"] is True


def test_x10_on_collections() -> None:
    d = decided(decide(GOVERNOR, make("retry_3", RETRY_3), "retry_window_elapsed", facts("timer")))
    assert _cascades(d) == [("X10", "customer_account", "flag_delinquent", "billing_x10_account_open")]
    assert d.cascades[0].payload == {"invoice_id": "inv-1"}


def test_x11_on_chargeback() -> None:
    d = decided(
        decide(
            GOVERNOR,
            make("payment_received", PAID),
            "chargeback_received",
            facts("sys", {"dispute_id": "cb-1"}),
        )
    )
    assert _cascades(d) == [
        ("X11", "customer_account", "lock", "billing_x11_account_lockable"),
        ("X11", "compliance_audit", "anomaly_detected", "billing_x11_compliance_compliant"),
    ]
    assert d.cascades[0].payload == {"reason": "chargeback", "invoice_id": "inv-1"}
    assert d.cascades[1].payload == {
        "indicators": ["chargeback"],
        "invoice_id": "inv-1",
        "dispute_id": "cb-1",
    }


def test_archived_chargeback_opens_a_linked_case() -> None:
    d = decided(
        decide(
            GOVERNOR,
            make("archived", ARCHIVED_PAID),
            "chargeback_received",
            facts("sys", {"dispute_id": "cb-2", "amount_cents": 2000}),
        )
    )
    (emit,) = d.cascades
    assert (emit.id, emit.target, emit.event, emit.select) == ("Xi1", "billing", "chargeback_received", "new")
    assert emit.payload == {
        "dispute_id": "cb-2",
        "amount_cents": 2000,
        "currency": "USD",
        "linked_invoice_id": "inv-1",
    }


def test_no_cascade_from_other_rows() -> None:
    d = decided(decide(GOVERNOR, make("retry_1", RETRY_1), "payment_declined", facts("sys")))
    assert d.cascades == ()


def _peer(governor: str, state: str, data: Mapping[str, Any] | None = None, inst_id: str = "p") -> Instance:
    return Instance(
        governor=governor,
        id=inst_id,
        state=state,
        state_seq=1,
        customer_id="c1",
        subject_id=inst_id,
        data=dict(data or {}),
    )


RENEWAL = {"kind": "renewal", "subscription_id": "sub-1"}
OVERAGE = {"kind": "overage"}
RECOVERY = {"kind": "recovery"}


@pytest.mark.parametrize(
    ("guard_name", "target", "source", "expected"),
    [
        (
            "billing_x05_subscription_awaiting_renewal",
            _peer("subscription", "awaiting_renewal", inst_id="sub-1"),
            RENEWAL,
            True,
        ),
        (
            "billing_x05_subscription_awaiting_renewal",
            _peer("subscription", "awaiting_renewal", inst_id="sub-2"),
            RENEWAL,
            False,
        ),
        (
            "billing_x05_subscription_awaiting_renewal",
            _peer("subscription", "awaiting_renewal"),
            OVERAGE,
            False,
        ),
        ("billing_x05_subscription_awaiting_renewal", _peer("subscription", "active"), RENEWAL, False),
        (
            "billing_x06_subscription_awaiting_renewal",
            _peer("subscription", "awaiting_renewal"),
            {"kind": "renewal"},
            True,
        ),
        (
            "billing_x06_subscription_in_grace",
            _peer("subscription", "renewal_grace"),
            {"kind": "renewal"},
            True,
        ),
        (
            "billing_x06_subscription_in_grace",
            _peer("subscription", "renewal_grace"),
            {"kind": "initial"},
            False,
        ),
        (
            "billing_x06_subscription_cancelled_nonpayment",
            _peer("subscription", "cancelled", {"cancellation_reason": "nonpayment"}),
            {"kind": "renewal"},
            True,
        ),
        (
            "billing_x06_subscription_cancelled_nonpayment",
            _peer("subscription", "cancelled", {"cancellation_reason": "customer_request"}),
            {"kind": "renewal"},
            False,
        ),
        (
            "billing_x06_entitlement_payment_hold",
            _peer("entitlement", "suspended", {"holds": ["payment_failed", "tos_violation"]}),
            RENEWAL,
            True,
        ),
        (
            "billing_x06_entitlement_payment_hold",
            _peer("entitlement", "suspended", {"holds": ["fraud"]}),
            RENEWAL,
            False,
        ),
        (
            "billing_x06_entitlement_payment_hold",
            _peer("entitlement", "suspended", {"holds": ["payment_failed"]}),
            OVERAGE,
            False,
        ),
        (
            "billing_x06_entitlement_cancelled_nonpayment",
            _peer("entitlement", "cancelled", {"cancellation_reason": "payment_failed"}),
            RENEWAL,
            True,
        ),
        (
            "billing_x06_entitlement_cancelled_nonpayment",
            _peer("entitlement", "cancelled", {"cancellation_reason": "fraud"}),
            RENEWAL,
            False,
        ),
        (
            "billing_x06_entitlement_reinstate_pending",
            _peer("entitlement", "reinstate_pending", {"cancellation_reason": "payment_failed"}),
            RENEWAL,
            True,
        ),
        ("billing_x06_quota_throttled", _peer("quota_sla", "throttled"), OVERAGE, True),
        ("billing_x06_quota_throttled", _peer("quota_sla", "throttled"), RENEWAL, False),
        ("billing_x06_quota_throttled", _peer("quota_sla", "exceeded"), OVERAGE, False),
        ("billing_x06_quota_circuit_breaker", _peer("quota_sla", "circuit_breaker"), RECOVERY, True),
        ("billing_x06_quota_circuit_breaker", _peer("quota_sla", "circuit_breaker"), OVERAGE, False),
        ("billing_x10_account_open", _peer("customer_account", "active"), {}, True),
        ("billing_x10_account_open", _peer("customer_account", "archived"), {}, False),
        ("billing_x11_account_lockable", _peer("customer_account", "locked"), {}, True),
        ("billing_x11_account_lockable", _peer("customer_account", "deactivated"), {}, False),
        ("billing_x11_compliance_compliant", _peer("compliance_audit", "compliant"), {}, True),
        ("billing_x11_compliance_compliant", _peer("compliance_audit", "investigation"), {}, False),
    ],
)
def test_cascade_targets(
    guard_name: str, target: Instance, source: Mapping[str, Any], expected: bool
) -> None:
    assert where(guard_name, target, governor=GOVERNOR, event="-", source=source) is expected


def test_plan_routes_x06_by_kind_and_target_state() -> None:
    invoice = make("payment_pending", ISSUED)
    world = {
        invoice.id: invoice,
        "sub-1": _peer("subscription", "active", {"tier": "starter"}, inst_id="sub-1"),
        "quota-1": _peer("quota_sla", "throttled", inst_id="quota-1"),
        "ent-1": _peer("entitlement", "active", {"holds": []}, inst_id="ent-1"),
    }
    result = plan(world, invoice.id, "payment_received", facts("sys", PAY))
    assert result.steps[0].status == "applied"
    assert [s.instance_id for s in result.steps[1:]] == [], "no target is in a state where X06 applies"
    overage = make("payment_pending", {**ISSUED, "kind": "overage"})
    result = plan({**world, overage.id: overage}, overage.id, "payment_received", facts("sys", PAY))
    assert [(s.instance_id, s.event) for s in result.steps[1:]] == [("quota-1", "overage_paid")]


def test_x29_credit_goes_to_one_invoice_only() -> None:
    a = Instance(
        "billing",
        "inv-a",
        "awaiting_invoice",
        1,
        customer_id="c1",
        subject_id="inv-a",
        data={**AWAITING, "amount_cents": 1000},
    )
    b = Instance("billing", "inv-b", "payment_pending", 1, customer_id="c1", subject_id="inv-b", data=ISSUED)
    world = {a.id: a, b.id: b}
    credit = {"period": "2026-01", "credit_pct": "10", "kind": "sla"}
    result = plan(world, a.id, "apply_credit", facts("cascade", credit))
    assert result.ok
    second = plan(dict(result.instances), b.id, "apply_credit", facts("cascade", credit))
    assert isinstance(second.root, Rejection)
    assert second.root.code == "guard_failed"
