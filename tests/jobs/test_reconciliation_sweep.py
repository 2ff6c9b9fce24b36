"""The periodic sweep imports the processor's settlement report and reconciles paid invoices (B08).

Uses the real Redis (the sweep books its next run with ``enqueue_at``); the effects the reconciliation
emits only queue up, no worker is needed to see the invoice archived.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from tests.jobs.conftest import utcnow
from tests.services.test_reconciliation import bank_paid_invoice, invoice_row
from webapp.adapters import adapters_for
from webapp.jobs import periodic_sweep
from webapp.models import SandboxCharge
from webapp.runtime import Runtime


def test_the_periodic_sweep_imports_the_report_and_reconciles(rt: Runtime) -> None:
    paid_at = utcnow() - timedelta(days=2)
    charge = adapters_for(rt).payments.charge("sweep-1", "c-1", 4500, "USD", "tok_visa")
    with rt.db.session() as s:  # the processor settled it when it was paid, two days ago
        s.execute(update(SandboxCharge).values(created_at=paid_at))
    invoice = bank_paid_invoice(rt, "c-1", paid_at, payment_id=charge.reference)

    result = periodic_sweep()
    assert result["reconciliation"]["import"]["imported"] == 1
    assert result["reconciliation"]["reconcile"]["reconciled"] == 1
    assert invoice_row(rt, invoice).state == "archived"
