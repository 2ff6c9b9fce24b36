"""Outside-world facts the governors' guards read (``ctx.fact``), looked up for one event.

The engine never queries anything; the service calls ``world_facts`` before planning and passes
the result in ``Facts.extra``. Each fact is documented by the guard that reads it (grep
``ctx.fact(`` in governors/rules). The billing reconciliation facts come from the imported processor
settlement lines (``webapp.services.reconciliation``); facts the console cannot know yet (feature
registry) are left out, so their guards fall back to their documented defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import ColumnElement, Exists, ScalarSelect, SQLColumnExpression, func, select, text
from sqlalchemy.orm import Session, aliased

from governors import Instance
from webapp.models import GovernorInstance, LegalHold
from webapp.models.governance import SKU_HOLDER_ROWS
from webapp.services.reconciliation import reconciliation_facts


def world_facts(
    session: Session,
    snapshot: Mapping[str, Instance],
    target: Instance,
    event: str,
    *,
    known: Mapping[str, Any] | None = None,
    payload: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Facts for ``event`` on ``target``: SKU holder counts and states for the catalog, legal holds, ...

    ``known``: facts the caller has already read with its own query (``legal_hold`` from
    ``legal_hold_exists``, ``sku_active_entitlements`` from ``active_entitlements``), so a page judging
    all of a customer's cards does not ask once per card; the others are looked up here.
    ``payload``: the event's payload, for facts about what it names (B08's ``processor_proof_ref``);
    the transition service passes the request's payload.
    """
    known = known or {}
    hold = known["legal_hold"] if "legal_hold" in known else _on_hold(session, target.customer_id)
    facts: dict[str, Any] = {"legal_hold": hold}
    catalog = [i for i in snapshot.values() if i.governor == "catalog" and i.state is not None]
    facts["sku_states"] = {str(i.data.get("sku_id") or i.subject_id): i.state for i in catalog}
    if target.governor == "catalog":
        sku = str(target.data.get("sku_id") or target.subject_id or "")
        if "sku_active_entitlements" in known:
            facts["sku_active_entitlements"] = known["sku_active_entitlements"]
        else:
            facts["sku_active_entitlements"] = session.scalar(select(active_entitlements(sku)))
        replacement = target.data.get("replacement_sku")
        if isinstance(replacement, str):
            facts["replacement_sku_state"] = facts["sku_states"].get(replacement)
    if target.governor == "billing" and event == "accounting_reconciled":
        facts.update(reconciliation_facts(session, target, payload))
    return facts


def _on_hold(session: Session, customer_id: str | None) -> bool:
    """True while a legal hold stands on the customer's data (guards of erasure and retention)."""
    if customer_id is None:
        return False
    return bool(session.scalar(select(legal_hold_exists(customer_id))))


def active_entitlements(sku: str | SQLColumnExpression[Any]) -> ScalarSelect[int]:
    """How many entitlements, of any customer, hold ``sku`` and are not archived (a scalar subquery).

    ``sku`` may be a column of the enclosing query (such as a catalog row's ``subject_id``).
    """
    holders = aliased(GovernorInstance, name="holders")
    # The partial index's predicate as literal SQL (qualified by the alias), so the planner uses the
    # index whatever the driver does with parameters; only the SKU is a parameter.
    live = text(SKU_HOLDER_ROWS.replace("governor", "holders.governor").replace("state", "holders.state"))
    return select(func.count()).select_from(holders).where(live, holders.subject_id == sku).scalar_subquery()


def legal_hold_exists(customer_id: str | ColumnElement[str]) -> Exists:
    """EXISTS a standing legal hold on the customer's data (to read along with other columns).

    ``customer_id`` may be a bound parameter, for a statement built once and run for many customers.
    """
    return (
        select(LegalHold.id)
        .where(LegalHold.customer_id == customer_id, LegalHold.released_at.is_(None))
        .exists()
    )
