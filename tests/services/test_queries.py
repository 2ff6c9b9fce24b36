"""Read-side queries of the cockpit against PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select

from webapp.db import Database
from webapp.models import GovernorInstance, TransitionRecord
from webapp.services.queries import RECENT_PATH, _recent_paths


def test_recent_paths_are_the_last_steps_of_each_instance_oldest_first(
    db: Database, make_customer: Callable[..., str]
) -> None:
    customer = make_customer(active=True)
    with db.session() as s:
        ids = list(s.scalars(select(GovernorInstance.id).where(GovernorInstance.customer_id == customer)))
        paths = _recent_paths(s, ids)
        for iid in ids:
            rows = s.execute(
                select(TransitionRecord.from_state, TransitionRecord.to_state)
                .where(TransitionRecord.instance_id == iid)
                .order_by(TransitionRecord.occurred_at, TransitionRecord.id)
            ).all()
            expected = [(a, b) for a, b in rows][-RECENT_PATH:]
            assert paths[iid] == expected
        account = next(i for i in ids if i.startswith("cust"))
        assert paths[account][-1] == ("onboarding", "active")
        assert _recent_paths(s, []) == {}


def test_history_choices_lists_each_governor_actor_and_event_once(
    db: Database, make_customer: Callable[..., str]
) -> None:
    from webapp.services.queries import history_choices

    customer = make_customer(active=True)
    with db.session() as s:
        rows = s.execute(
            select(TransitionRecord.governor, TransitionRecord.actor, TransitionRecord.event).where(
                TransitionRecord.customer_id == customer
            )
        ).all()
        choices = history_choices(s, customer)
    assert choices["governor"] == sorted({r[0] for r in rows})
    assert choices["actor"] == sorted({r[1] for r in rows})
    assert choices["event"] == sorted({r[2] for r in rows})
    assert "customer_account" in choices["governor"] and "kyc_passed" in choices["event"]
