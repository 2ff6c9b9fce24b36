"""The alert rules of CONSOLE.md §2.3 that the database can answer, evaluated into the ``alerts`` table.

``evaluate_alerts(session, now, settings)`` checks every rule in ``RULES``; a rule that holds for a
subject (a tenant, an instance, a staff user, or the whole platform) raises one ``Alert`` row, and
later evaluations leave it alone while the condition still holds (deduplicated by rule + subject).
When the condition clears, the row is resolved: its ``job_id`` gets the ``:resolved`` suffix and,
if no one acknowledged it yet, it is acknowledged by ``RESOLVED_BY``. A person acknowledging an alert
whose condition still holds does not make it fire again.

``evaluate_alerts_for(runtime, now)`` is the periodic entry point (``webapp.jobs.housekeeping``, run by
the RQ sweep and the in-process runner).
The same rules ship as a Prometheus rules file in ``deploy/prometheus/alerts.yml`` (same names).

Not evaluated here (no data in the database): orchestrator down (heartbeats: Prometheus ``up``),
governor crash loop (no governor has an ERROR state), decision latency (a per-process histogram:
Prometheus rule only), governor response timeout, SLA violation, noisy neighbour, CPU/memory, error
spike, cost overage, dependency deprecation and certificate expiry.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from webapp.metrics import PLATFORM_TENANT, audit_integrity, payment_window
from webapp.models.background import Alert
from webapp.models.governance import GovernorInstance, TransitionRecord
from webapp.models.staff import StaffUser
from webapp.models.work import OutboxMessage

# --------------------------------------------------------------------------- thresholds (CONSOLE.md)

PAYMENT_FAILURE_RATE: Final = 0.95
"""§2.3 Payment processing failure: billing_payment_success_rate <95% ..."""
PAYMENT_FAILURE_FOR: Final = timedelta(minutes=10)
"""... for 10 min (checked on the 1 h window ending now, 5 and 10 minutes ago)."""
QUEUE_CAPACITY: Final = 1000
"""§2.2 orchestrator_event_queue_depth: cap 1000."""
QUEUE_HIGH_WATER: Final = 0.8
"""§2.3 Queue backing up: queue depth >80% ..."""
QUEUE_FOR: Final = timedelta(minutes=5)
"""... for 5 min."""
RETRY_3_PER_HOUR: Final = 50
"""§2.3 Retry escalation: retry-3 count >50 in 1h."""
FRAUD_PER_HOUR: Final = 50
"""§2.3 Fraud volume: >50 fraud alerts/hour."""
SECURITY_WINDOW: Final = timedelta(hours=1)
"""How long a recorded ``security_event`` (compliance Cx2) keeps the Security event alert open."""
HOUR: Final = timedelta(hours=1)

DEFAULTS: Final[dict[str, float]] = {
    "alerts.payment_failure_rate": PAYMENT_FAILURE_RATE,
    "alerts.queue_capacity": QUEUE_CAPACITY,
    "alerts.queue_high_water": QUEUE_HIGH_WATER,
    "alerts.retry_3_per_hour": RETRY_3_PER_HOUR,
    "alerts.fraud_per_hour": FRAUD_PER_HOUR,
}
"""Thresholds a caller may override through ``settings`` (same keys); anything else is ignored."""

KEY_PREFIX: Final = "alert-rule:"
RESOLVED_SUFFIX: Final = ":resolved"
RESOLVED_BY: Final = "system:condition-cleared"
MAX_SUBJECT: Final = 60


@dataclass(frozen=True)
class Rule:
    """One §2.3 row: its severity (Alert.level), what it watches and who is paged."""

    name: str
    level: str
    title: str
    condition: str
    route: str


@dataclass(frozen=True)
class Firing:
    """A rule holding for one subject now."""

    rule: str
    subject: str
    message: str
    tenant_id: str = PLATFORM_TENANT
    customer_id: str | None = None
    instance_id: str | None = None
    governor: str | None = None


@dataclass
class AlertReport:
    """What an evaluation did: rule:subject keys raised and resolved, and how many stay open."""

    raised: list[str] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)
    active: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"raised": self.raised, "resolved": self.resolved, "active": self.active}


def _thresholds(settings: Mapping[str, Any] | None) -> dict[str, float]:
    values = dict(DEFAULTS)
    if settings is not None:
        for key in DEFAULTS:
            if key in settings:
                values[key] = float(settings[key])
    return values


# --------------------------------------------------------------------------- the checks


def check_payment_failure(session: Session, now: datetime, t: Mapping[str, float]) -> list[Firing]:
    """Success rate below the threshold on the 1 h windows ending now, now-5 min and now-10 min."""
    step = PAYMENT_FAILURE_FOR / 2
    windows = [payment_window(session, now - step * i) for i in range(3)]
    if all(w.rate is not None and w.rate < t["alerts.payment_failure_rate"] for w in windows):
        current = windows[0]
        return [
            Firing(
                "payment_processing_failure",
                "billing",
                f"payment success rate {current.rate:.1%} ({current.received}/{current.attempts} in 1 h)"
                f" below {t['alerts.payment_failure_rate']:.0%} for 10 min",
                governor="billing",
            )
        ]
    return []


def check_data_consistency(session: Session, now: datetime, t: Mapping[str, float]) -> list[Firing]:
    """A tenant whose last recorded audit verification failed (chains are not re-verified here)."""
    return [
        Firing(
            "data_consistency",
            tenant,
            f"audit hash chain of tenant {tenant} failed its last verification",
            tenant_id=tenant,
        )
        for tenant, ok in sorted(audit_integrity(session).items())
        if not ok
    ]


def check_compliance_violation(session: Session, now: datetime, t: Mapping[str, float]) -> list[Firing]:
    """Every compliance instance in ``non_compliant``."""
    rows = session.execute(
        select(GovernorInstance.id, GovernorInstance.tenant_id, GovernorInstance.customer_id)
        .where(GovernorInstance.governor == "compliance_audit", GovernorInstance.state == "non_compliant")
        .order_by(GovernorInstance.id)
    ).all()
    return [
        Firing(
            "compliance_violation",
            instance_id,
            f"customer {customer_id or '-'} is non-compliant ({instance_id})",
            tenant_id=tenant_id,
            customer_id=customer_id,
            instance_id=instance_id,
            governor="compliance_audit",
        )
        for instance_id, tenant_id, customer_id in rows
    ]


def check_security_event(session: Session, now: datetime, t: Mapping[str, float]) -> list[Firing]:
    """Staff users locked out by failed sign-ins; compliance ``security_event`` rows of the last hour."""
    firings = [
        Firing(
            "security_event",
            f"user:{user_id}",
            f"staff user {email} locked after {failed} failed sign-ins",
        )
        for user_id, email, failed in session.execute(
            select(StaffUser.id, StaffUser.email, StaffUser.failed_logins)
            .where(StaffUser.locked_until > now)
            .order_by(StaffUser.id)
        )
    ]
    rows = session.execute(
        select(TransitionRecord.instance_id, TransitionRecord.tenant_id, TransitionRecord.customer_id)
        .where(
            TransitionRecord.governor == "compliance_audit",
            TransitionRecord.event == "security_event",
            TransitionRecord.occurred_at > now - SECURITY_WINDOW,
            TransitionRecord.occurred_at <= now,
        )
        .distinct()
        .order_by(TransitionRecord.instance_id)
    ).all()
    firings += [
        Firing(
            "security_event",
            f"instance:{instance_id}",
            f"security event recorded for customer {customer_id or '-'}",
            tenant_id=tenant_id,
            customer_id=customer_id,
            instance_id=instance_id,
            governor="compliance_audit",
        )
        for instance_id, tenant_id, customer_id in rows
    ]
    return firings


def check_queue_backing_up(session: Session, now: datetime, t: Mapping[str, float]) -> list[Firing]:
    """More than 80 % of capacity undelivered for 5 min: rows still pending that were already there then."""
    limit = t["alerts.queue_capacity"] * t["alerts.queue_high_water"]
    old = int(
        session.scalar(
            select(func.count())
            .select_from(OutboxMessage)
            .where(OutboxMessage.delivered_at.is_(None), OutboxMessage.created_at <= now - QUEUE_FOR)
        )
        or 0
    )
    if old > limit:
        return [Firing("queue_backing_up", "outbox", f"{old} outbox rows undelivered for over 5 min")]
    return []


def _count_last_hour(session: Session, now: datetime, *conditions: Any) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(TransitionRecord)
            .where(
                *conditions, TransitionRecord.occurred_at > now - HOUR, TransitionRecord.occurred_at <= now
            )
        )
        or 0
    )


def check_retry_escalation(session: Session, now: datetime, t: Mapping[str, float]) -> list[Firing]:
    """More than 50 invoices entered retry_3 in the last hour."""
    n = _count_last_hour(
        session, now, TransitionRecord.governor == "billing", TransitionRecord.to_state == "retry_3"
    )
    if n > t["alerts.retry_3_per_hour"]:
        return [
            Firing(
                "retry_escalation",
                "billing",
                f"{n} invoices reached retry 3 in the last hour",
                governor="billing",
            )
        ]
    return []


def check_fraud_volume(session: Session, now: datetime, t: Mapping[str, float]) -> list[Firing]:
    """More than 50 fraud alerts (compliance instances entering fraud_detection_active) in the last hour."""
    n = _count_last_hour(
        session,
        now,
        TransitionRecord.governor == "compliance_audit",
        TransitionRecord.to_state == "fraud_detection_active",
    )
    if n > t["alerts.fraud_per_hour"]:
        return [
            Firing(
                "fraud_volume",
                "compliance_audit",
                f"{n} fraud alerts in the last hour",
                governor="compliance_audit",
            )
        ]
    return []


Check = Callable[[Session, datetime, Mapping[str, float]], list[Firing]]

RULES: Final[dict[str, tuple[Rule, Check]]] = {
    rule.name: (rule, check)
    for rule, check in (
        (
            Rule(
                "payment_processing_failure",
                "critical",
                "Payment processing failure",
                "billing_payment_success_rate <95% for 10 min",
                "page payments + business ops",
            ),
            check_payment_failure,
        ),
        (
            Rule(
                "data_consistency",
                "critical",
                "Data consistency",
                "audit hash chain broken",
                "page Tier 3 + database team",
            ),
            check_data_consistency,
        ),
        (
            Rule(
                "compliance_violation",
                "critical",
                "Compliance violation",
                "any framework non-compliant",
                "page security + compliance officer",
            ),
            check_compliance_violation,
        ),
        (
            Rule(
                "security_event",
                "critical",
                "Security event",
                "unauthorized access attempt (lockout) or recorded security event",
                "page security (+Tier 2)",
            ),
            check_security_event,
        ),
        (
            Rule("queue_backing_up", "high", "Queue backing up", "queue depth >80% for 5 min", "page Tier 1"),
            check_queue_backing_up,
        ),
        (
            Rule("retry_escalation", "high", "Retry escalation", "retry-3 count >50 in 1h", "page payments"),
            check_retry_escalation,
        ),
        (
            Rule("fraud_volume", "high", "Fraud volume", ">50 fraud alerts/hour", "page security"),
            check_fraud_volume,
        ),
    )
}
"""CONSOLE.md §2.3 rules evaluated from the database, by name (the Prometheus ``alert`` names)."""


# --------------------------------------------------------------------------- evaluation


def _key(rule: str, subject: str) -> str:
    """``alert-rule:<rule>:<subject>:`` (long subjects are hashed to keep ``job_id`` within 120)."""
    if len(subject) > MAX_SUBJECT:
        subject = "sha256-" + hashlib.sha256(subject.encode()).hexdigest()[:16]
    return f"{KEY_PREFIX}{rule}:{subject}:"


def active_alerts(session: Session) -> list[Alert]:
    """Rule alerts not resolved yet (acknowledged or not)."""
    return list(
        session.scalars(
            select(Alert)
            .where(Alert.job_id.startswith(KEY_PREFIX), Alert.job_id.not_like(f"%{RESOLVED_SUFFIX}"))
            .order_by(Alert.id)
        )
    )


def evaluate_alerts(
    session: Session, now: datetime, settings: Mapping[str, Any] | None = None
) -> AlertReport:
    """Check every rule at ``now``; raise new alerts, keep open ones, resolve those that cleared."""
    thresholds = _thresholds(settings)
    firing: dict[str, Firing] = {}
    for _, check in RULES.values():
        for hit in check(session, now, thresholds):
            firing.setdefault(_key(hit.rule, hit.subject), hit)
    report = AlertReport()
    active = {alert.job_id.rsplit(":", 1)[0] + ":": alert for alert in active_alerts(session)}
    for key, alert in active.items():
        if key in firing:
            continue
        alert.job_id += RESOLVED_SUFFIX
        if alert.acknowledged_at is None:
            alert.acknowledged_at = now
            alert.acknowledged_by = RESOLVED_BY
        report.resolved.append(key.removeprefix(KEY_PREFIX)[:-1])
    for key, hit in firing.items():
        if key in active:
            continue
        rule = RULES[hit.rule][0]
        session.add(
            Alert(
                job_id=f"{key}{now.strftime('%Y%m%dT%H%M%S%f')}",
                tenant_id=hit.tenant_id,
                customer_id=hit.customer_id,
                instance_id=hit.instance_id,
                governor=hit.governor,
                level=rule.level,
                message=f"{rule.title}: {hit.message} [{rule.route}]",
                created_at=now,
            )
        )
        report.raised.append(f"{hit.rule}:{hit.subject}")
    session.flush()
    report.active = len(firing)
    return report


def evaluate_alerts_for(rt: Any, now: datetime) -> dict[str, Any]:
    """Evaluate the rules at ``now`` with a runtime's database and settings (one transaction)."""
    with rt.db.session() as session:
        return evaluate_alerts(session, now, rt.settings).as_dict()


# --------------------------------------------------------------------------- the alerts panel

ESCALATION_LADDER: Final = (
    (timedelta(0), "Tier 1 SRE"),
    (timedelta(minutes=5), "Tier 2 Eng Manager"),
    (timedelta(minutes=15), "Tier 3 Director"),
    (timedelta(minutes=30), "Tier 4 VP Eng"),
)
"""CONSOLE.md §2.3 escalation ladder [D OPS]: who holds an unacknowledged page after how long."""

LEVEL_ORDER: Final = {"critical": 0, "high": 1, "medium": 2}


def escalation_tier(level: str, age: timedelta) -> str:
    """Who an open, unacknowledged alert of ``level`` has reached after ``age`` (§2.3).

    MEDIUM alerts are email only; HIGH ones page Tier 1 and climb the ladder when not resolved within
    5 minutes; Tier 4 is for business-critical (CRITICAL) alerts only.
    """
    if level == "medium":
        return "email only"
    reached = ESCALATION_LADDER[0][1]
    for after, tier in ESCALATION_LADDER:
        if age >= after and (level == "critical" or tier != "Tier 4 VP Eng"):
            reached = tier
    return reached


@dataclass(frozen=True)
class PanelRow:
    """One alert as the panel shows it."""

    alert: Alert
    age: timedelta
    tier: str
    resolved: bool


def panel(
    session: Session, now: datetime, *, resolved_limit: int = 20
) -> tuple[list[PanelRow], list[PanelRow]]:
    """(open alerts, most severe and oldest first; recently resolved or acknowledged ones).

    Open means not acknowledged: rule alerts whose condition still holds, and critical alerts raised
    by jobs (a must-apply cascade that failed) that nobody has acknowledged yet.
    """
    unacked = session.scalars(select(Alert).where(Alert.acknowledged_at.is_(None)).order_by(Alert.id)).all()
    open_rows = sorted(
        (
            PanelRow(a, now - a.created_at, escalation_tier(a.level, now - a.created_at), False)
            for a in unacked
        ),
        key=lambda r: (LEVEL_ORDER.get(r.alert.level, 9), r.alert.created_at),
    )
    done = session.scalars(
        select(Alert)
        .where(Alert.acknowledged_at.is_not(None))
        .order_by(Alert.id.desc())
        .limit(resolved_limit)
    ).all()
    closed_rows = [
        PanelRow(a, (a.acknowledged_at or now) - a.created_at, "", a.job_id.endswith(RESOLVED_SUFFIX))
        for a in done
    ]
    return open_rows, closed_rows


class AlertNotOpen(LookupError):
    """The alert does not exist or was already acknowledged."""


def acknowledge(session: Session, alert_id: int, *, actor: str, role: str, now: datetime) -> Alert:
    """Acknowledge one open alert for ``actor`` and audit it; the condition may still hold."""
    from webapp import audit

    alert = session.get(Alert, alert_id, with_for_update=True)
    if alert is None:
        raise AlertNotOpen(f"There is no alert {alert_id}.")
    if alert.acknowledged_at is not None:
        by = alert.acknowledged_by or "someone"
        raise AlertNotOpen(f"Alert {alert_id} was already acknowledged by {by}.")
    alert.acknowledged_at = now
    alert.acknowledged_by = actor
    audit.append(
        session,
        alert.tenant_id,
        actor=actor,
        role=role,
        action="alert.acknowledged",
        occurred_at=now,
        customer_id=alert.customer_id,
        instance_id=alert.instance_id,
        payload={
            "alert_id": alert.id,
            "level": alert.level,
            "rule": alert.job_id,
        },
    )
    return alert
