"""Name → Governor, with every definition validated once, at import.

A bad definition fails loudly here, naming the governor and the row, instead of surfacing as an odd
rejection in production (python-statemachine validates at definition time for the same reason).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

import governors.rules  # noqa: F401  (registers every guard, updater and effect)
from governors.definitions import ALL
from governors.engine import REFERENCE_HEADS
from governors.rules.base import EFFECTS, GUARDS, UPDATERS
from governors.settings import Settings, default_settings
from governors.spec import ANY, INPUT_KINDS, PSEUDO_ROLES, SAME, STAFF, STAFF_ROLES, Governor, Transition


class InvalidGovernor(ValueError):
    """A governor definition breaks a structural rule; the message names governor and row."""


def _refs(value: object) -> Iterable[str]:
    if isinstance(value, str) and value.startswith("$"):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _refs(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _refs(v)


def _check_refs(where: str, value: object, settings: Settings) -> None:
    for ref in _refs(value):
        head, _, rest = ref[1:].partition(".")
        if head not in REFERENCE_HEADS:
            raise InvalidGovernor(f"{where}: unknown reference {ref!r}")
        if head == "setting" and rest not in settings:
            raise InvalidGovernor(f"{where}: reference to unknown setting {rest!r}")


def _sources(gov: Governor, row: Transition) -> tuple[str, ...]:
    if ANY in row.src:
        return tuple(s.name for s in gov.states if not s.terminal)
    return row.src


def _targets(row: Transition, source: str) -> tuple[str, ...]:
    if row.dst == SAME:
        return (source,)
    if row.dst.startswith("@"):
        return row.dst_choices
    return (row.dst,)


def validate(gov: Governor, settings: Settings | None = None) -> None:
    """Raise InvalidGovernor if the definition is inconsistent (see module docstring for the rules)."""
    settings = settings or default_settings()
    where = gov.name
    names = [s.name for s in gov.states]
    if len(set(names)) != len(names):
        raise InvalidGovernor(f"{where}: duplicate state names")
    states = set(names)
    terminal = gov.terminal_states
    events = set(gov.events)
    row_ids = [t.id for t in gov.transitions]
    dupes = {i for i in row_ids if row_ids.count(i) > 1}
    if dupes:
        raise InvalidGovernor(f"{where}: duplicate row ids {sorted(dupes)}")
    if not any(not t.src for t in gov.transitions):
        raise InvalidGovernor(f"{where}: no creation row (a row with src=())")

    for row in gov.transitions:
        at = f"{where} row {row.id}"
        if not row.events:
            raise InvalidGovernor(f"{at}: no event")
        for s in row.src:
            if s != ANY and s not in states:
                raise InvalidGovernor(f"{at}: unknown source state {s!r}")
            if s in terminal:
                raise InvalidGovernor(f"{at}: exit from terminal state {s!r}")
        if row.dst == SAME:
            if not row.src:
                raise InvalidGovernor(f"{at}: a creation row cannot stay in the same state")
        elif row.dst.startswith("@"):
            if not row.dst_choices or any(c not in states for c in row.dst_choices):
                raise InvalidGovernor(f"{at}: {row.dst} needs dst_choices naming existing states")
        elif row.dst not in states:
            raise InvalidGovernor(f"{at}: unknown target state {row.dst!r}")
        if not row.by:
            raise InvalidGovernor(f"{at}: nobody may trigger it (empty 'by')")
        if stray := sorted(set(row.event_titles) - set(row.events)):
            raise InvalidGovernor(f"{at}: event_titles name events the row does not serve: {stray}")
        for role in row.by:
            if role not in STAFF_ROLES and role not in PSEUDO_ROLES:
                raise InvalidGovernor(f"{at}: unknown role {role!r}")
        for role in row.requesters:
            if role not in STAFF_ROLES:
                raise InvalidGovernor(f"{at}: requester {role!r} is not a staff role")
        if row.requesters and not any(r in STAFF_ROLES for r in row.by):
            raise InvalidGovernor(f"{at}: requesters need a staff role in 'by' to approve them")
        if row.four_eyes is not None:
            for role in row.four_eyes.approvers:
                if role not in STAFF_ROLES:
                    raise InvalidGovernor(f"{at}: four-eyes approver {role!r} is not a staff role")
            if row.four_eyes.when is not None and row.four_eyes.when not in GUARDS:
                raise InvalidGovernor(f"{at}: unknown four-eyes guard {row.four_eyes.when!r}")
        for g in row.guards:
            if g not in GUARDS:
                raise InvalidGovernor(f"{at}: unknown guard {g!r}")
        for u in row.updates:
            if u not in UPDATERS:
                raise InvalidGovernor(f"{at}: unknown updater {u!r}")
        for effect in row.effects:
            if effect.name not in EFFECTS:
                raise InvalidGovernor(f"{at}: unknown effect {effect.name!r}")
            _check_refs(at, effect.args, settings)
        _check_refs(at, row.set, settings)
        for inp in row.inputs:
            if inp.kind not in INPUT_KINDS:
                raise InvalidGovernor(f"{at}: input {inp.name!r} has unknown kind {inp.kind!r}")
            if inp.required not in (True, False, STAFF):
                raise InvalidGovernor(f"{at}: input {inp.name!r} has required={inp.required!r}")
        for name in row.rearm:
            if not any(t.name == name for s in gov.states for t in s.timers):
                raise InvalidGovernor(f"{at}: re-arms unknown timer {name!r}")

    # Rows sharing a (state, event) pair must be told apart by guards.
    seen: dict[tuple[str, str], list[Transition]] = {}
    for row in gov.transitions:
        for src in _sources(gov, row) or ("(new)",):
            for ev in row.events:
                seen.setdefault((src, ev), []).append(row)
    for (s, e), rows in seen.items():
        if len(rows) < 2:
            continue
        guard_sets = [r.guards for r in rows]
        for r in rows[:-1]:
            if not r.guards:
                raise InvalidGovernor(
                    f"{where} row {r.id}: shares ({s}, {e}) with row {rows[-1].id} "
                    "without a distinguishing guard"
                )
        if len(set(guard_sets)) != len(guard_sets):
            ids = ", ".join(r.id for r in rows)
            raise InvalidGovernor(f"{where} rows {ids}: duplicate ({s}, {e}) with identical guards")

    # Timers.
    for st in gov.states:
        for t in st.timers:
            at = f"{where} state {st.name} timer {t.name}"
            if (t.after is None) == (t.at is None):
                raise InvalidGovernor(f"{at}: give exactly one of 'after' or 'at'")
            for key in (t.after, t.before):
                if key is not None:
                    if key not in settings:
                        raise InvalidGovernor(f"{at}: unknown setting {key!r}")
                    settings.duration(key)
            if t.when is not None and t.when not in GUARDS:
                raise InvalidGovernor(f"{at}: unknown guard {t.when!r}")
            if t.event not in events:
                raise InvalidGovernor(f"{at}: fires unknown event {t.event!r}")
            if not any(
                t.event in r.events and "timer" in r.by and st.name in _sources(gov, r)
                for r in gov.transitions
            ):
                raise InvalidGovernor(f"{at}: no row accepts timer event {t.event!r} in state {st.name!r}")
            _check_refs(at, t.payload, settings)
        if st.attention not in (True, False) and st.attention not in GUARDS:
            raise InvalidGovernor(f"{where} state {st.name}: unknown attention guard {st.attention!r}")

    # Reachability from the initial states.
    reached = set(gov.initial_states)
    frontier = list(reached)
    while frontier:
        s = frontier.pop()
        for row in gov.transitions:
            if row.src and s in _sources(gov, row):
                for d in _targets(row, s):
                    if d not in reached:
                        reached.add(d)
                        frontier.append(d)
    unreachable = states - reached
    if unreachable:
        raise InvalidGovernor(f"{where}: unreachable states {sorted(unreachable)}")


def validate_cascades(govs: Mapping[str, Governor]) -> None:
    """Check every cascade: source rows exist, the target exists and accepts the event from a cascade."""
    for gov in govs.values():
        ids = {t.id for t in gov.transitions}
        for c in gov.cascades:
            at = f"{gov.name} cascade {c.id}"
            missing = [r for r in c.on if r not in ids]
            if missing:
                raise InvalidGovernor(f"{at}: unknown source rows {missing}")
            target = govs.get(c.target)
            if target is None:
                raise InvalidGovernor(f"{at}: unknown target governor {c.target!r}")
            if c.select not in ("each", "new", "upsert", "self"):
                raise InvalidGovernor(f"{at}: unknown select {c.select!r}")
            if c.select == "self" and c.target != gov.name:
                raise InvalidGovernor(f"{at}: select 'self' must target its own governor")
            for guard_name in (c.where, c.when):
                if guard_name is not None and guard_name not in GUARDS:
                    raise InvalidGovernor(f"{at}: unknown guard {guard_name!r}")
            wanted = [(c.event, c.select == "new")]
            if c.select == "upsert":
                if c.create_event is None:
                    raise InvalidGovernor(f"{at}: upsert needs a create_event")
                wanted = [(c.event, False), (c.create_event, True)]
            for event, creation in wanted:
                rows = [r for r in target.transitions if event in r.events and (not r.src) == creation]
                if not rows:
                    kind = "creation event" if creation else "event"
                    raise InvalidGovernor(f"{at}: target {c.target} has no {kind} {event!r}")
                if not any("cascade" in r.by for r in rows):
                    raise InvalidGovernor(f"{at}: no row of {c.target} lets a cascade send {event!r}")
            _check_refs(at, c.payload, default_settings())


def _load() -> Mapping[str, Governor]:
    govs: dict[str, Governor] = {}
    for module in ALL:
        gov = module.GOVERNOR
        if gov.name in govs:
            raise InvalidGovernor(f"governor {gov.name!r} defined twice")
        validate(gov)
        govs[gov.name] = gov
    validate_cascades(govs)
    return MappingProxyType(govs)


GOVERNORS: Mapping[str, Governor] = _load()


def get_governor(name: str) -> Governor:
    """The governor called ``name`` (KeyError naming the known ones if absent)."""
    try:
        return GOVERNORS[name]
    except KeyError:
        raise KeyError(f"unknown governor {name!r}; known: {', '.join(GOVERNORS)}") from None


def transition_table(name: str) -> list[dict[str, object]]:
    """The rows of one governor as plain dicts (for tables, --json and docs)."""
    gov = get_governor(name)
    return [
        {
            "id": t.id,
            "events": list(t.events),
            "src": list(t.src) or ["(new)"],
            "dst": t.dst,
            "guards": list(t.guards),
            "by": list(t.by),
            "four_eyes": list(t.four_eyes.approvers) if t.four_eyes else None,
        }
        for t in gov.transitions
    ]
