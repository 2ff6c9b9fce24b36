"""Read-only queries behind the customer cockpit: search, the customer overview, history, live marker.

Nothing here writes. Every function takes the session and the instant (``now``) explicitly, and the
tenants the caller may see (``tenants=None`` means every tenant: marketplace staff). Lists use keyset
pagination (the cursor is the last id seen), so page N costs the same as page 1 on 100,000 customers.

The live cockpit costs three statements whatever it shows (issue 4): ``read_customer`` (the customer,
its instances and held SKUs, each with its recent path and the world facts its actions need, the newest
history id), ``_jobs_and_digest`` (pending and failed jobs, and from them the change marker's digest)
and ``history_page``. The filter menus are cached per (customer, newest history id). The statements
are built once with bound parameters. tests/web/test_console.py counts them.

Time travel uses ``webapp.services.history.state_as_of`` (snapshots plus replayed history).
"""

from __future__ import annotations

import functools
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Integer,
    Select,
    String,
    and_,
    bindparam,
    case,
    func,
    literal,
    or_,
    select,
    true,
    union_all,
)
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.orm import Session

from governors import GOVERNORS, AllowedEvent, Facts, Instance, Settings
from webapp.diagrams import layout, render_svg
from webapp.models import Customer, GovernorInstance, OutboxMessage, TransitionRecord
from webapp.models.background import EffectRun
from webapp.models.base import UTCDateTime
from webapp.services.actions import best_actions, facts_for
from webapp.services.facts import active_entitlements, legal_hold_exists
from webapp.services.history import state_as_of
from webapp.services.instances import revive, to_instance

GOVERNOR_ORDER = (
    "customer_account",
    "subscription",
    "entitlement",
    "billing",
    "quota_sla",
    "compliance_audit",
    "multi_tenant",
    "catalog",
)
"""The order of the cockpit's governor groups (who the customer is first, then what they pay for)."""

RECENT_PATH = 5
"""How many recent transitions of an instance the diagram highlights."""

SEARCH_LIMIT = 25
HISTORY_LIMIT = 50

# Key data fields per governor: (label, data key). Keys ending in ``_cents`` are money, lists are
# counted or joined, datetimes are shown as dates. Only what staff look at every day.
KEY_FIELDS: Mapping[str, tuple[tuple[str, str], ...]] = {
    "customer_account": (
        ("Fraud score", "fraud_score"),
        ("Email verified", "email_verified"),
        ("Two-factor", "two_factor_enabled"),
        ("Lock reasons", "lock_reasons"),
        ("Monitoring", "monitoring_every"),
    ),
    "subscription": (
        ("Tier", "tier"),
        ("Cycle", "billing_cycle"),
        ("Price", "monthly_price_cents"),
        ("Auto-renew", "auto_renew"),
        ("Trial ends", "trial_ends_at"),
        ("Pending tier", "pending_tier"),
    ),
    "entitlement": (
        ("SKU", "sku_id"),
        ("Tier", "tier"),
        ("Holds", "holds"),
        ("Expires", "expires_at"),
        ("Refundable", "refundable_cents"),
    ),
    "billing": (
        ("Kind", "kind"),
        ("Total", "total_cents"),
        ("Amount", "amount_cents"),
        ("Paid", "paid_cents"),
        ("Refunded", "refunded_cents"),
        ("Due", "due_date"),
        ("Retry", "retry_number"),
        ("Failed attempts", "failed_attempts"),
        ("Dunning holds", "dunning_holds"),
    ),
    "quota_sla": (
        ("Tier", "tier"),
        ("Overage", "overage_cents"),
        ("Overrides", "overrides"),
        ("Period ends", "period_ends_at"),
    ),
    "compliance_audit": (
        ("Frameworks", "frameworks"),
        ("Violations", "violations"),
        ("Next verification", "next_verification_at"),
    ),
    "multi_tenant": (
        ("Tier", "tier"),
        ("Allocation", "allocation_percent"),
    ),
    "catalog": (
        ("Name", "name"),
        ("Price", "price_cents"),
        ("Tier", "tier"),
        ("Version", "schema_version"),
    ),
}

ALERT_STATES = frozenset(
    {
        "locked",
        "suspended",
        "deactivated",
        "payment_failed",
        "retry_3",
        "collection_agency",
        "payment_disputed",
        "exceeded",
        "throttled",
        "circuit_breaker",
        "non_compliant",
        "fraud_detection_active",
        "investigation",
        "emergency_shutdown",
        "renewal_grace",
    }
)
"""States shown in red: the customer is blocked, money is at risk, or a breach is open."""

QUIET_STATES = frozenset({"archived", "lapsed", "expired", "cancelled", "restored", "draft"})
"""States shown in grey: finished or not yet live."""

EMPTY_NOTES = {
    "billing": "No invoices yet: the first one is opened when the subscription starts.",
    "entitlement": "No entitlements.",
    "catalog": "The customer holds no SKUs.",
}


# --------------------------------------------------------------------------- formatting helpers


def money(cents: int, currency: str = "USD") -> str:
    """Integer cents as money text: 2999 → "$29.99", -500 → "−$5.00", EUR → "29.99 EUR"."""
    sign = "−" if cents < 0 else ""
    whole, part = divmod(abs(int(cents)), 100)
    amount = f"{whole:,}.{part:02d}"
    return f"{sign}${amount}" if currency == "USD" else f"{sign}{amount} {currency}"


def mask_name(name: str) -> str:
    """A masked name: initials only ("Ada Example" → "A••• E•••")."""
    parts = [p for p in name.split() if p]
    return " ".join(f"{p[0]}•••" for p in parts) or "•••"


def mask_email(email: str) -> str:
    """A masked email: first letter and the domain ("ada@example.test" → "a•••@example.test")."""
    local, _, domain = email.partition("@")
    return f"{local[:1]}•••@{domain}" if domain else "•••"


def duration_text(delta: timedelta) -> str:
    """A short human duration: "3d 4h", "5h 12m", "42s"."""
    seconds = int(abs(delta.total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m"
    return f"{secs}s"


def relative(moment: datetime, now: datetime) -> str:
    """ "in 3d 4h" or "2h ago" (server-rendered; the ISO time goes in a ``datetime`` attribute)."""
    delta = moment - now
    return f"in {duration_text(delta)}" if delta.total_seconds() >= 0 else f"{duration_text(delta)} ago"


def tone(state: str | None, attention: bool, terminal: bool = False) -> str:
    """The colour class of a state badge: bad, warn, quiet or ok."""
    if state is None:
        return "quiet"
    if state in ALERT_STATES:
        return "bad"
    if attention:
        return "warn"
    if terminal or state in QUIET_STATES:
        return "quiet"
    return "ok"


def _field_value(key: str, value: Any, currency: str) -> str | None:
    if value is None or value == "" or value == [] or value == {}:
        return None
    if key.endswith("_cents") and isinstance(value, int | float):
        return money(int(value), currency)
    if key == "fraud_score" and isinstance(value, int | float):
        return f"{value / 10:.1f} / 10"
    if key.endswith("_percent") and isinstance(value, int | float):
        return f"{value:g}%"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M UTC")
    if isinstance(value, list | tuple):
        items = [str(v.get("code", v)) if isinstance(v, dict) else str(v) for v in value]
        return ", ".join(items) if len(items) <= 4 else f"{len(items)} items"
    if isinstance(value, dict):
        return (
            ", ".join(f"{k}: {v}" for k, v in sorted(value.items())) if len(value) <= 3 else f"{len(value)}"
        )
    return str(value)


# --------------------------------------------------------------------------- search


@dataclass(frozen=True)
class CustomerRow:
    """One search hit (PII masked)."""

    id: str
    tenant_id: str
    name_masked: str
    email_masked: str
    tier: str
    account_state: str | None
    account_tone: str
    attention: int
    matched: str


@dataclass(frozen=True)
class SearchPage:
    """A page of search hits and the cursor of the next page (None on the last page)."""

    query: str
    items: list[CustomerRow]
    next_cursor: str | None


def _scoped(query: Select[Any], tenants: Iterable[str] | None) -> Select[Any]:
    return query if tenants is None else query.where(Customer.tenant_id.in_(list(tenants)))


def search_customers(
    session: Session,
    q: str = "",
    *,
    cursor: str | None = None,
    limit: int = SEARCH_LIMIT,
    tenants: Iterable[str] | None = None,
) -> SearchPage:
    """Customers matching ``q`` by id, email, invoice (or any instance) id, or name prefix; by id."""
    q = q.strip()[:200]
    tenants = None if tenants is None else list(tenants)
    matched: dict[str, str] = {}
    query = select(Customer)
    if q:
        # Exact keys first: they are point lookups, and they say why a customer matched.
        by_instance = session.execute(
            select(GovernorInstance.customer_id, GovernorInstance.governor).where(GovernorInstance.id == q)
        ).first()
        if by_instance is not None and by_instance[0] is not None:
            matched[by_instance[0]] = "invoice id" if by_instance[1] == "billing" else "instance id"
        conditions = [
            Customer.id == q,
            Customer.email == q.lower(),
            func.lower(Customer.name).like(_prefix(q.lower())),
        ]
        if matched:
            conditions.append(Customer.id.in_(list(matched)))
        query = query.where(or_(*conditions))
    query = _scoped(query, tenants)
    if cursor:
        query = query.where(Customer.id > cursor)
    rows = list(session.scalars(query.order_by(Customer.id).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    ids = [r.id for r in rows]
    states = dict(
        session.execute(
            select(GovernorInstance.customer_id, GovernorInstance.state).where(
                GovernorInstance.customer_id.in_(ids), GovernorInstance.governor == "customer_account"
            )
        ).all()
    )
    attention = dict(
        session.execute(
            select(GovernorInstance.customer_id, func.count())
            .where(GovernorInstance.customer_id.in_(ids), GovernorInstance.attention.is_(True))
            .group_by(GovernorInstance.customer_id)
        ).all()
    )
    items = [
        CustomerRow(
            id=r.id,
            tenant_id=r.tenant_id,
            name_masked=mask_name(r.name),
            email_masked=mask_email(r.email),
            tier=r.tier,
            account_state=states.get(r.id),
            account_tone=tone(states.get(r.id), False),
            attention=int(attention.get(r.id, 0)),
            matched=_why(r, q, matched),
        )
        for r in rows
    ]
    return SearchPage(q, items, rows[-1].id if more and rows else None)


def _prefix(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"{escaped}%"


def _why(row: Customer, q: str, matched: Mapping[str, str]) -> str:
    if not q:
        return ""
    if row.id == q:
        return "customer id"
    if row.id in matched:
        return matched[row.id]
    if row.email == q.lower():
        return "email"
    return "name"


# --------------------------------------------------------------------------- the customer overview


@dataclass(frozen=True)
class TimerView:
    """A governor timer: when it fires (or how much is left while paused) and what it fires."""

    name: str
    event: str
    due_at: datetime | None
    remaining: timedelta | None
    relative: str
    overdue: bool = False


@dataclass(frozen=True)
class HistoryItem:
    """One transition as the timeline shows it."""

    id: int
    instance_id: str
    governor: str
    governor_title: str
    event: str
    from_state: str | None
    to_state: str
    actor: str
    role: str
    reason: str | None
    occurred_at: datetime
    cause_id: int | None
    cascade_id: str | None
    approval_id: str | None


@dataclass
class CardView:
    """One governor instance as a cockpit card (attribute names mirror ``GovernorInstance``)."""

    id: str
    tenant_id: str
    customer_id: str | None
    governor: str
    title: str
    subject_id: str | None
    state: str
    state_description: str
    version: int
    state_seq: int
    entered_at: datetime | None
    in_state: str
    attention: bool
    attention_reason: str
    terminal: bool
    timers: list[TimerView]
    fields: list[tuple[str, str]]
    recent: list[tuple[str | None, str]]
    svg: str
    dom_id: str
    focus: str = ""
    tone: str = "ok"
    actions: tuple[AllowedEvent, ...] = ()

    @property
    def next_timer(self) -> TimerView | None:
        """The timer that fires first (running timers before paused ones)."""
        running = [t for t in self.timers if t.due_at is not None]
        if running:
            return min(running, key=lambda t: t.due_at or datetime.max.replace(tzinfo=UTC))
        return self.timers[0] if self.timers else None


@dataclass
class GovernorGroup:
    """All cards of one governor (several for entitlements, invoices and SKUs)."""

    governor: str
    title: str
    cards: list[CardView]
    empty_note: str = ""


@dataclass(frozen=True)
class JobView:
    """A pending or failed background job of the customer."""

    id: str
    name: str
    status: str
    detail: str
    at: datetime | None


@dataclass
class CustomerView:
    """Everything the cockpit shows about one customer."""

    id: str
    tenant_id: str
    tier: str
    name: str
    email: str
    name_masked: str
    email_masked: str
    created_at: datetime
    account_state: str | None
    account_tone: str
    kyc_status: str
    locked: bool
    fraud_score: str
    mfa: bool
    attention_count: int
    groups: list[GovernorGroup]
    jobs: list[JobView]
    jobs_available: bool
    marker: str
    as_of: datetime | None = None
    cards_by_instance: dict[str, CardView] = field(default_factory=dict)


def find_customer(
    session: Session, customer_id: str, tenants: Iterable[str] | None = None
) -> Customer | None:
    """The customer row, or None when it does not exist or belongs to a tenant the caller cannot see."""
    row = session.get(Customer, customer_id)
    return row if _visible(row, tenants) else None


def _visible(row: Customer | None, tenants: Iterable[str] | None) -> bool:
    return row is not None and (tenants is None or row.tenant_id in set(tenants))


@dataclass(frozen=True)
class CustomerRead:
    """What the cockpit reads about a customer in one query (``read_customer``)."""

    customer: Customer
    instances: list[GovernorInstance]
    last_id: int
    known: dict[str, dict[str, Any]]
    """World facts read with the rows, by instance id (``world_facts(known=...)``)."""
    recent: dict[str, list[tuple[str | None, str]]] | None = None
    """Each instance's recent path (``_recent_paths``) when it came with the rows (PostgreSQL)."""


@functools.cache
def _customer_rows_query(with_recent: bool = False) -> Select[Any]:
    # Built once: statements of the page are parameterised (``:customer_id``) and reused, which spares
    # building them and computing their cache key on every request.
    customer_id = bindparam("customer_id", type_=String)
    held = select(GovernorInstance.subject_id).where(
        GovernorInstance.customer_id == customer_id,
        GovernorInstance.governor == "entitlement",
        GovernorInstance.subject_id.is_not(None),
    )
    last_id = (
        select(func.max(TransitionRecord.id))
        .where(TransitionRecord.customer_id == customer_id)
        .scalar_subquery()
    )
    holders = case((GovernorInstance.governor == "catalog", active_entitlements(GovernorInstance.subject_id)))
    columns: list[Any] = [Customer, GovernorInstance, last_id, legal_hold_exists(customer_id), holders]
    if with_recent:  # PostgreSQL: each row's last RECENT_PATH steps as [[from, to], ...], oldest first
        last = (
            select(
                TransitionRecord.from_state,
                TransitionRecord.to_state,
                TransitionRecord.occurred_at,
                TransitionRecord.id,
            )
            .where(TransitionRecord.instance_id == GovernorInstance.id)
            .order_by(TransitionRecord.occurred_at.desc(), TransitionRecord.id.desc())
            .limit(RECENT_PATH)
            .correlate(GovernorInstance)
            .subquery("last")
        )
        steps = pg.array([last.c.from_state, last.c.to_state])
        columns.append(
            select(
                func.array_agg(
                    pg.aggregate_order_by(steps, last.c.occurred_at, last.c.id),
                    type_=ARRAY(String, dimensions=2),
                )
            ).scalar_subquery()
        )
    instances = or_(
        GovernorInstance.customer_id == Customer.id,
        and_(GovernorInstance.governor == "catalog", GovernorInstance.subject_id.in_(held)),
    )
    return (
        select(*columns)
        .select_from(Customer)
        .outerjoin(GovernorInstance, instances)
        .where(Customer.id == customer_id)
    )


def read_customer(
    session: Session, customer_id: str, tenants: Iterable[str] | None = None
) -> CustomerRead | None:
    """The customer (as ``find_customer``) with its instances, the catalog SKUs it holds, its newest
    history id and the world facts of its cards: one query.

    The instances come ordered by (governor, created_at, id), the SKUs by subject id. The history id,
    the legal hold and each SKU's holder count ride along as scalar subqueries (the facts the cards'
    actions need, which ``world_facts`` would otherwise ask per card); on PostgreSQL each instance's
    recent path too.
    """
    with_recent = session.get_bind().dialect.name == "postgresql"
    result = session.execute(_customer_rows_query(with_recent), {"customer_id": customer_id}).all()
    customer = result[0][0] if result else None
    if customer is None or not _visible(customer, tenants):
        return None
    rows = [row for row in result if row[1] is not None]
    own = sorted(
        (row[1] for row in rows if row[1].customer_id == customer_id),
        key=lambda r: (r.governor, r.created_at, r.id),
    )
    skus = sorted(
        (row[1] for row in rows if row[1].customer_id != customer_id), key=lambda r: (r.subject_id, r.id)
    )
    known: dict[str, dict[str, Any]] = {}
    for row in rows:
        inst = row[1]
        if inst.customer_id is not None:
            known[inst.id] = {"legal_hold": bool(row[3])}
        elif str((inst.data or {}).get("sku_id") or inst.subject_id) == inst.subject_id:
            known[inst.id] = {"sku_active_entitlements": int(row[4] or 0)}
    recent = {row[1].id: [(a, b) for a, b in row[5] or ()] for row in rows} if with_recent else None
    return CustomerRead(customer, own + skus, int(result[0][2] or 0), known, recent)


def _recent_paths(
    session: Session, instance_ids: Sequence[str], before: datetime | None = None
) -> dict[str, list[tuple[str | None, str]]]:
    """The last few (from, to) steps of each instance, oldest first: one query for all of them.

    On PostgreSQL a LATERAL join reads RECENT_PATH index entries per instance (the cost does not grow
    with the history); elsewhere a window over the instances' rows does the same.
    """
    out: dict[str, list[tuple[str | None, str]]] = {iid: [] for iid in instance_ids}
    if not instance_ids:
        return out
    if session.get_bind().dialect.name == "postgresql":
        params: dict[str, Any] = {"ids": list(instance_ids)}
        if before is not None:
            params["before"] = before
        rows = session.execute(_recent_lateral(before is not None), params).all()
    else:
        rows = session.execute(_recent_window(instance_ids, before)).all()
    for instance_id, from_state, to_state in rows:
        out[instance_id].append((from_state, to_state))
    return out


@functools.cache
def _recent_lateral(before: bool) -> Select[Any]:
    """The last RECENT_PATH steps of each of ``:ids`` (and at or before ``:before``), PostgreSQL only."""
    ids = func.unnest(bindparam("ids", type_=ARRAY(String))).table_valued("id").render_derived("ids")
    steps = (
        select(
            TransitionRecord.from_state,
            TransitionRecord.to_state,
            TransitionRecord.occurred_at,
            TransitionRecord.id,
        )
        .where(TransitionRecord.instance_id == ids.c.id)
        .order_by(TransitionRecord.occurred_at.desc(), TransitionRecord.id.desc())
        .limit(RECENT_PATH)
    )
    if before:
        steps = steps.where(TransitionRecord.occurred_at <= bindparam("before", type_=UTCDateTime()))
    last = steps.lateral("steps")
    return (
        select(ids.c.id, last.c.from_state, last.c.to_state)
        .select_from(ids)
        .join(last, true())
        .order_by(ids.c.id, last.c.occurred_at, last.c.id)
    )


def _recent_window(instance_ids: Sequence[str], before: datetime | None) -> Select[Any]:
    rank = (
        func.row_number()
        .over(
            partition_by=TransitionRecord.instance_id,
            order_by=(TransitionRecord.occurred_at.desc(), TransitionRecord.id.desc()),
        )
        .label("rank")
    )
    inner = select(
        TransitionRecord.instance_id, TransitionRecord.from_state, TransitionRecord.to_state, rank
    ).where(TransitionRecord.instance_id.in_(list(instance_ids)))
    if before is not None:
        inner = inner.where(TransitionRecord.occurred_at <= before)
    ranked = inner.subquery()
    return (
        select(ranked.c.instance_id, ranked.c.from_state, ranked.c.to_state)
        .where(ranked.c.rank <= RECENT_PATH)
        .order_by(ranked.c.instance_id, ranked.c.rank.desc())
    )


def _timers(raw: Mapping[str, Any], now: datetime) -> list[TimerView]:
    out: list[TimerView] = []
    for name, t in sorted(raw.items()):
        due = datetime.fromisoformat(t["due_at"]) if t.get("due_at") else None
        remaining = timedelta(seconds=int(t["remaining"])) if t.get("remaining") is not None else None
        if due is None and t.get("armed"):
            text = "armed"
        elif due is None:
            text = f"paused, {duration_text(remaining)} left" if remaining else "paused"
        elif due < now:
            text = f"overdue {duration_text(now - due)}"
        else:
            text = f"in {duration_text(due - now)}"
        out.append(
            TimerView(name, str(t.get("event", name)), due, remaining, text, due is not None and due < now)
        )
    out.sort(key=lambda t: (t.due_at is None, t.due_at or datetime.max.replace(tzinfo=now.tzinfo)))
    return out


def _fields(governor: str, data: Mapping[str, Any]) -> list[tuple[str, str]]:
    currency = str(data.get("currency") or "USD")
    out: list[tuple[str, str]] = []
    for label, key in KEY_FIELDS.get(governor, ()):
        text = _field_value(key, revive(data.get(key)), currency)
        if text is not None:
            out.append((label, text))
    return out


def _dom_ids(svg: str, governor: str, prefix: str) -> str:
    """Make a second diagram of the same governor use its own element ids (ids stay unique)."""
    return svg.replace(f'id="gov-{governor}-', f'id="{prefix}gov-{governor}-').replace(
        f'aria-labelledby="gov-{governor}-', f'aria-labelledby="{prefix}gov-{governor}-'
    )


@dataclass(frozen=True)
class _Snap:
    """The state of one instance the cards are drawn from (live row or rebuilt at an instant)."""

    id: str
    tenant_id: str
    customer_id: str | None
    governor: str
    subject_id: str | None
    state: str
    state_seq: int
    version: int
    entered_at: datetime | None
    attention: bool
    attention_reason: str
    data: Mapping[str, Any]
    timers: Mapping[str, Any]
    created_at: datetime | None


def _snap(row: GovernorInstance) -> _Snap:
    return _Snap(
        row.id,
        row.tenant_id,
        row.customer_id,
        row.governor,
        row.subject_id,
        row.state,
        row.state_seq,
        row.version,
        row.entered_at,
        row.attention,
        row.attention_reason,
        dict(row.data or {}),
        dict(row.timers or {}),
        row.created_at,
    )


def _focus(governor: str, state: str) -> str:
    """CSS variables that centre the card's diagram window on the current state (no script needed)."""
    geometry = layout(GOVERNORS[governor])
    try:
        node = geometry.node(state)
    except KeyError:
        node = geometry.nodes[0]
    return f"--w:{geometry.width:.0f}px;--h:{geometry.height:.0f}px;--cx:{node.x:.0f}px;--cy:{node.y:.0f}px"


def _card(snap: _Snap, now: datetime, recent: list[tuple[str | None, str]], first: bool) -> CardView:
    gov = GOVERNORS[snap.governor]
    state_def = next((s for s in gov.states if s.name == snap.state), None)
    svg = render_svg(gov, snap.state, recent, embedded=True)  # the page includes diagram_css() once
    dom_id = f"card-{snap.id}"
    if not first:
        svg = _dom_ids(svg, snap.governor, f"{snap.id}-")
    attention_reason = snap.attention_reason
    if snap.attention and not attention_reason and state_def is not None:
        attention_reason = state_def.attention_reason or ""
    return CardView(
        id=snap.id,
        tenant_id=snap.tenant_id,
        customer_id=snap.customer_id,
        governor=snap.governor,
        title=gov.title,
        subject_id=snap.subject_id,
        state=snap.state,
        state_description=state_def.description if state_def is not None else "",
        version=snap.version,
        state_seq=snap.state_seq,
        entered_at=snap.entered_at,
        in_state=duration_text(now - snap.entered_at) if snap.entered_at else "",
        attention=snap.attention,
        attention_reason=attention_reason,
        terminal=bool(state_def is not None and state_def.terminal),
        timers=_timers(snap.timers, now),
        fields=_fields(snap.governor, snap.data),
        recent=recent,
        svg=svg,
        dom_id=dom_id,
        focus=_focus(snap.governor, snap.state),
        tone=tone(snap.state, snap.attention, bool(state_def is not None and state_def.terminal)),
    )


def merged_actions(
    governor: str, instance: Instance, facts: Facts, roles: Iterable[str]
) -> tuple[AllowedEvent, ...]:
    """The manual actions for a user holding several roles (``services.actions.best_actions``)."""
    if not list(roles):
        return ()
    return tuple(action for action, _ in best_actions(governor, instance, facts, roles).values())


def _attach_actions(
    session: Session,
    cards: Sequence[CardView],
    snapshot: Mapping[str, Instance],
    *,
    roles: Iterable[str],
    user_id: str,
    now: datetime,
    settings: Settings | None,
    known: Mapping[str, Mapping[str, Any]] | None = None,
) -> None:
    held = list(roles)
    for card in cards:
        inst = snapshot[card.id]
        facts = facts_for(
            snapshot, inst, now, settings, session, actor=user_id, known=(known or {}).get(card.id)
        )
        card.actions = merged_actions(card.governor, inst, facts, held)


def _kyc_status(data: Mapping[str, Any]) -> str:
    if data.get("kyc_manual_review"):
        return "manual review"
    if data.get("deactivation_cause") == "kyc_failed":
        return "failed"
    if data.get("is_verified"):
        return "re-verification due" if data.get("kyc_reverification") else "verified"
    return "pending"


def _groups(cards: Sequence[CardView], as_of: datetime | None) -> list[GovernorGroup]:
    groups = []
    for name in GOVERNOR_ORDER:
        mine = [c for c in cards if c.governor == name]
        note = EMPTY_NOTES.get(name, "No instance yet.")
        if as_of is not None:
            note = (
                "SKU states are global: time travel shows the customer's own governors."
                if name == "catalog"
                else "Did not exist yet at this instant."
            )
        groups.append(GovernorGroup(name, GOVERNORS[name].title, mine, "" if mine else note))
    return groups


def _view(
    customer: Customer,
    snaps: Sequence[_Snap],
    recent: Mapping[str, list[tuple[str | None, str]]],
    now: datetime,
    *,
    marker: str,
    jobs: list[JobView],
    jobs_available: bool,
    as_of: datetime | None = None,
) -> CustomerView:
    seen: set[str] = set()
    cards = []
    for snap in snaps:
        cards.append(_card(snap, now, recent.get(snap.id, []), snap.governor not in seen))
        seen.add(snap.governor)
    account = next((s for s in snaps if s.governor == "customer_account"), None)
    data = revive(dict(account.data)) if account else {}
    score = data.get("fraud_score")
    return CustomerView(
        id=customer.id,
        tenant_id=customer.tenant_id,
        tier=customer.tier,
        name=customer.name,
        email=customer.email,
        name_masked=mask_name(customer.name),
        email_masked=mask_email(customer.email),
        created_at=customer.created_at,
        account_state=account.state if account else None,
        account_tone=tone(account.state, account.attention) if account else "quiet",
        kyc_status=_kyc_status(data),
        locked=bool(account and account.state == "locked"),
        fraud_score=f"{score / 10:.1f}" if isinstance(score, int | float) else "–",
        mfa=bool(data.get("two_factor_enabled")),
        attention_count=sum(1 for s in snaps if s.attention and s.governor != "catalog"),
        groups=_groups(cards, as_of),
        jobs=jobs,
        jobs_available=jobs_available,
        marker=marker,
        as_of=as_of,
        cards_by_instance={c.id: c for c in cards},
    )


def customer_overview(
    session: Session,
    customer: Customer,
    *,
    read: CustomerRead | None = None,
    now: datetime,
    roles: Iterable[str] = (),
    user_id: str = "",
    settings: Settings | None = None,
    only: Iterable[str] | None = None,
    redis: Any = None,
) -> CustomerView:
    """The live cockpit of ``customer``: every governor card with its diagram, actions for ``roles``.

    ``only`` limits the cards built to those governors (live updates re-render only what changed).
    ``read``: the customer's ``read_customer`` when the caller has it already (one query less).
    """
    if read is None:
        read = read_customer(session, customer.id)
        if read is None:  # gone since the caller found it
            raise LookupError(f"no customer {customer.id}")
    rows = read.instances
    last_id = read.last_id
    wanted = None if only is None else set(only)
    shown = [r for r in rows if wanted is None or r.governor in wanted]
    recent = read.recent if read.recent is not None else _recent_paths(session, [r.id for r in shown])
    jobs, available, digest = _jobs_and_digest(session, customer.id, redis)
    view = _view(
        customer,
        [_snap(r) for r in shown],
        recent,
        now,
        marker=f"{last_id}.{digest}",
        jobs=jobs,
        jobs_available=available,
    )
    snapshot = {r.id: to_instance(r) for r in rows}
    _attach_actions(
        session,
        list(view.cards_by_instance.values()),
        snapshot,
        roles=roles,
        user_id=user_id,
        now=now,
        settings=settings,
        known=read.known,
    )
    return view


# --------------------------------------------------------------------------- jobs


JOBS_LIMIT = 20
"""How many pending and how many failed jobs the cockpit lists (each)."""


def _jobs_and_digest(
    session: Session, customer_id: str, redis: Any = None
) -> tuple[list[JobView], bool, str]:
    """The customer's pending and failed background work, and the jobs part of the change marker.

    From the database (works with and without Redis): outbox rows not yet handed to the queue, and
    effect runs that failed or were refused. With a Redis connection, the RQ jobs of the customer
    (queued, started, scheduled, failed) from ``webapp.jobs.jobs_for_customer`` are added.

    Both lists come from one UNION ALL (the newest JOBS_LIMIT + 1 of each); while neither is cut off,
    their counts and newest id/time are the digest's inputs, so ``_jobs_digest`` only runs for a
    customer with more than JOBS_LIMIT pending or failed jobs.
    """
    rows = session.execute(_jobs_query(), {"customer_id": customer_id}).all()
    waiting = [r for r in rows if r.kind == "pending"]
    broken = [r for r in rows if r.kind == "failed"]
    if len(waiting) > JOBS_LIMIT or len(broken) > JOBS_LIMIT:
        digest = _jobs_digest(session, customer_id)
    else:
        digest = _digest(
            len(waiting),
            max((r.outbox_id for r in waiting), default=None),
            len(broken),
            max((r.at for r in broken), default=None),
        )
    out = [
        JobView(r.job_id, str(r.name), "pending", f"attempt {r.attempts}" if r.attempts else "", r.at)
        for r in waiting[:JOBS_LIMIT]
    ]
    out += [JobView(r.job_id, r.name, r.status, (r.summary or "")[:300], r.at) for r in broken[:JOBS_LIMIT]]
    if redis is not None:
        try:
            from webapp.jobs import jobs_for_customer

            seen = {j.id for j in out}
            for job in jobs_for_customer(redis, customer_id):
                if job.id in seen or job.status in ("finished", "canceled", "stopped"):
                    continue
                out.append(
                    JobView(job.id, job.effect or "job", job.status, (job.error or "")[-300:], job.created_at)
                )
        except Exception:  # the queue being down must not take the cockpit down
            out.append(JobView("queue", "queue", "unreachable", "the job queue could not be read", None))
    return out, True, digest


@functools.cache
def _jobs_query() -> Any:
    """Pending outbox rows and failed runs of ``:customer_id``: JOBS_LIMIT + 1 newest of each."""
    customer_id = bindparam("customer_id", type_=String)
    pending = (
        select(
            literal("pending").label("kind"),
            OutboxMessage.job_id.label("job_id"),
            func.coalesce(OutboxMessage.args["effect"].as_string(), OutboxMessage.job).label("name"),
            literal("pending").label("status"),
            literal("").label("summary"),
            OutboxMessage.attempts.label("attempts"),
            OutboxMessage.created_at.label("at"),
            OutboxMessage.id.label("outbox_id"),
        )
        .where(OutboxMessage.customer_id == customer_id, OutboxMessage.delivered_at.is_(None))
        .order_by(OutboxMessage.id.desc())
        .limit(JOBS_LIMIT + 1)
        .subquery()
    )
    failed = (
        select(
            literal("failed").label("kind"),
            EffectRun.job_id,
            EffectRun.effect,
            EffectRun.status,
            EffectRun.summary,
            EffectRun.attempts,
            EffectRun.finished_at,
            EffectRun.outbox_id,
        )
        .where(EffectRun.customer_id == customer_id, EffectRun.status.in_(("failed", "rejected")))
        .order_by(EffectRun.finished_at.desc())
        .limit(JOBS_LIMIT + 1)
        .subquery()
    )
    return union_all(select(pending), select(failed))


def _digest(pending: int, newest_pending: int | None, failed: int, newest_failure: datetime | None) -> str:
    """The jobs fingerprint: counts and newest id/time of undelivered outbox rows and failed runs."""
    at = newest_failure.astimezone(UTC).isoformat() if newest_failure is not None else None
    text = f"{pending}:{newest_pending}|{failed}:{at}"
    return hashlib.sha256(text.encode()).hexdigest()[:8]


@functools.cache
def _marker_query() -> Select[Any]:
    """One SELECT of scalar subqueries: newest history id, then the four inputs of the jobs digest."""
    customer_id = bindparam("customer_id", type_=String)
    outbox = (OutboxMessage.customer_id == customer_id, OutboxMessage.delivered_at.is_(None))
    runs = (EffectRun.customer_id == customer_id, EffectRun.status.in_(("failed", "rejected")))
    return select(
        select(func.max(TransitionRecord.id))
        .where(TransitionRecord.customer_id == customer_id)
        .scalar_subquery(),
        select(func.count()).select_from(OutboxMessage).where(*outbox).scalar_subquery(),
        select(func.max(OutboxMessage.id)).where(*outbox).scalar_subquery(),
        select(func.count()).select_from(EffectRun).where(*runs).scalar_subquery(),
        select(func.max(EffectRun.finished_at)).where(*runs).scalar_subquery(),
    )


def _jobs_digest(session: Session, customer_id: str) -> str:
    """A cheap fingerprint of the customer's background work (undelivered outbox, failed runs)."""
    _, pending, newest_pending, failed, newest_failure = session.execute(
        _marker_query(), {"customer_id": customer_id}
    ).one()
    return _digest(int(pending or 0), newest_pending, int(failed or 0), newest_failure)


# --------------------------------------------------------------------------- history


@dataclass(frozen=True)
class HistoryFilters:
    """Timeline filters (empty string = any)."""

    governor: str = ""
    actor: str = ""
    event: str = ""

    def params(self) -> dict[str, str]:
        """The non-empty filters as query parameters."""
        return {
            k: v for k, v in (("governor", self.governor), ("actor", self.actor), ("event", self.event)) if v
        }


@dataclass(frozen=True)
class HistoryPage:
    """A page of the timeline, newest first, and the cursor of the next (older) page."""

    items: list[HistoryItem]
    next_cursor: int | None


_ITEM_COLUMNS = (
    TransitionRecord.id,
    TransitionRecord.instance_id,
    TransitionRecord.governor,
    TransitionRecord.event,
    TransitionRecord.from_state,
    TransitionRecord.to_state,
    TransitionRecord.actor,
    TransitionRecord.role,
    TransitionRecord.reason,
    TransitionRecord.occurred_at,
    TransitionRecord.cause_id,
    TransitionRecord.cascade_id,
    TransitionRecord.approval_id,
)
"""What a timeline row shows (not the payload, changes and timers documents)."""


@functools.cache
def _history_query(
    governor: bool, actor: bool, event: bool, cursor: bool, after_id: bool, before: bool
) -> Select[Any]:
    """The timeline statement for one combination of conditions (built once each, bound at run time)."""
    query: Select[Any] = select(*_ITEM_COLUMNS).where(  # type: ignore[assignment]
        TransitionRecord.customer_id == bindparam("customer_id", type_=String)
    )
    if governor:
        query = query.where(TransitionRecord.governor == bindparam("governor", type_=String))
    if actor:
        who = bindparam("actor", type_=String)
        query = query.where(or_(TransitionRecord.actor == who, TransitionRecord.role == who))
    if event:
        query = query.where(TransitionRecord.event == bindparam("event", type_=String))
    if cursor:
        query = query.where(TransitionRecord.id < bindparam("cursor", type_=BigInteger))
    if after_id:
        query = query.where(TransitionRecord.id > bindparam("after_id", type_=BigInteger))
    if before:
        query = query.where(TransitionRecord.occurred_at <= bindparam("before", type_=UTCDateTime()))
    return query.order_by(TransitionRecord.id.desc()).limit(bindparam("limit", type_=Integer))


def _item(r: Any) -> HistoryItem:
    gov = GOVERNORS.get(r.governor)
    return HistoryItem(
        id=r.id,
        instance_id=r.instance_id,
        governor=r.governor,
        governor_title=gov.title if gov is not None else r.governor,
        event=r.event,
        from_state=r.from_state,
        to_state=r.to_state,
        actor=r.actor,
        role=r.role,
        reason=r.reason,
        occurred_at=r.occurred_at,
        cause_id=r.cause_id,
        cascade_id=r.cascade_id,
        approval_id=r.approval_id,
    )


def history_page(
    session: Session,
    customer_id: str,
    *,
    cursor: int | None = None,
    limit: int = HISTORY_LIMIT,
    filters: HistoryFilters | None = None,
    before: datetime | None = None,
    after_id: int | None = None,
) -> HistoryPage:
    """Transitions of the customer newest first; ``cursor`` is the last id seen (keyset pagination).

    ``before`` hides rows after an instant (time travel); ``after_id`` returns only newer rows.
    """
    filters = filters or HistoryFilters()
    params: dict[str, Any] = {"customer_id": customer_id, "limit": limit + 1}
    params.update(filters.params())
    if cursor is not None:
        params["cursor"] = cursor
    if after_id is not None:
        params["after_id"] = after_id
    if before is not None:
        params["before"] = before
    query = _history_query(
        bool(filters.governor),
        bool(filters.actor),
        bool(filters.event),
        cursor is not None,
        after_id is not None,
        before is not None,
    )
    rows = list(session.execute(query, params))
    more = len(rows) > limit
    rows = rows[:limit]
    return HistoryPage([_item(r) for r in rows], rows[-1].id if more and rows else None)


_CHOICES: OrderedDict[tuple[str, int], dict[str, list[str]]] = OrderedDict()
_CHOICES_MAX = 512
_CHOICES_LOCK = threading.Lock()


def history_choices(session: Session, customer_id: str, last_id: int | None = None) -> dict[str, list[str]]:
    """The governors, actors and events that occur in the customer's history (filter menus).

    With ``last_id`` (the customer's newest history id, from the change marker) the menus are kept in
    a small per-process LRU: history rows are only ever added, and governor, actor and event are never
    rewritten (erasure blanks reasons and payloads only), so the key says when they can change.
    """
    key = (customer_id, last_id) if last_id is not None else None
    if key is not None:
        with _CHOICES_LOCK:
            hit = _CHOICES.get(key)
            if hit is not None:
                _CHOICES.move_to_end(key)
                return {name: list(values) for name, values in hit.items()}
    rows = session.execute(
        select(TransitionRecord.governor, TransitionRecord.actor, TransitionRecord.event)
        .where(TransitionRecord.customer_id == customer_id)
        .group_by(TransitionRecord.governor, TransitionRecord.actor, TransitionRecord.event)
    ).all()
    governors, actors, events = ({row[i] for row in rows} for i in range(3))
    choices = {
        "governor": sorted(governors)[:200],
        "actor": sorted(actors)[:200],
        "event": sorted(events)[:200],
    }
    if key is not None:
        with _CHOICES_LOCK:
            _CHOICES[key] = {name: list(values) for name, values in choices.items()}
            while len(_CHOICES) > _CHOICES_MAX:
                _CHOICES.popitem(last=False)
    return choices


def clear_caches() -> None:
    """Forget the cached filter menus (tests that empty the database reuse customer and history ids)."""
    with _CHOICES_LOCK:
        _CHOICES.clear()


# --------------------------------------------------------------------------- live updates


def last_transition_id(session: Session, customer_id: str) -> int:
    """The newest history id of the customer (0 when none): one index probe."""
    return int(
        session.scalar(
            select(func.max(TransitionRecord.id)).where(TransitionRecord.customer_id == customer_id)
        )
        or 0
    )


def change_marker(session: Session, customer_id: str) -> str:
    """A cheap token that changes whenever the customer's governors or background work change.

    ``<last transition id>.<fingerprint of pending and failed jobs>``: one statement of index probes.
    """
    last, pending, newest_pending, failed, newest_failure = session.execute(
        _marker_query(), {"customer_id": customer_id}
    ).one()
    return f"{int(last or 0)}.{_digest(int(pending or 0), newest_pending, int(failed or 0), newest_failure)}"


def parse_marker(marker: str) -> tuple[int | None, str]:
    """(last transition id, jobs digest) of a marker; (None, "") when it is not one."""
    head, _, jobs = marker.partition(".")
    return (int(head), jobs) if head.isdigit() else (None, "")


def changed_governors(session: Session, customer_id: str, since_id: int) -> list[str]:
    """Governors of the customer with history rows newer than ``since_id``."""
    rows = session.scalars(
        select(TransitionRecord.governor)
        .where(TransitionRecord.customer_id == customer_id, TransitionRecord.id > since_id)
        .distinct()
    )
    return sorted(set(rows))


# --------------------------------------------------------------------------- time travel


def _as_of_snaps(session: Session, customer: Customer, instant: datetime) -> list[_Snap]:
    """The customer's instances as they were at ``instant`` (``history.state_as_of``)."""
    views = state_as_of(session, customer.tenant_id, customer.id, instant)
    snaps = []
    for v in views.values():
        # The history keeps which timers were armed, and their due time only when a snapshot had it.
        timers = {name: {"event": name, "due_at": v.due_at.get(name), "armed": True} for name in v.timers}
        snaps.append(
            _Snap(
                id=v.instance_id,
                tenant_id=customer.tenant_id,
                customer_id=customer.id,
                governor=v.governor,
                subject_id=v.subject_id,
                state=v.state,
                state_seq=v.state_seq,
                version=v.version,
                entered_at=v.entered_at,
                attention=_is_attention_state(v.governor, v.state),
                attention_reason="",
                data=dict(v.data),
                timers=timers,
                created_at=None,
            )
        )
    return snaps


def _is_attention_state(governor: str, state: str) -> bool:
    state_def = next((s for s in GOVERNORS[governor].states if s.name == state), None)
    return bool(state_def is not None and state_def.attention is True)


def customer_as_of(session: Session, customer: Customer, instant: datetime) -> CustomerView:
    """The cockpit as it was at ``instant`` (read-only: no actions, no jobs)."""
    snaps = [s for s in _as_of_snaps(session, customer, instant) if s.governor in GOVERNORS]
    snaps.sort(key=lambda s: (s.governor, s.id))
    recent = _recent_paths(session, [s.id for s in snaps], before=instant)
    return _view(customer, snaps, recent, instant, marker="", jobs=[], jobs_available=False, as_of=instant)
