"""The dunning ladder's preview calendar (CONSOLE.md §3.2, GOVERNORS.md §2.3 and §9).

For a sample renewal invoice whose payment fails at a chosen instant, what happens when under the
settings in force: each charge attempt, each customer notice and each cascade (subscription grace,
entitlement suspension, the account flagged delinquent). Nothing here is hand-computed: the pure
engine runs one sample customer in an in-memory ``governors.simulate.World`` (no database, no
clock), so the calendar follows every duration setting and every rule exactly as production does.

The sample customer is built the way production builds one (GOVERNORS.md scenarios: publish the
tier's SKUs, sign up, pass KYC, approve the entitlement, buy the tier, pay the first invoice), then
the clock runs to the renewal invoice. A first pass finds when that invoice's payment window opens;
the second pass shifts the customer's history so that it opens exactly at the chosen start, where
the processor declines the charge (B05). From there the world's timers fire in order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Final

from governors import Decision, Facts, Instance, Plan, Settings
from governors.scenarios import Step, catalog_skus, onboard, publish_sku, signup
from governors.simulate import World
from governors.spec import frozen_map

SHOWN_SETTINGS: Final = (
    "billing.delivery_fallback_after",
    "billing.payment_window",
    "billing.retry_1_after",
    "billing.retry_2_after",
    "billing.retry_3_after",
    "billing.collections_after",
    "billing.max_retries",
    "subscription.renewal_invoice_before",
    "subscription.grace_period",
    "subscription.reactivation_window",
    "entitlement.suspension_timeout",
)
"""The settings the calendar depends on, shown next to it (read-only; admins edit them)."""

GOVERNORS_SHOWN: Final = ("billing", "subscription", "entitlement", "customer_account")
"""Whose steps belong on a dunning calendar (catalog checks and quota rollovers do not)."""

DEFAULT_HORIZON: Final = timedelta(days=45)

_SETUP_LEAD: Final = timedelta(days=60)
_SAMPLE_EMAIL: Final = "sample.customer@example.test"
_MAX_STEPS: Final = 5000
"""Due instants the set-up may run through (a few dozen in practice; guards against zero durations)."""


class LadderError(ValueError):
    """The sample could not be simulated (e.g. a tier without a list price); the message says why."""


@dataclass(frozen=True)
class CalendarEntry:
    """One applied step after the failed payment: when, which governor, what, and why it matters."""

    at: datetime
    offset: timedelta
    governor: str
    row_id: str
    event: str
    from_state: str | None
    to_state: str
    kind: str
    """``attempt`` (a charge), ``ladder`` (the invoice moves), ``cascade`` (another governor)."""
    attempt: str
    notices: tuple[str, ...]
    via: str
    """The cascade id that caused a step on another governor (X05, X07, X10, ...), or ""."""

    @property
    def day(self) -> int:
        """Whole days since the failed payment (day 0 is the decline)."""
        return self.offset.days


@dataclass(frozen=True)
class Calendar:
    """The preview: the start, the tier, the settings used and the dated entries."""

    start: datetime
    tier: str
    settings: Mapping[str, Any]
    entries: tuple[CalendarEntry, ...]
    invoice_total_cents: int
    currency: str


def tiers(settings: Settings) -> list[str]:
    """Tiers with a list price (a sample invoice needs an amount; enterprise is priced per customer)."""
    prices = dict(settings["subscription.monthly_price_cents"])
    return [t for t in settings["subscription.tiers"] if int(prices.get(t, 0) or 0) > 0]


class _SampleWorld(World):
    """A world whose customer has a processor-validated payment method (so the tier can be bought)."""

    def facts(self, role: str = "sys", actor: str = "system", **payload: Any) -> Facts:
        return replace(
            super().facts(role, actor, **payload), extra=frozen_map({"payment_method_valid": True})
        )


def _must(result: Plan, what: str) -> None:
    root = result.root
    if not isinstance(root, Decision):
        message = getattr(root, "message", "no decision")
        raise LadderError(f"the sample customer could not {what}: {message}")


def _run(world: World, steps: Sequence[Step], instance_id: str | None, what: str) -> str:
    for step in steps:
        if instance_id is None:
            before = set(world.instances)
            result = world.create(
                step.governor,
                step.event,
                role=step.role,
                subject_id=step.payload.get("sku_id"),
                **step.payload,
            )
            _must(result, what)
            instance_id = next(i.id for i in world.of(step.governor) if i.id not in before)
        else:
            approved = "sample-approver" if step.approved else None
            _must(
                world.fire(instance_id, step.event, role=step.role, approved_by=approved, **step.payload),
                what,
            )
    assert instance_id is not None
    return instance_id


def _renewal_window_open(world: World) -> Instance | None:
    return next(
        (
            b
            for b in world.of("billing")
            if b.state == "payment_pending" and (b.data or {}).get("kind") == "renewal"
        ),
        None,
    )


def _customer_at_renewal(origin: datetime, tier: str, settings: Settings, until: datetime) -> World:
    """A paying customer whose world has run from ``origin`` until its renewal invoice's window opens."""
    world = _SampleWorld(now=origin, customer_id="sample", settings=settings)
    for sku in catalog_skus(settings):
        _run(world, publish_sku(sku), None, f"publish {sku}")
    _run(world, signup(_SAMPLE_EMAIL, tier=tier), None, "sign up")
    account = world.of("customer_account")[0].id
    _run(world, onboard("sample-kyc"), account, "pass KYC")
    for ent in world.of("entitlement"):
        world.fire(ent.id, "approve", role="manager", reason="sample entitlement approval", note="sample")
    subscription = world.of("subscription")[0].id
    _must(
        world.fire(
            subscription,
            "purchase",
            role="support",
            tier=tier,
            cycle="monthly",
            reason="sample purchase of the tier",
        ),
        f"buy the {tier} tier",
    )
    first = _run_until(world, _first_window_open, world.now + timedelta(days=14))
    if first is None:
        raise LadderError("the sample's first invoice never reached its payment window")
    paid = world.fire(
        first.id, "payment_received", amount_cents=int(first.data["total_cents"]), payment_id="sample-1"
    )
    _must(paid, "pay its first invoice")
    _run_until(world, _renewal_window_open, until)
    return world


def _run_until(world: World, found: Callable[[World], Instance | None], until: datetime) -> Instance | None:
    """Fire the world's timers one due instant at a time until ``found`` finds something (or ``until``)."""
    for _ in range(_MAX_STEPS):
        hit = found(world)
        if hit is not None or world.now >= until:
            return hit
        due = world.due_timers()
        if not due:
            return None
        world.advance(min(until, max(world.now, due[0][0])))
    raise LadderError("the sample's timers keep firing without the clock moving: check the duration settings")


def _first_window_open(world: World) -> Instance | None:
    return next((b for b in world.of("billing") if b.state == "payment_pending"), None)


def _window_opened(world: World) -> datetime:
    invoice = _renewal_window_open(world)
    if invoice is None or invoice.entered_at is None:
        raise LadderError("the sample's renewal invoice never reached its payment window")
    return invoice.entered_at


def calendar(
    start: datetime, tier: str, settings: Settings, *, horizon: timedelta = DEFAULT_HORIZON
) -> Calendar:
    """Simulate a renewal payment declined at ``start`` and list every step up to ``start + horizon``."""
    if start.tzinfo is None:
        raise LadderError("the start must be a timezone-aware UTC instant")
    if tier not in tiers(settings):
        raise LadderError(f"choose one of the tiers with a list price: {', '.join(tiers(settings))}")
    probe_origin = start - _SETUP_LEAD
    probe = _customer_at_renewal(probe_origin, tier, settings, start + _SETUP_LEAD)
    shift = start - _window_opened(probe)
    world = _customer_at_renewal(probe_origin + shift, tier, settings, start)
    invoice = _renewal_window_open(world)
    if invoice is None or invoice.entered_at != start:
        raise LadderError("the sample's renewal could not be placed at the chosen start")
    world.now = start
    declined = world.fire(
        invoice.id,
        "payment_declined",
        decline_code="card_declined",
        decline_message="sample decline for the ladder preview",
    )
    _must(declined, "record the declined payment")
    plans = [declined, *world.advance(start + horizon)]
    entries = tuple(e for p in plans for e in _entries(p, start))
    return Calendar(
        start=start,
        tier=tier,
        settings={k: settings[k] for k in SHOWN_SETTINGS if k in settings},
        entries=entries,
        invoice_total_cents=int(invoice.data.get("total_cents") or 0),
        currency=str(invoice.data.get("currency") or ""),
    )


def _entries(result: Plan, start: datetime) -> list[CalendarEntry]:
    out: list[CalendarEntry] = []
    for step in result.steps:
        decision = step.outcome
        if step.status != "applied" or not isinstance(decision, Decision):
            continue
        if decision.governor not in GOVERNORS_SHOWN:
            continue
        charges = [e for e in decision.effects if e.name == "billing_charge"]
        notices = tuple(
            str(e.args.get("template", "")) for e in decision.effects if e.name == "notify_customer"
        )
        if decision.governor != "billing":
            kind = "cascade"
        elif charges:
            kind = "attempt"
        else:
            kind = "ladder"
        out.append(
            CalendarEntry(
                at=decision.at,
                offset=decision.at - start,
                governor=decision.governor,
                row_id=decision.row_id,
                event=decision.event,
                from_state=decision.from_state,
                to_state=decision.to_state,
                kind=kind,
                attempt=str(charges[0].args.get("attempt", "")) if charges else "",
                notices=notices,
                via=step.cascade or "",
            )
        )
    return out
