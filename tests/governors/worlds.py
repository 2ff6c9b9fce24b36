"""Ready-made in-memory worlds for tests: published SKUs plus one signed-up customer."""

from __future__ import annotations

from datetime import datetime

from governors.scenarios import Step, catalog_skus, publish_sku, signup
from governors.simulate import World


def run(world: World, step: Step, instance_id: str | None) -> str:
    """Apply one scenario step; returns the instance id it applied to (asserting it applied)."""
    approved = "second-approver" if step.approved else None
    if instance_id is None:
        result = world.create(
            step.governor, step.event, role=step.role, subject_id=step.payload.get("sku_id"), **step.payload
        )
        assert result.root is not None and result.root.ok, result.root
        return sorted(i for i in world.instances if i.startswith(step.governor))[-1]
    result = world.fire(instance_id, step.event, role=step.role, approved_by=approved, **step.payload)
    assert result.root is not None and result.root.ok, result.root
    return instance_id


def customer_world(start: datetime, tier: str = "starter") -> World:
    """A world with every tier SKU published and one customer signed up."""
    world = World(now=start)
    for sku in catalog_skus(world.settings):
        inst: str | None = None
        for step in publish_sku(sku):
            inst = run(world, step, inst)
    for step in signup("customer@example.test", tier=tier):
        run(world, step, None)
    return world
