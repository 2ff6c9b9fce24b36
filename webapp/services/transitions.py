"""The one place that changes governed state: apply an event for an actor in one DB transaction.

Used by the web console, the JSON API, background jobs and the CLI alike. In one transaction it
locks the customer (then the customer's instances, in id order, so two transactions never wait on
each other in opposite orders), checks the idempotency key and ``expected_version``, asks the
engine for the whole cascade plan, and writes new states, history rows, audit entries, due timers,
outbox rows and the idempotency record. Nothing outside the database happens before the commit;
the outbox relay hands the work to RQ afterwards.

Idempotency follows Stripe: the same key with the same body returns the stored response and
applies nothing again; the same key with a different body is a 409. Rejections (stale version,
event not allowed, guard failed) are 409s that change nothing but are still audited.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol, cast

from sqlalchemy import (
    Connection,
    Row,
    Select,
    Table,
    Text,
    bindparam,
    delete,
    false,
    func,
    insert,
    or_,
    select,
    tuple_,
    union_all,
    update,
)
from sqlalchemy import cast as cast_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from governors import (
    Decision,
    Facts,
    Instance,
    Plan,
    Rejection,
    Settings,
    apply,
    default_settings,
    get_governor,
    may_cascade,
    plan,
)
from governors.spec import STAFF_ROLES, frozen_map
from webapp import audit
from webapp.db import JsonBatch, JsonGuard, JsonWrite, begin_with, execute_many, raw_execute, simple_query
from webapp.models import (
    Approval,
    Customer,
    DueTimer,
    GovernorInstance,
    IdempotencyRecord,
    OutboxMessage,
    StateSnapshot,
    TransitionRecord,
)
from webapp.services.facts import legal_hold_exists, world_facts
from webapp.services.instances import instance_from_row, jsonable, next_due, timers_to_json

SNAPSHOT_EVERY = 20
"""A full state snapshot is stored every this many versions of an instance (time travel)."""

HTTP_STATUS = {
    "role_not_allowed": 403,
    "forbidden": 403,
    "not_found": 404,
    "not_created": 404,
    "invalid_input": 422,
    "unknown_event": 422,
}


class ChainMoved(Exception):
    """A write that was to commit found its tenant's audit chain moved since the load: it wrote
    nothing, and committed that, so the event's locks are gone; ``fire_event`` starts it again."""


class TransitionError(Exception):
    """A request that cannot be applied; ``status`` is the HTTP status the API returns."""

    def __init__(self, status: int, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details

    def body(self) -> dict[str, Any]:
        """The JSON error body of INTERFACES.md."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            error["details"] = jsonable(self.details)
        return {"error": error}


@dataclass(frozen=True)
class Actor:
    """Who is acting: a staff user with one of their roles, or the system (``sys``/``timer``)."""

    id: str
    role: str

    @property
    def is_staff(self) -> bool:
        """True for a person (their actions need reasons, four-eyes, role checks)."""
        return self.role in STAFF_ROLES


SYSTEM = Actor("system", "sys")


@dataclass(frozen=True)
class EventRequest:
    """One event to apply. Give ``instance_id``, or ``governor`` (+ customer) for a creation event."""

    tenant_id: str
    event: str
    instance_id: str | None = None
    payload: Mapping[str, Any] = field(default_factory=dict)
    expected_version: int | None = None
    idempotency_key: str | None = None
    governor: str | None = None
    customer_id: str | None = None
    subject_id: str | None = None
    approval_id: str | None = None
    timer: str | None = None
    timer_seq: int | None = None
    timer_due: datetime | None = None

    def fingerprint(self) -> str:
        """Hash of what the caller asked for (idempotency keys are bound to it)."""
        body = {
            "event": self.event,
            "instance_id": self.instance_id,
            "payload": jsonable(self.payload),
            "expected_version": self.expected_version,
            "governor": self.governor,
            "customer_id": self.customer_id,
            "subject_id": self.subject_id,
        }
        return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class EventResult:
    """What happened: ``status`` 200 (applied), 202 (waiting for approval) or an error status."""

    status: int
    body: dict[str, Any]
    replayed: bool = False
    plan: Plan | None = None
    outbox_ids: tuple[int, ...] = ()

    @property
    def ok(self) -> bool:
        """True when the event applied (or was already applied under the same key)."""
        return self.status == 200


FactsHook = Callable[[Session, Mapping[str, Instance], Instance, str], Mapping[str, Any]]
"""Looks up outside-world facts a plan needs (counts, processor confirmations) for one event."""


def _new_id(governor: str) -> str:
    return f"{governor[:4]}-{uuid.uuid4().hex[:20]}"


def decision_json(
    step_index: int,
    d: Decision,
    instance_id: str,
    cascade: str | None,
    cause: int | None,
    changes: Any = None,
) -> dict[str, Any]:
    """A decision as the API returns it (``changes``: ``jsonable(d.changes)`` if already made)."""
    return {
        "step": step_index,
        "governor": d.governor,
        "instance_id": instance_id,
        "event": d.event,
        "row": d.row_id,
        "from_state": d.from_state,
        "to_state": d.to_state,
        "self_transition": d.self_transition,
        "changes": jsonable(d.changes) if changes is None else changes,
        "effects": [{"name": e.name, "args": jsonable(e.args)} for e in d.effects],
        "timers": [
            {
                "op": op.op,
                "name": op.timer.name,
                "event": op.timer.event,
                "due_at": op.timer.due_at.isoformat() if op.timer.due_at else None,
                "remaining_seconds": int(op.timer.remaining.total_seconds()) if op.timer.remaining else None,
            }
            for op in d.timer_ops
        ],
        "cascade": cascade,
        "cause_step": cause,
        "attention": d.attention,
    }


def plan_json(
    result: Plan, ids: Mapping[str, str] | None = None, changes: Mapping[int, Any] | None = None
) -> dict[str, Any]:
    """The whole plan (applied steps, ignored cascades, alerts) for previews and responses.

    ``changes``: step index → its decision's changes as JSON, where the caller has them already.
    """
    ids = ids or {}
    changes = changes or {}
    steps: list[dict[str, Any]] = []
    for s in result.steps:
        real = ids.get(s.instance_id, s.instance_id)
        if isinstance(s.outcome, Decision):
            item = decision_json(s.index, s.outcome, real, s.cascade, s.cause, changes.get(s.index))
        else:
            item = {
                "step": s.index,
                "governor": s.governor,
                "instance_id": real,
                "event": s.event,
                "cascade": s.cascade,
                "cause_step": s.cause,
            }
            if isinstance(s.outcome, Rejection):
                item["rejection"] = {"code": s.outcome.code, "message": s.outcome.message}
        item["status"] = s.status
        steps.append(item)
    return {"steps": steps, "alerts": list(result.alerts), "ok": result.ok}


# --------------------------------------------------------------------------- loading and locking


_INSTANCES = cast(Table, GovernorInstance.__table__)
_CUSTOMERS = cast(Table, Customer.__table__)
_HISTORY = cast(Table, TransitionRecord.__table__)
_SNAPSHOTS = cast(Table, StateSnapshot.__table__)
_DUE = cast(Table, DueTimer.__table__)
_OUTBOX = cast(Table, OutboxMessage.__table__)
_IDEMPOTENCY = cast(Table, IdempotencyRecord.__table__)

# The hot path reads and writes plain rows (Core), not ORM objects: one event touches a handful of
# rows a handful of times, and the unit of work's bookkeeping cost more than the SQL itself.
_LOAD: Select[Any] = select(
    _INSTANCES.c.id,
    _INSTANCES.c.tenant_id,
    _INSTANCES.c.customer_id,
    _INSTANCES.c.governor,
    _INSTANCES.c.subject_id,
    _INSTANCES.c.state,
    _INSTANCES.c.state_seq,
    _INSTANCES.c.version,
    _INSTANCES.c.entered_at,
    # As JSON text: rows already seen decode from a cache (instance_from_row), not afresh.
    cast_(_INSTANCES.c.data, Text).label("data"),
    cast_(_INSTANCES.c.timers, Text).label("timers"),
)
_UPDATE_INSTANCE = update(_INSTANCES).where(_INSTANCES.c.id == bindparam("b_id"))
# The target and the catalog rows (which every plan sees) in one round trip.
_TARGET_AND_CATALOG = _LOAD.where(
    or_(_INSTANCES.c.id == bindparam("instance_id"), _INSTANCES.c.governor == "catalog")
)
# ... and, in the same round trip, the lock on the target's customer (the first lock an event takes):
# the server locks the row when the first result row needs ``locked_customer``. The instances are
# locked by the next statement, whose snapshot is taken once this lock is held.
_TARGETS_OWNER = (
    select(_CUSTOMERS.c.id)
    .where(
        _CUSTOMERS.c.id
        == select(_INSTANCES.c.customer_id)
        .where(_INSTANCES.c.id == bindparam("instance_id"))
        .scalar_subquery(),
        _CUSTOMERS.c.tenant_id == bindparam("tenant_id"),
    )
    .with_for_update()
    .cte("owner")
)
_TARGET_AND_CATALOG_LOCKING_OWNER = _TARGET_AND_CATALOG.add_columns(
    select(_TARGETS_OWNER.c.id).scalar_subquery().label("locked_customer")
)
_CATALOG = _LOAD.where(_INSTANCES.c.governor == "catalog")
_OWNER = (
    select(_CUSTOMERS.c.id)
    .where(_CUSTOMERS.c.id == bindparam("customer_id"), _CUSTOMERS.c.tenant_id == bindparam("tenant_id"))
    .with_for_update()
)
# Two statements, not one: the instances' statement must start after the customer lock is granted,
# so that its snapshot sees instances a transaction that held the lock has just created.
# Each row also says whether a legal hold stands on the customer (a fact every plan reads), so the
# default facts lookup needs no round trip of its own.
_LOCK_INSTANCES = (
    _LOAD.add_columns(legal_hold_exists(bindparam("customer_id")).label("on_hold"))
    .where(_INSTANCES.c.customer_id == bindparam("customer_id"))
    .order_by(_INSTANCES.c.id)
    .with_for_update(of=_INSTANCES)
)
_LOCK_INSTANCE = select(_INSTANCES.c.id).where(_INSTANCES.c.id == bindparam("instance_id")).with_for_update()
_STORED = select(_IDEMPOTENCY.c.request_hash, _IDEMPOTENCY.c.status_code, _IDEMPOTENCY.c.response).where(
    _IDEMPOTENCY.c.tenant_id == bindparam("tenant_id"), _IDEMPOTENCY.c.key == bindparam("key")
)
_REMEMBER = insert(_IDEMPOTENCY).inline()
_INSERT_INSTANCES = insert(_INSTANCES).inline()
_INSERT_HISTORY = insert(_HISTORY).inline()
_INSERT_SNAPSHOTS = insert(_SNAPSHOTS).inline()
_INSERT_DUE = insert(_DUE).inline()
_DELETE_DUE = delete(_DUE).where(
    tuple_(_DUE.c.instance_id, _DUE.c.name).in_(bindparam("keys", expanding=True))
)
_INSERT_OUTBOX = insert(_OUTBOX).inline()
# Inline inserts: no implicit RETURNING of generated keys. Inside a pipelined batch nothing may be
# read back, so the ids a plan needs (history, outbox) are handed out before it is written.
# ... and the audit heads the plan appends to are locked in the same round trip (sorted as Python
# sorts, the order every head lock follows; a head not created yet is simply not in the result).
# The counts are read through scalar subqueries, which the planner does not fold into
# its estimates: every call then has the same plan, so the server plans the prepared statement once
# (with the values visible, generate_series' row estimate changed per call and it re-planned each
# time, which cost more than running it).
_NEXT_IDS_LOCKING_HEADS = (
    "WITH ids AS MATERIALIZED ("
    "SELECT ARRAY(SELECT nextval('transitions_id_seq')"
    " FROM generate_series(1, (SELECT CAST($1 AS int)))) AS history,"
    " ARRAY(SELECT nextval('outbox_id_seq') FROM generate_series(1, (SELECT CAST($2 AS int)))) AS outbox)"
    " SELECT ids.history, ids.outbox, heads.tenant_id, heads.seq, heads.hash FROM ids LEFT JOIN LATERAL"
    " (SELECT tenant_id, seq, hash FROM audit_heads WHERE tenant_id = ANY(CAST($3 AS text[]))"
    ' ORDER BY tenant_id COLLATE "C" FOR UPDATE) AS heads ON true'
)


def _connection(session: Session) -> Connection:
    """The session's connection, after flushing the caller's pending ORM changes (Core skips autoflush)."""
    session.flush()
    return session.connection()


def _load_target(
    session: Session, req: EventRequest, *, lock_owner: bool = False
) -> tuple[Row[Any] | None, list[Row[Any]], bool]:
    """The request's target row (None for a creation event), the catalog rows (unlocked reads), and
    whether the target's customer is now locked (``lock_owner``: locked in the same round trip)."""
    if req.instance_id is None:
        return None, _catalog(session), False
    query = _TARGET_AND_CATALOG_LOCKING_OWNER if lock_owner else _TARGET_AND_CATALOG
    params = {"instance_id": req.instance_id, "tenant_id": req.tenant_id}
    rows = list(_connection(session).execute(query, params))
    row = next((r for r in rows if r.id == req.instance_id), None)
    if row is None or row.tenant_id != req.tenant_id:
        raise TransitionError(404, "not_found", "no such governor instance")
    locked = lock_owner and row.customer_id is not None and row.locked_customer == row.customer_id
    return row, [r for r in rows if r.governor == "catalog"], locked


_KEYED_PLANS = (
    "SET LOCAL plan_cache_mode = force_generic_plan; SET LOCAL enable_seqscan = off;"
    " SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off; "
)
"""How an event's transaction has its statements planned; sent ahead of its load.

Every row an event reads or writes is found by key (an instance id, a customer, a tenant's audit
head, a timer's instance and name), and its statements are the same few, prepared (psycopg) or in
PL/pgSQL, with the rows as a JSON parameter. Left to itself the planner (1) keeps making a custom
plan for each execution, because the parameter is a different document every time, and (2) joins
the ``jsonb_to_recordset`` rows, which it guesses at 100, to a small table (a young marketplace,
the benchmark's 300 instances) by a sequential scan and a hash join, or, those refused, by a merge
join that reads the table's whole index. Both cost the server more than the event's writes
themselves. Generic plans: 23 % less PostgreSQL CPU per event (30 paired blocks of 100 events,
all 30 lower); then nested loops over index probes instead of merge joins: 11 % less again (25 of
30 lower). On large tables the planner chooses such plans by itself. ``SET LOCAL`` ends with the
transaction (what a caller runs after the event in the same transaction is planned this way too,
and works the same, if perhaps more slowly)."""
_EVENT_ROWS = "SELECT * FROM governor_event_rows(%s, %s)"
"""The target, the catalog and the customer's instances, locked customer first (migration 0013);
sent after ``_KEYED_PLANS``, with the transaction's BEGIN (``webapp.db.begin_with``) or, in a
transaction already open, in a query of its own (``webapp.db.simple_query``)."""
_EVENT_LOAD = "SELECT * FROM governor_event_load(%s, %s, %s, %s)"
"""``_EVENT_ROWS`` and then a ``Reservation``'s row (kind ``r``: ids, and the tenant's audit head as it
stands, not locked), one result (migration 0014); sent with the transaction's BEGIN."""

_KEY_READ = (
    "; SELECT request_hash, status_code, response FROM idempotency_records WHERE tenant_id = %s AND key = %s"
)
"""The idempotency record of an event's key, read in the load's query after it (so under its locks)."""

RESERVE_AT_MOST = 32
"""The most history or outbox ids a load reserves for an event (an event that needs more allocates)."""
_RESERVE_HINTS: dict[str, tuple[int, int]] = {}
"""Event name → the most history and outbox ids an event of that name has needed in this process
(names of events that were planned only, so the keys are the governors' event names)."""


CONTENDED_SECONDS = 5.0
"""How long a tenant whose chain moved under a reservation has its heads locked up front instead."""
_CONTENDED: dict[str, float] = {}
"""Tenant → until when (``time.monotonic``) its events allocate and lock instead of reserving: where
events of one tenant run concurrently, a reservation's head has mostly moved by the write, and the
guarded write would be sent twice (the second time under the lock the first one took)."""


@dataclass
class Reservation:
    """What an event is expected to need, read in its load's round trip instead of one of its own.

    Ids from the sequences, as many as events of this name have needed before (``_RESERVE_HINTS``),
    and the audit head of the request's tenant as it stood, unlocked. If the plan's entries all go to
    that chain and the ids suffice, the plan takes them (``taken``) and chains onto that head, and
    the write is conditional on the head not having moved (``JsonGuard``): a write that finds it
    moved writes nothing, and the service chains again onto the head that statement has locked and
    writes again, so a contended chain costs the round trip the allocation would have cost (and its
    tenant's events allocate instead for a while, ``CONTENDED_SECONDS``). Ids not taken are a gap
    in the sequences, as a rolled-back transaction's are.
    """

    event: str
    tenant_id: str
    history: list[int]
    outbox: list[int]
    head: audit.Head | None
    taken: bool = False


@dataclass(frozen=True)
class KeyRead:
    """The event's idempotency record as the load's query read it, after the load's locks (or None)."""

    record: Row[Any] | None


def _loads_in_one_query(connection: Connection, req: EventRequest) -> bool:
    """Whether the load is the one-query PostgreSQL load (which reads the event's key with it)."""
    return req.instance_id is not None and connection.dialect.name == "postgresql"


def _load_and_lock(
    session: Session, req: EventRequest
) -> tuple[Row[Any] | None, list[Any], list[Any], Reservation | None, KeyRead | None]:
    """The target row, the catalog rows and the customer's instances, locked (customer first), a
    ``Reservation`` when the load went out with the transaction's BEGIN, and the event's key's
    record when it has a key and the load is the one-query load.

    On PostgreSQL, for an event on an existing instance, one call of ``governor_event_rows`` does
    both steps server-side: it locks the customer, then reads the instances with a statement of
    their own (its snapshot taken once the lock is held, so instances a transaction that held the
    lock has just created are seen), as two statements sent one after the other would.
    """
    connection = _connection(session)
    if not _loads_in_one_query(connection, req):
        target_row, catalog, owner_locked = _load_target(session, req, lock_owner=True)
        customer_id = target_row.customer_id if target_row is not None else req.customer_id
        locked = _lock_customer(session, req.tenant_id, customer_id, locked=owner_locked)
        return target_row, catalog, locked, None, None
    params: tuple[Any, ...] = (req.instance_id, req.tenant_id)
    key_read, key_params = (
        ("", ()) if not req.idempotency_key else (_KEY_READ, (req.tenant_id, req.idempotency_key))
    )
    hint = _RESERVE_HINTS.get(req.event)
    if hint is not None and _CONTENDED.get(req.tenant_id, 0.0) > time.monotonic():
        hint = None  # its chain keeps moving under reservations: lock the head up front (allocate)
    if hint is None:
        load, load_params = _EVENT_ROWS, params
    else:
        load, load_params = _EVENT_LOAD, (*params, *hint)
    cursor = begin_with(connection, _KEYED_PLANS + load + key_read, (*load_params, *key_params), named=True)
    reservation = None
    if cursor is None:  # the caller's transaction is already open: no reservation (see Reservation)
        sql, sent = _KEYED_PLANS + _EVENT_ROWS + key_read, (*params, *key_params)
        cursor = simple_query(connection, sql, sent, named=True)
        rows = cursor.fetchall()
    else:
        rows = cursor.fetchall()
        r = rows.pop() if rows and rows[-1].kind == "r" else None  # only when ids were asked for
        reservation = Reservation(
            req.event,
            req.tenant_id,
            r.history if r is not None else [],
            r.outbox if r is not None else [],
            audit.Head(int(r.head_seq), str(r.head_hash))
            if r is not None and r.head_seq is not None
            else None,
        )
    key = None
    if key_read:
        cursor.nextset()  # the key's record, read after the load took its locks
        key = KeyRead(cursor.fetchone())
    row = next((r for r in rows if r.kind == "t"), None)
    if row is None or row.tenant_id != req.tenant_id:
        raise TransitionError(404, "not_found", "no such governor instance")
    catalog = [r for r in rows if r.kind != "i" and r.governor == "catalog"]
    if row.customer_id is None:
        return row, catalog, [], None, key  # a catalog target: its plan may reach other tenants' chains
    instances = [r for r in rows if r.kind == "i"]
    if not instances:  # the customer was not found in the tenant
        instances = _lock_customer(session, req.tenant_id, row.customer_id)  # 404: no such customer
    return row, catalog, instances, reservation, key


def _lock_customer(
    session: Session, tenant_id: str, customer_id: str | None, *, locked: bool = False
) -> list[Row[Any]]:
    """Lock the customer row (unless ``locked`` already), then its instances in id order; return them."""
    if customer_id is None:
        return []
    connection = _connection(session)
    if (
        not locked
        and connection.execute(_OWNER, {"customer_id": customer_id, "tenant_id": tenant_id}).first() is None
    ):
        raise TransitionError(404, "not_found", "no such customer")
    return list(connection.execute(_LOCK_INSTANCES, {"customer_id": customer_id}))


def _catalog(session: Session) -> list[Row[Any]]:
    return list(_connection(session).execute(_CATALOG))


def _stored(session: Session, tenant_id: str, key: str, fingerprint: str) -> EventResult | None:
    record = _connection(session).execute(_STORED, {"tenant_id": tenant_id, "key": key}).first()
    return _replayed(record, fingerprint)


def _replayed(record: Any, fingerprint: str) -> EventResult | None:
    """The stored answer of an idempotency ``record`` (None: no record), or 409 for another body."""
    if record is None:
        return None
    if record.request_hash != fingerprint:
        raise TransitionError(
            409,
            "idempotency_key_reused",
            "this Idempotency-Key was already used with a different request body",
        )
    return EventResult(record.status_code, dict(record.response), replayed=True)


def _add_rows(snapshot: dict[str, Instance], tenants: dict[str, str], rows: Sequence[Row[Any]]) -> None:
    """Add stored rows to the plan's snapshot (the first copy of a row wins) and note their tenants."""
    for r in rows:
        if r.id not in snapshot:
            snapshot[r.id] = instance_from_row(r)
            tenants[r.id] = r.tenant_id


# --------------------------------------------------------------------------- stores


@dataclass
class Loaded:
    """What an event's plan starts from: every instance it may see, and whose they are."""

    snapshot: dict[str, Instance]
    """Instance id → instance: the customer's governors, the catalog, the target (SKU holders too
    for a catalog target)."""
    tenants: dict[str, str]
    """Instance id → tenant (whose audit chain its transitions go to)."""
    target_id: str | None
    """The request's instance (None for a creation event)."""
    customer_id: str | None
    """The target's customer (or the creation event's)."""
    legal_hold: bool | None = None
    """Whether a legal hold stands on the customer, when the load has read it."""
    reservation: Reservation | None = None
    """Ids and an audit head read with the load, for the store's ``allocate`` and ``write``."""
    key: KeyRead | None = None
    """The event's idempotency record, when the load read it (after its locks)."""


class Store(Protocol):
    """Where the service reads and writes rows. ``SQL_STORE`` (the database) serves every caller;
    the seed's ``BulkStore`` keeps the customers it is creating in memory and writes them in bulk."""

    def load(self, session: Session, req: EventRequest) -> Loaded:
        """The plan's starting point, with the rows it will change locked."""
        ...

    def allocate(
        self, session: Session, loaded: Loaded, history: int, outbox: int, chains: Iterable[str]
    ) -> tuple[list[int], list[int]]:
        """Ids for new history and outbox rows of the plan from ``loaded``; the audit heads of
        ``chains`` are to be appended to."""
        ...

    def write(
        self,
        session: Session,
        loaded: Loaded,
        rows: dict[str, list[dict[str, Any]]],
        entries: Sequence[tuple[str, audit.NewEntry]],
        *,
        commit: bool = False,
    ) -> None:
        """Write a plan's rows (keys as ``_WRITES``, but for the audit rows and head moves) and its
        audit ``entries``, chained. ``commit``: end the transaction with the write (a store that
        cannot, refuses); raises ``ChainMoved`` when that write had to be given up, uncommitted."""
        ...

    def sync(self, session: Session) -> None:
        """Make the database current before the service writes through the session directly
        (rejections, approval requests, refused timers)."""
        ...


class SqlStore:
    """The database as the store: loads lock the customer and its instances (see the module)."""

    def load(self, session: Session, req: EventRequest) -> Loaded:
        target_row, catalog, rows, reservation, key = _load_and_lock(session, req)
        customer_id = target_row.customer_id if target_row is not None else req.customer_id
        if target_row is not None and target_row.governor == "catalog" and customer_id is None:
            session.connection().execute(_LOCK_INSTANCE, {"instance_id": target_row.id})
            catalog = _catalog(session)  # again, under the lock: the target must be read as locked
        snapshot: dict[str, Instance] = {}
        tenants: dict[str, str] = {}
        _add_rows(snapshot, tenants, rows)
        _add_rows(snapshot, tenants, catalog)
        if target_row is not None:
            _add_rows(snapshot, tenants, [target_row])
            if target_row.governor == "catalog" and may_cascade("catalog", target_row.state, req.event):
                _add_rows(snapshot, tenants, _sku_holders(session, target_row.subject_id))
        return Loaded(
            snapshot,
            tenants,
            target_row.id if target_row is not None else None,
            customer_id,
            bool(rows[0].on_hold) if rows else None,
            reservation,
            key,
        )

    def allocate(
        self, session: Session, loaded: Loaded, history: int, outbox: int, chains: Iterable[str]
    ) -> tuple[list[int], list[int]]:
        r = loaded.reservation
        if r is not None:
            hint = _RESERVE_HINTS.get(r.event, (0, 0))
            if history > hint[0] or outbox > hint[1]:  # next time, reserve what this one needed
                _RESERVE_HINTS[r.event] = (
                    min(max(hint[0], history), RESERVE_AT_MOST),
                    min(max(hint[1], outbox), RESERVE_AT_MOST),
                )
            tenants = set(chains)
            if (
                r.head is not None
                and history <= len(r.history)
                and outbox <= len(r.outbox)
                and tenants <= {r.tenant_id}
            ):
                r.taken = True
                return r.history[:history], r.outbox[:outbox]
        return allocate_ids(session, history, outbox, chains)

    def write(
        self,
        session: Session,
        loaded: Loaded,
        rows: dict[str, list[dict[str, Any]]],
        entries: Sequence[tuple[str, audit.NewEntry]],
        *,
        commit: bool = False,
    ) -> None:
        connection = session.connection()
        r = loaded.reservation
        if r is not None and r.taken and r.head is not None and entries:
            read = r.head
            audit_rows, moves = audit.chain_onto({r.tenant_id: audit.Head(read.seq, read.hash)}, entries)
            expect = [{"tenant_id": r.tenant_id, "seq": read.seq, "hash": read.hash}]
            guarded = {**rows, **chained(audit_rows, moves), "expect": expect}
            found = write_rows(connection, guarded, commit=commit)
            assert found is not None
            if found and found[0][-1]:  # written: the head was where it was read, and is locked now
                if commit:
                    audit.forget_locked_heads(session)  # committed: nothing is locked any more
                else:
                    audit.adopt_locked_heads(session, [(m["t"], m["s"], m["h"]) for m in moves])
                return
            _CONTENDED[r.tenant_id] = time.monotonic() + CONTENDED_SECONDS
            if commit:
                # The empty write was committed and its locks went with it: the event starts again.
                raise ChainMoved(r.tenant_id)
            # The chain moved since the load; the statement locked its head: chain onto it, write.
            audit.adopt_locked_heads(session, [(t, seq, digest) for t, seq, digest, _ in found])
        write_rows(connection, {**rows, **chained(*audit.chain_rows(session, entries))}, commit=commit)
        if commit:
            audit.forget_locked_heads(session)

    def sync(self, session: Session) -> None:
        return None


SQL_STORE: Store = SqlStore()


def chained(audit_rows: list[dict[str, Any]], moves: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The audit part of a plan's write set, from ``audit.chain_rows``' entry rows and head moves."""
    return {
        "audit": audit_rows,
        "heads": [{"tenant_id": m["t"], "seq": m["s"], "hash": m["h"]} for m in moves],
    }


# --------------------------------------------------------------------------- the service


def fire_event(
    session: Session,
    req: EventRequest,
    actor: Actor,
    now: datetime,
    *,
    settings: Settings | None = None,
    facts_hook: FactsHook | None = None,
    approved_by: str | None = None,
    store: Store | None = None,
    commit: bool = False,
) -> EventResult:
    """Apply ``req`` for ``actor`` inside ``session``'s transaction (the caller commits).

    Returns the result; a rejection is also a result (4xx status, audited, nothing applied). Raises
    TransitionError only for requests that name nothing (404) or misuse an idempotency key (409).
    ``store``: where rows are read and written (default: the database, locking as described above;
    the seed passes a ``webapp.services.seed_store.BulkStore`` for customers it is creating).

    ``commit=True`` is for a caller whose transaction ends with the event (the JSON API, the
    console's action form: nothing more to be written in it afterwards): on PostgreSQL an applied
    event's write then carries the COMMIT in its round trip (``webapp.db.execute_committing``), with
    whatever the transaction wrote before the event, and the caller's own commit sends nothing. Not
    inside a savepoint (the caller's commit commits as usual). Rejections and approval requests are
    committed by the caller as usual.
    """
    from webapp.metrics import observe_decision

    started = time.perf_counter()
    for attempt in range(1, 4):
        try:
            result = _fire_event(
                session,
                req,
                actor,
                now,
                settings=settings,
                facts_hook=facts_hook,
                approved_by=approved_by,
                store=store,
                commit=commit and _may_commit(session),
            )
            break
        except ChainMoved:
            # Nothing was written and the transaction is over; the tenant is marked contended, so
            # this time the load locks its chain's head before the write (no guard, no retry).
            if attempt == 3:
                raise
    root = result.plan.root if result.plan is not None else None
    observe_decision(
        root.governor if root is not None else req.governor or "unknown", time.perf_counter() - started
    )
    return result


def _fire_event(
    session: Session,
    req: EventRequest,
    actor: Actor,
    now: datetime,
    *,
    settings: Settings | None = None,
    facts_hook: FactsHook | None = None,
    approved_by: str | None = None,
    store: Store | None = None,
    commit: bool = False,
) -> EventResult:
    """Apply ``req`` (see ``fire_event``; ``commit``: this session may commit with the write)."""
    # What an idempotency key is bound to; without a key nothing is stored, so nothing to hash.
    fingerprint = req.fingerprint() if req.idempotency_key else ""
    store = store or SQL_STORE
    # A replay is answered before anything is locked, unless the load reads the key anyway (the
    # one-query load: then it is read once, after the locks, in the load's round trip).
    if req.idempotency_key and not (store is SQL_STORE and _loads_in_one_query(_connection(session), req)):
        replay = _stored(session, req.tenant_id, req.idempotency_key, fingerprint)
        if replay is not None:
            return replay

    loaded = store.load(session, req)
    if req.idempotency_key:
        # Checked (again) under the lock: a concurrent request with the same key may have won.
        if loaded.key is not None:
            replay = _replayed(loaded.key.record, fingerprint)
        else:
            replay = _stored(session, req.tenant_id, req.idempotency_key, fingerprint)
        if replay is not None:
            return replay

    snapshot, customer_id = loaded.snapshot, loaded.customer_id
    if loaded.target_id is not None:
        target: Instance = snapshot[loaded.target_id]
    else:
        if req.governor is None:
            raise TransitionError(
                422, "invalid_input", "name an instance, or a governor for a creation event"
            )
        try:
            get_governor(req.governor)
        except KeyError as exc:
            raise TransitionError(404, "not_found", str(exc)) from None
        target = Instance(
            governor=req.governor,
            id=_new_id(req.governor),
            customer_id=customer_id,
            subject_id=req.subject_id,
        )

    if (
        req.expected_version is not None
        and target.state is not None
        and req.expected_version != target.version
    ):
        store.sync(session)
        return _reject(
            session,
            req,
            actor,
            now,
            target,
            fingerprint,
            TransitionError(
                409,
                "stale_version",
                f"this {get_governor(target.governor).title} changed since you loaded it "
                f"(version {target.version}, you had {req.expected_version}); reload and try again",
                current_version=target.version,
                current_state=target.state,
            ),
        )

    if req.timer is not None and not _timer_current(target, req):
        # The instance no longer holds this arming of the timer (fired already, re-armed, or the state
        # was left): a duplicate or late delivery, discarded without touching anything.
        return EventResult(409, TransitionError(409, "stale_timer", "the timer is no longer armed").body())

    if facts_hook is not None:
        extra = dict(facts_hook(session, snapshot, target, req.event))
    else:
        # The customer's legal hold was read along with its locked instances (when it has any).
        known = (
            {"legal_hold": loaded.legal_hold}
            if loaded.legal_hold is not None and target.customer_id == customer_id
            else None
        )
        extra = world_facts(session, snapshot, target, req.event, known=known, payload=req.payload)
    payload = dict(req.payload)
    facts = Facts(
        now=now,
        role=actor.role,
        actor=actor.id,
        payload=frozen_map(payload),
        extra=frozen_map(extra),
        settings=settings,
        approved_by=approved_by,
        timer=req.timer,
        timer_seq=req.timer_seq,
    )
    result = plan(snapshot, target, req.event, facts, new_id=_new_id)
    root = result.root
    if isinstance(root, Rejection):
        store.sync(session)
        if req.timer is not None and loaded.target_id is not None:
            _consume_timer(session, target, req.timer)
        status = HTTP_STATUS.get(root.code, 409)
        return _reject(
            session,
            req,
            actor,
            now,
            target,
            fingerprint,
            TransitionError(status, root.code, root.message, **dict(root.details)),
        )
    assert isinstance(root, Decision)
    if root.needs_approval is not None:
        store.sync(session)
        expiry = (settings or default_settings()).duration("engine.approval_expiry")
        return _request_approval(session, req, actor, now, target, fingerprint, result, expiry)

    def respond(ids: Mapping[str, str], changes: Mapping[int, Any]) -> dict[str, Any]:
        return {
            "decisions": list(plan_json(result, ids, changes)["steps"]),
            "alerts": list(result.alerts),
            "instance_id": ids.get(target.id, target.id),
        }

    body, outbox_ids = _execute(session, store, req, now, result, loaded, respond, fingerprint, commit=commit)
    return EventResult(200, body, plan=result, outbox_ids=tuple(outbox_ids))


def _may_commit(session: Session) -> bool:
    """Whether the event's write may commit ``session``'s transaction: PostgreSQL, and no savepoint
    (its release is the caller's). ORM changes made before the event are flushed by its load
    (``_connection``), so they commit with it, as they would have with the caller's commit."""
    return session.get_bind().dialect.name == "postgresql" and not session.in_nested_transaction()


def _sku_holders(session: Session, sku_id: str | None) -> list[Row[Any]]:
    """The live entitlements of a SKU and their customers' subscriptions (a catalog plan's peers),
    locked FOR UPDATE in id order.

    The catalog event writes these rows without holding their customers' locks, so it must hold the
    rows' own: otherwise a customer's event committing between this read and the catalog's write
    (a lock suspending the same entitlement) would be overwritten by a plan made from the older row.
    A customer's event locks its customer and then all its instances in id order, and never the
    catalog's rows; this locks a subset of the same rows in the same order: neither can wait on the
    other in a cycle. Under READ COMMITTED a row changed meanwhile is read as committed, once locked.
    """
    if sku_id is None:
        return []
    live = (
        _INSTANCES.c.governor == "entitlement",
        _INSTANCES.c.subject_id == sku_id,
        _INSTANCES.c.state != "archived",
    )
    # The customers as a subquery, not a list of parameters: a popular SKU has more holders than a
    # statement may carry parameters (65,535; seen with a 100,000-customer seed).
    # One locking statement over both sets, so that all its locks are taken in id order; each set is
    # found by its own index (an OR of the two would read every subscription).
    holders = select(_INSTANCES.c.customer_id).where(*live).scalar_subquery()
    peers = union_all(
        select(_INSTANCES.c.id).where(*live),
        select(_INSTANCES.c.id).where(
            _INSTANCES.c.governor == "subscription", _INSTANCES.c.customer_id.in_(holders)
        ),
    )
    locking = _LOAD.where(_INSTANCES.c.id.in_(peers)).order_by(_INSTANCES.c.id).with_for_update(of=_INSTANCES)
    return list(session.connection().execute(locking))


def _remember(
    session: Session, req: EventRequest, fingerprint: str, status: int, body: dict[str, Any], now: datetime
) -> None:
    record = _record(req, fingerprint, status, body, now)
    if record is not None:
        session.connection().execute(_REMEMBER, record)


def _record(
    req: EventRequest, fingerprint: str, status: int, body: dict[str, Any], now: datetime
) -> dict[str, Any] | None:
    """The idempotency record of the response (None without an Idempotency-Key)."""
    if not req.idempotency_key:
        return None
    return {
        "tenant_id": req.tenant_id,
        "key": req.idempotency_key,
        "request_hash": fingerprint,
        "status_code": status,
        "response": jsonable(body),
        "created_at": now,
    }


def _reject(
    session: Session,
    req: EventRequest,
    actor: Actor,
    now: datetime,
    target: Instance,
    fingerprint: str,
    error: TransitionError,
) -> EventResult:
    """Audit a rejection and remember it under the idempotency key; nothing else changes."""
    audit.append(
        session,
        req.tenant_id,
        actor=actor.id,
        role=actor.role,
        action="transition.rejected",
        occurred_at=now,
        customer_id=target.customer_id,
        instance_id=None if target.state is None else target.id,
        payload={
            "governor": target.governor,
            "event": req.event,
            "state": target.state,
            "code": error.code,
            "message": error.message,
        },
    )
    body = error.body()
    _remember(session, req, fingerprint, error.status, body, now)
    return EventResult(error.status, body)


def _request_approval(
    session: Session,
    req: EventRequest,
    actor: Actor,
    now: datetime,
    target: Instance,
    fingerprint: str,
    result: Plan,
    expiry: timedelta = timedelta(hours=24),
) -> EventResult:
    root = result.root
    assert isinstance(root, Decision) and root.needs_approval is not None
    approval_id = f"apr-{uuid.uuid4().hex[:20]}"
    approval = Approval(
        id=approval_id,
        tenant_id=req.tenant_id,
        customer_id=target.customer_id,
        instance_id=target.id,
        governor=target.governor,
        event=req.event,
        payload=jsonable(req.payload),
        input_hash=approval_input_hash(target.id, req.event, req.payload),
        preview=plan_json(result),
        state_seq=target.state_seq,
        version=target.version,
        requested_by=actor.id,
        requester_role=actor.role,
        approver_roles=list(root.needs_approval.approvers),
        status="pending",
        created_at=now,
        expires_at=now + expiry,
    )
    session.add(approval)
    audit.append(
        session,
        req.tenant_id,
        actor=actor.id,
        role=actor.role,
        action="approval.requested",
        occurred_at=now,
        customer_id=target.customer_id,
        instance_id=target.id,
        payload={
            "approval_id": approval_id,
            "governor": target.governor,
            "event": req.event,
            "approvers": list(root.needs_approval.approvers),
            "input_hash": approval.input_hash,
        },
    )
    body = {
        "approval_id": approval_id,
        "approvers": list(root.needs_approval.approvers),
        "expires_at": approval.expires_at.isoformat(),
        "preview": plan_json(result),
    }
    _remember(session, req, fingerprint, 202, body, now)
    return EventResult(202, body, plan=result)


def approval_input_hash(instance_id: str, event: str, payload: Mapping[str, Any]) -> str:
    """The hash an approval is bound to: the exact instance, event and inputs."""
    body = json.dumps(
        {"instance_id": instance_id, "event": event, "payload": jsonable(payload)}, sort_keys=True
    )
    return hashlib.sha256(body.encode()).hexdigest()


def _consume_timer(session: Session, target: Instance, name: str) -> None:
    """A timer the engine refused has fired all the same: drop it from the row and from due_timers."""
    timers = {k: v for k, v in target.timers.items() if k != name}
    connection = session.connection()
    connection.execute(
        update(_INSTANCES)
        .where(_INSTANCES.c.id == target.id)
        .values(timers=timers_to_json(timers), timeout_at=next_due(timers))
    )
    connection.execute(delete(_DUE).where(_DUE.c.instance_id == target.id, _DUE.c.name == name))
    _expire(session, (target.id,))


def _timer_current(target: Instance, req: EventRequest) -> bool:
    """True when ``req`` fires the arming of the timer the instance holds now (same entry, same due)."""
    armed = target.timers.get(req.timer or "")
    if armed is None or armed.due_at is None:
        return False
    if req.timer_seq is not None and armed.state_seq != req.timer_seq:
        return False
    return req.timer_due is None or armed.due_at == req.timer_due


def _event_id(req: EventRequest, now: datetime) -> str:
    if req.idempotency_key:
        seed = f"{req.tenant_id}|{req.idempotency_key}"
    elif req.timer is not None:
        # A recurring timer is re-armed within one state entry, so the due time tells its firings apart.
        due = req.timer_due.isoformat() if req.timer_due else now.isoformat()
        seed = f"timer|{req.instance_id}|{req.timer_seq}|{req.timer}|{due}"
    else:
        seed = f"{uuid.uuid4()}"
    return hashlib.sha256(seed.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class _Step:
    """One applied step of a plan, worked out in memory before anything is written."""

    decision: Decision
    after: Instance
    event_id: str
    tenant_id: str
    customer_id: str | None


def _execute(
    session: Session,
    store: Store,
    req: EventRequest,
    now: datetime,
    result: Plan,
    loaded: Loaded,
    respond: Callable[[Mapping[str, str], Mapping[int, Any]], dict[str, Any]],
    fingerprint: str,
    *,
    commit: bool = False,
) -> tuple[dict[str, Any], list[int]]:
    """Write every applied step: rows, history, audit, timers, outbox, and the idempotency record.

    The whole plan is worked out in memory first; then the store writes it (the database: one
    statement for every table), so an event costs a fixed handful of round trips however far its
    cascades reach. ``respond`` makes the response body from the plan's ids (plan id → real id)
    and the steps' changes as JSON; returns (body, outbox ids).
    """
    snapshot, tenants = loaded.snapshot, loaded.tenants
    root_event_id = _event_id(req, now)
    reason = req.payload.get("reason") if isinstance(req.payload.get("reason"), str) else None

    # Pass 1, in memory: every applied step's instance after it, and each instance's final row.
    steps: dict[int, _Step] = {}
    current: dict[str, Instance] = {}
    owners: dict[str, tuple[str, str | None]] = {}
    subjects: dict[str, str | None] = {}
    last: dict[str, Decision] = {}
    for step in result.steps:
        if step.status != "applied":
            continue
        d = step.outcome
        assert isinstance(d, Decision)
        iid = step.instance_id
        if step.cause is None:
            event_id = root_event_id
        else:
            source = steps[step.cause].event_id
            event_id = hashlib.sha256(f"{source}|{iid}|{step.event}".encode()).hexdigest()[:32]
        before = current.get(iid) or snapshot.get(iid) or _planned_new(result, iid)
        after = current[iid] = apply(before, d)
        if iid not in owners:
            stored = snapshot.get(iid)
            if stored is not None:
                owners[iid] = (tenants[iid], stored.customer_id)
                subjects[iid] = stored.subject_id
            else:
                owners[iid] = (req.tenant_id, after.customer_id)
                subjects[iid] = after.subject_id or _subject_of(after)
        if subjects[iid] is None:
            subjects[iid] = _subject_of(after)
        last[iid] = d
        steps[step.index] = _Step(d, after, event_id, *owners[iid])

    updates: list[dict[str, Any]] = []
    creations: list[dict[str, Any]] = []
    for iid, after in current.items():
        d = last[iid]
        values = {
            "state": after.state or d.to_state,
            "state_seq": after.state_seq,
            "version": after.version,
            "entered_at": after.entered_at or now,
            "data": jsonable(after.data),
            "timers": timers_to_json(after.timers),
            "timeout_at": next_due(after.timers),
            "attention": d.attention,
            "attention_reason": d.attention_reason,
            "updated_at": now,
            "subject_id": subjects[iid],
        }
        if iid in snapshot:
            updates.append({"id": iid, **values})
        else:
            tenant_id, customer_id = owners[iid]
            creations.append(
                {
                    "id": iid,
                    "tenant_id": tenant_id,
                    "customer_id": customer_id,
                    "governor": d.governor,
                    "created_at": now,
                    **values,
                }
            )
    alerts = sum(
        1
        for step in result.steps
        if step.index > 0 and step.index not in steps and step.status in ("failed", "cycle", "depth_exceeded")
    )
    problems = any(
        step.index > 0
        and step.index not in steps
        and step.status in ("ignored", "failed", "cycle", "depth_exceeded")
        for step in result.steps
    )
    chains = {a.tenant_id for a in steps.values()} | ({req.tenant_id} if problems else set())
    history_ids, outbox_ids = store.allocate(
        session, loaded, len(steps), alerts + sum(len(a.decision.effects) for a in steps.values()), chains
    )
    transition_ids = iter(history_ids)

    # Pass 2: history, audit entries, timers, outbox rows and snapshots, now that ids are known.
    ids = {iid: iid for iid in current}
    records: dict[int, int] = {}
    history: list[dict[str, Any]] = []
    entries: list[tuple[str, audit.NewEntry]] = []
    snapshots: list[dict[str, Any]] = []
    timer_rows: dict[tuple[str, str], dict[str, Any] | None] = {}
    outbox: list[dict[str, Any]] = []
    changes: dict[int, Any] = {}  # step index → its changes as JSON (history row and response)
    for step in result.steps:
        applied = steps.get(step.index)
        if applied is None:
            if step.status in ("ignored", "failed", "cycle", "depth_exceeded") and step.index > 0:
                entries.append((req.tenant_id, _cascade_problem(req, step, ids, now)))
                if step.status != "ignored":
                    outbox.append(
                        _outbox(
                            req,
                            step.instance_id,
                            step.governor,
                            "raise_alert",
                            {"level": "critical", "message": _step_message(step)},
                            f"alert:{root_event_id}:{step.index}",
                            now,
                            ids,
                        )
                    )
            continue
        d, after, iid = applied.decision, applied.after, step.instance_id
        tenant_id, customer_id = applied.tenant_id, applied.customer_id
        transition_id = records[step.index] = next(transition_ids)
        cause_id = records[step.cause] if step.cause is not None else None
        approval_id = req.approval_id if step.cause is None else None
        history.append(
            {
                "id": transition_id,
                "tenant_id": tenant_id,
                "customer_id": customer_id,
                "instance_id": iid,
                "governor": d.governor,
                "row_id": d.row_id,
                "event": d.event,
                "from_state": d.from_state,
                "to_state": d.to_state,
                "state_seq": d.state_seq,
                "actor": d.actor,
                "role": d.role,
                "reason": reason if step.cause is None else None,
                "payload": jsonable({k: v for k, v in d.payload.items() if k != "reason"}),
                "changes": changes.setdefault(step.index, jsonable(d.changes)),
                "timers": {op.timer.name: op.op for op in d.timer_ops},
                "cause_id": cause_id,
                "cascade_id": step.cascade,
                "approval_id": approval_id,
                "event_id": applied.event_id,
                "occurred_at": now,
            }
        )
        entries.append(
            (
                tenant_id,
                audit.NewEntry(
                    actor=d.actor,
                    role=d.role,
                    action="transition",
                    occurred_at=now,
                    customer_id=customer_id,
                    instance_id=iid,
                    payload={
                        "transition_id": transition_id,
                        "governor": d.governor,
                        "event": d.event,
                        "row": d.row_id,
                        "from": d.from_state,
                        "to": d.to_state,
                        "cascade": step.cascade,
                        "cause_transition_id": cause_id,
                        "approval_id": approval_id,
                        # The reason is free text and may name people: the chain keeps only its hash
                        # (erasable PII stays in the history table), so anonymisation never breaks
                        # verification.
                        "reason_sha256": hashlib.sha256(reason.encode()).hexdigest()
                        if reason and step.cause is None
                        else None,
                    },
                ),
            )
        )
        _collect_timers(timer_rows, iid, tenant_id, customer_id, d)
        for n, effect in enumerate(d.effects):
            outbox.append(
                _outbox(
                    req,
                    iid,
                    d.governor,
                    "run_effect",
                    {"effect": effect.name, "args": jsonable(effect.args), "transition_id": transition_id},
                    f"fx:{applied.event_id}:{n}",
                    now,
                    ids,
                    customer_id=customer_id,
                    tenant_id=tenant_id,
                )
            )
        if after.version % SNAPSHOT_EVERY == 0:
            snapshots.append(
                {
                    "instance_id": iid,
                    "transition_id": transition_id,
                    "state": after.state or d.to_state,
                    "state_seq": after.state_seq,
                    "version": after.version,
                    "entered_at": after.entered_at or now,
                    "data": jsonable(after.data),
                    "timers": timers_to_json(after.timers),
                    "occurred_at": now,
                }
            )
    assert len(outbox) == len(outbox_ids)
    for message, outbox_id in zip(outbox, outbox_ids, strict=True):
        message["id"] = outbox_id
    body = respond(ids, changes)
    record = _record(req, fingerprint, 200, body, now)
    # Everything read is read: the store chains the entries (onto heads locked by allocate_ids, or
    # read with the load and checked by the write) and sends every write at once.
    store.write(
        session,
        loaded,
        {
            "creations": creations,
            "updates": updates,
            "history": history,
            "snapshots": snapshots,
            "timers_gone": [{"instance_id": i, "name": n} for (i, n), v in timer_rows.items() if v is None],
            "timers": [v for v in timer_rows.values() if v is not None],
            "outbox": outbox,
            "idempotency": [record] if record is not None else [],
        },
        entries,
        commit=commit,
    )
    _expire(session, current)
    return body, outbox_ids


_INSTANCE_VALUES = (
    "state",
    "state_seq",
    "version",
    "entered_at",
    "data",
    "timers",
    "timeout_at",
    "attention",
    "attention_reason",
    "updated_at",
    "subject_id",
)
_TIMER_COLUMNS = (
    "tenant_id",
    "customer_id",
    "instance_id",
    "governor",
    "name",
    "event",
    "state_seq",
    "due_at",
    "remaining_seconds",
    "payload",
)
_WRITES = JsonBatch(
    [
        JsonWrite(
            "creations",
            _INSTANCES,
            "insert",
            ("id", "tenant_id", "customer_id", "governor", "created_at", *_INSTANCE_VALUES),
        ),
        JsonWrite("updates", _INSTANCES, "update", ("id", *_INSTANCE_VALUES), match=("id",)),
        JsonWrite("history", _HISTORY, "insert", tuple(c.name for c in _HISTORY.c)),
        JsonWrite("snapshots", _SNAPSHOTS, "insert", tuple(c.name for c in _SNAPSHOTS.c if c.name != "id")),
        JsonWrite("audit", audit.ENTRIES, "insert", audit.ENTRY_COLUMNS),
        JsonWrite("heads", audit.HEADS, "update", ("tenant_id", "seq", "hash"), match=("tenant_id",)),
        JsonWrite("timers_gone", _DUE, "delete", ("instance_id", "name"), match=("instance_id", "name")),
        # A re-armed timer's row is replaced (new id), as a delete and an insert would.
        JsonWrite("timers", _DUE, "upsert", _TIMER_COLUMNS, match=("instance_id", "name"), renew=("id",)),
        JsonWrite("outbox", _OUTBOX, "insert", tuple(c.name for c in _OUTBOX.c)),
        JsonWrite("idempotency", _IDEMPOTENCY, "insert", tuple(c.name for c in _IDEMPOTENCY.c)),
    ],
    guard=JsonGuard("expect", audit.HEADS, ("tenant_id",), ("seq", "hash")),
)
"""A plan's whole write set as one PostgreSQL statement (``webapp.db.JsonBatch``); with ``expect``
rows (audit heads as read, see ``Reservation``), conditional on the heads being where they were."""


def write_rows(
    connection: Connection, rows: dict[str, list[dict[str, Any]]], *, commit: bool = False
) -> list[tuple[Any, ...]] | None:
    """Send a plan's writes: one statement on PostgreSQL; elsewhere (SQLite) a statement per table.

    With ``expect`` rows (PostgreSQL only) returns the heads as they are now, locked, each
    (tenant_id, seq, hash, written) (``webapp.db.JsonGuard``); otherwise None. ``commit``
    (PostgreSQL only): the transaction commits with the statement, in its round trip.
    """
    if connection.dialect.name == "postgresql":
        return _WRITES.execute(connection, rows, commit=commit)
    assert not rows.get("expect") and not commit, "a guarded or committing write is PostgreSQL's"
    if rows["creations"]:
        execute_many(connection, _INSERT_INSTANCES, rows["creations"])
    if rows["updates"]:
        execute_many(connection, _UPDATE_INSTANCE, [{"b_id": r["id"], **r} for r in rows["updates"]])
    for statement, key in (
        (_INSERT_HISTORY, "history"),
        (_INSERT_SNAPSHOTS, "snapshots"),
        (audit.INSERT_ENTRIES, "audit"),
    ):
        if rows[key]:
            execute_many(connection, statement, rows[key])
    if rows["heads"]:
        execute_many(
            connection,
            audit.MOVE_HEAD,
            [{"t": h["tenant_id"], "s": h["seq"], "h": h["hash"]} for h in rows["heads"]],
        )
    keys = [(r["instance_id"], r["name"]) for r in (*rows["timers_gone"], *rows["timers"])]
    if keys:
        connection.execute(_DELETE_DUE, {"keys": keys})
    for statement, key in ((_INSERT_DUE, "timers"), (_INSERT_OUTBOX, "outbox"), (_REMEMBER, "idempotency")):
        if rows[key]:
            execute_many(connection, statement, rows[key])
    return None


def allocate_ids(
    session: Session, history: int, outbox: int, chains: Iterable[str] = ()
) -> tuple[list[int], list[int]]:
    """Fresh ids for ``history`` history rows and ``outbox`` outbox rows, known before they are written.

    Causes and audit entries name history ids, and the relay is handed the outbox ids. On PostgreSQL
    the same round trip locks the audit heads of the ``chains`` tenants (in the order ``lock_heads``
    uses); elsewhere the caller's ``lock_heads`` locks them.
    """
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        tenants = sorted(chains)
        if history == 0 and outbox == 0 and not tenants:
            return [], []
        rows = raw_execute(connection, _NEXT_IDS_LOCKING_HEADS, (history, outbox, tenants)).fetchall()
        audit.adopt_locked_heads(session, [(r[2], r[3], r[4]) for r in rows if r[2] is not None])
        return list(rows[0][0]), list(rows[0][1])
    if history == 0 and outbox == 0:
        return [], []
    # SQLite has no sequences. A write that changes nothing takes the database's only write lock
    # first, so nobody else can take the ids after the largest ones until this transaction ends.
    connection.execute(update(_HISTORY).where(false()).values(id=_HISTORY.c.id))
    last_history = connection.execute(select(func.max(_HISTORY.c.id))).scalar() or 0
    last_outbox = connection.execute(select(func.max(_OUTBOX.c.id))).scalar() or 0
    return (
        list(range(last_history + 1, last_history + 1 + history)),
        list(range(last_outbox + 1, last_outbox + 1 + outbox)),
    )


def _expire(session: Session, instance_ids: Iterable[str]) -> None:
    """Forget ORM copies of rows written here with Core, so the caller's session reads them afresh."""
    if not session.identity_map:
        return
    for iid in instance_ids:
        obj = session.identity_map.get(identity_key(GovernorInstance, iid))
        if obj is not None:
            session.expire(obj)


def _subject_of(inst: Instance) -> str | None:
    for key in ("sku_id", "invoice_id", "subject_id"):
        value = inst.data.get(key)
        if isinstance(value, str):
            return value
    return inst.subject_id


def _planned_new(result: Plan, plan_id: str) -> Instance:
    """An instance the plan creates, as it was before its creation event (empty)."""
    planned = result.instances[plan_id]
    return Instance(
        governor=planned.governor, id=plan_id, customer_id=planned.customer_id, subject_id=planned.subject_id
    )


def _collect_timers(
    timer_rows: dict[tuple[str, str], dict[str, Any] | None],
    instance_id: str,
    tenant_id: str,
    customer_id: str | None,
    d: Decision,
) -> None:
    """Record the decision's timer operations; the last one per (instance, timer) wins."""
    for op in d.timer_ops:
        t = op.timer
        timer_rows[(instance_id, t.name)] = (
            None
            if op.op == "cancel"
            else {
                "tenant_id": tenant_id,
                "customer_id": customer_id,
                "instance_id": instance_id,
                "governor": d.governor,
                "name": t.name,
                "event": t.event,
                "state_seq": t.state_seq,
                "due_at": t.due_at,
                "remaining_seconds": int(t.remaining.total_seconds()) if t.remaining is not None else None,
                "payload": jsonable(t.payload),
            }
        )


def _outbox(
    req: EventRequest,
    instance_id: str,
    governor: str,
    job: str,
    args: dict[str, Any],
    job_id: str,
    now: datetime,
    ids: Mapping[str, str],
    *,
    customer_id: str | None = None,
    tenant_id: str | None = None,
) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "tenant_id": tenant_id or req.tenant_id,
        "customer_id": customer_id or req.customer_id,
        "instance_id": ids.get(instance_id, instance_id),
        "governor": governor,
        "job": job,
        "args": args,
        "created_at": now,
        "delivered_at": None,  # the columns' defaults, given here so the insert needs no default handling
        "attempts": 0,
    }


def _step_message(step: Any) -> str:
    outcome = step.outcome
    why = outcome.message if isinstance(outcome, Rejection) else step.status
    return f"cascade {step.cascade} → {step.governor}.{step.event}: {why}"


def _cascade_problem(req: EventRequest, step: Any, ids: Mapping[str, str], now: datetime) -> audit.NewEntry:
    """The audit entry of a cascade that was ignored or failed."""
    outcome = step.outcome
    return audit.NewEntry(
        actor=f"cascade:{step.cascade}",
        role="cascade",
        action="cascade.ignored" if step.status == "ignored" else "cascade.failed",
        occurred_at=now,
        customer_id=req.customer_id,
        instance_id=ids.get(step.instance_id, step.instance_id),
        payload={
            "governor": step.governor,
            "event": step.event,
            "status": step.status,
            "code": outcome.code if isinstance(outcome, Rejection) else step.status,
        },
    )


def preview(
    session: Session,
    req: EventRequest,
    actor: Actor,
    now: datetime,
    *,
    settings: Settings | None = None,
    facts_hook: FactsHook | None = None,
) -> dict[str, Any]:
    """The what-if plan of ``req`` (every governor that would change, timers, money); applies nothing."""
    target_row, catalog, _ = _load_target(session, req)
    customer_id = target_row.customer_id if target_row is not None else req.customer_id
    rows = (
        list(session.connection().execute(_LOAD.where(_INSTANCES.c.customer_id == customer_id)))
        if customer_id
        else []
    )
    snapshot: dict[str, Instance] = {}
    _add_rows(snapshot, {}, rows)
    _add_rows(snapshot, {}, catalog)
    if target_row is None:
        if req.governor is None:
            raise TransitionError(
                422, "invalid_input", "name an instance, or a governor for a creation event"
            )
        target = Instance(governor=req.governor, id=_new_id(req.governor), customer_id=customer_id)
    else:
        _add_rows(snapshot, {}, [target_row])
        target = snapshot[target_row.id]
    if facts_hook is not None:
        extra = dict(facts_hook(session, snapshot, target, req.event))
    else:
        extra = world_facts(session, snapshot, target, req.event, payload=req.payload)
    facts = Facts(
        now=now,
        role=actor.role,
        actor=actor.id,
        payload=frozen_map(dict(req.payload)),
        extra=frozen_map(extra),
        settings=settings,
    )
    result = plan(snapshot, target, req.event, facts, new_id=_new_id)
    body = plan_json(result)
    root = result.root
    if isinstance(root, Decision):
        body["needs_approval"] = list(root.needs_approval.approvers) if root.needs_approval else None
    elif isinstance(root, Rejection):
        body["rejection"] = {
            "code": root.code,
            "message": root.message,
            "status": HTTP_STATUS.get(root.code, 409),
        }
    return body


def apply_with_retry(run: Callable[[], EventResult], attempts: int = 3) -> EventResult:
    """Retry a whole transaction that lost an idempotency-key insert race (IntegrityError)."""
    last: Exception | None = None
    for _ in range(attempts):
        try:
            return run()
        except IntegrityError as exc:
            last = exc
    assert last is not None
    raise last


__all__ = [
    "SYSTEM",
    "Actor",
    "ChainMoved",
    "EventRequest",
    "EventResult",
    "TransitionError",
    "approval_input_hash",
    "fire_event",
    "plan_json",
    "preview",
]
