"""The eight governor definitions, one data module each (GOVERNORS.md §1–§8).

Each module exposes ``GOVERNOR`` (a ``governors.spec.Governor``) and ``SETTINGS`` (its defaults,
keys prefixed with the governor's name).
"""

from __future__ import annotations

from types import ModuleType

from governors.definitions import (
    billing,
    catalog,
    compliance_audit,
    customer_account,
    entitlement,
    multi_tenant,
    quota_sla,
    subscription,
)

ALL: tuple[ModuleType, ...] = (
    entitlement,
    billing,
    catalog,
    subscription,
    customer_account,
    quota_sla,
    compliance_audit,
    multi_tenant,
)
