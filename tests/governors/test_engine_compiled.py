"""What the engine compiles ahead of time behaves as if it were worked out on every event.

``governors.engine`` resolves definitions once (references in set values, effect arguments, timer
and cascade payloads; input checks; guard callables) and reads settings from the event's facts. These
tests pin the observable results of that: definition order of keys, data as the transition leaves it,
settings overrides that apply at once, shared emits that cannot be changed, and every input kind.
"""

from __future__ import annotations

from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta, timezone
from types import MappingProxyType
from typing import Any

import pytest

from governors import Decision, Facts, Instance, Rejection, apply, decide
from governors.engine import compile_value
from governors.facts import Context
from governors.outcomes import TimerOp
from governors.rules.base import GUARDS, guard, updater
from governors.settings import default_settings
from governors.spec import SAME, Cascade, Governor, Input, State, Timer, Transition, frozen_map, fx

NOW = datetime(2026, 3, 1, 9, tzinfo=UTC)
SETTINGS = default_settings()

if "cmp_flag_cleared" not in GUARDS:

    @guard("cmp_flag_cleared", "the flag is still set")
    def cmp_flag_cleared(ctx: Context) -> bool:
        return "flag" not in ctx.data and ctx.data.get("flag", "absent") == "absent"

    @guard("cmp_counted", "not counted yet")
    def cmp_counted(ctx: Context) -> bool:
        return int(ctx.data.get("count", 0)) > 0

    @updater("cmp_count")
    def cmp_count(ctx: Context) -> dict[str, Any]:
        return {"count": int(ctx.data.get("count", 0)) + 1}


def T(*args: object, **kw: object) -> Transition:
    return Transition(*args, **kw)  # type: ignore[arg-type]


GOV = Governor(
    name="compiled",
    title="Compiled",
    description="a governor exercising the engine's precompiled paths",
    instance_of="customer",
    states=(
        State("idle", "idle"),
        State(
            "busy",
            "busy",
            attention="cmp_counted",
            attention_reason="counted",
            timers=(
                Timer("tick", "tick", after="entitlement.suspension_timeout", payload={"seq": "$data.count"}),
            ),
        ),
        State("done", "done", terminal=True),
    ),
    transitions=(
        T("C01", ("create",), (), "idle", ("sys",)),
        T(
            "C02",
            ("start",),
            ("idle",),
            "busy",
            ("sys", "manager"),
            set={
                "started_at": "$now",
                "label": "fixed",
                "note": "$payload.note",
                "trail": ["$event", "literal", ("$state",)],
                "owner": {"instance": "$instance.id", "cap": "$setting.engine.max_text_length"},
                "flag": None,
            },
            updates=("cmp_count",),
            effects=(
                fx("notify_customer", template="started"),
                fx("audit_note", count="$data.count", note="$data.note", gone="$data.flag"),
            ),
        ),
        T("C03", ("tick",), ("busy",), SAME, ("timer",)),
        T(
            "C04",
            ("poke",),
            ("idle", "busy"),
            SAME,
            ("sys", "support"),
            inputs=(
                Input("amount", "cents", required=False, min=1, max=500),
                Input("count", "int", required=False),
                Input("code", "code", required=False, choices=("a", "b")),
                Input("text", "text", required=False, min=3),
                Input("yes", "bool", required=False),
                Input("at", "datetime", required=False),
                Input("tags", "list", required=False, choices=("x", "y")),
                Input("blob", "mapping", required=False),
            ),
        ),
        T("C05", ("finish",), ("busy",), "done", ("sys",)),
    ),
    cascades=(
        Cascade("K1", ("C02",), "compiled", "poke", select="self", payload={"why": "started"}),
        Cascade(
            "K2",
            ("C02",),
            "compiled",
            "poke",
            select="self",
            when="cmp_flag_cleared",
            payload={"count": "$data.count", "id": "$instance.id"},
        ),
    ),
)

IDLE = Instance("compiled", "c-1", state="idle", state_seq=1, data=frozen_map({"flag": True, "count": 2}))


def facts(role: str = "sys", settings: Any = SETTINGS, **payload: object) -> Facts:
    return Facts(now=NOW, role=role, actor="u1", payload=frozen_map(payload), settings=settings)


def test_set_values_resolve_in_definition_order_with_nested_references() -> None:
    out = decide(GOV, IDLE, "start", facts(note="hello"))
    assert isinstance(out, Decision)
    assert list(out.changes) == ["started_at", "label", "note", "trail", "owner", "flag", "count"]
    assert out.changes["started_at"] == NOW
    assert out.changes["note"] == "hello"
    # Lists (and tuples) resolve to lists, as before; ``$state`` before the move is the current state.
    assert out.changes["trail"] == ["start", "literal", ["idle"]]
    assert out.changes["owner"] == {"instance": "c-1", "cap": 5000}
    assert out.changes["count"] == 3


def test_effects_timers_cascades_and_attention_see_the_data_as_the_transition_leaves_it() -> None:
    out = decide(GOV, IDLE, "start", facts(note="hello"))
    assert isinstance(out, Decision)
    static, dynamic = out.effects
    assert static is GOV.transitions[1].effects[0], "an effect without references is the definition's own"
    assert dynamic.name == "audit_note" and dict(dynamic.args) == {"count": 3, "note": "hello", "gone": None}
    (arm,) = out.timer_ops
    assert arm.op == "arm" and arm.timer.payload == {"seq": 3}
    assert arm.timer.due_at == NOW + timedelta(hours=72)
    # K2 runs only because ``flag`` was deleted (set to None) by the row.
    assert [(c.id, dict(c.payload)) for c in out.cascades] == [
        ("K1", {"why": "started"}),
        ("K2", {"count": 3, "id": "c-1"}),
    ]
    assert out.attention is True and out.attention_reason == "counted"


def test_shared_cascade_emits_are_read_only_and_equal_across_decisions() -> None:
    first = decide(GOV, IDLE, "start", facts(note="a"))
    second = decide(GOV, IDLE, "start", facts(note="b"))
    assert isinstance(first, Decision) and isinstance(second, Decision)
    assert first.cascades[0] == second.cascades[0]
    with pytest.raises(TypeError):
        first.cascades[0].payload["why"] = "changed"  # type: ignore[index]
    with pytest.raises(TypeError):
        first.changes["label"] = "changed"  # type: ignore[index]


def test_settings_overrides_apply_per_event_and_do_not_stick() -> None:
    shorter = SETTINGS.override({"entitlement.suspension_timeout": "2h"})
    due = []
    for settings in (SETTINGS, shorter, SETTINGS, shorter):
        out = decide(GOV, IDLE, "start", facts(settings=settings))
        assert isinstance(out, Decision)
        due.append(out.timer_ops[0].timer.due_at)
    assert due == [NOW + timedelta(hours=72), NOW + timedelta(hours=2)] * 2


def test_staff_reason_length_follows_the_settings_of_the_event() -> None:
    strict = SETTINGS.override({"engine.min_reason_length": 30})
    reason = "customer called in"  # 18 characters
    outcomes = [
        decide(GOV, IDLE, "poke", facts("support", settings=s, reason=reason))
        for s in (SETTINGS, strict, SETTINGS)
    ]
    assert isinstance(outcomes[0], Decision) and isinstance(outcomes[2], Decision)
    rejected = outcomes[1]
    assert isinstance(rejected, Rejection) and rejected.code == "invalid_input"
    assert rejected.message == "give a reason of at least 30 characters"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"amount": True}, "amount must be a whole number of cents"),
        ({"amount": 1.5}, "amount must be a whole number of cents"),
        ({"amount": 0}, "amount must be at least 1"),
        ({"amount": 501}, "amount must be at most 500"),
        ({"count": "3"}, "count must be a whole number"),
        ({"code": "c"}, "code must be one of: a, b"),
        ({"code": 1}, "code must be text"),
        ({"text": "  ab  "}, "text must be at least 3 characters"),
        ({"text": "x" * 5001}, "text must be at most 5000 characters"),
        ({"yes": 1}, "yes must be true or false"),
        ({"at": "2026-03-01T09:00:00"}, "at must be a date and time with a time zone (ISO 8601)"),
        ({"at": "yesterday"}, "at must be a date and time with a time zone (ISO 8601)"),
        ({"at": datetime(2026, 3, 1)}, "at must be a date and time with a time zone (ISO 8601)"),  # noqa: DTZ001
        ({"tags": "x"}, "tags must be a list"),
        ({"tags": ["x", "z"]}, "tags may only contain: x, y"),
        ({"blob": ["k", "v"]}, "blob must be an object"),
    ],
)
def test_every_input_kind_refuses_bad_values_with_an_actionable_message(
    payload: dict[str, Any], message: str
) -> None:
    out = decide(GOV, IDLE, "poke", facts(**payload))
    assert isinstance(out, Rejection) and out.code == "invalid_input"
    assert (out.message, out.details["field"]) == (message, next(iter(payload)))


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"amount": 500, "count": -3, "code": "b", "text": "abc", "yes": False},
        {"at": "2026-03-01T09:00:00+00:00", "tags": ("x", "y"), "blob": {"k": 1}},
        {"at": NOW, "tags": [], "blob": MappingProxyType({}), "amount": None, "text": ""},
    ],
)
def test_every_input_kind_accepts_good_or_absent_values(payload: dict[str, Any]) -> None:
    assert isinstance(decide(GOV, IDLE, "poke", facts(**payload)), Decision)


def test_an_unknown_reference_is_refused_when_compiled() -> None:
    with pytest.raises(ValueError, match="unknown reference"):
        compile_value({"ok": "$data.x", "bad": "$nowhere.y"})


@pytest.mark.parametrize(
    "payload",
    [
        {"text": "x" * 5000, "amount": 1, "code": "a"},
        {"text": "abc   ", "amount": 500, "at": NOW.astimezone(timezone(timedelta(hours=-5)))},
        {"text": type("Note", (str,), {})("a subclass"), "count": 2**70},
    ],
)
def test_values_at_the_bounds_and_subclasses_pass_as_the_kind_checks_say(payload: dict[str, Any]) -> None:
    # The generated checks accept plain values inline and leave the rest to the kind checks.
    assert isinstance(decide(GOV, IDLE, "poke", facts(**payload)), Decision)


def test_outcomes_built_on_the_fast_path_have_every_field_and_equal_their_class_built_copies() -> None:
    # The engine builds Decision, TimerOp and TimerState without calling the class; a field added to
    # one of them must not be left unset there.
    out = decide(GOV, IDLE, "start", facts(note="hello"))
    assert isinstance(out, Decision)
    built: list[Any] = [out, *out.timer_ops, *(op.timer for op in out.timer_ops), *out.cascades, *out.effects]
    for value in built:
        cls = type(value)
        copy = cls(**{f.name: getattr(value, f.name) for f in fields(cls)})
        assert copy == value and repr(copy) == repr(value)
    busy = Instance(
        "compiled", "c-1", state="busy", state_seq=2, timers=frozen_map({"tick": out.timer_ops[0].timer})
    )
    fired = decide(GOV, busy, "finish", facts())
    assert isinstance(fired, Decision) and [op.op for op in fired.timer_ops] == ["cancel"]
    assert fired.timer_ops[0] == TimerOp("cancel", out.timer_ops[0].timer)


def test_apply_and_plan_name_the_fields_of_instance_and_facts_in_their_declared_order() -> None:
    # apply() and plan() build Instance and Facts positionally (dataclasses.replace is slow on the hot
    # path); a field added or moved must be added there too.
    assert [f.name for f in fields(Instance)] == [
        "governor", "id", "state", "state_seq", "version", "entered_at", "customer_id", "subject_id",
        "data", "timers",
    ]  # fmt: skip
    assert [f.name for f in fields(Facts)] == [
        "now", "role", "actor", "payload", "peers", "extra", "settings", "approved_by", "timer", "timer_seq",
    ]  # fmt: skip
    before = replace(IDLE, version=4, customer_id="cust-1", subject_id="sub-1")
    out = decide(GOV, before, "start", facts(note="hello"))
    assert isinstance(out, Decision)
    after = apply(before, out)
    assert after == replace(
        before,
        state=out.to_state,
        state_seq=out.state_seq,
        version=5,
        entered_at=out.at,
        data=frozen_map(
            {k: v for k, v in {**before.data, **out.changes}.items() if v is not None}  # None: removed
        ),
        timers=frozen_map({op.timer.name: op.timer for op in out.timer_ops}),
    )


def test_rejections_built_on_the_fast_path_have_every_field_and_name_every_failed_guard() -> None:
    guarded = Governor(
        name="compiled_guarded",
        title="Guarded",
        description="two rows of one event, each with a guard",
        instance_of="customer",
        states=(State("idle", "idle"), State("busy", "busy")),
        transitions=(
            T("G01", ("create",), (), "idle", ("sys",)),
            T("G02", ("go",), ("idle",), "busy", ("sys",), guards=("cmp_counted",)),
            T("G03", ("go",), ("idle",), SAME, ("sys",), guards=("cmp_flag_cleared",)),
        ),
    )
    idle = Instance("compiled_guarded", "g-1", state="idle", data=frozen_map({"flag": True}))
    both = decide(guarded, idle, "go", facts())
    assert isinstance(both, Rejection)
    assert (both.code, both.message, both.row_id) == ("guard_failed", "not counted yet", "G02")
    assert dict(both.details) == {"guard": "cmp_counted", "failed": ("cmp_counted", "cmp_flag_cleared")}
    counted = Instance("compiled_guarded", "g-1", state="idle", data=frozen_map({"flag": True, "count": 1}))
    assert isinstance(decide(guarded, counted, "go", facts()), Decision)
    copy = Rejection(**{f.name: getattr(both, f.name) for f in fields(Rejection)})
    assert copy == both and repr(copy) == repr(both)


def test_prepare_generates_every_decision_function_ahead_and_changes_no_outcome() -> None:
    """``prepare`` (a forking worker's warm-up) leaves nothing to generate on first use; decisions made
    through the prepared functions equal those of a fresh definition generating on first use."""
    from functools import partial

    from governors.engine import _compiled, prepare
    from governors.registry import GOVERNORS

    account = GOVERNORS["customer_account"]
    fresh = Governor(**{f.name: getattr(account, f.name) for f in fields(Governor)})  # not yet compiled
    made = prepare("customer_account")
    assert prepare("customer_account") == 0, "a second call has nothing left to generate"
    runs = _compiled("customer_account").runs
    assert made <= len(runs) and not [k for k, r in runs.items() if isinstance(r, partial)]
    when = datetime(2026, 3, 2, 9, tzinfo=UTC)
    for state in ("onboarding", "active", "locked", "suspended"):
        inst = Instance("customer_account", "acc-1", state=state, state_seq=3, entered_at=when)
        for event, payload in (
            ("lock", {"reason_code": "compromised_account", "reason": "reported takeover"}),
            ("email_verified", {}),
            ("close_account", {"customer_confirmation_ref": "conf-1", "reason": "asked to"}),
        ):
            for role in ("support", "sys", "compliance"):
                at = Facts(now=when, role=role, actor="x", payload=frozen_map(payload))
                assert decide("customer_account", inst, event, at) == decide(fresh, inst, event, at)


def test_generated_decisions_equal_the_ones_worked_out_as_they_go(monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine decides most rows through generated code (``_build_source``) and the rows whose
    target is read per event through ``_build``: two ways to the same decision. Every question the
    planner asks over simulated lifecycles (every governor, creations, staff actions, timers,
    cascades; accepted and rejected) is answered again with every row worked out by ``_build``, on
    fresh copies of the definitions, and the outcomes must be equal."""
    from functools import partial

    import governors.engine as engine
    from governors.registry import GOVERNORS
    from governors.simulate import random_lifecycles

    asked: list[tuple[str, Instance | None, str, Facts, Any]] = []

    def record(governor: str, instance: Instance | None, event: str, at: Facts) -> None:
        asked.append((governor, instance, event, at, None))

    start = datetime(2026, 1, 5, 9, tzinfo=UTC)
    random_lifecycles(25, 11, start, record)
    # And every event in every state of every governor, by every kind of sender, with the data a
    # lifecycle left (the last instance seen of that governor) or none: mostly rejections, and the
    # rows the lifecycles above never reach (the catalog's returns to a stored state among them).
    seen = {g: inst for g, inst, *_ in asked if inst is not None}
    payload = frozen_map({"reason": "asked by the equivalence test", "reason_code": "other"})
    for name, gov in GOVERNORS.items():
        events = sorted({e for t in gov.transitions for e in t.events})
        for state in [None, *(st.name for st in gov.states)]:
            base = seen.get(name)
            inst = (
                None
                if state is None
                else replace(base, state=state)
                if base is not None
                else Instance(name, f"{name}-1", state=state)
            )
            for event in events:
                for role in ("sys", "timer", "support", "finance", "manager", "admin", "compliance"):
                    at = Facts(now=start, role=role, actor="u-1", payload=payload)
                    asked.append((name, inst, event, at, None))
    answers = [decide(g, inst, event, at) for g, inst, event, at, _ in asked]
    assert len(answers) > 1000
    assert {g for g, *_ in asked} == set(GOVERNORS), "every governor is asked"
    assert any(isinstance(a, Rejection) for a in answers) and any(isinstance(a, Decision) for a in answers)

    real_init = engine._Step.__init__

    def build_every_row(self: Any, *args: Any, **kwargs: Any) -> None:
        real_init(self, *args, **kwargs)
        if self.build is None:
            self.build = partial(engine._build, step=self)

    monkeypatch.setattr(engine._Step, "__init__", build_every_row)
    fresh = {
        name: Governor(**{f.name: getattr(g, f.name) for f in fields(Governor)})
        for name, g in GOVERNORS.items()
    }
    built = [decide(fresh[g], inst, event, at) for g, inst, event, at, _ in asked]
    for (g, inst, event, _at, _), want, got in zip(asked, answers, built, strict=True):
        assert got == want, (g, inst.state if inst else None, event)
