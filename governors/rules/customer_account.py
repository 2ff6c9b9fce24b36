"""Guards and updaters of the Customer Account governor (GOVERNORS.md §5).

Facts the service must supply (``Facts.extra``):

* ``fraud_score`` (int 0–100): the current §5.3 score, computed by the scoring job when the fraud
  check timer fires (a payload ``score`` takes precedence).
* ``legal_hold`` (bool): a legal hold exists on the customer's data (A25/A26).
* ``payment_method_validated_at`` (datetime): when the processor validated the new payment method.
* ``identity_verified`` (bool): the caller's identity was verified in this session (sub-operations
  on a locked account).
* ``address_validated`` (bool): the billing address passed the address validation service.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any

from governors.definitions.customer_account import LOCK_REASONS
from governors.facts import Context, GuardFailed, Instance, NeedsInput, as_datetime
from governors.rules.base import declare_effects, guard, updater
from governors.spec import SAME

declare_effects(
    account_onboarding_step="Record an onboarding step; profile_completed asks the KYC provider for papers",
    account_audit_report="Prepare the fraud/compliance audit report for the reviewers",
    account_schedule_data_deletion="Schedule deletion of the customer's data after the retention window",
    account_block_operations="Block the customer's marketplace operations while suspended",
    account_preserve_data="Put the customer's data under a compliance preservation hold",
    account_revoke_access="Revoke every session, API key and token of the customer at once",
    account_force_password_reset="Force a password reset at the next sign-in",
    account_require_mfa="Require multi-factor authentication from now on",
    account_anonymize_pii="Anonymize or delete the customer's PII (GDPR erasure)",
    account_activity_signal="Update the activity baseline, or send the monthly engagement email if inactive",
    account_update_subrecord="Store a validated sub-record (payment method, address, preferences)",
    account_request_fraud_score="Ask the fraud scorer for a score; it answers with fraud_check(score)",
)

# Billing states in which an invoice is closed: paid or archived (settled, resolved, written off).
_INVOICE_CLOSED = frozenset({"payment_received", "archived"})
_INVOICE_DUNNING = frozenset({"payment_failed", "retry_1", "retry_2", "retry_3"})
_DISPUTE_STATES = frozenset({"payment_disputed"})


# --------------------------------------------------------------------------- helpers


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Iterable):
        return [str(v) for v in value]
    return []


def _target(ctx: Context) -> str:
    """The state the row leads to (updaters run before the engine fills in ``ctx.target``)."""
    if ctx.target:
        return ctx.target
    if ctx.row is not None and ctx.row.dst != SAME and not ctx.row.dst.startswith("@"):
        return ctx.row.dst
    return ctx.state or ""


def _given_score(ctx: Context) -> int | None:
    """The score of this event: payload ``score``, else the fact ``fraud_score``."""
    value = ctx.payload.get("score")
    if value is None:
        value = ctx.fact("fraud_score")
    return None if value is None else int(value)


def _score(ctx: Context) -> int:
    value = _given_score(ctx)
    if value is None:
        raise NeedsInput("score")
    return value


def _band_interval_key(ctx: Context, score: int, state: str, monitoring: bool) -> str:
    if state == "suspended" or monitoring or score > int(ctx.setting("customer_account.fraud_medium_max")):
        return "customer_account.fraud_check_every_high"
    if score <= int(ctx.setting("customer_account.fraud_low_max")):
        return "customer_account.fraud_check_every_low"
    return "customer_account.fraud_check_every_medium"


def _schedule(ctx: Context, score: int, state: str, monitoring: bool) -> dict[str, Any]:
    key = _band_interval_key(ctx, score, state, monitoring)
    return {"monitoring_every": str(ctx.setting(key)), "next_fraud_check_at": ctx.now + ctx.duration(key)}


def _lock_code(ctx: Context) -> str:
    """The lock reason code: ``reason_code`` (staff), or ``reason`` from the system and cascades."""
    code = ctx.payload.get("reason_code")
    if code is None and not ctx.by_staff:
        code = ctx.payload.get("reason")
    if code is None or code == "":
        raise NeedsInput("reason_code")
    return str(code)


def _compliance_owned(ctx: Context) -> set[str]:
    return set(_strings(ctx.setting("customer_account.compliance_owned_lock_reasons")))


def open_invoices(invoices: Iterable[Instance], *, allow_written_off: bool) -> list[Instance]:
    """Invoices neither paid nor archived (optionally ignoring ones whose data says written_off)."""
    return [
        i
        for i in invoices
        if i.state not in _INVOICE_CLOSED and not (allow_written_off and i.data.get("written_off"))
    ]


def disputed_invoices(invoices: Iterable[Instance]) -> list[Instance]:
    """Invoices under dispute or chargeback review (B07, B09, B11, linked chargeback cases)."""
    return [i for i in invoices if i.state in _DISPUTE_STATES]


def _names(instances: Iterable[Instance]) -> str:
    return ", ".join(f"{i.subject_id or i.id} ({i.state})" for i in instances)


# --------------------------------------------------------------------------- generic


# --------------------------------------------------------------------------- onboarding / KYC


@updater("account_set_onboarding_flag")
def account_set_onboarding_flag(ctx: Context) -> Mapping[str, Any]:
    """A02: set email_verified or profile_completed (the event's name) with its time."""
    return {ctx.event: True, f"{ctx.event}_at": ctx.now}


@guard(
    "account_onboarding_complete", "the email must be verified and the profile completed before KYC passes"
)
def account_onboarding_complete(ctx: Context) -> bool:
    """A03: email verified and profile completed [I]."""
    missing = [f for f in ("email_verified", "profile_completed") if not ctx.data.get(f)]
    if missing:
        raise GuardFailed(f"still missing: {', '.join(m.replace('_', ' ') for m in missing)}")
    return True


@guard("account_kyc_manual_check", "a manual KYC approval needs a passed document check")
def account_kyc_manual_check(ctx: Context) -> bool:
    """A03 by compliance: the document check result must be given and passed."""
    if not ctx.by_staff:
        return True
    return str(ctx.arg("document_check")) == "passed"


@guard("account_kyc_override", "the provider did not fail this KYC check")
def account_kyc_override(ctx: Context) -> bool:
    """Four-eyes condition of A03: staff accepts KYC although the provider result was failed."""
    return ctx.payload.get("provider_result") == "failed"


@updater("account_clear_kyc_review")
def account_clear_kyc_review(ctx: Context) -> Mapping[str, Any]:
    """A03/A04: the manual review (if any) is over."""
    return {"kyc_manual_review": None}


@guard("account_kyc_in_manual_review", "KYC is not in manual review")
def account_kyc_in_manual_review(ctx: Context) -> bool:
    """Attention of onboarding: the KYC provider asked for a manual review (Ax12)."""
    return bool(ctx.data.get("kyc_manual_review"))


# --------------------------------------------------------------------------- fraud scoring (§5.3)


@guard("account_score_not_high", "the fraud score is above 70: the account must be suspended or reviewed")
def account_score_not_high(ctx: Context) -> bool:
    """A07: score in the low or medium band (≤ 70)."""
    return _score(ctx) <= int(ctx.setting("customer_account.fraud_medium_max"))


@guard("account_score_high", "the fraud score is not in the high band (71–90)")
def account_score_high(ctx: Context) -> bool:
    """A08: score in the high band (71–90): suspend."""
    score = _score(ctx)
    low = int(ctx.setting("customer_account.fraud_medium_max"))
    high = int(ctx.setting("customer_account.fraud_high_max"))
    if score <= low:
        raise GuardFailed(f"fraud score {score} is at most {low}: no action beyond monitoring")
    return score <= high


@guard("account_score_critical", "the fraud score is not in the critical band (91–100)")
def account_score_critical(ctx: Context) -> bool:
    """A09: score in the critical band (≥ 91): review."""
    return _score(ctx) > int(ctx.setting("customer_account.fraud_high_max"))


@guard("account_score_given", "the fraud check needs a score")
def account_score_given(ctx: Context) -> bool:
    """Ax10: a score from the payload or the scoring job (fact ``fraud_score``) is present."""
    return _score(ctx) >= 0


@updater("account_record_score")
def account_record_score(ctx: Context) -> Mapping[str, Any]:
    """Store the checked score and when it was checked."""
    return {"fraud_score": _score(ctx), "fraud_checked_at": ctx.now}


@updater("account_record_optional_score")
def account_record_optional_score(ctx: Context) -> Mapping[str, Any]:
    """Store the score when the detector sent one."""
    score = _given_score(ctx)
    return {} if score is None else {"fraud_score": score, "fraud_checked_at": ctx.now}


@updater("account_schedule_fraud_check")
def account_schedule_fraud_check(ctx: Context) -> Mapping[str, Any]:
    """Next adaptive fraud check: 7 d (≤ 30), 3 d (31–70), daily when high, suspended or under X22."""
    score = _given_score(ctx)
    if score is None:
        score = int(ctx.data.get("fraud_score") or 0)
    return _schedule(ctx, score, _target(ctx), bool(ctx.data.get("fraud_monitoring")))


@updater("account_fraud_monitoring_on")
def account_fraud_monitoring_on(ctx: Context) -> Mapping[str, Any]:
    """X22 on: daily checks; the next check moves forward if it was further away."""
    step = ctx.duration("customer_account.fraud_check_every_high")
    current = as_datetime(ctx.data.get("next_fraud_check_at"))
    due = ctx.now + step if current is None else min(current, ctx.now + step)
    return {
        "fraud_monitoring": True,
        "monitoring_every": str(ctx.setting("customer_account.fraud_check_every_high")),
        "next_fraud_check_at": due,
    }


@updater("account_fraud_monitoring_off")
def account_fraud_monitoring_off(ctx: Context) -> Mapping[str, Any]:
    """X22 off: back to the interval of the score's band."""
    score = int(ctx.data.get("fraud_score") or 0)
    return {"fraud_monitoring": None, **_schedule(ctx, score, ctx.state or "", False)}


# --------------------------------------------------------------------------- abuse, suspension, appeal


@updater("account_add_abuse_report")
def account_add_abuse_report(ctx: Context) -> Mapping[str, Any]:
    """A10/Ax11: keep the report (keyed by report_id) and its evidence."""
    reports = [dict(r) for r in ctx.data.get("abuse_reports", ()) if isinstance(r, Mapping)]
    reports.append({"report_id": str(ctx.arg("report_id")), "evidence": ctx.arg("evidence"), "at": ctx.now})
    return {"abuse_reports": reports}


@guard("account_abuse_report_new", "this abuse report is already recorded")
def account_abuse_report_new(ctx: Context) -> bool:
    """Ax11: report ids are idempotence keys (§5.4)."""
    report_id = str(ctx.arg("report_id"))
    return all(
        r.get("report_id") != report_id for r in ctx.data.get("abuse_reports", ()) if isinstance(r, Mapping)
    )


@guard("account_suspension_cause_cleared", "the cause of the suspension is not cleared")
def account_suspension_cause_cleared(ctx: Context) -> bool:
    """A14: fraud causes need a score ≤ 70; abuse needs a manager's resolution or abuse_resolved."""
    causes = set(_strings(ctx.data.get("suspension_causes", ())))
    if "fraud" in causes:
        score = _given_score(ctx)
        if score is None:
            score = int(ctx.data.get("fraud_score") or 0)
        limit = int(ctx.setting("customer_account.fraud_medium_max"))
        if score > limit:
            raise GuardFailed(f"fraud score {score} is still above {limit}")
    if "abuse" in causes and not ctx.by_staff and ctx.payload.get("abuse_resolved") is not True:
        raise GuardFailed("the abuse report is not resolved yet; a manager must lift the suspension")
    return True


@updater("account_clear_suspension")
def account_clear_suspension(ctx: Context) -> Mapping[str, Any]:
    """A14/A16: the suspension is over."""
    changes: dict[str, Any] = {"suspension_causes": None, "suspended_at": None, "resumed_at": ctx.now}
    score = _given_score(ctx)
    if score is not None:
        changes["fraud_score"] = score
    return changes


@guard("account_appeal_on_file", "no appeal was received for this suspension")
def account_appeal_on_file(ctx: Context) -> bool:
    """A16: an appeal (A15) is on file."""
    return ctx.data.get("appeal_received_at") is not None


# --------------------------------------------------------------------------- lock / unlock


@guard("account_lock_reason_valid", "the lock reason is not one of the allowed reasons")
def account_lock_reason_valid(ctx: Context) -> bool:
    """A11/A12: reason ∈ LOCK_REASONS; staff other than compliance may not claim a compliance lock."""
    code = _lock_code(ctx)
    if code not in LOCK_REASONS:
        raise GuardFailed(f"lock reason {code!r} is not one of: {', '.join(LOCK_REASONS)}")
    if ctx.by_staff and code in _compliance_owned(ctx) and ctx.facts.role != "compliance":
        raise GuardFailed(f"only compliance may lock for {code!r}")
    return True


@guard("account_lock_reason_new", "the account is already locked for this reason")
def account_lock_reason_new(ctx: Context) -> bool:
    """A12: lock reasons are a set; a reason already present changes nothing."""
    return _lock_code(ctx) not in _strings(ctx.data.get("lock_reasons", ()))


@updater("account_start_lock")
def account_start_lock(ctx: Context) -> Mapping[str, Any]:
    """A11: the lock reasons start with this one; remember where the lock came from."""
    return {"lock_reasons": [_lock_code(ctx)], "locked_from": ctx.state}


@updater("account_add_lock_reason")
def account_add_lock_reason(ctx: Context) -> Mapping[str, Any]:
    """A12: add the reason to the set."""
    return {"lock_reasons": sorted({*_strings(ctx.data.get("lock_reasons", ())), _lock_code(ctx)})}


@guard("account_identity_reverified", "identity must be re-verified by phone and document")
def account_identity_reverified(ctx: Context) -> bool:
    """A13 by staff: the verification covered phone and document and names the verifier."""
    if not ctx.by_staff:
        return True
    methods = set(_strings(ctx.arg("verification_method")))
    missing = sorted({"phone", "document"} - methods)
    if missing:
        raise GuardFailed(f"identity re-verification is missing: {', '.join(missing)}")
    return bool(str(ctx.arg("verifier_id")).strip())


@guard("account_no_open_investigation", "a compliance investigation is open: it must be cleared first")
def account_no_open_investigation(ctx: Context) -> bool:
    """A13: Compliance is not in investigation."""
    return ctx.peer_state("compliance_audit") != "investigation"


@guard("account_lock_reasons_cleared", "other lock reasons remain: a person must unlock")
def account_lock_reasons_cleared(ctx: Context) -> bool:
    """A13: no reason left after removal (staff removes all; X24 only compliance-owned ones)."""
    reasons = set(_strings(ctx.data.get("lock_reasons", ())))
    remaining = set() if ctx.by_staff else reasons - _compliance_owned(ctx)
    if remaining:
        raise GuardFailed(f"lock reasons remain: {', '.join(sorted(remaining))}; unlock manually (A13)")
    return True


@updater("account_record_unlock")
def account_record_unlock(ctx: Context) -> Mapping[str, Any]:
    """A13: record the identity re-verification (method, verifier) and the unlock."""
    if not ctx.by_staff:
        return {"unlocked_at": ctx.now, "unlocked_by": "system"}
    return {
        "unlocked_at": ctx.now,
        "unlocked_by": ctx.facts.actor,
        "identity_reverified_at": ctx.now,
        "identity_verification": sorted(_strings(ctx.payload.get("verification_method", ()))),
        "identity_verifier": ctx.payload.get("verifier_id"),
    }


@guard("account_lock_overdue", "the account has been locked for less than 7 days")
def account_lock_overdue(ctx: Context) -> bool:
    """Attention of locked: set by the 7 d timer (Ax8)."""
    return bool(ctx.data.get("lock_overdue"))


# --------------------------------------------------------------------------- review, deactivation


@updater("account_review_timeout_decision")
def account_review_timeout_decision(ctx: Context) -> Mapping[str, Any]:
    """A22 (D-27): the auto-decision bans when the setting says so (the sources' behaviour)."""
    if ctx.setting("customer_account.review_timeout_bans"):
        return {"banned": True, "ban_reason": "review timed out without a decision"}
    return {}


@guard("account_not_banned", "the account is banned and cannot be reactivated")
def account_not_banned(ctx: Context) -> bool:
    """A24: not banned."""
    return not ctx.data.get("banned")


@guard("account_within_reactivation_window", "the reactivation window has passed")
def account_within_reactivation_window(ctx: Context) -> bool:
    """A24: ≤ 30 d since deactivation (≤ 7 d after a KYC failure, the resubmission window)."""
    key = "customer_account.reactivation_window"
    if ctx.data.get("deactivation_cause") == "kyc_failed":
        if ctx.data.get("resubmission_allowed") is False:
            raise GuardFailed("KYC was rejected without resubmission")
        key = "customer_account.kyc_resubmission_window"
    since = as_datetime(ctx.data.get("deactivated_at"))
    window = ctx.duration(key)
    if since is not None and ctx.now - since > window:
        raise GuardFailed(f"deactivated more than {ctx.setting(key)} ago")
    return True


@guard("account_kyc_passed", "KYC never passed: reactivation goes back to onboarding")
def account_kyc_passed(ctx: Context) -> bool:
    """A24 (active branch): KYC passed before."""
    return bool(ctx.data.get("is_verified"))


@guard("account_no_open_dispute", "an invoice is under dispute or chargeback review")
def account_no_open_dispute(ctx: Context) -> bool:
    """A23/A25/A26: no billing instance is in payment_disputed."""
    disputed = disputed_invoices(ctx.peers("billing"))
    if disputed:
        raise GuardFailed(f"open dispute or chargeback: {_names(disputed)}")
    return True


@guard("account_no_open_invoice", "an invoice is still open")
def account_no_open_invoice(ctx: Context) -> bool:
    """A25/A26: every invoice is paid or archived (written-off invoices do not count)."""
    still_open = open_invoices(ctx.peers("billing"), allow_written_off=True)
    if still_open:
        raise GuardFailed(f"open invoices: {_names(still_open)}")
    return True


@guard("account_billing_all_settled", "a billing cycle is not settled")
def account_billing_all_settled(ctx: Context) -> bool:
    """A26: every billing cycle settled (paid or archived, no written-off exception)."""
    still_open = open_invoices(ctx.peers("billing"), allow_written_off=False)
    if still_open:
        raise GuardFailed(f"unsettled billing cycles: {_names(still_open)}")
    return True


@guard("account_no_legal_hold", "a legal hold forbids erasing this customer's data")
def account_no_legal_hold(ctx: Context) -> bool:
    """A25/A26: no legal hold (fact ``legal_hold``, or the compliance record's legal_hold)."""
    return not ctx.fact("legal_hold", False) and not ctx.peer_data("compliance_audit").get("legal_hold")


@guard("account_compliance_settled", "Compliance must be compliant or non_compliant first")
def account_compliance_settled(ctx: Context) -> bool:
    """A25/A26: compliance ∈ {compliant, non_compliant} (no verification, fraud or investigation running)."""
    state = ctx.peer_state("compliance_audit")
    if state not in ("compliant", "non_compliant"):
        raise GuardFailed(f"Compliance is {state or 'missing'}; it must be compliant or non_compliant")
    return True


@guard("account_erasure_checks", "the erasure checks are incomplete")
def account_erasure_checks(ctx: Context) -> bool:
    """A25/A26 by staff: the typed customer id matches and the legal-hold check was done."""
    if not ctx.by_staff:
        return True
    if str(ctx.arg("customer_id")) != str(ctx.instance.customer_id):
        raise GuardFailed("the customer id does not match this account")
    if ctx.arg("legal_hold_checked") is not True:
        raise GuardFailed("confirm that the legal-hold check was done")
    return bool(str(ctx.arg("ownership_verification")).strip())


# --------------------------------------------------------------------------- activity and flags


@updater("account_record_activity")
def account_record_activity(ctx: Context) -> Mapping[str, Any]:
    """A27: remember the last activity or the last engagement email."""
    key = "last_activity_at" if ctx.event == "activity_detected" else "last_engagement_email_at"
    return {key: ctx.now}


@updater("account_set_kyc_reverification")
def account_set_kyc_reverification(ctx: Context) -> Mapping[str, Any]:
    """Ax2 (X20): set or clear the kyc_reverification flag."""
    active = ctx.payload.get("active", True) is not False
    return {
        "kyc_reverification": True if active else None,
        "kyc_reverification_since": ctx.now if active else None,
    }


# --------------------------------------------------------------------------- sub-operations (§5.2)


@guard("account_sub_op_allowed", "a locked account needs identity verification first")
def account_sub_op_allowed(ctx: Context) -> bool:
    """Sub-operations on a locked account only after identity verification (fact ``identity_verified``)."""
    return ctx.state != "locked" or ctx.fact("identity_verified", False) is True


@guard("account_payment_method_validated", "the processor has not validated this payment method in time")
def account_payment_method_validated(ctx: Context) -> bool:
    """Ax13: validated by the processor within 5 min (fact ``payment_method_validated_at``)."""
    at = as_datetime(ctx.fact("payment_method_validated_at"))
    if at is None:
        return False
    return timedelta(0) <= ctx.now - at <= ctx.duration("customer_account.payment_method_validation_window")


@guard("account_payment_method_new", "this payment method is already on file")
def account_payment_method_new(ctx: Context) -> bool:
    """Ax13: must not duplicate an existing method (processor fingerprint)."""
    return str(ctx.arg("fingerprint")) not in _strings(ctx.data.get("payment_method_fingerprints", ()))


@updater("account_add_payment_method")
def account_add_payment_method(ctx: Context) -> Mapping[str, Any]:
    """Ax13: remember the fingerprint; optionally make the method primary."""
    prints = [*_strings(ctx.data.get("payment_method_fingerprints", ())), str(ctx.arg("fingerprint"))]
    changes: dict[str, Any] = {"payment_method_fingerprints": prints, "payment_method_updated_at": ctx.now}
    if ctx.payload.get("make_primary") is True:
        changes["primary_payment_method"] = str(ctx.arg("method_token"))
    return changes


@updater("account_set_comm_prefs")
def account_set_comm_prefs(ctx: Context) -> Mapping[str, Any]:
    """Ax14: a subset of {email, sms, push, none}; "none" alone means no messages."""
    channels = sorted(set(_strings(ctx.arg("channels"))))
    if "none" in channels:
        channels = ["none"]
    return {"comm_prefs": channels, "comm_prefs_updated_at": ctx.now}


@guard("account_address_validated", "the billing address did not pass validation")
def account_address_validated(ctx: Context) -> bool:
    """Ax15: the address validation service accepted it (fact ``address_validated``)."""
    return ctx.fact("address_validated", False) is True


# --------------------------------------------------------------------------- cascade targets (where)


def _holds_of(ctx: Context) -> list[str]:
    return _strings(ctx.data.get("holds", ()))


@guard("account_entitlement_can_take_hold", "the entitlement cannot take this hold")
def account_entitlement_can_take_hold(ctx: Context) -> bool:
    """Where (X12, X14, X15): the entitlement is active, or suspended without this hold (E07/E08)."""
    hold = str(ctx.payload.get("hold"))
    return ctx.state == "active" or (ctx.state == "suspended" and hold not in _holds_of(ctx))


@guard("account_entitlement_has_hold", "the entitlement does not carry this hold")
def account_entitlement_has_hold(ctx: Context) -> bool:
    """Where (X13, X14, X15 lift): the entitlement is suspended with this hold (E09/E10)."""
    return ctx.state == "suspended" and str(ctx.payload.get("hold")) in _holds_of(ctx)


@guard("account_entitlement_is_active", "the entitlement is not active")
def account_entitlement_is_active(ctx: Context) -> bool:
    """Where (X16 → E14 cancel_early)."""
    return ctx.state == "active"


@guard("account_entitlement_is_suspended", "the entitlement is not suspended")
def account_entitlement_is_suspended(ctx: Context) -> bool:
    """Where (X16 → E12 escalate_to_cancellation)."""
    return ctx.state == "suspended"


@guard("account_entitlement_is_pending", "the entitlement is not pending approval")
def account_entitlement_is_pending(ctx: Context) -> bool:
    """Where (X18 → start the approval clock of pending entitlements)."""
    return ctx.state == "pending_approval"


@guard("account_invoice_open", "the invoice is closed")
def account_invoice_open(ctx: Context) -> bool:
    """Where (X12, X13 dunning hold/release): the invoice is neither paid nor archived."""
    return ctx.state not in _INVOICE_CLOSED


@guard("account_invoice_in_dunning", "the invoice is not in the retry ladder")
def account_invoice_in_dunning(ctx: Context) -> bool:
    """Where (X19 → B17): payment_failed or retry_n."""
    return ctx.state in _INVOICE_DUNNING


@guard("account_compliance_open", "the compliance record is in data retention")
def account_compliance_open(ctx: Context) -> bool:
    """Where (X12, X17, X18): the compliance record is not in its terminal state."""
    return ctx.state != "data_retention"


@guard("account_compliance_is_compliant", "the compliance record is not compliant")
def account_compliance_is_compliant(ctx: Context) -> bool:
    """Where (X15, X18 anomaly): "compliance only if it is compliant"."""
    return ctx.state == "compliant"


@guard("account_subscription_closable", "the subscription cannot take account_closed")
def account_subscription_closable(ctx: Context) -> bool:
    """Where (X16 → S26): active, paused, awaiting_renewal, renewal_grace or cancelled."""
    return ctx.state in ("active", "paused", "awaiting_renewal", "renewal_grace", "cancelled")
