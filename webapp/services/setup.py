"""Tenants, the global SKU catalog and customer sign-up, built through the one transition service.

Everything here replays real events (``governors.scenarios``) so histories, timers and the audit
chain are genuine; nothing writes a state directly.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from governors import Settings
from governors.scenarios import APPROVE_ENTITLEMENT, Step, catalog_skus, onboard, publish_sku, signup
from webapp.models import Customer, GovernorInstance, Tenant
from webapp.services.transitions import Actor, EventRequest, EventResult, TransitionError, fire_event

PLATFORM_TENANT = "platform"
"""Owner of the global SKU catalog (Product Catalog instances belong to no customer)."""

SETUP_ADMIN = Actor("setup", "admin")


def ensure_tenant(
    session: Session, tenant_id: str, now: datetime, name: str | None = None, pool_id: str = "pool-1"
) -> Tenant:
    """The tenant, created if missing."""
    tenant = session.get(Tenant, tenant_id)
    if tenant is None:
        tenant = Tenant(id=tenant_id, name=name or tenant_id, pool_id=pool_id, created_at=now)
        session.add(tenant)
        session.flush()
    return tenant


def run_step(
    session: Session,
    step: Step,
    *,
    tenant_id: str,
    now: datetime,
    instance_id: str | None = None,
    customer_id: str | None = None,
    subject_id: str | None = None,
    settings: Settings | None = None,
    actor: Actor | None = None,
) -> EventResult:
    """Apply one scenario step through the service (four-eyes steps approved by a second person)."""
    who = actor or (SETUP_ADMIN if step.role != "sys" else Actor("system", "sys"))
    if who.role != step.role:
        who = Actor(who.id, step.role)
    result = fire_event(
        session,
        EventRequest(
            tenant_id=tenant_id,
            event=step.event,
            instance_id=instance_id,
            payload=dict(step.payload),
            governor=step.governor if instance_id is None else None,
            customer_id=customer_id,
            subject_id=subject_id,
        ),
        who,
        now,
        settings=settings,
        approved_by="setup-approver" if step.approved else None,
    )
    if result.status != 200:
        raise TransitionError(
            result.status, "setup_failed", f"{step.governor}.{step.event} was not applied: {result.body}"
        )
    return result


def ensure_catalog(session: Session, now: datetime, settings: Settings | None = None) -> list[str]:
    """Publish every SKU the tiers grant (once); returns the catalog instance ids."""
    ensure_tenant(session, PLATFORM_TENANT, now, "Marketplace platform")
    existing = {
        r.subject_id: r.id
        for r in session.scalars(select(GovernorInstance).where(GovernorInstance.governor == "catalog"))
    }
    ids: list[str] = []
    for sku in catalog_skus(settings):
        if sku in existing:
            ids.append(existing[sku])
            continue
        instance_id: str | None = None
        for step in publish_sku(sku):
            result = run_step(
                session,
                step,
                tenant_id=PLATFORM_TENANT,
                now=now,
                instance_id=instance_id,
                subject_id=sku,
                settings=settings,
            )
            instance_id = str(result.body["instance_id"])
        assert instance_id is not None
        ids.append(instance_id)
    return ids


def signup_customer(
    session: Session,
    tenant_id: str,
    customer_id: str,
    *,
    name: str,
    email: str,
    tier: str,
    now: datetime,
    settings: Settings | None = None,
) -> EventResult:
    """Create the customer row and run the sign-up (A01 and its cascades: trial, compliance, ...)."""
    session.add(
        Customer(id=customer_id, tenant_id=tenant_id, name=name, email=email, tier=tier, created_at=now)
    )
    session.flush()
    (step,) = signup(email, tier=tier)
    # The email is PII: the account governor does not need it, so it stays out of the event payload.
    payload = {k: v for k, v in step.payload.items() if k != "email"}
    return run_step(
        session,
        Step(step.governor, step.event, step.role, payload),
        tenant_id=tenant_id,
        now=now,
        customer_id=customer_id,
        settings=settings,
    )


def activate_customer(
    session: Session, tenant_id: str, customer_id: str, *, now: datetime, settings: Settings | None = None
) -> None:
    """Onboard a signed-up customer (email, profile, KYC passed) and approve their entitlements."""
    account = session.scalars(
        select(GovernorInstance).where(
            GovernorInstance.customer_id == customer_id, GovernorInstance.governor == "customer_account"
        )
    ).one()
    for step in onboard(f"kyc-{customer_id}"):
        run_step(session, step, tenant_id=tenant_id, now=now, instance_id=account.id, settings=settings)
    pending = session.scalars(
        select(GovernorInstance)
        .where(
            GovernorInstance.customer_id == customer_id,
            GovernorInstance.governor == "entitlement",
            GovernorInstance.state == "pending_approval",
        )
        .order_by(GovernorInstance.id)
    ).all()
    for ent in pending:
        run_step(
            session, APPROVE_ENTITLEMENT, tenant_id=tenant_id, now=now, instance_id=ent.id, settings=settings
        )
