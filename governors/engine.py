"""The one transition engine for all eight governors: pure, deterministic, no I/O and no clock.

``decide`` answers "what would firing this event do?", ``plan`` follows the cascades across
governors to a fixed point, ``allowed_events``/``manual_actions`` tell the console what a role may
do now, and ``apply`` computes the instance after a decision. Behaviour specific to a governor
lives only in its definition (data) and in the named guards and updaters of ``governors.rules``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any

from governors.facts import Context, Facts, GuardFailed, Instance, NeedsInput, TimerState, as_datetime
from governors.outcomes import (
    AllowedEvent,
    CascadeEmit,
    Decision,
    Outcome,
    Plan,
    PlanStep,
    Rejection,
    TimerOp,
)
from governors.rules.base import GUARDS, UPDATERS
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
    Timer,
    Transition,
    frozen_map,
)

_ZERO = timedelta(0)


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
    _COMPILED[id(gov)] = (gov, comp)
    return comp


_REGISTRY: dict[str, Governor] = {}


def _governor(governor: Governor | str) -> Governor:
    if type(governor) is Governor:
        return governor
    found = _REGISTRY.get(governor)  # type: ignore[arg-type]
    if found is None:
        from governors.registry import GOVERNORS, get_governor

        _REGISTRY.update(GOVERNORS)
        found = _REGISTRY.get(governor) or get_governor(str(governor))  # type: ignore[arg-type]
    return found


def _instance(gov: Governor, instance: Instance | str | None) -> Instance:
    if isinstance(instance, Instance):
        return instance
    return Instance(governor=gov.name, id="?", state=instance)


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
        parts = [(k, compile_value(v)) for k, v in value.items()]
        return lambda ctx: {k: f(ctx) for k, f in parts}
    if isinstance(value, list | tuple):
        items = [compile_value(v) for v in value]
        return lambda ctx: [f(ctx) for f in items]
    return lambda ctx: value


_COMPILED_VALUES: dict[int, tuple[Any, Resolver]] = {}


def resolve(value: Any, ctx: Context) -> Any:
    """Resolve ``$`` references (see ``governors.spec``) inside a literal, list or mapping."""
    hit = _COMPILED_VALUES.get(id(value))
    if hit is None or hit[0] is not value:
        hit = (value, compile_value(value))
        _COMPILED_VALUES[id(value)] = hit
    return hit[1](ctx)


REFERENCE_HEADS = ("now", "payload", "data", "instance", "event", "state", "setting")


# --------------------------------------------------------------------------- guards and inputs


def _failing_guard(names: Iterable[str], ctx: Context) -> tuple[str, str, str] | None:
    """(guard name, code, message) of the first guard that fails, or None when all pass."""
    for name in names:
        spec = GUARDS[name]
        try:
            if spec.fn(ctx):
                continue
            return name, spec.code, spec.message
        except GuardFailed as failed:
            return name, spec.code, failed.message
    return None


def _holds(name: str | None, ctx: Context) -> bool:
    """True when no guard is named or the named guard passes (a NeedsInput counts as failing)."""
    if name is None:
        return True
    try:
        return bool(GUARDS[name].fn(ctx))
    except (GuardFailed, NeedsInput):
        return False


def _input_error(inp: Input, value: Any, settings: Settings, staff: bool) -> str | None:
    label = inp.label or inp.name.replace("_", " ")
    if value is None or value == "":
        required = inp.required is True or (inp.required == STAFF and staff)
        return f"{label} is required" if required else None
    kind = inp.kind
    if kind in ("cents", "int"):
        if not isinstance(value, int) or isinstance(value, bool):
            return f"{label} must be a whole number" + (" of cents" if kind == "cents" else "")
        if inp.min is not None and value < inp.min:
            return f"{label} must be at least {inp.min}"
        if inp.max is not None and value > inp.max:
            return f"{label} must be at most {inp.max}"
    elif kind in ("text", "code"):
        if not isinstance(value, str):
            return f"{label} must be text"
        if inp.choices and value not in inp.choices:
            return f"{label} must be one of: {', '.join(inp.choices)}"
        limit = inp.max if inp.max is not None else int(settings["engine.max_text_length"])
        if len(value) > limit:
            return f"{label} must be at most {limit} characters"
        if inp.min is not None and len(value.strip()) < inp.min:
            return f"{label} must be at least {inp.min} characters"
    elif kind == "bool":
        if not isinstance(value, bool):
            return f"{label} must be true or false"
    elif kind == "datetime":
        moment = as_datetime(value)
        if moment is None or moment.tzinfo is None:
            return f"{label} must be a date and time with a time zone (ISO 8601)"
    elif kind == "list":
        if not isinstance(value, list | tuple):
            return f"{label} must be a list"
        if inp.choices and any(v not in inp.choices for v in value):
            return f"{label} may only contain: {', '.join(inp.choices)}"
    elif kind == "mapping" and not isinstance(value, Mapping):
        return f"{label} must be an object"
    return None


def _check_inputs(row: Transition, facts: Facts, settings: Settings) -> tuple[str, str] | None:
    """(field, message) for the first invalid input, including the staff reason rule (§0.2)."""
    if not row.inputs and facts.role not in STAFF_ROLES:
        return None
    if facts.role in STAFF_ROLES:
        reason = facts.payload.get("reason")
        minimum = int(settings["engine.min_reason_length"])
        if not isinstance(reason, str) or len(reason.strip()) < minimum:
            return "reason", f"give a reason of at least {minimum} characters"
        if len(reason) > int(settings["engine.max_text_length"]):
            return "reason", f"the reason must be at most {settings['engine.max_text_length']} characters"
    staff = facts.role in STAFF_ROLES
    for inp in row.inputs:
        message = _input_error(inp, facts.payload.get(inp.name), settings, staff)
        if message:
            return inp.name, message
    return None


# --------------------------------------------------------------------------- decide


def _reject(
    gov: Governor, inst: Instance, event: str, code: str, message: str, row: str | None = None, **details: Any
) -> Rejection:
    return Rejection(code, message, gov.name, event, inst.state, row, frozen_map(details))


def _roles_text(roles: Iterable[str]) -> str:
    staff = [r for r in roles if r in STAFF_ROLES]
    return " or ".join(staff) if staff else "the system"


def _candidate_rows(comp: _Compiled, inst: Instance, event: str) -> list[Transition] | Rejection:
    gov = comp.gov
    if event not in comp.events:
        return _reject(gov, inst, event, "unknown_event", f"{gov.title} has no event '{event}'")
    if inst.state is None:
        rows = comp.creation.get(event)
        if not rows:
            starts = ", ".join(comp.creation) or "nothing"
            return _reject(
                gov,
                inst,
                event,
                "not_created",
                f"this {gov.title} instance does not exist yet; it starts with {starts}",
            )
        return rows
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
    rows = comp.rows.get((inst.state, event))
    if not rows:
        possible = comp.possible.get(inst.state, "")
        return _reject(
            gov,
            inst,
            event,
            "invalid_transition",
            f"'{event}' is not possible while {gov.title} is {inst.state}"
            + (f"; possible now: {possible}" if possible else ""),
        )
    return rows


def decide(governor: Governor | str, instance: Instance | str | None, event: str, facts: Facts) -> Outcome:
    """What firing ``event`` on ``instance`` would do: a Decision, or a Rejection with its reason.

    ``instance`` may be a bare state name for quick questions. Never mutates anything.
    """
    gov = _governor(governor)
    comp = compile_governor(gov)
    inst = _instance(gov, instance)
    settings = facts.settings or default_settings()
    rows = _candidate_rows(comp, inst, event)
    if isinstance(rows, Rejection):
        return rows
    if facts.role == "timer" and facts.timer_seq is not None and facts.timer_seq != inst.state_seq:
        return _reject(
            gov,
            inst,
            event,
            "stale_timer",
            "the timer belongs to an earlier entry into this state and is ignored",
        )
    if facts.role in STAFF_ROLES and (inst.state, event) in comp.timer_only:
        return _reject(
            gov,
            inst,
            event,
            "role_not_allowed",
            f"'{event}' is fired by the {inst.state} timer, not by staff",
            rows[0].id,
        )
    permitted = [r for r in rows if facts.role in r.by or facts.role in r.requesters]
    if not permitted:
        roles = comp.roles.get((inst.state or "", event)) or sorted(
            {x for r in rows for x in r.by + r.requesters}
        )
        return _reject(
            gov,
            inst,
            event,
            "role_not_allowed",
            f"'{event}' needs {_roles_text(roles)}; you have {facts.role}",
            rows[0].id,
            allowed_roles=roles,
        )
    failures: list[tuple[str, str, str, str]] = []
    # One context for all candidate rows, so views derived with ctx.cached are computed once.
    ctx = Context(gov, inst, event, facts, settings, inst.data)
    for row in permitted:
        bad_input = _check_inputs(row, facts, settings)
        if bad_input:
            return _reject(gov, inst, event, "invalid_input", bad_input[1], row.id, field=bad_input[0])
        ctx.row = row
        try:
            failed = _failing_guard(row.guards, ctx)
            if failed is None:
                return _build(comp, inst, row, event, facts, settings, ctx)
        except NeedsInput as missing:
            return _reject(
                gov,
                inst,
                event,
                "invalid_input",
                f"{missing.name.replace('_', ' ')} is required",
                row.id,
                field=missing.name,
            )
        failures.append((row.id, *failed))
    row_id, guard_name, code, message = failures[0]
    return _reject(
        gov, inst, event, code, message, row_id, guard=guard_name, failed=tuple(f[1] for f in failures)
    )


class _Overlay(Mapping[str, Any]):
    """Data after a transition without copying it: changes over the base (None deletes a key)."""

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


@dataclass(frozen=True)
class _RowPlan:
    """What can be known about a row before any event: whether its data needs resolving."""

    dynamic_set: bool
    dynamic_effects: bool


_ROW_PLANS: dict[int, tuple[Transition, _RowPlan]] = {}


def _has_refs(value: Any) -> bool:
    if isinstance(value, str):
        return value.startswith("$")
    if isinstance(value, Mapping):
        return any(_has_refs(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_has_refs(v) for v in value)
    return False


def _row_plan(row: Transition) -> _RowPlan:
    hit = _ROW_PLANS.get(id(row))
    if hit is not None and hit[0] is row:
        return hit[1]
    compiled = _RowPlan(_has_refs(row.set), any(_has_refs(e.args) for e in row.effects))
    _ROW_PLANS[id(row)] = (row, compiled)
    return compiled


def _target_state(row: Transition, inst: Instance) -> str | None:
    if row.dst == SAME:
        return inst.state
    if row.dst.startswith("@"):
        value = inst.data.get(row.dst[1:])
        return value if isinstance(value, str) and value in row.dst_choices else None
    return row.dst


def _build(
    comp: _Compiled,
    inst: Instance,
    row: Transition,
    event: str,
    facts: Facts,
    settings: Settings,
    ctx: Context,
) -> Outcome:
    gov = comp.gov
    to = _target_state(row, inst)
    if to is None:
        return _reject(
            gov, inst, event, "invalid_data", f"{gov.title} has no valid '{row.dst[1:]}' to return to", row.id
        )
    entering = inst.state is None or to != inst.state or row.reenter
    compiled = _row_plan(row)
    changes: dict[str, Any] = (
        {k: resolve(v, ctx) for k, v in row.set.items()} if compiled.dynamic_set else dict(row.set)
    )
    for name in row.updates:
        changes.update(UPDATERS[name](ctx))
    new_data: Mapping[str, Any] = _Overlay(changes, inst.data) if changes else inst.data
    seq = inst.state_seq + 1 if entering else inst.state_seq
    # ``after`` shows guards the data as the transition leaves it; ``target`` is the new state.
    after = Context(gov, inst, event, facts, settings, new_data, row, to)
    timer_ops = _timer_ops(comp, inst, row, to, entering, seq, after)

    needs: FourEyes | None = None
    if facts.approved_by is None:
        if facts.role in row.requesters and facts.role not in row.by:
            needs = FourEyes(approvers=tuple(r for r in row.by if r in STAFF_ROLES))
        elif row.four_eyes is not None and facts.role in STAFF_ROLES and _holds(row.four_eyes.when, ctx):
            needs = row.four_eyes

    cascades: list[CascadeEmit] = []
    for c in comp.cascades.get(row.id, ()):
        if not _holds(c.when, after):
            continue
        payload = resolve(c.payload, after)
        items: list[Any] = [None]
        if c.fan_out is not None:
            listed = resolve(c.fan_out, after)
            items = list(listed) if isinstance(listed, list | tuple) else []
        for item in items:
            body = payload if item is None else {**payload, "item": item}
            cascades.append(
                CascadeEmit(
                    c.id, c.target, c.event, MappingProxyType(body), c.select, c.where, c.must, c.create_event
                )
            )

    state = comp.states[to]
    attention = state.attention if isinstance(state.attention, bool) else _holds(state.attention, after)
    return Decision(
        governor=gov.name,
        instance_id=inst.id,
        event=event,
        row_id=row.id,
        from_state=inst.state,
        to_state=to,
        state_seq=seq,
        self_transition=not entering,
        actor=facts.actor,
        role=facts.role,
        at=facts.now,
        payload=facts.payload,
        changes=MappingProxyType(changes),
        effects=(
            tuple(Effect(e.name, MappingProxyType(resolve(e.args, after))) for e in row.effects)
            if compiled.dynamic_effects
            else row.effects
        ),
        timer_ops=tuple(timer_ops),
        cascades=tuple(cascades),
        needs_approval=needs,
        attention=attention,
        attention_reason=state.attention_reason if attention else "",
    )


def _arm(t: Timer, seq: int, ctx: Context) -> TimerState | None:
    """A fresh timer for the state entry ``seq``: running, or paused when its ``when`` fails."""
    if t.after is not None:
        due = ctx.now + ctx.settings.duration(t.after)
    else:
        anchor = as_datetime(ctx.data.get(t.at or ""))
        if anchor is None:
            return None
        due = anchor - ctx.settings.duration(t.before) if t.before else anchor
    payload = frozen_map(resolve(t.payload, ctx)) if t.payload else t.payload
    if t.when is None or _holds(t.when, ctx):
        return TimerState(t.name, t.event, seq, due, None, payload)
    return TimerState(t.name, t.event, seq, None, max(_ZERO, due - ctx.now), payload)


def _timer_ops(
    comp: _Compiled, inst: Instance, row: Transition, to: str, entering: bool, seq: int, after: Context
) -> list[TimerOp]:
    ops: list[TimerOp] = []
    if entering:
        ops = [TimerOp("cancel", ts) for ts in inst.timers.values()]
        for t in comp.timers[to]:
            armed = _arm(t, seq, after)
            if armed is not None:
                ops.append(TimerOp("arm", armed))
        return ops
    fired = after.facts.timer if after.facts.role == "timer" else None
    for t in comp.timers[to]:
        if t.when is None and t.at is None and t.name != fired and t.name not in row.rearm:
            continue  # nothing on this row can change a plain running timer
        existing = inst.timers.get(t.name)
        moved = t.at is not None and after.data.get(t.at) != inst.data.get(t.at)
        if t.name == fired and existing is not None and t.name not in row.rearm and not moved:
            # A timer that fired into a self-transition is used up (unless the row re-arms it).
            ops.append(TimerOp("cancel", existing))
            continue
        if t.name in row.rearm or moved:
            armed = _arm(t, seq, after)
            if armed is not None:
                ops.append(TimerOp("arm", armed))
            elif existing is not None:
                ops.append(TimerOp("cancel", existing))
            continue
        if existing is None:
            continue
        running = _holds(t.when, after)
        if running and existing.paused:
            remaining = existing.remaining or _ZERO
            ops.append(TimerOp("resume", replace(existing, due_at=after.now + remaining, remaining=None)))
        elif not running and not existing.paused and existing.due_at is not None:
            left = max(_ZERO, existing.due_at - after.now)
            ops.append(TimerOp("pause", replace(existing, due_at=None, remaining=left)))
    return ops


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
    return replace(
        instance,
        state=decision.to_state,
        state_seq=decision.state_seq,
        version=instance.version + 1,
        entered_at=instance.entered_at if decision.self_transition else decision.at,
        data=frozen_map(data),
        timers=frozen_map(timers),
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
        title = first.title or event.replace("_", " ").capitalize()
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
        step_facts = replace(item.facts, peers=_peers(working, item.instance_id))
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
