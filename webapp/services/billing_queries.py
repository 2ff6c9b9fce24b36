"""Read-only queries behind finance's retry board (CONSOLE.md §3.2, GOVERNORS.md §2).

An invoice is a billing governor instance; the board lists those in the dunning ladder
(``payment_failed`` → ``retry_1..3`` → ``collection_agency``) with the last decline, the running
timer (the next attempt) and the amount in integer cents. Filters: stage, decline code, customer,
amount range; keyset pagination on the instance id (the cursor is the last id shown).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Integer, Select, String, case, cast, func, select, text
from sqlalchemy.orm import Session

from webapp.models import Customer, GovernorInstance
from webapp.services.instances import timers_from_json

STAGES: tuple[str, ...] = ("payment_failed", "retry_1", "retry_2", "retry_3", "collection_agency")
"""The dunning ladder, in order (GOVERNORS.md §2.3)."""

PAGE_SIZE = 50
BULK_LIMIT = 200
"""At most this many invoices in one bulk retry."""


@dataclass(frozen=True)
class BoardFilters:
    """What the board is filtered by (empty strings / None: no filter)."""

    stage: str = ""
    reason: str = ""
    customer: str = ""
    min_cents: int | None = None
    max_cents: int | None = None

    def as_args(self) -> dict[str, str]:
        """The filters as query-string arguments (for pager links and the bulk form)."""
        args = {"stage": self.stage, "reason": self.reason, "customer": self.customer}
        if self.min_cents is not None:
            args["min"] = money_text(self.min_cents)
        if self.max_cents is not None:
            args["max"] = money_text(self.max_cents)
        return {k: v for k, v in args.items() if v}


@dataclass(frozen=True)
class InvoiceRow:
    """One invoice on the board."""

    id: str
    tenant_id: str
    customer_id: str | None
    customer_name: str
    subject_id: str | None
    state: str
    version: int
    amount_cents: int
    currency: str
    decline_code: str
    decline_message: str
    failed_attempts: int
    holds: tuple[str, ...]
    next_attempt_at: datetime | None
    next_attempt_event: str
    entered_at: datetime


@dataclass(frozen=True)
class BoardPage:
    """A page of invoices and the cursor of the next page (None on the last page)."""

    items: list[InvoiceRow]
    next_cursor: str | None
    counts: dict[str, int] = field(default_factory=dict)


def parse_money(raw: str) -> int | None:
    """ "12.34" / "12" / "1,234.5" → cents; None for empty or unparsable input (never a float)."""
    text = (raw or "").strip().replace(",", "")
    if not text:
        return None
    whole, _, frac = text.partition(".")
    if not whole.isdigit() and whole != "":
        return None
    if frac and (not frac.isdigit() or len(frac) > 2):
        return None
    return int(whole or "0") * 100 + int((frac + "00")[:2])


def money_text(cents: int) -> str:
    """1234 → "12.34" (the inverse of ``parse_money`` for the filter fields)."""
    sign = "-" if cents < 0 else ""
    whole, frac = divmod(abs(cents), 100)
    return f"{sign}{whole}.{frac:02d}"


def _amount_expr() -> Any:
    data = GovernorInstance.data
    return func.coalesce(
        cast(data["total_cents"].as_string(), Integer),
        cast(data["amount_cents"].as_string(), Integer),
        0,
    )


def _reason_expr() -> Any:
    return GovernorInstance.data["last_decline"]["code"].as_string()


def _base(filters: BoardFilters, tenants: Iterable[str] | None) -> Select[Any]:
    stmt = select(GovernorInstance).where(GovernorInstance.governor == "billing")
    if filters.stage in STAGES:
        stmt = stmt.where(GovernorInstance.state == filters.stage)
    else:
        stmt = stmt.where(GovernorInstance.state.in_(STAGES))
    if tenants is not None:
        stmt = stmt.where(GovernorInstance.tenant_id.in_(list(tenants)))
    if filters.customer:
        stmt = stmt.where(GovernorInstance.customer_id == filters.customer)
    if filters.reason:
        stmt = stmt.where(_reason_expr() == filters.reason)
    if filters.min_cents is not None:
        stmt = stmt.where(_amount_expr() >= filters.min_cents)
    if filters.max_cents is not None:
        stmt = stmt.where(_amount_expr() <= filters.max_cents)
    return stmt


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def to_row(row: GovernorInstance, names: Mapping[str, str]) -> InvoiceRow:
    """A GovernorInstance of the billing governor as a board row."""
    data = row.data or {}
    decline = data.get("last_decline") or {}
    if not isinstance(decline, Mapping):
        decline = {}
    timers = timers_from_json(row.timers or {})
    due = sorted(
        ((t.due_at, name, t) for name, t in timers.items() if t.due_at is not None), key=lambda x: x[0]
    )
    holds = data.get("dunning_holds") or []
    amount = data.get("total_cents")
    return InvoiceRow(
        id=row.id,
        tenant_id=row.tenant_id,
        customer_id=row.customer_id,
        customer_name=names.get(row.customer_id or "", ""),
        subject_id=row.subject_id,
        state=row.state,
        version=row.version,
        amount_cents=_int(amount if amount is not None else data.get("amount_cents")),
        currency=str(data.get("currency") or ""),
        decline_code=str(decline.get("code") or ""),
        decline_message=str(decline.get("message") or ""),
        failed_attempts=_int(data.get("failed_attempts")),
        holds=tuple(str(h) for h in holds) if isinstance(holds, list) else (),
        next_attempt_at=due[0][0] if due else row.timeout_at,
        next_attempt_event=str(getattr(due[0][2], "event", "") or due[0][1]) if due else "",
        entered_at=row.entered_at,
    )


def _names(session: Session, customer_ids: Iterable[str | None]) -> dict[str, str]:
    ids = sorted({c for c in customer_ids if c})
    if not ids:
        return {}
    rows = session.execute(select(Customer.id, Customer.name).where(Customer.id.in_(ids)))
    return {cid: name or "" for cid, name in rows}


def stage_counts(session: Session, filters: BoardFilters, tenants: Iterable[str] | None) -> dict[str, int]:
    """Invoices per stage under the filters other than the stage itself."""
    unstaged = BoardFilters("", filters.reason, filters.customer, filters.min_cents, filters.max_cents)
    sub = _base(unstaged, tenants).with_only_columns(GovernorInstance.state).subquery()
    counts = dict.fromkeys(STAGES, 0)
    for state, n in session.execute(select(sub.c.state, func.count()).group_by(sub.c.state)):
        counts[str(state)] = int(n)
    return counts


def reason_choices(session: Session, tenants: Iterable[str] | None) -> list[str]:
    """Decline codes seen on invoices in the ladder (for the reason filter)."""
    stmt = _base(BoardFilters(), tenants).with_only_columns(_reason_expr().label("code")).distinct()
    return sorted(str(c) for c in session.scalars(stmt) if c)


def board_page(
    session: Session,
    filters: BoardFilters,
    *,
    cursor: str | None = None,
    tenants: Iterable[str] | None = None,
    limit: int = PAGE_SIZE,
) -> BoardPage:
    """One page of invoices in the dunning ladder, ordered by instance id (keyset pagination)."""
    scoped = None if tenants is None else list(tenants)
    stmt = _base(filters, scoped).order_by(GovernorInstance.id)
    if cursor:
        stmt = stmt.where(GovernorInstance.id > cast(cursor, String))
    rows = list(session.scalars(stmt.limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    names = _names(session, (r.customer_id for r in rows))
    items = [to_row(r, names) for r in rows]
    return BoardPage(
        items=items,
        next_cursor=rows[-1].id if more and rows else None,
        counts=stage_counts(session, filters, scoped),
    )


def bulk_candidates(
    session: Session, filters: BoardFilters, tenants: Iterable[str] | None = None, limit: int = BULK_LIMIT
) -> list[GovernorInstance]:
    """The payment_failed invoices under ``filters`` (any stage filter is replaced by payment_failed)."""
    only_failed = BoardFilters(
        "payment_failed", filters.reason, filters.customer, filters.min_cents, filters.max_cents
    )
    stmt = _base(only_failed, None if tenants is None else list(tenants)).order_by(GovernorInstance.id)
    return list(session.scalars(stmt.limit(limit)))


def instances(
    session: Session, ids: Sequence[str], tenants: Iterable[str] | None = None
) -> list[GovernorInstance]:
    """Billing instances by id, in the given order, limited to the caller's tenants."""
    if not ids:
        return []
    stmt = select(GovernorInstance).where(
        GovernorInstance.id.in_(list(ids)), GovernorInstance.governor == "billing"
    )
    if tenants is not None:
        stmt = stmt.where(GovernorInstance.tenant_id.in_(list(tenants)))
    found = {r.id: r for r in session.scalars(stmt)}
    return [found[i] for i in ids if i in found]


# --------------------------------------------------------------------------- money actions, refunds

MONEY_STATES: tuple[str, ...] = ("payment_received", "payment_disputed", "collection_agency", "archived")
"""Where finance refunds, reconciles, resolves, settles or writes off (GOVERNORS.md §2.2, §11 #12-17)."""

OPEN_MONEY_STATES: tuple[str, ...] = MONEY_STATES[:3]
"""The money-page states that wait for someone (the "all" view); archived ones only on their tab."""

COUNT_CAP = 1000
"""Counts per state stop here (shown as "1000+"): counting every archived invoice ever is not worth it."""

MONEY_EVENTS: tuple[str, ...] = (
    "issue_refund",
    "accounting_reconciled",
    "dispute_resolved",
    "payment_recovered",
    "settlement_agreed",
    "account_written_off",
)
"""The billing staff actions of the money page: B22, B08, B21, B18, B19, B20."""


def _cents_expr(key: str) -> Any:
    return func.coalesce(cast(GovernorInstance.data[key].as_string(), Integer), 0)


def _money_base(state: str, tenants: Iterable[str] | None) -> Select[Any]:
    stmt = select(GovernorInstance).where(GovernorInstance.governor == "billing")
    if state in MONEY_STATES:
        stmt = stmt.where(GovernorInstance.state == state)
    else:
        # Archived invoices pile up forever: they are listed on their own tab, never in "all".
        stmt = stmt.where(GovernorInstance.state.in_(OPEN_MONEY_STATES))
    if state == "archived":
        # An archived invoice is on the page only while something is left to refund (B22).
        stmt = stmt.where(_cents_expr("paid_cents") > _cents_expr("refunded_cents"))
    if tenants is not None:
        stmt = stmt.where(GovernorInstance.tenant_id.in_(list(tenants)))
    return stmt


@dataclass(frozen=True)
class MoneyRow:
    """An invoice on the money page: the board row plus what was paid and what can still be refunded."""

    invoice: InvoiceRow
    paid_cents: int
    refunded_cents: int
    outstanding_cents: int

    @property
    def refundable_cents(self) -> int:
        """Paid minus already refunded (the B22 upper bound)."""
        return max(0, self.paid_cents - self.refunded_cents)


@dataclass(frozen=True)
class MoneyPage:
    """A page of money-page invoices, the next cursor and the count per state."""

    items: list[MoneyRow]
    next_cursor: str | None
    counts: dict[str, int]


def money_page(
    session: Session,
    state: str = "",
    *,
    cursor: str | None = None,
    tenants: Iterable[str] | None = None,
    limit: int = PAGE_SIZE,
) -> MoneyPage:
    """Invoices finance can refund, reconcile, resolve, settle or write off; keyset-paginated by id."""
    scoped = None if tenants is None else list(tenants)
    stmt = _money_base(state, scoped).order_by(GovernorInstance.id)
    if cursor:
        stmt = stmt.where(GovernorInstance.id > cast(cursor, String))
    rows = list(session.scalars(stmt.limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    names = _names(session, (r.customer_id for r in rows))
    items = []
    for r in rows:
        data = r.data or {}
        total = _int(data.get("total_cents"))
        paid = _int(data.get("paid_cents"))
        items.append(
            MoneyRow(
                invoice=to_row(r, names),
                paid_cents=paid,
                refunded_cents=_int(data.get("refunded_cents")),
                outstanding_cents=max(0, total - paid),
            )
        )
    return MoneyPage(
        items=items,
        next_cursor=rows[-1].id if more and rows else None,
        counts=money_counts(session, scoped),
    )


def money_counts(session: Session, tenants: Iterable[str] | None = None) -> dict[str, int]:
    """Money-page invoices per state, each counted up to ``COUNT_CAP`` + 1 (archived: refundable ones)."""
    counts = {}
    for state in MONEY_STATES:
        capped = _money_base(state, tenants).with_only_columns(GovernorInstance.id).limit(COUNT_CAP + 1)
        counts[state] = int(session.scalar(select(func.count()).select_from(capped.subquery())) or 0)
    return counts


@dataclass(frozen=True)
class RefundRow:
    """One issued refund: amount in cents, on which invoice, who asked, who approved, when and why."""

    transition_id: int
    at: datetime
    instance_id: str
    customer_id: str | None
    customer_name: str
    amount_cents: int
    currency: str
    reason_code: str
    reason: str
    requested_by: str
    approved_by: str
    approval_id: str | None
    event: str


def refunds(session: Session, tenants: Iterable[str] | None = None, limit: int = 100) -> list[RefundRow]:
    """Issued refunds, newest first: B22 refunds and B21 dispute resolutions that refunded money."""
    from webapp.models import Approval, StaffUser, TransitionRecord
    from webapp.models.governance import REFUND_ROWS

    stored = TransitionRecord.payload
    refunded = case(
        (TransitionRecord.event == "issue_refund", cast(stored["amount_cents"].as_string(), Integer)),
        else_=cast(stored["refund_cents"].as_string(), Integer),
    )
    stmt = (
        select(TransitionRecord)
        # The partial index's own predicate, as literal SQL, so the planner matches it whatever the
        # driver does with parameters.
        .where(text(REFUND_ROWS), func.coalesce(refunded, 0) > 0)
        .order_by(TransitionRecord.id.desc())
        .limit(limit)
    )
    if tenants is not None:
        stmt = stmt.where(TransitionRecord.tenant_id.in_(list(tenants)))
    records = list(session.scalars(stmt))
    approval_ids = sorted({r.approval_id for r in records if r.approval_id})
    approvers: dict[str, str] = {}
    if approval_ids:
        rows = session.execute(select(Approval.id, Approval.decided_by).where(Approval.id.in_(approval_ids)))
        approvers = {aid: by or "" for aid, by in rows}
    user_ids = {r.actor for r in records} | set(approvers.values())
    emails: dict[str, str] = {}
    if user_ids:
        stmt_users = select(StaffUser.id, StaffUser.email).where(StaffUser.id.in_(user_ids))
        emails = dict(session.execute(stmt_users).all())
    currencies: dict[str, str | None] = {}
    if records:
        stmt_cur = select(GovernorInstance.id, GovernorInstance.data["currency"].as_string()).where(
            GovernorInstance.id.in_({r.instance_id for r in records})
        )
        currencies = dict(session.execute(stmt_cur).all())
    names = _names(session, (r.customer_id for r in records))
    out = []
    for r in records:
        payload = r.payload or {}
        refund = r.event == "issue_refund"
        approver = approvers.get(r.approval_id or "", "")
        out.append(
            RefundRow(
                transition_id=r.id,
                at=r.occurred_at,
                instance_id=r.instance_id,
                customer_id=r.customer_id,
                customer_name=names.get(r.customer_id or "", ""),
                amount_cents=_int(payload.get("amount_cents" if refund else "refund_cents")),
                currency=str(currencies.get(r.instance_id) or ""),
                reason_code=str(payload.get("reason_code") or "")
                if refund
                else f"dispute {payload.get('outcome') or 'resolved'}",
                reason=r.reason or str(payload.get("reason") or ""),
                requested_by=emails.get(r.actor, r.actor),
                approved_by=emails.get(approver, approver),
                approval_id=r.approval_id,
                event=r.event,
            )
        )
    return out


# --------------------------------------------------------------------------- unreconciled and stuck

STATUS_CLASSES: tuple[str, ...] = ("ESCALATE", "WARN", "OK")
"""CONSOLE.md §2.4's age classes (as for entitlement pending age: > limit ESCALATE, > half WARN)."""

SWEEP_SLACK = timedelta(minutes=15)
"""A timer this much past due has been missed by the sweep (it runs every few minutes)."""


def age_class(age: timedelta, limit: timedelta) -> str:
    """ESCALATE beyond ``limit``, WARN beyond half of it, else OK (§2.4: 24 h / 12 h for a 1-day limit)."""
    if age > limit:
        return "ESCALATE"
    if age > limit / 2:
        return "WARN"
    return "OK"


@dataclass(frozen=True)
class AgedInvoice:
    """An invoice waiting too long: since when, how long, its §2.4 class and what it waits for."""

    invoice: InvoiceRow
    since: datetime
    age: timedelta
    status_class: str
    waiting_for: str


def unreconciled(
    session: Session,
    now: datetime,
    limit_age: timedelta,
    tenants: Iterable[str] | None = None,
    limit: int = 200,
) -> list[AgedInvoice]:
    """Paid invoices not reconciled yet (payment_received), oldest payment first, classed by age."""
    from governors.facts import as_datetime

    stmt = select(GovernorInstance).where(
        GovernorInstance.governor == "billing", GovernorInstance.state == "payment_received"
    )
    if tenants is not None:
        stmt = stmt.where(GovernorInstance.tenant_id.in_(list(tenants)))
    rows = list(session.scalars(stmt.order_by(GovernorInstance.entered_at, GovernorInstance.id).limit(limit)))
    names = _names(session, (r.customer_id for r in rows))
    out = []
    for r in rows:
        since = as_datetime((r.data or {}).get("paid_at")) or r.entered_at
        age = max(timedelta(0), now - since)
        out.append(
            AgedInvoice(to_row(r, names), since, age, age_class(age, limit_age), "reconciliation (B08)")
        )
    return sorted(out, key=lambda a: (a.since, a.invoice.id))


def stuck(
    session: Session,
    now: datetime,
    payment_window: timedelta,
    tenants: Iterable[str] | None = None,
    limit: int = 200,
) -> list[AgedInvoice]:
    """Invoices past their timer: a billing timer overdue by more than the sweep's slack, or a payment
    window open longer than ``payment_window`` (CONSOLE.md §3.2 "payment_pending > 7 days").

    The age is how far past due; the class uses 24 h as the limit (§2.4).
    """
    from webapp.models import DueTimer

    timer_stmt = (
        select(DueTimer)
        .where(
            DueTimer.governor == "billing", DueTimer.due_at.is_not(None), DueTimer.due_at < now - SWEEP_SLACK
        )
        .order_by(DueTimer.due_at, DueTimer.id)
        .limit(limit)
    )
    if tenants is not None:
        timer_stmt = timer_stmt.where(DueTimer.tenant_id.in_(list(tenants)))
    overdue: dict[str, tuple[datetime, str]] = {}
    for t in session.scalars(timer_stmt):
        assert t.due_at is not None
        overdue.setdefault(t.instance_id, (t.due_at, f"timer {t.name} ({t.event}) did not fire"))
    window_stmt = select(GovernorInstance.id, GovernorInstance.entered_at).where(
        GovernorInstance.governor == "billing",
        GovernorInstance.state == "payment_pending",
        GovernorInstance.entered_at < now - payment_window,
    )
    if tenants is not None:
        window_stmt = window_stmt.where(GovernorInstance.tenant_id.in_(list(tenants)))
    for inst_id, entered in session.execute(window_stmt.limit(limit)):
        due = entered + payment_window
        if inst_id not in overdue or due < overdue[inst_id][0]:
            overdue[inst_id] = (due, "payment window open longer than allowed")
    rows = instances(session, list(overdue), tenants)
    names = _names(session, (r.customer_id for r in rows))
    out = []
    for r in rows:
        due, what = overdue[r.id]
        age = max(timedelta(0), now - due)
        out.append(AgedInvoice(to_row(r, names), due, age, age_class(age, timedelta(hours=24)), what))
    return sorted(out, key=lambda a: (a.since, a.invoice.id))[:limit]
