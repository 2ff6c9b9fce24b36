"""Deterministic bulk data: customers whose whole lives are replayed through the one transition service.

Nothing here writes a state. Each customer gets a life over simulated time (signup, onboarding,
entitlement approvals, a purchase, invoices paid or declined, usage samples, staff actions, fraud
alerts, closures) and every step is a real event through ``fire_event``; every governor timer that
falls due on the way fires through the service too, in due order, as the timer sweep would. So the
histories, snapshots, due timers, outbox rows, approvals and audit chains are the genuine article.

Determinism: a customer's life depends only on (seed, its index) and the end instant, so the same
``--seed`` gives the same states (instance ids and event ids are random, as in production). The
engine is asked first (``plan`` on the customer's instances as the service will see them), so the
life only sends events the governors accept; the service still decides.

Speed: one session, many customers per transaction (a savepoint per customer), and customers are
spread over worker processes by tenant (each tenant's audit chain is appended by one process only,
so chains stay in a deterministic order and appends never wait on each other). On PostgreSQL the
service is given a ``BulkStore`` (``webapp.services.seed_store``): the customer being built is
served from memory and its rows are written in one statement when its life is over, instead of
several round trips per event. The lives, rows and chains are the same either way
(``SeedOptions.bulk=False`` writes event by event; a test compares the two).
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from random import Random
from typing import Any

from sqlalchemy import delete, event, func, select, text, update
from sqlalchemy.orm import Session

from governors import GOVERNORS, Decision, Facts, Instance, Settings, default_settings, plan
from governors.scenarios import onboard
from governors.simulate import sample_input
from governors.spec import ANY, STAFF_ROLES, frozen_map
from webapp.db import Database
from webapp.models import Customer, DueTimer, GovernorInstance, OutboxMessage
from webapp.services.instances import to_instance
from webapp.services.seed_store import BulkStore
from webapp.services.setup import PLATFORM_TENANT, ensure_catalog, ensure_tenant
from webapp.services.transitions import Actor, EventRequest, EventResult, fire_event

SYSTEM = Actor("system", "sys")
TIMER = Actor("system", "timer")
STAFF = {role: Actor(f"seed-{role}", role) for role in STAFF_ROLES}
APPROVER = {role: f"seed-{role}-2" for role in STAFF_ROLES}
"""Four-eyes steps are approved by a second, different member of staff."""

TIERS = (("starter", 50), ("professional", 35), ("enterprise", 15))
PERSONAS = (
    ("regular", 70),
    ("abandons", 7),
    ("kyc_fails", 4),
    ("fraudster", 4),
    ("bad_payer", 10),
    ("heavy", 5),
)
FIRST = ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Margaret", "Niklaus")
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
    "Wirth",
)


@dataclass(frozen=True)
class SeedOptions:
    """What to build: ``customers`` spread round-robin over ``tenants``, lives over the last ``days``."""

    customers: int
    tenants: int = 4
    days: int = 30
    seed: int = 1
    end: datetime | None = None
    batch: int = 25
    workers: int = 1
    bulk: bool = True
    """On PostgreSQL, write each life's rows once per customer (``BulkStore``); False writes every
    event as it is applied, as the console does (same lives, same rows; for comparison)."""

    def end_at(self) -> datetime:
        """The simulated "now" every life runs up to (default: today, 00:00 UTC)."""
        if self.end is not None:
            return self.end.astimezone(UTC)
        today = datetime.now(UTC)
        return datetime(today.year, today.month, today.day, tzinfo=UTC)


@dataclass
class SeedReport:
    """What a seed run did."""

    created: int = 0
    skipped: int = 0
    events: int = 0
    transitions: int = 0
    timers_fired: int = 0
    timers_discarded: int = 0
    approvals_pending: int = 0
    rejected: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    states: dict[str, Counter[str]] = field(default_factory=dict)

    def merge(self, other: SeedReport) -> None:
        """Add another worker's report to this one."""
        for name in ("created", "skipped", "events", "transitions", "timers_fired", "timers_discarded"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.approvals_pending += other.approvals_pending
        self.rejected += other.rejected
        self.failed += other.failed
        self.errors.extend(other.errors)
        for governor, counts in other.states.items():
            self.states.setdefault(governor, Counter()).update(counts)

    def as_json(self) -> dict[str, Any]:
        """A JSON summary (counts, seconds, customers per second, states per governor)."""
        return {
            "created": self.created,
            "skipped": self.skipped,
            "events": self.events,
            "transitions": self.transitions,
            "timers_fired": self.timers_fired,
            "timers_discarded": self.timers_discarded,
            "approvals_pending": self.approvals_pending,
            "rejected": self.rejected,
            "failed": self.failed,
            "seconds": round(self.seconds, 2),
            "customers_per_second": round(self.created / self.seconds, 2) if self.seconds else None,
            "states": {g: dict(sorted(c.items())) for g, c in sorted(self.states.items())},
        }


def customer_id(seed: int, index: int) -> str:
    """The id of the seed's ``index``-th customer."""
    return f"cus-{seed}-{index:06d}"


def tenant_id(number: int) -> str:
    """The id of the ``number``-th seeded tenant (from 1)."""
    return f"tenant-{number:02d}"


# --------------------------------------------------------------------------- one customer's life


class Life:
    """One customer's life, driven through the service inside the caller's transaction."""

    def __init__(
        self,
        session: Session,
        *,
        tenant: str,
        customer: str | None,
        index: int,
        rng: Random,
        catalog: Mapping[str, Instance],
        settings: Settings,
        report: SeedReport,
        store: BulkStore | None = None,
    ) -> None:
        self.session, self.tenant, self.customer, self.index = session, tenant, customer, index
        self.store = store
        self.rng, self.catalog, self.settings, self.report = rng, catalog, settings, report
        self.now = datetime.min.replace(tzinfo=UTC)
        self.mine: dict[str, Instance] = {}
        self.discarded: set[tuple[str, str, int]] = set()
        self.counter = 0

    # ----------------------------------------------------------------- the customer's instances

    def of(self, governor: str) -> list[Instance]:
        """The customer's instances of a governor, in the order they were created.

        Instance ids are random, so nothing here orders by id: ``mine`` keeps first-seen order,
        which follows the (deterministic) order of the plans' decisions.
        """
        return [i for i in self.mine.values() if i.governor == governor]

    def one(self, governor: str) -> Instance | None:
        """The customer's (first) instance of a governor."""
        found = self.of(governor)
        return found[0] if found else None

    def _refresh(self, result: EventResult) -> None:
        """Take the instances the event changed or created as stored (from the bulk store, or the
        session)."""
        for step in result.body.get("decisions", ()):
            if step.get("status") != "applied":
                continue
            iid = step["instance_id"]
            if self.store is not None:
                found = self.store.instance(iid)
                if found is not None and found.customer_id == self.customer:
                    self.mine[iid] = found
                continue
            row = self.session.get(GovernorInstance, iid)
            if row is not None and row.customer_id == self.customer:
                self.mine[row.id] = to_instance(row)

    def fire(
        self,
        req: EventRequest,
        actor: Actor,
        *,
        hook: bool = True,
        approved_by: str | None = None,
    ) -> EventResult:
        """``fire_event`` at the life's clock, through the life's store."""
        return fire_event(
            self.session,
            req,
            actor,
            self.now,
            settings=self.settings,
            facts_hook=self._facts_hook if hook else None,
            approved_by=approved_by,
            store=self.store,
        )

    def _sandbox(self) -> dict[str, Any]:
        """Outside-world facts as the processors' sandboxes answer (a card validates on the spot)."""
        return {
            "payment_method_validated_at": self.now,
            "address_validated": True,
            "identity_verified": True,
            "processor_record_matches": True,
        }

    def _facts_hook(self, _s: Session, _snap: Any, _target: Any, _event: str) -> Mapping[str, Any]:
        return self._sandbox()

    # ----------------------------------------------------------------- events

    def would_apply(
        self, inst: Instance, event: str, actor: Actor, payload: Mapping[str, Any]
    ) -> Decision | None:
        """The root decision if the engine would apply the event now (None when it would refuse).

        Asked without an approver, so a four-eyes step comes back with ``needs_approval`` set.
        """
        facts = Facts(
            now=self.now,
            role=actor.role,
            actor=actor.id,
            payload=frozen_map(payload),
            extra=frozen_map(self._sandbox()),
            settings=self.settings,
        )
        snapshot = {**self.catalog, **self.mine}
        root = plan(snapshot, inst.id, event, facts).root
        return root if isinstance(root, Decision) else None

    def send(
        self,
        inst: Instance | None,
        event: str,
        actor: Actor = SYSTEM,
        payload: Mapping[str, Any] | None = None,
        *,
        leave_pending: bool = False,
    ) -> bool:
        """Send an event if the engine accepts it; four-eyes steps are approved unless ``leave_pending``."""
        if inst is None:
            return False
        body = dict(payload or {})
        if actor.role in STAFF_ROLES:
            body.setdefault("reason", f"seeded {event.replace('_', ' ')} for this customer")
        decision = self.would_apply(inst, event, actor, body)
        if decision is None:
            return False
        four_eyes = decision.needs_approval is not None
        approved_by = None if leave_pending or not four_eyes else APPROVER.get(actor.role, "seed-approver")
        result = self.fire(EventRequest(self.tenant, event, inst.id, body), actor, approved_by=approved_by)
        return self._count(result)

    def _count(self, result: EventResult) -> bool:
        if result.status == 200:
            self.report.events += 1
            self.report.transitions += sum(
                1 for d in result.body["decisions"] if d.get("status") == "applied"
            )
            self._refresh(result)
            return True
        if result.status == 202:
            self.report.approvals_pending += 1
            return True
        self.report.rejected += 1
        return False

    def signup(self, tier: str) -> None:
        """The customer row and the sign-up event (A01 and its cascades)."""
        first, last = FIRST[self.index % len(FIRST)], LAST[(self.index // len(FIRST)) % len(LAST)]
        self.session.add(
            Customer(
                id=self.customer,
                tenant_id=self.tenant,
                name=f"{first} {last}",
                email=f"{first}.{last}.{self.index}@example.test".lower(),
                tier=tier,
                created_at=self.now,
            )
        )
        self.session.flush()
        result = self.fire(
            EventRequest(
                self.tenant,
                "signup",
                governor="customer_account",
                customer_id=self.customer,
                payload={"tier": tier, "cycle": "monthly"},
            ),
            SYSTEM,
            hook=False,
        )
        if result.status != 200:
            raise RuntimeError(f"signup of {self.customer} was refused: {result.body}")
        self._count(result)

    # ----------------------------------------------------------------- time

    def _fraud_score_answer(self, account_id: str) -> None:
        """What the scoring job (``account_request_fraud_score``) feeds back after a due fraud check."""
        result = self.fire(
            EventRequest(self.tenant, "fraud_check", account_id, {"score": self.rng.choice((5, 12, 20, 35))}),
            SYSTEM,
        )
        if result.status == 200:
            self._count(result)

    def advance(self, until: datetime) -> None:
        """Move the clock to ``until``, firing every timer that falls due on the way, in due order."""
        for _ in range(500):
            due = self._next_due(until)
            if due is None:
                break
            at, inst, name = due
            self.now = max(self.now, at)
            timer = inst.timers[name]
            payload = dict(timer.payload)
            result = self.fire(
                EventRequest(
                    self.tenant,
                    timer.event,
                    inst.id,
                    payload,
                    timer=name,
                    timer_seq=timer.state_seq,
                    timer_due=timer.due_at,
                ),
                TIMER,
            )
            if result.status == 200:
                self.report.timers_fired += 1
                self._count(result)
                if timer.event == "fraud_check_due":
                    self._fraud_score_answer(inst.id)
            else:
                # A timer the engine refuses is discarded, as the sweep does with stale timers.
                self.report.timers_discarded += 1
                self.discarded.add((inst.id, name, timer.state_seq))
                if self.store is not None:
                    self.store.sync(self.session)  # the timer's row may still be in the buffer
                self.session.execute(
                    delete(DueTimer).where(DueTimer.instance_id == inst.id, DueTimer.name == name)
                )
        self.now = max(self.now, until)

    def _next_due(self, until: datetime) -> tuple[datetime, Instance, str] | None:
        """The next running timer due by ``until`` (ties: creation order, then timer name)."""
        best: tuple[datetime, int, str] | None = None
        found: Instance | None = None
        for order, inst in enumerate(self.mine.values()):
            for name, t in inst.timers.items():
                if t.due_at is None or t.due_at > until or (inst.id, name, t.state_seq) in self.discarded:
                    continue
                key = (t.due_at, order, name)
                if best is None or key < best:
                    best, found = key, inst
        if best is None or found is None:
            return None
        return best[0], found, best[2]

    def wait(self, low: timedelta, high: timedelta, end: datetime) -> bool:
        """Let a random time in [low, high] pass (timers fire); False once the end is reached."""
        span = (high - low).total_seconds()
        target = min(end, self.now + low + timedelta(seconds=int(self.rng.random() * span)))
        self.advance(target)
        return self.now < end

    def token(self, prefix: str) -> str:
        """A unique, deterministic reference (payment ids, report ids)."""
        self.counter += 1
        return f"{prefix}-{self.customer}-{self.counter}"


# --------------------------------------------------------------------------- the scripts of a life


def _weighted(rng: Random, options: Iterable[tuple[str, int]]) -> str:
    items = list(options)
    total = sum(w for _, w in items)
    pick = rng.random() * total
    for name, weight in items:
        pick -= weight
        if pick < 0:
            return name
    return items[-1][0]


def live(life: Life, start: datetime, end: datetime) -> None:
    """A whole life from sign-up at ``start`` to ``end``."""
    rng = life.rng
    life.now = start
    tier = _weighted(rng, TIERS)
    life.signup(tier)
    persona = _weighted(
        rng,
        (
            ("regular", 70),
            ("abandons", 7),
            ("kyc_fails", 4),
            ("fraudster", 4),
            ("bad_payer", 10),
            ("heavy", 5),
        ),
    )
    if persona == "abandons":
        life.advance(end)
        return
    life.wait(timedelta(minutes=5), timedelta(hours=6), end)
    account = life.one("customer_account")
    if persona == "kyc_fails":
        life.send(account, "email_verified")
        life.send(account, "kyc_failed", payload={"resubmission_allowed": rng.random() < 0.5})
        life.advance(end)
        return
    if persona == "fraudster" and rng.random() < 0.5:
        life.send(account, "fraud_detected", payload={"score": rng.randint(91, 99)})
        _staff_loop(life, end, persona)
        return
    for step in onboard(life.token("kyc")):
        life.send(life.one("customer_account"), step.event, SYSTEM, step.payload)
    if rng.random() < 0.9:
        for ent in life.of("entitlement"):
            if ent.state == "pending_approval":
                life.send(ent, "approve")
    if not life.wait(timedelta(hours=2), timedelta(days=4), end):
        return
    if rng.random() < 0.82:
        life.send(
            life.one("customer_account"),
            "update_payment_method",
            payload={
                "method_token": life.token("tok"),
                "fingerprint": life.token("fp"),
                "make_primary": True,
            },
        )
        if life.wait(timedelta(hours=1), timedelta(days=10), end):
            bought = "professional" if tier == "enterprise" else tier
            cycle = "annual" if rng.random() < 0.15 else "monthly"
            life.send(life.one("subscription"), "purchase", payload={"tier": bought, "cycle": cycle})
    _staff_loop(life, end, persona)


def _staff_loop(life: Life, end: datetime, persona: str) -> None:
    """Time passes; invoices get paid, declined or left, usage is sampled, now and then staff step in."""
    rng = life.rng
    heavy = persona == "heavy"
    pay, decline = (0.1, 0.6) if persona == "bad_payer" else (0.55, 0.05)
    while life.wait(timedelta(hours=12), timedelta(days=6), end):
        _settle_invoices(life, pay, decline)
        quota = life.one("quota_sla")
        if quota is not None and rng.random() < 0.7:
            _usage_samples(life, quota, heavy)
        if rng.random() < (0.35 if persona == "fraudster" else 0.12):
            _incident(life, persona)


def _settle_invoices(life: Life, pay: float, decline: float) -> None:
    """Open invoices are paid, declined or left to their timers; paid ones get reconciled."""
    for bill in life.of("billing"):
        draw = life.rng.random()
        if bill.state == "payment_received" and draw < 0.35:
            life.send(bill, "accounting_reconciled")  # the daily reconciliation job
        if bill.state not in ("payment_pending", "payment_failed", "retry_1", "retry_2", "retry_3"):
            continue
        if draw < decline:
            life.send(bill, "payment_declined", payload={"decline_code": "card_declined"})
        elif draw < decline + pay:
            paid = {"amount_cents": int(bill.data.get("total_cents") or 0), "payment_id": life.token("pay")}
            life.send(bill, "payment_received", payload=paid)


def _usage_samples(life: Life, quota: Instance, heavy: bool) -> None:
    """Two samples ten minutes apart (the quota bands only move once a level has held)."""
    limits = quota.data.get("limits") or {}
    limit = limits.get("api_requests") if isinstance(limits, Mapping) else None
    if not isinstance(limit, int | float) or limit <= 0:
        return
    share = life.rng.uniform(0.8, 1.4) if heavy else life.rng.uniform(0.05, 0.95)
    for bump in (0.0, 0.01):
        life.send(
            life.one("quota_sla"),
            "usage_sample",
            payload={
                "metrics": {"api_requests": int(limit * (share + bump))},
                "sample_ts": life.now.isoformat(),
            },
        )
        life.now += timedelta(minutes=10)


def _incident(life: Life, persona: str) -> None:
    """One of the things that happen to customers (and the staff actions that follow)."""
    rng = life.rng
    account = life.one("customer_account")
    kind = _weighted(
        rng,
        (
            ("fraud_alert", 4 if persona == "fraudster" else 1),
            ("abuse", 2),
            ("lock", 2),
            ("pause", 2),
            ("cancel", 2),
            ("close", 1),
            ("verification", 2),
            ("violation", 1),
            ("anomaly", 1),
            ("tier_change", 1),
            ("pool", 1),
            ("random", 4),
        ),
    )
    if kind == "fraud_alert":
        life.send(account, "fraud_alert", payload={"score": rng.choice((75, 85, 95))})
    elif kind == "abuse":
        life.send(
            account,
            "abuse_report",
            STAFF["support"],
            {"evidence": "spam reports", "report_id": life.token("r")},
        )
    elif kind == "lock":
        life.send(account, "lock", STAFF["support"], {"reason_code": "compromised_account"})
    elif kind == "pause":
        life.send(life.one("subscription"), "pause", STAFF["support"], {"days": rng.choice((14, 30, 60))})
    elif kind == "cancel":
        life.send(
            life.one("subscription"),
            "cancel",
            STAFF["support"],
            {"reason_code": "too_expensive", "churn_offer_outcome": "declined"},
        )
    elif kind == "close":
        life.send(
            account, "close_account", STAFF["support"], {"customer_confirmation_ref": life.token("conf")}
        )
    elif kind == "verification":
        life.send(life.one("compliance_audit"), "request_verification", STAFF["compliance"])
    elif kind == "violation":
        life.send(
            life.one("compliance_audit"),
            "violation_detected",
            STAFF["compliance"],
            {"kind": "regulatory_concern", "description": "unusual cross-border transfers"},
        )
    elif kind == "anomaly":
        life.send(life.one("compliance_audit"), "anomaly_detected", payload={"score": rng.randint(70, 99)})
    elif kind == "tier_change":
        life.send(
            life.one("subscription"),
            "request_tier_change",
            payload={"new_tier": rng.choice(("starter", "professional")), "request_id": life.token("tc")},
        )
    elif kind == "pool":
        tenant = life.one("multi_tenant")
        if rng.random() < 0.6:
            life.send(tenant, "cascade_signs", payload={"independent_failures": 5, "culprit": False})
        else:
            life.send(tenant, "suspend_tenant", STAFF["admin"])
    else:
        random_event(life)


def random_event(life: Life, tries: int = 6) -> bool:
    """A random staff or system action the engine accepts on one of the customer's instances.

    Inputs are sampled from each row's declared inputs; this is what spreads customers into the
    less travelled states (reviews, holds, disputes, remediation, pool incidents). A few four-eyes
    requests are left waiting for their second approver.
    """
    rng = life.rng
    pool = list(life.mine.values())
    if not pool:
        return False
    for _ in range(tries):
        inst = rng.choice(pool)
        rows = [
            r
            for r in GOVERNORS[inst.governor].transitions
            if r.src
            and (inst.state in r.src or ANY in r.src)
            and any(x in r.by for x in (*STAFF_ROLES, "sys"))
        ]
        if not rows:
            continue
        row = rng.choice(rows)
        role = rng.choice([x for x in row.by if x in (*STAFF_ROLES, "sys")])
        actor = STAFF[role] if role in STAFF_ROLES else SYSTEM
        payload: dict[str, Any] = {}
        for inp in row.inputs:
            value = sample_input(inp, rng, life.now)
            payload[inp.name] = value
        if life.send(inst, rng.choice(row.events), actor, payload, leave_pending=rng.random() < 0.15):
            return True
    return False


# --------------------------------------------------------------------------- many customers


ProgressFn = Callable[[SeedReport, int], None]


def seed_tenants(session: Session, options: SeedOptions, settings: Settings) -> list[str]:
    """The platform catalog and the seeded tenants (created once)."""
    start = options.end_at() - timedelta(days=options.days + 1)
    ensure_catalog(session, start, settings)
    tenants = [tenant_id(k) for k in range(1, options.tenants + 1)]
    for k, t in enumerate(tenants, 1):
        ensure_tenant(session, t, start, name=f"Tenant {k:02d}", pool_id=f"pool-{(k - 1) % 3 + 1}")
    return tenants


def _catalog(session: Session) -> dict[str, Instance]:
    rows = session.scalars(select(GovernorInstance).where(GovernorInstance.governor == "catalog"))
    return {r.id: to_instance(r) for r in rows}


def signup_instant(options: SeedOptions, index: int) -> datetime:
    """When the ``index``-th customer signs up: spread over the window, minute precision."""
    rng = Random(f"{options.seed}:{index}:signup")
    end = options.end_at()
    minutes = int(options.days * 24 * 60 * rng.random())
    return end - timedelta(minutes=max(minutes, 1))


def seed_customers(
    db: Database,
    options: SeedOptions,
    *,
    settings: Settings | None = None,
    worker: int = 0,
    progress: ProgressFn | None = None,
) -> SeedReport:
    """Build the customers of ``options`` handled by ``worker`` (of ``options.workers``), in batches."""
    settings = settings or default_settings()
    report = SeedReport()
    started = time.perf_counter()
    with db.session() as session:
        tenants = seed_tenants(session, options, settings)
    mine = [i for i in range(options.customers) if (i % options.tenants) % options.workers == worker]
    end = options.end_at()
    with db.sessions() as session:
        # The identity map holds clean rows weakly, so a row the service loaded or created is gone
        # by its next event and costs a SELECT by primary key. Holding the batch's rows strongly
        # lets every later lookup (ours and the service's) hit the map.
        held: list[object] = []
        hold = held.append
        event.listen(session, "loaded_as_persistent", lambda _s, obj: hold(obj))
        event.listen(session, "pending_to_persistent", lambda _s, obj: hold(obj))
        analyzed = 50  # customers created when the tables were last analyzed (doubling)
        for first in range(0, len(mine), options.batch):
            batch = mine[first : first + options.batch]
            ids = {customer_id(options.seed, i): i for i in batch}
            existing = set(session.scalars(select(Customer.id).where(Customer.id.in_(list(ids)))))
            catalog = _catalog(session)
            # On PostgreSQL the lives' rows are buffered and written once per customer (BulkStore);
            # SQLite (the demo's few hundred customers) writes each event as it happens.
            store = BulkStore(catalog, PLATFORM_TENANT) if options.bulk and not db.is_sqlite else None
            for cid, index in ids.items():
                if cid in existing:
                    report.skipped += 1
                    continue
                life = Life(
                    session,
                    tenant=tenants[index % options.tenants],
                    customer=cid,
                    index=index,
                    rng=Random(f"{options.seed}:{index}"),
                    catalog=catalog,
                    settings=settings,
                    report=report,
                    store=store,
                )
                savepoint = session.begin_nested()
                try:
                    live(life, signup_instant(options, index), end)
                    if store is not None:
                        store.flush(session)
                    savepoint.commit()
                except Exception as exc:  # one broken life must not lose the batch
                    savepoint.rollback()
                    if store is not None:
                        store.discard()
                    report.failed += 1
                    if len(report.errors) < 5:
                        report.errors.append(f"{cid}: {type(exc).__name__}: {exc}"[:500])
                    continue
                finally:
                    # Flushed and done: forget the customer's objects. A small identity map keeps
                    # the service's ORM DELETEs (which scan the map to synchronise) cheap.
                    session.expunge_all()
                    held.clear()
                    if store is not None:
                        store.forget(cid)
                report.created += 1
                for inst in life.mine.values():
                    report.states.setdefault(inst.governor, Counter())[str(inst.state)] += 1
            session.commit()
            if not db.is_sqlite and report.created >= analyzed * 2:
                _analyze(session)
                analyzed = report.created
            if progress is not None:
                progress(report, len(mine))
    report.seconds = time.perf_counter() - started
    return report


_GROWING = ("customers", "governor_instances", "transitions", "audit_entries", "due_timers", "outbox")


def _analyze(session: Session) -> None:
    """Refresh the planner's statistics of the tables a seed fills.

    A seed grows them from nothing within one connection, whose prepared statements keep plans
    made for the empty tables (a sequential scan to update a handful of rows); ANALYZE gives the
    planner the real sizes and makes every session re-plan. Done as the customer count doubles, so
    it costs a few ANALYZEs however large the seed, and it does not rely on autovacuum.
    """
    session.execute(text("ANALYZE " + ", ".join(_GROWING)))
    session.commit()


def advance_catalog(db: Database, options: SeedOptions, settings: Settings | None = None) -> SeedReport:
    """Fire the global catalog's timers (periodic compliance checks) up to the end instant."""
    settings = settings or default_settings()
    report = SeedReport()
    with db.session() as session:
        catalog = _catalog(session)
        life = Life(
            session,
            tenant=PLATFORM_TENANT,
            customer=None,
            index=0,
            rng=Random(f"{options.seed}:catalog"),
            catalog={},
            settings=settings,
            report=report,
        )
        life.mine = dict(catalog)
        life.now = min((i.entered_at for i in catalog.values() if i.entered_at), default=options.end_at())
        life.advance(options.end_at())
    return report


def _worker_main(args: tuple[str, SeedOptions, int]) -> SeedReport:
    url, options, worker = args
    db = Database(url)
    try:
        return seed_customers(db, options, worker=worker)
    finally:
        db.dispose()


def outbox_watermark(db: Database) -> int:
    """The newest outbox id now (0 when empty): what a seed writes afterwards is above it."""
    with db.session() as session:
        return int(session.scalar(select(func.max(OutboxMessage.id))) or 0)


def settle_simulated_effects(db: Database, above: int) -> int:
    """Mark the outbox rows written by a seed (ids above ``above``) delivered; returns how many.

    A seeded life is simulated: its outcomes (payments taken or declined, KYC verdicts, notices) were
    decided by the simulation and fed back as events, so running the effects of that history later
    would charge sandbox cards for past invoices, re-ask the KYC provider and feed back stale
    verdicts the governors refuse. They are recorded as delivered at their own time; only what
    happens after the seed reaches the workers.
    """
    with db.session() as session:
        result = session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id > above, OutboxMessage.delivered_at.is_(None))
            .values(delivered_at=OutboxMessage.created_at)
            .execution_options(synchronize_session=False)
        )
        return int(getattr(result, "rowcount", 0) or 0)


def seed(db: Database, options: SeedOptions, progress: ProgressFn | None = None) -> SeedReport:
    """Build every customer of ``options``, in ``options.workers`` processes (one when 1).

    The effects of the simulated history are settled, not run (``settle_simulated_effects``).
    """
    above = outbox_watermark(db)
    report = _seed(db, options, progress)
    settle_simulated_effects(db, above)
    return report


def _seed(db: Database, options: SeedOptions, progress: ProgressFn | None) -> SeedReport:
    if options.workers <= 1:
        report = seed_customers(db, options, progress=progress)
        report.merge(advance_catalog(db, options))
        return report
    import multiprocessing

    started = time.perf_counter()
    with db.session() as session:
        seed_tenants(session, options, default_settings())  # once, before the workers race for it
    workers = min(options.workers, options.tenants)
    options = SeedOptions(**{**options.__dict__, "workers": workers})
    # Forked workers start from this process as it is (no re-import of the caller's main module);
    # each opens its own engine, so the parent's pooled connections are closed first.
    db.dispose()
    context = multiprocessing.get_context("fork")
    with context.Pool(workers) as pool:
        reports = pool.map(_worker_main, [(db.url, options, w) for w in range(workers)])
    total = SeedReport()
    for r in reports:
        total.merge(r)
    total.merge(advance_catalog(db, options))
    total.seconds = time.perf_counter() - started
    return total


def states_digest(session: Session, customer_ids: Iterable[str]) -> str:
    """A digest of the customers' governor states (ids excluded): equal seeds give equal digests."""
    rows = session.execute(
        select(
            GovernorInstance.customer_id,
            GovernorInstance.governor,
            GovernorInstance.state,
            GovernorInstance.state_seq,
            GovernorInstance.version,
        ).where(GovernorInstance.customer_id.in_(list(customer_ids)))
    ).all()
    text = "\n".join(sorted("|".join(str(v) for v in row) for row in rows))
    return hashlib.sha256(text.encode()).hexdigest()


__all__ = ["SeedOptions", "SeedReport", "customer_id", "seed", "seed_customers", "states_digest", "tenant_id"]
