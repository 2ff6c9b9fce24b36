"""The machinery of the per-governor table tests (tests/governors/test_<governor>.py).

Each of those files keeps its data: the instance a case starts from, its constants and its CASES table,
plus the tests that are specific to its governor. What they share stands here once: the Case type, the
facts of an event, running a case through ``governors.decide``, the parametrized row test and the
coverage checks (every row has a case that applies it; every row id is from the spec or marked added).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import pytest

from governors import Decision, Facts, Instance, Rejection, decide, default_settings, get_governor
from governors.facts import Context, TimerState
from governors.rules.base import GUARDS
from governors.settings import Settings
from governors.spec import STAFF_ROLES, Governor

NOW = datetime(2026, 1, 15, 12, tzinfo=UTC)
SETTINGS = default_settings()
STAFF = STAFF_ROLES
SYSTEM_ROLES = ("sys", "timer", "cascade")

# The codes a bare (not "!"-prefixed) ``Case.expect`` may name instead of a target state.
REJECTIONS = frozenset(
    {
        "unknown_event",
        "invalid_transition",
        "terminal_state",
        "not_created",
        "role_not_allowed",
        "invalid_input",
        "guard_failed",
        "stale_timer",
        "duplicate_payment",
        "concurrent_payment",
        "amount_mismatch",
        "concurrent_update_conflict",
    }
)


@dataclass(frozen=True)
class Case:
    """One line of a governor's table: a situation, an event, and what must come of it."""

    row: str  # the row expected to apply, or the row a rejection is about ("-" when none)
    state: str | None
    event: str
    role: str
    expect: str  # target state; a rejection code; or "!code" / "!code:guard" for a rejection
    payload: Mapping[str, Any] = field(default_factory=dict)
    data: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)
    peers: Mapping[str, Any] | None = None  # see peer_instances; None: the table's default world
    entered: datetime | None = None  # when the instance entered its state (None: the table's default)
    stale: bool = False  # a timer event fired with an out-of-date state_seq
    changes: Mapping[str, Any] = field(default_factory=dict)  # data the decision must write
    guard: str = ""  # the guard a guard_failed rejection must name
    note: str = ""

    @property
    def rejection(self) -> tuple[str, str] | None:
        """(code, guard) when the case expects a rejection, else None."""
        if self.expect.startswith("!"):
            code, _, guard = self.expect[1:].partition(":")
            return code, guard or self.guard
        if self.expect in REJECTIONS:
            return self.expect, self.guard
        return None


@dataclass(frozen=True)
class Instances:
    """Builds a governor's instance under test: ``make(state, data, seq, timers, entered)``.

    An instance not created yet (state None) has state_seq 0 and no entered_at.
    """

    governor: str
    id: str
    seq: int  # the state_seq of a created instance unless a test names one
    entered_ago: timedelta | None = None  # how long before NOW it entered its state (None: unknown)
    customer_id: str | None = None
    subject_id: str | None = None

    def __call__(
        self,
        state: str | None,
        data: Mapping[str, Any] | None = None,
        seq: int | None = None,
        timers: Mapping[str, Any] | None = None,
        entered: datetime | None = None,
    ) -> Instance:
        if entered is None and self.entered_ago is not None:
            entered = NOW - self.entered_ago
        return Instance(
            governor=self.governor,
            id=self.id,
            state=state,
            state_seq=(self.seq if seq is None else seq) if state else 0,
            entered_at=entered if state else None,
            customer_id=self.customer_id,
            subject_id=self.subject_id,
            data=dict(data or {}),
            timers=dict(timers or {}),
        )


def marked_added(row_id: str) -> bool:
    """A row this project added to the spec's table: B09b (a variant of B09) or Bx1 (a new row)."""
    return re.fullmatch(r"[A-Z](x\d+|\d{2}[a-z])", row_id) is not None


def case_id(case: Case) -> str:
    """A pytest id: row-state-event-role-expect."""
    return f"{case.row}-{case.state}-{case.event}-{case.role}-{case.expect}"


def case_id_with_note(case: Case) -> str:
    """A pytest id that tells apart cases alike but for their note."""
    return f"{case_id(case)}-{case.note}"


def peer_instances(spec: Mapping[str, Any]) -> dict[str, tuple[Instance, ...]]:
    """Peers from {governor: (Instance | state | (state, data), ...)} of customer cust-1."""
    out: dict[str, tuple[Instance, ...]] = {}
    for gov, items in spec.items():
        built = []
        for n, item in enumerate(items):
            if isinstance(item, Instance):
                built.append(item)
                continue
            state, data = (item, {}) if isinstance(item, str) else item
            built.append(
                Instance(gov, f"{gov}-{n}", state, 1, customer_id="cust-1", subject_id=f"s{n}", data=data)
            )
        out[gov] = tuple(built)
    return out


def make_facts(
    role: str = "sys",
    payload: Mapping[str, Any] | None = None,
    peers: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    *,
    now: datetime = NOW,
    approved_by: str | None = None,
    seq: int | None = None,
    timer: str | None = None,
    settings: Settings | None = SETTINGS,
    reason: str = "customer called the support line",
    actor: str | None = None,
) -> Facts:
    """The facts of one event. Staff get a reason; a "timer" role fires ``timer`` (default "t") at ``seq``.

    ``actor`` defaults to "system" for the system roles and to "u1" for staff and customers.
    """
    body = dict(payload or {})
    if role in STAFF:
        body.setdefault("reason", reason)
    return Facts(
        now=now,
        role=role,
        actor=actor or ("system" if role in SYSTEM_ROLES else "u1"),
        payload=body,
        peers=peer_instances(peers or {}),
        extra=dict(extra or {}),
        settings=settings,
        approved_by=approved_by,
        timer=(timer or "t") if role == "timer" else timer,
        timer_seq=seq,
    )


def ago(**kw: float) -> datetime:
    return NOW - timedelta(**kw)


def peer(governor: str, state: str, pid: str | None = None, **data: Any) -> Instance:
    """Another governor's instance of customer c1 (state_seq 1)."""
    return Instance(governor, pid or f"{governor}-1", state=state, state_seq=1, customer_id="c1", data=data)


def where(
    name: str,
    target: Instance,
    *,
    governor: Governor | None = None,
    event: str = "x",
    payload: Mapping[str, Any] | None = None,
    source: Mapping[str, Any] | None = None,
) -> bool:
    """Whether the cascade guard ``name`` (a cascade's ``where``) holds for a target instance.

    ``governor`` defaults to the target's own; ``source`` is the data of the instance the cascade comes from.
    """
    facts = Facts(
        now=NOW,
        role="cascade",
        payload=dict(payload or {}),
        extra={} if source is None else {"source_data": source},
        settings=SETTINGS,
    )
    gov = governor or get_governor(target.governor)
    return GUARDS[name].fn(Context(gov, target, event, facts, SETTINGS, target.data))


def armed(out: Decision) -> dict[str, datetime | None]:
    """The timers a decision arms: name -> due time."""
    return {op.timer.name: op.timer.due_at for op in out.timer_ops if op.op == "arm"}


def timer_ops(outcome: Decision | Rejection) -> dict[str, tuple[str, TimerState]]:
    """A decision's timer operations: name -> (op, timer)."""
    return {op.timer.name: (op.op, op.timer) for op in decided(outcome).timer_ops}


def emitted(out: Decision) -> list[tuple[str, str, str, dict[str, Any], bool]]:
    """A decision's cascades: (id, target, event, payload, must)."""
    return [(c.id, c.target, c.event, dict(c.payload), c.must) for c in out.cascades]


def decided(out: Decision | Rejection) -> Decision:
    """The decision, failing the test with the rejection's message when there is none."""
    assert isinstance(out, Decision), f"{out.code}: {out.message}" if isinstance(out, Rejection) else out
    return out


def cases_of(table: Sequence[Any]) -> list[Case]:
    """The Case objects of a table whose lines are Cases or pytest.param(Case, id=...)."""
    return [line.values[0] if hasattr(line, "values") else line for line in table]


@dataclass(frozen=True)
class Table:
    """A governor's table of cases and how to set a case up."""

    governor: Governor
    cases: Sequence[Any]  # Case, or pytest.param(Case, id=...) for a hand-chosen id
    instance: Callable[[Case], Instance]  # the instance a case starts from
    spec_rows: Collection[str]  # the row ids GOVERNORS.md lists
    facts: Callable[..., Facts] = make_facts  # make_facts with the governor's defaults bound
    world: Mapping[str, Any] = field(default_factory=dict)  # peers of a case that names none
    added: Callable[[str], bool] = marked_added  # the row ids this project added
    also_covered: Collection[str] = ()  # rows tested outside the table
    ids: Callable[[Case], str] = case_id  # for cases not wrapped in pytest.param
    # Whether a rejection must name the case's row: "exact"; "if_named" (when it names a row at all);
    # "unchecked" (the case's row is only the one the rejection is about, not the one the engine names).
    rejection_row: Literal["exact", "if_named", "unchecked"] = "exact"

    def run(self, case: Case, **kw: Any) -> Decision | Rejection:
        inst = self.instance(case)
        facts = self.facts(
            case.role,
            case.payload,
            peers=self.world if case.peers is None else case.peers,
            extra=case.extra,
            seq=inst.state_seq - 1 if case.stale else inst.state_seq,
            timer=case.event,
            **kw,
        )
        return decide(self.governor, inst, case.event, facts)

    def decided(self, case: Case, **kw: Any) -> Decision:
        return decided(self.run(case, **kw))

    def check(self, case: Case) -> None:
        out = self.run(case)
        rejection = case.rejection
        if rejection is not None:
            code, guard = rejection
            assert isinstance(out, Rejection), f"expected {case.expect}, got {out}"
            assert out.code == code, out.message
            if guard:
                assert out.details["guard"] == guard, out.message
            named = out.row_id is not None or self.rejection_row == "exact"
            if case.row != "-" and self.rejection_row != "unchecked" and named:
                assert out.row_id == case.row, out.message
            return
        out = decided(out)
        assert (out.row_id, out.to_state) == (case.row, case.expect)
        for key, value in case.changes.items():
            assert out.changes.get(key) == value, (key, out.changes)

    def tests(self) -> tuple[Callable[..., None], Callable[[], None], Callable[[], None]]:
        """The row test and the two coverage tests, for the governor's test module to bind by name."""
        cases = cases_of(self.cases)
        ids = [None if hasattr(line, "values") else self.ids(line) for line in self.cases]

        @pytest.mark.parametrize("case", self.cases, ids=ids)
        def test_row(case: Case) -> None:
            self.check(case)

        def test_table_covers_every_row() -> None:
            rows = {t.id for t in self.governor.transitions}
            applied = {c.row for c in cases if c.rejection is None} | set(self.also_covered)
            assert applied == rows
            assert {c.row for c in cases} - {"-"} <= rows  # a rejection is about a real row

        def test_every_row_id_is_from_the_spec_or_marked_added() -> None:
            ids = {t.id for t in self.governor.transitions}
            assert set(self.spec_rows) <= ids
            assert all(i in self.spec_rows or self.added(i) for i in ids), sorted(
                i for i in ids if i not in self.spec_rows and not self.added(i)
            )

        return test_row, test_table_covers_every_row, test_every_row_id_is_from_the_spec_or_marked_added
