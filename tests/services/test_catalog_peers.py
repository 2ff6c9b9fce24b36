"""A catalog event sees the SKU's holders only when it can cascade to them, and reads them without a
parameter per holder (a popular SKU has more holders than a statement may carry parameters)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import event, select

from governors import may_cascade
from webapp.db import Database
from webapp.models import GovernorInstance
from webapp.services.transitions import Actor, EventRequest, fire_event

from .conftest import NOW

ADMIN = Actor("admin-1", "admin")


def test_only_the_catalog_rows_that_send_cascades_need_the_holders() -> None:
    assert may_cascade("catalog", "published", "deprecate")  # X36: sku_withdrawn to every holder
    assert may_cascade("catalog", "update_approved", "propagation_succeeded")  # X37: price_changed
    assert not may_cascade("catalog", "published", "compliance_check")  # the periodic timer
    assert not may_cascade("catalog", "published", "feature_request")


def test_deprecating_a_sku_reaches_every_holder_found_by_a_subquery(
    db: Database, make_customer: Callable[..., str]
) -> None:
    holders = [make_customer(f"c-{n}", active=True) for n in range(3)]
    with db.session() as s:
        sku = s.scalars(
            select(GovernorInstance).where(
                GovernorInstance.governor == "catalog", GovernorInstance.subject_id == "sku-core"
            )
        ).one()
    sent: list[Any] = []

    def note(_conn: Any, _cursor: Any, _sql: str, params: Any, _context: Any, _many: bool) -> None:
        values = (
            params.values()
            if isinstance(params, dict)
            else params
            if isinstance(params, list | tuple)
            else ()
        )
        sent.extend(v for v in values if isinstance(v, str))

    event.listen(db.engine, "before_cursor_execute", note)
    try:
        with db.session() as s:
            result = fire_event(
                s,
                EventRequest(
                    "platform",
                    "deprecate",
                    sku.id,
                    {
                        "replacement_sku": "sku-sso",
                        "sunset_note": "moving to v2",
                        "reason": "core v1 is retired",
                    },
                ),
                ADMIN,
                NOW,
                approved_by="admin-2",
            )
    finally:
        event.remove(db.engine, "before_cursor_execute", note)
    assert result.status == 200, result.body
    withdrawn = {
        d["instance_id"]
        for d in result.body["decisions"]
        if d["governor"] == "entitlement" and d["event"] == "sku_withdrawn" and d["status"] == "applied"
    }
    with db.session() as s:
        held = set(
            s.scalars(
                select(GovernorInstance.id).where(
                    GovernorInstance.governor == "entitlement",
                    GovernorInstance.subject_id == "sku-core",
                    GovernorInstance.customer_id.in_(holders),
                )
            )
        )
    assert held and withdrawn == held
    assert not set(sent) & set(holders), "the holders are found by a subquery, not sent one parameter each"


def test_a_holder_event_racing_a_catalog_cascade_waits_for_it_and_loses_nothing(
    db: Database, make_customer: Callable[..., str]
) -> None:
    """A catalog event locks the holders it plans for (their entitlements and subscriptions, in id
    order) with its load: a customer's lock, which suspends that same entitlement, waits until the
    catalog event has committed and then applies on top of it. Neither overwrites the other: the
    entitlement's version counts every transition it went through, and its state is the last one's."""
    import threading

    from sqlalchemy import func

    from webapp.audit import verify_tenant
    from webapp.models import TransitionRecord
    from webapp.services.facts import world_facts

    customer = make_customer("c-1", active=True)
    with db.session() as s:
        sku = s.scalars(
            select(GovernorInstance).where(
                GovernorInstance.governor == "catalog", GovernorInstance.subject_id == "sku-core"
            )
        ).one()
        entitlement = s.scalars(
            select(GovernorInstance).where(
                GovernorInstance.governor == "entitlement",
                GovernorInstance.customer_id == customer,
                GovernorInstance.subject_id == "sku-core",
            )
        ).one()
        account = s.scalars(
            select(GovernorInstance).where(
                GovernorInstance.governor == "customer_account", GovernorInstance.customer_id == customer
            )
        ).one()
        before = s.scalar(
            select(func.count())
            .select_from(TransitionRecord)
            .where(TransitionRecord.instance_id == entitlement.id)
        )
    results: list[Any] = []

    def lock_the_customer() -> None:
        with db.session() as other:
            results.append(
                fire_event(
                    other,
                    EventRequest(
                        "t-1",
                        "lock",
                        account.id,
                        {"reason_code": "manual", "reason": "customer reports an account takeover"},
                    ),
                    Actor("u-support", "support"),
                    NOW,
                    commit=True,
                )
            )

    racer = threading.Thread(target=lock_the_customer)

    def meanwhile(session: Any, snapshot: Any, target: Any, name: str) -> Any:
        if not racer.is_alive() and not results:
            racer.start()
            racer.join(1.0)
            assert racer.is_alive(), "the customer's lock went through a holder the catalog event had read"
        return world_facts(session, snapshot, target, name)

    with db.session() as s:
        deprecated = fire_event(
            s,
            EventRequest(
                "platform",
                "deprecate",
                sku.id,
                {"replacement_sku": "sku-sso", "sunset_note": "moving to v2", "reason": "core v1 is retired"},
            ),
            ADMIN,
            NOW,
            approved_by="admin-2",
            facts_hook=meanwhile,
        )
    racer.join(30)
    assert deprecated.status == 200, deprecated.body
    assert results and results[0].status == 200, results
    with db.session() as s:
        row = s.get(GovernorInstance, entitlement.id)
        history = list(
            s.scalars(
                select(TransitionRecord)
                .where(TransitionRecord.instance_id == entitlement.id)
                .order_by(TransitionRecord.id)
            )
        )
        assert verify_tenant(s, "t-1").ok
    went_through = len(history) - (before or 0)
    assert went_through >= 2, [(h.event, h.from_state, h.to_state) for h in history]  # withdrawn, suspended
    assert row is not None and row.version == entitlement.version + went_through
    assert row.state == history[-1].to_state
