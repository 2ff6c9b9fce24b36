"""Reconciliation in the console: finance's force-reconcile (B08, four-eyes) judged on the imported
processor records, and /finance/reconciliation listing only what is still unreconciled.

Flask client on PostgreSQL with CSRF on; the processor is the sandbox, its report imported by the real
import job.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from flask import Flask
from sqlalchemy import select, update

from tests.web.test_finance_more import (
    _billing,
    _count,
    _decide,
    _next_code,
    _paid_invoice,
    _signed_in,
    _submit,
)
from webapp.adapters.payments import SandboxProcessor
from webapp.db import Database
from webapp.models import Approval, SandboxCharge
from webapp.runtime import Runtime
from webapp.services.reconciliation import import_settlements, reconcile_due

from .conftest import MadeUser


def _settled_charge(db: Database, key: str, customer: str, cents: int, at: datetime) -> str:
    """A charge the processor settled at ``at``; returns its reference."""
    reference = SandboxProcessor(db).charge(key, customer, cents, "USD", "tok_visa").reference
    with db.session() as s:
        s.execute(update(SandboxCharge).where(SandboxCharge.reference == reference).values(created_at=at))
    return reference


def test_force_reconcile_with_a_known_proof_is_approved_and_leaves_the_unreconciled_list(
    web_db: Database, web_runtime: Runtime, app: Flask, make_user: Callable[..., MadeUser]
) -> None:
    now = datetime.now(UTC)
    paid_at = now - timedelta(days=2)
    inv = _paid_invoice(web_db, "c-1", paid_at)
    total = int(inv.data["paid_cents"])
    # The processor knows the payment under its own reference, not the payment id the invoice recorded.
    proof = _settled_charge(web_db, "proof-c-1", "c-1", total, paid_at)
    assert import_settlements(web_runtime, now).imported == 1
    assert reconcile_due(web_runtime, now).mismatched == 1  # so the job leaves it to finance

    fin = _signed_in(app, make_user("fin@x.test", ["finance"]))
    mgr_user = make_user("mgr@x.test", ["manager"], totp=True)
    mgr = _signed_in(app, mgr_user)
    page = fin.get("/finance/reconciliation").get_data(as_text=True)
    assert f'id="unreconciled-table-{inv.id}" data-class="ESCALATE"' in page
    assert f"the processor has not reported {inv.data['payment_ids'][0]} as settled" in page

    status, body = _submit(fin, inv.id, "accounting_reconciled", {"in_processor_proof_ref": "ch_unknown_ref"})
    assert status == 409, body[:500]
    assert "force-reconcile needs the processor to confirm the payment" in body
    assert _count(web_db, Approval, instance_id=inv.id) == 0

    status, body = _submit(fin, inv.id, "accounting_reconciled", {"in_processor_proof_ref": proof})
    assert status == 202, body[:500]
    with web_db.session() as s:
        approval_id = s.scalars(select(Approval.id).where(Approval.instance_id == inv.id)).one()
    status, body = _decide(mgr, approval_id, "approve", code=_next_code(mgr_user))
    assert status == 200, body[:500]
    row = _billing(web_db, "c-1")
    assert (row.state, row.data["processor_proof_ref"]) == ("archived", proof)

    page = fin.get("/finance/reconciliation").get_data(as_text=True)
    assert f"unreconciled-table-{inv.id}" not in page
    assert "Every paid invoice is reconciled." in page


def test_invoice_reconciled_by_the_job_leaves_the_list_and_a_mismatch_stays(
    web_db: Database, web_runtime: Runtime, app: Flask, make_user: Callable[..., MadeUser]
) -> None:
    now = datetime.now(UTC)
    paid_at = now - timedelta(days=2)
    matched = _paid_invoice(web_db, "c-1", paid_at)
    mismatched = _paid_invoice(web_db, "c-2", paid_at)
    for inv, cents in ((matched, int(matched.data["paid_cents"])), (mismatched, 1)):
        # Each invoice was paid by a card charge at the sandbox processor (the demo driver pays that
        # way); the processor settled the second one for a different amount.
        payment_id = inv.data["payment_ids"][0]
        with web_db.session() as s:
            changed = s.execute(
                update(SandboxCharge)
                .where(SandboxCharge.reference == payment_id)
                .values(amount_cents=cents, created_at=paid_at)
            )
            assert getattr(changed, "rowcount", 0) == 1
    import_settlements(web_runtime, now)
    assert reconcile_due(web_runtime, now).as_dict() == {
        "checked": 2,
        "reconciled": 1,
        "mismatched": 1,
        "refused": 0,
    }

    fin = _signed_in(app, make_user("fin@x.test", ["finance"]))
    page = fin.get("/finance/reconciliation").get_data(as_text=True)
    assert f"unreconciled-table-{matched.id}" not in page
    assert f'id="unreconciled-table-{mismatched.id}" data-class="ESCALATE"' in page
    total = int(mismatched.data["paid_cents"])
    assert f"the processor settled 1 cents, the invoice recorded {total} cents" in page
    assert _billing(web_db, "c-1").state == "archived"
    assert _billing(web_db, "c-2").state == "payment_received"
