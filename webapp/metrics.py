"""Prometheus metrics (CONSOLE.md §2.2) read from the database at scrape time.

Web nodes are stateless, so every value that several nodes must agree on is computed by
``DatabaseCollector`` from PostgreSQL when ``/metrics`` is scraped, with a handful of aggregate
queries (GROUP BY, no per-row work). Each app gets its own ``CollectorRegistry`` (never the global
one), so two apps in one process (tests) do not collide.

The one process-local metric is ``orchestrator_decision_latency_seconds``: a histogram of
``fire_event`` durations observed in *this* process (``observe_decision``/``time_decision``).
Prometheus aggregates it across nodes with ``sum by (le)``.

Ratios are exposed as 0..1 (Prometheus convention); CONSOLE.md writes them as percentages.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from webapp.db import Database
from webapp.models.audit import AuditEntry
from webapp.models.governance import GovernorInstance, TransitionRecord
from webapp.models.staff import Approval, StaffUser
from webapp.models.work import OutboxMessage

PAYMENT_WINDOW: Final = timedelta(hours=1)
"""CONSOLE.md §2.2 billing_payment_success_rate: "1h window"."""

PAYMENT_OK_EVENT: Final = "payment_received"
PAYMENT_DECLINED_EVENT: Final = "payment_declined"
"""Billing events (GOVERNORS.md §2, B04/B05/B12/B13) that count as a payment attempt's outcome."""

RETRY_LEVELS: Final = {
    "retry_1": "1",
    "retry_2": "2",
    "retry_3": "3",
    "collection_agency": "collection_agency",
}
"""CONSOLE.md §2.2 billing_retry_depth: Billing state → ``retry_level`` label."""

DECISION_BUCKETS: Final = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0)
"""CONSOLE.md §2.2 orchestrator_decision_latency buckets: 100, 250, 500 ms, 1, 2, 5 s."""

PLATFORM_TENANT: Final = "platform"
"""Where ``marketplace audit verify`` records the failures of other tenants' chains."""

VERIFIED_ACTION: Final = "audit.verified"

DECISION_LATENCY: Final = Histogram(
    "orchestrator_decision_latency_seconds",
    "Time from event arrival to decision (fire_event), observed in this process only.",
    ["governor"],
    buckets=DECISION_BUCKETS,
    registry=None,
)
"""Process-local: each web node / worker exposes its own; not in the global registry."""


def observe_decision(governor: str, seconds: float) -> None:
    """Record one decision's duration (call after ``fire_event``)."""
    DECISION_LATENCY.labels(governor=governor).observe(max(seconds, 0.0))


@contextmanager
def time_decision(governor: str) -> Iterator[None]:
    """``with time_decision("billing"): fire_event(...)`` observes the block's duration."""
    started = time.perf_counter()
    try:
        yield
    finally:
        observe_decision(governor, time.perf_counter() - started)


# --------------------------------------------------------------------------- database reads


@dataclass(frozen=True)
class PaymentWindow:
    """Payment outcomes in a window: ``rate`` is None when there was no attempt."""

    received: int
    declined: int

    @property
    def attempts(self) -> int:
        return self.received + self.declined

    @property
    def rate(self) -> float | None:
        return self.received / self.attempts if self.attempts else None


def payment_window(session: Session, now: datetime, window: timedelta = PAYMENT_WINDOW) -> PaymentWindow:
    """Billing payment_received vs payment_declined events in ``(now - window, now]``."""
    rows = session.execute(
        select(TransitionRecord.event, func.count())
        .where(
            TransitionRecord.governor == "billing",
            TransitionRecord.event.in_((PAYMENT_OK_EVENT, PAYMENT_DECLINED_EVENT)),
            TransitionRecord.occurred_at > now - window,
            TransitionRecord.occurred_at <= now,
        )
        .group_by(TransitionRecord.event)
    ).all()
    counts = {str(event): int(n) for event, n in rows}
    return PaymentWindow(counts.get(PAYMENT_OK_EVENT, 0), counts.get(PAYMENT_DECLINED_EVENT, 0))


def _payload(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def audit_integrity(session: Session) -> dict[str, bool]:
    """Per tenant, whether its most recently *recorded* verification passed (no chain is re-verified).

    ``marketplace audit verify`` appends ``audit.verified`` to an intact tenant's own chain and, for
    broken chains, one summary entry (``{"ok": false, "tenants": {...}}``) to the platform chain. A
    tenant counts as intact when its last own ``audit.verified`` is newer than the last failure that
    names it. Tenants never verified are absent.
    """
    last_ok: dict[str, datetime] = {
        str(tenant): at
        for tenant, at in session.execute(
            select(AuditEntry.tenant_id, func.max(AuditEntry.occurred_at))
            .where(AuditEntry.action == VERIFIED_ACTION, AuditEntry.tenant_id != PLATFORM_TENANT)
            .group_by(AuditEntry.tenant_id)
        )
    }
    # The platform entries include its own passes; failures are the ones with "ok": false. Only the
    # latest few runs matter (each run writes at most two platform entries).
    recent = session.execute(
        select(AuditEntry.occurred_at, AuditEntry.payload)
        .where(AuditEntry.tenant_id == PLATFORM_TENANT, AuditEntry.action == VERIFIED_ACTION)
        .order_by(AuditEntry.seq.desc())
        .limit(20)
    ).all()
    last_fail: dict[str, datetime] = {}
    for occurred_at, payload in recent:
        data = _payload(payload)
        if data.get("ok") is False and isinstance(data.get("tenants"), dict):
            for tenant in data["tenants"]:
                last_fail.setdefault(str(tenant), occurred_at)
    # The platform's own passes are its entries without a "tenants" summary.
    platform_pass = next((at for at, payload in recent if "tenants" not in _payload(payload)), None)
    if platform_pass is not None:
        last_ok[PLATFORM_TENANT] = platform_pass
    result: dict[str, bool] = {}
    for tenant in set(last_ok) | set(last_fail):
        ok_at, fail_at = last_ok.get(tenant), last_fail.get(tenant)
        result[tenant] = fail_at is None or (ok_at is not None and ok_at > fail_at)
    return result


def queue_depth(session: Session) -> int:
    """Outbox rows committed but not handed to the queue yet."""
    return int(
        session.scalar(
            select(func.count()).select_from(OutboxMessage).where(OutboxMessage.delivered_at.is_(None))
        )
        or 0
    )


# --------------------------------------------------------------------------- the collector


class DatabaseCollector(Collector):
    """Reads CONSOLE.md §2.2 metrics from the database on every scrape (stateless web nodes agree)."""

    def __init__(self, db: Database, redis_url: str | None = None, queue_name: str | None = None) -> None:
        self.db = db
        self.redis_url = redis_url
        self.queue_name = queue_name

    def describe(self) -> Iterable[Metric]:
        return []  # no describe at registration: it would query the database

    def collect(self) -> Iterable[Metric]:
        now = datetime.now(UTC)
        rq_length = self._rq_length() if self.redis_url and self.queue_name else None
        with self.db.sessions() as session:
            yield from self._collect(session, now, rq_length)

    def _collect(self, session: Session, now: datetime, rq_length: int | None = None) -> Iterator[Metric]:
        transitions = CounterMetricFamily(
            "governor_transitions",
            "Applied governor transitions (from the transition history).",
            labels=["governor", "from_state", "to_state"],
        )
        for governor, from_state, to_state, n in session.execute(
            select(
                TransitionRecord.governor,
                TransitionRecord.from_state,
                TransitionRecord.to_state,
                func.count(),
            )
            .group_by(TransitionRecord.governor, TransitionRecord.from_state, TransitionRecord.to_state)
            .order_by(TransitionRecord.governor, TransitionRecord.from_state, TransitionRecord.to_state)
        ):
            transitions.add_metric([governor, from_state or "", to_state], int(n))
        yield transitions

        instances = GaugeMetricFamily(
            "governor_instances", "Governor instances by current state.", labels=["governor", "state"]
        )
        attention = GaugeMetricFamily(
            "governor_attention_instances", "Instances flagged for attention.", labels=["governor"]
        )
        stuck = GaugeMetricFamily(
            "governor_stuck_instances", "Instances whose state timer is already past.", labels=["governor"]
        )
        retry = GaugeMetricFamily(
            "billing_retry_depth", "Invoices at each dunning retry level now.", labels=["retry_level"]
        )
        rows = session.execute(
            select(
                GovernorInstance.governor,
                GovernorInstance.state,
                func.count(),
                func.count().filter(GovernorInstance.attention.is_(True)),
                func.count().filter(GovernorInstance.timeout_at < now),
            )
            .group_by(GovernorInstance.governor, GovernorInstance.state)
            .order_by(GovernorInstance.governor, GovernorInstance.state)
        ).all()
        flagged: dict[str, int] = {}
        late: dict[str, int] = {}
        depth = dict.fromkeys(RETRY_LEVELS.values(), 0)
        for governor, state, n, n_attention, n_stuck in rows:
            instances.add_metric([governor, state], int(n))
            flagged[governor] = flagged.get(governor, 0) + int(n_attention)
            late[governor] = late.get(governor, 0) + int(n_stuck)
            if governor == "billing" and state in RETRY_LEVELS:
                depth[RETRY_LEVELS[state]] += int(n)
        for governor in sorted(flagged):
            attention.add_metric([governor], flagged[governor])
            stuck.add_metric([governor], late[governor])
        for level, n in depth.items():
            retry.add_metric([level], n)
        yield from (instances, attention, stuck, retry)

        window = payment_window(session, now)
        attempts = GaugeMetricFamily(
            "billing_payment_attempts",
            "Payment outcomes in the last hour (billing events).",
            labels=["outcome"],
        )
        attempts.add_metric(["received"], window.received)
        attempts.add_metric(["declined"], window.declined)
        yield attempts
        if window.rate is not None:
            yield GaugeMetricFamily(
                "billing_payment_success_rate",
                "Successful / attempted payments over the last hour (0..1; absent without attempts).",
                value=window.rate,
            )

        outbox = GaugeMetricFamily(
            "orchestrator_event_queue_depth", "Pending background work.", labels=["source"]
        )
        outbox.add_metric(["outbox"], queue_depth(session))
        if rq_length is not None:
            outbox.add_metric(["rq"], rq_length)
        yield outbox

        pending = session.scalar(
            select(func.count()).select_from(Approval).where(Approval.status == "pending")
        )
        yield GaugeMetricFamily(
            "console_pending_approvals", "Four-eyes requests waiting.", value=int(pending or 0)
        )

        failed, locked = session.execute(
            select(
                func.coalesce(func.sum(StaffUser.failed_logins), 0),
                func.count().filter(StaffUser.locked_until > now),
            ).select_from(StaffUser)
        ).one()
        yield GaugeMetricFamily(
            "console_failed_logins",
            "Failed sign-ins not yet cleared by a successful one (sum over staff users).",
            value=int(failed),
        )
        yield GaugeMetricFamily("console_locked_users", "Staff users locked out now.", value=int(locked))

        integrity = GaugeMetricFamily(
            "audit_trail_integrity_verified",
            "1 when the tenant's last recorded audit verification passed, else 0.",
            labels=["tenant"],
        )
        for tenant, ok in sorted(audit_integrity(session).items()):
            integrity.add_metric([tenant], 1 if ok else 0)
        yield integrity

    def _rq_length(self) -> int | None:
        """Jobs waiting in the RQ queue, or None when Redis cannot be reached (never fails a scrape)."""
        try:
            from redis import Redis
            from rq import Queue

            conn = Redis.from_url(str(self.redis_url), socket_timeout=1, socket_connect_timeout=1)
            return int(Queue(str(self.queue_name), connection=conn).count)
        except Exception:
            return None


def build_registry(
    db: Database, redis_url: str | None = None, queue_name: str | None = None
) -> CollectorRegistry:
    """A fresh registry with the database collector and this process's decision histogram."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(db, redis_url, queue_name))
    registry.register(DECISION_LATENCY)
    return registry
