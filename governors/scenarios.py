"""Event sequences that build realistic lifecycles, as data: used by the simulator, seeding and the demo.

Each step is (governor, event, role, payload); the executor (the in-memory ``World`` or the database
service) applies it through the one engine, so histories, timers and cascades are genuine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from governors.settings import Settings, default_settings


@dataclass(frozen=True)
class Step:
    """One event of a scenario; ``approved`` marks a four-eyes step that a second person approves."""

    governor: str
    event: str
    role: str = "sys"
    payload: Mapping[str, Any] = field(default_factory=dict)
    approved: bool = False


SKU_NAMES = {
    "sku-core": ("Core platform", 2999, "starter"),
    "sku-analytics": ("Analytics suite", 9999, "professional"),
    "sku-sso": ("Single sign-on", 19999, "enterprise"),
}


def catalog_skus(settings: Settings | None = None) -> list[str]:
    """Every SKU the subscription tiers grant (setting ``subscription.tier_skus``)."""
    settings = settings or default_settings()
    skus: set[str] = set()
    for listed in dict(settings["subscription.tier_skus"]).values():
        skus.update(listed)
    return sorted(skus)


def publish_sku(sku_id: str) -> Sequence[Step]:
    """Author a SKU and take it through validation and propagation to published (P01, P03, P04, P07)."""
    name, price, tier = SKU_NAMES.get(sku_id, (sku_id.replace("-", " ").title(), 4999, "professional"))
    reason = {"reason": "initial catalog set-up"}
    return (
        Step(
            "catalog",
            "create_draft",
            "admin",
            {
                **reason,
                "sku_id": sku_id,
                "name": name,
                "description": f"{name} for marketplace customers",
                "price_cents": price,
                "tier": tier,
                "features": [],
                "limits": {},
            },
        ),
        Step("catalog", "submit_for_review", "admin", {**reason, "expected_version": 1}, approved=True),
        Step("catalog", "validation_succeeded", "sys", {}),
        Step("catalog", "propagation_succeeded", "sys", {}),
    )


def onboard(provider_request_id: str) -> Sequence[Step]:
    """Email and profile confirmed, KYC passed by the provider (A02, A03 → X18 starts approvals)."""
    return (
        Step("customer_account", "email_verified"),
        Step("customer_account", "profile_completed"),
        Step(
            "customer_account",
            "kyc_passed",
            payload={"provider_request_id": provider_request_id, "provider_result": "passed"},
        ),
    )


APPROVE_ENTITLEMENT = Step("entitlement", "approve")
"""The approval service grants a pending entitlement (E02 → X04 allocates quota and tenant weight)."""


def signup(email: str, tier: str = "starter", cycle: str = "monthly") -> Sequence[Step]:
    """A customer signs up (A01: account, trial subscription, compliance record and what they cascade)."""
    return (Step("customer_account", "signup", "sys", {"email": email, "tier": tier, "cycle": cycle}),)
