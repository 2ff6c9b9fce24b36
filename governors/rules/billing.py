"""Guards and updaters of the Billing governor (GOVERNORS.md §2, one instance per invoice).

Facts the service must supply (``Facts.extra``):

* ``invoice_template_valid`` (bool, default True): B02, the invoice template renders for this invoice
  (the service sets False when the PDF/template check fails).
* ``processor_record_matches`` (bool): B08 by the daily reconciliation job, the processor's record of
  the payment matches the invoice.
* ``processor_confirms_payment`` (bool): B08 force-reconcile by finance, the processor confirmed the
  payment (the proof is fetched first, CONSOLE.md 4.5).
* ``payment_method_valid`` (bool): B17, the processor validated the new payment method (a payload
  ``validated: true`` also counts).
* ``compliance_reviewed`` (bool): B17/B22 while fraud checks are on (X22), a compliance officer reviewed
  the method change or refund.

Peers: ``billing`` (the customer's other invoices) for the credit key of Bx3. Cascade ``where`` guards
read the engine's ``source_data`` fact (the paying invoice's data).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any

from governors.definitions.billing import CYCLE_KINDS, DUNNING_STATES
from governors.facts import Context, GuardFailed, as_datetime
from governors.money import percent_of, round_cents, to_decimal
from governors.rules.base import declare_effects, guard, updater

declare_effects(
    billing_render_invoice="Render the invoice PDF (total = base + tax − credits) and attach it to the email",
    billing_ledger_entry="Append an entry (named in args) to the accounting ledger",
    billing_charge="Charge the invoice total on the method in args with the attempt key (none: skip)",
    billing_recognise_revenue="Recognise the revenue of a paid invoice",
    billing_final_receipt="Issue the final receipt carrying the reconciliation hash",
    billing_process_refund="Refund through the processor with the refund key (skip when the amount is 0)",
    billing_open_ticket="Open a ticket in the queue named in args (support, collections)",
)

_CURRENCY = re.compile(r"[A-Z]{3}")
_HOLD_STATES_FOR_STAFF = frozenset({*DUNNING_STATES, "collection_agency"})
_ACCESS_KINDS = frozenset({"initial", "renewal"})
_QUOTA_KINDS = frozenset({"overage", "recovery"})


# --------------------------------------------------------------------------- pure helpers


def payment_key(customer_id: str, invoice_id: str, amount_cents: int, unix_seconds: int) -> str:
    """§2.4 payment key: hex SHA-256 of ``customer_id|invoice_id|amount|unix_seconds`` [C]."""
    raw = f"{customer_id}|{invoice_id}|{amount_cents}|{unix_seconds}"
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def attempt_key(invoice_id: str, attempt: int | str) -> str:
    """§2.4 attempt key (invoice_id, attempt_no), as one string."""
    return f"{invoice_id}:attempt:{attempt}"


def next_batch_at(now: datetime, day: int) -> datetime:
    """The next monthly batch instant (``day`` of the month, 00:00 UTC) at or after ``now``."""
    this_month = now.astimezone(UTC).replace(day=day, hour=0, minute=0, second=0, microsecond=0)
    if this_month >= now:
        return this_month
    if this_month.month == 12:
        return this_month.replace(year=this_month.year + 1, month=1)
    return this_month.replace(month=this_month.month + 1)


def receipt_hash(fields: Mapping[str, Any]) -> str:
    """Hex SHA-256 over the canonical JSON of the receipt fields (B08 'final receipt (hash)')."""
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _int(value: Any) -> int:
    kind = type(value)
    if kind is int:
        return value  # type: ignore[no-any-return]
    if kind is bool:
        return 0
    return value if isinstance(value, int) else 0


def _strings(value: Any) -> list[str]:
    kind = type(value)
    if kind is list or kind is tuple or isinstance(value, list | tuple):
        return [v if type(v) is str else str(v) for v in value]
    return []


_TEN_POW: tuple[int, ...] = tuple(10**k for k in range(31))


@lru_cache(maxsize=256, typed=True)
def _rate_fraction(value: Any) -> tuple[int, int] | None:
    """A tax rate as an exact fraction ``(numerator, power of ten of the denominator)``.

    ``to_decimal(value) or Decimal(0)`` as ``n / 10**k``; None when it does not fit the integer fast path
    (the caller then computes with Decimal).
    """
    rate = to_decimal(value) or Decimal(0)
    sign, digits, exponent = rate.as_tuple()
    if not isinstance(exponent, int) or not -30 <= exponent <= 0 or len(digits) > 28:
        return None
    numerator = int("".join(map(str, digits)) or "0")
    return (-numerator if sign else numerator), -exponent


def _tax_cents(amount: int, tax_rate: Any) -> int:
    """``round_cents(Decimal(amount) * (to_decimal(tax_rate) or Decimal(0)))`` in exact integer arithmetic.

    The Decimal product is exact while it has at most 28 digits, and ROUND_HALF_UP rounds ties away
    from zero: the integer computation below gives the same cents. Anything else goes through Decimal.
    """
    try:
        fraction = _rate_fraction(tax_rate)
    except TypeError:  # unhashable
        fraction = None
    if fraction is not None and type(amount) is int:
        numerator, power = fraction
        product = amount * numerator
        if -(10**27) < product < 10**27:
            denominator = _TEN_POW[power]
            quotient, remainder = divmod(abs(product), denominator)
            if 2 * remainder >= denominator:
                quotient += 1
            return -quotient if product < 0 else quotient
    rate = to_decimal(tax_rate) or Decimal(0)
    return round_cents(Decimal(amount) * rate)


def _invoice_id(ctx: Context) -> str:
    return ctx.instance.subject_id or ctx.instance.id


def _paid(ctx: Context) -> int:
    return _int(ctx.data.get("paid_cents"))


def _outstanding(ctx: Context) -> int:
    return max(0, _int(ctx.data.get("total_cents")) - _paid(ctx))


def _holds(data: Mapping[str, Any]) -> list[str]:
    return _strings(data.get("dunning_holds"))


def _source(ctx: Context) -> Mapping[str, Any]:
    data = ctx.fact("source_data", {})
    return data if isinstance(data, Mapping) else {}


def _credit_keys(instances: Iterable[Mapping[str, Any]]) -> set[str]:
    keys: set[str] = set()
    for data in instances:
        credits = data.get("credits")
        if isinstance(credits, list | tuple):
            keys.update(str(c.get("key")) for c in credits if isinstance(c, Mapping))
    return keys


def _credit_key(ctx: Context) -> str:
    kind = ctx.payload.get("kind") or "goodwill"
    return f"{ctx.instance.customer_id}:{ctx.arg('period')}:{kind}"


# --------------------------------------------------------------------------- creation and issue


@guard("billing_amount_positive", "the amount must be more than 0 cents")
def billing_amount_positive(ctx: Context) -> bool:
    """B01/B09c/B18: amount_cents > 0."""
    return _int(ctx.arg("amount_cents")) > 0


@lru_cache(maxsize=256)
def _currency_code(text: str) -> bool:
    """True when ``text`` is 3 upper-case letters [C] (memoised: a handful of currencies recur)."""
    return bool(_CURRENCY.fullmatch(text))


@guard("billing_currency_valid", "the currency must be an ISO 4217 code of 3 upper-case letters")
def billing_currency_valid(ctx: Context) -> bool:
    """B01/B09c: currency is 3 upper-case letters [C]."""
    return bool(_CURRENCY.fullmatch(str(ctx.arg("currency"))))


@guard("billing_tax_rate_valid", "the tax rate must be a number from 0 to 1")
def billing_tax_rate_valid(ctx: Context) -> bool:
    """B01: an optional tax_rate lies in [0, 1] (§2.2 B02)."""
    if ctx.payload.get("tax_rate") is None:
        return True
    rate = to_decimal(ctx.payload["tax_rate"])
    return rate is not None and Decimal(0) <= rate <= Decimal(1)


@updater("billing_open_cycle")
def billing_open_cycle(ctx: Context) -> dict[str, Any]:
    """B01: the invoice's opening data; generate_at is now, the batch day (overage) or a given time."""
    kind = str(ctx.arg("kind"))
    given = as_datetime(ctx.payload.get("generate_at"))
    if given is not None:
        generate_at = given
    elif kind in _strings(ctx.setting("billing.batch_kinds")):
        generate_at = next_batch_at(ctx.now, int(ctx.setting("billing.batch_day_of_month")))
    else:
        generate_at = ctx.now
    tax_rate = ctx.payload.get("tax_rate")
    return {
        "kind": kind,
        "amount_cents": _int(ctx.arg("amount_cents")),
        "currency": str(ctx.arg("currency")),
        "tax_rate": str(tax_rate if tax_rate is not None else ctx.setting("billing.default_tax_rate")),
        "subscription_id": ctx.payload.get("subscription_id"),
        "period": ctx.payload.get("period"),
        "lines": ctx.payload.get("lines"),
        "payment_method": ctx.payload.get("payment_method"),
        "backup_methods": _strings(ctx.payload.get("backup_methods")),
        "opened_at": ctx.now,
        "generate_at": generate_at,
        "failed_attempts": 0,
        "retry_number": 0,
        "paid_cents": 0,
        "refunded_cents": 0,
        "payment_in_flight": False,
        "dunning_holds": [],
        "dunning_hold": False,
    }


@guard("billing_generation_due", "the invoice is not due for generation yet")
def billing_generation_due(ctx: Context) -> bool:
    """B02: now ≥ generate_at."""
    at = as_datetime(ctx.data.get("generate_at"))
    return at is not None and ctx.now >= at


@guard("billing_template_valid", "the invoice template is not valid for this invoice")
def billing_template_valid(ctx: Context) -> bool:
    """B02: kind, currency and amount are present and fact ``invoice_template_valid`` (default True) holds."""
    data = ctx.data
    complete = (
        data.get("kind") in CYCLE_KINDS
        and _currency_code(str(data.get("currency")))
        and _int(data.get("amount_cents")) > 0
    )
    return complete and bool(ctx.facts.extra.get("invoice_template_valid", True))


@updater("billing_issue_invoice")
def billing_issue_invoice(ctx: Context) -> dict[str, Any]:
    """B02: total = base + tax (rate 0–1) − credits already applied; due_date = issue + 30 d."""
    data = ctx.data
    amount = _int(data.get("amount_cents"))
    tax = _tax_cents(amount, data.get("tax_rate"))
    credits = 0
    for credit in data.get("credits", ()):
        if isinstance(credit, Mapping):
            credits += _int(credit.get("cents"))
    now = ctx.facts.now
    return {
        "tax_cents": tax,
        "total_cents": max(0, amount + tax - credits),
        "issued_at": now,
        "due_date": now + ctx.settings.duration("billing.due_after"),
    }


@guard("billing_delivery_confirmed", "delivery is not confirmed and the 24 h fallback has not passed")
def billing_delivery_confirmed(ctx: Context) -> bool:
    """B03: the delivery is confirmed, or 24 h passed since issue (the fallback timer)."""
    if ctx.facts.role == "timer" or ctx.payload.get("confirmed") is True:
        return True
    issued = as_datetime(ctx.data.get("issued_at"))
    return issued is not None and ctx.now - issued >= ctx.duration("billing.delivery_fallback_after")


@updater("billing_open_payment_window")
def billing_open_payment_window(ctx: Context) -> dict[str, Any]:
    """B03: open the window; auto-charge the default method when one is on file (attempt 0)."""
    method = ctx.data.get("payment_method")
    changes: dict[str, Any] = {"window_opened_at": ctx.now}
    if method:
        changes.update(
            payment_in_flight=True,
            in_flight_key=attempt_key(_invoice_id(ctx), 0),
            charge_method=method,
        )
    return changes


# --------------------------------------------------------------------------- payments (§2.4)


def _payment_key(ctx: Context) -> str:
    """The payment key of this event (computed once per context: guard and updater share it)."""
    return ctx.cached("billing_payment_key", _compute_payment_key)


def _compute_payment_key(ctx: Context) -> str:
    paid_at = as_datetime(ctx.payload.get("paid_at")) or ctx.now
    return payment_key(
        ctx.instance.customer_id or "",
        _invoice_id(ctx),
        _int(ctx.arg("amount_cents")),
        int(paid_at.timestamp()),
    )


@guard(
    "billing_payment_unseen",
    "this payment was already recorded: nothing is charged again",
    "duplicate_payment",
)
def billing_payment_unseen(ctx: Context) -> bool:
    """B04/B12/Bx4/Bx5: neither the payment key nor the processor payment_id was seen before."""
    payment_id = ctx.payload.get("payment_id")
    if payment_id and str(payment_id) in _strings(ctx.data.get("payment_ids")):
        raise GuardFailed(f"payment {payment_id} was already recorded: nothing is charged again")
    return _payment_key(ctx) not in _strings(ctx.data.get("idempotency_keys"))


@guard(
    "billing_no_other_payment_in_flight",
    "another charge is in flight for this invoice; wait for its result",
    "concurrent_payment",
)
def billing_no_other_payment_in_flight(ctx: Context) -> bool:
    """B04/B12/Bx5: no charge is in flight, or this payment is the result of the one in flight."""
    if not ctx.data.get("payment_in_flight"):
        return True
    key = ctx.payload.get("attempt_key")
    return key is not None and key == ctx.data.get("in_flight_key")


@guard("billing_no_payment_in_flight", "a charge is already in flight for this invoice", "concurrent_payment")
def billing_no_payment_in_flight(ctx: Context) -> bool:
    """B10 (manual retry_now) and B17: start no second charge while one is in flight (timers may)."""
    return ctx.facts.role == "timer" or not ctx.data.get("payment_in_flight")


@guard("billing_amount_matches", "the amount does not match the invoice total", "amount_mismatch")
def billing_amount_matches(ctx: Context) -> bool:
    """B04/B12/Bx5: |amount − total| ≤ tolerance (±1 cent, D-09)."""
    amount = _int(ctx.arg("amount_cents"))
    total = _int(ctx.data.get("total_cents"))
    tolerance = int(ctx.setting("billing.amount_tolerance_cents"))
    if abs(amount - total) > tolerance:
        raise GuardFailed(f"paid {amount} cents but the invoice total is {total} cents (±{tolerance})")
    return True


def _payment_record(ctx: Context) -> dict[str, Any]:
    payment_id = ctx.payload.get("payment_id")
    ids = _strings(ctx.data.get("payment_ids"))
    return {
        "payment_ids": [*ids, str(payment_id)] if payment_id else ids,
        "idempotency_keys": [*_strings(ctx.data.get("idempotency_keys")), _payment_key(ctx)],
        "last_payment_id": str(payment_id) if payment_id else None,
    }


@updater("billing_record_payment")
def billing_record_payment(ctx: Context) -> dict[str, Any]:
    """B04/B12/Bx5: record the payment and its key; nothing is in flight any more."""
    return {
        **_payment_record(ctx),
        "paid_cents": _paid(ctx) + _int(ctx.arg("amount_cents")),
        "paid_at": ctx.now,
        "payment_in_flight": False,
        "in_flight_key": None,
    }


@updater("billing_record_overpayment")
def billing_record_overpayment(ctx: Context) -> dict[str, Any]:
    """Bx4: a second, distinct payment on a paid invoice is kept aside for a refund."""
    extra = list(ctx.data.get("extra_payments", ()))
    extra.append(
        {
            "amount_cents": _int(ctx.arg("amount_cents")),
            "payment_id": ctx.payload.get("payment_id"),
            "at": ctx.now,
        }
    )
    return {**_payment_record(ctx), "extra_payments": extra}


@updater("billing_record_decline")
def billing_record_decline(ctx: Context) -> dict[str, Any]:
    """B05/B13/Bx6: failed_attempts + 1 and the processor's code and message."""
    return {
        "failed_attempts": _int(ctx.data.get("failed_attempts")) + 1,
        "last_decline": {
            "code": ctx.payload.get("decline_code"),
            "message": ctx.payload.get("decline_message"),
            "at": ctx.now,
        },
        "payment_in_flight": False,
        "in_flight_key": None,
    }


@updater("billing_record_window_expiry")
def billing_record_window_expiry(ctx: Context) -> dict[str, Any]:
    """B06: as B05, with the code window_expired."""
    return {
        "failed_attempts": _int(ctx.data.get("failed_attempts")) + 1,
        "last_decline": {"code": "window_expired", "message": "payment window expired", "at": ctx.now},
        "payment_in_flight": False,
        "in_flight_key": None,
    }


# --------------------------------------------------------------------------- retry ladder


@guard("billing_ladder_runs", "dunning is on hold for this invoice")
def billing_ladder_runs(ctx: Context) -> bool:
    """B06/B10/B14–B16 timers and rows: no dunning hold is present (B23)."""
    raw = ctx.data.get("dunning_holds")
    if raw is None or (type(raw) is list and not raw):
        return True
    holds = _strings(raw)
    if holds:
        raise GuardFailed(f"dunning is on hold ({', '.join(holds)})")
    return True


@guard("billing_retries_left", "every retry of this invoice is used up")
def billing_retries_left(ctx: Context) -> bool:
    """B10: retries used < 3."""
    return _int(ctx.data.get("retry_number")) < int(ctx.setting("billing.max_retries"))


def _attempt(ctx: Context, number: int, method: Any) -> dict[str, Any]:
    return {
        "retry_number": number,
        "charge_method": method,
        "payment_in_flight": True,
        "in_flight_key": attempt_key(_invoice_id(ctx), number),
        "last_attempt_at": ctx.now,
    }


@updater("billing_attempt_1")
def billing_attempt_1(ctx: Context) -> dict[str, Any]:
    """B10: attempt 1 on the given or backup method (falls back to the primary)."""
    backups = _strings(ctx.data.get("backup_methods"))
    method = ctx.payload.get("payment_method_id") or (
        backups[0] if backups else ctx.data.get("payment_method")
    )
    return _attempt(ctx, 1, method)


@updater("billing_attempt_2")
def billing_attempt_2(ctx: Context) -> dict[str, Any]:
    """B14: attempt 2 on the secondary backup (falls back to the primary)."""
    backups = _strings(ctx.data.get("backup_methods"))
    return _attempt(ctx, 2, backups[1] if len(backups) > 1 else ctx.data.get("payment_method"))


@updater("billing_attempt_3")
def billing_attempt_3(ctx: Context) -> dict[str, Any]:
    """B15: attempt 3, the final one, on the current default method."""
    return _attempt(ctx, 3, ctx.data.get("payment_method"))


@guard("billing_method_validated", "the new payment method is not validated by the processor")
def billing_method_validated(ctx: Context) -> bool:
    """B17: payload ``validated`` or fact ``payment_method_valid``."""
    return ctx.payload.get("validated") is True or ctx.fact("payment_method_valid") is True


@guard("billing_fraud_review_clear", "fraud checks are on: a compliance review is needed first")
def billing_fraud_review_clear(ctx: Context) -> bool:
    """B17/B22: with fraud checks on (X22), fact ``compliance_reviewed`` (Compliance cascades pass)."""
    if not ctx.data.get("fraud_checks") or ctx.facts.role == "cascade":
        return True
    return ctx.fact("compliance_reviewed") is True


@updater("billing_extra_attempt")
def billing_extra_attempt(ctx: Context) -> dict[str, Any]:
    """B17: the new method becomes the default and gets one extra attempt outside the ladder."""
    method = ctx.payload.get("method_token") or ctx.data.get("payment_method")
    extra = _int(ctx.data.get("extra_attempts")) + 1
    return {
        "payment_method": method,
        "extra_attempts": extra,
        "charge_method": method,
        "payment_in_flight": True,
        "in_flight_key": attempt_key(_invoice_id(ctx), f"extra{extra}"),
        "last_attempt_at": ctx.now,
    }


# --------------------------------------------------------------------------- reconciliation, disputes


@guard("billing_reconcile_age", "the payment must be at least a day old before reconciliation")
def billing_reconcile_age(ctx: Context) -> bool:
    """B08: ≥ 1 d in payment_received [G]."""
    paid_at = as_datetime(ctx.data.get("paid_at")) or ctx.instance.entered_at
    return paid_at is not None and ctx.now - paid_at >= ctx.duration("billing.reconcile_min_age")


@guard("billing_processor_confirms", "the processor record does not match the payment")
def billing_processor_confirms(ctx: Context) -> bool:
    """B08: fact ``processor_record_matches`` (job) or, for a force-reconcile, a proof ref and
    fact ``processor_confirms_payment`` (refused by name when ``processor_proof_claimed_by`` says
    another invoice already settles with that payment)."""
    if ctx.by_staff:
        proof = ctx.arg("processor_proof_ref")
        claimed = ctx.fact("processor_proof_claimed_by")
        if claimed:
            raise GuardFailed(f"processor reference {proof} already settles invoice {claimed}")
        if ctx.fact("processor_confirms_payment") is not True:
            raise GuardFailed("force-reconcile needs the processor to confirm the payment")
        return True
    return ctx.fact("processor_record_matches") is True


@guard("billing_unreconciled_overdue", "reconciled in time")
def billing_unreconciled_overdue(ctx: Context) -> bool:
    """Attention of payment_received: paid more than 1 d ago and not reconciled [R]."""
    paid_at = as_datetime(ctx.data.get("paid_at")) or ctx.instance.entered_at
    return paid_at is not None and ctx.now - paid_at > ctx.duration("billing.unreconciled_attention_after")


@updater("billing_reconcile")
def billing_reconcile(ctx: Context) -> dict[str, Any]:
    """B08: archive with a final receipt hash over the invoice's settled facts."""
    fields = {
        "invoice_id": _invoice_id(ctx),
        "customer_id": ctx.instance.customer_id,
        "currency": ctx.data.get("currency"),
        "total_cents": ctx.data.get("total_cents"),
        "paid_cents": ctx.data.get("paid_cents"),
        "payment_ids": _strings(ctx.data.get("payment_ids")),
        "reconciled_at": ctx.now.isoformat(),
    }
    return {
        "reconciled_at": ctx.now,
        "processor_proof_ref": ctx.payload.get("processor_proof_ref"),
        "receipt_hash": receipt_hash(fields),
    }


@updater("billing_open_dispute")
def billing_open_dispute(ctx: Context) -> dict[str, Any]:
    """B07: store the dispute id (key of the dispute) and stop any charge in flight."""
    dispute_id = ctx.payload.get("dispute_id") or f"{_invoice_id(ctx)}:dispute"
    return {
        "dispute_id": str(dispute_id),
        "dispute_kind": "dispute",
        "disputed_at": ctx.now,
        "payment_in_flight": False,
        "in_flight_key": None,
    }


@guard("billing_chargeback_within_paid", "a chargeback cannot exceed what was paid")
def billing_chargeback_within_paid(ctx: Context) -> bool:
    """B09/B09b: an optional chargeback amount is at most the amount paid."""
    amount = ctx.payload.get("amount_cents")
    return amount is None or _int(amount) <= _paid(ctx)


@updater("billing_open_chargeback")
def billing_open_chargeback(ctx: Context) -> dict[str, Any]:
    """B09: open the chargeback case on this invoice."""
    amount = ctx.payload.get("amount_cents")
    return {
        "dispute_id": str(ctx.arg("dispute_id")),
        "dispute_kind": "chargeback",
        "chargeback_cents": _int(amount) if amount is not None else _paid(ctx),
        "disputed_at": ctx.now,
    }


@updater("billing_open_chargeback_case")
def billing_open_chargeback_case(ctx: Context) -> dict[str, Any]:
    """B09c: a linked chargeback_case instance for an archived invoice, starting in payment_disputed."""
    amount = _int(ctx.arg("amount_cents"))
    return {
        "kind": "chargeback_case",
        "linked_invoice_id": str(ctx.arg("linked_invoice_id")),
        "currency": str(ctx.arg("currency")),
        "amount_cents": amount,
        "total_cents": amount,
        "paid_cents": amount,
        "refunded_cents": 0,
        "chargeback_cents": amount,
        "dispute_id": str(ctx.arg("dispute_id")),
        "dispute_kind": "chargeback",
        "opened_at": ctx.now,
        "disputed_at": ctx.now,
        "dunning_holds": [],
        "dunning_hold": False,
    }


def _refund_cents(ctx: Context) -> int:
    return _int(ctx.payload.get("refund_cents"))


@guard("billing_dispute_outcome_consistent", "the outcome and the amounts do not agree")
def billing_dispute_outcome_consistent(ctx: Context) -> bool:
    """B21: payment_valid has no refund; refund has one; partial_refund has refund + retained = paid."""
    outcome = str(ctx.arg("outcome"))
    refund = _refund_cents(ctx)
    if outcome == "payment_valid":
        if refund:
            raise GuardFailed("payment_valid means no refund: give refund_cents 0 or choose refund")
        return True
    if refund <= 0:
        raise GuardFailed(f"{outcome} needs refund_cents above 0")
    if outcome == "partial_refund":
        retained = _int(ctx.arg("retained_cents"))
        if retained <= 0 or refund + retained != _paid(ctx):
            raise GuardFailed(f"a partial refund splits the {_paid(ctx)} cents paid into refund + retained")
    return True


@guard("billing_refund_within_paid", "the refund exceeds what was paid")
def billing_refund_within_paid(ctx: Context) -> bool:
    """B21: refund ≤ paid − already refunded."""
    left = _paid(ctx) - _int(ctx.data.get("refunded_cents"))
    if _refund_cents(ctx) > left:
        raise GuardFailed(f"at most {left} cents can still be refunded")
    return True


@guard("billing_refund_requested", "no refund is involved")
def billing_refund_requested(ctx: Context) -> bool:
    """B21 four-eyes condition: a refund above 0 is part of the resolution."""
    return _refund_cents(ctx) > 0


def _with_refund(ctx: Context, amount: int, refund_id: str, reason: str) -> dict[str, Any]:
    refunds = list(ctx.data.get("refunds", ()))
    refunds.append({"refund_id": refund_id, "amount_cents": amount, "reason_code": reason, "at": ctx.now})
    return {
        "refunds": refunds,
        "refunded_cents": _int(ctx.data.get("refunded_cents")) + amount,
        "last_refund_id": refund_id,
    }


@updater("billing_resolve_dispute")
def billing_resolve_dispute(ctx: Context) -> dict[str, Any]:
    """B21: the resolution record and, when a refund is involved, the refund (key invoice:dispute)."""
    refund = _refund_cents(ctx)
    changes: dict[str, Any] = {
        "resolution": {
            "outcome": ctx.arg("outcome"),
            "refund_cents": refund,
            "retained_cents": _int(ctx.payload.get("retained_cents")),
            "evidence_ref": ctx.arg("evidence_ref"),
            "at": ctx.now,
        },
        "resolved_at": ctx.now,
    }
    if refund > 0:
        refund_id = f"{_invoice_id(ctx)}:{ctx.data.get('dispute_id') or 'dispute'}"
        changes.update(_with_refund(ctx, refund, refund_id, "dispute_resolution"))
    return changes


# --------------------------------------------------------------------------- collections


@updater("billing_record_recovery")
def billing_record_recovery(ctx: Context) -> dict[str, Any]:
    """B18: the recovered amount is recorded as a payment."""
    ref = str(ctx.arg("payment_ref"))
    return {
        "paid_cents": _paid(ctx) + _int(ctx.arg("amount_cents")),
        "recovered_cents": _int(ctx.arg("amount_cents")),
        "paid_at": ctx.now,
        "last_payment_id": ref,
        "payment_ids": [*_strings(ctx.data.get("payment_ids")), ref],
    }


@guard(
    "billing_settlement_within_outstanding",
    "the settlement must be above 0 and at most the outstanding amount",
)
def billing_settlement_within_outstanding(ctx: Context) -> bool:
    """B19: 0 < settlement ≤ outstanding (total − paid)."""
    settlement = _int(ctx.arg("settlement_cents"))
    outstanding = _outstanding(ctx)
    if not 0 < settlement <= outstanding:
        raise GuardFailed(f"the settlement must be between 1 and {outstanding} cents")
    return True


@updater("billing_record_settlement")
def billing_record_settlement(ctx: Context) -> dict[str, Any]:
    """B19: log the settlement and write off the remainder."""
    settlement = _int(ctx.arg("settlement_cents"))
    remainder = _outstanding(ctx) - settlement
    return {
        "settled_cents": settlement,
        "settlement_ref": ctx.arg("agreement_ref"),
        "written_off_cents": remainder,
        "written_off": remainder > 0,
    }


@updater("billing_record_write_off")
def billing_record_write_off(ctx: Context) -> dict[str, Any]:
    """B20: the bad-debt amount and its justification."""
    return {
        "written_off_cents": _int(ctx.arg("amount_cents")),
        "written_off": True,
        "write_off_justification": ctx.arg("justification"),
    }


# --------------------------------------------------------------------------- refunds


@guard("billing_refund_amount_ok", "the refund must be above 0 and at most what is left to refund")
def billing_refund_amount_ok(ctx: Context) -> bool:
    """B22: 0 < amount ≤ paid − already refunded."""
    amount = _int(ctx.arg("amount_cents"))
    left = _paid(ctx) - _int(ctx.data.get("refunded_cents"))
    if not 0 < amount <= left:
        raise GuardFailed(f"the refund must be between 1 and {left} cents")
    return True


@guard("billing_refund_id_unseen", "this refund was already issued")
def billing_refund_id_unseen(ctx: Context) -> bool:
    """B22: refund key (invoice_id, refund_id) is new."""
    refund_id = ctx.payload.get("refund_id")
    if not refund_id:
        return True
    seen = {str(r.get("refund_id")) for r in ctx.data.get("refunds", ()) if isinstance(r, Mapping)}
    return f"{_invoice_id(ctx)}:{refund_id}" not in seen


@updater("billing_record_refund")
def billing_record_refund(ctx: Context) -> dict[str, Any]:
    """B22: a refund record (key invoice:refund_id) without a state change."""
    given = ctx.payload.get("refund_id") or str(len(list(ctx.data.get("refunds", ()))) + 1)
    return _with_refund(
        ctx, _int(ctx.arg("amount_cents")), f"{_invoice_id(ctx)}:{given}", str(ctx.arg("reason_code"))
    )


# --------------------------------------------------------------------------- holds, flags, credits


@guard("billing_staff_hold_allowed", "finance may hold or release dunning only in the ladder or collections")
def billing_staff_hold_allowed(ctx: Context) -> bool:
    """B23: finance acts in payment_failed, retry_n or collection_agency (§11 #18) and gives an
    expected release date for a hold; cascades act in any open state."""
    if not ctx.by_staff:
        return True
    if ctx.state not in _HOLD_STATES_FOR_STAFF:
        return False
    if ctx.event == "dunning_hold":
        ctx.arg("expected_release_at")
    return True


@updater("billing_update_dunning_holds")
def billing_update_dunning_holds(ctx: Context) -> dict[str, Any]:
    """B23: add or remove a hold code (payload ``hold``; staff default manual, cascades system)."""
    code = str(ctx.payload.get("hold") or ("manual" if ctx.by_staff else "system"))
    holds = set(_holds(ctx.data))
    if ctx.event == "dunning_hold":
        holds.add(code)
    else:
        holds.discard(code)
    changes: dict[str, Any] = {"dunning_holds": sorted(holds), "dunning_hold": bool(holds)}
    if ctx.event == "dunning_hold" and ctx.payload.get("expected_release_at") is not None:
        changes["expected_release_at"] = ctx.payload["expected_release_at"]
    if not holds:
        changes["expected_release_at"] = None
    return changes


@updater("billing_set_fraud_checks")
def billing_set_fraud_checks(ctx: Context) -> dict[str, Any]:
    """Bx2: fraud checks on or off (X22)."""
    return {"fraud_checks": ctx.event == "fraud_checks_on"}


def _credit_pct(ctx: Context) -> Decimal | None:
    raw = ctx.payload.get("credit_pct")
    return None if raw is None or raw == "" else to_decimal(raw)


@guard("billing_credit_valid", "give either a credit percent (above 0, at most 25) or an amount")
def billing_credit_valid(ctx: Context) -> bool:
    """Bx3: exactly one of credit_pct (0 < pct ≤ 25 %) or amount_cents (> 0)."""
    pct_given = ctx.payload.get("credit_pct") not in (None, "")
    amount = ctx.payload.get("amount_cents")
    if pct_given == (amount is not None):
        raise GuardFailed("give either a credit percent or an amount in cents, not both and not neither")
    if amount is not None:
        return _int(amount) > 0
    pct = _credit_pct(ctx)
    cap = Decimal(ctx.setting("billing.max_credit_pct"))
    return pct is not None and Decimal(0) < pct <= cap


@guard("billing_credit_key_unseen", "a credit of this kind was already applied for this period")
def billing_credit_key_unseen(ctx: Context) -> bool:
    """Bx3: key (customer_id, period, kind) is on no invoice of the customer (peers ``billing``)."""
    datas = [ctx.data, *(p.data for p in ctx.peers("billing"))]
    return _credit_key(ctx) not in _credit_keys(datas)


@updater("billing_apply_credit")
def billing_apply_credit(ctx: Context) -> dict[str, Any]:
    """Bx3: a credit line; an issued invoice's total drops at once, a pending one's at issue (B02)."""
    pct = _credit_pct(ctx)
    base = _int(ctx.data.get("amount_cents"))
    cents = percent_of(base, pct) if pct is not None else _int(ctx.payload.get("amount_cents"))
    if ctx.state != "awaiting_invoice":
        cents = min(cents, _int(ctx.data.get("total_cents")))
    credits = list(ctx.data.get("credits", ()))
    credits.append(
        {
            "key": _credit_key(ctx),
            "period": ctx.arg("period"),
            "kind": ctx.payload.get("kind") or "goodwill",
            "pct": str(pct) if pct is not None else None,
            "cents": cents,
            "at": ctx.now,
        }
    )
    changes: dict[str, Any] = {"credits": credits}
    if ctx.state != "awaiting_invoice":
        changes["total_cents"] = _int(ctx.data.get("total_cents")) - cents
    return changes


# --------------------------------------------------------------------------- cascade targets (where)


def _source_kind(ctx: Context) -> str:
    return str(_source(ctx).get("kind"))


def _same_subscription(ctx: Context) -> bool:
    wanted = _source(ctx).get("subscription_id")
    return wanted is None or wanted in (ctx.instance.id, ctx.instance.subject_id)


@guard(
    "billing_x05_subscription_awaiting_renewal", "not a renewal invoice of a subscription awaiting renewal"
)
def billing_x05_subscription_awaiting_renewal(ctx: Context) -> bool:
    """Where X05: the subscription awaits renewal and the failed invoice is its renewal."""
    return ctx.state == "awaiting_renewal" and _source_kind(ctx) == "renewal" and _same_subscription(ctx)


@guard("billing_x06_subscription_awaiting_renewal", "not a paid renewal of a subscription awaiting renewal")
def billing_x06_subscription_awaiting_renewal(ctx: Context) -> bool:
    """Where X06 → S16 renewal_paid."""
    return ctx.state == "awaiting_renewal" and _source_kind(ctx) == "renewal" and _same_subscription(ctx)


@guard("billing_x06_subscription_in_grace", "not a paid renewal of a subscription in grace")
def billing_x06_subscription_in_grace(ctx: Context) -> bool:
    """Where X06 → S19 payment_recovered."""
    return ctx.state == "renewal_grace" and _source_kind(ctx) == "renewal" and _same_subscription(ctx)


@guard("billing_x06_subscription_cancelled_nonpayment", "the subscription was not cancelled for nonpayment")
def billing_x06_subscription_cancelled_nonpayment(ctx: Context) -> bool:
    """Where X06 → S22 reactivate (the nonpayment case, no new charge)."""
    return (
        ctx.state == "cancelled"
        and ctx.data.get("cancellation_reason") == "nonpayment"
        and _source_kind(ctx) == "renewal"
        and _same_subscription(ctx)
    )


@guard("billing_x06_entitlement_payment_hold", "the entitlement has no payment_failed hold")
def billing_x06_entitlement_payment_hold(ctx: Context) -> bool:
    """Where X06 → E09/E10 lift_hold(payment_failed)."""
    return (
        ctx.state == "suspended"
        and "payment_failed" in _strings(ctx.data.get("holds"))
        and _source_kind(ctx) in _ACCESS_KINDS
    )


@guard("billing_x06_entitlement_cancelled_nonpayment", "the entitlement was not cancelled for nonpayment")
def billing_x06_entitlement_cancelled_nonpayment(ctx: Context) -> bool:
    """Where X06 → E19 request_reinstatement (cancelled with reason payment_failed)."""
    return (
        ctx.state == "cancelled"
        and ctx.data.get("cancellation_reason") == "payment_failed"
        and _source_kind(ctx) in _ACCESS_KINDS
    )


@guard("billing_x06_entitlement_reinstate_pending", "no reinstatement for nonpayment is pending")
def billing_x06_entitlement_reinstate_pending(ctx: Context) -> bool:
    """Where X06 → E21 approve_reinstatement (auto-approve once the overdue invoice is paid)."""
    return (
        ctx.state == "reinstate_pending"
        and ctx.data.get("cancellation_reason") == "payment_failed"
        and _source_kind(ctx) in _ACCESS_KINDS
    )


@guard("billing_x06_quota_throttled", "the quota is not throttled or the invoice is not an overage one")
def billing_x06_quota_throttled(ctx: Context) -> bool:
    """Where X06 → Q08 overage_paid."""
    return ctx.state == "throttled" and _source_kind(ctx) in _QUOTA_KINDS


@guard(
    "billing_x06_quota_circuit_breaker", "the quota breaker is not open or the invoice is not a recovery one"
)
def billing_x06_quota_circuit_breaker(ctx: Context) -> bool:
    """Where X06 → Q11 recovery_payment_received."""
    return ctx.state == "circuit_breaker" and _source_kind(ctx) == "recovery"


@guard("billing_x10_account_open", "the account is archived")
def billing_x10_account_open(ctx: Context) -> bool:
    """Where X10: any account that is not archived."""
    return ctx.state != "archived"


@guard("billing_x11_account_lockable", "the account cannot be locked in its state")
def billing_x11_account_lockable(ctx: Context) -> bool:
    """Where X11 → A11/A12 lock(chargeback)."""
    return ctx.state in ("onboarding", "active", "suspended", "under_review", "locked")


@guard("billing_x11_compliance_compliant", "the compliance record is not compliant")
def billing_x11_compliance_compliant(ctx: Context) -> bool:
    """Where X11 → C06 anomaly_detected (only from compliant)."""
    return ctx.state == "compliant"
