"""Demo data for ``marketplace demo``: a user for every role and a few hundred lived-in customers.

Nothing is written directly: every customer is signed up, onboarded and taken through a scenario by
firing real events through the one transition service, and simulated time moves forward by firing each
governor timer when it falls due (``fire_due_timers``), so histories, cascades, timers, approvals and
the audit chain are all genuine. Customers start on different days over the last ``days`` days and
the clock is then run up to ``now``; the result spans every common state of every governor, with
live timers still counting down.

Seeding happens once per database: ``seed_demo`` returns early when the demo tenants exist. The demo
users' generated passwords (and TOTP secrets, for the roles that approve or need a second factor) are
kept in ``<instance>/demo_users.json`` (mode 0600) so every start of ``marketplace demo`` can print
them again; this file exists for the demo only, never for a real deployment.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from governors import Instance, Settings
from webapp.adapters.payments import SandboxProcessor
from webapp.db import Database
from webapp.models import Customer, DueTimer, GovernorInstance, StaffUser, Tenant
from webapp.policy import ROLES
from webapp.services.facts import world_facts
from webapp.services.seed import outbox_watermark, settle_simulated_effects
from webapp.services.setup import activate_customer, ensure_catalog, ensure_tenant, signup_customer
from webapp.services.timers import fire_timer_row
from webapp.services.transitions import Actor, EventRequest, EventResult, TransitionError, fire_event

DEMO_TENANTS: Final = (
    ("demo-north", "Northwind Traders"),
    ("demo-acme", "Acme Cloud"),
    ("demo-globex", "Globex"),
)
"""Demo tenants; the first one's presence marks a seeded database."""

DEMO_EMAIL_DOMAIN: Final = "demo.example"
TOTP_ROLES: Final = frozenset({"finance", "manager", "admin", "compliance"})
"""Roles given a TOTP secret: admin and compliance must sign in with one; approvers need step-up."""

TIERS: Final = ("starter", "starter", "professional", "enterprise")
FIRST = (
    "Ada",
    "Grace",
    "Alan",
    "Edsger",
    "Barbara",
    "Donald",
    "Frances",
    "Ken",
    "Margaret",
    "Linus",
    "Radia",
)
LAST = (
    "Lovelace",
    "Hopper",
    "Turing",
    "Dijkstra",
    "Liskov",
    "Knuth",
    "Allen",
    "Thompson",
    "Hamilton",
    "Perlman",
)

SCENARIOS: Final = (
    "signed_up",
    "onboarding",
    "trial",
    "paid",
    "paid",
    "payment_failed",
    "locked",
    "abuse",
    "cancelled",
    "paused",
    "kyc_failed",
    "closed",
    "investigation",
    "invoice_open",
    "quota_warning",
    "quota_exceeded",
)
"""What happens to a customer after sign-up (cycled deterministically; timers add the rest)."""

SUPPORT = Actor("demo-support", "support")
FINANCE = Actor("demo-finance", "finance")
COMPLIANCE = Actor("demo-compliance", "compliance")
SYSTEM = Actor("system", "sys")


@dataclass
class DemoUser:
    """A demo account as printed at start-up."""

    role: str
    email: str
    password: str
    totp_secret: str | None = None


@dataclass
class SeedReport:
    """What ``seed_demo`` did."""

    seeded: bool
    customers: int = 0
    events: int = 0
    refused: int = 0
    timers_fired: int = 0
    users: list[DemoUser] = field(default_factory=list)


# --------------------------------------------------------------------------- users


def credentials_path(instance_dir: Path) -> Path:
    """Where the demo users' credentials are kept between runs."""
    return instance_dir / "demo_users.json"


def ensure_demo_users(db: Database, now: datetime, instance_dir: Path) -> list[DemoUser]:
    """A user for every role (created once); their credentials, read back on later runs."""
    from webapp.services import users as service

    path = credentials_path(instance_dir)
    stored: dict[str, dict[str, Any]] = json.loads(path.read_text()) if path.exists() else {}
    out: list[DemoUser] = []
    with db.session() as s:
        for role in ROLES:
            email = f"{role}@{DEMO_EMAIL_DOMAIN}"
            known = stored.get(role)
            user = service.find_user(s, email)
            if user is not None and known is not None:
                out.append(DemoUser(role, email, str(known["password"]), known.get("totp_secret")))
                continue
            password = service.generate_password()
            secret = service.new_totp_secret() if role in TOTP_ROLES else None
            if user is None:
                user = service.create_user(
                    s,
                    email,
                    [role],
                    password,
                    granted_by="demo-setup",
                    now=now,
                    display_name=f"Demo {role}",
                )
            else:
                service.set_password(s, user.id, password, now=now)
            user.totp_secret = secret
            out.append(DemoUser(role, email, password, secret))
    instance_dir.mkdir(parents=True, exist_ok=True)
    payload = {u.role: {"email": u.email, "password": u.password, "totp_secret": u.totp_secret} for u in out}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(payload, fh, indent=2)
    return out


# --------------------------------------------------------------------------- simulated time


def fire_due_timers(
    db: Database, until: datetime, settings: Settings | None = None, *, limit: int = 100_000
) -> int:
    """Fire every governor timer due at or before ``until``, in due order, each at its due instant.

    A timer the engine discards (its state was left since it was armed) is removed, so the loop
    always ends. Returns how many timers fired.
    """
    fired = 0
    while fired < limit:
        with db.session() as s:
            batch = s.scalars(
                select(DueTimer)
                .where(DueTimer.due_at.is_not(None), DueTimer.due_at <= until)
                .order_by(DueTimer.due_at, DueTimer.id)
                .limit(200)
            ).all()
        if not batch:
            return fired
        for timer in batch:
            assert timer.due_at is not None
            # The same path as the worker's sweep, at the timer's own (simulated) instant.
            fire = fire_timer_row(db, settings, timer.id, timer.due_at)
            fired += fire.outcome == "fired"
            if fire.outcome == "failed":
                with db.session() as s:  # never loop on a timer that cannot fire
                    s.execute(delete(DueTimer).where(DueTimer.id == timer.id))
    return fired


# --------------------------------------------------------------------------- scenarios


def _instance(session: Session, customer_id: str, governor: str) -> GovernorInstance | None:
    return session.scalars(
        select(GovernorInstance)
        .where(GovernorInstance.customer_id == customer_id, GovernorInstance.governor == governor)
        .order_by(GovernorInstance.created_at.desc(), GovernorInstance.id.desc())
    ).first()


def _with_payment_method(
    session: Session, snapshot: Mapping[str, Instance], target: Instance, event: str
) -> dict[str, Any]:
    """World facts plus a processor-validated payment method (the demo's customers all have one)."""
    return {**world_facts(session, snapshot, target, event), "payment_method_valid": True}


class Driver:
    """Fires one customer's scenario events through the service, counting what applied."""

    def __init__(self, db: Database, settings: Settings | None) -> None:
        self.db, self.settings = db, settings
        self.events = 0
        self.refused = 0
        self.timers = 0
        self.payments = 0

    def fire(
        self,
        tenant_id: str,
        customer_id: str,
        governor: str,
        event: str,
        actor: Actor,
        at: datetime,
        payload: Mapping[str, Any] | None = None,
        hook: Callable[..., Mapping[str, Any]] | None = None,
        instance_id: str | None = None,
    ) -> EventResult | None:
        """Fire ``event`` on the customer's newest ``governor`` instance (or ``instance_id``) at ``at``."""
        with self.db.session() as s:
            row = s.get(GovernorInstance, instance_id) if instance_id else _instance(s, customer_id, governor)
            if row is None:
                self.refused += 1
                return None
            body = dict(payload or {})
            if actor.is_staff:
                body.setdefault("reason", f"demo: {event.replace('_', ' ')} for this customer")
            try:
                result = fire_event(
                    s,
                    EventRequest(tenant_id=tenant_id, event=event, instance_id=row.id, payload=body),
                    actor,
                    at,
                    settings=self.settings,
                    facts_hook=hook or world_facts,
                )
            except TransitionError:
                self.refused += 1
                return None
        if result.status in (200, 202):
            self.events += 1
        else:
            self.refused += 1
        return result

    def state(self, customer_id: str, governor: str) -> GovernorInstance | None:
        """The customer's instance of ``governor`` now."""
        with self.db.session() as s:
            return _instance(s, customer_id, governor)


def buy_and_invoice(driver: Driver, tenant_id: str, customer_id: str, at: datetime) -> bool:
    """Convert the trial (a paid plan starts), let the invoice be generated and delivered."""
    sub = driver.state(customer_id, "subscription")
    if sub is None:
        return False
    tier = str((sub.data or {}).get("tier") or "starter")
    if tier not in ("starter", "professional"):
        tier = "professional"  # enterprise has no list price: a manager prices it after a tier change
    result = driver.fire(
        tenant_id,
        customer_id,
        "subscription",
        "purchase",
        SUPPORT,
        at,
        {"tier": tier, "cycle": "monthly"},
        hook=_with_payment_method,
    )
    if result is None or result.status != 200:
        return False
    driver.timers += fire_due_timers(driver.db, at + timedelta(seconds=1), driver.settings)
    delivered = driver.fire(
        tenant_id,
        customer_id,
        "billing",
        "invoice_delivered",
        SYSTEM,
        at + timedelta(minutes=5),
        {"confirmed": True},
    )
    return delivered is not None and delivered.status == 200


BANK_TRANSFER_EVERY: Final = 4
"""Every fourth payment is a bank transfer, which the card processor never reports: those invoices stay
on finance's unreconciled list (with the processor's reason) instead of reconciling by themselves."""


def pay_invoice(driver: Driver, tenant_id: str, customer_id: str, at: datetime) -> bool:
    """The open invoice is paid in full: a card charge at the sandbox processor (so the periodic
    reconciliation can match it), or now and then a bank transfer the processor never sees."""
    bill = driver.state(customer_id, "billing")
    if bill is None:
        return False
    data = bill.data or {}
    total = int(data.get("total_cents") or 0)
    driver.payments += 1
    if driver.payments % BANK_TRANSFER_EVERY == 0:
        payment_id = f"bank_{customer_id}_{bill.version}"
    else:
        charge = SandboxProcessor(driver.db, slow_seconds=0).charge(
            f"demo:{customer_id}:{bill.id}:{bill.version}",
            customer_id,
            total,
            str(data.get("currency") or "USD"),
            "tok_visa",
        )
        payment_id = charge.reference
    result = driver.fire(
        tenant_id,
        customer_id,
        "billing",
        "payment_received",
        SYSTEM,
        at,
        {"amount_cents": total, "payment_id": payment_id, "paid_at": at.isoformat()},
    )
    return result is not None and result.status == 200


def run_scenario(driver: Driver, scenario: str, tenant_id: str, customer_id: str, start: datetime) -> None:
    """Take a signed-up customer through ``scenario`` starting at ``start`` (best effort per step)."""
    fire = driver.fire
    hour = timedelta(hours=1)
    if scenario == "signed_up":
        return
    if scenario == "onboarding":
        fire(tenant_id, customer_id, "customer_account", "email_verified", SYSTEM, start + hour)
        return
    if scenario == "kyc_failed":
        fire(tenant_id, customer_id, "customer_account", "email_verified", SYSTEM, start + hour)
        fire(tenant_id, customer_id, "customer_account", "profile_completed", SYSTEM, start + 2 * hour)
        fire(
            tenant_id,
            customer_id,
            "customer_account",
            "kyc_failed",
            COMPLIANCE,
            start + 3 * hour,
            {"resubmission_allowed": True},
        )
        return
    with driver.db.session() as s:
        activate_customer(s, tenant_id, customer_id, now=start + hour, settings=driver.settings)
    driver.events += 4
    day = start + timedelta(days=1)
    if scenario == "trial":
        return
    if scenario in ("quota_warning", "quota_exceeded"):
        used = 85_000 if scenario == "quota_warning" else 120_000
        for k in range(3):  # the bands only change once a level has held for a few minutes
            moment = day + timedelta(minutes=6 * k)
            fire(
                tenant_id,
                customer_id,
                "quota_sla",
                "usage_sample",
                SYSTEM,
                moment,
                {"metrics": {"api_requests": used}, "sample_ts": moment.isoformat()},
            )
        return
    if scenario == "cancelled":
        fire(
            tenant_id,
            customer_id,
            "subscription",
            "cancel",
            SUPPORT,
            day,
            {"reason_code": "too_expensive", "churn_offer_outcome": "declined"},
        )
        return
    if scenario == "investigation":
        fire(
            tenant_id,
            customer_id,
            "compliance_audit",
            "violation_detected",
            COMPLIANCE,
            day,
            {"kind": "regulatory_concern", "description": "unusual transfer pattern flagged by monitoring"},
        )
        return
    if scenario == "locked":
        fire(
            tenant_id,
            customer_id,
            "customer_account",
            "lock",
            SUPPORT,
            day,
            {"reason_code": "compromised_account"},
        )
        return
    if scenario == "abuse":
        fire(
            tenant_id,
            customer_id,
            "customer_account",
            "abuse_report",
            SUPPORT,
            day,
            {"evidence": "spam sent from the account", "report_id": f"abuse-{customer_id}"},
        )
        return
    if scenario == "closed":
        fire(
            tenant_id,
            customer_id,
            "customer_account",
            "close_account",
            SUPPORT,
            day,
            {"customer_confirmation_ref": f"conf-{customer_id}"},
        )
        return
    if not buy_and_invoice(driver, tenant_id, customer_id, day):
        return
    pay_at = day + timedelta(hours=2)
    if scenario == "invoice_open":
        return
    if scenario == "payment_failed":
        fire(
            tenant_id,
            customer_id,
            "billing",
            "payment_declined",
            SYSTEM,
            pay_at,
            {"decline_code": "card_declined", "decline_message": "insufficient funds"},
        )
        return
    pay_invoice(driver, tenant_id, customer_id, pay_at)
    if scenario == "paused":
        fire(tenant_id, customer_id, "subscription", "pause", SUPPORT, pay_at + hour, {"days": 14})


def _name(rng: random.Random) -> str:
    return f"{rng.choice(FIRST)} {rng.choice(LAST)}"


def is_seeded(db: Database) -> bool:
    """True when the demo data is already there."""
    with db.session() as s:
        return s.get(Tenant, DEMO_TENANTS[0][0]) is not None


def seed_demo(
    db: Database,
    now: datetime,
    *,
    customers: int = 300,
    days: int = 60,
    seed: int = 7,
    settings: Settings | None = None,
    instance_dir: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> SeedReport:
    """Seed the demo once: users for every role, ``customers`` customers over ``days`` of simulated time.

    Returns early (``seeded=False``, the users still listed) when the demo tenants already exist.
    """
    say = progress or (lambda _m: None)
    users = ensure_demo_users(db, now, instance_dir) if instance_dir is not None else []
    if is_seeded(db):
        return SeedReport(False, users=users)
    rng = random.Random(seed)
    start = now - timedelta(days=days)
    above = outbox_watermark(db)
    with db.session() as s:
        for tenant_id, name in DEMO_TENANTS:
            ensure_tenant(s, tenant_id, start - timedelta(days=1), name)
        ensure_catalog(s, start - timedelta(days=1), settings)
    driver = Driver(db, settings)
    report = SeedReport(True, users=users)
    # Older customers arrive over the whole window (their timers play out: trials end, invoices age,
    # retention archives); a recent cohort, one per scenario at least, arrives in the last week so
    # onboarding, fresh trials and open invoices are on screen too.
    recent = min(customers, max(len(SCENARIOS), customers // 5))
    older = customers - recent
    recent_start = now - timedelta(days=min(6, days))
    for n in range(customers):
        if n < older:
            at = start + (recent_start - start) * (n / max(older, 1))
            scenario = SCENARIOS[n % len(SCENARIOS)]
        else:
            at = recent_start + (now - recent_start - timedelta(hours=6)) * ((n - older) / max(recent, 1))
            scenario = SCENARIOS[(n - older) % len(SCENARIOS)]
        report.timers_fired += fire_due_timers(db, at, settings)
        tenant_id = DEMO_TENANTS[n % len(DEMO_TENANTS)][0]
        customer_id = f"cus-{n + 1:05d}"
        name = _name(rng)
        with db.session() as s:
            signup_customer(
                s,
                tenant_id,
                customer_id,
                name=name,
                email=f"{name.lower().replace(' ', '.')}.{n + 1}@customers.example",
                tier=TIERS[n % len(TIERS)],
                now=at,
                settings=settings,
            )
        driver.events += 1
        run_scenario(driver, scenario, tenant_id, customer_id, at)
        report.customers += 1
        if (n + 1) % 50 == 0:
            say(f"  {n + 1} customers seeded")
    report.timers_fired += fire_due_timers(db, now, settings)
    settle_simulated_effects(db, above)  # the scenarios decided their outcomes; run only what comes next
    _recent_requests(driver, now)
    report.events, report.refused = driver.events, driver.refused
    report.timers_fired += driver.timers
    return report


def _recent_requests(driver: Driver, now: datetime) -> None:
    """A few fresh four-eyes requests (refunds asked by finance) so the approval queue is not empty."""
    with driver.db.session() as s:
        paid = s.execute(
            select(GovernorInstance.tenant_id, GovernorInstance.customer_id, GovernorInstance.id)
            .where(GovernorInstance.governor == "billing", GovernorInstance.state == "payment_received")
            .order_by(GovernorInstance.id)
            .limit(3)
        ).all()
    for tenant_id, customer_id, invoice_id in paid:
        if customer_id is None:
            continue
        driver.fire(
            tenant_id,
            customer_id,
            "billing",
            "issue_refund",
            FINANCE,
            now - timedelta(hours=1),
            {"amount_cents": 500, "reason_code": "duplicate_charge", "refund_id": f"rf-{customer_id}"},
            instance_id=invoice_id,
        )


def state_spread(db: Database) -> dict[str, dict[str, int]]:
    """How many instances each governor has in each state (the demo's coverage, for tests and the banner)."""
    with db.session() as s:
        rows = s.execute(
            select(GovernorInstance.governor, GovernorInstance.state, func.count()).group_by(
                GovernorInstance.governor, GovernorInstance.state
            )
        ).all()
    out: dict[str, dict[str, int]] = {}
    for governor, state, count in rows:
        out.setdefault(governor, {})[state] = int(count)
    return out


def demo_user_count(db: Database) -> int:
    """Demo staff accounts present."""
    with db.session() as s:
        return int(
            s.scalar(
                select(func.count())
                .select_from(StaffUser)
                .where(StaffUser.email.like(f"%@{DEMO_EMAIL_DOMAIN}"))
            )
            or 0
        )


def customer_count(db: Database) -> int:
    """Customers present."""
    with db.session() as s:
        return int(s.scalar(select(func.count()).select_from(Customer)) or 0)
