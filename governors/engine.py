"""The one transition engine for all eight governors: pure, deterministic, no I/O and no clock.

``decide`` answers "what would firing this event do?", ``plan`` follows the cascades across
governors to a fixed point, ``allowed_events``/``manual_actions`` tell the console what a role may
do now, and ``apply`` computes the instance after a decision. Behaviour specific to a governor
lives only in its definition (data) and in the named guards and updaters of ``governors.rules``.
"""

from __future__ import annotations

import linecache
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import suppress
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import partial
from types import MappingProxyType
from typing import Any

from governors.facts import (
    Context,
    Facts,
    GuardFailed,
    Instance,
    NeedsInput,
    TimerState,
    as_datetime,
    new_timer_state,
)
from governors.outcomes import (
    AllowedEvent,
    CascadeEmit,
    Decision,
    Outcome,
    Plan,
    PlanStep,
    Rejection,
    TimerOp,
    new_decision,
    new_emit,
    new_timer_op,
)
from governors.rules.base import GUARDS, UPDATERS, GuardFn, UpdateFn
from governors.settings import Settings, default_settings
from governors.spec import (
    ANY,
    SAME,
    STAFF,
    STAFF_ROLES,
    Cascade,
    Effect,
    FourEyes,
    Governor,
    Input,
    State,
    Timer,
    Transition,
    frozen_map,
    new_effect,
)

_ZERO = timedelta(0)
_STAFF: frozenset[str] = frozenset(STAFF_ROLES)
_EMPTY: Mapping[str, Any] = MappingProxyType({})
_NO_SLOTS: dict[str, _Slot] = {}
_new = object.__new__


# --------------------------------------------------------------------------- references


Resolver = Callable[[Context], Any]


def _ref(value: str) -> Resolver:
    head, _, rest = value[1:].partition(".")
    if head == "now":
        return lambda ctx: ctx.facts.now
    if head == "payload":
        return lambda ctx: ctx.facts.payload.get(rest)
    if head == "data":
        return lambda ctx: ctx.data.get(rest)
    if head == "instance":
        return lambda ctx: getattr(ctx.instance, rest)
    if head == "event":
        return lambda ctx: ctx.event
    if head == "state":
        return lambda ctx: ctx.target or ctx.instance.state
    if head == "setting":
        return lambda ctx: ctx.settings[rest]
    raise ValueError(f"unknown reference {value!r}")


def compile_value(value: Any) -> Resolver:
    """Turn a literal/list/mapping with ``$`` references into a function of the context (done once)."""
    if isinstance(value, str) and value.startswith("$"):
        return _ref(value)
    if isinstance(value, Mapping):
        return _compile_mapping(value)
    if isinstance(value, list | tuple):
        items = [compile_value(v) for v in value]
        return lambda ctx: [f(ctx) for f in items]
    return lambda ctx: value


def _compile_mapping(values: Mapping[str, Any]) -> Resolver:
    """Resolve a mapping with one call that evaluates one dict display, keys in definition order.

    The resolver is generated once per mapping, as ``dataclasses`` generates ``__init__``: keys,
    names and nested resolvers are bound as constants of its namespace (never pasted into the
    source), so ``{"invoice_id": "$instance.subject_id", "kind": "$data.kind"}`` becomes
    ``lambda ctx: {k0: getattr(ctx.instance, n0), k1: ctx.data.get(n1)}``.
    """
    namespace: dict[str, Any] = {"getattr": getattr}
    parts: list[str] = []
    for index, (key, value) in enumerate(values.items()):
        namespace[f"k{index}"] = key
        name = f"n{index}"
        if isinstance(value, str) and value.startswith("$"):
            head, _, rest = value[1:].partition(".")
            namespace[name] = rest
            expression = {
                "data": f"ctx.data.get({name})",
                "payload": f"ctx.facts.payload.get({name})",
                "instance": f"getattr(ctx.instance, {name})",
                "setting": f"ctx.settings[{name}]",
                "now": "ctx.facts.now",
                "event": "ctx.event",
                "state": "(ctx.target or ctx.instance.state)",
            }.get(head)
            if expression is None:
                _ref(value)  # raises ValueError: unknown reference
        elif isinstance(value, Mapping | list | tuple):
            namespace[name] = compile_value(value)
            expression = f"{name}(ctx)"
        else:
            namespace[name] = value
            expression = name
        parts.append(f"k{index}: {expression}")
    exec(f"def resolve_mapping(ctx):\n    return {{{', '.join(parts)}}}\n", namespace)
    resolver: Resolver = namespace["resolve_mapping"]
    return resolver


REFERENCE_HEADS = ("now", "payload", "data", "instance", "event", "state", "setting")


def _has_refs(value: Any) -> bool:
    if isinstance(value, str):
        return value.startswith("$")
    if isinstance(value, Mapping):
        return any(_has_refs(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_has_refs(v) for v in value)
    return False


def _shareable(values: Mapping[str, Any]) -> bool:
    """True when a mapping resolves to the same plain scalars on every event (one copy can be shared)."""
    return not _has_refs(values) and all(
        v is None or isinstance(v, str | int | float | bool) for v in values.values()
    )


# --------------------------------------------------------------------------- guards and inputs


def _guard_fn(name: str) -> GuardFn:
    """The predicate registered as ``name``; an unknown name fails (KeyError) when it is evaluated."""
    spec = GUARDS.get(name)
    if spec is not None:
        return spec.fn

    def unknown(ctx: Context) -> bool:
        raise KeyError(name)

    return unknown


def _holds(name: str | None, ctx: Context) -> bool:
    """True when no guard is named or the named guard passes (a NeedsInput counts as failing)."""
    if name is None:
        return True
    return _passes(_guard_fn(name), ctx)


def _passes(fn: GuardFn | None, ctx: Context) -> bool:
    """``_holds`` for a guard resolved at compile time."""
    if fn is None:
        return True
    try:
        return bool(fn(ctx))
    except (GuardFailed, NeedsInput):
        return False


class _Input:
    """An ``Input`` with its label, requirement and kind-specific check worked out once."""

    __slots__ = (
        "check",
        "choices",
        "kind",
        "label",
        "max",
        "min",
        "name",
        "required",
        "staff_required",
        "valid_types",
    )

    def __init__(self, inp: Input) -> None:
        self.name = inp.name
        self.kind = inp.kind
        self.label = inp.label or inp.name.replace("_", " ")
        self.required = inp.required is True
        self.staff_required = inp.required == STAFF
        self.choices = inp.choices
        self.min = inp.min
        self.max = inp.max
        self.check: Callable[[_Input, Any, Settings], str | None] = _CHECKS.get(inp.kind, _check_nothing)
        # Value types that satisfy this input whatever the value (no bounds or choices to check).
        self.valid_types: frozenset[type] = frozenset()
        if inp.kind == "mapping":
            self.valid_types = frozenset({dict, MappingProxyType})
        elif inp.kind == "bool":
            self.valid_types = frozenset({bool})
        elif inp.kind in ("int", "cents") and inp.min is None and inp.max is None:
            self.valid_types = frozenset({int})
        elif inp.kind == "list" and not inp.choices:
            self.valid_types = frozenset({list, tuple})


def _check_number(inp: _Input, value: Any, settings: Settings) -> str | None:
    if type(value) is not int and (not isinstance(value, int) or isinstance(value, bool)):
        return f"{inp.label} must be a whole number" + (" of cents" if inp.kind == "cents" else "")
    if inp.min is not None and value < inp.min:
        return f"{inp.label} must be at least {inp.min}"
    if inp.max is not None and value > inp.max:
        return f"{inp.label} must be at most {inp.max}"
    return None


def _check_text(inp: _Input, value: Any, settings: Settings) -> str | None:
    if type(value) is not str and not isinstance(value, str):
        return f"{inp.label} must be text"
    if inp.choices and value not in inp.choices:
        return f"{inp.label} must be one of: {', '.join(inp.choices)}"
    limit = inp.max if inp.max is not None else _reason_limits(settings)[2]
    if len(value) > limit:
        return f"{inp.label} must be at most {limit} characters"
    if inp.min is not None and len(value.strip()) < inp.min:
        return f"{inp.label} must be at least {inp.min} characters"
    return None


def _check_bool(inp: _Input, value: Any, settings: Settings) -> str | None:
    return None if value is True or value is False else f"{inp.label} must be true or false"


def _check_datetime(inp: _Input, value: Any, settings: Settings) -> str | None:
    moment: datetime | None
    if type(value) is str:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            moment = None
    else:
        moment = as_datetime(value)
    if moment is None or moment.tzinfo is None:
        return f"{inp.label} must be a date and time with a time zone (ISO 8601)"
    return None


def _check_list(inp: _Input, value: Any, settings: Settings) -> str | None:
    if type(value) is not list and not isinstance(value, list | tuple):
        return f"{inp.label} must be a list"
    if inp.choices and any(v not in inp.choices for v in value):
        return f"{inp.label} may only contain: {', '.join(inp.choices)}"
    return None


def _check_mapping(inp: _Input, value: Any, settings: Settings) -> str | None:
    kind = type(value)
    if kind is dict or kind is MappingProxyType or isinstance(value, Mapping):
        return None
    return f"{inp.label} must be an object"


def _check_nothing(inp: _Input, value: Any, settings: Settings) -> str | None:
    return None


_CHECKS: dict[str, Callable[[_Input, Any, Settings], str | None]] = {
    "cents": _check_number,
    "int": _check_number,
    "text": _check_text,
    "code": _check_text,
    "bool": _check_bool,
    "datetime": _check_datetime,
    "list": _check_list,
    "mapping": _check_mapping,
}
"""How a present value of each input kind is validated (an absent one is handled by ``_inputs_source``)."""


_REASON_LIMITS: list[tuple[Settings | None, int, int, Any]] = [(None, 0, 0, None)]
"""One entry: ``_reason_limits`` of the last settings seen (replaced whole, never empty)."""


def _reason_limits(settings: Settings) -> tuple[Settings | None, int, int, Any]:
    """(settings, min reason length, max text length, max as written), kept for the last settings seen."""
    if _REASON_LIMITS[0][0] is settings:
        return _REASON_LIMITS[0]
    raw = settings["engine.max_text_length"]
    hit = (settings, int(settings["engine.min_reason_length"]), int(raw), raw)
    _REASON_LIMITS[:] = [hit]
    return hit


def _check_reason(payload: Mapping[str, Any], settings: Settings) -> tuple[str, str] | None:
    """("reason", message) when a staff event's reason is missing, too short or too long (§0.2)."""
    _, minimum, maximum, written = _reason_limits(settings)
    reason = payload.get("reason")
    if not isinstance(reason, str) or len(reason.strip()) < minimum:
        return "reason", f"give a reason of at least {minimum} characters"
    if len(reason) > maximum:
        return "reason", f"the reason must be at most {written} characters"
    return None


_LIMITS = "(RL[0] if RL[0][0] is settings else reason_limits(settings))"
"""Generated code: ``_reason_limits(settings)``, its cached entry checked inline."""


def _fast_accept(inp: _Input, key: str, namespace: dict[str, Any], max_text: str) -> str | None:
    """A condition on ``v`` under which the kind check of ``inp`` surely returns None, or None.

    Only the common exact types are covered (str, int, an aware datetime); anything else, and every
    failure, goes to the kind check itself, so the messages are the check's own. ``max_text`` is the
    code for the settings' longest text; choices are bound as ``ch{key}``.
    """
    if inp.check is _check_text:
        parts = ["type(v) is str"]
        if inp.choices:
            namespace[f"ch{key}"] = frozenset(inp.choices)
            parts.append(f"v in ch{key}")
        parts.append(f"len(v) <= {inp.max!r}" if inp.max is not None else f"len(v) <= {max_text}")
        if inp.min is not None:
            parts.append(f"len(v.strip()) >= {inp.min!r}")
        return " and ".join(parts)
    if inp.check is _check_number:
        parts = ["type(v) is int"]
        if inp.min is not None:
            parts.append(f"v >= {inp.min!r}")
        if inp.max is not None:
            parts.append(f"v <= {inp.max!r}")
        return " and ".join(parts)
    if inp.check is _check_datetime:
        return "type(v) is datetime and v.tzinfo is not None"
    return None


def _inputs_source(inputs: tuple[_Input, ...], staff: bool, i: int, ns: dict[str, Any]) -> list[str]:
    """The input check of row ``i`` of a run (see ``_compile_run``), as generated code: the staff
    reason rule, then each input in order, with its name, label, requirement and kind check bound as
    constants (named ``I{i}_...``). A failure returns the ``invalid_input`` rejection naming the field.

    For ``Input("metrics", "mapping")`` the code is ``v = get(I1_n0)``, then ``if type(v) not in
    I1_t0:`` (values of a type that needs no check pass at once) the absent case (``if v is None or
    v == ""``: refused as required) or ``m = I1_c0(I1_i0, v, settings)``, refusing with ``m`` when it
    is a message. Values that plainly pass (``_fast_accept``: a short enough str, an int within
    bounds, an aware datetime) skip the call; the reason rule calls ``_check_reason`` only when the
    reason plainly fails, for its message.
    """
    p = f"I{i}_"

    def refuse(field: str, message: str) -> str:
        return f"return reject(gov, inst, event, 'invalid_input', {message}, ROW{i}, field={field})"

    lines: list[str] = []
    if staff:
        lines += [
            "rl = RL[0]",
            "if rl[0] is not settings:",
            "    rl = reason_limits(settings)",
            "reason = facts.payload.get('reason')",
            "if type(reason) is not str or len(reason.strip()) < rl[1] or len(reason) > rl[2]:",
            "    bad = check_reason(facts.payload, settings)",
            "    if bad:",
            "        " + refuse("bad[0]", "bad[1]"),
        ]
    if inputs:
        lines.append("get = facts.payload.get")
    for index, inp in enumerate(inputs):
        n, t, c, r, k = (f"{p}{x}{index}" for x in "ntcri")
        ns[n], ns[t], ns[c], ns[r], ns[k] = (
            inp.name,
            inp.valid_types,
            inp.check,
            f"{inp.label} is required",
            inp,
        )
        accept = _fast_accept(inp, p + str(index), ns, "rl[2]" if staff else _LIMITS + "[2]")
        indent = "    " if inp.valid_types else ""
        lines.append(f"v = get({n})")
        if inp.valid_types:
            lines.append(f"if type(v) not in {t}:")
        # Most inputs are optional notes that are absent: decided here without a call.
        lines.append(f"{indent}if v is None or v == '':")
        if inp.required or (inp.staff_required and staff):
            lines.append(f"{indent}    " + refuse(n, r))
        else:
            lines.append(f"{indent}    pass")
        if accept is not None:
            lines += [f"{indent}elif {accept}:", f"{indent}    pass"]
        lines += [
            f"{indent}else:",
            f"{indent}    m = {c}({k}, v, settings)",
            f"{indent}    if m:",
            f"{indent}        " + refuse(n, "m"),
        ]
    return ["    " + line for line in lines]


# --------------------------------------------------------------------------- compiled definitions
#
# A definition is compiled once (per Governor object) into tables keyed by (state, event): the
# candidate rows per role, each with its guard callables, target, data changes, effects and cascades
# resolved ahead of time, so deciding is a few look-ups and calls with no per-event string work.
# On first use, each (state, event, role) gets a generated function (``_compile_run``, the way
# ``dataclasses`` generates ``__init__``) that checks the inputs, calls the guards of each candidate
# row in turn and builds the decision with everything constant for that row and state settled
# (``_build_source``); ``_build`` is the same decision worked out as it goes, for targets read per
# event. Settings are not compiled in: they are read per event from ``facts.settings`` (durations
# are parsed once per Settings object by ``Settings.duration``), so overrides apply immediately.


class _Timer:
    """A state's timer with its guard resolved and its payload precompiled."""

    __slots__ = (
        "after",
        "at",
        "before",
        "bound",
        "event",
        "name",
        "payload",
        "payload_fn",
        "plain",
        "simple",
        "when_fn",
    )

    def __init__(self, t: Timer) -> None:
        self.name = t.name
        self.event = t.event
        self.after = t.after
        self.at = t.at
        self.before = t.before
        self.when_fn = _guard_fn(t.when) if t.when is not None else None
        # A plain running timer changes only on state entry, when it fires, or when a row re-arms it.
        self.plain = t.when is None and t.at is None
        # (settings, duration of ``after`` or ``before``) for the settings object last used: one tuple,
        # replaced whole, so concurrent decisions with other settings never see a mixed pair.
        self.bound: tuple[Settings | None, timedelta] = (None, _ZERO)
        self.payload: Mapping[str, Any] = t.payload
        self.payload_fn: Resolver | None = None
        if t.payload:
            if _shareable(t.payload):
                self.payload = MappingProxyType(dict(t.payload))
            else:
                self.payload_fn = compile_value(t.payload)
        # Armed with nothing but its duration: due ``after`` from now, running, its payload shared.
        self.simple = bool(t.after) and self.when_fn is None and self.payload_fn is None


class _StateInfo:
    """What entering a state means: its timers and whether it needs attention."""

    __slots__ = ("attention", "attention_fn", "reads_after", "reason", "timers")

    def __init__(self, s: State) -> None:
        self.timers = tuple(_Timer(t) for t in s.timers)
        self.attention: bool | None = s.attention if isinstance(s.attention, bool) else None
        self.attention_fn = None if isinstance(s.attention, bool) else _guard_fn(s.attention)
        self.reason = s.attention_reason
        # Whether entering (or staying in) the state reads the context after the transition.
        self.reads_after = self.attention_fn is not None or any(
            t.at is not None or t.when_fn is not None or t.payload_fn is not None for t in self.timers
        )


class _Cascade:
    """An outgoing cascade of a row with its guard and payload precompiled."""

    __slots__ = (
        "create_event",
        "emit",
        "event",
        "fan_out",
        "id",
        "must",
        "payload",
        "payload_fn",
        "select",
        "target",
        "when_fn",
        "where",
    )

    def __init__(self, c: Cascade) -> None:
        self.id = c.id
        self.target = c.target
        self.event = c.event
        self.select = c.select
        self.where = c.where
        self.must = c.must
        self.create_event = c.create_event
        self.when_fn = _guard_fn(c.when) if c.when is not None else None
        self.fan_out = compile_value(c.fan_out) if c.fan_out is not None else None
        # Payloads of plain literals are shared by every emit (read-only views of one dict).
        self.payload: Mapping[str, Any] | None = (
            MappingProxyType(dict(c.payload)) if _shareable(c.payload) else None
        )
        self.payload_fn = compile_value(c.payload)
        # An emit that depends on nothing in the event is built once and shared (read-only).
        self.emit = (
            CascadeEmit(c.id, c.target, c.event, self.payload, c.select, c.where, c.must, c.create_event)
            if self.payload is not None and c.fan_out is None
            else None
        )


_Guard = tuple[str, GuardFn, str, str, Mapping[str, Any]]
"""(name, predicate, rejection code, message, rejection details when it is the only failure)."""


class _Row:
    """One transition row, compiled: everything about it that does not depend on the event."""

    __slots__ = (
        "cascades",
        "dst",
        "dst_choices",
        "dst_mode",
        "effect_fns",
        "effects",
        "four_eyes",
        "four_eyes_when",
        "guards",
        "id",
        "inputs",
        "reads_after",
        "rearm",
        "reenter",
        "request_needs",
        "requesters_only",
        "roles",
        "set_fn",
        "set_values",
        "static_changes",
        "t",
        "updaters",
    )

    def __init__(
        self,
        t: Transition,
        cascades: Iterable[Cascade],
        inputs: dict[tuple[Input, ...], tuple[_Input, ...]],
    ) -> None:
        self.t = t
        self.id = t.id
        self.roles = frozenset(t.by + t.requesters)
        self.requesters_only = frozenset(t.requesters) - frozenset(t.by)
        self.request_needs = FourEyes(approvers=tuple(r for r in t.by if r in _STAFF))
        self.four_eyes = t.four_eyes
        self.four_eyes_when = (
            _guard_fn(t.four_eyes.when) if t.four_eyes is not None and t.four_eyes.when is not None else None
        )
        # Rows with equal inputs share them (one object), so that their check runs once per event.
        try:
            shared = inputs.get(t.inputs)
        except TypeError:  # an input with unhashable parts: checked on its own
            shared = None
        if shared is None:
            shared = tuple(_Input(inp) for inp in t.inputs)
            with suppress(TypeError):
                inputs[t.inputs] = shared
        self.inputs = shared
        self.guards: tuple[_Guard, ...] = tuple(
            (
                name,
                _guard_fn(name),
                GUARDS[name].code if name in GUARDS else "guard_failed",
                GUARDS[name].message if name in GUARDS else "",
                MappingProxyType({"guard": name, "failed": (name,)}),
            )
            for name in t.guards
        )
        self.dst = t.dst
        self.dst_choices = t.dst_choices
        self.dst_mode = 1 if t.dst == SAME else 2 if t.dst.startswith("@") else 0
        dynamic_set = _has_refs(t.set)
        self.set_fn = _compile_mapping(t.set) if dynamic_set else None
        self.updaters = tuple(_updater_fn(name) for name in t.updates)
        # Rows that change data only by literals share one read-only view of the changes.
        self.set_values = dict(t.set)
        self.static_changes: Mapping[str, Any] | None = (
            MappingProxyType(self.set_values) if not dynamic_set and not t.updates else None
        )
        self.effects = t.effects
        self.effect_fns: tuple[tuple[Effect, Resolver | None], ...] | None = None
        if any(_has_refs(e.args) for e in t.effects):
            self.effect_fns = tuple(
                (e, compile_value(e.args) if _has_refs(e.args) else None) for e in t.effects
            )
        self.cascades = tuple(_Cascade(c) for c in cascades)
        self.reads_after = bool(self.cascades) or self.effect_fns is not None
        self.rearm = frozenset(t.rearm)
        self.reenter = t.reenter


def _updater_fn(name: str) -> UpdateFn:
    fn = UPDATERS.get(name)
    if fn is not None:
        return fn

    def unknown(ctx: Context) -> Mapping[str, Any]:
        raise KeyError(name)

    return unknown


Build = Callable[["_Compiled", Instance, Facts, Settings, Context], Outcome]
"""``(comp, instance, facts, settings, context) -> outcome`` of one candidate row that passed."""

Run = Callable[[Instance, str, Facts, Settings], Outcome]
"""``(instance, event, facts, settings) -> outcome`` over one role's candidate rows of a slot."""


class _Step:
    """A candidate row as it applies in one source state: its target and what entering that means.

    ``to`` is None when the target is read per event (``@field``, or SAME on a creation row); then
    ``entering``, ``info``, ``after`` and the held timers are worked out by ``_build`` as it goes.
    """

    __slots__ = (
        "after",
        "build",
        "entering",
        "event",
        "governor",
        "held",
        "held_fired",
        "info",
        "row",
        "state",
        "to",
    )

    def __init__(
        self,
        row: _Row,
        state: str | None,
        event: str,
        governor: str,
        entering: Mapping[str, _StateInfo],
    ) -> None:
        self.row = row
        self.state = state
        self.event = event
        self.governor = governor
        to = row.dst if row.dst_mode == 0 else state if row.dst_mode == 1 else None
        self.info = entering.get(to) if to is not None else None
        self.to = to if self.info is not None else None
        self.entering = state is None or to != state or row.reenter
        # Whether timers, cascades, effects or attention read the context after the transition.
        self.after = row.reads_after or (self.info is not None and self.info.reads_after)
        # Timers a self-transition must look at: a plain running timer changes only when the row
        # re-arms it or when it is the one that fired (``held_fired``, by its name). In state order.
        timers = self.info.timers if self.info is not None and not self.entering else ()
        self.held = tuple(t for t in timers if not t.plain or t.name in row.rearm)
        self.held_fired = {
            f.name: tuple(t for t in timers if t is f or not t.plain or t.name in row.rearm)
            for f in timers
            if f.plain and f.name not in row.rearm
        }
        # The decision of a row whose target is read per event is worked out by ``_build``; the
        # others are generated into the code that tries the rows (``_build_source``).
        self.build: Build | None = partial(_build, step=self) if self.to is None else None


class _Slot:
    """The candidate rows of one (state, event), by the role that sends the event."""

    __slots__ = ("by_role", "event", "first_id", "roles", "state", "timer_only")

    def __init__(
        self, rows: list[_Row], timer_only: bool, state: str | None, event: str, comp: _Compiled
    ) -> None:
        self.state = state
        self.event = event
        self.first_id = rows[0].id
        self.timer_only = timer_only
        self.roles = sorted({x for r in rows for x in r.t.by + r.t.requesters})
        steps = [_Step(r, state, event, comp.gov.name, comp.entering) for r in rows]
        self.by_role = {role: tuple(s for s in steps if role in s.row.roles) for role in self.roles}
        # How each role that may send the event has it decided (``comp.runs``), generated on first use.
        for role in self.roles:
            if not (timer_only and role in _STAFF):
                comp.runs[(state, event, role)] = partial(self._first_run, comp, role)

    def _first_run(
        self, comp: _Compiled, role: str, inst: Instance, event: str, facts: Facts, settings: Settings
    ) -> Outcome:
        run = _compile_run(comp, self.by_role[role], role)
        comp.runs[(self.state, self.event, role)] = run
        if comp.name is not None:
            _RUNS[(comp.name, self.state, self.event, role)] = run
        return run(inst, event, facts, settings)


@dataclass
class _Compiled:
    """Indexes over one definition so that a decision is a few dictionary look-ups."""

    gov: Governor
    creation: dict[str, list[Transition]] = field(default_factory=dict)
    rows: dict[tuple[str, str], list[Transition]] = field(default_factory=dict)
    timers: dict[str, tuple[Timer, ...]] = field(default_factory=dict)
    cascades: dict[str, list[Cascade]] = field(default_factory=dict)
    manual: dict[str, list[str]] = field(default_factory=dict)
    timer_only: set[tuple[str, str]] = field(default_factory=set)
    possible: dict[str, str] = field(default_factory=dict)
    roles: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    events: frozenset[str] = frozenset()
    terminal: frozenset[str] = frozenset()
    states: dict[str, Any] = field(default_factory=dict)
    # state -> event -> candidate rows, for non-terminal states; state None holds the creation rows.
    slots: dict[str | None, dict[str, _Slot]] = field(default_factory=dict)
    # (state, event, role) -> how the event is decided, for each role that may send it there.
    runs: dict[tuple[str | None, str, str], Run] = field(default_factory=dict)
    # The registry name the definition is looked up by, once it was (its runs are in ``_RUNS``).
    name: str | None = None
    entering: dict[str, _StateInfo] = field(default_factory=dict)


_COMPILED: dict[int, tuple[Governor, _Compiled]] = {}


def compile_governor(gov: Governor) -> _Compiled:
    """Build (once per definition object) the look-up tables the engine uses."""
    hit = _COMPILED.get(id(gov))
    if hit is not None and hit[0] is gov:
        return hit[1]
    comp = _Compiled(gov=gov, terminal=gov.terminal_states, events=frozenset(gov.events))
    comp.states = {s.name: s for s in gov.states}
    non_terminal = [s.name for s in gov.states if not s.terminal]
    for row in gov.transitions:
        sources: Iterable[str] = non_terminal if ANY in row.src else row.src
        for event in row.events:
            if not row.src:
                comp.creation.setdefault(event, []).append(row)
            for state in sources:
                comp.rows.setdefault((state, event), []).append(row)
                if row.manual:
                    listed = comp.manual.setdefault(state, [])
                    if event not in listed:
                        listed.append(event)
    for s in gov.states:
        comp.timers[s.name] = s.timers
        # A row like "resume, or pause_expired (timer)" lists a staff event and a timer event: the
        # event the state's own timer fires is not a staff action there.
        for t in s.timers:
            rows = comp.rows.get((s.name, t.event), [])
            if rows and all(len(r.events) > 1 for r in rows):
                comp.timer_only.add((s.name, t.event))
                if t.event in comp.manual.get(s.name, []):
                    comp.manual[s.name].remove(t.event)
    for c in gov.cascades:
        for row_id in c.on:
            comp.cascades.setdefault(row_id, []).append(c)
    # Texts of the common rejections, prepared once (they are a third of all events).
    for state in comp.states:
        comp.possible[state] = ", ".join(sorted({e for (s, e) in comp.rows if s == state}))
    for key, rows in comp.rows.items():
        comp.roles[key] = sorted({x for r in rows for x in r.by + r.requesters})
    inputs: dict[tuple[Input, ...], tuple[_Input, ...]] = {}
    compiled = {id(t): _Row(t, comp.cascades.get(t.id, ()), inputs) for t in gov.transitions}
    comp.entering = {s.name: _StateInfo(s) for s in gov.states}
    for event, rows in comp.creation.items():
        comp.slots.setdefault(None, {})[event] = _Slot(
            [compiled[id(r)] for r in rows], False, None, event, comp
        )
    for (state, event), rows in comp.rows.items():
        if state in comp.states and state not in comp.terminal:
            comp.slots.setdefault(state, {})[event] = _Slot(
                [compiled[id(r)] for r in rows], (state, event) in comp.timer_only, state, event, comp
            )
    _COMPILED[id(gov)] = (gov, comp)
    return comp


_REGISTRY: dict[str, Governor] = {}
_BY_NAME: dict[str, _Compiled] = {}
"""Compiled registry governors by name."""
_RUNS: dict[tuple[str, str | None, str, str], Run] = {}
"""(governor name, state, event, role) -> run, for registry governors: ``decide``'s one look-up."""


def _governor(governor: Governor | str) -> Governor:
    if type(governor) is Governor:
        return governor
    found = _REGISTRY.get(governor)  # type: ignore[arg-type]
    if found is None:
        from governors.registry import GOVERNORS, get_governor

        _REGISTRY.update(GOVERNORS)
        found = _REGISTRY.get(governor) or get_governor(str(governor))  # type: ignore[arg-type]
    return found


def _compiled(governor: Governor | str) -> _Compiled:
    if type(governor) is str:
        comp = _BY_NAME.get(governor)
        if comp is not None:
            return comp
    gov = _governor(governor)
    comp = compile_governor(gov)
    if type(governor) is str and _REGISTRY.get(governor) is gov:
        _BY_NAME[governor] = comp
        comp.name = governor
        _RUNS.update(((governor, *key), run) for key, run in comp.runs.items())
    return comp


def may_cascade(governor: Governor | str, state: str | None, event: str) -> bool:
    """Whether a row that ``event`` can take from ``state`` (None: a creation) sends cascades.

    For a caller that loads a plan's peers: an event none of whose rows cascade reaches no other
    instance (a catalog event needs the SKU's holders only when it can cascade to them).
    """
    comp = _compiled(governor)
    rows = comp.creation.get(event, []) if state is None else comp.rows.get((state, event), [])
    return any(row.id in comp.cascades for row in rows)


def prepare(governor: Governor | str) -> int:
    """Generate every decision function of a governor now instead of on first use; returns how many.

    For processes that fork workers (RQ forks a work horse per job): what the parent generated,
    each child inherits, instead of generating it again for the first decisions of every job.
    """
    comp = _compiled(governor)
    made = 0
    for state, slots in comp.slots.items():
        for event, slot in slots.items():
            for role in slot.roles:
                run = comp.runs.get((state, event, role))
                if isinstance(run, partial) and run.func == slot._first_run:
                    made += 1
                    generated = comp.runs[(state, event, role)] = _compile_run(comp, slot.by_role[role], role)
                    if comp.name is not None:
                        _RUNS[(comp.name, state, event, role)] = generated
    return made


def _instance(gov: Governor, instance: Instance | str | None) -> Instance:
    if isinstance(instance, Instance):
        return instance
    return Instance(governor=gov.name, id="?", state=instance)


# --------------------------------------------------------------------------- decide


def _reject(
    gov: Governor, inst: Instance, event: str, code: str, message: str, row: str | None = None, **details: Any
) -> Rejection:
    return Rejection(
        code, message, gov.name, event, inst.state, row, frozen_map(details) if details else _EMPTY
    )


def _roles_text(roles: Iterable[str]) -> str:
    staff = [r for r in roles if r in STAFF_ROLES]
    return " or ".join(staff) if staff else "the system"


def _no_rows(comp: _Compiled, inst: Instance, event: str) -> Rejection:
    """Why no row of the definition matches (state, event)."""
    gov = comp.gov
    if event not in comp.events:
        return _reject(gov, inst, event, "unknown_event", f"{gov.title} has no event '{event}'")
    if inst.state is None:
        starts = ", ".join(comp.creation) or "nothing"
        return _reject(
            gov,
            inst,
            event,
            "not_created",
            f"this {gov.title} instance does not exist yet; it starts with {starts}",
        )
    if inst.state not in comp.states:
        return _reject(gov, inst, event, "unknown_state", f"{gov.title} has no state '{inst.state}'")
    if inst.state in comp.terminal:
        return _reject(
            gov,
            inst,
            event,
            "terminal_state",
            f"{gov.title} is {inst.state}, a final state: nothing can change it",
        )
    possible = comp.possible.get(inst.state, "")
    return _reject(
        gov,
        inst,
        event,
        "invalid_transition",
        f"'{event}' is not possible while {gov.title} is {inst.state}"
        + (f"; possible now: {possible}" if possible else ""),
    )


def decide(governor: Governor | str, instance: Instance | str | None, event: str, facts: Facts) -> Outcome:
    """What firing ``event`` on ``instance`` would do: a Decision, or a Rejection with its reason.

    ``instance`` may be a bare state name for quick questions. Never mutates anything.
    """
    role = facts.role
    if type(governor) is str and type(instance) is Instance:
        # A registry governor by name, with rows for the role in the instance's state.
        run = _RUNS.get((governor, instance.state, event, role))
        if run is not None:
            if role == "timer" and facts.timer_seq is not None and facts.timer_seq != instance.state_seq:
                return _stale(_BY_NAME[governor], instance, event)
            settings = facts.settings
            if settings is None:
                settings = default_settings()
            return run(instance, event, facts, settings)
    return _decide(governor, instance, event, facts)


def _decide(governor: Governor | str, instance: Instance | str | None, event: str, facts: Facts) -> Outcome:
    """``decide`` for a definition object, a bare state name, or a miss of ``_RUNS``."""
    comp = _BY_NAME.get(governor) if type(governor) is str else None
    if comp is None:
        comp = _compiled(governor)
    inst = instance if type(instance) is Instance else _instance(comp.gov, instance)
    role = facts.role
    run = comp.runs.get((inst.state, event, role))
    if run is None:
        return _refused(comp, inst, event, facts)
    if role == "timer" and facts.timer_seq is not None and facts.timer_seq != inst.state_seq:
        return _stale(comp, inst, event)
    settings = facts.settings
    if settings is None:
        settings = default_settings()
    return run(inst, event, facts, settings)


def _stale(comp: _Compiled, inst: Instance, event: str) -> Rejection:
    """A timer of an earlier entry into the state fired: ignored."""
    return Rejection(
        "stale_timer",
        "the timer belongs to an earlier entry into this state and is ignored",
        comp.gov.name,
        event,
        inst.state,
        None,
        _EMPTY,
    )


def _refused(comp: _Compiled, inst: Instance, event: str, facts: Facts) -> Rejection:
    """Why ``decide`` has no candidate rows for the role: no row of the state takes the event, a
    stale timer, a staff role for a timer's event, or a role no row allows (checked in that order)."""
    state = inst.state
    slot = comp.slots.get(state, _NO_SLOTS).get(event)
    if slot is None:
        return _no_rows(comp, inst, event)
    role = facts.role
    if role == "timer" and facts.timer_seq is not None and facts.timer_seq != inst.state_seq:
        return _stale(comp, inst, event)
    if slot.timer_only and role in _STAFF:
        return Rejection(
            "role_not_allowed",
            f"'{event}' is fired by the {state} timer, not by staff",
            comp.gov.name,
            event,
            state,
            slot.first_id,
            _EMPTY,
        )
    return _reject(
        comp.gov,
        inst,
        event,
        "role_not_allowed",
        f"'{event}' needs {_roles_text(slot.roles)}; you have {role}",
        slot.first_id,
        allowed_roles=slot.roles,
    )


def _compile_run(comp: _Compiled, steps: tuple[_Step, ...], role: str) -> Run:
    """Decide an event over one role's candidate rows, generated once per (state, event, role).

    One context serves every row (views derived with ``ctx.cached`` are computed once). Row by row,
    in definition order: the row's input check, with the staff reason rule (skipped when an earlier
    row ran the same check: they share it when their inputs are equal), then its guards in order;
    the first row whose guards all pass decides (``_decision_source``). A guard fails by returning a
    false value (its registered message) or raising ``GuardFailed`` (its own message); a
    ``NeedsInput`` from a guard or from building the decision refuses the event as invalid input.
    When every row fails, the rejection is the first failure's, and names every failed guard when
    there are several. For a row with guards ``g0, g1`` the body is::

        ctx.row = T1
        try:
            while True:  # left at the first failing guard
                try:
                    if not G1_0(ctx):
                        j = 0
                        message = M1_0  # its registered message
                        break
                except GuardFailed as failure:
                    j = 0
                    message = failure.message
                    break
                ...  # g1 alike
                ...  # the row's decision, ending in "return decision" (``_decision_source``)
        except NeedsInput as missing:
            return needs_input(gov, inst, event, missing, ROW1)
        names = [spec[0], GS1[j][0]]  # the failure is noted (row 0's is the first: spec, first)
    """
    staff = role in _STAFF
    ns: dict[str, Any] = {
        **_BUILD_HELPERS,
        "Context": Context,
        "GuardFailed": GuardFailed,
        "NeedsInput": NeedsInput,
        "reject": _reject,
        "needs_input": _needs_input,
        "Rejection": Rejection,
        "frozen_map": frozen_map,
        "GOV": comp.gov,
        "COMP": comp,
        "check_reason": _check_reason,
        "reason_limits": _reason_limits,
        "RL": _REASON_LIMITS,
        "datetime": datetime,
    }
    out = [
        "def run(inst, event, facts, settings):",
        "    gov = GOV",
    ]
    checked: set[int] = set()
    for i, step in enumerate(steps):
        row = step.row
        ns[f"STEP{i}"], ns[f"T{i}"], ns[f"ROW{i}"], ns[f"GS{i}"] = step, row.t, row.id, row.guards
        if (staff or row.inputs) and id(row.inputs) not in checked:
            checked.add(id(row.inputs))
            out += _inputs_source(row.inputs, staff, i, ns)
        if i == 0:  # the context, made once the first row's inputs passed
            out += [
                "    ctx = new(Context)  # Context(gov, inst, event, facts, settings, inst.data), inline",
                "    ctx.governor = gov",
                "    ctx.instance = inst",
                "    ctx.event = event",
                "    ctx.facts = facts",
                "    ctx.settings = settings",
                "    ctx.data = inst.data",
                "    ctx.row = T0",
                "    ctx.target = None",
                "    ctx.now = facts.now",
                "    ctx.payload = facts.payload",
                "    ctx._memo = None",
            ]
        else:
            out.append(f"    ctx.row = T{i}")
        out.append("    try:")
        if row.guards:
            out.append("        while True:")
            for j, g in enumerate(row.guards):
                ns[f"G{i}_{j}"], ns[f"M{i}_{j}"] = g[1], g[3]
                out += [
                    "            try:",
                    f"                if not G{i}_{j}(ctx):",
                    f"                    j = {j}",
                    f"                    message = M{i}_{j}",
                    "                    break",
                    "            except GuardFailed as failure:",
                    f"                j = {j}",
                    "                message = failure.message",
                    "                break",
                ]
            out += _decision_source(step, i, ns, "        ")
        else:
            out += _decision_source(step, i, ns, "    ")
        out += [
            "    except NeedsInput as missing:",
            f"        return needs_input(gov, inst, event, missing, ROW{i})",
        ]
        if not row.guards:
            break  # a row without guards always decides: later rows are never reached
        # Every earlier row failed one guard (or returned): the first failure is row 0's.
        if i == 0:
            out += ["    spec = GS0[j]", "    first = message"]
        elif i == 1:
            out.append("    names = [spec[0], GS1[j][0]]")
        else:
            out.append(f"    names.append(GS{i}[j][0])")
    else:
        # Every row failed: the first failure's rejection, naming every failed guard past one row.
        details = "spec[4]" if len(steps) == 1 else 'frozen_map({"guard": spec[0], "failed": tuple(names)})'
        out += [
            "    rejection = new(Rejection)  # Rejection(code, message, ...) in field order, inline",
            "    rejection.code = spec[2]",
            "    rejection.message = first",
            "    rejection.governor = gov.name",
            "    rejection.event = event",
            "    rejection.state = inst.state",
            "    rejection.row_id = ROW0",
            f"    rejection.details = {details}",
            "    return rejection",
        ]
    # Named for tracebacks, with its source where they look for it (as ``dataclasses`` does not).
    step = steps[0]
    filename = f"<decide {step.governor} {step.state} {step.event} by {role}>"
    source = "\n".join(out) + "\n"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    exec(compile(source, filename, "exec"), ns)
    run: Run = ns["run"]
    return run


def _decision_source(step: _Step, i: int, ns: dict[str, Any], indent: str) -> list[str]:
    """The code deciding with row ``i`` of a run once its guards passed: ``_build_source`` with its
    constants renamed for the row (``TO`` becomes ``S1_TO``), or a call of ``_build`` when the
    target is read per event."""
    if step.build is not None:
        ns[f"STEP{i}"] = step
        return [f"{indent}    return STEP{i}.build(COMP, inst, facts, settings, ctx)"]
    lines, consts = _build_source(step)
    names = re.compile(r"\b(" + "|".join(sorted(consts, key=len, reverse=True)) + r")\b")
    ns.update((f"S{i}_{name}", value) for name, value in consts.items())
    return [indent + names.sub(lambda m: f"S{i}_{m.group(1)}", line) for line in lines]


def _needs_input(gov: Governor, inst: Instance, event: str, missing: NeedsInput, row_id: str) -> Rejection:
    """The rejection of an event whose guard (or updater) needed a payload value it was not given."""
    return _reject(
        gov,
        inst,
        event,
        "invalid_input",
        f"{missing.name.replace('_', ' ')} is required",
        row_id,
        field=missing.name,
    )


class _Overlay(Mapping[str, Any]):
    """Data after a transition without copying it: changes over the base (None deletes a key).

    Guards after a transition read a handful of keys; copying the data instead touches (and
    reference-counts) every value of it, which measured 5 % more instructions and more cache misses
    per decision on the engine benchmark's stream.
    """

    __slots__ = ("_base", "_changes")

    def __init__(self, changes: Mapping[str, Any], base: Mapping[str, Any]) -> None:
        self._changes = changes
        self._base = base

    def __getitem__(self, key: str) -> Any:
        if key in self._changes:
            value = self._changes[key]
            if value is None:
                raise KeyError(key)
            return value
        return self._base[key]

    def get(self, key: str, default: Any = None) -> Any:
        if key in self._changes:
            value = self._changes[key]
            return default if value is None else value
        return self._base.get(key, default)

    def __contains__(self, key: object) -> bool:
        if key in self._changes:
            return self._changes[key] is not None  # type: ignore[index]
        return key in self._base

    def __iter__(self) -> Iterator[str]:
        for key in self._base:
            if key not in self._changes or self._changes[key] is not None:
                yield key
        for key, value in self._changes.items():
            if key not in self._base and value is not None:
                yield key

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _build(
    comp: _Compiled,
    inst: Instance,
    facts: Facts,
    settings: Settings,
    ctx: Context,
    step: _Step,
) -> Outcome:
    """The decision of ``step`` worked out as it goes (``_build_source`` generates the others)."""
    event = step.event
    row = step.row
    state = inst.state
    to = step.to
    info = step.info
    entering = step.entering
    if to is None:
        # A target read per event: "@field" (or SAME on a creation row, which has no state to keep).
        mode = row.dst_mode
        if mode == 0:
            to = row.dst
        elif mode == 2:
            value = inst.data.get(row.dst[1:])
            to = value if isinstance(value, str) and value in row.dst_choices else None
        if to is None:
            gov = comp.gov
            return _reject(
                gov,
                inst,
                event,
                "invalid_data",
                f"{gov.title} has no valid '{row.dst[1:]}' to return to",
                row.id,
            )
        entering = state is None or to != state or row.reenter
    changes: Mapping[str, Any]
    made: dict[str, Any]
    if row.static_changes is not None:
        changes = row.static_changes
        made = row.set_values
    else:
        made = row.set_fn(ctx) if row.set_fn is not None else row.set_values.copy()
        for update in row.updaters:
            made.update(update(ctx))
        changes = MappingProxyType(made)
    if info is None:
        info = comp.entering[to]
    seq = inst.state_seq + 1 if entering else inst.state_seq
    needs: FourEyes | None = None
    if facts.approved_by is None:
        role = facts.role
        if role in row.requesters_only:
            needs = row.request_needs
        elif row.four_eyes is not None and role in _STAFF and _passes(row.four_eyes_when, ctx):
            needs = row.four_eyes

    # From here on guards see the data as the transition leaves it and ``target`` is the new state:
    # the same context moves on (one object per decision), with its cached views dropped. Rows whose
    # timers, cascades, effects and attention do not read it skip making that data.
    after = ctx
    if step.after or (step.to is None and info.reads_after):
        ctx.moved_on(_Overlay(made, inst.data) if made else inst.data, to)
    timer_ops: tuple[TimerOp, ...] = ()
    if entering:
        timer_ops = tuple(new_timer_op("cancel", ts) for ts in inst.timers.values())
        for t in info.timers:
            armed = _arm(t, seq, after, settings)
            if armed is not None:
                timer_ops += (new_timer_op("arm", armed),)
    elif info.timers:
        held = info.timers
        if step.to is not None:
            fired = facts.timer if facts.role == "timer" else None
            held = step.held if fired is None else step.held_fired.get(fired, step.held)
        if held:
            moved_on = made if after.data is not inst.data else _EMPTY
            timer_ops = _held_timer_ops(inst, row, held, seq, after, settings, moved_on)

    cascades: tuple[CascadeEmit, ...] = ()
    if row.cascades:
        emits: list[CascadeEmit] = []
        for c in row.cascades:
            if c.when_fn is not None and not _passes(c.when_fn, after):
                continue
            if c.emit is not None:
                emits.append(c.emit)
            else:
                _emit_cascade(c, after, emits)
        cascades = tuple(emits)

    attention = info.attention if info.attention is not None else _passes(info.attention_fn, after)
    effects = row.effects
    if row.effect_fns is not None:
        effects = tuple(
            e if fn is None else new_effect(e.name, MappingProxyType(fn(after))) for e, fn in row.effect_fns
        )
    return new_decision(
        comp.gov.name,
        inst.id,
        event,
        row.id,
        state,
        to,
        seq,
        not entering,
        facts.actor,
        facts.role,
        facts.now,
        facts.payload,
        changes,
        effects,
        timer_ops,
        cascades,
        needs,
        attention,
        info.reason if attention else "",
    )


_BUILD_HELPERS: dict[str, Any] = {}
"""Names the generated decision code uses besides its own constants (filled in below ``_arm``)."""


def _build_source(step: _Step) -> tuple[list[str], dict[str, Any]]:
    """The decision of one row in one state as generated code: the body of a function of
    ``(comp, inst, facts, settings, ctx)`` that returns the Decision, and the constants it names.

    It does what ``_build`` does for that row and state, with everything that does not depend on the
    event settled at generation: the target, whether the state is entered, literal changes, updaters
    called one by one, four-eyes only where the row has it, timers armed inline (or through ``_arm``),
    held timers through ``_held_timer_ops``, shared cascade emits and effects as constants, the
    attention and the Decision's constant fields. The constants have upper-case names (``ROW``,
    ``TO``, ``T0``...) and the code has no other string literals than its own, so that
    ``_compile_run`` can give each row's constants their own names.
    """
    row, info = step.row, step.info
    assert info is not None and step.to is not None
    ns: dict[str, Any] = {"ROW": row, "INFO": info}
    out: list[str] = []

    def put(*lines: str, indent: int = 1) -> None:
        out.extend("    " * indent + line for line in lines)

    # Changes.
    if row.static_changes is not None:
        ns["CHANGES"], ns["MADE"] = row.static_changes, row.set_values
        put("changes = CHANGES", "made = MADE")
    else:
        if row.set_fn is not None:
            ns["SET"] = row.set_fn
            put("made = SET(ctx)")
        else:
            ns["SETV"] = row.set_values
            put("made = SETV.copy()")
        for index, update in enumerate(row.updaters):
            ns[f"U{index}"] = update
            put(f"made.update(U{index}(ctx))")
        put("changes = MPT(made)")
    put("seq = inst.state_seq + 1" if step.entering else "seq = inst.state_seq")
    # Four-eyes, or a request by a role that may only request.
    put("needs = None")
    if row.requesters_only or row.four_eyes is not None:
        put("if facts.approved_by is None:", "    role = facts.role")
        ns["REQ_ONLY"], ns["REQ_NEEDS"] = row.requesters_only, row.request_needs
        put("    if role in REQ_ONLY:", "        needs = REQ_NEEDS")
        if row.four_eyes is not None:
            ns["FOUR"], ns["FOUR_WHEN"] = row.four_eyes, row.four_eyes_when
            put("    elif role in STAFF and passes(FOUR_WHEN, ctx):", "        needs = FOUR")
    # The context as the transition leaves it.
    ns["TO"] = step.to
    if step.after:
        if row.static_changes is None:
            put("if made:")
            put("overlay = new(Overlay)", "overlay._changes = made", "overlay._base = inst.data", indent=2)
            put("ctx.data = overlay", indent=2)
            put("else:", "    ctx.data = inst.data")
        elif row.set_values:
            put("overlay = new(Overlay)", "overlay._changes = made", "overlay._base = inst.data")
            put("ctx.data = overlay")
        else:
            put("ctx.data = inst.data")
        put("ctx.target = TO", "ctx._memo = None")
    # Timers.
    if step.entering:
        put("timers = inst.timers", "ops = []")
        put("if timers:", "    for ts in timers.values():")
        put("op = new(TimerOp)", 'op.op = "cancel"', "op.timer = ts", "ops.append(op)", indent=3)
        for index, t in enumerate(info.timers):
            ns[f"T{index}"] = t
            # _arm(t, seq, ctx, settings), inline unless the payload is resolved per event.
            if t.simple:
                put(f"bound = T{index}.bound", "if bound[0] is not settings:")
                put(f"bound = T{index}.bound = (settings, settings.duration(T{index}.after))", indent=2)
                put("armed = new(TimerState)", f"armed.name = T{index}.name", f"armed.event = T{index}.event")
                put("armed.state_seq = seq", "armed.due_at = facts.now + bound[1]", "armed.remaining = None")
                put(f"armed.payload = T{index}.payload")
                put("op = new(TimerOp)", 'op.op = "arm"', "op.timer = armed", "ops.append(op)")
            elif t.payload_fn is None and (t.after or (t.after is None and t.at is not None)):
                # Due ``after`` from now, or ``before`` the datetime in ``at``; paused when ``when`` fails.
                put(f"bound = T{index}.bound", "if bound[0] is not settings:")
                key = "after" if t.after else "before"
                put(
                    f"bound = T{index}.bound = (settings, "
                    f"settings.duration(T{index}.{key}) if T{index}.{key} else ZERO)",
                    indent=2,
                )
                indent = 1
                if t.after:
                    put("due = facts.now + bound[1]")
                else:
                    put(f"anchor = ctx.data.get(T{index}.at)", "if type(anchor) is not datetime:")
                    put("    anchor = as_datetime(anchor)", "if anchor is not None:")
                    put("due = anchor - bound[1]", indent=2)
                    indent = 2
                put("armed = new(TimerState)", f"armed.name = T{index}.name", indent=indent)
                put(f"armed.event = T{index}.event", "armed.state_seq = seq", indent=indent)
                put(f"armed.payload = T{index}.payload", indent=indent)
                if t.when_fn is None:
                    put("armed.due_at = due", "armed.remaining = None", indent=indent)
                else:
                    put("try:", f"    running = bool(T{index}.when_fn(ctx))", indent=indent)
                    put("except (GuardFailed, NeedsInput):", "    running = False", indent=indent)
                    put("if running:", "    armed.due_at = due", "    armed.remaining = None", indent=indent)
                    put("else:", "    armed.due_at = None", indent=indent)
                    put("    armed.remaining = max(ZERO, due - facts.now)", indent=indent)
                put("op = new(TimerOp)", 'op.op = "arm"', "op.timer = armed", "ops.append(op)", indent=indent)
            else:
                put(f"armed = arm(T{index}, seq, ctx, settings)", "if armed is not None:")
                put("op = new(TimerOp)", 'op.op = "arm"', "op.timer = armed", "ops.append(op)", indent=2)
        put("timer_ops = tuple(ops)")
    elif step.held or step.held_fired:
        ns["HELD"], ns["HELD_FIRED"] = step.held, step.held_fired
        put('fired = facts.timer if facts.role == "timer" else None')
        put("held = HELD if fired is None else HELD_FIRED.get(fired, HELD)")
        put("if held:")
        put("moved_on = made if ctx.data is not inst.data else EMPTY", indent=2)
        put("timer_ops = held_ops(inst, ROW, held, seq, ctx, settings, moved_on)", indent=2)
        put("else:", "    timer_ops = ()")
    else:
        put("timer_ops = ()")
    # Cascades.
    if not row.cascades:
        put("cascades = ()")
    elif all(c.emit is not None and c.when_fn is None for c in row.cascades):
        ns["EMITS"] = tuple(c.emit for c in row.cascades)
        put("cascades = EMITS")
    else:
        put("emits = []")
        for index, c in enumerate(row.cascades):
            ns[f"C{index}"] = c
            indent = 1
            if c.when_fn is not None:
                put(f"if passes(C{index}.when_fn, ctx):")
                indent = 2
            if c.emit is not None:
                put(f"emits.append(C{index}.emit)", indent=indent)
            elif c.fan_out is None:  # CascadeEmit(c.id, ..., MPT(c.payload_fn(ctx)), ...), inline
                put(
                    "e = new(CascadeEmit)",
                    f"e.id = C{index}.id",
                    f"e.target = C{index}.target",
                    indent=indent,
                )
                put(f"e.event = C{index}.event", f"e.payload = MPT(C{index}.payload_fn(ctx))", indent=indent)
                put(f"e.select = C{index}.select", f"e.where = C{index}.where", indent=indent)
                put(f"e.must = C{index}.must", f"e.create_event = C{index}.create_event", indent=indent)
                put("emits.append(e)", indent=indent)
            else:
                put(f"emit(C{index}, ctx, emits)", indent=indent)
        put("cascades = tuple(emits)")
    # Attention.
    if info.attention is not None:
        ns["ATTENTION"], ns["REASON"] = info.attention, info.reason if info.attention else ""
        put("attention = ATTENTION", "reason = REASON")
    else:
        ns["ATTENTION_FN"], ns["REASON"] = info.attention_fn, info.reason
        put("try:", "    attention = bool(ATTENTION_FN(ctx))", "except (GuardFailed, NeedsInput):")
        put("    attention = False", 'reason = REASON if attention else ""')
    # Effects.
    if row.effect_fns is None:
        ns["EFFECTS"] = row.effects
        put("effects = EFFECTS")
    else:
        parts = []
        for index, (effect, fn) in enumerate(row.effect_fns):
            ns[f"E{index}"] = effect
            if fn is None:
                parts.append(f"E{index}")
            else:
                ns[f"F{index}"] = fn
                # Effect(e.name, MPT(fn(ctx))), inline (a frozen dataclass: fields in __dict__)
                put(f"effect{index} = new(Effect)", f"fields = effect{index}.__dict__")
                put(f'fields["name"] = E{index}.name', f'fields["args"] = MPT(F{index}(ctx))')
                parts.append(f"effect{index}")
        put(f"effects = ({', '.join(parts)},)")
    # The decision, in field order.
    ns["GOVERNOR"], ns["EVENT"], ns["ROW_ID"], ns["STATE"] = step.governor, step.event, row.id, step.state
    put(
        "decision = new(Decision)",
        "decision.governor = GOVERNOR",
        "decision.instance_id = inst.id",
        "decision.event = EVENT",
        "decision.row_id = ROW_ID",
        "decision.from_state = STATE",
        "decision.to_state = TO",
        "decision.state_seq = seq",
        f"decision.self_transition = {not step.entering}",
        "decision.actor = facts.actor",
        "decision.role = facts.role",
        "decision.at = facts.now",
        "decision.payload = facts.payload",
        "decision.changes = changes",
        "decision.effects = effects",
        "decision.timer_ops = timer_ops",
        "decision.cascades = cascades",
        "decision.needs_approval = needs",
        "decision.attention = attention",
        "decision.attention_reason = reason",
        "return decision",
    )
    return out, ns


def _emit_cascade(c: _Cascade, after: Context, emits: list[CascadeEmit]) -> None:
    """Append the emits of a cascade whose payload (or fan-out) depends on the event (``_build`` and
    the generated decision code both use it)."""
    if c.fan_out is None:
        body = MappingProxyType(c.payload_fn(after))
        emits.append(new_emit(c.id, c.target, c.event, body, c.select, c.where, c.must, c.create_event))
        return
    payload = c.payload_fn(after)
    listed = c.fan_out(after)
    for item in list(listed) if isinstance(listed, list | tuple) else ():
        emits.append(
            new_emit(
                c.id,
                c.target,
                c.event,
                MappingProxyType(payload if item is None else {**payload, "item": item}),
                c.select,
                c.where,
                c.must,
                c.create_event,
            )
        )


def _arm(t: _Timer, seq: int, ctx: Context, settings: Settings) -> TimerState | None:
    """A fresh timer for the state entry ``seq``: running, or paused when its ``when`` fails."""
    now = ctx.facts.now
    bound = t.bound
    if bound[0] is not settings:
        key = t.after if t.after is not None else t.before
        bound = t.bound = (settings, settings.duration(key) if key else _ZERO)
    due: datetime | None
    if t.after is not None:
        due = now + bound[1]
    else:
        anchor = as_datetime(ctx.data.get(t.at or ""))
        if anchor is None:
            return None
        due = anchor - bound[1]
    payload = t.payload if t.payload_fn is None else MappingProxyType(t.payload_fn(ctx))
    if t.when_fn is None or _passes(t.when_fn, ctx):
        remaining = None
    else:
        remaining = max(_ZERO, due - now)
        due = None
    return new_timer_state(t.name, t.event, seq, due, remaining, payload)


def _held_timer_ops(
    inst: Instance,
    row: _Row,
    timers: tuple[_Timer, ...],
    seq: int,
    after: Context,
    settings: Settings,
    made: Mapping[str, Any],
) -> tuple[TimerOp, ...]:
    """Timer operations of a self-transition: re-arms, used-up fired timers, holds paused or resumed.

    ``timers`` are the state's timers this event may change (``_Step.held``), or all of them;
    ``made`` the changes ``after.data`` holds over the instance's data (None deletes a key).
    """
    ops: list[TimerOp] = []
    facts = after.facts
    fired = facts.timer if facts.role == "timer" else None
    rearm = row.rearm
    for t in timers:
        name = t.name
        if t.plain and name != fired and name not in rearm:
            continue  # nothing on this row can change a plain running timer
        existing = inst.timers.get(name)
        at = t.at
        # after.data.get(at) != inst.data.get(at): only a change the row makes can move the anchor.
        moved = at is not None and at in made and made[at] != inst.data.get(at)
        if name == fired and existing is not None and name not in rearm and not moved:
            # A timer that fired into a self-transition is used up (unless the row re-arms it).
            ops.append(new_timer_op("cancel", existing))
            continue
        if name in rearm or moved:
            armed = _arm(t, seq, after, settings)
            if armed is not None:
                ops.append(new_timer_op("arm", armed))
            elif existing is not None:
                ops.append(new_timer_op("cancel", existing))
            continue
        if existing is None:
            continue
        when = t.when_fn
        if when is None:
            running = True
        else:
            try:  # _passes(when, after), inline
                running = bool(when(after))
            except (GuardFailed, NeedsInput):
                running = False
        if running and existing.due_at is None:  # paused
            remaining = existing.remaining or _ZERO
            ops.append(
                new_timer_op(
                    "resume",
                    new_timer_state(
                        existing.name,
                        existing.event,
                        existing.state_seq,
                        facts.now + remaining,
                        None,
                        existing.payload,
                    ),
                )
            )
        elif not running and existing.due_at is not None:  # running
            left = max(_ZERO, existing.due_at - facts.now)
            ops.append(
                new_timer_op(
                    "pause",
                    new_timer_state(
                        existing.name, existing.event, existing.state_seq, None, left, existing.payload
                    ),
                )
            )
    return tuple(ops)


_BUILD_HELPERS.update(
    new=_new,
    CascadeEmit=CascadeEmit,
    ZERO=_ZERO,
    datetime=datetime,
    as_datetime=as_datetime,
    Decision=Decision,
    TimerOp=TimerOp,
    TimerState=TimerState,
    Overlay=_Overlay,
    MPT=MappingProxyType,
    EMPTY=_EMPTY,
    STAFF=_STAFF,
    GuardFailed=GuardFailed,
    NeedsInput=NeedsInput,
    arm=_arm,
    held_ops=_held_timer_ops,
    passes=_passes,
    emit=_emit_cascade,
    Effect=Effect,
)


# --------------------------------------------------------------------------- apply


def apply(instance: Instance, decision: Decision) -> Instance:
    """The instance after ``decision`` (new state, data, timers, state_seq and version)."""
    data = dict(instance.data)
    for key, value in decision.changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    timers = dict(instance.timers)
    for op in decision.timer_ops:
        if op.op == "cancel":
            timers.pop(op.timer.name, None)
        else:
            timers[op.timer.name] = op.timer
    return Instance(  # every field named (dataclasses.replace walks the fields on each call)
        instance.governor,
        instance.id,
        decision.to_state,
        decision.state_seq,
        instance.version + 1,
        instance.entered_at if decision.self_transition else decision.at,
        instance.customer_id,
        instance.subject_id,
        frozen_map(data),
        frozen_map(timers),
    )


def timer_facts(
    instance: Instance, timer: TimerState, now: datetime, settings: Settings | None = None
) -> Facts:
    """Facts for firing ``timer`` on ``instance`` as the system (GOVERNORS.md §0.3)."""
    return Facts(
        now=now,
        role="timer",
        actor="timer",
        payload=timer.payload,
        settings=settings,
        timer=timer.name,
        timer_seq=timer.state_seq,
    )


# --------------------------------------------------------------------------- what may a role do


def manual_actions(
    governor: Governor | str, instance: Instance | str, facts: Facts, role: str
) -> tuple[AllowedEvent, ...]:
    """Every staff action of the current state, each marked allowed or not for ``role`` with the reason."""
    gov = _governor(governor)
    comp = compile_governor(gov)
    inst = _instance(gov, instance)
    if inst.state is None or inst.state in comp.terminal:
        return ()
    # The reason is typed when the action is submitted; probe with a placeholder so that guards,
    # not the missing reason, decide whether the button is enabled.
    placeholder = "?" * int((facts.settings or default_settings())["engine.min_reason_length"])
    probe = replace(facts, role=role, payload=frozen_map({"reason": placeholder, **facts.payload}))
    out: list[AllowedEvent] = []
    for event in comp.manual.get(inst.state, ()):
        rows = [r for r in comp.rows[(inst.state, event)] if r.manual]
        mine = [r for r in rows if role in r.by or role in r.requesters]
        first = mine[0] if mine else rows[0]
        title = first.title_for(event) or event.replace("_", " ").capitalize()
        inputs = first.inputs
        if not mine:
            roles = sorted({x for r in rows for x in r.by + r.requesters if x in STAFF_ROLES})
            out.append(
                AllowedEvent(
                    event,
                    tuple(r.id for r in rows),
                    title,
                    "direct",
                    (),
                    inputs,
                    False,
                    f"needs {' or '.join(roles)}; you have {role}",
                )
            )
            continue
        if all(role in r.requesters and role not in r.by for r in mine):
            mode = "request"
            approvers = tuple(sorted({x for r in mine for x in r.by if x in STAFF_ROLES}))
        elif any(r.four_eyes for r in mine):
            mode = "four_eyes"
            approvers = next(r.four_eyes.approvers for r in mine if r.four_eyes)
        else:
            mode, approvers = "direct", ()
        outcome = decide(gov, inst, event, probe)
        allowed, reason = True, ""
        if isinstance(outcome, Rejection) and outcome.code not in ("invalid_input",):
            allowed, reason = False, outcome.message
        elif isinstance(outcome, Decision) and mode == "four_eyes" and outcome.needs_approval is None:
            mode, approvers = "direct", ()
        out.append(
            AllowedEvent(event, tuple(r.id for r in mine), title, mode, approvers, inputs, allowed, reason)
        )
    return tuple(out)


def allowed_events(
    governor: Governor | str, instance: Instance | str, facts: Facts, role: str
) -> tuple[AllowedEvent, ...]:
    """The staff actions ``role`` may trigger (or request) now: exactly what the console offers."""
    return tuple(a for a in manual_actions(governor, instance, facts, role) if a.allowed)


# --------------------------------------------------------------------------- plan (cascades)


@dataclass(frozen=True)
class _Pending:
    instance_id: str
    event: str
    facts: Facts
    depth: int
    cause: int | None
    cascade: str | None
    must: bool
    chain: tuple[tuple[str, str], ...]


def _peers(working: Mapping[str, Instance], skip: str) -> Mapping[str, tuple[Instance, ...]]:
    grouped: dict[str, list[Instance]] = {}
    for inst_id, inst in working.items():
        if inst_id != skip and inst.state is not None:
            grouped.setdefault(inst.governor, []).append(inst)
    return frozen_map({g: tuple(v) for g, v in grouped.items()})


Tracer = Callable[[str, Instance, str, Facts], None]
"""Receives every (governor, instance, event, facts) the planner asks the engine about."""


def plan(
    snapshot: Mapping[str, Instance],
    instance: Instance | str,
    event: str,
    facts: Facts,
    trace: Tracer | None = None,
    new_id: Callable[[str], str] | None = None,
) -> Plan:
    """Apply ``event`` and follow its cascades across governors to a fixed point, applying nothing.

    ``snapshot`` maps instance ids to the customer's instances (plus the global SKUs they need).
    ``instance`` is an id in the snapshot, or an Instance (a new one, with ``state=None``, for a
    creation event). Returns every step in order: decisions, ignored best-effort cascades, and
    must-apply failures, cycles or depth overruns as alerts. Deterministic for equal inputs.
    """
    settings = facts.settings or default_settings()
    working: dict[str, Instance] = dict(snapshot)
    if isinstance(instance, Instance):
        working.setdefault(instance.id, instance)
        root_id = instance.id
    else:
        root_id = instance
    max_depth = int(settings["engine.max_cascade_depth"])
    max_steps = int(settings["engine.max_plan_steps"])
    steps: list[PlanStep] = []
    alerts: list[str] = []
    queue: deque[_Pending] = deque([_Pending(root_id, event, facts, 0, None, None, False, ())])
    new_ids = 0
    while queue:
        item = queue.popleft()
        index = len(steps)
        target = working.get(item.instance_id)
        if target is None:
            steps.append(
                PlanStep(
                    index,
                    "?",
                    item.instance_id,
                    item.event,
                    None,
                    "rejected",
                    item.depth,
                    item.cause,
                    item.cascade,
                    item.facts.payload,
                )
            )
            alerts.append(f"unknown instance {item.instance_id}")
            break
        if len(steps) >= max_steps:
            alerts.append(f"plan stopped after {max_steps} steps")
            break
        if (item.instance_id, item.event) in item.chain:
            steps.append(
                PlanStep(
                    index,
                    target.governor,
                    item.instance_id,
                    item.event,
                    None,
                    "cycle",
                    item.depth,
                    item.cause,
                    item.cascade,
                    item.facts.payload,
                )
            )
            alerts.append(f"cascade cycle: {item.event} on {item.instance_id} via {item.cascade}")
            continue
        if item.depth > max_depth:
            steps.append(
                PlanStep(
                    index,
                    target.governor,
                    item.instance_id,
                    item.event,
                    None,
                    "depth_exceeded",
                    item.depth,
                    item.cause,
                    item.cascade,
                    item.facts.payload,
                )
            )
            alerts.append(f"cascade depth over {max_depth} at {item.event} on {item.instance_id}")
            continue
        f = item.facts
        step_facts = Facts(  # every field named, as in apply
            f.now,
            f.role,
            f.actor,
            f.payload,
            _peers(working, item.instance_id),
            f.extra,
            f.settings,
            f.approved_by,
            f.timer,
            f.timer_seq,
        )
        if trace is not None:
            trace(target.governor, target, item.event, step_facts)
        outcome = decide(target.governor, target, item.event, step_facts)
        if isinstance(outcome, Rejection):
            if item.cause is None:
                status = "rejected"
            elif item.must:
                status = "failed"
                alerts.append(
                    f"must-apply cascade {item.cascade} rejected on {item.instance_id}: {outcome.message}"
                )
            else:
                status = "ignored"
            steps.append(
                PlanStep(
                    index,
                    target.governor,
                    item.instance_id,
                    item.event,
                    outcome,
                    status,
                    item.depth,
                    item.cause,
                    item.cascade,
                    item.facts.payload,
                )
            )
            if item.cause is None:
                break
            continue
        steps.append(
            PlanStep(
                index,
                target.governor,
                item.instance_id,
                item.event,
                outcome,
                "applied",
                item.depth,
                item.cause,
                item.cascade,
                item.facts.payload,
            )
        )
        after = apply(target, outcome)
        working[item.instance_id] = after
        chain = (*item.chain, (item.instance_id, item.event))
        source_extra = {
            **item.facts.extra,
            "source_governor": after.governor,
            "source_instance_id": after.id,
            "source_subject_id": after.subject_id,
            "source_data": after.data,
            "source_state": after.state,
            "source_event": item.event,
        }
        for emit in outcome.cascades:
            cascade_facts = Facts(
                now=facts.now,
                role="cascade",
                actor=f"cascade:{emit.id}",
                payload=emit.payload,
                extra=frozen_map(source_extra),
                settings=facts.settings,
            )
            targets: list[tuple[str, str]] = []
            if emit.select == "self":
                targets.append((after.id, emit.event))
            elif emit.select in ("new", "upsert"):
                existing = [i for i in working.values() if i.governor == emit.target and i.state is not None]
                if emit.select == "upsert" and existing:
                    targets.extend((i.id, emit.event) for i in existing)
                else:
                    new_ids += 1
                    # The caller may name new instances (the service gives them their final ids, so data
                    # that refers to them, like an entitlement's subscription_id, is right as planned).
                    made = new_id(emit.target) if new_id is not None else f"new:{emit.target}:{new_ids}"
                    working[made] = Instance(governor=emit.target, id=made, customer_id=after.customer_id)
                    targets.append(
                        (
                            made,
                            emit.create_event
                            if emit.select == "upsert" and emit.create_event
                            else emit.event,
                        )
                    )
            else:
                for cand in sorted(working.values(), key=lambda i: i.id):
                    if cand.governor != emit.target or cand.state is None:
                        continue
                    if emit.where is not None:
                        tgov = _governor(cand.governor)
                        wctx = Context(tgov, cand, emit.event, cascade_facts, settings, cand.data)
                        if not _holds(emit.where, wctx):
                            continue
                    targets.append((cand.id, emit.event))
            for target_id, target_event in targets:
                queue.append(
                    _Pending(
                        target_id,
                        target_event,
                        cascade_facts,
                        item.depth + 1,
                        index,
                        emit.id,
                        emit.must,
                        chain,
                    )
                )
    return Plan(tuple(steps), tuple(alerts), frozen_map(working))
