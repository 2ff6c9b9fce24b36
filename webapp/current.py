"""The request's context for thin views: the runtime, the clock, and who is signed in.

Every blueprint used to carry its own copy of these five helpers; they live here once.
"""

from __future__ import annotations

from datetime import UTC, datetime

from flask_login import current_user  # type: ignore[import-untyped,unused-ignore]

from webapp.policy import ROLES
from webapp.runtime import Runtime


def rt() -> Runtime:
    """The current app's runtime (database, queue, settings)."""
    from webapp import runtime

    return runtime()


def now() -> datetime:
    """The wall clock, timezone-aware UTC."""
    return datetime.now(UTC)


def roles() -> list[str]:
    """The signed-in user's roles in the policy's order (empty when signed out)."""
    held = set(getattr(current_user, "roles", ()) or ())
    return [r for r in ROLES if r in held]


def tenants() -> list[str] | None:
    """Tenants the signed-in user may see (None: all; marketplace staff are not tenant-scoped)."""
    scoped = getattr(current_user, "tenant_ids", None)
    return None if scoped is None else list(scoped)


def who() -> tuple[str, str]:
    """(actor, role) as audit entries record them: the user id and their roles, comma-joined."""
    return str(current_user.id), ",".join(sorted(roles()))
