"""The engine's generic mechanics on a small hand-built governor (no spec data involved)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from governors import Decision, Facts, Instance, Rejection, apply, decide, plan
from governors.engine import allowed_events, manual_actions, timer_facts
from governors.facts import Context
from governors.registry import InvalidGovernor, validate
from governors.rules.base import GUARDS, guard, updater
from governors.settings import default_settings
from governors.spec import ANY, SAME, Cascade, FourEyes, Governor, Input, State, Timer, Transition, fx

NOW = datetime(2026, 1, 15, 12, tzinfo=UTC)
SETTINGS = default_settings().override({})


def _toy_settings() -> object:
    return SETTINGS


if "toy_no_holds" not in GUARDS:

    @guard("toy_no_holds", "lift every hold first")
    def toy_no_holds(ctx: Context) -> bool:
        return not ctx.data.get("holds")

    @guard("toy_has_holds", "there is no hold")
    def toy_has_holds(ctx: Context) -> bool:
        return bool(ctx.data.get("holds"))

    @guard("toy_big_amount", "amount is small")
    def toy_big_amount(ctx: Context) -> bool:
        return int(ctx.arg("amount")) > 100

    @guard("toy_timer_runs", "a freezing hold is present")
    def toy_timer_runs(ctx: Context) -> bool:
        return "freeze" not in ctx.data.get("holds", ())

    @updater("toy_add_hold")
    def toy_add_hold(ctx: Context) -> dict[str, object]:
        return {"holds": sorted({*ctx.data.get("holds", ()), ctx.arg("hold")})}

    @updater("toy_remove_hold")
    def toy_remove_hold(ctx: Context) -> dict[str, object]:
        return {"holds": sorted(set(ctx.data.get("holds", ())) - {ctx.arg("hold")})}


def T(*args: object, **kw: object) -> Transition:
    return Transition(*args, **kw)  # type: ignore[arg-type]


TOY = Governor(
    name="toy",
    title="Toy",
    description="a tiny governor for engine tests",
    instance_of="customer",
    states=(
        State("open", "open"),
        State(
            "held",
            "held",
            attention=True,
            timers=(
                Timer("expire", "expire", after="entitlement.suspension_timeout", when="toy_timer_runs"),
            ),
        ),
        State("closed", "closed", terminal=True),
    ),
    transitions=(
        T("T01", ("create",), (), "open", ("sys",)),
        T(
            "T02",
            ("hold",),
            ("open", "held"),
            "held",
            ("manager", "cascade"),
            updates=("toy_add_hold",),
            inputs=(Input("hold", "code", choices=("pay", "freeze")),),
        ),
        T(
            "T03",
            ("lift",),
            ("held",),
            "open",
            ("manager",),
            guards=("toy_no_holds",),
            updates=("toy_remove_hold",),
            inputs=(Input("hold", "code"),),
        ),
        T("T04", ("expire",), ("held",), "closed", ("timer",)),
        T(
            "T05",
            ("refund",),
            ("open",),
            SAME,
            ("finance",),
            requesters=("support",),
            four_eyes=FourEyes(("manager",), when="toy_big_amount"),
            inputs=(Input("amount", "cents", min=1),),
            effects=(fx("notify_customer", amount="$payload.amount"),),
        ),
        T("T06", ("close",), (ANY,), "closed", ("admin",)),
    ),
)


def facts(role: str = "sys", **payload: object) -> Facts:
    return Facts(now=NOW, role=role, actor="u1", payload=payload, settings=SETTINGS)


def staff(role: str, **payload: object) -> Facts:
    return facts(role, **{"reason": "customer called in", **payload})


def test_toy_definition_validates() -> None:
    validate(TOY)


def test_creation_and_unknown_event() -> None:
    out = decide(TOY, Instance("toy", "t1"), "create", facts())
    assert isinstance(out, Decision) and out.to_state == "open" and out.state_seq == 1
    assert decide(TOY, "open", "fly", facts()).code == "unknown_event"  # type: ignore[union-attr]
    assert decide(TOY, Instance("toy", "t1"), "hold", staff("manager", hold="pay")).code == "not_created"  # type: ignore[union-attr]


def test_invalid_transition_names_possible_events() -> None:
    out = decide(TOY, "open", "lift", staff("manager", hold="pay"))
    assert isinstance(out, Rejection) and out.code == "invalid_transition"
    assert "possible now" in out.message and "hold" in out.message


def test_terminal_state_absorbs() -> None:
    out = decide(TOY, "closed", "close", staff("admin"))
    assert isinstance(out, Rejection) and out.code == "terminal_state"


def test_role_not_allowed_says_who_may() -> None:
    out = decide(TOY, "open", "hold", staff("support", hold="pay"))
    assert isinstance(out, Rejection) and out.code == "role_not_allowed"
    assert out.message == "'hold' needs manager; you have support"


def test_staff_need_a_reason_and_valid_inputs() -> None:
    no_reason = decide(TOY, "open", "hold", facts("manager", hold="pay", reason="short"))
    assert isinstance(no_reason, Rejection) and no_reason.code == "invalid_input"
    assert no_reason.details["field"] == "reason"
    bad_choice = decide(TOY, "open", "hold", staff("manager", hold="vacation"))
    assert isinstance(bad_choice, Rejection) and bad_choice.details["field"] == "hold"
    assert "one of: pay, freeze" in bad_choice.message
    negative = decide(TOY, "open", "refund", staff("finance", amount=-5))
    assert isinstance(negative, Rejection) and negative.code == "invalid_input"
    float_money = decide(TOY, "open", "refund", staff("finance", amount=10.5))
    assert isinstance(float_money, Rejection) and "whole number of cents" in float_money.message


def test_guard_failure_gives_guard_message() -> None:
    held = Instance("toy", "t1", state="held", state_seq=2, data={"holds": ["pay", "freeze"]})
    out = decide(TOY, held, "lift", staff("manager", hold="pay"))
    assert (
        isinstance(out, Rejection) and out.code == "guard_failed" and out.message == "lift every hold first"
    )


def _held(holds: list[str]) -> Instance:
    created = decide(TOY, Instance("toy", "t1"), "create", facts())
    assert isinstance(created, Decision)
    inst = apply(Instance("toy", "t1"), created)
    for h in holds:
        d = decide(TOY, inst, "hold", staff("manager", hold=h))
        assert isinstance(d, Decision), d
        inst = apply(inst, d)
    return inst


def test_entering_a_state_arms_its_timer_keyed_by_state_seq() -> None:
    inst = _held(["pay"])
    timer = inst.timers["expire"]
    assert timer.state_seq == inst.state_seq == 2
    assert timer.due_at == NOW + timedelta(hours=72)


def test_freezing_hold_pauses_and_release_resumes_with_remaining_time() -> None:
    inst = _held(["pay"])
    later = NOW + timedelta(hours=10)
    d = decide(
        TOY, inst, "hold", Facts(now=later, role="manager", payload={"hold": "freeze", "reason": "x" * 10})
    )
    assert isinstance(d, Decision) and d.self_transition
    assert [op.op for op in d.timer_ops] == ["pause"]
    inst = apply(inst, d)
    assert inst.timers["expire"].paused and inst.timers["expire"].remaining == timedelta(hours=62)
    assert inst.state_seq == 2, "self-transitions keep state_seq"
    much_later = NOW + timedelta(days=30)
    # The hold set still contains "pay", so lifting "freeze" stays in held (guard fails -> rejection);
    # simulate E10-style lifting by updating data directly through another hold event is not possible,
    # so lift via a fresh instance that only has the freezing hold.
    only_freeze = _held(["freeze"])
    assert only_freeze.timers["expire"].paused
    assert only_freeze.timers["expire"].remaining == timedelta(hours=72), "armed paused with full duration"
    d2 = decide(
        TOY, inst, "hold", Facts(now=much_later, role="manager", payload={"hold": "pay", "reason": "x" * 10})
    )
    assert isinstance(d2, Decision) and d2.timer_ops == (), "still frozen: nothing to pause or resume"


def test_resume_restores_exact_remaining_time() -> None:
    gov = TOY
    inst = _held(["pay"])
    t1 = NOW + timedelta(hours=5)
    inst = apply(
        inst,
        decide(
            gov,
            inst,
            "hold",
            Facts(
                now=t1,
                role="manager",  # type: ignore[arg-type]
                payload={"hold": "freeze", "reason": "x" * 10},
            ),
        ),
    )
    # Remove the freezing hold through data (as an E10 row would) and re-evaluate with a self event.
    unfrozen = Instance(
        "toy", "t1", state="held", state_seq=inst.state_seq, data={"holds": ["pay"]}, timers=inst.timers
    )
    t2 = NOW + timedelta(days=3)
    d = decide(
        gov, unfrozen, "hold", Facts(now=t2, role="manager", payload={"hold": "pay", "reason": "x" * 10})
    )
    assert isinstance(d, Decision)
    assert [op.op for op in d.timer_ops] == ["resume"]
    assert d.timer_ops[0].timer.due_at == t2 + timedelta(hours=67)


def test_stale_timer_is_discarded() -> None:
    inst = _held(["pay"])
    timer = inst.timers["expire"]
    fresh = timer_facts(inst, timer, timer.due_at or NOW, SETTINGS)
    assert isinstance(decide(TOY, inst, "expire", fresh), Decision)
    moved = Instance("toy", "t1", state="held", state_seq=inst.state_seq + 2, data=inst.data)
    out = decide(TOY, moved, "expire", fresh)
    assert isinstance(out, Rejection) and out.code == "stale_timer"


def test_timer_events_cannot_be_sent_by_staff() -> None:
    out = decide(TOY, _held(["pay"]), "expire", staff("admin"))
    assert isinstance(out, Rejection) and out.code == "role_not_allowed"


def test_four_eyes_when_guard_and_requests() -> None:
    big = decide(TOY, "open", "refund", staff("finance", amount=500))
    assert isinstance(big, Decision) and big.needs_approval == FourEyes(("manager",), when="toy_big_amount")
    small = decide(TOY, "open", "refund", staff("finance", amount=50))
    assert isinstance(small, Decision) and small.needs_approval is None
    request = decide(TOY, "open", "refund", staff("support", amount=50))
    assert isinstance(request, Decision) and request.needs_approval == FourEyes(("finance",))
    approved = decide(
        TOY,
        "open",
        "refund",
        Facts(
            now=NOW,
            role="finance",
            payload={"amount": 500, "reason": "r" * 10},
            approved_by="u2",
            settings=SETTINGS,
        ),
    )
    assert isinstance(approved, Decision) and approved.needs_approval is None
    assert approved.effects[0].args == {"amount": 500}


def test_allowed_events_and_disabled_reasons() -> None:
    acts = {a.event: a for a in manual_actions(TOY, "open", facts(), "support")}
    assert (
        acts["refund"].allowed
        and acts["refund"].mode == "request"
        and acts["refund"].approvers == ("finance",)
    )
    assert not acts["hold"].allowed and acts["hold"].reason == "needs manager; you have support"
    assert not acts["close"].allowed and acts["close"].reason == "needs admin; you have support"
    assert {a.event for a in allowed_events(TOY, "open", facts(), "support")} == {"refund"}
    fin = {a.event: a for a in allowed_events(TOY, "open", facts(), "finance")}
    assert fin["refund"].mode == "four_eyes" and fin["refund"].approvers == ("manager",)


def test_decide_is_deterministic_and_does_not_mutate() -> None:
    inst = _held(["pay"])
    before = (inst.data, inst.timers)
    a = decide(TOY, inst, "hold", staff("manager", hold="freeze"))
    b = decide(TOY, inst, "hold", staff("manager", hold="freeze"))
    assert a == b
    assert (inst.data, inst.timers) == before


# ------------------------------------------------------------------ validation


def _bad(**changes: object) -> Governor:
    from dataclasses import replace

    return replace(TOY, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("transitions", "states", "message"),
    [
        ((T("T01", ("create",), (), "nowhere", ("sys",)),), None, "row T01: unknown target state 'nowhere'"),
        (
            (T("T01", ("create",), (), "open", ("sys",)), T("T02", ("x",), ("closed",), "open", ("sys",))),
            None,
            "row T02: exit from terminal state 'closed'",
        ),
        (
            (
                T("T01", ("create",), (), "open", ("sys",)),
                T("T02", ("x",), ("open",), "held", ("sys",)),
                T("T03", ("x",), ("open",), "closed", ("sys",)),
            ),
            None,
            "row T02: shares (open, x) with row T03 without a distinguishing guard",
        ),
        (
            (T("T01", ("create",), (), "open", ("sys",), guards=("no_such_guard",)),),
            None,
            "row T01: unknown guard 'no_such_guard'",
        ),
        (
            (T("T01", ("create",), (), "open", ("sys",), effects=(fx("teleport"),)),),
            None,
            "row T01: unknown effect 'teleport'",
        ),
        (
            (T("T01", ("create",), (), "open", ("sys",), updates=("nope",)),),
            None,
            "row T01: unknown updater 'nope'",
        ),
        ((T("T01", ("create",), (), "open", ("pirate",)),), None, "row T01: unknown role 'pirate'"),
        (
            (
                T("T01", ("create",), (), "open", ("sys",)),
                T("T04", ("expire",), ("held",), "closed", ("timer",)),
            ),
            None,
            "unreachable states ['closed', 'held']",
        ),
        (
            (
                T("T01", ("create",), (), "open", ("sys",)),
                T("T02", ("go",), ("open",), "held", ("sys",)),
                T("T03", ("end",), ("held",), "closed", ("sys",)),
            ),
            None,
            "timer expire: fires unknown event 'expire'",
        ),
        (
            (
                T("T01", ("create",), (), "open", ("sys",)),
                T("T02", ("go",), ("open",), "held", ("sys",)),
                T("T03", ("expire",), ("open",), "closed", ("timer",)),
                T("T05", ("end",), ("held",), "closed", ("sys",)),
            ),
            None,
            "timer expire: no row accepts timer event 'expire' in state 'held'",
        ),
    ],
)
def test_bad_definitions_fail_loudly(
    transitions: tuple[Transition, ...], states: object, message: str
) -> None:
    with pytest.raises(InvalidGovernor) as err:
        validate(_bad(transitions=transitions))
    assert message in str(err.value)


def test_event_titles_must_name_events_of_their_row() -> None:
    rows = tuple(
        replace(t, event_titles={"hold": "Hold it", "stop": "Stop"}) if t.id == "T02" else t
        for t in TOY.transitions
    )
    with pytest.raises(
        InvalidGovernor, match=r"T02: event_titles name events the row does not serve: \['stop'\]"
    ):
        validate(_bad(transitions=rows))


# ------------------------------------------------------------------ plan


def test_plan_on_real_governors_follows_cascades_in_order() -> None:
    """Locking an account cascades to the customer's entitlements and invoices (X12)."""
    from governors import GOVERNORS

    assert "customer_account" in GOVERNORS
    account = Instance("customer_account", "acct", state="active", state_seq=3, customer_id="c1", data={})
    ent = Instance(
        "entitlement",
        "ent",
        state="active",
        state_seq=2,
        customer_id="c1",
        subject_id="sku-core",
        data={"sku_id": "sku-core", "holds": []},
    )
    snapshot = {"acct": account, "ent": ent}
    p = plan(
        snapshot,
        "acct",
        "lock",
        staff("support", reason_code="compromised_account", reason="customer reports account takeover"),
    )
    assert p.root is not None and isinstance(p.root, Decision), p.root
    assert p.steps[0].outcome.to_state == "locked"  # type: ignore[union-attr]
    ent_steps = [s for s in p.steps if s.instance_id == "ent"]
    assert ent_steps and ent_steps[0].cascade == "X12" and ent_steps[0].cause == 0
    assert p.instances["ent"].state == "suspended"
    assert snapshot["ent"].state == "active", "plan applies nothing"


def test_plan_reports_cycles_and_must_failures() -> None:
    if "toy_ping" not in GUARDS:

        @guard("toy_ping", "never")
        def toy_ping(ctx: Context) -> bool:
            return True

    ping = Governor(
        name="pingpong",
        title="Ping",
        description="",
        instance_of="customer",
        states=(State("a", "a"), State("b", "b")),
        transitions=(
            T("P1", ("create",), (), "a", ("sys",)),
            T("P2", ("ping",), ("a", "b"), SAME, ("sys", "cascade")),
        ),
        cascades=(Cascade("X1", ("P2",), "pingpong", "ping", select="self"),),
    )
    from governors import engine

    inst = Instance("pingpong", "p", state="a", state_seq=1)
    orig = engine._governor
    engine._governor = lambda g: ping if g == "pingpong" else orig(g)  # type: ignore[assignment]
    try:
        p = plan({"p": inst}, "p", "ping", facts())
    finally:
        engine._governor = orig  # type: ignore[assignment]
    assert [s.status for s in p.steps] == ["applied", "cycle"]
    assert p.alerts and "cycle" in p.alerts[0] and not p.ok


def test_inputs_required_from_staff_only() -> None:
    from governors.spec import STAFF

    gov = _bad(
        transitions=(
            T("T01", ("create",), (), "open", ("sys",)),
            T(
                "T02",
                ("note",),
                ("open",),
                SAME,
                ("manager", "cascade"),
                inputs=(Input("note", "text", required=STAFF),),
            ),
            T("T06", ("close",), (ANY,), "closed", ("admin",)),
            T("T07", ("hold",), ("open",), "held", ("sys",)),
            T("T04", ("expire",), ("held",), "closed", ("timer",)),
        )
    )
    validate(gov)
    missing = decide(gov, "open", "note", staff("manager"))
    assert (
        isinstance(missing, Rejection)
        and missing.code == "invalid_input"
        and missing.details["field"] == "note"
    )
    assert isinstance(decide(gov, "open", "note", staff("manager", note="checked the file")), Decision)
    assert isinstance(decide(gov, "open", "note", facts("cascade")), Decision), "a cascade need not give it"
    with pytest.raises(InvalidGovernor, match="required='sometimes'"):
        validate(
            _bad(
                transitions=(
                    T("T01", ("create",), (), "open", ("sys",), inputs=(Input("x", required="sometimes"),)),
                )
            )
        )
