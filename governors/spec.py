"""Frozen dataclasses that *describe* a governor: its states, timers, transitions and cascades.

A governor definition is plain data. Behaviour lives in exactly two places: the one engine
(`governors.engine`) and the named guards/updaters in `governors.rules`. Definitions refer to
those by name, and `governors.registry` validates every reference when it is imported.

Conventions used by the definitions (GOVERNORS.md row ids are kept so tests and docs can cite them):

* ``src=()`` marks a *creation* row: the event creates the instance (GOVERNORS.md writes "—").
* ``src=(ANY,)`` means every non-terminal state of the governor.
* ``dst=SAME`` keeps the current state (a self-transition); ``dst="@field"`` names the target state
  in the instance's data (Product Catalog's ``return_state``), with the possible values listed in
  ``dst_choices`` so the registry can check reachability.
* ``by`` lists who may trigger the row: staff roles (``support``, ``finance``, ``manager``,
  ``admin``, ``compliance``) and the pseudo-roles ``sys`` (integrations, detectors, jobs and the
  customer acting through the marketplace), ``timer`` and ``cascade``.
* Values in ``set``, ``Effect.args``, ``Timer.payload`` and ``Cascade.payload`` are literals, or
  references resolved by the engine: ``$now``, ``$payload.<name>``, ``$data.<name>``,
  ``$instance.id``, ``$instance.subject_id``, ``$instance.customer_id``, ``$event``,
  ``$state``, ``$setting.<key>``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, Final, TypeVar

ANY: Final = "*"
"""Source marker: every non-terminal state."""

SAME: Final = "="
"""Target marker: stay in the current state."""

STAFF_ROLES: Final = ("support", "finance", "manager", "admin", "compliance")
"""Roles a signed-in staff member may hold (``auditor`` is read-only and triggers nothing)."""

PSEUDO_ROLES: Final = ("sys", "timer", "cascade")
"""Non-human triggers: integrations and jobs, a governor timer, a cascade from another governor."""

STAFF: Final = "staff"
"""``Input.required`` value: required from staff only."""

INPUT_KINDS: Final = ("text", "code", "cents", "int", "bool", "datetime", "list", "mapping")


def frozen_map(values: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
    """Return a read-only mapping (definitions are shared and must never be mutated)."""
    return MappingProxyType(dict(values or {}))


T = TypeVar("T")


def positional_maker(cls: type[T]) -> Callable[..., T]:
    """A constructor of the dataclass ``cls`` taking every field positionally, for the engine's hot path.

    Calling a class goes through ``type.__call__`` and a C-level call of the generated ``__init__``
    (CPython 3.11 does not inline it); this plain function, generated once like the ``__init__``
    itself, makes an equal object with ``object.__new__`` and direct stores: 40 % cheaper for
    ``Decision``. Slotted classes get attribute stores, frozen ones stores into ``__dict__`` (what
    their ``__init__`` does through ``object.__setattr__``). Classes with ``__post_init__`` are refused.
    """
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__} is not a plain dataclass")
    declared = fields(cls)  # type: ignore[arg-type]
    names = [f.name for f in declared]
    if any(not f.init for f in declared):
        raise TypeError(f"{cls.__name__} has fields outside __init__")
    slotted = "__slots__" in vars(cls)
    if params.frozen == slotted:
        raise TypeError(f"{cls.__name__} must be slotted and mutable, or frozen without slots")
    if slotted:
        stores = "".join(f"    o.{n} = {n}\n" for n in names)
    else:
        stores = "    d = o.__dict__\n" + "".join(f"    d[{n!r}] = {n}\n" for n in names)
    source = f"def make_{cls.__name__}({', '.join(names)}):\n    o = new(cls)\n{stores}    return o\n"
    namespace: dict[str, Any] = {"new": object.__new__, "cls": cls}
    exec(source, namespace)
    maker: Callable[..., T] = namespace[f"make_{cls.__name__}"]
    return maker


@dataclass(frozen=True)
class Input:
    """A value a transition needs in its payload, validated by the engine before any guard runs.

    ``kind`` is one of INPUT_KINDS. ``cents`` is an integer amount of money in minor units;
    ``min``/``max`` bound numbers (or the length of text); ``choices`` restricts codes.
    ``required`` is True, False, or ``STAFF`` ("staff"): required when a person sends the event, optional
    for the system, timers and cascades that share the row (e.g. a note on an approval).
    """

    name: str
    kind: str = "text"
    required: bool | str = True
    choices: tuple[str, ...] = ()
    min: int | None = None
    max: int | None = None
    label: str = ""


@dataclass(frozen=True)
class Effect:
    """A side effect named as data; the engine never executes it (the service turns it into jobs)."""

    name: str
    args: Mapping[str, Any] = field(default_factory=frozen_map)


new_effect = positional_maker(Effect)
"""``Effect(name, args)`` at less cost than the frozen ``__init__`` (for effects with references)."""


def fx(name: str, **args: Any) -> Effect:
    """Shorthand used by the definitions: ``fx("notify_customer", template="approved")``."""
    return Effect(name, frozen_map(args))


@dataclass(frozen=True)
class FourEyes:
    """A second, different user holding one of ``approvers`` must approve before the row applies.

    ``when`` names a guard: four-eyes is required only while it holds (e.g. "refund > 0").
    """

    approvers: tuple[str, ...]
    when: str | None = None


@dataclass(frozen=True)
class Timer:
    """A timer armed when its state is entered (GOVERNORS.md §0.3).

    Due time is either ``after`` (a duration setting) from state entry, or ``at`` (a data field
    holding a datetime) minus ``before`` (a duration setting, optional). A timer whose ``when`` guard
    fails is armed *paused* with its full duration; rows that change data re-evaluate ``when`` and
    pause or resume the timer with the remaining time (holds, dunning holds).
    """

    name: str
    event: str
    after: str | None = None
    at: str | None = None
    before: str | None = None
    when: str | None = None
    payload: Mapping[str, Any] = field(default_factory=frozen_map)


@dataclass(frozen=True)
class State:
    """One state of a governor. ``attention`` is a bool or the name of a guard deciding it."""

    name: str
    description: str
    terminal: bool = False
    attention: bool | str = False
    attention_reason: str = ""
    timers: tuple[Timer, ...] = ()


@dataclass(frozen=True)
class Transition:
    """One numbered row of GOVERNORS.md (or an [I] addition, ids like ``Ex1``).

    Rows sharing a (state, event) pair are tried in definition order; every row but the last must
    carry guards that tell them apart.
    """

    id: str
    events: tuple[str, ...]
    src: tuple[str, ...]
    dst: str
    by: tuple[str, ...]
    guards: tuple[str, ...] = ()
    requesters: tuple[str, ...] = ()
    four_eyes: FourEyes | None = None
    inputs: tuple[Input, ...] = ()
    effects: tuple[Effect, ...] = ()
    set: Mapping[str, Any] = field(default_factory=frozen_map)
    updates: tuple[str, ...] = ()
    rearm: tuple[str, ...] = ()
    reenter: bool = False
    dst_choices: tuple[str, ...] = ()
    title: str = ""
    event_titles: Mapping[str, str] = field(default_factory=frozen_map)
    """Button titles for rows that serve several events (one per event, instead of ``title``)."""
    doc: str = ""

    def title_for(self, event: str) -> str:
        """What a button for ``event`` on this row says ("" when the row has no title)."""
        return self.event_titles.get(event) or self.title

    @property
    def manual(self) -> bool:
        """True when some staff role may trigger or request this row."""
        return any(r in STAFF_ROLES for r in self.by + self.requesters)


@dataclass(frozen=True)
class Cascade:
    """A cascade row of GOVERNORS.md §10: when source rows ``on`` apply, send ``event`` to ``target``.

    ``select`` picks the target instances among the customer's:

    * ``each``: every instance of the target governor, filtered by the ``where`` guard (evaluated on
      the target instance, with the source available as facts ``source_*``);
    * ``new``: ``event`` is a creation row of the target and makes a new instance;
    * ``upsert``: the customer's single instance of the target gets ``event``; when there is none,
      a new one is created with ``create_event``;
    * ``self``: the source instance itself (a follow-up, e.g. an automatic approval).

    ``fan_out`` names a list (a ``$`` reference) and sends one event per item, with the item in the
    payload under ``item``. ``when`` is a guard on the source context after the transition.
    ``must`` marks must-apply cascades: a rejection is a critical alert, not a no-op.
    """

    id: str
    on: tuple[str, ...]
    target: str
    event: str
    select: str = "each"
    where: str | None = None
    when: str | None = None
    payload: Mapping[str, Any] = field(default_factory=frozen_map)
    must: bool = False
    create_event: str | None = None
    fan_out: str | None = None
    doc: str = ""


@dataclass(frozen=True)
class Governor:
    """A whole governor: states, transitions and outgoing cascades, plus how it is instantiated."""

    name: str
    title: str
    description: str
    instance_of: str
    states: tuple[State, ...]
    transitions: tuple[Transition, ...]
    cascades: tuple[Cascade, ...] = ()
    multiple: bool = False
    badge_order: tuple[str, ...] = ()

    def state(self, name: str) -> State:
        """Return the named state (KeyError if absent)."""
        for s in self.states:
            if s.name == name:
                return s
        raise KeyError(f"{self.name}: no state {name!r}")

    @property
    def state_names(self) -> tuple[str, ...]:
        """All state names in definition order."""
        return tuple(s.name for s in self.states)

    @property
    def terminal_states(self) -> frozenset[str]:
        """States with no way out."""
        return frozenset(s.name for s in self.states if s.terminal)

    @property
    def initial_states(self) -> tuple[str, ...]:
        """Targets of the creation rows, in order."""
        out: list[str] = []
        for t in self.transitions:
            if not t.src:
                for d in t.dst_choices or (t.dst,):
                    if d not in out:
                        out.append(d)
        return tuple(out)

    @property
    def events(self) -> tuple[str, ...]:
        """Every event name the governor understands (rows and timers)."""
        seen: dict[str, None] = {}
        for t in self.transitions:
            for e in t.events:
                seen.setdefault(e, None)
        return tuple(seen)
