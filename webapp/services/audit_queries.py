"""Read side of the compliance audit desk: the audit log browser, verification, exports, KYC queue.

Decisions (CONSOLE.md §3.4, §5 "Audit coverage"):

- Reading the log is itself audited. Every page view of the browser appends one ``audit.read``
  entry to the ``platform`` chain (the operator's own chain): a read is not an event of any tenant,
  a page view must not lengthen (or bury a break in) the chain it is looking at, and one chain
  answers "who looked at the audit log" for every tenant at once. The payload names the filters;
  the two free-text filters (actor, customer) are kept as SHA-256 hashes only, so that a person's
  name or email typed into a filter never enters the chain (erasure must leave it verifiable) while
  an investigator can still check whether a given value was searched for.
- Verification mirrors ``marketplace audit verify``: an intact chain gets its ``audit.verified``
  entry appended to itself; the results about broken chains go to the platform chain as one summary
  (never to a broken chain, and not to the platform chain when that one is broken itself).
- Exports mirror ``marketplace audit export`` line for line (``webapp.audit.export_line`` and
  ``EXPORT_FIELDS``), read in one REPEATABLE READ snapshot up to each chain's head, and append one
  ``audit.exported`` entry per exported chain afterwards, so a JSON Lines export verifies offline
  with ``marketplace audit verify --file``.
- Browsing is newest first over (occurred_at, tenant_id, seq); the cursor is the (tenant, seq) of
  the last row shown, whose timestamp is looked up by primary key to continue the keyset.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import and_, or_, select, tuple_
from sqlalchemy.orm import Session

from webapp import audit
from webapp.db import Database
from webapp.models import AuditEntry, GovernorInstance

PLATFORM_TENANT = "platform"
"""The chain that records reads of the audit log and results about broken chains."""

PAGE_SIZE = 50
KYC_STATES = {
    "customer_account": ("onboarding",),
    "compliance_audit": ("verification_pending", "investigation", "non_compliant", "remediation_in_progress"),
}
"""The KYC review queue: onboarding accounts needing attention; compliance audits still open."""


def _sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass(frozen=True)
class AuditFilters:
    """The browser's filters; empty strings and None mean "any"."""

    tenant: str = ""
    customer: str = ""
    actor: str = ""
    action: str = ""
    since: datetime | None = None
    until: datetime | None = None

    def as_audit_payload(self) -> dict[str, Any]:
        """The filters as an ``audit.read`` payload: codes in clear, free text hashed (no PII)."""
        return {
            "tenant": self.tenant or None,
            "action": self.action or None,
            "actor_sha256": _sha(self.actor) if self.actor else None,
            "customer_sha256": _sha(self.customer) if self.customer else None,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
        }

    def as_args(self) -> dict[str, str]:
        """The filters as query-string arguments (for the pager links)."""
        args = {
            "tenant": self.tenant,
            "customer": self.customer,
            "actor": self.actor,
            "action": self.action,
            "since": self.since.isoformat() if self.since else "",
            "until": self.until.isoformat() if self.until else "",
        }
        return {k: v for k, v in args.items() if v}


@dataclass(frozen=True)
class AuditRow:
    """One entry as the browser shows it (payload pretty-printed; the template escapes it)."""

    tenant_id: str
    seq: int
    occurred_at: datetime
    actor: str
    role: str
    action: str
    customer_id: str | None
    instance_id: str | None
    payload: str
    hash: str

    @property
    def cursor(self) -> str:
        return encode_cursor(self.tenant_id, self.seq)


@dataclass(frozen=True)
class AuditPage:
    """One page of the browser, newest first; ``next_cursor`` is None on the last page."""

    items: list[AuditRow]
    next_cursor: str | None
    filters: AuditFilters


def encode_cursor(tenant_id: str, seq: int) -> str:
    """The (tenant, seq) keyset cursor as one query-string value: ``<seq>:<tenant>``."""
    return f"{seq}:{tenant_id}"


def decode_cursor(raw: str) -> tuple[str, int] | None:
    """(tenant, seq) from ``<seq>:<tenant>``, or None when malformed."""
    seq, sep, tenant = raw.partition(":")
    if not sep or not seq.isdigit() or not tenant or len(tenant) > 64:
        return None
    return tenant, int(seq)


def pretty_payload(payload: str) -> str:
    """The canonical JSON payload indented for reading (the raw text when it is not JSON)."""
    try:
        return json.dumps(json.loads(payload), indent=2, sort_keys=True, ensure_ascii=False)
    except ValueError:
        return payload


def audit_page(
    session: Session,
    filters: AuditFilters,
    *,
    tenants: Sequence[str] | None = None,
    cursor: tuple[str, int] | None = None,
    limit: int = PAGE_SIZE,
) -> AuditPage:
    """Entries matching ``filters`` (within the ``tenants`` scope; None: all), newest first."""
    query = select(AuditEntry)
    if tenants is not None:
        query = query.where(AuditEntry.tenant_id.in_(list(tenants)))
    if filters.tenant:
        query = query.where(AuditEntry.tenant_id == filters.tenant)
    if filters.customer:
        query = query.where(AuditEntry.customer_id == filters.customer)
    if filters.actor:
        query = query.where(AuditEntry.actor == filters.actor)
    if filters.action:
        query = query.where(AuditEntry.action == filters.action)
    if filters.since is not None:
        query = query.where(AuditEntry.occurred_at >= filters.since)
    if filters.until is not None:
        query = query.where(AuditEntry.occurred_at < filters.until)
    if cursor is not None and (tenants is None or cursor[0] in tenants):
        at = session.scalar(
            select(AuditEntry.occurred_at).where(
                AuditEntry.tenant_id == cursor[0], AuditEntry.seq == cursor[1]
            )
        )
        if at is not None:
            query = query.where(
                tuple_(AuditEntry.occurred_at, AuditEntry.tenant_id, AuditEntry.seq)
                < tuple_(at, cursor[0], cursor[1])
            )
    query = query.order_by(
        AuditEntry.occurred_at.desc(), AuditEntry.tenant_id.desc(), AuditEntry.seq.desc()
    ).limit(limit + 1)
    entries = list(session.scalars(query))
    items = [
        AuditRow(
            tenant_id=e.tenant_id,
            seq=int(e.seq),
            occurred_at=e.occurred_at,
            actor=e.actor,
            role=e.role,
            action=e.action,
            customer_id=e.customer_id,
            instance_id=e.instance_id,
            payload=pretty_payload(e.payload),
            hash=e.hash,
        )
        for e in entries[:limit]
    ]
    more = len(entries) > limit
    return AuditPage(items, items[-1].cursor if more and items else None, filters)


def action_choices(session: Session) -> list[str]:
    """Distinct actions recorded (for the filter's datalist)."""
    return sorted(session.scalars(select(AuditEntry.action).distinct()))


def record_read(
    session: Session, page: AuditPage, *, actor: str, role: str, now: datetime, cursor: str | None
) -> None:
    """Append the ``audit.read`` entry for one page view (platform chain, no PII)."""
    audit.append(
        session,
        PLATFORM_TENANT,
        actor=actor,
        role=role,
        action="audit.read",
        occurred_at=now,
        payload={
            "filters": page.filters.as_audit_payload(),
            "cursor": cursor,
            "entries_shown": len(page.items),
        },
    )


# --------------------------------------------------------------------------- verification


@dataclass(frozen=True)
class TenantCheck:
    """One chain's verification result as the desk shows it."""

    tenant: str
    result: audit.VerifyResult


@dataclass(frozen=True)
class VerifyReport:
    checks: list[TenantCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.result.ok for c in self.checks)

    @property
    def checked(self) -> int:
        return sum(c.result.checked for c in self.checks)


def _snapshot_session(db: Database) -> Any:
    """A read-only session seeing one instant (REPEATABLE READ on PostgreSQL); the caller closes it."""
    session = db.sessions()
    if not db.is_sqlite:
        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    return session


def chain_tenants(session: Session, tenants: Sequence[str] | None) -> list[str]:
    """Tenants with a chain, within the caller's scope (None: all)."""
    names = audit.tenants_with_chains(session)
    return names if tenants is None else [t for t in names if t in set(tenants)]


def verify_chains(
    db: Database,
    *,
    only: str | None,
    tenants: Sequence[str] | None,
    anchor_dir: Path,
    key: bytes,
    actor: str,
    role: str,
    now: datetime,
) -> VerifyReport:
    """Verify every chain in scope (or ``only``) against its head and anchors, then audit the run."""
    report = VerifyReport()
    with closing(_snapshot_session(db)) as session:
        names = chain_tenants(session, tenants)
        if only:
            names = [t for t in names if t == only]
        for name in names:
            try:
                anchors = audit.read_anchors(anchor_dir, key, name)
            except audit.AnchorForgery as exc:
                report.checks.append(TenantCheck(name, audit.VerifyResult(False, 0, None, str(exc))))
                continue
            report.checks.append(TenantCheck(name, audit.verify_tenant(session, name, anchors)))
        session.rollback()
    broken = {c.tenant: c.result.as_json() for c in report.checks if not c.result.ok}
    with db.session() as session:
        for check in report.checks:
            if check.result.ok:
                _append(session, check.tenant, "audit.verified", check.result.as_json(), actor, role, now)
        if broken and PLATFORM_TENANT not in broken:
            summary = {"tenants": dict(sorted(broken.items())), "ok": False}
            _append(session, PLATFORM_TENANT, "audit.verified", summary, actor, role, now)
    return report


def _append(
    session: Session, tenant: str, action: str, payload: dict[str, Any], actor: str, role: str, now: datetime
) -> None:
    audit.append(session, tenant, actor=actor, role=role, action=action, occurred_at=now, payload=payload)


# --------------------------------------------------------------------------- export


def export_lines(
    db: Database,
    *,
    names: Iterable[str],
    fmt: str,
    since: datetime | None,
    actor: str,
    role: str,
    now: datetime,
) -> Iterator[str]:
    """The export, chunk by chunk, as ``marketplace audit export`` writes it; audited when it ends.

    One ``audit.exported`` entry per exported chain (format, since, entry count, seq range and the
    SHA-256 of the whole export) is appended after the snapshot is closed. An export abandoned by
    the client is recorded too, with ``"complete": false``.
    """
    digest = hashlib.sha256()
    counts: dict[str, tuple[int, int, int]] = {}
    complete = False
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n") if fmt == "csv" else None
    try:
        if writer is not None:
            writer.writerow(audit.EXPORT_FIELDS)
            header = buffer.getvalue()
            digest.update(header.encode())
            yield header
        with closing(_snapshot_session(db)) as session:
            for name in names:
                head = audit.head_of(session, name)
                start = 1 if since is None else audit.first_seq_since(session, name, since)
                if start is None:
                    continue
                upto = head[0] if head is not None else 2**62
                n = first = last = 0
                chunk: list[str] = []
                with closing(audit.stream_rows(session, name, from_seq=start, to_seq=upto)) as rows:
                    for row in rows:
                        if writer is not None:
                            buffer.seek(0)
                            buffer.truncate()
                            writer.writerow(["" if v is None else v for v in row])
                            line = buffer.getvalue()
                        else:
                            line = audit.export_line(row) + "\n"
                        digest.update(line.encode())
                        chunk.append(line)
                        n += 1
                        first = first or int(row[1])
                        last = int(row[1])
                        if len(chunk) >= 500:
                            counts[name] = (n, first, last)
                            yield "".join(chunk)
                            chunk.clear()
                if n:
                    counts[name] = (n, first, last)
                if chunk:
                    yield "".join(chunk)
            session.rollback()
        complete = True
    finally:
        with db.session() as session:
            for name, (n, first, last) in counts.items():
                payload = {
                    "format": fmt,
                    "since": since.isoformat() if since else None,
                    "entries": n,
                    "first_seq": first,
                    "last_seq": last,
                    "export_sha256": digest.hexdigest() if complete else None,
                    "complete": complete,
                    "channel": "console",
                }
                _append(session, name, "audit.exported", payload, actor, role, now)


# --------------------------------------------------------------------------- KYC queue


@dataclass(frozen=True)
class QueueItem:
    """One instance waiting in the KYC review queue."""

    instance_id: str
    tenant_id: str
    customer_id: str | None
    governor: str
    state: str
    reason: str
    entered_at: datetime
    timeout_at: datetime | None
    age_hours: float
    hours_left: float | None

    @property
    def overdue(self) -> bool:
        return self.hours_left is not None and self.hours_left < 0

    @property
    def age_label(self) -> str:
        return _duration(self.age_hours)

    @property
    def left_label(self) -> str:
        if self.hours_left is None:
            return "–"
        label = _duration(abs(self.hours_left))
        return f"{label} overdue" if self.hours_left < 0 else f"{label} left"


def _duration(hours: float) -> str:
    if hours >= 48:
        return f"{hours / 24:.1f} d"
    if hours >= 1:
        return f"{hours:.1f} h"
    return f"{hours * 60:.0f} min"


def kyc_queue(session: Session, *, now: datetime, tenants: Sequence[str] | None = None) -> list[QueueItem]:
    """Onboarding accounts under manual review and open compliance audits, nearest deadline first."""
    account = and_(
        GovernorInstance.governor == "customer_account",
        GovernorInstance.state.in_(KYC_STATES["customer_account"]),
        GovernorInstance.attention.is_(True),
    )
    compliance = and_(
        GovernorInstance.governor == "compliance_audit",
        GovernorInstance.state.in_(KYC_STATES["compliance_audit"]),
    )
    query = select(GovernorInstance).where(or_(account, compliance))
    if tenants is not None:
        query = query.where(GovernorInstance.tenant_id.in_(list(tenants)))
    query = query.order_by(
        GovernorInstance.timeout_at.asc().nulls_last(), GovernorInstance.entered_at, GovernorInstance.id
    ).limit(500)
    items = []
    for row in session.scalars(query):
        left = (row.timeout_at - now).total_seconds() / 3600 if row.timeout_at is not None else None
        reason = row.attention_reason or ("KYC manual review" if row.data.get("kyc_manual_review") else "")
        items.append(
            QueueItem(
                instance_id=row.id,
                tenant_id=row.tenant_id,
                customer_id=row.customer_id,
                governor=row.governor,
                state=row.state,
                reason=reason,
                entered_at=row.entered_at,
                timeout_at=row.timeout_at,
                age_hours=max(0.0, (now - row.entered_at).total_seconds() / 3600),
                hours_left=left,
            )
        )
    return items
