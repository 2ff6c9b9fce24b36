"""Guards and updaters of the Compliance & Audit governor (GOVERNORS.md §7).

Facts the service must supply (``Facts.extra``):

* ``fraud_indicators`` (list): fraud indicators the provider or detectors report at verification
  time (C03 needs none; a payload ``fraud_indicators`` takes precedence).
* ``last_suspicious_activity_at`` (datetime or None): the latest suspicious activity seen (C07 needs
  24 h without any).
* ``retention_period_expired`` (bool): the customer's retention period after closure has expired (C17).
* ``legal_hold`` (bool): a legal hold exists on the customer's data (C17; ``legal_hold`` in the data
  counts too).
* ``source_governor`` (str): set by the planner on cascades; "customer_account" means X17 (C17).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from governors.definitions.compliance_audit import BREACH_PHASES
from governors.facts import Context, GuardFailed, as_datetime
from governors.rules.base import declare_effects, guard, updater
from governors.rules.customer_account import disputed_invoices, open_invoices

declare_effects(
    compliance_request_verification="Send a KYC/AML re-verification request and link through the provider",
    compliance_enhanced_monitoring="Switch the customer to enhanced fraud monitoring",
    compliance_throttle_high_risk="Throttle the customer's high-risk transactions",
    compliance_enhanced_audit_logging="Turn on enhanced audit logging for every governor of the customer",
    compliance_incident_ticket="Open an incident ticket for the investigation",
    compliance_regulator_notice="Prepare the regulator notice when the confirmation requires one",
    compliance_anonymize_pii="Anonymise the customer's PII everywhere (registry-driven)",
    compliance_request_fraud_reversal="Queue the reversal of the fraudulent charges for finance (§11 #19)",
    compliance_cold_storage="Move the customer's remaining data to cold storage until retention_until",
)


# --------------------------------------------------------------------------- helpers


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Iterable):
        return [str(v) for v in value]
    return []


def _add_years(moment: datetime, years: int) -> datetime:
    """Calendar years later (29 February becomes 28 February)."""
    try:
        return moment.replace(year=moment.year + years)
    except ValueError:
        return moment.replace(year=moment.year + years, day=28)


def _next_verification(ctx: Context) -> datetime:
    return ctx.now + ctx.duration("compliance_audit.reverification_interval")


def _records(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list | tuple):
        return []
    return [dict(v) for v in value if isinstance(v, Mapping)]


# --------------------------------------------------------------------------- generic


# --------------------------------------------------------------------------- enrolment and KYC


@updater("compliance_enroll")
def compliance_enroll(ctx: Context) -> Mapping[str, Any]:
    """Cx1: frameworks (default GDPR), first re-verification in 365 d, no violations."""
    frameworks = _strings(ctx.payload.get("frameworks")) or _strings(
        ctx.setting("compliance_audit.default_frameworks")
    )
    return {
        "frameworks": sorted(set(frameworks)),
        "enrolled_at": ctx.now,
        "next_verification_at": _next_verification(ctx),
        "violations": [],
    }


@updater("compliance_kyc_verified")
def compliance_kyc_verified(ctx: Context) -> Mapping[str, Any]:
    """Cx3 (X18): onboarding KYC passed; the next re-verification is 365 d away."""
    return {"last_kyc_verified_at": ctx.now, "next_verification_at": _next_verification(ctx)}


@updater("compliance_start_verification")
def compliance_start_verification(ctx: Context) -> Mapping[str, Any]:
    """C01/C02: a fresh verification round (attempt 1)."""
    return {
        "verification_requested_at": ctx.now,
        "verification_attempts": 1,
        "verification_failed_at": None,
        "verification_overdue": None,
        "verification_reason": ctx.payload.get("reason") if ctx.by_staff else "periodic",
    }


@guard("compliance_no_fraud_indicators", "fraud indicators are present: the verification cannot pass")
def compliance_no_fraud_indicators(ctx: Context) -> bool:
    """C03: no fraud indicators (payload ``fraud_indicators``, else fact ``fraud_indicators``)."""
    found = _strings(ctx.payload.get("fraud_indicators") or ctx.fact("fraud_indicators", ()))
    if found:
        raise GuardFailed(f"fraud indicators present: {', '.join(found)}")
    return True


@updater("compliance_verification_passed")
def compliance_verification_passed(ctx: Context) -> Mapping[str, Any]:
    """C03: verified now; next re-verification in 365 d (attempts are kept for the X24 check)."""
    return {
        "verified_at": ctx.now,
        "provider_ref": ctx.payload.get("provider_ref"),
        "next_verification_at": _next_verification(ctx),
        "verification_overdue": None,
        "verification_failed_at": None,
        "non_compliant_cause": None,
    }


@guard("compliance_verification_overdue", "the verification is not overdue")
def compliance_verification_overdue(ctx: Context) -> bool:
    """Attention of verification_pending: open for 21 d (set by Cx8)."""
    return bool(ctx.data.get("verification_overdue"))


@guard("compliance_resubmission_allowed", "a resubmission is not possible now")
def compliance_resubmission_allowed(ctx: Context) -> bool:
    """C05: after a verification failure, ≤ 7 d since it, attempts < 3."""
    if ctx.data.get("non_compliant_cause") != "verification":
        raise GuardFailed("non-compliance is not due to a failed verification")
    failed = as_datetime(ctx.data.get("verification_failed_at"))
    window = ctx.duration("compliance_audit.resubmission_window")
    if failed is not None and ctx.now - failed > window:
        raise GuardFailed(
            f"the resubmission window ({ctx.setting('compliance_audit.resubmission_window')}) has passed"
        )
    attempts = int(ctx.data.get("verification_attempts") or 0)
    limit = int(ctx.setting("compliance_audit.max_verification_attempts"))
    if attempts >= limit:
        raise GuardFailed(f"{attempts} verification attempts used; the limit is {limit}")
    return True


@updater("compliance_count_resubmission")
def compliance_count_resubmission(ctx: Context) -> Mapping[str, Any]:
    """C05: one more attempt; a new provider request."""
    return {
        "verification_attempts": int(ctx.data.get("verification_attempts") or 0) + 1,
        "verification_requested_at": ctx.now,
        "verification_overdue": None,
    }


@guard("compliance_after_resubmission", "the verification passed at the first attempt")
def compliance_after_resubmission(ctx: Context) -> bool:
    """When (X24 on C03): the verification passed after a C05 resubmission."""
    return int(ctx.data.get("verification_attempts") or 0) > 1


@guard("compliance_fraud_score_high", "the fraud score is below the collections hold threshold")
def compliance_fraud_score_high(ctx: Context) -> bool:
    """When (X20): fraud_score ≥ 70 holds collections during re-verification."""
    return int(ctx.data.get("fraud_score") or 0) >= int(ctx.setting("compliance_audit.kyc_hold_fraud_score"))


# --------------------------------------------------------------------------- fraud


@guard("compliance_anomaly_significant", "the anomaly is below the threshold and shows no unusual pattern")
def compliance_anomaly_significant(ctx: Context) -> bool:
    """C06: score ≥ 70, or an unusual pattern (indicators, or a signal from another governor: X11/X15)."""
    score = ctx.payload.get("score")
    if score is not None and int(score) >= int(ctx.setting("compliance_audit.anomaly_score_threshold")):
        return True
    return bool(_strings(ctx.payload.get("indicators"))) or ctx.facts.role == "cascade"


@updater("compliance_record_anomaly")
def compliance_record_anomaly(ctx: Context) -> Mapping[str, Any]:
    """C06: keep the score and indicators; flag for review."""
    changes: dict[str, Any] = {"flagged_at": ctx.now, "indicators": _strings(ctx.payload.get("indicators"))}
    if ctx.payload.get("score") is not None:
        changes["fraud_score"] = int(ctx.payload["score"])
    if ctx.facts.role == "cascade" and ctx.fact("source_governor"):
        changes["flagged_by"] = str(ctx.fact("source_governor"))
    return changes


@guard("compliance_fraud_quiet", "suspicious activity was seen less than 24 h ago")
def compliance_fraud_quiet(ctx: Context) -> bool:
    """C07: 24 h without suspicious activity (since the flag, or the fact ``last_suspicious_activity_at``)."""
    moments = [
        m
        for m in (
            as_datetime(ctx.data.get("flagged_at")),
            as_datetime(ctx.fact("last_suspicious_activity_at")),
        )
        if m is not None
    ]
    if not moments:
        return True
    quiet = ctx.duration("compliance_audit.fraud_quiet_period")
    since = ctx.now - max(moments)
    if since < quiet:
        needed = ctx.setting("compliance_audit.fraud_quiet_period")
        raise GuardFailed(f"last suspicious activity {since} ago; {needed} without any is needed")
    return True


@guard("compliance_enough_fraud_tx", "not enough transactions are flagged fraudulent")
def compliance_enough_fraud_tx(ctx: Context) -> bool:
    """C08: compliance names ≥ 1 transaction; the system needs ≥ 2 ([I])."""
    tx_ids = _strings(ctx.arg("tx_ids"))
    needed = 1 if ctx.by_staff else int(ctx.setting("compliance_audit.fraud_confirm_min_tx"))
    if len(set(tx_ids)) < needed:
        raise GuardFailed(f"{len(set(tx_ids))} fraudulent transaction(s) flagged; {needed} needed")
    return True


@updater("compliance_open_fraud_investigation")
def compliance_open_fraud_investigation(ctx: Context) -> Mapping[str, Any]:
    """C08: the investigation is about these transactions (keyed by their sorted set)."""
    return {
        "fraud_tx_ids": sorted(set(_strings(ctx.arg("tx_ids")))),
        "investigation": {
            "kind": "fraud",
            "opened_at": ctx.now,
            "description": ctx.payload.get("review_notes"),
        },
        "escalated_to_legal_at": None,
    }


# --------------------------------------------------------------------------- investigation, violations


def _breach_incident(ctx: Context, incident_id: str, phase: str) -> dict[str, Any]:
    discovered = as_datetime(ctx.payload.get("discovered_at")) or ctx.now
    return {
        "incident_id": incident_id,
        "phase": phase,
        "discovered_at": discovered,
        "regulator_notice_due": discovered + ctx.duration("compliance_audit.breach_notice_window"),
        "updated_at": ctx.now,
    }


@updater("compliance_open_investigation")
def compliance_open_investigation(ctx: Context) -> Mapping[str, Any]:
    """C09: record the investigation; a data breach also opens a breach incident (GDPR 72 h clock)."""
    kind = str(ctx.arg("kind"))
    changes: dict[str, Any] = {
        "investigation": {"kind": kind, "opened_at": ctx.now, "description": ctx.arg("description")},
        "escalated_to_legal_at": None,
    }
    if kind == "data_breach":
        incidents = _records(ctx.data.get("breach_incidents"))
        incident_id = str(ctx.payload.get("incident_id") or f"{ctx.instance.id}-breach-{len(incidents) + 1}")
        incidents.append(_breach_incident(ctx, incident_id, BREACH_PHASES[0]))
        changes["breach_incidents"] = incidents
    return changes


@guard("compliance_no_violation_confirmed", "violations are on record: confirm them instead (C11)")
def compliance_no_violation_confirmed(ctx: Context) -> bool:
    """C10: no violation is on record."""
    return not _records(ctx.data.get("violations"))


@updater("compliance_close_investigation")
def compliance_close_investigation(ctx: Context) -> Mapping[str, Any]:
    """C10: the investigation is closed with its findings."""
    return {
        "investigation": None,
        "fraud_tx_ids": None,
        "indicators": None,
        "flagged_at": None,
        "escalated_to_legal_at": None,
        "investigation_cleared_at": ctx.now,
        "findings": ctx.payload.get("findings"),
    }


@guard("compliance_violations_found", "the audit found no violations")
def compliance_violations_found(ctx: Context) -> bool:
    """C12: a periodic framework audit found at least one violation."""
    return bool(ctx.arg("violations"))


@updater("compliance_record_violations")
def compliance_record_violations(ctx: Context) -> Mapping[str, Any]:
    """C11/C12: add the violations, each with its deadline (given, or now + 30 d)."""
    deadline = as_datetime(ctx.payload.get("deadline")) or ctx.now + ctx.duration(
        "compliance_audit.violation_deadline"
    )
    framework = ctx.payload.get("framework")
    added: list[dict[str, Any]] = []
    for item in ctx.arg("violations"):
        record = dict(item) if isinstance(item, Mapping) else {"control": str(item)}
        if framework is not None:
            record.setdefault("framework", framework)
        record.setdefault("deadline", deadline)
        record.setdefault("recorded_at", ctx.now)
        added.append(record)
    return {"violations": [*_records(ctx.data.get("violations")), *added], "investigation": None}


@updater("compliance_start_remediation")
def compliance_start_remediation(ctx: Context) -> Mapping[str, Any]:
    """C13: remediation_deadline = now + 30 d."""
    return {
        "remediation_plan": ctx.arg("plan"),
        "remediation_started_at": ctx.now,
        "remediation_deadline": ctx.now + ctx.duration("compliance_audit.remediation_window"),
        "deadline_warned": None,
    }


@updater("compliance_log_case")
def compliance_log_case(ctx: Context) -> Mapping[str, Any]:
    """C14: log the appeal or enforcement step."""
    log = _records(ctx.data.get("case_log"))
    log.append({"event": ctx.event, "at": ctx.now, "by": ctx.facts.actor, "note": ctx.payload.get("reason")})
    return {"case_log": log}


@guard("compliance_remediation_verified", "the remediation is not verified")
def compliance_remediation_verified(ctx: Context) -> bool:
    """C15: every step verified; a regulator sign-off reference when the regulator was notified."""
    if ctx.arg("steps_verified") is not True:
        raise GuardFailed("every remediation step must be verified first")
    if ctx.data.get("regulator_notified") and not ctx.payload.get("signoff_ref"):
        raise GuardFailed("the regulator was notified: give the regulator's sign-off reference")
    return True


@updater("compliance_clear_violations")
def compliance_clear_violations(ctx: Context) -> Mapping[str, Any]:
    """C15: violations cleared, remediation closed."""
    return {
        "violations": [],
        "remediation_completed_at": ctx.now,
        "remediation_plan": None,
        "remediation_deadline": None,
        "deadline_warned": None,
        "non_compliant_cause": None,
        "regulator_notified": None,
        "signoff_ref": ctx.payload.get("signoff_ref"),
    }


@guard("compliance_deadline_warned", "the remediation deadline is more than 7 days away")
def compliance_deadline_warned(ctx: Context) -> bool:
    """Attention of remediation_in_progress: deadline − 7 d reached (Cx5)."""
    return bool(ctx.data.get("deadline_warned"))


# --------------------------------------------------------------------------- retention (C17)


@guard("compliance_retention_trigger", "retention needs an archived account, an expired period or an erasure")
def compliance_retention_trigger(ctx: Context) -> bool:
    """C17: account archived (X17), retention period expired, or an approved erasure (erasure_ref)."""
    if (
        ctx.peer_state("customer_account") == "archived"
        or ctx.fact("source_governor") == "customer_account"
        or ctx.fact("retention_period_expired", False) is True
    ):
        return True
    if ctx.by_staff:
        return bool(str(ctx.arg("erasure_ref")).strip())
    return False


@guard("compliance_no_money_case_open", "a dispute, chargeback or refund is still open")
def compliance_no_money_case_open(ctx: Context) -> bool:
    """C17: no invoice in dispute/chargeback; no entitlement refund in flight or awaiting approval."""
    disputed = disputed_invoices(ctx.peers("billing"))
    if disputed:
        raise GuardFailed(f"{len(disputed)} invoice(s) under dispute or chargeback review")
    refunds = [
        e
        for e in ctx.peers("entitlement")
        if e.state == "refund_issued"
        or (e.state == "cancelled" and int(e.data.get("refund_due_cents") or 0) > 0)
    ]
    if refunds:
        raise GuardFailed(f"{len(refunds)} entitlement refund(s) still open")
    return True


@guard("compliance_billing_settled", "billing is not settled")
def compliance_billing_settled(ctx: Context) -> bool:
    """C17: every invoice paid or archived (written-off ones count as settled)."""
    still_open = open_invoices(ctx.peers("billing"), allow_written_off=True)
    if still_open:
        raise GuardFailed(f"{len(still_open)} invoice(s) still open")
    return True


@guard("compliance_no_legal_hold", "a legal hold forbids starting retention")
def compliance_no_legal_hold(ctx: Context) -> bool:
    """C17: no legal hold (data ``legal_hold`` or fact ``legal_hold``)."""
    return not ctx.data.get("legal_hold") and not ctx.fact("legal_hold", False)


@updater("compliance_start_retention")
def compliance_start_retention(ctx: Context) -> Mapping[str, Any]:
    """C17: retention_until = now + the longest period of the customer's frameworks (GDPR 7 y)."""
    by_framework = ctx.setting("compliance_audit.retention_years")
    default = int(ctx.setting("compliance_audit.retention_years_default"))
    frameworks = _strings(ctx.data.get("frameworks"))
    years = max([int(by_framework.get(f, default)) for f in frameworks] or [default])
    return {
        "retention_started_at": ctx.now,
        "retention_until": _add_years(ctx.now, years),
        "retention_years": years,
        "erasure_ref": ctx.payload.get("erasure_ref"),
    }


# --------------------------------------------------------------------------- self-events


@updater("compliance_record_security_event")
def compliance_record_security_event(ctx: Context) -> Mapping[str, Any]:
    """Cx2 (X12): append the security event to the record.

    The record keeps the latest ``compliance_audit.security_events_kept`` events and a count of them
    all: the instance row is live state, rewritten by every event of the governor, and a list that
    grew with every lock would make each later event of an old customer slower. Every event stays in
    the transition history and the audit chain, which are the full record.
    """
    events = _records(ctx.data.get("security_events"))
    events.append({"kind": ctx.payload.get("kind") or "security_event", "at": ctx.now})
    kept = max(1, int(ctx.setting("compliance_audit.security_events_kept")))
    count = ctx.data.get("security_event_count")
    total = (int(count) if isinstance(count, int) else len(events) - 1) + 1
    return {"security_events": events[-kept:], "security_event_count": total}


@guard("compliance_breach_phase_advances", "a breach incident only moves forward through its phases")
def compliance_breach_phase_advances(ctx: Context) -> bool:
    """Cx7: a new incident starts at detected; a known one moves to a later phase."""
    incident_id = str(ctx.arg("incident_id"))
    phase = str(ctx.arg("phase"))
    current = next(
        (i for i in _records(ctx.data.get("breach_incidents")) if i.get("incident_id") == incident_id), None
    )
    if current is None:
        if phase != BREACH_PHASES[0]:
            raise GuardFailed(f"incident {incident_id} is unknown: it must start at {BREACH_PHASES[0]}")
        return True
    before = str(current.get("phase"))
    if before in BREACH_PHASES and BREACH_PHASES.index(phase) <= BREACH_PHASES.index(before):
        raise GuardFailed(f"incident {incident_id} is already at {before}")
    return True


@updater("compliance_record_breach_phase")
def compliance_record_breach_phase(ctx: Context) -> Mapping[str, Any]:
    """Cx7: open the incident (72 h notice clock) or move it to the new phase."""
    incident_id = str(ctx.arg("incident_id"))
    phase = str(ctx.arg("phase"))
    incidents = _records(ctx.data.get("breach_incidents"))
    for record in incidents:
        if record.get("incident_id") == incident_id:
            record["phase"] = phase
            record["updated_at"] = ctx.now
            break
    else:
        incidents.append(_breach_incident(ctx, incident_id, phase))
    return {"breach_incidents": incidents}


# --------------------------------------------------------------------------- cascade targets (where)


@guard("compliance_account_open", "the account is archived")
def compliance_account_open(ctx: Context) -> bool:
    """Where (X20, X22): the account is not archived."""
    return ctx.state != "archived"


@guard("compliance_account_lockable", "the account cannot take a compliance lock")
def compliance_account_lockable(ctx: Context) -> bool:
    """Where (X21, X23): A11's states, or locked without the compliance reason yet (A12)."""
    if ctx.state in ("onboarding", "active", "suspended", "under_review"):
        return True
    return ctx.state == "locked" and "compliance" not in _strings(ctx.data.get("lock_reasons", ()))


@guard("compliance_account_unlockable", "the account has lock reasons only a person may clear")
def compliance_account_unlockable(ctx: Context) -> bool:
    """Where (X24): locked, and every lock reason is compliance-owned."""
    owned = set(_strings(ctx.setting("customer_account.compliance_owned_lock_reasons")))
    reasons = set(_strings(ctx.data.get("lock_reasons", ())))
    return ctx.state == "locked" and reasons <= owned


@guard("compliance_invoice_open", "the invoice is closed")
def compliance_invoice_open(ctx: Context) -> bool:
    """Where (X20, X21, X24 dunning hold/release): neither paid nor archived."""
    return ctx.state not in ("payment_received", "archived")


@guard("compliance_invoice_not_archived", "the invoice is archived")
def compliance_invoice_not_archived(ctx: Context) -> bool:
    """Where (X22): any invoice that is not archived."""
    return ctx.state != "archived"


@guard("compliance_entitlement_not_archived", "the entitlement is already archived")
def compliance_entitlement_not_archived(ctx: Context) -> bool:
    """Where (X25 → E28)."""
    return ctx.state != "archived"


@guard("compliance_subscription_not_archived", "the subscription is already archived")
def compliance_subscription_not_archived(ctx: Context) -> bool:
    """Where (X25 → retention_archive)."""
    return ctx.state != "archived"
