"""Typed, frozen snapshots the engine reads: instances, their timers, and the facts of one event.

The service layer builds these from the database (or the simulator from memory); the engine and
the guards only ever read them. ``Context`` is the one object guards and updaters receive.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from governors.spec import STAFF_ROLES, frozen_map, positional_maker

if TYPE_CHECKING:
    from governors.settings import Settings
    from governors.spec import Governor, Transition


def as_datetime(value: Any) -> datetime | None:
    """A datetime from a datetime or an ISO 8601 string (as stored in JSON data), else None."""
    kind = type(value)
    if kind is datetime or (kind is not str and isinstance(value, datetime)):
        return value  # type: ignore[no-any-return]
    if kind is str or isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None


T = TypeVar("T")


def aware_datetime(value: Any) -> datetime | None:
    """Like ``as_datetime``, but only timezone-aware values count (naive ones give None)."""
    moment = as_datetime(value)
    return moment if moment is not None and moment.tzinfo is not None else None


class NeedsInput(Exception):
    """Raised by ``Context.arg`` when a guard needs a payload value that was not given:
    ``NeedsInput(name)``.

    No ``__init__`` of its own: the name is read from ``args``, so raising one does not call Python
    code (guards raise these on about one event in six; a Python ``__init__`` doubled their cost).
    """

    @property
    def name(self) -> str:
        """The payload value that was needed."""
        return str(self.args[0])


class GuardFailed(Exception):
    """A guard may raise this to give a more specific, actionable message than its default:
    ``GuardFailed(message)`` (read back as ``message``; see ``NeedsInput`` for why no ``__init__``)."""

    @property
    def message(self) -> str:
        """What to do about it."""
        return str(self.args[0])


@dataclass(slots=True)
class TimerState:
    """An armed timer of one instance, keyed by the state entry (``state_seq``) that armed it.

    Running timers have ``due_at``; paused ones (holds) keep ``remaining`` instead. Read-only by
    convention (slotted, not frozen: the engine creates these on every state entry).
    """

    name: str
    event: str
    state_seq: int
    due_at: datetime | None = None
    remaining: timedelta | None = None
    payload: Mapping[str, Any] = field(default_factory=frozen_map)

    @property
    def paused(self) -> bool:
        """True while a hold keeps the timer from running."""
        return self.due_at is None


new_timer_state = positional_maker(TimerState)
"""``TimerState(...)`` with every field given, at less cost (the engine arms timers on most entries)."""


@dataclass(frozen=True, slots=True)
class Instance:
    """One governor instance as the engine sees it. ``state`` is None before its creation event."""

    governor: str
    id: str
    state: str | None = None
    state_seq: int = 0
    version: int = 0
    entered_at: datetime | None = None
    customer_id: str | None = None
    subject_id: str | None = None
    data: Mapping[str, Any] = field(default_factory=frozen_map)
    timers: Mapping[str, TimerState] = field(default_factory=frozen_map)


@dataclass(frozen=True, slots=True)
class Facts:
    """Everything about one event that is not the instance itself.

    ``role`` is a staff role or a pseudo-role (``sys``, ``timer``, ``cascade``); ``actor`` is who
    (a user id or ``system``). ``peers`` holds the customer's other governor instances by governor
    name, so guards can ask "is the account active?". ``extra`` carries facts from the outside
    world (processor confirmations, counts) that the service looked up. ``timer``/``timer_seq``
    identify the timer that fired, so stale timers can be discarded.
    """

    now: datetime
    role: str = "sys"
    actor: str = "system"
    payload: Mapping[str, Any] = field(default_factory=frozen_map)
    peers: Mapping[str, tuple[Instance, ...]] = field(default_factory=frozen_map)
    extra: Mapping[str, Any] = field(default_factory=frozen_map)
    settings: Settings | None = None
    approved_by: str | None = None
    timer: str | None = None
    timer_seq: int | None = None

    def with_payload(self, payload: Mapping[str, Any]) -> Facts:
        """Return a copy with another payload."""
        return replace(self, payload=frozen_map(payload))


class Context:
    """What guards and updaters read: one instance, one event, its facts and the settings.

    ``data`` is the instance data the guard should look at: the current data while deciding, the
    changed data when timers and cascades are evaluated after the transition. Treat it as read-only
    (a plain slotted class rather than a frozen dataclass: the engine builds two per decision).
    """

    __slots__ = (
        "_memo",
        "data",
        "event",
        "facts",
        "governor",
        "instance",
        "now",
        "payload",
        "row",
        "settings",
        "target",
    )

    def __init__(
        self,
        governor: Governor,
        instance: Instance,
        event: str,
        facts: Facts,
        settings: Settings,
        data: Mapping[str, Any],
        row: Transition | None = None,
        target: str | None = None,
    ) -> None:
        self.governor = governor
        self.instance = instance
        self.event = event
        self.facts = facts
        self.settings = settings
        self.data = data
        self.row = row
        self.target = target
        # Plain attributes rather than properties: guards read them on almost every event.
        self.now: datetime = facts.now
        """The event's instant (the engine has no clock)."""
        self.payload: Mapping[str, Any] = facts.payload
        """The event's payload."""
        self._memo: dict[str, Any] | None = None

    def cached(self, key: str, compute: Callable[[Context], T]) -> T:
        """``compute(self)`` once per context: for derived views several guards of one row share."""
        memo = self._memo
        if memo is None:
            memo = self._memo = {}
        if key not in memo:
            memo[key] = compute(self)
        return memo[key]  # type: ignore[no-any-return]

    def moved_on(self, data: Mapping[str, Any], target: str) -> Context:
        """This context as it is after the transition (engine use): new data and target, no cached views."""
        self.data = data
        self.target = target
        self._memo = None
        return self

    def __repr__(self) -> str:
        inst = self.instance
        return f"Context({self.governor.name}, {inst.id}, {self.event!r}, state={inst.state})"

    @property
    def by_staff(self) -> bool:
        """True when a person (a staff role) sends the event, not the system, a timer or a cascade."""
        return self.facts.role in STAFF_ROLES

    @property
    def state(self) -> str | None:
        """The instance's current state."""
        return self.instance.state

    def arg(self, name: str) -> Any:
        """A payload value the guard cannot decide without (raises NeedsInput when absent)."""
        if name not in self.facts.payload or self.facts.payload[name] is None:
            raise NeedsInput(name)
        return self.facts.payload[name]

    def setting(self, key: str) -> Any:
        """A configuration value (GOVERNORS.md default, TOML override)."""
        return self.settings[key]

    def duration(self, key: str) -> timedelta:
        """A duration setting as a timedelta."""
        return self.settings.duration(key)

    def fact(self, key: str, default: Any = None) -> Any:
        """An outside-world fact supplied by the service."""
        return self.facts.extra.get(key, default)

    def peers(self, governor: str) -> tuple[Instance, ...]:
        """The customer's instances of another governor."""
        return self.facts.peers.get(governor, ())

    def peer_state(self, governor: str) -> str | None:
        """State of the customer's single instance of ``governor``, or None if there is none."""
        found = self.peers(governor)
        return found[0].state if found else None

    def peer_data(self, governor: str) -> Mapping[str, Any]:
        """Data of the customer's single instance of ``governor`` (empty if none)."""
        found = self.peers(governor)
        return found[0].data if found else frozen_map()

    def since(self, field_name: str) -> timedelta | None:
        """Time elapsed since a datetime stored in the data, or None when the field is unset."""
        value = as_datetime(self.data.get(field_name))
        if value is None:
            return None
        return self.now - value
