"""Billing governor (GOVERNORS.md §2): one instance per invoice, from generation to an archived record.

An invoice is generated, delivered and paid inside a 7-day window; a failed payment walks the retry
ladder (2 d wait, then 1 d / 3 d / 7 d windows, D-10) to collections, or goes to dispute. Refunds,
credits and dunning holds are self-transitions. Every duration and tolerance is a setting.

Data kept by the rows: kind, amount_cents, tax_rate, tax_cents, total_cents, currency, generate_at,
issued_at, due_date, payment_method, backup_methods, charge_method, failed_attempts, retry_number,
extra_attempts, last_decline, payment_in_flight + in_flight_key, idempotency_keys, payment_ids,
paid_cents, paid_at, dispute_id, chargeback_cents, linked_invoice_id, refunds, refunded_cents, credits,
dunning_holds (a set of hold codes) + dunning_hold (bool), fraud_checks, settled_cents,
written_off_cents + written_off, resolution, receipt_hash.
"""

from __future__ import annotations

from typing import Final

from governors.spec import ANY, SAME, Cascade, Effect, FourEyes, Governor, Input, State, Timer, Transition, fx

INVOICE_KINDS: Final = ("initial", "renewal", "proration", "overage", "recovery", "chargeback_case")
"""§2 Data: what an invoice is for. ``chargeback_case`` instances only come from B09c."""

CYCLE_KINDS: Final = INVOICE_KINDS[:-1]
"""Kinds a cycle_begin (B01) may open."""

RETRY_STATES: Final = ("retry_1", "retry_2", "retry_3")
DUNNING_STATES: Final = ("payment_failed", *RETRY_STATES)
OPEN_FOR_CREDIT: Final = ("awaiting_invoice", "invoice_issued", "payment_pending")
"""Unpaid invoices outside the dunning ladder: where a credit line may still be applied (§11 #20)."""

DISPUTE_OUTCOMES: Final = ("payment_valid", "refund", "partial_refund")

SETTINGS: dict[str, object] = {
    # B01: usage/overage invoices are generated in a monthly batch on this day (other kinds at once).
    "billing.batch_kinds": ["overage"],
    "billing.batch_day_of_month": 5,
    "billing.default_tax_rate": 0.0,
    # B02: due_date = issue + 30 d [C].
    "billing.due_after": "30d",
    # B03: delivery counts as done this long after issue when no confirmation arrives [I].
    "billing.delivery_fallback_after": "24h",
    # Payment window and retry ladder (§2.3, D-10: C/G defaults; PAT would be 1h/3h/1d/7d).
    "billing.payment_window": "7d",
    "billing.retry_1_after": "2d",
    "billing.retry_2_after": "1d",
    "billing.retry_3_after": "3d",
    "billing.collections_after": "7d",
    "billing.max_retries": 3,
    # §2.4, D-09: ±1 cent.
    "billing.amount_tolerance_cents": 1,
    # B08: at least 1 d in payment_received [G]; attention when unreconciled longer [R].
    "billing.reconcile_min_age": "1d",
    "billing.unreconciled_attention_after": "1d",
    # §11 #20: a manual or SLA credit is at most 25 % of the invoice.
    "billing.max_credit_pct": 25,
}

_LADDER = "billing_ladder_runs"

STATES: Final = (
    State(
        "awaiting_invoice",
        "Cycle opened. Invoice not generated yet",
        timers=(Timer("generate_invoice", "invoice_generation_time_reached", at="generate_at"),),
    ),
    State(
        "invoice_issued",
        "Invoice generated and sent (PDF + email)",
        timers=(Timer("delivery_fallback", "invoice_delivered", after="billing.delivery_fallback_after"),),
    ),
    State(
        "payment_pending",
        "7-day payment window open",
        timers=(
            Timer("payment_window", "payment_window_timeout", after="billing.payment_window", when=_LADDER),
        ),
    ),
    State(
        "payment_received",
        "Paid. Revenue can be recognised. Waiting for reconciliation",
        attention="billing_unreconciled_overdue",
        attention_reason="paid more than a day ago and still unreconciled",
    ),
    State(
        "payment_failed",
        "First attempt failed or the window expired. 2-day wait before retry 1",
        attention=True,
        attention_reason="payment failed; retry ladder running",
        timers=(Timer("retry_due", "retry_due", after="billing.retry_1_after", when=_LADDER),),
    ),
    State(
        "retry_1",
        "Attempt 1 on the backup method. 1-day window",
        timers=(Timer("retry_window", "retry_window_elapsed", after="billing.retry_2_after", when=_LADDER),),
    ),
    State(
        "retry_2",
        "Attempt 2 on the secondary backup. 3-day window",
        timers=(Timer("retry_window", "retry_window_elapsed", after="billing.retry_3_after", when=_LADDER),),
    ),
    State(
        "retry_3",
        "Attempt 3, the last one. 7-day window",
        attention=True,
        attention_reason="final payment attempt; collections next",
        timers=(
            Timer("retry_window", "retry_window_elapsed", after="billing.collections_after", when=_LADDER),
        ),
    ),
    State(
        "collection_agency",
        "Retries exhausted. Sent to collections",
        attention=True,
        attention_reason="invoice in collections",
    ),
    State(
        "payment_disputed",
        "Customer dispute, admin escalation or chargeback under review",
        attention=True,
        attention_reason="dispute or chargeback under review",
    ),
    # §2.1 marks archived terminal ("immutable"), yet B22 and §11 #16/#19 refund archived invoices. The
    # engine refuses every event on a terminal state, so archived is terminal=False here; its only rows
    # are the self-transitions B22 (refund), B09b (chargeback → linked case) and Bx2 (fraud checks).
    State("archived", "Settled, resolved or written off. Immutable apart from refunds", terminal=False),
)


def _charge(attempt: int | str) -> Effect:
    return fx("billing_charge", attempt=attempt, method="$data.charge_method", key="$data.in_flight_key")


_PAYMENT_GUARDS: Final = (
    "billing_payment_unseen",
    "billing_no_other_payment_in_flight",
    "billing_amount_matches",
)
_PAYMENT_INPUTS: Final = (
    Input("amount_cents", "cents"),
    Input("payment_id", "text", required=False),
    Input("paid_at", "datetime", required=False),
    Input("attempt_key", "text", required=False),
)
_PAID_EFFECTS: Final = (
    fx("billing_recognise_revenue", amount_cents="$data.paid_cents"),
    fx("notify_customer", template="payment_receipt"),
)
_DECLINE_INPUTS: Final = (
    Input("decline_code", "code", required=False),
    Input("decline_message", "text", required=False),
)

TRANSITIONS: Final = (
    Transition(
        "B01",
        ("cycle_begin",),
        (),
        "awaiting_invoice",
        ("cascade", "sys"),
        guards=("billing_amount_positive", "billing_currency_valid", "billing_tax_rate_valid"),
        inputs=(
            Input("kind", "code", choices=CYCLE_KINDS),
            Input("amount_cents", "cents"),
            Input("currency", "code"),
            Input("generate_at", "datetime", required=False),
            Input("backup_methods", "list", required=False),
        ),
        updates=("billing_open_cycle",),
        doc="X03, X26, X27, X30: a new invoice; generate_at = now, or the monthly batch day for overage.",
    ),
    Transition(
        "B02",
        ("invoice_generation_time_reached",),
        ("awaiting_invoice",),
        "invoice_issued",
        ("timer",),
        guards=("billing_generation_due", "billing_template_valid"),
        updates=("billing_issue_invoice",),
        effects=(
            fx("billing_render_invoice"),
            fx("notify_customer", template="invoice_issued"),
            fx("billing_ledger_entry", entry="invoice_issued", amount_cents="$data.total_cents"),
        ),
    ),
    Transition(
        "B03",
        ("invoice_delivered",),
        ("invoice_issued",),
        "payment_pending",
        ("sys", "timer"),
        guards=("billing_delivery_confirmed",),
        inputs=(Input("confirmed", "bool", required=False),),
        updates=("billing_open_payment_window",),
        effects=(_charge(0),),
        doc="The delivery_fallback timer sends it 24 h after issue [I]; auto-charge a method on file.",
    ),
    Transition(
        "B04",
        ("payment_received",),
        ("payment_pending",),
        "payment_received",
        ("sys",),
        guards=_PAYMENT_GUARDS,
        inputs=_PAYMENT_INPUTS,
        updates=("billing_record_payment",),
        effects=_PAID_EFFECTS,
    ),
    Transition(
        "B05",
        ("payment_declined",),
        ("payment_pending",),
        "payment_failed",
        ("sys",),
        inputs=_DECLINE_INPUTS,
        updates=("billing_record_decline",),
        effects=(fx("notify_customer", template="payment_failed"),),
    ),
    Transition(
        "B06",
        ("payment_window_timeout",),
        ("payment_pending",),
        "payment_failed",
        ("timer",),
        updates=("billing_record_window_expiry",),
        effects=(fx("notify_customer", template="payment_failed"),),
    ),
    Transition(
        "B07",
        ("dispute_opened",),
        ("payment_pending", "payment_failed"),
        "payment_disputed",
        ("sys", "support"),
        inputs=(Input("dispute_id", "text", required=False),),
        updates=("billing_open_dispute",),
        effects=(fx("notify_staff", queue="finance", template="dispute_opened"),),
        title="Open a dispute",
        doc="Entering payment_disputed cancels the ladder timers (C: 'pause timers').",
    ),
    Transition(
        "B08",
        ("accounting_reconciled",),
        ("payment_received",),
        "archived",
        ("sys", "finance"),
        guards=("billing_reconcile_age", "billing_processor_confirms"),
        four_eyes=FourEyes(("finance", "manager")),
        inputs=(Input("processor_proof_ref", "text", required=False),),
        updates=("billing_reconcile",),
        effects=(
            fx("billing_final_receipt", receipt_hash="$data.receipt_hash"),
            fx("billing_ledger_entry", entry="reconciled", amount_cents="$data.paid_cents"),
        ),
        title="Force reconcile",
        doc="sys: the daily reconciliation job; finance: force-reconcile (4E, needs a processor proof ref).",
    ),
    Transition(
        "B09",
        ("chargeback_received",),
        ("payment_received",),
        "payment_disputed",
        ("sys",),
        guards=("billing_chargeback_within_paid",),
        inputs=(Input("dispute_id", "text"), Input("amount_cents", "cents", required=False, min=1)),
        updates=("billing_open_chargeback",),
        effects=(fx("notify_staff", queue="finance", template="chargeback_received"),),
    ),
    # B09 on an archived invoice (D-11): the invoice stays archived and opens a linked chargeback_case
    # instance (Xi1 → B09c), which is the one that starts in payment_disputed and emits X11.
    Transition(
        "B09b",
        ("chargeback_received",),
        ("archived",),
        SAME,
        ("sys",),
        guards=("billing_chargeback_within_paid",),
        inputs=(Input("dispute_id", "text"), Input("amount_cents", "cents", min=1)),
        set={"chargeback_case_opened_at": "$now", "chargeback_dispute_id": "$payload.dispute_id"},
        effects=(fx("audit_note", note="chargeback on an archived invoice: linked case opened"),),
    ),
    Transition(
        "B09c",
        ("chargeback_received",),
        (),
        "payment_disputed",
        ("cascade", "sys"),
        guards=("billing_amount_positive", "billing_currency_valid"),
        inputs=(
            Input("dispute_id", "text"),
            Input("amount_cents", "cents"),
            Input("currency", "code"),
            Input("linked_invoice_id", "text"),
        ),
        updates=("billing_open_chargeback_case",),
        effects=(fx("notify_staff", queue="finance", template="chargeback_received"),),
        doc="The linked chargeback_case instance of B09 for an archived invoice.",
    ),
    Transition(
        "B10",
        ("retry_due", "retry_now"),
        ("payment_failed",),
        "retry_1",
        ("timer", "finance"),
        requesters=("support",),
        guards=("billing_retries_left", _LADDER, "billing_no_payment_in_flight"),
        inputs=(Input("payment_method_id", "text", required=False),),
        updates=("billing_attempt_1",),
        effects=(_charge(1),),
        title="Manual payment retry",
        doc="The invoice is the instance itself (§11 #10 'invoice_id' is its subject_id, not a payload).",
    ),
    Transition(
        "B11",
        ("escalate_to_admin",),
        ("payment_failed",),
        "payment_disputed",
        ("finance",),
        set={"escalated_at": "$now", "payment_in_flight": None, "in_flight_key": None},
        effects=(fx("billing_open_ticket", queue="support", template="payment_escalated"),),
        title="Escalate failed payment to dispute",
    ),
    Transition(
        "B12",
        ("payment_received",),
        RETRY_STATES,
        "payment_received",
        ("sys",),
        guards=_PAYMENT_GUARDS,
        inputs=_PAYMENT_INPUTS,
        updates=("billing_record_payment",),
        effects=_PAID_EFFECTS,
    ),
    # D-07: a decline inside a retry window is recorded; the ladder advances only when the window ends.
    Transition(
        "B13",
        ("payment_declined",),
        RETRY_STATES,
        SAME,
        ("sys",),
        inputs=_DECLINE_INPUTS,
        updates=("billing_record_decline",),
        effects=(fx("notify_customer", template="payment_failed"),),
    ),
    Transition(
        "B14",
        ("retry_window_elapsed",),
        ("retry_1",),
        "retry_2",
        ("timer",),
        guards=(_LADDER,),
        updates=("billing_attempt_2",),
        effects=(_charge(2),),
    ),
    Transition(
        "B15",
        ("retry_window_elapsed",),
        ("retry_2",),
        "retry_3",
        ("timer",),
        guards=(_LADDER,),
        updates=("billing_attempt_3",),
        effects=(_charge(3), fx("notify_customer", template="final_payment_attempt")),
    ),
    # "No manual override" of B16 is the finance dunning hold (B23, code "manual"): any hold stops it.
    Transition(
        "B16",
        ("retry_window_elapsed",),
        ("retry_3",),
        "collection_agency",
        ("timer",),
        guards=(_LADDER,),
        set={"collections_at": "$now", "payment_in_flight": None, "in_flight_key": None},
        effects=(
            fx("billing_open_ticket", queue="collections", template="invoice_to_collections"),
            fx("notify_customer", template="delinquency_notice"),
        ),
    ),
    Transition(
        "B17",
        ("payment_method_updated",),
        DUNNING_STATES,
        SAME,
        ("cascade", "sys"),
        guards=("billing_method_validated", "billing_fraud_review_clear", "billing_no_payment_in_flight"),
        inputs=(Input("method_token", "text", required=False),),
        updates=("billing_extra_attempt",),
        effects=(_charge("extra"),),
        doc="X19: one extra attempt on the new method; it does not count toward the ladder [I].",
    ),
    Transition(
        "B18",
        ("payment_recovered",),
        ("collection_agency",),
        "archived",
        ("finance", "sys"),
        guards=("billing_amount_positive",),
        inputs=(Input("amount_cents", "cents"), Input("payment_ref", "text")),
        updates=("billing_record_recovery",),
        effects=(
            fx("billing_ledger_entry", entry="recovery", amount_cents="$payload.amount_cents"),
            fx("notify_staff", queue="collections", template="collections_recovered"),
        ),
        title="Record payment recovered (collections)",
    ),
    Transition(
        "B19",
        ("settlement_agreed",),
        ("collection_agency",),
        "archived",
        ("finance",),
        guards=("billing_settlement_within_outstanding",),
        four_eyes=FourEyes(("manager",)),
        inputs=(Input("settlement_cents", "cents"), Input("agreement_ref", "text")),
        updates=("billing_record_settlement",),
        effects=(
            fx("billing_ledger_entry", entry="settlement", amount_cents="$data.settled_cents"),
            fx("billing_ledger_entry", entry="write_off", amount_cents="$data.written_off_cents"),
        ),
        title="Record settlement",
    ),
    Transition(
        "B20",
        ("account_written_off",),
        ("collection_agency",),
        "archived",
        ("finance",),
        four_eyes=FourEyes(("manager",)),
        inputs=(Input("amount_cents", "cents", min=0), Input("justification", "text")),
        updates=("billing_record_write_off",),
        effects=(fx("billing_ledger_entry", entry="bad_debt", amount_cents="$payload.amount_cents"),),
        title="Write off invoice",
    ),
    Transition(
        "B21",
        ("dispute_resolved",),
        ("payment_disputed",),
        "archived",
        ("finance",),
        guards=("billing_dispute_outcome_consistent", "billing_refund_within_paid"),
        four_eyes=FourEyes(("finance", "manager"), when="billing_refund_requested"),
        inputs=(
            Input("outcome", "code", choices=DISPUTE_OUTCOMES),
            Input("refund_cents", "cents", required=False, min=0),
            Input("retained_cents", "cents", required=False, min=0),
            Input("evidence_ref", "text"),
        ),
        updates=("billing_resolve_dispute",),
        effects=(
            fx("billing_process_refund", amount_cents="$payload.refund_cents", key="$data.last_refund_id"),
            fx("audit_note", note="dispute resolution", outcome="$payload.outcome"),
        ),
        title="Resolve dispute",
    ),
    # B22: finance refunds (support may request), 4E[finance, manager] (D-41). X23 sends it as a cascade
    # (the compliance fraud reversal); the engine asks approval only of staff roles.
    Transition(
        "B22",
        ("issue_refund",),
        ("payment_received", "archived"),
        SAME,
        ("finance", "cascade"),
        requesters=("support",),
        guards=("billing_refund_amount_ok", "billing_refund_id_unseen", "billing_fraud_review_clear"),
        four_eyes=FourEyes(("finance", "manager")),
        inputs=(
            Input("amount_cents", "cents", min=1),
            Input("reason_code", "code"),
            Input("refund_id", "text", required=False),
        ),
        updates=("billing_record_refund",),
        effects=(
            fx("billing_process_refund", amount_cents="$payload.amount_cents", key="$data.last_refund_id"),
        ),
        title="Refund a paid invoice",
    ),
    # B23: holds form a set (account_locked, compliance, kyc_fraud, manual, ...); the ladder timers carry a
    # `when` guard, so the engine pauses them with their remaining time and resumes them on release.
    Transition(
        "B23",
        ("dunning_hold", "dunning_release"),
        (
            "awaiting_invoice",
            "invoice_issued",
            "payment_pending",
            "payment_received",
            *DUNNING_STATES,
            "collection_agency",
            "payment_disputed",
        ),
        SAME,
        ("cascade", "finance"),
        guards=("billing_staff_hold_allowed",),
        inputs=(
            Input("hold", "code", required=False),
            Input("expected_release_at", "datetime", required=False),
        ),
        updates=("billing_update_dunning_holds",),
        effects=(fx("audit_note", note="dunning hold changed", event="$event"),),
        title="Hold / release dunning",
        event_titles={"dunning_hold": "Hold dunning", "dunning_release": "Release dunning"},
    ),
    # ---- Rows the spec implies but does not number.
    Transition(
        "Bx1",
        ("void_invoice",),
        ("awaiting_invoice",),
        "archived",
        ("cascade",),
        set={"voided_at": "$now"},
        effects=(fx("audit_note", note="unissued invoice voided"),),
        doc="X08: the subscription ended with access_until = now; unissued invoices are voided.",
    ),
    Transition(
        "Bx2",
        ("fraud_checks_on", "fraud_checks_off"),
        (ANY,),
        SAME,
        ("cascade",),
        updates=("billing_set_fraud_checks",),
        doc="X22: while on, refunds (B22) and method changes (B17) need a compliance review.",
    ),
    Transition(
        "Bx3",
        ("apply_credit",),
        OPEN_FOR_CREDIT,
        SAME,
        ("cascade", "finance"),
        guards=("billing_credit_valid", "billing_credit_key_unseen"),
        four_eyes=FourEyes(("manager",)),
        inputs=(
            Input("period", "text"),
            Input("credit_pct", "text", required=False, label="credit percent (at most 25)"),
            Input("amount_cents", "cents", required=False, min=1),
            Input("kind", "code", required=False, choices=("sla", "goodwill")),
        ),
        updates=("billing_apply_credit",),
        effects=(fx("notify_customer", template="credit_applied"),),
        title="Apply manual SLA or goodwill credit",
        doc="X29 (SLA credit) and §11 #20; one credit per (customer, period, kind) across the invoices.",
    ),
    Transition(
        "Bx4",
        ("payment_received",),
        ("payment_received",),
        SAME,
        ("sys",),
        guards=("billing_payment_unseen",),
        inputs=_PAYMENT_INPUTS,
        updates=("billing_record_overpayment",),
        effects=(fx("notify_staff", queue="finance", template="duplicate_charge_refund_needed"),),
        doc="§2.4: a redelivered payment is rejected as duplicate_payment; a second, distinct charge on a "
        "paid invoice is recorded and sent to finance for a B22 refund (reason duplicate_charge).",
    ),
    Transition(
        "Bx5",
        ("payment_received",),
        ("payment_failed",),
        "payment_received",
        ("sys",),
        guards=_PAYMENT_GUARDS,
        inputs=_PAYMENT_INPUTS,
        updates=("billing_record_payment",),
        effects=_PAID_EFFECTS,
        doc="§9 'any day: payment received': a late result of the B03 charge, a B17 extra attempt, or the "
        "customer paying during the 2-day wait.",
    ),
    Transition(
        "Bx6",
        ("payment_declined",),
        ("payment_failed",),
        SAME,
        ("sys",),
        inputs=_DECLINE_INPUTS,
        updates=("billing_record_decline",),
        effects=(fx("notify_customer", template="payment_failed"),),
        doc="The decline of a B17 extra attempt (or a late B03 result) during the 2-day wait.",
    ),
)

_PAID_ROWS: Final = ("B04", "B12", "B18", "Bx5")
_X06_PAYLOAD: Final = {
    "invoice_id": "$instance.subject_id",
    "billing_instance_id": "$instance.id",
    "kind": "$data.kind",
    "amount_cents": "$data.paid_cents",
    "payment_id": "$data.last_payment_id",
}

CASCADES: Final = (
    # X05: a failed renewal invoice moves the subscription to renewal_grace (S17). Non-renewal invoices have
    # no subscription event ("only set past_due"): the where guard keeps them out.
    Cascade(
        "X05",
        ("B05", "B06"),
        "subscription",
        "renewal_payment_failed",
        where="billing_x05_subscription_awaiting_renewal",
        payload={
            "invoice_id": "$instance.subject_id",
            "kind": "$data.kind",
            "failed_attempts": "$data.failed_attempts",
        },
    ),
    # X06: a paid invoice (B04, B12, B18; Bx5 is the same payment during the 2-day wait) by invoice kind and
    # target state.
    Cascade(
        "X06",
        _PAID_ROWS,
        "subscription",
        "renewal_paid",
        where="billing_x06_subscription_awaiting_renewal",
        payload=_X06_PAYLOAD,
    ),
    Cascade(
        "X06",
        _PAID_ROWS,
        "subscription",
        "payment_recovered",
        where="billing_x06_subscription_in_grace",
        payload=_X06_PAYLOAD,
    ),
    Cascade(
        "X06",
        _PAID_ROWS,
        "subscription",
        "reactivate",
        where="billing_x06_subscription_cancelled_nonpayment",
        payload=_X06_PAYLOAD,
    ),
    Cascade(
        "X06",
        _PAID_ROWS,
        "entitlement",
        "lift_hold",
        where="billing_x06_entitlement_payment_hold",
        payload={**_X06_PAYLOAD, "hold": "payment_failed"},
    ),
    Cascade(
        "X06",
        _PAID_ROWS,
        "entitlement",
        "request_reinstatement",
        where="billing_x06_entitlement_cancelled_nonpayment",
        payload={**_X06_PAYLOAD, "auto_approve": True},
    ),
    Cascade(
        "X06",
        _PAID_ROWS,
        "entitlement",
        "approve_reinstatement",
        where="billing_x06_entitlement_reinstate_pending",
        payload={**_X06_PAYLOAD, "auto_approve": True},
    ),
    Cascade(
        "X06",
        _PAID_ROWS,
        "quota_sla",
        "overage_paid",
        where="billing_x06_quota_throttled",
        payload=_X06_PAYLOAD,
    ),
    Cascade(
        "X06",
        _PAID_ROWS,
        "quota_sla",
        "recovery_payment_received",
        where="billing_x06_quota_circuit_breaker",
        payload=_X06_PAYLOAD,
    ),
    # X10: collections flags the account delinquent; no lock, no compliance case (D-12).
    Cascade(
        "X10",
        ("B16",),
        "customer_account",
        "flag_delinquent",
        where="billing_x10_account_open",
        payload={"invoice_id": "$instance.subject_id"},
    ),
    # X11: a chargeback locks the account and raises a compliance anomaly (B09; B09c for archived invoices).
    Cascade(
        "X11",
        ("B09", "B09c"),
        "customer_account",
        "lock",
        where="billing_x11_account_lockable",
        payload={"reason": "chargeback", "invoice_id": "$instance.subject_id"},
    ),
    Cascade(
        "X11",
        ("B09", "B09c"),
        "compliance_audit",
        "anomaly_detected",
        where="billing_x11_compliance_compliant",
        payload={
            "indicators": ["chargeback"],
            "invoice_id": "$instance.subject_id",
            "dispute_id": "$data.dispute_id",
        },
    ),
    Cascade(
        "Xi1",
        ("B09b",),
        "billing",
        "chargeback_received",
        select="new",
        payload={
            "dispute_id": "$payload.dispute_id",
            "amount_cents": "$payload.amount_cents",
            "currency": "$data.currency",
            "linked_invoice_id": "$instance.subject_id",
        },
        doc="B09/D-11: a chargeback on an archived invoice opens a linked chargeback_case instance (B09c).",
    ),
)

GOVERNOR: Final = Governor(
    name="billing",
    title="Billing",
    description="One invoice: generation, payment, the retry ladder, collections or dispute, archive.",
    instance_of="invoice",
    states=STATES,
    transitions=TRANSITIONS,
    cascades=CASCADES,
    multiple=True,
    badge_order=(
        "collection_agency",
        "payment_disputed",
        "retry_3",
        "retry_2",
        "retry_1",
        "payment_failed",
        "payment_pending",
        "invoice_issued",
        "awaiting_invoice",
        "payment_received",
        "archived",
    ),
)
