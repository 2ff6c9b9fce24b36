"""Value objects returned by the engine: Decision, Rejection, timer operations, cascades, plans.

They are plain data, like BYCEPS' Ok/Err: the engine *describes* what should happen and the service
layer makes it happen (in one database transaction), so nothing here performs I/O. The per-event
outcomes (Decision, Rejection, TimerOp, CascadeEmit) are slotted dataclasses rather than frozen
ones because the engine builds them on every event and frozen initialisation costs a third of a
decision; treat them as read-only (their mappings are read-only views).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from governors.facts import Instance, TimerState
from governors.spec import Effect, FourEyes, Input, frozen_map, positional_maker


@dataclass(slots=True)
class TimerOp:
    """What to do with one timer: ``arm`` (new entry or explicit re-arm), ``pause`` (a hold
    started: ``timer.remaining`` is kept), ``resume`` (the hold ended: due again after the
    remaining time) or ``cancel`` (the state was left)."""

    op: str
    timer: TimerState


@dataclass(slots=True)
class CascadeEmit:
    """A cascade the decision emits, still to be resolved into target instances by the planner."""

    id: str
    target: str
    event: str
    payload: Mapping[str, Any]
    select: str
    where: str | None
    must: bool
    create_event: str | None = None


@dataclass(slots=True)
class Decision:
    """What firing an event would do. ``needs_approval`` is set when four-eyes (or a request by a
    role that may only request) applies and no approval was given in the facts."""

    governor: str
    instance_id: str
    event: str
    row_id: str
    from_state: str | None
    to_state: str
    state_seq: int
    self_transition: bool
    actor: str
    role: str
    at: datetime
    payload: Mapping[str, Any] = field(default_factory=frozen_map)
    changes: Mapping[str, Any] = field(default_factory=frozen_map)
    effects: tuple[Effect, ...] = ()
    timer_ops: tuple[TimerOp, ...] = ()
    cascades: tuple[CascadeEmit, ...] = ()
    needs_approval: FourEyes | None = None
    attention: bool = False
    attention_reason: str = ""

    @property
    def ok(self) -> bool:
        """Always True (lets callers write ``if outcome.ok``)."""
        return True


@dataclass(slots=True)
class Rejection:
    """Why an event cannot apply: a machine code (``invalid_transition``, ``guard_failed``,
    ``role_not_allowed``, ``invalid_input``, ``stale_timer``, ...) and a message a person can act on."""

    code: str
    message: str
    governor: str
    event: str
    state: str | None
    row_id: str | None = None
    details: Mapping[str, Any] = field(default_factory=frozen_map)

    @property
    def ok(self) -> bool:
        """Always False."""
        return False


Outcome = Decision | Rejection

# Positional constructors of the per-event outcomes for the engine (every field given, in order).
new_timer_op = positional_maker(TimerOp)
new_decision = positional_maker(Decision)
new_emit = positional_maker(CascadeEmit)


@dataclass(frozen=True)
class AllowedEvent:
    """A manual action as the console offers it to one role in the current state.

    ``mode`` is ``direct`` (applies at once), ``four_eyes`` (needs a second person holding one of
    ``approvers``) or ``request`` (the role may only ask; an allowed role executes). ``allowed`` is
    False with ``reason`` when the role or a guard forbids it now ("needs finance; you have
    support"), so the page can show the button disabled with the reason.
    """

    event: str
    row_ids: tuple[str, ...]
    title: str
    mode: str
    approvers: tuple[str, ...]
    inputs: tuple[Input, ...]
    allowed: bool = True
    reason: str = ""


@dataclass(frozen=True)
class PlanStep:
    """One step of a cascade plan. ``status``: ``applied``, ``ignored`` (best-effort cascade not
    valid in the target's state), ``failed`` (a must-apply cascade was rejected: critical alert),
    ``rejected`` (the root event itself), ``cycle`` or ``depth_exceeded``."""

    index: int
    governor: str
    instance_id: str
    event: str
    outcome: Outcome | None
    status: str
    depth: int
    cause: int | None = None
    cascade: str | None = None
    payload: Mapping[str, Any] = field(default_factory=frozen_map)


@dataclass(frozen=True)
class Plan:
    """The ordered result of ``plan()``: the root decision and every cascade it sets off."""

    steps: tuple[PlanStep, ...]
    alerts: tuple[str, ...]
    instances: Mapping[str, Instance]

    @property
    def root(self) -> Outcome | None:
        """The outcome of the event that was asked for."""
        return self.steps[0].outcome if self.steps else None

    @property
    def ok(self) -> bool:
        """True when the root event applies and no must-apply cascade failed."""
        return isinstance(self.root, Decision) and not any(
            s.status in ("failed", "cycle", "depth_exceeded") for s in self.steps
        )

    @property
    def decisions(self) -> tuple[Decision, ...]:
        """The decisions to execute, in order."""
        return tuple(
            s.outcome for s in self.steps if s.status == "applied" and isinstance(s.outcome, Decision)
        )
