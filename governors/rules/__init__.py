"""Named guards, updaters and effects, one module per governor; importing this registers them all."""

from __future__ import annotations

from governors.rules import (  # noqa: F401  (imported for their registrations)
    billing,
    catalog,
    common,
    compliance_audit,
    customer_account,
    entitlement,
    multi_tenant,
    quota_sla,
    subscription,
)
from governors.rules.base import EFFECTS, GUARDS, UPDATERS, GuardSpec, declare_effects, guard, updater

__all__ = ["EFFECTS", "GUARDS", "UPDATERS", "GuardSpec", "declare_effects", "guard", "updater"]
