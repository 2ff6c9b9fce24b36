"""Registries of the named pieces of behaviour that definitions refer to.

* guards: pure predicates ``(Context) -> bool`` with a message a person can act on;
* updaters: pure functions ``(Context) -> Mapping`` returning data changes;
* effects: names of side effects (with a description) that the service turns into jobs.

Each governor's rules live in their own module in this package and register here at import.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from governors.facts import Context

GuardFn = Callable[[Context], bool]
UpdateFn = Callable[[Context], Mapping[str, Any]]


@dataclass(frozen=True)
class GuardSpec:
    """A registered guard: its name, predicate and the message shown when it fails."""

    name: str
    fn: GuardFn
    message: str
    code: str = "guard_failed"


GUARDS: dict[str, GuardSpec] = {}
UPDATERS: dict[str, UpdateFn] = {}
EFFECTS: dict[str, str] = {}


def guard(name: str, message: str, code: str = "guard_failed") -> Callable[[GuardFn], GuardFn]:
    """Register a guard under ``name``.

    ``message`` says what to do when it fails; ``code`` is the machine-readable rejection code
    (``guard_failed`` unless GOVERNORS.md names a specific one, e.g. ``amount_mismatch``).
    """

    def register(fn: GuardFn) -> GuardFn:
        if name in GUARDS:
            raise ValueError(f"guard {name!r} registered twice")
        GUARDS[name] = GuardSpec(name, fn, message, code)
        return fn

    return register


def updater(name: str) -> Callable[[UpdateFn], UpdateFn]:
    """Register an updater under ``name``."""

    def register(fn: UpdateFn) -> UpdateFn:
        if name in UPDATERS:
            raise ValueError(f"updater {name!r} registered twice")
        UPDATERS[name] = fn
        return fn

    return register


def declare_effects(**descriptions: str) -> None:
    """Declare effect names with a one-line description each."""
    for name, text in descriptions.items():
        if name in EFFECTS and EFFECTS[name] != text:
            raise ValueError(f"effect {name!r} declared twice with different descriptions")
        EFFECTS[name] = text
