"""Read-only queries behind finance's retry board (CONSOLE.md §3.2, GOVERNORS.md §2).

An invoice is a billing governor instance; the board lists those in the dunning ladder
(``payment_failed`` → ``retry_1..3`` → ``collection_agency``) with the last decline, the running
timer (the next attempt) and the amount in integer cents. Filters: stage, decline code, customer,
amount range; keyset pagination on the instance id (the cursor is the last id shown).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Integer, Select, String, cast, func, select
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
