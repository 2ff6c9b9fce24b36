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
