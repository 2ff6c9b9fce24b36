"""What a signed-in person may do to one governor instance now, merged over all their roles.

The engine answers per role (``governors.manual_actions``); a person may hold several roles. Per
event the best role wins: allowed before disabled, then direct before four-eyes before request. The
cockpit cards, the action forms (which role a POST acts in), the finance board, bulk retry and the
JSON API all use these functions, so every surface offers, and the server accepts, the same thing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from governors import AllowedEvent, Facts, Instance, Settings, manual_actions
from governors.spec import STAFF_ROLES, frozen_map
from webapp.models import GovernorInstance
from webapp.services.facts import world_facts
from webapp.services.instances import to_instance

MODE_RANK = {"direct": 0, "four_eyes": 1, "request": 2}
"""Most direct first: a role that may act alone beats one that needs approval or may only request."""


def facts_for(
    snapshot: Mapping[str, Instance],
    instance: Instance,
    now: datetime,
    settings: Settings | None,
    session: Session,
    actor: str = "system",
    *,
    known: Mapping[str, Any] | None = None,
) -> Facts:
    """The facts the engine needs to judge actions on ``instance``: its peers and the world facts.

    ``known``: world facts the caller has already read (see ``world_facts``).
    """
    peers: dict[str, list[Instance]] = {}
    for other in snapshot.values():
        if other.id != instance.id and other.state is not None:
            peers.setdefault(other.governor, []).append(other)
    return Facts(
        now=now,
        actor=actor,
        peers=frozen_map({g: tuple(v) for g, v in peers.items()}),
        extra=frozen_map(world_facts(session, snapshot, instance, "", known=known)),
        settings=settings,
    )


def customer_snapshot(session: Session, row: GovernorInstance) -> dict[str, Instance]:
    """The instances of ``row``'s customer (just ``row`` for a global SKU), as the engine sees them."""
    if row.customer_id is None:
        return {row.id: to_instance(row)}
    rows = session.scalars(select(GovernorInstance).where(GovernorInstance.customer_id == row.customer_id))
    snapshot = {r.id: to_instance(r) for r in rows}
    snapshot.setdefault(row.id, to_instance(row))
    return snapshot


def best_actions(
    governor: str, instance: Instance, facts: Facts, roles: Iterable[str]
) -> dict[str, tuple[AllowedEvent, str]]:
    """Per event, (the action as the user's best role sees it, that role); disabled ones name all roles."""
    held = sorted({r for r in roles if r in STAFF_ROLES}) or sorted(set(roles))[:1] or ["auditor"]
    best: dict[str, tuple[AllowedEvent, str]] = {}
    for role in held:
        for action in manual_actions(governor, instance, facts, role):
            current = best.get(action.event)
            rank = (not action.allowed, MODE_RANK.get(action.mode, 3))
            if current is None or rank < (not current[0].allowed, MODE_RANK.get(current[0].mode, 3)):
                best[action.event] = (action, role)
    if len(held) > 1:
        have = ", ".join(held)
        for event, (action, role) in best.items():
            if not action.allowed and "; you have " in action.reason:
                reason = action.reason.rsplit("; you have ", 1)[0] + f"; you have {have}"
                best[event] = (replace(action, reason=reason), role)
    return best


def best_actions_for_row(
    session: Session, row: GovernorInstance, roles: Iterable[str], now: datetime, settings: Settings | None
) -> dict[str, tuple[AllowedEvent, str]]:
    """``best_actions`` for a database row (loads its customer's instances and the world facts)."""
    snapshot = customer_snapshot(session, row)
    instance = snapshot[row.id]
    return best_actions(row.governor, instance, facts_for(snapshot, instance, now, settings, session), roles)
