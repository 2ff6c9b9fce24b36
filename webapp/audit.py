"""The tamper-evident audit trail: per-tenant SHA-256 hash chains, verification and anchors.

Each entry's hash covers its canonical JSON (sorted keys, no spaces) including its sequence number
and the previous entry's hash; the first entry's previous hash is 64 zeros (CONSOLE.md §5). Appends
to one tenant's chain are serialized by locking that tenant's ``audit_heads`` row. Anchors are
HMAC-keyed chain heads written outside the database, so that a truncated tail or a chain re-hashed
from scratch is caught too. Payloads never carry PII (names, emails, card data): erasure must leave
the chain verifiable.

Verification streams a chain once, in sequence order. On PostgreSQL the server streams the rows to
the raw psycopg connection (no ORM rows), with the timestamp already rendered as the ISO 8601 text
the hash covers, so the client only formats, hashes and compares.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

from sqlalchemy import Table, bindparam, func, insert, select, text, update
from sqlalchemy.orm import Session

from webapp.db import execute_many
from webapp.isotime import iso_text
from webapp.models import AuditEntry, AuditHead

GENESIS = "0" * 64
FIELDS = (
    "action",
    "actor",
    "customer_id",
    "instance_id",
    "occurred_at",
    "payload",
    "prev_hash",
    "role",
    "seq",
    "tenant_id",
)
EXPORT_FIELDS = (
    "tenant_id",
    "seq",
    "occurred_at",
    "actor",
    "role",
    "action",
    "customer_id",
    "instance_id",
    "payload",
    "prev_hash",
    "hash",
)
"""The columns of an export (JSON Lines keys, CSV header), in row order."""

# json.dumps(s) is exactly these C encoders for a str (ASCII-escaping, or not); calling them directly
# skips the encoder set-up json.dumps pays on every call, which dominates a million-row verification.
_ASCII = json.encoder.encode_basestring_ascii
_UTF8 = json.encoder.encode_basestring


# json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str) is this
# C encoder (made once here: json.dumps builds an encoder object and the C encoder on every call,
# a third of the cost for a payload of a dozen keys), without the circular-reference check (a
# payload is a tree of JSON values: a cycle fails with RecursionError instead of ValueError).
_C_ENCODER = getattr(json.encoder, "c_make_encoder", None)  # None without the C accelerator
_PAYLOAD = _C_ENCODER(None, str, _UTF8, None, ":", ",", True, False, True) if _C_ENCODER else None


def canonical_payload(payload: Mapping[str, Any]) -> str:
    """The canonical JSON text of a payload (sorted keys, compact, UTF-8)."""
    if _PAYLOAD is None or type(payload) is not dict:
        return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return "".join(_PAYLOAD(payload, 0))


def _iso(moment: datetime | str) -> str:
    return moment if isinstance(moment, str) else iso_text(moment)


def canonical_entry(
    *,
    tenant_id: str,
    seq: int,
    occurred_at: datetime | str,
    actor: str,
    role: str,
    action: str,
    customer_id: str | None,
    instance_id: str | None,
    payload_json: str,
    prev_hash: str,
) -> bytes:
    """The canonical JSON of a whole entry, built directly (equal to json.dumps(sort_keys=True))."""
    a = _ASCII
    cid = "null" if customer_id is None else a(customer_id)
    iid = "null" if instance_id is None else a(instance_id)
    return (
        f'{{"action":{a(action)},"actor":{_UTF8(actor)},"customer_id":{cid},'
        f'"instance_id":{iid},"occurred_at":{a(_iso(occurred_at))},"payload":{payload_json},'
        f'"prev_hash":{a(prev_hash)},"role":{a(role)},"seq":{seq},"tenant_id":{a(tenant_id)}}}'
    ).encode()


def entry_hash(**fields: Any) -> str:
    """SHA-256 (hex) of the canonical entry."""
    return hashlib.sha256(canonical_entry(**fields)).hexdigest()


# --------------------------------------------------------------------------- appending


def append(
    session: Session,
    tenant_id: str,
    *,
    actor: str,
    role: str,
    action: str,
    occurred_at: datetime,
    customer_id: str | None = None,
    instance_id: str | None = None,
    payload: Mapping[str, Any] | None = None,
) -> AuditEntry:
    """Append one entry to the tenant's chain inside the caller's transaction (locks the head)."""
    entry = NewEntry(
        actor=actor,
        role=role,
        action=action,
        occurred_at=occurred_at,
        customer_id=customer_id,
        instance_id=instance_id,
        payload=payload or {},
    )
    (values,) = append_many(session, [(tenant_id, entry)])
    return AuditEntry(**values)


@dataclass(frozen=True)
class NewEntry:
    """One entry to append (``append_many``); the chain supplies its tenant, seq and hashes."""

    actor: str
    role: str
    action: str
    occurred_at: datetime
    customer_id: str | None = None
    instance_id: str | None = None
    payload: Mapping[str, Any] = field(default_factory=dict)


def append_many(session: Session, entries: Sequence[tuple[str, NewEntry]]) -> list[dict[str, Any]]:
    """Append ``(tenant_id, entry)`` pairs, in order, to their tenants' chains; returns the rows written.

    Each tenant's head is locked once (tenants in sorted order, so two multi-tenant appends never
    wait on each other in opposite orders); all entries go in one multi-row INSERT and each head is
    moved once.
    """
    rows, moves = chain_rows(session, entries)
    if rows:
        connection = session.connection()
        execute_many(connection, INSERT_ENTRIES, rows)
        execute_many(connection, MOVE_HEAD, moves)
    return rows


def chain_rows(
    session: Session, entries: Sequence[tuple[str, NewEntry]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The rows ``append_many`` writes, worked out without writing them: (entry rows, head moves).

    The heads are locked (or found locked) and moved in this transaction's cache, so the caller
    must write both lists before it commits (the transition service sends them with its own batch).
    Head moves are ``{"t": tenant_id, "s": seq, "h": hash}``.
    """
    if not entries:
        return [], []
    return chain_onto(lock_heads(session, {t for t, _ in entries}), entries)


def chain_onto(
    heads: Mapping[str, Head], entries: Sequence[tuple[str, NewEntry]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``chain_rows`` onto heads the caller holds (locked, and moved here as the entries chain on).

    Returns (entry rows, head moves of the entries' tenants).
    """
    rows: list[dict[str, Any]] = []
    for tenant_id, e in entries:
        head = heads[tenant_id]
        occurred_at = e.occurred_at.astimezone(UTC)
        payload_json = canonical_payload(e.payload)
        seq = head.seq + 1
        digest = entry_hash(
            tenant_id=tenant_id,
            seq=seq,
            occurred_at=occurred_at,
            actor=e.actor,
            role=e.role,
            action=e.action,
            customer_id=e.customer_id,
            instance_id=e.instance_id,
            payload_json=payload_json,
            prev_hash=head.hash,
        )
        rows.append(
            {
                "tenant_id": tenant_id,
                "seq": seq,
                "occurred_at": occurred_at,
                "actor": e.actor,
                "role": e.role,
                "action": e.action,
                "customer_id": e.customer_id,
                "instance_id": e.instance_id,
                "payload": payload_json,
                "prev_hash": head.hash,
                "hash": digest,
            }
        )
        head.seq, head.hash = seq, digest
    tenants = sorted({t for t, _ in entries})
    return rows, [{"t": t, "s": heads[t].seq, "h": heads[t].hash} for t in tenants]


ENTRIES = cast(Table, AuditEntry.__table__)
HEADS = cast(Table, AuditHead.__table__)
ENTRY_COLUMNS = tuple(c.name for c in ENTRIES.c)
"""The keys of an entry row as ``chain_rows`` makes it (every column)."""
# Inline: no implicit RETURNING, so the insert can be part of a pipelined batch.
INSERT_ENTRIES = insert(ENTRIES).inline()
_LOCK_HEAD = select(HEADS.c.seq, HEADS.c.hash).where(HEADS.c.tenant_id == bindparam("t")).with_for_update()
MOVE_HEAD = (
    update(HEADS).where(HEADS.c.tenant_id == bindparam("t")).values(seq=bindparam("s"), hash=bindparam("h"))
)


def lock_heads(session: Session, tenant_ids: Iterable[str]) -> dict[str, Head]:
    """Lock these tenants' chain heads for the rest of the transaction, in sorted order.

    Appends then find them locked and ask the database nothing more, so a caller can batch the
    appends' writes (``webapp.db.pipelined``).
    """
    return {t: _locked_head(session, t) for t in sorted(tenant_ids)}


@dataclass
class Head:
    """A locked head as this transaction has moved it (written back by ``append_many``)."""

    seq: int
    hash: str


def adopt_locked_heads(session: Session, heads: Iterable[tuple[str, int, str]]) -> None:
    """Note ``(tenant_id, seq, hash)`` heads the caller has just locked FOR UPDATE in this transaction
    with a statement of its own, so that ``lock_heads`` and appends ask the database nothing more.

    A head this (sub)transaction had already locked keeps its cached, possibly moved, value.
    """
    locked = _locked_cache(session)
    for tenant_id, seq, digest in heads:
        locked.setdefault(tenant_id, Head(int(seq), str(digest)))


def forget_locked_heads(session: Session) -> None:
    """Drop the heads this transaction cached: the next append reads (and locks) them afresh.

    For a caller that moved heads by writes of its own (the seed's bulk store).
    """
    session.info.pop("_audit_locked_heads", None)


def _locked_cache(session: Session) -> dict[str, Head]:
    txn = session.get_nested_transaction() or session.get_transaction()
    cache = session.info.get("_audit_locked_heads")
    if cache is None or cache[0] is not txn:
        cache = (txn, {})
        session.info["_audit_locked_heads"] = cache
    locked: dict[str, Head] = cache[1]
    return locked


def _locked_head(session: Session, tenant_id: str) -> Head:
    """The tenant's head, its row locked FOR UPDATE once per (sub)transaction.

    A cascade appends many entries in one transaction; the row lock taken by the first append is
    held until the transaction ends, so later appends reuse the head instead of asking the
    database again. The cache is keyed by the innermost transaction object: a savepoint (whose
    rollback would release a lock taken inside it and undo its appends) or a new transaction locks
    and reads afresh.
    """
    locked = _locked_cache(session)
    head = locked.get(tenant_id)
    if head is not None:
        return head
    connection = session.connection()
    row = connection.execute(_LOCK_HEAD, {"t": tenant_id}).first()
    if row is None:
        _create_head(session, tenant_id)
        row = connection.execute(_LOCK_HEAD, {"t": tenant_id}).first()
        assert row is not None
    head = locked[tenant_id] = Head(int(row[0]), str(row[1]))
    return head


def _create_head(session: Session, tenant_id: str) -> None:
    """Create a tenant's head row once, even when two transactions race to do it."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        session.execute(
            text("INSERT INTO audit_heads (tenant_id, seq, hash) VALUES (:t, 0, :h) ON CONFLICT DO NOTHING"),
            {"t": tenant_id, "h": GENESIS},
        )
    else:
        session.execute(
            text("INSERT OR IGNORE INTO audit_heads (tenant_id, seq, hash) VALUES (:t, 0, :h)"),
            {"t": tenant_id, "h": GENESIS},
        )


# --------------------------------------------------------------------------- verification


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of checking one chain: ``first_broken_seq`` is None when it is intact.

    ``head_seq``/``head_hash`` are the last entry that verified; ``first_seq`` is where checking
    started (1 for a whole chain, later for a partial export).
    """

    ok: bool
    checked: int
    first_broken_seq: int | None = None
    problem: str = ""
    head_seq: int = 0
    head_hash: str = GENESIS
    first_seq: int = 1
    anchors_checked: int = 0

    def as_json(self) -> dict[str, Any]:
        """The result as the API and the audit entry record it."""
        return {
            "ok": self.ok,
            "checked": self.checked,
            "first_broken_seq": self.first_broken_seq,
            "problem": self.problem,
            "head_seq": self.head_seq,
            "anchors_checked": self.anchors_checked,
        }


Row = tuple[str, int, Any, str, str, str, str | None, str | None, str, str, str]
"""(tenant_id, seq, occurred_at, actor, role, action, customer_id, instance_id, payload, prev_hash, hash)"""


def verify_rows(rows: Iterable[Row], start: tuple[int, str] | None = (1, GENESIS)) -> VerifyResult:
    """Stream one tenant's rows in seq order and name the first broken sequence number.

    ``start`` is the (seq, previous hash) the first row must carry: (1, genesis) for a whole chain.
    ``None`` trusts the first row's own seq and previous hash (a partial export, whose link to the
    entries before it cannot be checked offline).
    """
    iterator = iter(rows)
    if start is None:
        first = next(iterator, None)
        if first is None:
            return VerifyResult(True, 0)
        expected, prev = int(first[1]), first[9]
        if not _is_hex_digest(prev):
            return VerifyResult(
                False, 0, expected, "previous hash is not a SHA-256 hex digest", expected - 1, prev
            )
        iterator = _chain((first,), iterator)
    else:
        expected, prev = start
    first_seq = expected
    checked = 0
    sha = hashlib.sha256
    a = _ASCII
    # The hot loop of a million-row verification. The canonical text is built inline (the same
    # bytes as canonical_entry); the few distinct tenants, roles, actions and actors are encoded
    # once (bounded caches); ``prev`` is a hex digest already compared with the row's prev_hash, so
    # it needs no escaping.
    plain: dict[str, str] = {}
    utf8: dict[str, str] = {}
    for (
        tenant_id,
        seq,
        occurred_at,
        actor,
        role,
        action,
        customer_id,
        instance_id,
        payload,
        prev_hash,
        digest,
    ) in iterator:
        if seq != expected:
            problem = "missing entry" if seq > expected else "entries out of order"
            return VerifyResult(False, checked, expected, problem, expected - 1, prev, first_seq)
        if prev_hash != prev:
            return VerifyResult(False, checked, seq, "previous hash does not match", seq - 1, prev, first_seq)
        if occurred_at.__class__ is not str:
            occurred_at = occurred_at.isoformat()
        e_tenant = plain.get(tenant_id)
        if e_tenant is None:
            e_tenant = _cache(plain, tenant_id, a)
        e_role = plain.get(role)
        if e_role is None:
            e_role = _cache(plain, role, a)
        e_action = plain.get(action)
        if e_action is None:
            e_action = _cache(plain, action, a)
        e_actor = utf8.get(actor)
        if e_actor is None:
            e_actor = _cache(utf8, actor, _UTF8)
        body = (
            f'{{"action":{e_action},"actor":{e_actor},'
            f'"customer_id":{"null" if customer_id is None else a(customer_id)},'
            f'"instance_id":{"null" if instance_id is None else a(instance_id)},'
            f'"occurred_at":{a(occurred_at)},"payload":{payload},'
            f'"prev_hash":"{prev}","role":{e_role},"seq":{seq},"tenant_id":{e_tenant}}}'
        )
        if sha(body.encode()).hexdigest() != digest:
            return VerifyResult(
                False, checked, seq, "entry hash does not match its content", seq - 1, prev, first_seq
            )
        prev = digest
        expected += 1
        checked += 1
    return VerifyResult(True, checked, None, "", expected - 1, prev, first_seq)


def _cache(cache: dict[str, str], value: str, encode: Any) -> str:
    """JSON-encode ``value`` and remember it (a chain has few distinct roles, actions, actors)."""
    if len(cache) > 4096:
        cache.clear()
    encoded: str = encode(value)
    cache[value] = encoded
    return encoded


def _is_hex_digest(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def _chain(head: Iterable[Row], rest: Iterator[Row]) -> Iterator[Row]:
    yield from head
    yield from rest


# PostgreSQL renders the timestamp exactly as Python's isoformat() of the UTC datetime (microseconds
# only when non-zero), so the client never builds datetime objects it would only turn back into text.
_PG_CHAIN_SQL = """
SELECT tenant_id, seq,
       CASE WHEN date_trunc('second', t) = t
            THEN to_char(t, 'YYYY-MM-DD"T"HH24:MI:SS"+00:00"')
            ELSE to_char(t, 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"') END,
       actor, role, action, customer_id, instance_id, payload, prev_hash, hash
FROM (SELECT *, occurred_at AT TIME ZONE 'UTC' AS t
      FROM audit_entries WHERE tenant_id = %s AND seq >= %s AND seq <= %s) AS e
ORDER BY seq
"""


def pg_chain_rows(
    connection: Any, tenant_id: str, from_seq: int = 1, to_seq: int = 2**62, batch: int = 2000
) -> Generator[Row, None, None]:
    """A tenant's rows in seq order, streamed by the server in chunks (psycopg, inside its transaction).

    The server sends the result continuously while the client hashes (no round trip per batch),
    in constant memory. Stopping early (a broken entry) cancels the query; the savepoint around it
    keeps that from aborting the caller's transaction.
    """
    cursor = connection.cursor()
    with connection.transaction():
        stream = cursor.stream(_PG_CHAIN_SQL, (tenant_id, from_seq, to_seq), size=batch)
        try:
            yield from stream
        finally:
            stream.close()


def stream_rows(
    session: Session, tenant_id: str, batch: int = 2000, from_seq: int = 1, to_seq: int = 2**62
) -> Generator[Row, None, None]:
    """All rows of a tenant's chain in seq order, streamed by the server (ORM rows on SQLite)."""
    if session.get_bind().dialect.name == "postgresql":
        driver = session.connection().connection.driver_connection
        with closing(pg_chain_rows(driver, tenant_id, from_seq, to_seq, batch)) as rows:
            yield from rows
        return
    query = (
        select(
            AuditEntry.tenant_id,
            AuditEntry.seq,
            AuditEntry.occurred_at,
            AuditEntry.actor,
            AuditEntry.role,
            AuditEntry.action,
            AuditEntry.customer_id,
            AuditEntry.instance_id,
            AuditEntry.payload,
            AuditEntry.prev_hash,
            AuditEntry.hash,
        )
        .where(AuditEntry.tenant_id == tenant_id, AuditEntry.seq >= from_seq, AuditEntry.seq <= to_seq)
        .order_by(AuditEntry.seq)
        .execution_options(yield_per=batch)
    )
    for row in session.execute(query):
        yield (row[0], row[1], row[2].isoformat(), *row[3:])


def tenants_with_chains(session: Session) -> list[str]:
    """Every tenant that has audit entries or a head row."""
    heads = set(session.scalars(select(AuditHead.tenant_id)))
    heads.update(session.scalars(select(AuditEntry.tenant_id).distinct()))
    return sorted(heads)


def head_of(session: Session, tenant_id: str) -> tuple[int, str] | None:
    """The recorded (seq, hash) head of a tenant's chain, or None when it has none."""
    row = session.execute(
        select(AuditHead.seq, AuditHead.hash).where(AuditHead.tenant_id == tenant_id)
    ).first()
    return (int(row[0]), str(row[1])) if row is not None else None


def first_seq_since(session: Session, tenant_id: str, since: datetime) -> int | None:
    """The first sequence number of the tenant's chain recorded at or after ``since``."""
    found = session.scalar(
        select(func.min(AuditEntry.seq)).where(
            AuditEntry.tenant_id == tenant_id, AuditEntry.occurred_at >= since
        )
    )
    return int(found) if found is not None else None


def default_verify_jobs() -> int:
    """Processes ``marketplace audit verify`` uses for a long chain: one per CPU, at most 8."""
    return max(1, min(8, os.cpu_count() or 1))


PARALLEL_MIN_ENTRIES = 200_000
"""A chain shorter than this is verified by one process whatever ``jobs`` says (starting the
others would cost more than it saves)."""


def verify_parallel(session: Session, tenant_id: str, last_seq: int, jobs: int) -> VerifyResult:
    """``verify_rows`` of the whole chain by ``jobs`` processes, each streaming a range of about
    ``last_seq / jobs`` entries (the last range open-ended) in the snapshot of ``session``'s
    transaction (exported with ``pg_export_snapshot``, imported by each process's connection).

    Hashing is the verifier's work and one Python process does it on one core; the ranges are
    independent because each entry carries its predecessor's hash. The ranges are then joined in
    order: each must start at the seq after the previous one's last entry, with that entry's hash as
    its previous hash. The result (first broken seq, problem, entries checked, last good entry) is
    the one a single pass would give.
    """
    import multiprocessing

    snapshot = session.execute(text("SELECT pg_export_snapshot()")).scalar_one()
    url = session.get_bind().engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    step = max(1, last_seq // jobs)
    bounds = [(1 + i * step, (i + 1) * step if i < jobs - 1 else 2**62) for i in range(jobs)]
    # fork: the workers need no imports of their own; they use no connection of the parent's.
    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        parts = pool.starmap(_verify_range, [(url, snapshot, tenant_id, lo, hi) for lo, hi in bounds])
    checked, expected, prev = 0, 1, GENESIS
    for part, start in parts:
        if start is None:  # no entries in this range: the chain ended before it
            break
        seq, prev_hash = start
        if seq != expected:
            return VerifyResult(False, checked, expected, "missing entry", expected - 1, prev)
        if prev_hash != prev:
            return VerifyResult(False, checked, seq, "previous hash does not match", seq - 1, prev)
        if not part.ok:
            return replace(part, checked=checked + part.checked, first_seq=1)
        checked += part.checked
        expected, prev = part.head_seq + 1, part.head_hash
    return VerifyResult(True, checked, None, "", expected - 1, prev)


def _verify_range(
    url: str, snapshot: str, tenant_id: str, from_seq: int, to_seq: int
) -> tuple[VerifyResult, tuple[int, str] | None]:
    """One process's share of ``verify_parallel``: (its result, (seq, previous hash) of its first entry)."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(url) as connection:
        connection.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        connection.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
        with closing(pg_chain_rows(connection, tenant_id, from_seq, to_seq)) as rows:
            first = next(rows, None)
            if first is None:
                return VerifyResult(True, 0), None
            seq, prev_hash = int(first[1]), str(first[9])
            # The first entry's link to the range before is checked when the ranges are joined.
            return verify_rows(_chain((first,), rows), start=(seq, prev_hash)), (seq, prev_hash)


def verify_tenant(
    session: Session, tenant_id: str, anchors: Sequence[Mapping[str, Any]] = (), *, jobs: int = 1
) -> VerifyResult:
    """Verify a tenant's chain against itself, its head row and (when given) its anchors.

    Run it in one snapshot (REPEATABLE READ on PostgreSQL) when appends may be running: the head and
    the entries are then read as of the same instant. ``jobs`` > 1 on PostgreSQL, for a chain of at
    least ``PARALLEL_MIN_ENTRIES``: that many processes verify consecutive ranges of it side by side
    in the caller's snapshot (``verify_parallel``), with the same result as one would give.
    """
    head = head_of(session, tenant_id)
    if (
        jobs > 1
        and head is not None
        and head[0] >= PARALLEL_MIN_ENTRIES
        and session.get_bind().dialect.name == "postgresql"
    ):
        result = verify_parallel(session, tenant_id, head[0], jobs)
    else:
        with closing(stream_rows(session, tenant_id)) as rows:
            result = verify_rows(rows)
    if not result.ok:
        return result
    if head is not None and head != (result.head_seq, result.head_hash):
        first = result.head_seq + 1 if head[0] > result.head_seq else head[0]
        return replace(
            result, ok=False, first_broken_seq=first, problem="chain does not reach its recorded head"
        )
    if not anchors:
        return result
    hashes = anchor_hashes(session, tenant_id, (int(a["seq"]) for a in anchors))
    broken = check_anchors(hashes, result.head_seq, anchors)
    checked = replace(result, anchors_checked=len(anchors))
    if broken is None:
        return checked
    problem = (
        "chain ends before an anchored entry (truncated tail)"
        if broken > result.head_seq
        else "entry differs from its anchor (chain rewritten and re-hashed)"
    )
    return replace(checked, ok=False, first_broken_seq=broken, problem=problem)


# --------------------------------------------------------------------------- anchors


def _mac(key: bytes, tenant_id: str, seq: int, digest: str, at: str) -> str:
    return hmac.new(key, f"{tenant_id}|{seq}|{digest}|{at}".encode(), hashlib.sha256).hexdigest()


def anchor_path(directory: Path, tenant_id: str) -> Path:
    """The file that holds a tenant's anchors (the tenant id made safe as a file name)."""
    return directory / f"{quote(tenant_id, safe='')}.jsonl"


def write_anchor(
    directory: Path, key: bytes, tenant_id: str, seq: int, digest: str, at: datetime
) -> dict[str, Any]:
    """Append an HMAC-keyed record of a chain head to ``directory/<tenant>.jsonl``."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = at.astimezone(UTC).isoformat()
    record: dict[str, Any] = {"tenant_id": tenant_id, "seq": seq, "hash": digest, "at": stamp}
    record["mac"] = _mac(key, tenant_id, seq, digest, stamp)
    with open(anchor_path(directory, tenant_id), "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, sort_keys=True) + "\n")
    return record


class AnchorForgery(ValueError):
    """An anchor record whose HMAC does not verify: forged, edited, or checked with the wrong key."""


def parse_anchor_lines(lines: Iterable[str], key: bytes, source: str = "anchors") -> list[dict[str, Any]]:
    """Anchor records from JSON Lines; a record whose HMAC does not verify raises AnchorForgery."""
    anchors = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            expected = _mac(key, record["tenant_id"], int(record["seq"]), record["hash"], record["at"])
        except (ValueError, KeyError, TypeError) as exc:
            raise AnchorForgery(f"{source}:{number}: not an anchor record ({exc})") from None
        if not hmac.compare_digest(expected, str(record.get("mac", ""))):
            raise AnchorForgery(f"{source}:{number}: anchor HMAC does not verify (forged or wrong key)")
        anchors.append(record)
    return anchors


def read_anchors(directory: Path, key: bytes, tenant_id: str) -> list[dict[str, Any]]:
    """The tenant's anchors; a record whose HMAC does not verify raises AnchorForgery."""
    path = anchor_path(directory, tenant_id)
    if not path.exists():
        return []
    anchors = parse_anchor_lines(path.read_text(encoding="utf-8").splitlines(), key, str(path))
    if any(a["tenant_id"] != tenant_id for a in anchors):
        raise AnchorForgery(f"{path}: holds an anchor of another tenant")
    return anchors


def anchored_tenants(directory: Path) -> list[str]:
    """Tenants that have an anchor file in ``directory``."""
    from urllib.parse import unquote

    if not directory.is_dir():
        return []
    return sorted(unquote(p.stem) for p in directory.glob("*.jsonl"))


def check_anchors(
    rows_by_seq: Mapping[int, str], head_seq: int, anchors: Iterable[Mapping[str, Any]]
) -> int | None:
    """First sequence number where the chain disagrees with an anchor (truncated or re-hashed), else None."""
    for anchor in sorted(anchors, key=lambda a: int(a["seq"])):
        seq = int(anchor["seq"])
        if seq > head_seq:
            return head_seq + 1
        if rows_by_seq.get(seq) != anchor["hash"]:
            return seq
    return None


def anchor_hashes(session: Session, tenant_id: str, seqs: Iterable[int]) -> dict[int, str]:
    """The stored hashes at the given sequence numbers."""
    wanted = sorted(set(seqs))
    if not wanted:
        return {}
    rows = session.execute(
        select(AuditEntry.seq, AuditEntry.hash).where(
            AuditEntry.tenant_id == tenant_id, AuditEntry.seq.in_(wanted)
        )
    )
    return {int(s): h for s, h in rows}


# --------------------------------------------------------------------------- export and offline check


def export_record(row: Row) -> dict[str, Any]:
    """One exported entry (JSON Lines): every hashed field, the payload as its canonical text, the hash."""
    return dict(zip(EXPORT_FIELDS, (_iso(row[2]) if i == 2 else v for i, v in enumerate(row)), strict=True))


def export_line(row: Row) -> str:
    """One JSON Lines line of an export (no trailing newline)."""
    return json.dumps(export_record(row), ensure_ascii=False, separators=(",", ":"))


def _row_of(record: Mapping[str, Any]) -> Row:
    return (
        str(record["tenant_id"]),
        int(record["seq"]),
        str(record["occurred_at"]),
        record["actor"],
        record["role"],
        record["action"],
        record["customer_id"],
        record["instance_id"],
        record["payload"],
        record["prev_hash"],
        record["hash"],
    )


def parse_export_lines(lines: Iterable[str]) -> dict[str, list[Row]]:
    """An exported JSON Lines file as rows per tenant, in file order (ValueError on a malformed line)."""
    by_tenant: dict[str, list[Row]] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = _row_of(json.loads(line))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"line {number}: not an audit export record ({exc})") from None
        by_tenant.setdefault(row[0], []).append(row)
    return by_tenant


def verify_export_rows(rows: Sequence[Row], anchors: Sequence[Mapping[str, Any]] = ()) -> VerifyResult:
    """Verify one tenant's exported rows offline; a partial (``--since``) export starts where it starts.

    Anchors that fall inside the exported range must match it; an anchor past its end means the
    export (or the chain it came from) lost its tail.
    """
    whole = bool(rows) and rows[0][1] == 1
    result = verify_rows(rows, (1, GENESIS) if whole or not rows else None)
    if not result.ok or not anchors:
        return result
    covered = [a for a in anchors if int(a["seq"]) >= result.first_seq]
    hashes = {r[1]: r[10] for r in rows}
    broken = check_anchors(hashes, result.head_seq, covered)
    checked = replace(result, anchors_checked=len(covered))
    if broken is None:
        return checked
    problem = (
        "export ends before an anchored entry (truncated tail)"
        if broken > result.head_seq
        else "entry differs from its anchor (chain rewritten and re-hashed)"
    )
    return replace(checked, ok=False, first_broken_seq=broken, problem=problem)


def verify_export_lines(
    lines: Iterable[str], anchors: Sequence[Mapping[str, Any]] = ()
) -> dict[str, VerifyResult]:
    """Verify an exported JSON Lines file offline, chain by chain (no database needed)."""
    by_tenant = parse_export_lines(lines)
    anchored: dict[str, list[Mapping[str, Any]]] = {}
    for anchor in anchors:
        anchored.setdefault(str(anchor["tenant_id"]), []).append(anchor)
    results = {}
    for tenant in sorted(set(by_tenant) | set(anchored)):
        results[tenant] = verify_export_rows(by_tenant.get(tenant, []), anchored.get(tenant, ()))
    return results
