"""Payment reconciliation (B08): the settlement import, the daily reconcile job and finance's force-reconcile.

Invoices are paid the real way: the charge effect runs inline (fakeredis, ``is_async=False``) against the
sandbox processor, whose ledger is then read back as its settlement report.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import fakeredis
import pytest
from rq import Queue
from sqlalchemy import func, select, update

from tests.jobs.conftest import deliver_invoice, issued_invoice, make_runtime, new_customer, utcnow
from webapp.adapters import adapters_for
from webapp.db import Database
from webapp.jobs import after_commit, install_runtime
from webapp.models import GovernorInstance, ProcessorCursor, ProcessorRecord, SandboxCharge, TransitionRecord
from webapp.runtime import Runtime
from webapp.services.reconciliation import import_settlements, reconcile_due
from webapp.services.transitions import SYSTEM, Actor, EventRequest, fire_event

DAY = timedelta(days=1)
FINANCE = Actor("fin-1", "finance")


@pytest.fixture
def rt(db: Database, pg_url: str) -> Runtime:
    """A runtime on the test database whose jobs run inline on fakeredis."""
    runtime = make_runtime(pg_url, db, None, "reconciliation-tests")
    runtime.extras.update(
        queue=Queue("inline", connection=fakeredis.FakeRedis(), is_async=False), atomic_unique=False
    )
    install_runtime(runtime)
    return runtime


def paid_invoice(
    rt: Runtime, customer: str, now: datetime, token: str = "tok_visa", amount: int = 2999
) -> str:
    """An invoice charged by the real charge effect (sandbox processor) and so in payment_received."""
    new_customer(rt, customer, now=now)
    invoice = issued_invoice(rt, customer, token, now, amount=amount)
    after_commit(rt, deliver_invoice(rt, invoice, now))
    return invoice


def invoice_row(rt: Runtime, invoice: str) -> GovernorInstance:
    with rt.db.session() as s:
        row = s.get(GovernorInstance, invoice)
        assert row is not None
        s.expunge(row)
        return row


def records(rt: Runtime) -> int:
    with rt.db.session() as s:
        return int(s.scalar(select(func.count()).select_from(ProcessorRecord)) or 0)


# --------------------------------------------------------------------------- import


def test_import_stores_each_settlement_line_once(rt: Runtime) -> None:
    now = utcnow()
    paid = paid_invoice(rt, "c-1", now)
    declined = paid_invoice(rt, "c-2", now, token="tok_decline_card_declined")
    assert invoice_row(rt, paid).state == "payment_received"
    assert invoice_row(rt, declined).state == "payment_failed"
    later = now + timedelta(minutes=5)  # past the settlement lag

    first = import_settlements(rt, later, page_size=1)
    assert (first.pages, first.lines, first.imported) == (2, 2, 2)
    with rt.db.session() as s:
        lines = {
            r.customer_ref: (r.kind, r.status, r.amount_cents, r.currency)
            for r in s.scalars(select(ProcessorRecord))
        }
        charge_ref = invoice_row(rt, paid).data["payment_ids"][0]
        assert (
            s.scalar(select(ProcessorRecord.status).where(ProcessorRecord.reference == charge_ref))
            == "succeeded"
        )
    assert lines == {"c-1": ("charge", "succeeded", 2999, "USD"), "c-2": ("charge", "declined", 2999, "USD")}

    again = import_settlements(rt, later)
    assert (again.lines, again.imported) == (0, 0)
    # Even from the start (a lost cursor) nothing is imported twice: lines are unique by reference.
    with rt.db.session() as s:
        s.execute(update(ProcessorCursor).values(cursor=None))
    replay = import_settlements(rt, later)
    assert (replay.lines, replay.imported) == (2, 0)
    assert records(rt) == 2


def test_import_leaves_lines_younger_than_the_settlement_lag_for_the_next_run(rt: Runtime) -> None:
    now = utcnow()
    paid_invoice(rt, "c-1", now)
    assert import_settlements(rt, now).imported == 0
    assert import_settlements(rt, now + timedelta(minutes=5)).imported == 1


# --------------------------------------------------------------------------- the reconcile job


def test_paid_invoice_older_than_a_day_is_reconciled_by_the_job(rt: Runtime) -> None:
    now = utcnow()
    invoice = paid_invoice(rt, "c-1", now)
    import_settlements(rt, now + timedelta(minutes=5))

    young = reconcile_due(rt, now + timedelta(hours=23))
    assert young.as_dict() == {"checked": 0, "reconciled": 0, "mismatched": 0, "refused": 0}
    assert invoice_row(rt, invoice).state == "payment_received"

    report = reconcile_due(rt, now + DAY + timedelta(minutes=1))
    assert report.as_dict() == {"checked": 1, "reconciled": 1, "mismatched": 0, "refused": 0}
    row = invoice_row(rt, invoice)
    assert row.state == "archived"
    assert row.data["receipt_hash"] and row.data["reconciled_at"]
    with rt.db.session() as s:
        record = s.scalars(
            select(TransitionRecord).where(
                TransitionRecord.instance_id == invoice, TransitionRecord.event == "accounting_reconciled"
            )
        ).one()
        assert (record.actor, record.role, record.to_state) == ("system", "sys", "archived")
    # Idempotent: a second pass finds nothing to do.
    assert reconcile_due(rt, now + DAY + timedelta(minutes=2)).checked == 0


def test_invoice_whose_settlement_is_not_imported_yet_waits(rt: Runtime) -> None:
    now = utcnow()
    invoice = paid_invoice(rt, "c-1", now)
    report = reconcile_due(rt, now + 2 * DAY)
    assert (report.checked, report.reconciled, report.mismatched) == (1, 0, 1)
    assert invoice_row(rt, invoice).state == "payment_received"


def test_mismatched_amount_is_left_for_finance(rt: Runtime) -> None:
    now = utcnow()
    invoice = paid_invoice(rt, "c-1", now)
    ok = paid_invoice(rt, "c-2", now)
    charge_ref = invoice_row(rt, invoice).data["payment_ids"][0]
    # The processor settled 2,900 cents where the invoice recorded a payment of 2,999.
    with rt.db.session() as s:
        s.execute(
            update(SandboxCharge).where(SandboxCharge.reference == charge_ref).values(amount_cents=2900)
        )
    import_settlements(rt, now + timedelta(minutes=5))

    report = reconcile_due(rt, now + 2 * DAY)
    assert report.as_dict() == {"checked": 2, "reconciled": 1, "mismatched": 1, "refused": 0}
    assert invoice_row(rt, invoice).state == "payment_received"
    assert invoice_row(rt, ok).state == "archived"
    # No refusal was written for it (the job does not fire what does not match) ...
    with rt.db.session() as s:
        tried = s.scalar(
            select(func.count())
            .select_from(TransitionRecord)
            .where(TransitionRecord.instance_id == invoice, TransitionRecord.event == "accounting_reconciled")
        )
        assert tried == 0
    # ... and the system firing it anyway is refused by the guard, under the lock.
    with rt.db.session() as s:
        result = fire_event(
            s,
            EventRequest("t-1", "accounting_reconciled", invoice),
            SYSTEM,
            now + 2 * DAY,
            settings=rt.settings,
        )
    assert result.status == 409
    assert "the processor record does not match the payment" in str(result.body)
    assert invoice_row(rt, invoice).state == "payment_received"


# --------------------------------------------------------------------------- force-reconcile by finance


def bank_paid_invoice(
    rt: Runtime, customer: str, now: datetime, amount: int = 4500, payment_id: str | None = None
) -> str:
    """An invoice paid at ``now`` by a payment the system reports (id ``bank-<customer>`` by default)."""
    new_customer(rt, customer, now=now)
    invoice = issued_invoice(rt, customer, "", now, amount=amount)
    deliver_invoice(rt, invoice, now)
    with rt.db.session() as s:
        result = fire_event(
            s,
            EventRequest(
                "t-1",
                "payment_received",
                invoice,
                {"amount_cents": amount, "payment_id": payment_id or f"bank-{customer}"},
            ),
            SYSTEM,
            now,
            settings=rt.settings,
        )
    assert result.status == 200, result.body
    return invoice


def force_reconcile(rt: Runtime, invoice: str, proof: str, at: datetime, approved_by: str | None) -> int:
    payload = {"processor_proof_ref": proof, "reason": "bank transfer matched by hand"}
    with rt.db.session() as s:
        result = fire_event(
            s,
            EventRequest("t-1", "accounting_reconciled", invoice, payload),
            FINANCE,
            at,
            settings=rt.settings,
            approved_by=approved_by,
        )
    force_reconcile.last_body = result.body  # type: ignore[attr-defined]
    return result.status


def test_force_reconcile_with_a_proof_the_processor_knows_succeeds_after_four_eyes(rt: Runtime) -> None:
    now = utcnow()
    invoice = bank_paid_invoice(rt, "c-1", now)
    # The processor holds the customer's payment under its own reference.
    proof = adapters_for(rt).payments.charge("bank-proof-1", "c-1", 4500, "USD", "tok_visa").reference
    import_settlements(rt, now + timedelta(minutes=5))
    later = now + 2 * DAY

    assert reconcile_due(rt, later).mismatched == 1  # nothing at the processor under "bank-c-1"
    assert force_reconcile(rt, invoice, proof, later, approved_by=None) == 202  # four-eyes: a request
    assert invoice_row(rt, invoice).state == "payment_received"
    assert force_reconcile(rt, invoice, proof, later, approved_by="mgr-1") == 200
    row = invoice_row(rt, invoice)
    assert (row.state, row.data["processor_proof_ref"]) == ("archived", proof)


def test_one_processor_payment_cannot_force_reconcile_two_invoices(rt: Runtime) -> None:
    now = utcnow()
    first = bank_paid_invoice(rt, "c-1", now)
    second = issued_invoice(rt, "c-1", "", now, amount=4500)
    deliver_invoice(rt, second, now)
    with rt.db.session() as s:
        paid = fire_event(
            s,
            EventRequest(
                "t-1", "payment_received", second, {"amount_cents": 4500, "payment_id": "bank-c-1-b"}
            ),
            SYSTEM,
            now,
            settings=rt.settings,
        )
    assert paid.status == 200, paid.body
    proof = adapters_for(rt).payments.charge("bank-proof-2", "c-1", 4500, "USD", "tok_visa").reference
    import_settlements(rt, now + timedelta(minutes=5))
    later = now + 2 * DAY
    assert force_reconcile(rt, first, proof, later, approved_by="mgr-1") == 200
    assert force_reconcile(rt, second, proof, later, approved_by="mgr-1") == 409
    body = str(force_reconcile.last_body)  # type: ignore[attr-defined]
    assert f"processor reference {proof} already settles invoice" in body
    assert invoice_row(rt, second).state == "payment_received"


@pytest.mark.parametrize("case", ["unknown", "other_customer", "other_amount", "declined"])
def test_force_reconcile_with_a_proof_that_does_not_confirm_is_refused(rt: Runtime, case: str) -> None:
    now = utcnow()
    invoice = bank_paid_invoice(rt, "c-1", now)
    payments = adapters_for(rt).payments
    proof = {
        "unknown": lambda: "ch_nobody_knows_this",
        "other_customer": lambda: payments.charge("k-other", "c-9", 4500, "USD", "tok_visa").reference,
        "other_amount": lambda: payments.charge("k-amount", "c-1", 4400, "USD", "tok_visa").reference,
        "declined": lambda: (
            payments.charge("k-dec", "c-1", 4500, "USD", "tok_decline_card_declined").reference
        ),
    }[case]()
    import_settlements(rt, now + timedelta(minutes=5))

    for approved_by in (None, "mgr-1"):
        assert force_reconcile(rt, invoice, proof, now + 2 * DAY, approved_by=approved_by) == 409
        assert "force-reconcile needs the processor to confirm the payment" in str(force_reconcile.last_body)  # type: ignore[attr-defined]
    assert invoice_row(rt, invoice).state == "payment_received"


# --------------------------------------------------------------------------- cost and concurrency


def test_the_world_facts_read_the_records_in_one_statement(rt: Runtime) -> None:
    from sqlalchemy import event

    from webapp.services.instances import to_instance
    from webapp.services.reconciliation import reconciliation_facts

    now = utcnow()
    invoice = paid_invoice(rt, "c-1", now)
    import_settlements(rt, now + timedelta(minutes=5))
    statements: list[str] = []

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement)

    with rt.db.session() as s:
        target = to_instance(s.get(GovernorInstance, invoice))  # type: ignore[arg-type]
        event.listen(rt.db.engine, "before_cursor_execute", count)
        try:
            facts = reconciliation_facts(s, target, {"processor_proof_ref": target.data["payment_ids"][0]})
        finally:
            event.remove(rt.db.engine, "before_cursor_execute", count)
    assert facts == {"processor_record_matches": True, "processor_confirms_payment": True}
    # One statement for the settlement records, one for the customer's other invoices (the proof
    # confirms, so whether another invoice already claims it is asked).
    assert len(statements) == 2 and "processor_records" in statements[0]


def test_an_import_that_loses_the_race_for_the_cursor_leaves_it_to_the_winner(rt: Runtime) -> None:
    from webapp.adapters.payments import SandboxProcessor, SettlementPage

    now = utcnow()
    paid_invoice(rt, "c-1", now)
    later = now + timedelta(minutes=5)

    class RacedProcessor(SandboxProcessor):
        """The sandbox, with a second import that runs while the first one waits for its page."""

        raced = False

        def settlement_report(
            self, cursor: str | None, *, until: datetime, limit: int = 500
        ) -> SettlementPage:
            page = super().settlement_report(cursor, until=until, limit=limit)
            if not self.raced:
                self.raced = True
                assert import_settlements(rt, later).imported == 1
            return page

    report = import_settlements(rt, later, processor=RacedProcessor(rt.db))
    assert (report.pages, report.imported) == (0, 0)  # its page was not stored over the winner's cursor
    assert records(rt) == 1
    assert import_settlements(rt, later).imported == 0
