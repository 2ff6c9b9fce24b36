"""Effect handlers and adapters, called directly (no queue): dispatch, money, KYC, notices, alerts."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from governors.rules.base import EFFECTS
from tests.jobs.conftest import deliver_invoice, instance_of, issued_invoice, new_customer
from webapp.adapters.kyc import SandboxKyc, TransientKycError
from webapp.adapters.payments import IdempotencyKeyReused, SandboxProcessor, TransientProcessorError
from webapp.audit import verify_tenant
from webapp.db import Database
from webapp.effects import HANDLERS, UnknownEffect, execute
from webapp.models import AuditEntry, Customer, GovernorInstance, OutboxMessage, TransitionRecord
from webapp.models.background import Alert, EffectRun, Notification, SandboxCharge
from webapp.runtime import Runtime
from webapp.services.transitions import Actor, EventRequest, fire_event

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _outbox(
    rt: Runtime,
    effect: str,
    args: dict[str, object],
    *,
    instance_id: str | None = None,
    customer_id: str | None = None,
    governor: str | None = None,
    job: str = "run_effect",
) -> int:
    with rt.db.session() as s:
        row = OutboxMessage(
            job_id=f"test:{effect}:{instance_id}",
            tenant_id="t-1",
            customer_id=customer_id,
            instance_id=instance_id,
            governor=governor,
            job=job,
            args={"effect": effect, "args": args} if job == "run_effect" else args,
            created_at=NOW,
        )
        s.add(row)
        s.flush()
        return row.id


def _count(db: Database, model: type, *where: object) -> int:
    with db.session() as s:
        return int(s.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def test_every_declared_effect_has_a_handler() -> None:
    assert len(EFFECTS) == 69
    assert set(HANDLERS) == set(EFFECTS), (set(EFFECTS) - set(HANDLERS), set(HANDLERS) - set(EFFECTS))


def test_unknown_effect_fails_loudly_and_records_nothing(rt: Runtime) -> None:
    outbox_id = _outbox(rt, "teleport_customer", {})
    with pytest.raises(UnknownEffect, match="teleport_customer"):
        execute(rt, outbox_id, now=NOW)
    assert _count(rt.db, EffectRun) == 0


def test_sandbox_processor_outcome_follows_the_card_token(db: Database) -> None:
    processor = SandboxProcessor(db)
    ok = processor.charge("k-visa", "c-1", 2999, "USD", "tok_visa")
    assert (ok.status, ok.amount_cents, ok.replayed) == ("succeeded", 2999, False)
    assert ok.reference.startswith("ch_")
    declined = processor.charge("k-nsf", "c-1", 2999, "USD", "tok_decline_insufficient_funds")
    assert (declined.status, declined.decline_code) == ("declined", "insufficient_funds")
    unknown = processor.charge("k-unknown", "c-1", 2999, "USD", "tok_nonsense")
    assert (unknown.status, unknown.decline_code) == ("declined", "invalid_payment_method")
    with pytest.raises(TransientProcessorError):
        processor.charge("k-timeout", "c-1", 2999, "USD", "tok_timeout")
    with db.session() as s:
        assert sorted(s.scalars(select(SandboxCharge.idempotency_key))) == ["k-nsf", "k-unknown", "k-visa"]


def test_sandbox_idempotency_survives_a_restart(db: Database, pg_url: str) -> None:
    first = SandboxProcessor(db).charge("inv-1:attempt:0", "c-1", 1500, "EUR", "tok_visa")
    restarted = Database(pg_url)  # a new process's engine: nothing cached in memory
    try:
        again = SandboxProcessor(restarted).charge("inv-1:attempt:0", "c-1", 1500, "EUR", "tok_visa")
        with pytest.raises(IdempotencyKeyReused):
            SandboxProcessor(restarted).charge("inv-1:attempt:0", "c-1", 1600, "EUR", "tok_visa")
    finally:
        restarted.dispose()
    assert again.replayed and again.reference == first.reference and again.status == "succeeded"
    assert _count(db, SandboxCharge) == 1


def test_sandbox_refunds(db: Database) -> None:
    processor = SandboxProcessor(db)
    good = processor.charge("k-1", "c-1", 5000, "USD", "tok_visa")
    refused = processor.charge("k-2", "c-1", 5000, "USD", "tok_refund_fail")
    assert processor.refund("r-1", "c-1", 2000, "USD", good.reference).status == "succeeded"
    failed = processor.refund("r-2", "c-1", 2000, "USD", refused.reference)
    assert (failed.status, failed.failure_code) == ("failed", "refund_failed")
    assert processor.refund("r-1", "c-1", 2000, "USD", good.reference).replayed
    with pytest.raises(ValueError, match="positive"):
        processor.refund("r-3", "c-1", 0, "USD")


def test_sandbox_kyc_is_deterministic_by_reference() -> None:
    kyc = SandboxKyc()
    assert kyc.verify("k", "c-1", "onboarding").status == "passed"
    assert kyc.verify("k", "c-kyc_fail-2", "onboarding").status == "failed"
    assert kyc.verify("k", "c-kyc_review-3", "onboarding").status == "manual_review"
    assert kyc.verify("k", "c-1", "x").request_id == kyc.verify("k", "c-9", "y").request_id
    with pytest.raises(TransientKycError):
        kyc.verify("k", "c-kyc_timeout", "onboarding")


def test_charge_is_taken_once_and_fed_back_as_payment_received(rt: Runtime) -> None:
    customer = new_customer(rt, "c-1", now=NOW)
    invoice = issued_invoice(rt, customer, "tok_visa", NOW)
    (charge,) = deliver_invoice(rt, invoice, NOW)
    first = execute(rt, charge, now=NOW)
    second = execute(rt, charge, now=NOW)
    assert (first.effect, first.status, first.already_done) == ("billing_charge", "done", False)
    assert second.already_done and second.status == "done"
    assert first.outbox_ids, "payment_received emits revenue recognition and a receipt"
    with rt.db.session() as s:
        inv = s.get(GovernorInstance, invoice)
        assert inv is not None and inv.state == "payment_received" and inv.data["paid_cents"] == 2999
        (sandbox,) = s.scalars(select(SandboxCharge)).all()
        assert (sandbox.amount_cents, sandbox.token, sandbox.idempotency_key) == (
            2999,
            "tok_visa",
            f"{invoice}:attempt:0",
        )
        assert inv.data["last_payment_id"] == sandbox.reference
        paid = s.scalars(select(TransitionRecord).where(TransitionRecord.event == "payment_received")).all()
        assert [(p.instance_id, p.actor, p.role) for p in paid] == [(invoice, "system", "sys")]
        run = s.get(EffectRun, s.get(OutboxMessage, charge).job_id)  # type: ignore[union-attr]
        assert run is not None and run.detail["attempt_key"] == f"{invoice}:attempt:0"
        assert run.detail["fired"] == [{"event": "payment_received", "instance_id": invoice, "status": 200}]


def test_declined_card_feeds_payment_declined_with_the_code(rt: Runtime) -> None:
    customer = new_customer(rt, "c-1", now=NOW)
    invoice = issued_invoice(rt, customer, "tok_decline_insufficient_funds", NOW)
    (charge,) = deliver_invoice(rt, invoice, NOW)
    result = execute(rt, charge, now=NOW)
    assert result.status == "done" and "insufficient_funds" in result.summary
    with rt.db.session() as s:
        inv = s.get(GovernorInstance, invoice)
        assert inv is not None and inv.state == "payment_failed"
        assert inv.data["last_decline"]["code"] == "insufficient_funds"
        assert inv.data["failed_attempts"] == 1


def test_processor_timeout_raises_so_the_job_is_retried_and_records_nothing(rt: Runtime) -> None:
    customer = new_customer(rt, "c-1", now=NOW)
    invoice = issued_invoice(rt, customer, "tok_timeout", NOW)
    (charge,) = deliver_invoice(rt, invoice, NOW)
    with pytest.raises(TransientProcessorError):
        execute(rt, charge, now=NOW)
    assert _count(rt.db, EffectRun) == 0
    assert _count(rt.db, SandboxCharge) == 0
    with rt.db.session() as s:
        assert s.get(GovernorInstance, invoice).state == "payment_pending"  # type: ignore[union-attr]


def test_charge_taken_but_refused_by_the_invoice_raises_a_critical_alert(rt: Runtime) -> None:
    customer = new_customer(rt, "c-1", now=NOW)
    invoice = issued_invoice(rt, customer, "tok_visa", NOW)
    (charge,) = deliver_invoice(rt, invoice, NOW)
    with rt.db.session() as s:  # the customer disputes before the processor's answer is recorded
        disputed = fire_event(
            s,
            EventRequest(
                "t-1", "dispute_opened", invoice, {"dispute_id": "dp-1", "reason": "customer disputes"}
            ),
            Actor("u-1", "support"),
            NOW,
        )
    assert disputed.status == 200, disputed.body
    result = execute(rt, charge, now=NOW)
    assert result.status == "rejected"
    with rt.db.session() as s:
        (alert,) = s.scalars(select(Alert)).all()
        assert alert.level == "critical" and "was taken but the invoice refused it" in alert.message
        assert s.get(GovernorInstance, invoice).state == "payment_disputed"  # type: ignore[union-attr]


def test_reverification_verdict_is_fed_back_to_compliance(rt: Runtime) -> None:
    for customer, expected in (("c-ok", "compliant"), ("c-kyc_fail-1", "non_compliant")):
        new_customer(rt, customer, now=NOW)
        with rt.db.session() as s:
            record = instance_of(s, customer, "compliance_audit")
            result = fire_event(
                s,
                EventRequest("t-1", "request_verification", record.id, {"reason": "annual re-verification"}),
                Actor("u-c", "compliance"),
                NOW,
            )
        assert result.status == 200, result.body
        (effect,) = [i for i in result.outbox_ids if _effect_of(rt, i) == "compliance_request_verification"]
        execute(rt, effect, now=NOW)
        with rt.db.session() as s:
            assert instance_of(s, customer, "compliance_audit").state == expected


def _effect_of(rt: Runtime, outbox_id: int) -> str:
    with rt.db.session() as s:
        row = s.get(OutboxMessage, outbox_id)
        assert row is not None
        return str(row.args.get("effect"))


def test_profile_completion_asks_the_kyc_provider_and_activates_the_account(rt: Runtime) -> None:
    customer = new_customer(rt, "c-1", now=NOW, active=False)
    with rt.db.session() as s:
        account = instance_of(s, customer, "customer_account")
        sys = Actor("system", "sys")
        fire_event(s, EventRequest("t-1", "email_verified", account.id), sys, NOW)
        done = fire_event(s, EventRequest("t-1", "profile_completed", account.id), sys, NOW)
    (step,) = [i for i in done.outbox_ids if _effect_of(rt, i) == "account_onboarding_step"]
    result = execute(rt, step, now=NOW)
    assert result.status == "done", result
    with rt.db.session() as s:
        acct = instance_of(s, customer, "customer_account")
        assert acct.state == "active" and acct.data["kyc_request_id"].startswith("kyc_")


def test_notices_audit_notes_and_alerts_are_written_once(rt: Runtime) -> None:
    new_customer(rt, "c-1", now=NOW)
    with rt.db.session() as s:
        account = instance_of(s, "c-1", "customer_account").id
    notice = _outbox(
        rt,
        "notify_staff",
        {"queue": "finance", "template": "dispute_opened"},
        instance_id=account,
        customer_id="c-1",
        governor="customer_account",
    )
    note = _outbox(
        rt,
        "audit_note",
        {"note": "dunning hold changed", "event": "dunning_hold"},
        instance_id=account,
        customer_id="c-1",
        governor="customer_account",
    )
    alert = _outbox(
        rt,
        "raise_alert",
        {"level": "critical", "message": "cascade X07 failed"},
        instance_id=account,
        customer_id="c-1",
        job="raise_alert",
    )
    for outbox_id in (notice, note, alert, notice, note, alert):
        execute(rt, outbox_id, now=NOW)
    with rt.db.session() as s:
        (n,) = s.scalars(select(Notification)).all()
        assert (n.audience, n.queue, n.template, n.customer_id) == (
            "staff",
            "finance",
            "dispute_opened",
            "c-1",
        )
        notes = s.scalars(select(AuditEntry).where(AuditEntry.action == "effect.audit_note")).all()
        assert len(notes) == 1 and '"note":"dunning hold changed"' in notes[0].payload
        assert verify_tenant(s, "t-1").ok
        (a,) = s.scalars(select(Alert)).all()
        assert (a.level, a.message, a.instance_id) == ("critical", "cascade X07 failed", account)


def test_every_handler_runs_against_a_real_customer(rt: Runtime) -> None:
    """Each of the 69 effects, run with empty args on an instance of its governor, ends cleanly."""
    from governors.registry import GOVERNORS

    customer = new_customer(rt, "c-1", now=NOW)
    invoice = issued_invoice(rt, customer, "tok_visa", NOW)
    owners: dict[str, str] = {}
    for gov in GOVERNORS.values():
        for t in gov.transitions:
            for e in t.effects:
                owners.setdefault(e.name, gov.name)
    with rt.db.session() as s:
        instances = {
            r.governor: r.id
            for r in s.scalars(
                select(GovernorInstance).where(
                    (GovernorInstance.customer_id == customer) | (GovernorInstance.governor == "catalog")
                )
            )
        }
    instances["billing"] = invoice
    statuses = {}
    for effect in sorted(EFFECTS):
        governor = owners[effect]
        outbox_id = _outbox(
            rt, effect, {}, instance_id=instances[governor], customer_id=customer, governor=governor
        )
        statuses[effect] = execute(rt, outbox_id, now=NOW).status
    assert set(statuses.values()) <= {"done", "skipped", "rejected"}, statuses
    assert statuses["billing_charge"] == "skipped"  # no method in the args: nothing is charged
    assert statuses["notify_customer"] == "done"
    assert _count(rt.db, EffectRun) == 69
    with rt.db.session() as s:
        erased = s.get(Customer, customer)
        assert erased is not None and erased.erased_at is not None and erased.email.endswith("@invalid")
