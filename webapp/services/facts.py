"""Outside-world facts the governors' guards read (``ctx.fact``), looked up for one event.

The engine never queries anything; the service calls ``world_facts`` before planning and passes
the result in ``Facts.extra``. Each fact is documented by the guard that reads it (grep
``ctx.fact(`` in governors/rules). Facts the console cannot know yet (processor reconciliation
records, feature registry) are left out, so their guards fall back to their documented defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import ColumnElement, Exists, func, select
from sqlalchemy.orm import Session

from governors import Instance
from webapp.models import GovernorInstance, LegalHold


def world_facts(
    session: Session,
    snapshot: Mapping[str, Instance],
    target: Instance,
    event: str,
    *,
    legal_hold: bool | None = None,
) -> dict[str, Any]:
    """Facts for ``event`` on ``target``: SKU holder counts and states for the catalog, legal holds, ...

    ``legal_hold``: pass it when already read for the customer (``legal_hold_exists``), so a page
    judging all of a customer's cards does not ask once per card.
    """
    hold = _on_hold(session, target.customer_id) if legal_hold is None else legal_hold
    facts: dict[str, Any] = {"legal_hold": hold}
    catalog = [i for i in snapshot.values() if i.governor == "catalog" and i.state is not None]
    facts["sku_states"] = {str(i.data.get("sku_id") or i.subject_id): i.state for i in catalog}
    if target.governor == "catalog":
        sku = str(target.data.get("sku_id") or target.subject_id or "")
        facts["sku_active_entitlements"] = session.scalar(
            select(func.count())
            .select_from(GovernorInstance)
            .where(
                GovernorInstance.governor == "entitlement",
                GovernorInstance.subject_id == sku,
                GovernorInstance.state != "archived",
            )
        )
        replacement = target.data.get("replacement_sku")
        if isinstance(replacement, str):
            facts["replacement_sku_state"] = facts["sku_states"].get(replacement)
    return facts


def _on_hold(session: Session, customer_id: str | None) -> bool:
    """True while a legal hold stands on the customer's data (guards of erasure and retention)."""
    if customer_id is None:
        return False
    return bool(session.scalar(select(legal_hold_exists(customer_id))))


def legal_hold_exists(customer_id: str | ColumnElement[str]) -> Exists:
    """EXISTS a standing legal hold on the customer's data (to read along with other columns).

    ``customer_id`` may be a bound parameter, for a statement built once and run for many customers.
    """
    return (
        select(LegalHold.id)
        .where(LegalHold.customer_id == customer_id, LegalHold.released_at.is_(None))
        .exists()
    )
