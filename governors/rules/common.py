"""Guards and effects shared by several governors."""

from __future__ import annotations

from governors.facts import Context
from governors.rules.base import declare_effects, guard

declare_effects(
    notify_customer="Send the customer a notice (template named in args)",
    notify_staff="Alert a staff queue (queue named in args)",
    audit_note="Write an extra audit entry (beyond the transition's own)",
)


@guard("is_cascade_or_system", "only the system may send this event")
def is_cascade_or_system(ctx: Context) -> bool:
    """True when a pseudo-role (system, timer or cascade) triggered the event."""
    return ctx.facts.role in ("sys", "timer", "cascade")
