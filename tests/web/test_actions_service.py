"""The one merge of manual actions over a person's roles (cards, forms, finance board, API)."""

from __future__ import annotations

from datetime import UTC, datetime

from governors import Facts, Instance
from webapp.services.actions import best_actions

NOW = datetime(2026, 3, 2, 9, tzinfo=UTC)


def _invoice() -> Instance:
    data = {
        "total_cents": 2999,
        "amount_cents": 2999,
        "paid_cents": 2999,
        "currency": "USD",
        "kind": "initial",
    }
    return Instance("billing", "bill-1", state="payment_received", state_seq=4, customer_id="c1", data=data)


def test_the_most_direct_role_wins_per_event() -> None:
    facts = Facts(now=NOW)
    alone = best_actions("billing", _invoice(), facts, ["support"])
    assert alone["issue_refund"][0].mode == "request" and alone["issue_refund"][1] == "support"
    both = best_actions("billing", _invoice(), facts, ["support", "finance"])
    action, role = both["issue_refund"]
    assert (action.mode, role, action.approvers) == ("four_eyes", "finance", ("finance", "manager"))


def test_a_disabled_action_names_every_role_the_person_holds() -> None:
    both = best_actions(
        "customer_account",
        Instance(
            "customer_account",
            "a1",
            state="locked",
            state_seq=2,
            customer_id="c1",
            data={"lock_reasons": ["manual"]},
        ),
        Facts(now=NOW),
        ["finance", "admin"],
    )
    unlock, _ = both["unlock"]
    assert not unlock.allowed
    assert unlock.reason.endswith("; you have admin, finance")
