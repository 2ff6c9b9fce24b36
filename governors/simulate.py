"""An in-memory executor of plans over simulated time: one customer's world, no database.

The service layer executes plans against the database; this module does the same in memory, so
property tests, the engine benchmark and what-if tools can run whole lifecycles (events, cascades and
timers firing as time advances) deterministically.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from random import Random
from typing import Any

from governors.engine import Tracer, plan, timer_facts
from governors.facts import Facts, Instance, TimerState
from governors.outcomes import Plan
from governors.settings import Settings, default_settings
from governors.spec import ANY, STAFF_ROLES, Input, frozen_map


@dataclass
class World:
    """The instances of one customer (plus any global SKUs it needs) and a simulated clock."""

    now: datetime
    customer_id: str = "c1"
    settings: Settings = field(default_factory=default_settings)
    instances: dict[str, Instance] = field(default_factory=dict)
    plans: list[Plan] = field(default_factory=list)
    on_commit: Callable[[Mapping[str, Instance], Plan], None] | None = None
    """Called with the instances as they were before each committed plan (checks, tracing)."""
    trace: Tracer | None = None
    """Passed to every plan: sees each question the planner asks the engine (benchmarks, debugging)."""
    _next_id: int = 0

    def _commit(self, result: Plan) -> Plan:
        if self.on_commit is not None:
            self.on_commit(dict(self.instances), result)
        renames: dict[str, str] = {}
        for inst_id, inst in result.instances.items():
            if inst_id.startswith("new:") and inst.state is not None:
                self._next_id += 1
                renames[inst_id] = f"{inst.governor}-{self._next_id}"
        for inst_id, inst in result.instances.items():
            if inst.state is None:
                continue
            new_id = renames.get(inst_id, inst_id)
            self.instances[new_id] = replace(inst, id=new_id) if new_id != inst_id else inst
        self.plans.append(result)
        return result

    def facts(self, role: str = "sys", actor: str = "system", **payload: Any) -> Facts:
        """Facts at the world's current time."""
        return Facts(
            now=self.now, role=role, actor=actor, payload=frozen_map(payload), settings=self.settings
        )

    def create(
        self, governor: str, event: str, *, subject_id: str | None = None, role: str = "sys", **payload: Any
    ) -> Plan:
        """Create a new instance with a creation event (and run its cascades)."""
        self._next_id += 1
        new = Instance(
            governor=governor,
            id=f"new:{governor}:root{self._next_id}",
            customer_id=self.customer_id,
            subject_id=subject_id,
        )
        return self._commit(plan(self.instances, new, event, self.facts(role, **payload), self.trace))

    def fire(
        self,
        instance_id: str,
        event: str,
        *,
        role: str = "sys",
        actor: str = "system",
        approved_by: str | None = None,
        **payload: Any,
    ) -> Plan:
        """Fire an event on an instance and execute its plan when it applies."""
        facts = replace(self.facts(role, actor, **payload), approved_by=approved_by)
        result = plan(self.instances, instance_id, event, facts, self.trace)
        return self._commit(result) if result.root is not None and result.root.ok else result

    def due_timers(self) -> list[tuple[datetime, str, TimerState]]:
        """Running timers in due order (ties broken by instance id and timer name)."""
        due = [
            (t.due_at, inst.id, t)
            for inst in self.instances.values()
            for t in inst.timers.values()
            if t.due_at is not None
        ]
        return sorted(due, key=lambda x: (x[0], x[1], x[2].name))

    def advance(self, until: datetime, *, limit: int = 1000) -> list[Plan]:
        """Move the clock to ``until``, firing every timer that falls due on the way, in order."""
        fired: list[Plan] = []
        for _ in range(limit):
            pending = [d for d in self.due_timers() if d[0] <= until]
            if not pending:
                break
            due_at, inst_id, timer = pending[0]
            self.now = max(self.now, due_at)
            inst = self.instances[inst_id]
            result = plan(
                self.instances,
                inst_id,
                timer.event,
                timer_facts(inst, timer, self.now, self.settings),
                self.trace,
            )
            if result.root is not None and result.root.ok:
                fired.append(self._commit(result))
            else:
                # A timer the engine refuses (stale, guard) is consumed so it cannot fire forever.
                timers = dict(inst.timers)
                timers.pop(timer.name, None)
                self.instances[inst_id] = replace(inst, timers=frozen_map(timers))
        self.now = max(self.now, until)
        return fired

    def of(self, governor: str) -> list[Instance]:
        """The world's instances of one governor, by id."""
        return sorted((i for i in self.instances.values() if i.governor == governor), key=lambda i: i.id)


def sample_input(inp: Input, rng: Random, now: datetime) -> Any:
    """A plausible value for a declared input (choices first, bounded numbers, future dates)."""
    if inp.choices:
        return [rng.choice(inp.choices)] if inp.kind == "list" else rng.choice(inp.choices)
    if inp.kind in ("cents", "int"):
        low = inp.min if inp.min is not None else 1
        high = inp.max if inp.max is not None else low + 10_000
        return rng.randint(low, min(high, low + 10_000))
    if inp.kind == "bool":
        return rng.random() < 0.5
    if inp.kind == "datetime":
        return (now + timedelta(days=rng.randint(1, 60))).isoformat()
    if inp.kind == "list":
        return []
    if inp.kind == "mapping":
        return {}
    return f"sample {rng.randint(100, 999)}"


def random_step(world: World, rng: Random, governor: str | None = None) -> Plan | None:
    """Fire one random event that some staff role or the system could send to a random instance.

    Payloads are drawn from the row's declared inputs; staff give a reason and four-eyes rows are
    treated as approved, so the walk exercises real transitions and cascades (and real rejections).
    """
    from governors.registry import GOVERNORS

    pool = sorted(
        (i for i in world.instances.values() if governor is None or i.governor == governor),
        key=lambda i: i.id,
    )
    if not pool:
        return None
    inst = rng.choice(pool)
    gov = GOVERNORS[inst.governor]
    rows = [
        r
        for r in gov.transitions
        if r.src and (inst.state in r.src or ANY in r.src) and any(x in r.by for x in (*STAFF_ROLES, "sys"))
    ]
    if not rows:
        return None
    row = rng.choice(rows)
    role = rng.choice([x for x in row.by if x in (*STAFF_ROLES, "sys")])
    payload: dict[str, Any] = {i.name: sample_input(i, rng, world.now) for i in row.inputs}
    if role in STAFF_ROLES:
        payload["reason"] = "simulated staff action"
    return world.fire(
        inst.id, rng.choice(row.events), role=role, actor="sim", approved_by="sim-approver", **payload
    )


def random_lifecycles(customers: int, seed: int, start: datetime, trace: Tracer, steps: int = 40) -> None:
    """Simulate ``customers`` lifecycles (a signup, then ``steps`` random staff or system events and
    jumps of simulated time that fire due timers), telling ``trace`` every question the planner asks
    the engine. The same seed asks the same questions."""
    rng = Random(seed)
    for n in range(customers):
        world = World(now=start + timedelta(hours=n), customer_id=f"c{n}", trace=trace)
        world.create("customer_account", "signup", email=f"c{n}@example.test", tier="starter")
        for _ in range(steps):
            if rng.random() < 0.3:
                world.advance(world.now + timedelta(hours=rng.choice((1, 6, 24, 72, 240))))
            else:
                random_step(world, rng)
