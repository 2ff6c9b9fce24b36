"""Effect handlers: what each of the governors' 69 declared effects does when its outbox row runs.

A handler is given the effect's call (its outbox row, detached) and returns an ``Outcome``: a summary
plus what to write, namely feedback events to apply through the one transition service (as the
system), notices for customers or staff queues, audit notes, an erasure. Talking to the outside world
(payment processor, KYC provider) happens inside the handler, always under an idempotency key derived
from the outbox job id, so a handler that runs twice asks the same question twice and gets the same
answer. ``execute`` then writes the outcome and the completion marker (``effect_runs``, keyed by the
job id) in one transaction, so a retried or redelivered job finds the marker and does nothing again.

Effect families:
  money         billing_charge, billing_process_refund, entitlement_process_refund (payment adapter)
  kyc           compliance_request_verification, account_onboarding_step (KYC adapter)
  fraud         account_request_fraud_score (fraud-scoring adapter; answers with fraud_check(score))
  feedback      catalog_run_validation, catalog_propagate, quota_run_reset_job, mt_pool_fan_out
  notification  notify_customer, notify_staff, tickets and notices (``notifications`` table)
  audit         audit_note (an extra entry in the tenant's hash chain)
  privacy       account_anonymize_pii, compliance_anonymize_pii (the customer row is erased)
  the rest      access, ledger, document, data, quota, compliance, catalog, infrastructure: recorded
                in ``effect_runs`` with the parameters the enforcement layer applies.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from webapp import audit
from webapp.adapters import Adapters, adapters_for
from webapp.models import GovernorInstance, OutboxMessage
from webapp.models.background import Alert, EffectRun, Notification
from webapp.runtime import Runtime
from webapp.services.instances import jsonable
from webapp.services.transitions import SYSTEM, EventRequest, TransitionError, fire_event, preview


class UnknownEffect(LookupError):
    """An outbox row names an effect no handler knows: a programming error, never retried quietly."""


@dataclass(frozen=True)
class EffectCall:
    """One outbox row, detached from its session: the work a job carries out."""

    outbox_id: int
    job_id: str
    job: str
    effect: str
    args: Mapping[str, Any]
    tenant_id: str
    customer_id: str | None
    instance_id: str | None
    governor: str | None
    transition_id: int | None

    def run_record(
        self, family: str, status: str, summary: str, detail: dict[str, Any], attempts: int, now: datetime
    ) -> EffectRun:
        """The completion marker of this call (``effect_runs``, keyed by its job id)."""
        return EffectRun(
            job_id=self.job_id,
            outbox_id=self.outbox_id,
            tenant_id=self.tenant_id,
            customer_id=self.customer_id,
            instance_id=self.instance_id,
            governor=self.governor,
            effect=self.effect,
            family=family,
            status=status,
            summary=summary,
            detail=detail,
            attempts=attempts,
            finished_at=now,
        )

    @classmethod
    def of(cls, row: OutboxMessage) -> EffectCall:
        """The call described by an outbox row."""
        body = dict(row.args or {})
        # run_effect rows nest the effect's own args; raise_alert rows carry level and message at the top.
        args = dict(body.get("args") or {}) if row.job == "run_effect" else body
        return cls(
            outbox_id=row.id,
            job_id=row.job_id,
            job=row.job,
            effect=str(body.get("effect") or row.job),
            args=args,
            tenant_id=row.tenant_id,
            customer_id=row.customer_id,
            instance_id=row.instance_id,
            governor=row.governor,
            transition_id=body.get("transition_id"),
        )


@dataclass(frozen=True)
class InstanceView:
    """A governor instance as handlers read it (no session attached)."""

    id: str
    tenant_id: str
    customer_id: str | None
    governor: str
    subject_id: str | None
    state: str
    data: Mapping[str, Any]


@dataclass(frozen=True)
class Fire:
    """A feedback event for the transition service, applied as the system with a derived key."""

    event: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    instance_id: str | None = None  # default: the instance whose transition emitted the effect
    tenant_id: str | None = None  # default: the call's tenant
    alert_if_refused: str | None = None  # a refusal here means money moved without a record


@dataclass(frozen=True)
class Notice:
    """A notice to the customer or to a staff queue."""

    audience: str  # "customer" or "staff"
    template: str
    queue: str | None = None
    channel: str = "email"
    args: Mapping[str, Any] = field(default_factory=dict)
    customer_id: str | None = None  # default: the call's customer


@dataclass(frozen=True)
class Outcome:
    """What a handler decided: written by ``execute`` together with the completion marker."""

    summary: str
    status: str = "done"
    detail: Mapping[str, Any] = field(default_factory=dict)
    fires: tuple[Fire, ...] = ()
    notices: tuple[Notice, ...] = ()
    audit_notes: tuple[Mapping[str, Any], ...] = ()
    erase_customer: bool = False


@dataclass
class EffectEnv:
    """What a handler may use: the runtime, the adapters, the time, read-only instance lookups."""

    runtime: Runtime
    adapters: Adapters
    now: datetime

    def instance(self, instance_id: str | None) -> InstanceView | None:
        """The instance as it is now (read in a short transaction of its own)."""
        if instance_id is None:
            return None
        with self.runtime.db.session() as session:
            row = session.get(GovernorInstance, instance_id)
            return None if row is None else _view(row)

    def instances(self, governor: str) -> list[InstanceView]:
        """Every instance of one governor (for fan-outs), ordered by customer then id."""
        with self.runtime.db.session() as session:
            rows = session.scalars(
                select(GovernorInstance)
                .where(GovernorInstance.governor == governor)
                .order_by(GovernorInstance.customer_id, GovernorInstance.id)
            )
            return [_view(r) for r in rows]

    def session(self) -> Any:
        """A unit of work on the database (for previews)."""
        return self.runtime.db.session()


def _view(row: GovernorInstance) -> InstanceView:
    return InstanceView(
        id=row.id,
        tenant_id=row.tenant_id,
        customer_id=row.customer_id,
        governor=row.governor,
        subject_id=row.subject_id,
        state=row.state,
        data=dict(row.data or {}),
    )


Handler = Callable[[EffectEnv, EffectCall], Outcome]


@dataclass(frozen=True)
class EffectSpec:
    """A dispatch-table entry: the effect's family and its handler."""

    family: str
    handler: Handler


@dataclass(frozen=True)
class Execution:
    """What running one outbox row did."""

    job_id: str
    effect: str
    status: str
    summary: str
    already_done: bool = False
    outbox_ids: tuple[int, ...] = ()


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _key(call: EffectCall, suffix: str = "") -> str:
    """The upstream idempotency key of a call: stable across every retry of the job."""
    return f"{call.job_id}{suffix}"


# --------------------------------------------------------------------------- money


def billing_charge(env: EffectEnv, call: EffectCall) -> Outcome:
    """Charge the invoice total on the method in args with the attempt key; report the result."""
    method = call.args.get("method")
    if not method:
        return Outcome("no payment method on file: nothing charged", status="skipped")
    invoice = env.instance(call.instance_id)
    if invoice is None:
        raise LookupError(f"invoice {call.instance_id} is gone")
    amount = _int(invoice.data.get("total_cents"))
    if amount <= 0:
        return Outcome("the invoice total is 0: nothing charged", status="skipped")
    attempt_key = str(call.args.get("key") or _key(call))
    result = env.adapters.payments.charge(
        attempt_key,
        call.customer_id or invoice.tenant_id,
        amount,
        str(invoice.data.get("currency") or "USD"),
        str(method),
    )
    detail = {
        "attempt": call.args.get("attempt"),
        "attempt_key": attempt_key,
        "amount_cents": amount,
        "currency": result.currency,
        "payment_id": result.reference,
        "result": result.status,
        "decline_code": result.decline_code,
        "replayed": result.replayed,
    }
    if result.ok:
        fire = Fire(
            "payment_received",
            {"amount_cents": amount, "payment_id": result.reference, "attempt_key": attempt_key},
            alert_if_refused=f"payment {result.reference} of {amount} cents was taken but the invoice "
            "refused it; refund or apply it by hand",
        )
        return Outcome(f"charged {amount} cents ({result.reference})", detail=detail, fires=(fire,))
    fire = Fire(
        "payment_declined",
        {"decline_code": result.decline_code, "decline_message": result.decline_message},
    )
    return Outcome(f"charge of {amount} cents declined: {result.decline_code}", detail=detail, fires=(fire,))


def billing_process_refund(env: EffectEnv, call: EffectCall) -> Outcome:
    """Refund through the processor with the refund key (skipped when the amount is 0)."""
    amount = _int(call.args.get("amount_cents"))
    if amount <= 0:
        return Outcome("refund of 0 cents: nothing to send", status="skipped")
    invoice = env.instance(call.instance_id)
    data = invoice.data if invoice is not None else {}
    key = str(call.args.get("key") or _key(call))
    result = env.adapters.payments.refund(
        key,
        call.customer_id or call.tenant_id,
        amount,
        str(data.get("currency") or "USD"),
        str(data["last_payment_id"]) if data.get("last_payment_id") else None,
    )
    detail = _refund_detail(key, amount, result.reference, result.status)
    if result.ok:
        return Outcome(f"refunded {amount} cents ({result.reference})", detail=detail)
    args = {**detail, "code": result.failure_code}
    notice = Notice("staff", "refund_failed", queue="finance", channel="ticket", args=args)
    summary = f"refund of {amount} cents failed: {result.failure_code}"
    return Outcome(summary, detail=detail, notices=(notice,))


def _refund_detail(key: str, amount: int, refund_id: str, status: str) -> dict[str, Any]:
    return {"refund_key": key, "amount_cents": amount, "refund_id": refund_id, "result": status}


def entitlement_process_refund(env: EffectEnv, call: EffectCall) -> Outcome:
    """Billing process_refund under the key (entitlement_id, refund_request_id); report settlement."""
    amount = _int(call.args.get("amount_cents"))
    request_id = call.args.get("refund_request_id")
    entitlement_id = call.args.get("entitlement_id") or call.instance_id
    if amount <= 0 or not request_id:
        return Outcome("no refund amount or request: nothing to send", status="skipped")
    entitlement = env.instance(str(entitlement_id))
    data = entitlement.data if entitlement is not None else {}
    key = f"{entitlement_id}:{request_id}"
    result = env.adapters.payments.refund(
        key, call.customer_id or call.tenant_id, amount, str(data.get("currency") or "USD"), None
    )
    detail = _refund_detail(key, amount, result.reference, result.status)
    if result.ok:
        fire = Fire(
            "refund_completed",
            {"refund_request_id": request_id, "settlement_ref": result.reference},
            instance_id=str(entitlement_id),
        )
        return Outcome(f"refunded {amount} cents ({result.reference})", detail=detail, fires=(fire,))
    fire = Fire("refund_failed", {"refund_request_id": request_id}, instance_id=str(entitlement_id))
    return Outcome(f"refund of {amount} cents failed: {result.failure_code}", detail=detail, fires=(fire,))


# --------------------------------------------------------------------------- KYC


def compliance_request_verification(env: EffectEnv, call: EffectCall) -> Outcome:
    """Ask the KYC provider to re-verify the customer; feed the verdict back to Compliance."""
    reference = call.customer_id or call.tenant_id
    result = env.adapters.kyc.verify(_key(call), reference, "reverification")
    detail = {"provider_ref": result.request_id, "result": result.status, "reason": result.reason}
    if result.status == "passed":
        fire = Fire(
            "verification_passed",
            {"provider_ref": result.request_id, "fraud_indicators": list(result.fraud_indicators)},
        )
        return Outcome(f"re-verification passed ({result.request_id})", detail=detail, fires=(fire,))
    if result.status == "failed":
        fire = Fire("verification_failed", {"provider_ref": result.request_id})
        return Outcome(f"re-verification failed: {result.reason}", detail=detail, fires=(fire,))
    notice = Notice("staff", "kyc_manual_review", queue="compliance", args=detail)
    return Outcome("re-verification needs a manual review", detail=detail, notices=(notice,))


def account_onboarding_step(env: EffectEnv, call: EffectCall) -> Outcome:
    """Record an onboarding step; a completed profile sends the customer's papers to the KYC provider."""
    step = str(call.args.get("step") or "")
    if step != "profile_completed":
        return Outcome(f"onboarding step recorded: {step}", detail={"step": step})
    reference = call.customer_id or call.tenant_id
    result = env.adapters.kyc.verify(_key(call), reference, "onboarding")
    detail = {"step": step, "provider_request_id": result.request_id, "result": result.status}
    if result.status == "passed":
        fire = Fire("kyc_passed", {"provider_request_id": result.request_id, "provider_result": "passed"})
    elif result.status == "failed":
        fire = Fire("kyc_failed", {"resubmission_allowed": True, "reason": result.reason})
    else:
        fire = Fire("kyc_manual_review", {"provider_request_id": result.request_id})
    return Outcome(f"KYC {result.status} ({result.request_id})", detail=detail, fires=(fire,))


# --------------------------------------------------------------------------- fraud scoring


def account_request_fraud_score(env: EffectEnv, call: EffectCall) -> Outcome:
    """The adaptive fraud check fell due: ask the scorer, and feed ``fraud_check(score)`` back (A07–A09)."""
    reference = call.customer_id or call.tenant_id
    result = env.adapters.fraud.score(_key(call), reference)
    detail = {"provider_ref": result.request_id, "score": result.score, "indicators": list(result.indicators)}
    fire = Fire("fraud_check", {"score": result.score})
    return Outcome(f"fraud score {result.score} ({result.request_id})", detail=detail, fires=(fire,))


# --------------------------------------------------------------------------- feedback to governors


def catalog_run_validation(env: EffectEnv, call: EffectCall) -> Outcome:
    """Run the schema, reference and pricing checks (the catalog's own guards) and report the verdict."""
    inst = env.instance(call.instance_id)
    if inst is None:
        raise LookupError(f"catalog instance {call.instance_id} is gone")
    with env.session() as session:
        what_if = preview(
            session,
            EventRequest(tenant_id=inst.tenant_id, event="validation_succeeded", instance_id=inst.id),
            SYSTEM,
            env.now,
            settings=env.runtime.settings,
        )
    rejection = what_if.get("rejection")
    if rejection is None:
        return Outcome("validation passed", detail={"valid": True}, fires=(Fire("validation_succeeded"),))
    if rejection["code"] == "invalid_transition":
        return Outcome(f"the SKU is {inst.state}, no longer in validation", status="skipped")
    errors = {"code": rejection["code"], "message": rejection["message"]}
    return Outcome(
        f"validation failed: {rejection['message']}",
        detail={"valid": False, "errors": errors},
        fires=(Fire("validation_failed", {"errors": errors}),),
    )


def catalog_propagate(env: EffectEnv, call: EffectCall) -> Outcome:
    """Push the revision to cache, CDN, flags and marketplace (keyed by SKU and version); report it."""
    sku, version = call.args.get("sku_id"), call.args.get("version")
    targets = ["cache", "cdn", "feature_flags", "marketplace"]
    detail = {"sku_id": sku, "version": version, "targets": targets, "key": f"{sku}@{version}"}
    return Outcome(
        f"revision {sku}@{version} propagated to {', '.join(targets)}",
        detail=detail,
        fires=(Fire("propagation_succeeded"),),
    )


def quota_run_reset_job(env: EffectEnv, call: EffectCall) -> Outcome:
    """Clear the customer's counters and flags, then report reset_completed."""
    detail = {"cleared": ["counters", "throttle", "breaker", "warning"]}
    return Outcome("quota counters and flags cleared", detail=detail, fires=(Fire("reset_completed"),))


def mt_pool_fan_out(env: EffectEnv, call: EffectCall) -> Outcome:
    """Send the pool-wide event to every other tenant of the pool, once per pool_event_id (D-36)."""
    pool_id, pool_event_id = call.args.get("pool_id"), call.args.get("pool_event_id")
    origin = call.args.get("origin_tenant_id")
    event = str(call.args.get("event") or "emergency_trigger")
    if not pool_id or not pool_event_id:
        return Outcome("no pool or pool event id: nothing to fan out", status="skipped")
    # Ordered by customer: every fan-out locks customers in the same order, so two never deadlock.
    targets = [
        i
        for i in env.instances("multi_tenant")
        if i.data.get("pool_id") == pool_id and i.customer_id != origin and i.id != call.instance_id
    ]
    fires = tuple(
        Fire(
            event,
            {"pool_event_id": pool_event_id, "origin_tenant_id": origin},
            instance_id=t.id,
            tenant_id=t.tenant_id,
        )
        for t in targets
    )
    detail = {"pool_id": pool_id, "pool_event_id": pool_event_id, "targets": [t.id for t in targets]}
    return Outcome(f"{event} sent to {len(targets)} tenant(s) of {pool_id}", detail=detail, fires=fires)


# --------------------------------------------------------------------------- notifications, audit, privacy


def notify_customer(env: EffectEnv, call: EffectCall) -> Outcome:
    """Send the customer a notice (template named in args)."""
    template = str(call.args.get("template") or "generic")
    extra = {k: v for k, v in call.args.items() if k != "template"}
    notice = Notice("customer", template, args=extra)
    return Outcome(f"customer notice {template}", detail={"template": template}, notices=(notice,))


def notify_staff(env: EffectEnv, call: EffectCall) -> Outcome:
    """Alert a staff queue (queue named in args)."""
    queue = str(call.args.get("queue") or "support")
    template = str(call.args.get("template") or "generic")
    extra = {k: v for k, v in call.args.items() if k not in ("queue", "template")}
    notice = Notice("staff", template, queue=queue, channel="queue", args=extra)
    return Outcome(f"{queue} queue notified: {template}", detail={"queue": queue}, notices=(notice,))


def _ticket(queue: str, template: str) -> Handler:
    """A handler opening a ticket in ``queue`` (the args may name another queue or template)."""

    def handler(env: EffectEnv, call: EffectCall) -> Outcome:
        q = str(call.args.get("queue") or queue)
        t = str(call.args.get("template") or template)
        extra = {k: v for k, v in call.args.items() if k not in ("queue", "template")}
        notice = Notice("staff", t, queue=q, channel="ticket", args=extra)
        return Outcome(f"ticket {t} opened in {q}", detail={"queue": q, "template": t}, notices=(notice,))

    handler.__doc__ = f"Open a {template} ticket in the {queue} queue."
    return handler


def compliance_regulator_notice(env: EffectEnv, call: EffectCall) -> Outcome:
    """Prepare the regulator notice when the confirmation requires one."""
    if not call.args.get("required"):
        return Outcome("no regulator notice required", status="skipped")
    notice = Notice("staff", "regulator_notice_draft", queue="compliance", channel="ticket")
    return Outcome("regulator notice prepared for compliance", notices=(notice,))


def entitlement_open_refund_request(env: EffectEnv, call: EffectCall) -> Outcome:
    """Queue the refund request for finance (no-op at 0)."""
    amount = _int(call.args.get("amount_cents"))
    if amount <= 0:
        return Outcome("no refund due", status="skipped")
    notice = Notice(
        "staff", "refund_request", queue="finance", channel="ticket", args={"amount_cents": amount}
    )
    return Outcome(f"refund request of {amount} cents queued for finance", notices=(notice,))


def catalog_holder_notices(env: EffectEnv, call: EffectCall) -> Outcome:
    """Send every holder of the SKU the notice of the applied change."""
    sku = env.instance(call.instance_id)
    if sku is None or sku.subject_id is None:
        return Outcome("SKU unknown: no holders to notify", status="skipped")
    change = sku.data.get("applied_change")
    holders = sorted(
        {
            (i.customer_id, i.tenant_id)
            for i in env.instances("entitlement")
            if i.subject_id == sku.subject_id and i.customer_id and i.state not in ("archived", "cancelled")
        }
    )
    notices = tuple(
        Notice("customer", "catalog_change", args={"sku_id": sku.subject_id, "change": change}, customer_id=c)
        for c, _tenant in holders
    )
    return Outcome(
        f"{len(notices)} holder(s) of {sku.subject_id} notified",
        detail={"sku_id": sku.subject_id, "holders": len(notices)},
        notices=notices,
    )


def account_activity_signal(env: EffectEnv, call: EffectCall) -> Outcome:
    """Update the activity baseline, or send the monthly engagement email when the customer is inactive."""
    signal = str(call.args.get("signal") or "")
    if "inactive" in signal:
        notice = Notice("customer", "engagement_reminder", args={"signal": signal})
        return Outcome("engagement email sent", detail={"signal": signal}, notices=(notice,))
    return Outcome(f"activity baseline updated ({signal})", detail={"signal": signal})


def account_audit_report(env: EffectEnv, call: EffectCall) -> Outcome:
    """Prepare the fraud/compliance audit report and hand it to the reviewers."""
    cause = str(call.args.get("cause") or "review")
    notice = Notice("staff", "audit_report_ready", queue="compliance", channel="queue", args={"cause": cause})
    return Outcome(f"audit report prepared ({cause})", detail={"cause": cause}, notices=(notice,))


def compliance_request_fraud_reversal(env: EffectEnv, call: EffectCall) -> Outcome:
    """Queue the reversal of the fraudulent charges for finance."""
    tx_ids = list(call.args.get("tx_ids") or [])
    notice = Notice("staff", "fraud_reversal", queue="finance", channel="ticket", args={"tx_ids": tx_ids})
    return Outcome(f"reversal of {len(tx_ids)} charge(s) queued for finance", notices=(notice,))


def audit_note(env: EffectEnv, call: EffectCall) -> Outcome:
    """Write an extra audit entry (beyond the transition's own)."""
    note = dict(call.args)
    note["transition_id"] = call.transition_id
    return Outcome(f"audit note: {call.args.get('note', '')}", audit_notes=(note,))


def anonymize_pii(env: EffectEnv, call: EffectCall) -> Outcome:
    """Erase the customer's name and email (GDPR erasure); the history keeps ids only."""
    if call.customer_id is None:
        return Outcome("no customer to erase", status="skipped")
    return Outcome(f"customer {call.customer_id} erased", erase_customer=True)


# --------------------------------------------------------------------------- recorded operational effects


def _recorded(summary: str) -> Handler:
    """A handler that records the instruction for the enforcement layer (flags, limits, pools)."""

    def handler(env: EffectEnv, call: EffectCall) -> Outcome:
        params = {k: v for k, v in call.args.items() if v is not None}
        suffix = f" ({json.dumps(params, sort_keys=True, default=str)})" if params else ""
        return Outcome(summary + suffix, detail={"applied": params})

    handler.__doc__ = summary
    return handler


def billing_render_invoice(env: EffectEnv, call: EffectCall) -> Outcome:
    """Render the invoice document and keep its digest (the PDF is produced from exactly these fields)."""
    invoice = env.instance(call.instance_id)
    data = dict(invoice.data) if invoice is not None else {}
    fields = {k: data.get(k) for k in ("amount_cents", "tax_cents", "total_cents", "currency", "issued_at")}
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()
    return Outcome(f"invoice rendered (sha256 {digest[:12]})", detail={"fields": fields, "sha256": digest})


def _ledger(entry: str | None = None) -> Handler:
    """A handler appending an entry to the accounting ledger (effect_runs is the ledger's journal)."""

    def handler(env: EffectEnv, call: EffectCall) -> Outcome:
        name = str(call.args.get("entry") or entry or call.effect)
        amount = _int(call.args.get("amount_cents"))
        extra = {k: v for k, v in call.args.items() if k != "entry"}
        detail = {"entry": name, "amount_cents": amount, **extra}
        return Outcome(f"ledger: {name} {amount} cents", detail=detail)

    handler.__doc__ = f"Append a {entry or 'named'} entry to the accounting ledger."
    return handler


# --------------------------------------------------------------------------- the dispatch table

HANDLERS: dict[str, EffectSpec] = {
    # money
    "billing_charge": EffectSpec("money", billing_charge),
    "billing_process_refund": EffectSpec("money", billing_process_refund),
    "entitlement_process_refund": EffectSpec("money", entitlement_process_refund),
    # KYC
    "compliance_request_verification": EffectSpec("kyc", compliance_request_verification),
    "account_onboarding_step": EffectSpec("kyc", account_onboarding_step),
    # fraud scoring
    "account_request_fraud_score": EffectSpec("fraud", account_request_fraud_score),
    # feedback to the governors
    "catalog_run_validation": EffectSpec("feedback", catalog_run_validation),
    "catalog_propagate": EffectSpec("feedback", catalog_propagate),
    "quota_run_reset_job": EffectSpec("feedback", quota_run_reset_job),
    "mt_pool_fan_out": EffectSpec("feedback", mt_pool_fan_out),
    # notifications and tickets
    "notify_customer": EffectSpec("notification", notify_customer),
    "notify_staff": EffectSpec("notification", notify_staff),
    "billing_open_ticket": EffectSpec("notification", _ticket("support", "billing_ticket")),
    "compliance_incident_ticket": EffectSpec("notification", _ticket("compliance", "incident")),
    "compliance_regulator_notice": EffectSpec("notification", compliance_regulator_notice),
    "compliance_request_fraud_reversal": EffectSpec("notification", compliance_request_fraud_reversal),
    "entitlement_open_refund_request": EffectSpec("notification", entitlement_open_refund_request),
    "catalog_holder_notices": EffectSpec("notification", catalog_holder_notices),
    "account_activity_signal": EffectSpec("notification", account_activity_signal),
    "account_audit_report": EffectSpec("notification", account_audit_report),
    # audit and privacy
    "audit_note": EffectSpec("audit", audit_note),
    "account_anonymize_pii": EffectSpec("privacy", anonymize_pii),
    "compliance_anonymize_pii": EffectSpec("privacy", anonymize_pii),
    # ledger and documents
    "billing_ledger_entry": EffectSpec("ledger", _ledger()),
    "billing_recognise_revenue": EffectSpec("ledger", _ledger("revenue_recognised")),
    "billing_final_receipt": EffectSpec("ledger", _ledger("final_receipt")),
    "entitlement_ledger_entry": EffectSpec("ledger", _ledger("refund_settled")),
    "billing_render_invoice": EffectSpec("document", billing_render_invoice),
    # access (feature flags, sessions, credentials)
    "entitlement_grant_access": EffectSpec("access", _recorded("SKU feature flags enabled")),
    "entitlement_revoke_access": EffectSpec("access", _recorded("SKU feature flags disabled")),
    "entitlement_refresh_features": EffectSpec("access", _recorded("feature flags re-synced with the tier")),
    "account_revoke_access": EffectSpec("access", _recorded("every session, API key and token revoked")),
    "account_block_operations": EffectSpec("access", _recorded("marketplace operations blocked")),
    "account_force_password_reset": EffectSpec("access", _recorded("password reset forced at next sign-in")),
    "account_require_mfa": EffectSpec("access", _recorded("multi-factor authentication required")),
    "account_update_subrecord": EffectSpec("access", _recorded("account sub-record stored")),
    # data lifecycle
    "account_preserve_data": EffectSpec("data", _recorded("data put under a preservation hold")),
    "account_schedule_data_deletion": EffectSpec("data", _recorded("data deletion scheduled")),
    "compliance_cold_storage": EffectSpec("data", _recorded("remaining data moved to cold storage")),
    "subscription_freeze": EffectSpec("data", _recorded("subscription record made read-only")),
    "subscription_prepare_deletion": EffectSpec("data", _recorded("subscription data marked for deletion")),
    "catalog_freeze": EffectSpec("data", _recorded("SKU record made read-only")),
    # quota enforcement
    "quota_activate_burst": EffectSpec("quota", _recorded("burst allowance activated")),
    "quota_apply_limits": EffectSpec("quota", _recorded("effective limits pushed to enforcement")),
    "quota_apply_throttle": EffectSpec("quota", _recorded("requests throttled with Retry-After")),
    "quota_clear_warning": EffectSpec("quota", _recorded("quota warning banner cleared")),
    "quota_lift_throttle_and_breaker": EffectSpec("quota", _recorded("throttle and circuit breaker lifted")),
    "quota_open_breaker": EffectSpec("quota", _recorded("circuit breaker opened")),
    "quota_prepare_reset": EffectSpec("quota", _recorded("quota reset prepared for approval")),
    "quota_reset_soft_counters": EffectSpec("quota", _recorded("soft usage counters reset")),
    "quota_start_metering": EffectSpec("quota", _recorded("overage metering started")),
    "quota_stop_metering": EffectSpec("quota", _recorded("overage metering stopped")),
    # compliance controls
    "compliance_enhanced_audit_logging": EffectSpec("compliance", _recorded("enhanced audit logging on")),
    "compliance_enhanced_monitoring": EffectSpec("compliance", _recorded("enhanced fraud monitoring on")),
    "compliance_throttle_high_risk": EffectSpec("compliance", _recorded("high-risk transactions throttled")),
    # catalog publication
    "catalog_announce": EffectSpec("catalog", _recorded("live revision announced")),
    "catalog_badge": EffectSpec("catalog", _recorded("featured badge updated")),
    "catalog_resume_sales": EffectSpec("catalog", _recorded("purchases re-enabled and SKU republished")),
    "catalog_stop_sales": EffectSpec("catalog", _recorded("new purchases stopped")),
    # multi-tenant infrastructure
    "mt_abort_migration": EffectSpec("infrastructure", _recorded("workload migration aborted")),
    "mt_apply_allocation": EffectSpec("infrastructure", _recorded("pool allocation applied")),
    "mt_breaker": EffectSpec("infrastructure", _recorded("tenant circuit breaker set")),
    "mt_cascade_measures": EffectSpec("infrastructure", _recorded("cascade-prevention measures on")),
    "mt_emergency_measures": EffectSpec("infrastructure", _recorded("emergency measures on")),
    "mt_lift_measures": EffectSpec("infrastructure", _recorded("protective measures lifted")),
    "mt_migrate_workloads": EffectSpec("infrastructure", _recorded("workloads migrating")),
    "mt_ramp_up": EffectSpec("infrastructure", _recorded("capacity ramping up")),
    "mt_restart_workloads": EffectSpec("infrastructure", _recorded("workloads restarted")),
    "mt_stop_workloads": EffectSpec("infrastructure", _recorded("workloads stopped")),
}
"""Every effect the governors declare (governors.rules.base.EFFECTS), with its family and handler."""


def handler_for(effect: str) -> EffectSpec:
    """The dispatch entry of ``effect``; an unknown name raises UnknownEffect."""
    try:
        return HANDLERS[effect]
    except KeyError:
        raise UnknownEffect(f"no handler for effect {effect!r}") from None


# --------------------------------------------------------------------------- execution


def execute(runtime: Runtime, outbox_id: int, *, now: datetime | None = None, attempt: int = 1) -> Execution:
    """Carry out one outbox row exactly once (a row already carried out is a no-op)."""
    now = now or datetime.now(UTC)
    with runtime.db.session() as session:
        row = session.get(OutboxMessage, outbox_id)
        if row is None:
            raise LookupError(f"outbox row {outbox_id} does not exist")
        call = EffectCall.of(row)
        done = session.get(EffectRun, call.job_id)
        if done is not None:
            return Execution(call.job_id, call.effect, done.status, done.summary, already_done=True)
    if call.job == "raise_alert":
        return _raise_alert(runtime, call, now)
    if call.job != "run_effect":
        raise UnknownEffect(f"outbox row {outbox_id} names an unknown job {call.job!r}")
    spec = handler_for(call.effect)
    env = EffectEnv(runtime, adapters_for(runtime), now)
    outcome = spec.handler(env, call)
    return _record(runtime, call, spec.family, outcome, now, attempt)


def _record(
    runtime: Runtime, call: EffectCall, family: str, outcome: Outcome, now: datetime, attempt: int
) -> Execution:
    """Write the outcome and the completion marker in one transaction."""
    try:
        with runtime.db.session() as session:
            marker = call.run_record(family, outcome.status, outcome.summary, {}, attempt, now)
            # Claim the job first: a concurrent twin blocks on this key and then fails on it.
            session.add(marker)
            session.flush()
            # Feedback events first: they lock customers and instances before the audit head, the order
            # the transition service uses, so the erasure and notes below cannot deadlock with it.
            fired, outbox_ids, status = _apply_fires(session, runtime, call, outcome, now)
            if outcome.erase_customer and call.customer_id:
                _erase(session, call.customer_id, now)
            for notice in outcome.notices:
                session.add(
                    Notification(
                        job_id=call.job_id,
                        tenant_id=call.tenant_id,
                        customer_id=notice.customer_id or call.customer_id,
                        instance_id=call.instance_id,
                        audience=notice.audience,
                        queue=notice.queue,
                        channel=notice.channel,
                        template=notice.template,
                        args=jsonable(notice.args),
                        created_at=now,
                    )
                )
            for note in outcome.audit_notes:
                audit.append(
                    session,
                    call.tenant_id,
                    actor=SYSTEM.id,
                    role=SYSTEM.role,
                    action="effect.audit_note",
                    occurred_at=now,
                    customer_id=call.customer_id,
                    instance_id=call.instance_id,
                    payload=jsonable(note),
                )
            marker.status = status if outcome.status == "done" else outcome.status
            marker.detail = jsonable({**outcome.detail, "fired": fired})
    except IntegrityError:
        with runtime.db.session() as session:
            twin = session.get(EffectRun, call.job_id)
        if twin is None:
            raise
        return Execution(call.job_id, call.effect, twin.status, twin.summary, already_done=True)
    return Execution(call.job_id, call.effect, marker.status, outcome.summary, outbox_ids=tuple(outbox_ids))


def _apply_fires(
    session: Session, runtime: Runtime, call: EffectCall, outcome: Outcome, now: datetime
) -> tuple[list[dict[str, Any]], list[int], str]:
    fired: list[dict[str, Any]] = []
    outbox_ids: list[int] = []
    status = "done"
    for n, fire in enumerate(outcome.fires):
        instance_id = fire.instance_id or call.instance_id
        if instance_id is None:
            raise LookupError(f"{call.effect}: no instance to send {fire.event} to")
        request = EventRequest(
            tenant_id=fire.tenant_id or call.tenant_id,
            event=fire.event,
            instance_id=instance_id,
            payload=dict(fire.payload),
            idempotency_key=f"{call.job_id}:{n}",
        )
        try:
            result = fire_event(session, request, SYSTEM, now, settings=runtime.settings)
        except TransitionError as exc:
            fired.append(
                {"event": fire.event, "instance_id": instance_id, "status": exc.status, "code": exc.code}
            )
            status = "rejected"
            continue
        entry: dict[str, Any] = {"event": fire.event, "instance_id": instance_id, "status": result.status}
        if not result.ok:
            # The governor moved on (or refuses): not an error of the job, so it is not retried.
            entry["code"] = result.body.get("error", {}).get("code")
            status = "rejected"
            if fire.alert_if_refused:
                session.add(
                    Alert(
                        job_id=f"{call.job_id}:refused:{n}",
                        tenant_id=call.tenant_id,
                        customer_id=call.customer_id,
                        instance_id=instance_id,
                        governor=call.governor,
                        level="critical",
                        message=f"{fire.alert_if_refused} ({entry['code']})",
                        created_at=now,
                    )
                )
        fired.append(entry)
        outbox_ids.extend(result.outbox_ids)
    return fired, outbox_ids, status


def _erase(session: Session, customer_id: str, now: datetime) -> None:
    # Every PII column, not just the customer row (registry-driven; see webapp.services.erasure).
    from webapp.services.erasure import run_erasure_effect

    run_erasure_effect(session, customer_id, now)


def _raise_alert(runtime: Runtime, call: EffectCall, now: datetime) -> Execution:
    """Record a critical alert (a must-apply cascade failed) once per outbox row."""
    level = str(call.args.get("level") or "critical")
    message = str(call.args.get("message") or "alert")
    try:
        with runtime.db.session() as session:
            # A raise_alert row names no effect of its own: the call's effect is the job, "raise_alert".
            session.add(call.run_record("alert", "done", message, {"level": level}, 1, now))
            session.flush()
            session.add(
                Alert(
                    job_id=call.job_id,
                    tenant_id=call.tenant_id,
                    customer_id=call.customer_id,
                    instance_id=call.instance_id,
                    governor=call.governor,
                    level=level,
                    message=message,
                    created_at=now,
                )
            )
    except IntegrityError:
        return Execution(call.job_id, "raise_alert", "done", message, already_done=True)
    return Execution(call.job_id, "raise_alert", "done", message)


def record_failure(runtime: Runtime, outbox_id: int, error: str, attempts: int, now: datetime) -> None:
    """Mark an outbox row as failed for good (its retries are used up), so the console shows it."""
    with runtime.db.session() as session:
        row = session.get(OutboxMessage, outbox_id)
        if row is None or session.get(EffectRun, row.job_id) is not None:
            return
        call = EffectCall.of(row)
        family = HANDLERS[call.effect].family if call.effect in HANDLERS else "unknown"
        session.add(call.run_record(family, "failed", error[:500], {"error": error[-4000:]}, attempts, now))


__all__ = [
    "HANDLERS",
    "EffectCall",
    "EffectSpec",
    "Execution",
    "Outcome",
    "UnknownEffect",
    "execute",
    "handler_for",
    "record_failure",
]
