"""The tamper-evident audit trail: per-tenant SHA-256 hash chains, verification and anchors.

Each entry's hash covers its canonical JSON (sorted keys, no spaces) including its sequence number
and the previous entry's hash; the first entry's previous hash is 64 zeros (CONSOLE.md §5). Appends
to one tenant's chain are serialized by locking that tenant's ``audit_heads`` row. Anchors are
HMAC-keyed chain heads written outside the database, so that a truncated tail or a chain re-hashed
from scratch is caught too. Payloads never carry PII (names, emails, card data): erasure must leave
the chain verifiable.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

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


def canonical_payload(payload: Mapping[str, Any]) -> str:
    """The canonical JSON text of a payload (sorted keys, compact, UTF-8)."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _iso(moment: datetime | str) -> str:
    return moment if isinstance(moment, str) else moment.isoformat()


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
    d = json.dumps
    return (
        f'{{"action":{d(action)},"actor":{d(actor, ensure_ascii=False)},"customer_id":{d(customer_id)},'
        f'"instance_id":{d(instance_id)},"occurred_at":{d(_iso(occurred_at))},"payload":{payload_json},'
        f'"prev_hash":{d(prev_hash)},"role":{d(role)},"seq":{seq},"tenant_id":{d(tenant_id)}}}'
    ).encode()


def entry_hash(**fields: Any) -> str:
    """SHA-256 (hex) of the canonical entry."""
    return hashlib.sha256(canonical_entry(**fields)).hexdigest()


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
    occurred_at = occurred_at.astimezone(UTC)
    head = session.get(AuditHead, tenant_id, with_for_update=True)
    if head is None:
        _create_head(session, tenant_id)
        head = session.get(AuditHead, tenant_id, with_for_update=True, populate_existing=True)
        assert head is not None
    payload_json = canonical_payload(payload or {})
    seq = head.seq + 1
    digest = entry_hash(
        tenant_id=tenant_id,
        seq=seq,
        occurred_at=occurred_at,
        actor=actor,
        role=role,
        action=action,
        customer_id=customer_id,
        instance_id=instance_id,
        payload_json=payload_json,
        prev_hash=head.hash,
    )
    entry = AuditEntry(
        tenant_id=tenant_id,
        seq=seq,
        occurred_at=occurred_at,
        actor=actor,
        role=role,
        action=action,
        customer_id=customer_id,
        instance_id=instance_id,
        payload=payload_json,
        prev_hash=head.hash,
        hash=digest,
    )
    session.add(entry)
    head.seq, head.hash = seq, digest
    return entry


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
    """The outcome of checking one chain: ``first_broken_seq`` is None when it is intact."""

    ok: bool
    checked: int
    first_broken_seq: int | None = None
    problem: str = ""
    head_seq: int = 0
    head_hash: str = GENESIS


Row = tuple[str, int, Any, str, str, str, str | None, str | None, str, str, str]
"""(tenant_id, seq, occurred_at, actor, role, action, customer_id, instance_id, payload, prev_hash, hash)"""


def verify_rows(rows: Iterable[Row]) -> VerifyResult:
    """Stream one tenant's rows in seq order and name the first broken sequence number."""
    prev = GENESIS
    expected = 1
    checked = 0
    sha = hashlib.sha256
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
    ) in rows:
        if seq != expected:
            problem = "missing entry" if seq > expected else "entries out of order"
            return VerifyResult(False, checked, expected, problem, expected - 1, prev)
        if prev_hash != prev:
            return VerifyResult(False, checked, seq, "previous hash does not match", seq - 1, prev)
        body = canonical_entry(
            tenant_id=tenant_id,
            seq=seq,
            occurred_at=occurred_at,
            actor=actor,
            role=role,
            action=action,
            customer_id=customer_id,
            instance_id=instance_id,
            payload_json=payload,
            prev_hash=prev_hash,
        )
        if sha(body).hexdigest() != digest:
            return VerifyResult(False, checked, seq, "entry hash does not match its content", seq - 1, prev)
        prev = digest
        expected += 1
        checked += 1
    return VerifyResult(True, checked, None, "", expected - 1, prev)


def stream_rows(session: Session, tenant_id: str, batch: int = 5000) -> Iterator[Row]:
    """All rows of a tenant's chain in seq order, streamed (server-side cursor on PostgreSQL)."""
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
        .where(AuditEntry.tenant_id == tenant_id)
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


def verify_tenant(session: Session, tenant_id: str) -> VerifyResult:
    """Verify a tenant's chain against itself and against its head row."""
    result = verify_rows(stream_rows(session, tenant_id))
    if not result.ok:
        return result
    head = session.get(AuditHead, tenant_id)
    if head is not None and (head.seq != result.head_seq or head.hash != result.head_hash):
        first = result.head_seq + 1 if head.seq > result.head_seq else head.seq
        return VerifyResult(
            False,
            result.checked,
            first,
            "chain does not reach its recorded head",
            result.head_seq,
            result.head_hash,
        )
    return result


# --------------------------------------------------------------------------- anchors


def _mac(key: bytes, tenant_id: str, seq: int, digest: str, at: str) -> str:
    return hmac.new(key, f"{tenant_id}|{seq}|{digest}|{at}".encode(), hashlib.sha256).hexdigest()


def write_anchor(
    directory: Path, key: bytes, tenant_id: str, seq: int, digest: str, at: datetime
) -> dict[str, Any]:
    """Append an HMAC-keyed record of a chain head to ``directory/<tenant>.jsonl``."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = at.isoformat()
    record: dict[str, Any] = {"tenant_id": tenant_id, "seq": seq, "hash": digest, "at": stamp}
    record["mac"] = _mac(key, tenant_id, seq, digest, stamp)
    with open(directory / f"{tenant_id}.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, sort_keys=True) + "\n")
    return record


def read_anchors(directory: Path, key: bytes, tenant_id: str) -> list[dict[str, Any]]:
    """The tenant's anchors; a record whose HMAC does not verify raises ValueError."""
    path = directory / f"{tenant_id}.jsonl"
    if not path.exists():
        return []
    anchors = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        record = json.loads(line)
        expected = _mac(key, record["tenant_id"], record["seq"], record["hash"], record["at"])
        if not hmac.compare_digest(expected, record.get("mac", "")):
            raise ValueError(f"{path}:{number}: anchor HMAC does not verify (forged or wrong key)")
        anchors.append(record)
    return anchors


def check_anchors(
    rows_by_seq: Mapping[int, str], head_seq: int, anchors: Iterable[Mapping[str, Any]]
) -> int | None:
    """First sequence number where the chain disagrees with an anchor (truncated or re-hashed), else None."""
    for anchor in sorted(anchors, key=lambda a: a["seq"]):
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
    tenant_id, seq, occurred_at, actor, role, action, customer_id, instance_id, payload, prev_hash, digest = (
        row
    )
    return {
        "tenant_id": tenant_id,
        "seq": seq,
        "occurred_at": occurred_at,
        "actor": actor,
        "role": role,
        "action": action,
        "customer_id": customer_id,
        "instance_id": instance_id,
        "payload": payload,
        "prev_hash": prev_hash,
        "hash": digest,
    }


def verify_export_lines(lines: Iterable[str]) -> dict[str, VerifyResult]:
    """Verify an exported JSON Lines file offline, chain by chain (no database needed)."""
    by_tenant: dict[str, list[Row]] = {}
    for line in lines:
        if not line.strip():
            continue
        r = json.loads(line)
        by_tenant.setdefault(r["tenant_id"], []).append(
            (
                r["tenant_id"],
                int(r["seq"]),
                r["occurred_at"],
                r["actor"],
                r["role"],
                r["action"],
                r["customer_id"],
                r["instance_id"],
                r["payload"],
                r["prev_hash"],
                r["hash"],
            )
        )
    return {tenant: verify_rows(rows) for tenant, rows in sorted(by_tenant.items())}
