"""Payment reconciliation (B08): import the processor's settlement report, match invoices against it.

Real reconciliation never asks the processor while invoice rows are locked. It runs in two steps:

1. ``import_settlements`` pulls the processor's settlement report since the stored cursor (a network
   call in real life, made with no transaction of ours open) and upserts its lines into
   ``processor_records``, unique by the processor's reference, with the new cursor in the same
   transaction. Running it twice imports nothing new; a lost cursor only re-reads lines already stored.
2. ``reconcile_due`` fires ``accounting_reconciled`` (actor system) through ``fire_event`` for each
   invoice paid at least ``billing.reconcile_min_age`` ago whose payments the imported lines confirm.
   The guard ``billing_processor_confirms`` reads the same answer, under the lock, as the world fact
   ``processor_record_matches`` (``reconciliation_facts``). Mismatches are not fired, so they are not
   refused once a minute: they stay in payment_received, with its attention flag, for finance
   (/finance/reconciliation shows ``processor_findings``: why each one does not match).

Both run from every periodic sweep (``reconcile_for``, via ``webapp.jobs.housekeeping``): the spec's
daily job, run continuously so an invoice is archived as soon as it is a day old. An idle pass costs one
empty page of the report and a read of the invoices still waiting (``bench/reconciliation.py`` measures it).

The match (``processor_record_matches``): every id in the invoice's ``payment_ids`` is an imported,
succeeded charge of the invoice's customer in its currency, and those charges sum to ``paid_cents`` plus
the duplicate charges kept aside in ``extra_payments`` (Bx4 adds their ids to ``payment_ids`` but not their
amounts to ``paid_cents``). Refunds are not subtracted: in the billing data model ``paid_cents`` is what
was paid, and refunds are counted apart (``refunds``/``refunded_cents``, B22) and settle as their own
refund lines, so a later refund never undoes the match of the charge it returns.

A force-reconcile by finance (``processor_confirms_payment``) names a ``processor_proof_ref``: it counts
when that reference is an imported, succeeded charge of the invoice's customer, in its currency, for
exactly ``paid_cents``. The transition service hands the request's payload to ``world_facts``, which
asks ``reconciliation_facts`` about it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from governors import Instance
from webapp.adapters import adapters_for
from webapp.adapters.payments import PaymentProcessor, SettlementPage, TransientProcessorError
from webapp.models import GovernorInstance, ProcessorCursor, ProcessorRecord
from webapp.runtime import Runtime

log = logging.getLogger(__name__)

SETTLEMENT_LAG = timedelta(minutes=1)
"""The report is read up to this long before now, so a line committed late is never skipped."""

PAGE_SIZE = 500
"""Settlement lines asked for per page (and stored per transaction)."""

MAX_PAGES = 20
"""Pages one import reads at most; the rest waits for the next sweep."""

RECONCILE_BATCH = 200
"""Invoices one reconcile pass looks at per query."""

RECONCILE_EVENT = "accounting_reconciled"

_RECORD_COLUMNS = (
    ProcessorRecord.reference,
    ProcessorRecord.kind,
    ProcessorRecord.amount_cents,
    ProcessorRecord.currency,
    ProcessorRecord.status,
    ProcessorRecord.customer_ref,
)


@dataclass
class ImportReport:
    """What one import did: pages read, lines seen, lines new to us, and the cursor it ended at."""

    pages: int = 0
    lines: int = 0
    imported: int = 0
    cursor: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-able summary (the sweep's result)."""
        return {"pages": self.pages, "lines": self.lines, "imported": self.imported, "cursor": self.cursor}


@dataclass
class ReconcileReport:
    """What one reconcile pass did: invoices looked at, reconciled, left for finance, refused."""

    checked: int = 0
    reconciled: int = 0
    mismatched: int = 0
    refused: int = 0

    def as_dict(self) -> dict[str, int]:
        """A JSON-able summary (the sweep's result)."""
        return {
            "checked": self.checked,
            "reconciled": self.reconciled,
            "mismatched": self.mismatched,
            "refused": self.refused,
        }


# --------------------------------------------------------------------------- import


def import_settlements(
    runtime: Runtime,
    now: datetime,
    *,
    processor: PaymentProcessor | None = None,
    page_size: int = PAGE_SIZE,
    max_pages: int = MAX_PAGES,
) -> ImportReport:
    """Pull the processor's settlement lines since the stored cursor into ``processor_records``."""
    processor = processor or adapters_for(runtime).payments
    with runtime.db.session() as session:
        _ensure_cursor(session, processor.name)
        cursor = session.scalar(
            select(ProcessorCursor.cursor).where(ProcessorCursor.processor == processor.name)
        )
    report = ImportReport(cursor=cursor)
    for _ in range(max_pages):
        # The processor is asked with no transaction of ours open (no row is locked meanwhile).
        page = processor.settlement_report(cursor, until=now - SETTLEMENT_LAG, limit=page_size)
        with runtime.db.session() as session:
            stored = _store_page(session, processor.name, cursor, page, now)
        if stored is None:  # another import moved the cursor meanwhile: it carries on from there
            break
        report.pages += 1
        report.lines += len(page.lines)
        report.imported += stored
        cursor = report.cursor = page.cursor
        if not page.has_more:
            break
    return report


def _ensure_cursor(session: Session, processor: str) -> None:
    insert = _insert_for(session)
    session.execute(insert(ProcessorCursor).values(processor=processor).on_conflict_do_nothing())


def _insert_for(session: Session) -> Any:
    return sqlite.insert if session.get_bind().dialect.name == "sqlite" else postgresql.insert


def _store_page(
    session: Session, processor: str, expected: str | None, page: SettlementPage, now: datetime
) -> int | None:
    """Insert the page's new lines and advance the cursor, or None when the cursor is not ``expected``."""
    row = session.scalars(
        select(ProcessorCursor).where(ProcessorCursor.processor == processor).with_for_update()
    ).one()
    if row.cursor != expected:
        return None
    imported = 0
    if page.lines:
        insert = _insert_for(session)
        statement = (
            insert(ProcessorRecord)
            .values(
                [
                    {
                        "processor": processor,
                        "reference": line.reference,
                        "kind": line.kind,
                        "amount_cents": line.amount_cents,
                        "currency": line.currency,
                        "status": line.status,
                        "customer_ref": line.customer_ref,
                        "settled_at": line.settled_at,
                        "imported_at": now,
                    }
                    for line in page.lines
                ]
            )
            .on_conflict_do_nothing(index_elements=["reference"])
            .returning(ProcessorRecord.id)
        )
        imported = len(session.execute(statement).all())
    row.cursor = page.cursor
    row.imported_at = now
    return imported


# --------------------------------------------------------------------------- matching (world facts)


def reconciliation_facts(
    session: Session, invoice: Instance, payload: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """``processor_record_matches`` and ``processor_confirms_payment`` of ``invoice`` (one query, and
    one more when a proof confirms: whether another invoice already claims it,
    ``processor_proof_claimed_by``)."""
    proof = (payload or {}).get("processor_proof_ref")
    proof_ref = proof.strip() if isinstance(proof, str) and proof.strip() else None
    refs = set(_strings(invoice.data.get("payment_ids")))
    if proof_ref is not None:
        refs.add(proof_ref)
    records = _records(session, refs)
    confirms = proof_ref is not None and proof_confirms(invoice, records.get(proof_ref))
    claimed = _proof_claimed_by(session, invoice, proof_ref) if confirms and proof_ref else None
    facts: dict[str, Any] = {
        "processor_record_matches": record_matches(invoice, records),
        "processor_confirms_payment": confirms and claimed is None,
    }
    if claimed is not None:
        facts["processor_proof_claimed_by"] = claimed
    return facts


def _proof_claimed_by(session: Session, invoice: Instance, ref: str) -> str | None:
    """Another invoice of the customer that processor reference ``ref`` already settles (None: none).

    One payment at the processor settles one invoice: a proof that another invoice was paid with, or
    force-reconciled on, cannot reconcile this one too.
    """
    rows = session.execute(
        select(GovernorInstance.id, GovernorInstance.data).where(
            GovernorInstance.customer_id == invoice.customer_id,
            GovernorInstance.governor == "billing",
            GovernorInstance.id != invoice.id,
        )
    )
    for instance_id, data in rows:
        found = data or {}
        if found.get("processor_proof_ref") == ref or ref in _strings(found.get("payment_ids")):
            return str(found.get("invoice_id") or instance_id)
    return None


@dataclass(frozen=True)
class Settled:
    """The fields of an imported settlement line that the match reads."""

    reference: str
    kind: str
    amount_cents: int
    currency: str
    status: str
    customer_ref: str


def _records(session: Session, refs: Iterable[str]) -> dict[str, Settled]:
    wanted = sorted(refs)
    if not wanted:
        return {}
    # One statement on the unique index of processor_records.reference.
    rows = session.execute(select(*_RECORD_COLUMNS).where(ProcessorRecord.reference.in_(wanted)))
    return {row.reference: Settled(*row) for row in rows}


def _charge_problem(invoice: Instance, ref: str, record: Settled | None) -> str | None:
    """Why ``record`` is not a succeeded charge of the invoice's customer in its currency (None: it is)."""
    if record is None:
        return f"the processor has not reported {ref} as settled"
    if record.kind != "charge":
        return f"{ref} is a {record.kind} at the processor, not a charge"
    if record.status != "succeeded":
        return f"{ref} is {record.status} at the processor"
    if invoice.customer_id is None or record.customer_ref != invoice.customer_id:
        return f"{ref} belongs to another customer at the processor"
    currency = invoice.data.get("currency")
    if currency and record.currency != currency:
        return f"{ref} was settled in {record.currency}, the invoice is in {currency}"
    return None


def mismatch(invoice: Instance, records: Mapping[str, Settled]) -> str | None:
    """Why the processor's records do not confirm the invoice's payments (None: they match)."""
    payment_ids = _strings(invoice.data.get("payment_ids"))
    if not payment_ids:
        return "the invoice records no processor payment id"
    if len(set(payment_ids)) != len(payment_ids):
        return "the invoice records a payment id twice"
    for ref in payment_ids:
        problem = _charge_problem(invoice, ref, records.get(ref))
        if problem is not None:
            return problem
    extras = invoice.data.get("extra_payments") or ()
    extra = sum(_cents(p.get("amount_cents")) for p in extras if isinstance(p, Mapping))
    expected = _cents(invoice.data.get("paid_cents")) + extra
    settled = sum(records[ref].amount_cents for ref in payment_ids)
    if expected <= 0 or settled != expected:
        return f"the processor settled {settled} cents, the invoice recorded {expected} cents"
    return None


def record_matches(invoice: Instance, records: Mapping[str, Settled]) -> bool:
    """Every payment of the invoice is a succeeded charge on record, summing to what it was paid."""
    return mismatch(invoice, records) is None


def proof_confirms(invoice: Instance, record: Settled | None) -> bool:
    """The proof ref is a succeeded charge of the invoice's customer for exactly what it was paid."""
    if record is None or _charge_problem(invoice, record.reference, record) is not None:
        return False
    return record.amount_cents == _cents(invoice.data.get("paid_cents"))


def processor_findings(session: Session, invoice_ids: Sequence[str]) -> dict[str, str]:
    """What the imported processor records say about each invoice, for finance (two queries)."""
    if not invoice_ids:
        return {}
    g = GovernorInstance
    rows = session.execute(select(g.id, g.customer_id, g.data).where(g.id.in_(list(invoice_ids)))).all()
    invoices = [Instance(governor="billing", id=i, customer_id=c, data=d or {}) for i, c, d in rows]
    records = _records(session, {ref for inv in invoices for ref in _strings(inv.data.get("payment_ids"))})
    return {
        inv.id: mismatch(inv, records)
        or "matches the processor: the reconciliation job archives it a day after payment"
        for inv in invoices
    }


def _strings(value: Any) -> list[str]:
    if not isinstance(value, (list, tuple)):
        return []
    return [str(v) for v in value if v is not None and str(v)]


def _cents(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


# --------------------------------------------------------------------------- the reconcile job


def reconcile_due(runtime: Runtime, now: datetime, batch: int = RECONCILE_BATCH) -> ReconcileReport:
    """Fire ``accounting_reconciled`` (system) on every paid invoice old enough whose payments match.

    Candidates are read without locks, oldest first, a ``batch`` at a time; each invoice whose imported
    records match is reconciled in its own transaction through ``fire_event``, which checks again under
    the lock. Mismatches are skipped (left for finance), never refused over and over.
    """
    # Imported here: world_facts (imported by the transition service) imports this module.
    from webapp.jobs import after_commit
    from webapp.services.transitions import Actor, EventRequest, fire_event

    system = Actor("system", "sys")  # the daily reconciliation job is B08's ``sys`` role
    report = ReconcileReport()
    cutoff = now - runtime.settings.duration("billing.reconcile_min_age")
    after: tuple[datetime, str] | None = None
    while True:
        found, records = _candidates(runtime, cutoff, after, batch)
        if not found:
            break
        after = (found[-1].entered_at, found[-1].invoice.id)
        matching = [(c.tenant_id, c.invoice.id) for c in found if record_matches(c.invoice, records)]
        report.checked += len(found)
        report.mismatched += len(found) - len(matching)
        for tenant_id, instance_id in matching:
            with runtime.db.session() as session:
                result = fire_event(
                    session,
                    EventRequest(tenant_id=tenant_id, event=RECONCILE_EVENT, instance_id=instance_id),
                    system,
                    now,
                    settings=runtime.settings,
                )
            if result.status == 200:
                report.reconciled += 1
                after_commit(runtime, result.outbox_ids)
            else:
                report.refused += 1
        if len(found) < batch:
            break
    return report


@dataclass(frozen=True)
class _Candidate:
    tenant_id: str
    entered_at: datetime
    invoice: Instance


def _candidates(
    runtime: Runtime, cutoff: datetime, after: tuple[datetime, str] | None, batch: int
) -> tuple[list[_Candidate], dict[str, Settled]]:
    """A page of paid invoices old enough, oldest first, and the imported records of their payments."""
    g = GovernorInstance
    query = select(g.id, g.tenant_id, g.customer_id, g.entered_at, g.data).where(
        g.governor == "billing", g.state == "payment_received", g.entered_at <= cutoff
    )
    if after is not None:
        query = query.where((g.entered_at > after[0]) | ((g.entered_at == after[0]) & (g.id > after[1])))
    with runtime.db.sessions() as session:
        found = [
            _Candidate(
                tenant,
                entered,
                Instance("billing", invoice, "payment_received", customer_id=customer, data=data or {}),
            )
            for invoice, tenant, customer, entered, data in session.execute(
                query.order_by(g.entered_at, g.id).limit(batch)
            )
        ]
        refs = {ref for c in found for ref in _strings(c.invoice.data.get("payment_ids"))}
        return found, _records(session, refs)


def reconcile_for(rt: Runtime, now: datetime) -> dict[str, Any]:
    """Import the processor's settlement report, then archive the invoices that match (B08).

    Run by ``webapp.jobs.housekeeping`` from the RQ periodic sweep and the in-process runner alike.
    """
    try:
        imported: dict[str, Any] = import_settlements(rt, now).as_dict()
    except TransientProcessorError as exc:
        # The processor did not answer: reconcile with what is imported; the next sweep asks again.
        log.warning("settlement report import failed: %s", exc)
        imported = {"error": str(exc)}
    return {"import": imported, "reconcile": reconcile_due(rt, now).as_dict()}
