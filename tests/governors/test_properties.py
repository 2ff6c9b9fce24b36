"""Hypothesis stateful tests: whole customer worlds driven by random events while time advances.

For each governor, a random walk aims most events at that governor's instances (the rest of the
customer's world exists, so cascades really run). After every step we check:

* no instance is ever in a state its governor does not define;
* terminal states absorb (an instance that reached one never leaves it);
* plans terminate: no cascade cycle or depth overrun is ever reported;
* holds never lose remaining time (every pause keeps exactly due − now, every resume restores it);
* deciding is deterministic (planning the same event twice gives equal plans).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from random import Random

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from governors import GOVERNORS, Decision, Instance, apply
from governors.outcomes import Plan
from governors.simulate import World, random_step
from governors.spec import ANY

START = datetime(2026, 3, 1, 9, tzinfo=UTC)


def new_world() -> World:
    """A customer that has signed up (account, subscription, compliance and what they cascade)."""
    from tests.governors.worlds import customer_world

    return customer_world(START)


def check_timer_ops(before: dict[str, Instance], result: Plan) -> None:
    """Replay the plan's decisions and check every pause/resume against the timer it changes."""
    current = dict(before)
    for step in result.steps:
        if not isinstance(step.outcome, Decision) or step.status != "applied":
            continue
        d = step.outcome
        inst = current.get(step.instance_id) or Instance(d.governor, step.instance_id)
        for op in d.timer_ops:
            old = inst.timers.get(op.timer.name)
            if op.op == "pause":
                assert old is not None and old.due_at is not None
                assert op.timer.remaining == max(timedelta(0), old.due_at - d.at)
            elif op.op == "resume":
                assert old is not None and old.remaining is not None
                assert op.timer.due_at == d.at + old.remaining
                assert op.timer.state_seq == old.state_seq
        current[step.instance_id] = apply(inst, d)


class WorldMachine(RuleBasedStateMachine):
    target_governor: str | None = None

    def __init__(self) -> None:
        super().__init__()
        self.world = new_world()
        self.world.on_commit = self._check_commit
        self.terminal: dict[str, str] = {}

    def _check_commit(self, before: Mapping[str, Instance], result: Plan) -> None:
        assert not [a for a in result.alerts if "cycle" in a or "depth" in a], result.alerts
        check_timer_ops(dict(before), result)

    def _remember_terminals(self) -> None:
        for inst in self.world.instances.values():
            if inst.state in GOVERNORS[inst.governor].terminal_states:
                self.terminal.setdefault(inst.id, inst.state)

    @rule(seed=st.integers(0, 2**32 - 1), aimed=st.booleans())
    def fire_random_event(self, seed: int, aimed: bool) -> None:
        twin = replace(self.world, instances=dict(self.world.instances), plans=[], on_commit=None)
        aim = self.target_governor if aimed else None
        result = random_step(self.world, Random(seed), aim)
        if result is None:
            return
        again = random_step(twin, Random(seed), aim)
        assert again is not None and again.steps == result.steps, "deciding must be deterministic"

    @rule(hours=st.sampled_from([1, 6, 24, 73, 24 * 8, 24 * 31]))
    def advance_time(self, hours: int) -> None:
        fired = self.world.advance(self.world.now + timedelta(hours=hours))
        assert len(fired) < 200, "a timer keeps firing without being consumed"

    @invariant()
    def states_are_defined(self) -> None:
        for inst in self.world.instances.values():
            assert inst.state in GOVERNORS[inst.governor].state_names, inst

    @invariant()
    def terminal_states_absorb(self) -> None:
        for inst_id, state in self.terminal.items():
            assert self.world.instances[inst_id].state == state
        self._remember_terminals()


@pytest.mark.parametrize("governor", sorted(GOVERNORS))
def test_random_lifecycles_keep_invariants(governor: str) -> None:
    machine = type(f"World_{governor}", (WorldMachine,), {"target_governor": governor})
    runner = machine.TestCase
    runner.settings = settings(
        max_examples=80,
        stateful_step_count=40,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    runner().runTest()


@pytest.mark.parametrize("governor", sorted(GOVERNORS))
def test_decide_is_deterministic(governor: str) -> None:
    """Every (state, event) pair of every row, asked twice with equal facts, gives equal outcomes."""
    from governors import decide
    from governors.facts import Facts

    gov = GOVERNORS[governor]
    for row in gov.transitions:
        for state in (row.src if ANY not in row.src else gov.state_names) or (None,):
            for event in row.events:
                role = row.by[0]
                facts = Facts(now=START, role=role, payload={"reason": "determinism check"})
                inst = Instance(governor, "i1", state=state, state_seq=1)
                assert decide(gov, inst, event, facts) == decide(gov, inst, event, facts)
