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
