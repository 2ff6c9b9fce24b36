"""Engine decisions per second on a mixed, realistic event stream, against the `transitions` library.

The stream is recorded from whole simulated customer lifecycles (signup, KYC, purchases, payments
and declines, staff actions, usage samples, timers firing as time advances, every cascade), so it has
the real mix of accepted and rejected events. Both contenders replay the same recorded
(governor, state, event) sequence: ours through ``governors.decide`` (guards, inputs, roles, timers,
effects and cascades evaluated), the peer through ``transitions.Machine`` models built from the same
definitions (states and transitions only). Prints one JSON line::

    {"bench": "engine", "ours": <decisions/s>, "peer": <triggers/s>, "ratio": ours/peer, "target": 1.0}

Timing: the two replay the whole stream in alternating passes, ``--repeat`` times each. Every pass is
timed in chunks of ``--chunk`` events and each side's rate is computed from its best time per chunk.
On a shared machine a 20-30 ms pass is almost always preempted or has its caches flushed by other
processes somewhere, so best-of-N whole passes swung from 0.53 to 1.29 between runs of identical
code; a ~1 ms chunk is usually caught undisturbed at least once. Both sides are measured the same way,
on the same stream, in the same order, doing the same work as before.

Run: ``.venv/bin/python -m bench.engine [--customers N] [--repeat R] [--chunk C]``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from transitions import Machine, MachineError

import governors.engine as engine
from governors import GOVERNORS, Facts, Instance
from governors.simulate import random_lifecycles
from governors.spec import ANY, SAME

Record = tuple[str, Instance, str, Facts]
START = datetime(2026, 1, 1, tzinfo=UTC)


def record_stream(customers: int, seed: int = 7) -> list[Record]:
    """Simulate ``customers`` lifecycles and record every question the planner asks the engine."""
    records: list[Record] = []

    def recording(governor: str, instance: Instance, event: str, facts: Facts) -> None:
        if instance.state is not None:
            records.append((governor, instance, event, facts))

    random_lifecycles(customers, seed, START, recording)
    return records


def peer_machines() -> dict[str, tuple[Machine, Any]]:
    """The same eight machines as `transitions` Machines (one model each)."""
    machines: dict[str, tuple[Machine, Any]] = {}
    for gov in GOVERNORS.values():
        model = type(f"{gov.name}_model", (), {})()
        non_terminal = [s.name for s in gov.states if not s.terminal]
        rows: list[dict[str, Any]] = []
        for t in gov.transitions:
            if not t.src:
                continue
            sources = non_terminal if ANY in t.src else list(t.src)
            dest: str | None
            if t.dst == SAME:
                dest = None
            elif t.dst.startswith("@"):
                dest = t.dst_choices[0]
            else:
                dest = t.dst
            for event in t.events:
                rows.append({"trigger": event, "source": sources, "dest": dest})
        m = Machine(
            model=model,
            states=list(gov.state_names),
            transitions=rows,
            initial=gov.initial_states[0],
            auto_transitions=False,
            ignore_invalid_triggers=False,
        )
        machines[gov.name] = (m, model)
    return machines


Replay = Callable[[list[Record]], None]


def _rates(first: Replay, second: Replay, chunks: list[list[Record]], repeat: int) -> tuple[float, float]:
    """Events per second of each, from its best time per chunk over ``repeat`` alternating passes."""
    best = [[math.inf] * len(chunks), [math.inf] * len(chunks)]
    clock = time.perf_counter
    for _ in range(repeat):
        for times, fn in zip(best, (first, second), strict=True):
            for index, chunk in enumerate(chunks):
                t0 = clock()
                fn(chunk)
                elapsed = clock() - t0
                if elapsed < times[index]:
                    times[index] = elapsed
    events = sum(len(chunk) for chunk in chunks)
    return events / sum(best[0]), events / sum(best[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=60)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--chunk", type=int, default=100, help="events timed together")
    args = parser.parse_args()
    stream = [r for r in record_stream(args.customers) if r[1].state is not None]
    machines = peer_machines()
    decide = engine.decide

    def ours(chunk: list[Record]) -> None:
        for gov, inst, event, facts in chunk:
            decide(gov, inst, event, facts)

    def peer(chunk: list[Record]) -> None:
        for gov, inst, event, _facts in chunk:
            machine, model = machines[gov]
            machine.set_state(str(inst.state), model)
            try:  # noqa: SIM105 (contextlib.suppress costs more than the trigger in this hot loop)
                model.trigger(event)
            except (MachineError, AttributeError):
                pass

    chunks = [stream[k : k + args.chunk] for k in range(0, len(stream), args.chunk)]
    ours_rate, peer_rate = _rates(ours, peer, chunks, args.repeat)
    applied = sum(1 for g, i, e, f in stream if decide(g, i, e, f).ok)
    print(
        json.dumps(
            {
                "bench": "engine",
                "ours": round(ours_rate),
                "peer": round(peer_rate),
                "ratio": round(ours_rate / peer_rate, 3),
                "target": 1.0,
                "events": len(stream),
                "accepted": applied,
            }
        )
    )


if __name__ == "__main__":
    main()
