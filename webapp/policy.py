"""The one permission policy: role × capability, deny by default (CONSOLE.md §1.2, GOVERNORS.md §11).

Governor events are authorised by their definitions (who may trigger or request each row), read
through the engine's ``manual_actions``; everything else a person can do in the console is a named
capability below. Pages, the JSON API and the services all ask this module, so a button that is
shown disabled is also refused by the server (403) whatever the page showed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Final, TypeVar

ROLES: Final = ("support", "finance", "manager", "admin", "compliance", "auditor")
"""Console roles; ``auditor`` is compliance read-only (no execute rights)."""

EVERYONE: Final = frozenset(ROLES)

CAPABILITIES: Final[dict[str, frozenset[str]]] = {
    # Customer 360 and search (PII masked until revealed).
    "customer.view": EVERYONE,
    "customer.search": EVERYONE,
    "customer.reveal_pii": frozenset({"support", "finance", "manager", "compliance"}),
    "customer.history": EVERYONE,
    "customer.time_travel": EVERYONE,
    "customer.jobs": frozenset({"support", "finance", "manager", "admin", "compliance"}),
    # Governor events: the definition decides which role may trigger or request each event; this
    # capability only says who may open the action forms at all.
    "governor.act": frozenset({"support", "finance", "manager", "admin", "compliance"}),
    "governor.preview": frozenset({"support", "finance", "manager", "admin", "compliance"}),
    # Four-eyes queue.
    "approval.view": frozenset({"support", "finance", "manager", "admin", "compliance"}),
    "approval.decide": frozenset({"finance", "manager", "admin", "compliance"}),
    # Audit.
    "audit.view": frozenset({"manager", "admin", "compliance", "auditor"}),
    "audit.export": frozenset({"compliance"}),
    "audit.verify": frozenset({"admin", "compliance", "auditor"}),
    # Data-subject requests (CONSOLE.md §1.2: support may file a SAR, which starts its 30-day
    # clock; compliance exports it; erasure is 4E[CMP]) and legal holds.
    "compliance.sar": frozenset({"compliance"}),
    "compliance.sar_request": frozenset({"support", "compliance"}),
    "compliance.erasure": frozenset({"compliance"}),
    "compliance.legal_hold": frozenset({"compliance"}),
    # Administration.
    "users.manage": frozenset({"admin"}),
    "users.review": frozenset({"compliance", "auditor"}),
    "users.view": frozenset({"admin", "compliance", "auditor"}),
    "catalog.view": EVERYONE,
    "catalog.edit": frozenset({"admin"}),
    "settings.edit": frozenset({"admin"}),
    # Dashboards.
    "dashboard.ops": EVERYONE,
    "dashboard.finance": frozenset({"finance", "manager", "admin", "compliance", "auditor"}),
    "dashboard.compliance": frozenset({"manager", "admin", "compliance", "auditor"}),
    "jobs.monitor": frozenset({"admin"}),
    # Alerts panel (CONSOLE.md §2.3): everyone on the ops board sees it; anyone who can act may
    # acknowledge a page (auditors are read-only).
    "alerts.view": EVERYONE,
    "alerts.ack": frozenset({"support", "finance", "manager", "admin", "compliance"}),
    # Own account.
    "self.profile": EVERYONE,
}

INCOMPATIBLE_ROLES: Final = (frozenset({"admin", "compliance"}), frozenset({"admin", "auditor"}))
"""Separation of duties (CONSOLE.md §1.3): no user may hold both roles of a pair."""

F = TypeVar("F", bound=Callable[..., object])


class Forbidden(Exception):
    """The user's roles do not allow the capability; ``message`` says which role is needed."""

    def __init__(self, capability: str, message: str) -> None:
        super().__init__(message)
        self.capability = capability
        self.message = message


def allowed_roles(capability: str) -> frozenset[str]:
    """Roles holding ``capability`` (KeyError for an unknown capability: deny by default, loudly)."""
    return CAPABILITIES[capability]


def can(roles: Iterable[str], capability: str) -> bool:
    """True when any of ``roles`` holds ``capability``."""
    return bool(allowed_roles(capability) & set(roles))


def why_not(roles: Iterable[str], capability: str) -> str:
    """The reason shown next to a disabled control: "needs finance or manager; you have support"."""
    needed = " or ".join(r for r in ROLES if r in allowed_roles(capability))
    have = ", ".join(sorted(roles)) or "no role"
    return f"needs {needed}; you have {have}"


def require(roles: Iterable[str], capability: str) -> None:
    """Raise Forbidden unless ``roles`` hold ``capability``."""
    held = set(roles)
    if not can(held, capability):
        raise Forbidden(capability, why_not(held, capability))


def role_conflicts(roles: Iterable[str]) -> list[str]:
    """Separation-of-duties violations in a set of roles (empty when the combination is allowed)."""
    held = set(roles)
    return [" and ".join(sorted(pair)) for pair in INCOMPATIBLE_ROLES if pair <= held]


def permission(capability: str) -> Callable[[F], F]:
    """Mark a view with the capability it needs (checked by ``webapp.auth`` before the view runs)."""
    allowed_roles(capability)

    def mark(view: F) -> F:
        view.permission = capability  # type: ignore[attr-defined]
        return view

    return mark


def public(view: F) -> F:
    """Mark a view that needs no sign-in (sign-in page, health, metrics, static)."""
    view.permission = None  # type: ignore[attr-defined]
    return view
