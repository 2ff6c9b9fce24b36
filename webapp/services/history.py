"""Time travel: every governor of a customer as it was at any past instant, rebuilt from the history.

The history is append-only: one ``TransitionRecord`` per applied decision, carrying the new state,
its ``state_seq``, the data ``changes`` (a key set to None was deleted) and what happened to each
timer. The service stores a full ``StateSnapshot`` every 20 versions of an instance, so a rebuild
starts from the latest snapshot at or before the instant and replays only the records after it:
the cost stays flat however long a customer's history grows (three queries per customer).

Order is the history's id order (the service writes an instance's records under its row lock);
``occurred_at`` decides which records are in the past. Instances whose first record is later than
the instant are absent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from webapp.models import GovernorInstance, StateSnapshot, TransitionRecord


@dataclass(frozen=True)
class InstanceView:
    """One governor instance as it was at an instant (read-only; JSON-ready data).

    ``timers`` names the armed timers (running or paused). A history record keeps what happened to
    each timer (arm, pause, resume, cancel), not its due time; ``due_at`` therefore holds the due
    time only for timers taken from a snapshot (or a record that carries it) and untouched since.
    """

    instance_id: str
    governor: str
    subject_id: str | None
    state: str
    state_seq: int
    version: int
    entered_at: datetime
    data: Mapping[str, Any]
    timers: tuple[str, ...] = ()
    due_at: Mapping[str, str | None] = field(default_factory=dict)
    last_transition_id: int | None = None
    last_event: str | None = None
    replayed: int = 0
    """How many history records were replayed on top of the snapshot (0 when it was exact)."""

    def as_json(self) -> dict[str, Any]:
        """The view as the JSON API returns it."""
        return {
            "instance_id": self.instance_id,
            "governor": self.governor,
            "subject": self.subject_id,
            "state": self.state,
            "state_seq": self.state_seq,
            "version": self.version,
            "entered_at": self.entered_at.isoformat(),
            "data": dict(self.data),
            "timers": {name: self.due_at.get(name) for name in self.timers},
            "last_transition_id": self.last_transition_id,
            "last_event": self.last_event,
        }


def state_as_of(
    session: Session, tenant_id: str, customer_id: str, instant: datetime
) -> dict[str, InstanceView]:
    """Every governor instance of the customer as it was at ``instant`` (aware), keyed by instance id."""
    if instant.tzinfo is None:
        raise ValueError("state_as_of needs a timezone-aware instant")
    instances = session.execute(
        select(GovernorInstance.id, GovernorInstance.governor, GovernorInstance.subject_id).where(
            GovernorInstance.tenant_id == tenant_id,
            GovernorInstance.customer_id == customer_id,
            GovernorInstance.created_at <= instant,
        )
    ).all()
    if not instances:
        return {}
    ids = [row.id for row in instances]
    snapshots = _latest_snapshots(session, ids, instant)
    # One query for every record to replay: after each instance's snapshot (or from its start).
    floors = [
        and_(TransitionRecord.instance_id == iid, TransitionRecord.id > snapshots[iid].transition_id)
        if iid in snapshots
        else TransitionRecord.instance_id == iid
        for iid in ids
    ]
    records = session.execute(
        select(
            TransitionRecord.id,
            TransitionRecord.instance_id,
            TransitionRecord.event,
            TransitionRecord.to_state,
            TransitionRecord.state_seq,
            TransitionRecord.changes,
            TransitionRecord.timers,
            TransitionRecord.occurred_at,
        )
        .where(
            TransitionRecord.tenant_id == tenant_id,
            TransitionRecord.customer_id == customer_id,
            TransitionRecord.occurred_at <= instant,
            or_(*floors),
        )
        .order_by(TransitionRecord.id)
    ).all()
    builders: dict[str, _Builder] = {}
    for row in instances:
        snap = snapshots.get(row.id)
        builders[row.id] = _Builder.from_snapshot(snap) if snap is not None else _Builder()
    for rec in records:
        builders[rec.instance_id].replay(rec)
    views: dict[str, InstanceView] = {}
    for row in instances:
        view = builders[row.id].view(row.id, row.governor, row.subject_id)
        if view is not None:
            views[row.id] = view
    return views


def _latest_snapshots(session: Session, ids: list[str], instant: datetime) -> dict[str, StateSnapshot]:
    """The latest snapshot of each instance taken at or before ``instant``."""
    latest = (
        select(StateSnapshot.instance_id, func.max(StateSnapshot.transition_id).label("transition_id"))
        .where(StateSnapshot.instance_id.in_(ids), StateSnapshot.occurred_at <= instant)
        .group_by(StateSnapshot.instance_id)
        .subquery()
    )
    rows = session.scalars(
        select(StateSnapshot).join(
            latest,
            and_(
                StateSnapshot.instance_id == latest.c.instance_id,
                StateSnapshot.transition_id == latest.c.transition_id,
            ),
        )
    )
    return {s.instance_id: s for s in rows}


class _Builder:
    """Folds one instance's snapshot and later records into its state."""

    __slots__ = (
        "data",
        "due_at",
        "entered_at",
        "last_event",
        "last_id",
        "replayed",
        "state",
        "state_seq",
        "version",
    )

    def __init__(self) -> None:
        self.state: str | None = None
        self.state_seq = 0
        self.version = 0
        self.entered_at: datetime | None = None
        self.data: dict[str, Any] = {}
        self.due_at: dict[str, str | None] = {}
        self.last_id: int | None = None
        self.last_event: str | None = None
        self.replayed = 0

    @classmethod
    def from_snapshot(cls, snap: StateSnapshot) -> _Builder:
        """Start from a stored full copy."""
        b = cls()
        b.state, b.state_seq, b.version, b.entered_at = (
            snap.state,
            snap.state_seq,
            snap.version,
            snap.entered_at,
        )
        b.data = dict(snap.data or {})
        for name, t in (snap.timers or {}).items():
            b.due_at[name] = t.get("due_at")
        b.last_id = snap.transition_id
        return b

    def replay(self, rec: Any) -> None:
        """Apply one history record (the engine's ``apply``, from what the record kept)."""
        if rec.state_seq != self.state_seq or self.state is None:
            self.entered_at = rec.occurred_at  # a new state entry (a self-transition keeps the seq)
        self.state = rec.to_state
        self.state_seq = rec.state_seq
        self.version += 1
        for key, value in (rec.changes or {}).items():
            if value is None:
                self.data.pop(key, None)
            else:
                self.data[key] = value
        for name, op in (rec.timers or {}).items():
            # Either the op name, or (richer records) {"op": ..., "due_at": ...}.
            kind = op.get("op") if isinstance(op, dict) else op
            if kind == "cancel":
                self.due_at.pop(name, None)
            else:
                self.due_at[name] = op.get("due_at") if isinstance(op, dict) else None
        self.last_id = rec.id
        self.last_event = rec.event
        self.replayed += 1

    def view(self, instance_id: str, governor: str, subject_id: str | None) -> InstanceView | None:
        """The folded instance, or None when nothing had happened to it yet."""
        if self.state is None or self.entered_at is None:
            return None
        return InstanceView(
            instance_id=instance_id,
            governor=governor,
            subject_id=subject_id,
            state=self.state,
            state_seq=self.state_seq,
            version=self.version,
            entered_at=self.entered_at,
            data=dict(self.data),
            timers=tuple(sorted(self.due_at)),
            due_at=dict(self.due_at),
            last_transition_id=self.last_id,
            last_event=self.last_event,
            replayed=self.replayed,
        )


__all__ = ["InstanceView", "state_as_of"]
