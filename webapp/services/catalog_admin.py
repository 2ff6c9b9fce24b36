"""The admins' SKU catalog: list, revisions and diffs, and drafts saved through the one transition service.

GOVERNORS.md §3 and §11 rows 21–28, CONSOLE.md §3.5. A SKU is one global Product Catalog instance
(tenant ``platform``, no customer). Nothing here writes a state or a SKU field: creating and saving a
draft, submitting it and every later change are events fired through ``transitions.fire_event``, so
history, audit, four-eyes approvals and timers work as everywhere else.

Revisions are not a table of their own: every history row that moved the SKU's ``version`` (P01
create, P02 edit, P04 a validated change) is a revision, rebuilt by replaying the history's data
``changes`` in order. Saving a draft carries two expectations: the instance's row ``version``
(checked by the service) and the SKU ``version`` (checked by the governor's OCC guard); either
mismatch is a 409 ``Conflict`` that names who saved what since the editor was opened.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from governors import AllowedEvent, Settings, default_settings, get_governor
from governors.rules.catalog import sku_field_errors
from webapp.models import Approval, GovernorInstance, IdempotencyRecord, StaffUser, TransitionRecord
from webapp.services.actions import best_actions, facts_for
from webapp.services.facts import world_facts
from webapp.services.instances import revive, to_instance
from webapp.services.setup import PLATFORM_TENANT, ensure_tenant
from webapp.services.transitions import Actor, EventRequest, EventResult, fire_event

GOVERNOR: Final = "catalog"

SKU_FIELDS: Final = ("name", "description", "price_cents", "currency", "tier", "features", "limits")
"""The authored fields of a SKU, in the order the editor and the diff show them."""

EDITABLE_STATES: Final = frozenset({"draft"})

ON_SALE: Final = ("published", "featured")

FIELD_LABELS: Final = {
    "sku_id": "SKU id",
    "name": "Name",
    "description": "Description",
    "price_cents": "Price (cents)",
    "currency": "Currency",
    "tier": "Tier",
    "features": "Features",
    "limits": "Limits",
}


# --------------------------------------------------------------------------- reads


@dataclass(frozen=True)
class SkuRow:
    """One line of the SKU table."""

    instance_id: str
    sku_id: str
    name: str
    state: str
    tier: str
    price_cents: int | None
    currency: str
    version: int
    row_version: int
    attention: bool
    attention_reason: str
    pending_approvals: int
    updated_at: datetime
    replacement_sku: str | None
    scheduled: ScheduledPrice | None = None


@dataclass(frozen=True)
class ScheduledPrice:
    """A validated price change not yet in effect: ``until`` it, customers pay ``current_cents``."""

    current_cents: int
    new_cents: int
    effective_at: datetime


def scheduled_price(data: Mapping[str, Any], now: datetime) -> ScheduledPrice | None:
    """The price change P09 made live whose effective date is still ahead (None otherwise)."""
    moment = revive(data.get("price_effective_at"))
    old, new = data.get("previous_price_cents"), data.get("price_cents")
    if isinstance(moment, datetime) and moment > now and isinstance(old, int) and isinstance(new, int):
        return ScheduledPrice(old, new, moment)
    return None


def _row_to_sku(row: GovernorInstance, pending: Mapping[str, int], now: datetime) -> SkuRow:
    data = row.data or {}
    price = data.get("price_cents")
    return SkuRow(
        instance_id=row.id,
        sku_id=str(data.get("sku_id") or row.subject_id or ""),
        name=str(data.get("name") or ""),
        state=row.state,
        tier=str(data.get("tier") or ""),
        price_cents=price if isinstance(price, int) else None,
        currency=str(data.get("currency") or default_settings()["catalog.default_currency"]),
        version=int(data.get("version") or 0),
        row_version=row.version,
        attention=row.attention,
        attention_reason=row.attention_reason,
        pending_approvals=pending.get(row.id, 0),
        updated_at=row.updated_at,
        replacement_sku=data.get("replacement_sku"),
        scheduled=scheduled_price(data, now),
    )


def pending_approval_counts(session: Session, now: datetime) -> dict[str, int]:
    """Pending four-eyes requests per catalog instance (expired ones excluded)."""
    rows = session.execute(
        select(Approval.instance_id, func.count())
        .where(Approval.governor == GOVERNOR, Approval.status == "pending", Approval.expires_at > now)
        .group_by(Approval.instance_id)
    ).all()
    return {instance_id: int(count) for instance_id, count in rows}


def list_skus(
    session: Session,
    now: datetime,
    *,
    state: str | None = None,
    tier: str | None = None,
    query: str | None = None,
    attention: bool = False,
) -> list[SkuRow]:
    """The SKU table, filtered by state, tier, attention and a text match on id or name."""
    stmt = select(GovernorInstance).where(GovernorInstance.governor == GOVERNOR)
    if state:
        stmt = stmt.where(GovernorInstance.state == state)
    if attention:
        stmt = stmt.where(GovernorInstance.attention.is_(True))
    rows = session.scalars(stmt.order_by(GovernorInstance.subject_id)).all()
    pending = pending_approval_counts(session, now)
    skus = [_row_to_sku(r, pending, now) for r in rows]
    if tier:
        skus = [s for s in skus if s.tier == tier]
    if query:
        needle = query.casefold()
        skus = [s for s in skus if needle in s.sku_id.casefold() or needle in s.name.casefold()]
    return skus


def state_counts(session: Session) -> dict[str, int]:
    """product_state_count (CONSOLE.md §3.5): SKUs per state, in the governor's state order."""
    counts = dict(
        session.execute(
            select(GovernorInstance.state, func.count())
            .where(GovernorInstance.governor == GOVERNOR)
            .group_by(GovernorInstance.state)
        ).all()
    )
    return {s.name: int(counts.get(s.name, 0)) for s in get_governor(GOVERNOR).states}


@dataclass(frozen=True)
class CatalogIssue:
    """One finding of the catalog check (CONSOLE.md §3.5, OPS health check #3)."""

    sku_id: str
    kind: str  # schema | orphan_feature | price_conflict | replacement
    message: str


def catalog_checks(session: Session, settings: Settings | None = None) -> list[CatalogIssue]:
    """Schema, orphan-feature, price-conflict and replacement checks over every SKU not archived.

    The governor's guards keep new changes valid; this finds what they cannot: data from before a
    rule tightened (a TOML override), features whose dependency left the catalog, a featured
    price that a later price change overtook, a replacement that was withdrawn after deprecation.
    """
    rows = session.scalars(
        select(GovernorInstance)
        .where(GovernorInstance.governor == GOVERNOR, GovernorInstance.state != "archived")
        .order_by(GovernorInstance.subject_id)
    ).all()
    features = {f for r in rows for f in ((r.data or {}).get("features") or [])}
    states = {str(r.subject_id): r.state for r in rows}
    issues: list[CatalogIssue] = []
    for r in rows:
        data = r.data or {}
        sku = str(r.subject_id)
        for name, message in sku_field_errors(data, settings or default_settings()).items():
            issues.append(CatalogIssue(sku, "schema", f"{FIELD_LABELS.get(name, name)} {message}"))
        for feature, spec in sorted((data.get("feature_specs") or {}).items()):
            missing = [d for d in (spec or {}).get("dependencies") or [] if d not in features]
            if missing:
                text = f"feature {feature} depends on {', '.join(missing)}, which no SKU offers"
                issues.append(CatalogIssue(sku, "orphan_feature", text))
        price, featured = data.get("price_cents"), data.get("featured_price_cents")
        if isinstance(price, int) and isinstance(featured, int) and featured >= price:
            text = f"featured price {featured} is not below the regular price {price}"
            issues.append(CatalogIssue(sku, "price_conflict", text))
        replacement = data.get("replacement_sku")
        if r.state == "deprecated" and replacement and states.get(replacement) not in ON_SALE:
            text = f"replacement {replacement} is {states.get(replacement, 'archived or gone')}, not on sale"
            issues.append(CatalogIssue(sku, "replacement", text))
    return issues


def find_sku(session: Session, sku_id: str) -> GovernorInstance | None:
    """The catalog instance of ``sku_id`` (None when there is none)."""
    return session.scalars(
        select(GovernorInstance).where(
            GovernorInstance.governor == GOVERNOR, GovernorInstance.subject_id == sku_id
        )
    ).first()


def replacement_choices(session: Session, sku_id: str) -> list[tuple[str, str]]:
    """SKUs that may replace ``sku_id`` on deprecation: the other published or featured ones."""
    rows = session.scalars(
        select(GovernorInstance)
        .where(GovernorInstance.governor == GOVERNOR, GovernorInstance.state.in_(ON_SALE))
        .order_by(GovernorInstance.subject_id)
    ).all()
    return [
        (str(r.subject_id), f"{r.subject_id} · {(r.data or {}).get('name', '')} ({r.state})")
        for r in rows
        if r.subject_id and r.subject_id != sku_id
    ]


def sku_fields(data: Mapping[str, Any]) -> dict[str, Any]:
    """The authored fields of a SKU's data (missing ones as None)."""
    return {name: data.get(name) for name in SKU_FIELDS}


@dataclass(frozen=True)
class Revision:
    """The SKU as one history row left it, whenever that row moved the SKU version."""

    number: int
    transition_id: int
    event: str
    state: str
    actor: str
    role: str
    reason: str | None
    occurred_at: datetime
    fields: Mapping[str, Any]


@dataclass(frozen=True)
class FieldChange:
    """One field of a diff: ``old`` → ``new`` (None when absent)."""

    field: str
    label: str
    old: Any
    new: Any


def history(session: Session, row: GovernorInstance, limit: int = 200) -> list[TransitionRecord]:
    """The SKU's history rows, newest first."""
    return list(
        session.scalars(
            select(TransitionRecord)
            .where(TransitionRecord.instance_id == row.id)
            .order_by(TransitionRecord.id.desc())
            .limit(limit)
        )
    )


def revisions(session: Session, row: GovernorInstance) -> list[Revision]:
    """Every revision of the SKU, oldest first (replays the history's data changes)."""
    records = session.scalars(
        select(TransitionRecord).where(TransitionRecord.instance_id == row.id).order_by(TransitionRecord.id)
    ).all()
    data: dict[str, Any] = {}
    out: list[Revision] = []
    for rec in records:
        before = data.get("version")
        for key, value in (rec.changes or {}).items():
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value
        version = data.get("version")
        if isinstance(version, int) and version != before:
            out.append(
                Revision(
                    number=version,
                    transition_id=rec.id,
                    event=rec.event,
                    state=rec.to_state,
                    actor=rec.actor,
                    role=rec.role,
                    reason=rec.reason,
                    occurred_at=rec.occurred_at,
                    fields=sku_fields(revive(data)),
                )
            )
    return out


def revision(revs: Sequence[Revision], number: int) -> Revision | None:
    """The revision with SKU version ``number``."""
    return next((r for r in revs if r.number == number), None)


def diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[FieldChange]:
    """Field by field, the SKU fields that differ between two revisions (old → new)."""
    return [
        FieldChange(name, FIELD_LABELS[name], old.get(name), new.get(name))
        for name in SKU_FIELDS
        if old.get(name) != new.get(name)
    ]


def display_names(session: Session, ids: Sequence[str]) -> dict[str, str]:
    """Staff user id → email, for history and revision rows."""
    wanted = sorted({i for i in ids if i})
    if not wanted:
        return {}
    rows = session.execute(select(StaffUser.id, StaffUser.email).where(StaffUser.id.in_(wanted))).all()
    return {str(r.id): str(r.email) for r in rows}


def catalog_actions(
    session: Session, row: GovernorInstance, roles: Sequence[str], now: datetime, settings: Settings | None
) -> dict[str, tuple[AllowedEvent, str]]:
    """The SKU's manual actions for these roles, judged against the whole catalog.

    ``services.actions.best_actions_for_row`` sees a global SKU alone; the catalog's guards also
    read the other SKUs (a replacement's state), so the buttons here see them all, as the
    transition service does when the event is fired.
    """
    snapshot = {
        r.id: to_instance(r)
        for r in session.scalars(select(GovernorInstance).where(GovernorInstance.governor == GOVERNOR))
    }
    snapshot[row.id] = to_instance(row)
    instance = snapshot[row.id]
    return best_actions(GOVERNOR, instance, facts_for(snapshot, instance, now, settings, session), roles)


# --------------------------------------------------------------------------- writes


@dataclass(frozen=True)
class Conflict:
    """A stale save: somebody else saved the draft (or moved the SKU) since the editor was opened."""

    message: str
    current_version: int
    current_state: str
    changes: list[FieldChange] = field(default_factory=list)
    by: list[Revision] = field(default_factory=list)


@dataclass(frozen=True)
class Saved:
    """What a create/save/fire did: the service's result, or the field errors / conflict refusing it."""

    result: EventResult | None = None
    field_errors: dict[str, str] = field(default_factory=dict)
    conflict: Conflict | None = None

    @property
    def status(self) -> int:
        """HTTP status: the result's, 422 for field errors, 409 for a conflict."""
        if self.conflict is not None:
            return 409
        if self.field_errors:
            return 422
        assert self.result is not None
        return self.result.status


def create_draft(
    session: Session,
    fields: Mapping[str, Any],
    *,
    sku_id: str,
    actor: Actor,
    reason: str,
    now: datetime,
    settings: Settings | None = None,
    idempotency_key: str | None = None,
) -> Saved:
    """P01: a new SKU draft, version 1 (schema errors per field; a taken id is a field error)."""
    replay = _replay(session, PLATFORM_TENANT, idempotency_key)
    if replay is not None:
        return Saved(result=replay)
    payload = {"sku_id": sku_id, **_present(fields)}
    errors = sku_field_errors(payload, settings or default_settings())
    if "sku_id" not in errors and find_sku(session, sku_id) is not None:
        errors["sku_id"] = f"{sku_id} already exists; open it to edit, or pick another id"
    if errors:
        return Saved(field_errors=errors)
    ensure_tenant(session, PLATFORM_TENANT, now, "Marketplace platform")
    result = fire_event(
        session,
        EventRequest(
            tenant_id=PLATFORM_TENANT,
            event="create_draft",
            payload={**payload, "reason": reason},
            governor=GOVERNOR,
            subject_id=sku_id,
            idempotency_key=idempotency_key,
        ),
        actor,
        now,
        settings=settings,
        facts_hook=world_facts,
    )
    return Saved(result=result)


def save_draft(
    session: Session,
    row: GovernorInstance,
    fields: Mapping[str, Any],
    *,
    row_version: int,
    sku_version: int,
    actor: Actor,
    reason: str,
    now: datetime,
    settings: Settings | None = None,
    idempotency_key: str | None = None,
) -> Saved:
    """P02: save the edited fields as the next revision, unless somebody saved one first (409)."""
    errors = sku_field_errors(_present(fields), settings or default_settings(), partial=True)
    if errors:
        return Saved(field_errors=errors)
    replay = _replay(session, row.tenant_id, idempotency_key)
    if replay is not None:
        return Saved(result=replay)
    current_sku_version = int((row.data or {}).get("version") or 0)
    if row.version != row_version or current_sku_version != sku_version:
        return Saved(conflict=conflict_since(session, row, sku_version))
    # Only what the editor changed, so the history and the diff show the real edit.
    changed = {k: v for k, v in _present(fields).items() if (row.data or {}).get(k) != v}
    if not changed:
        return Saved(field_errors={"form": "nothing changed: edit a field before saving a new revision"})
    result = fire_event(
        session,
        EventRequest(
            tenant_id=row.tenant_id,
            event="edit_draft",
            instance_id=row.id,
            payload={**changed, "expected_version": sku_version, "reason": reason},
            expected_version=row_version,
            idempotency_key=idempotency_key,
        ),
        actor,
        now,
        settings=settings,
        facts_hook=world_facts,
    )
    code = (result.body.get("error") or {}).get("code") if not result.ok else None
    if code in ("stale_version", "concurrent_update_conflict"):
        # Lost the race under the lock: the same answer as the early check.
        session.refresh(row)
        return Saved(result=result, conflict=conflict_since(session, row, sku_version))
    return Saved(result=result)


def conflict_since(session: Session, row: GovernorInstance, sku_version: int) -> Conflict:
    """What changed since revision ``sku_version``: who saved which revisions, and the field diff."""
    revs = revisions(session, row)
    mine = revision(revs, sku_version)
    newer = [r for r in revs if r.number > sku_version]
    current = sku_fields(revive(dict(row.data or {})))
    changes = diff(mine.fields, current) if mine is not None else []
    names = display_names(session, [r.actor for r in newer])
    if newer:
        who = ", ".join(
            f"version {r.number} by {names.get(r.actor, r.actor)} at {r.occurred_at:%H:%M UTC}" for r in newer
        )
        message = (
            f"Not saved: this draft changed since you opened it ({who}); it is now version "
            f"{(row.data or {}).get('version')} in state {row.state}. Review what changed, then save again."
        )
    else:
        message = (
            f"Not saved: this SKU changed since you opened it; it is now in state {row.state}. "
            "Reload it and try again."
        )
    return Conflict(
        message=message,
        current_version=int((row.data or {}).get("version") or 0),
        current_state=row.state,
        changes=changes,
        by=newer,
    )


def fire(
    session: Session,
    row: GovernorInstance,
    event: str,
    payload: Mapping[str, Any],
    *,
    actor: Actor,
    now: datetime,
    expected_version: int | None,
    settings: Settings | None = None,
    idempotency_key: str | None = None,
) -> EventResult:
    """Any other catalog event on the SKU (submit, price, features, promotion, deprecation, ...)."""
    body = dict(payload)
    if event == "submit_for_review":
        # P03's OCC guard compares the SKU version the admin saw.
        body.setdefault("expected_version", int((row.data or {}).get("version") or 0))
    return fire_event(
        session,
        EventRequest(
            tenant_id=row.tenant_id,
            event=event,
            instance_id=row.id,
            payload=body,
            expected_version=expected_version,
            idempotency_key=idempotency_key,
        ),
        actor,
        now,
        settings=settings,
        facts_hook=world_facts,
    )


def _replay(session: Session, tenant_id: str, key: str | None) -> EventResult | None:
    """The stored response of a form already submitted under ``key`` (a double click, a retry).

    Answered before the editor's own checks, which would otherwise call the repeat a conflict with
    the save it repeats; ``fire_event`` answers repeats the same way (Stripe-style idempotency).
    """
    if key is None:
        return None
    record = session.get(IdempotencyRecord, (tenant_id, key))
    if record is None:
        return None
    return EventResult(record.status_code, dict(record.response), replayed=True)


def _present(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if k in SKU_FIELDS and v is not None}


__all__ = [
    "FIELD_LABELS",
    "SKU_FIELDS",
    "CatalogIssue",
    "Conflict",
    "FieldChange",
    "Revision",
    "Saved",
    "ScheduledPrice",
    "SkuRow",
    "catalog_actions",
    "catalog_checks",
    "conflict_since",
    "create_draft",
    "diff",
    "display_names",
    "find_sku",
    "fire",
    "history",
    "list_skus",
    "pending_approval_counts",
    "replacement_choices",
    "revision",
    "revisions",
    "save_draft",
    "scheduled_price",
    "sku_fields",
    "state_counts",
]
