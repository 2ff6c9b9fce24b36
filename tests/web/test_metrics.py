"""``GET /metrics``: Prometheus text, no sign-in, values read from the database at scrape time."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from webapp import audit
from webapp.db import Database
from webapp.metrics import observe_decision
from webapp.models import GovernorInstance, StaffUser
from webapp.models.governance import TransitionRecord
from webapp.models.work import OutboxMessage

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def make_customer(db: Database, customer_id: str, tenant_id: str = "t-1") -> str:
    """A signed-up, activated customer made through the real setup services."""
    from webapp.services.setup import activate_customer, ensure_catalog, ensure_tenant, signup_customer

    with db.session() as s:
        ensure_tenant(s, tenant_id, T0)
        ensure_catalog(s, T0)
    with db.session() as s:
        signup_customer(
            s, tenant_id, customer_id, name="Ada", email=f"{customer_id}@example.test", tier="starter", now=T0
        )
    with db.session() as s:
        activate_customer(s, tenant_id, customer_id, now=T0)
    return customer_id


def add_payment(db: Database, event: str, at: datetime) -> None:
    """A hand-made billing history row (payment outcome) at ``at``."""
    with db.session() as s:
        s.add(
            TransitionRecord(
                tenant_id="t-1",
                customer_id="c-1",
                instance_id="inv-x",
                governor="billing",
                row_id="B04" if event == "payment_received" else "B05",
                event=event,
                from_state="payment_pending",
                to_state="payment_received" if event == "payment_received" else "payment_failed",
                state_seq=2,
                actor="sys",
                role="sys",
                event_id=uuid.uuid4().hex,
                occurred_at=at,
            )
        )


def scrape(client: FlaskClient) -> dict[str, list[tuple[dict[str, str], float]]]:
    """``/metrics`` parsed: sample name → [(labels, value)]."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return samples


def by(samples: list[tuple[dict[str, str], float]], *keys: str) -> dict[tuple[str, ...], float]:
    return {tuple(labels[k] for k in keys): value for labels, value in samples}


def test_metrics_match_the_database(
    app: Flask, client: FlaskClient, web_db: Database, make_user: Callable[..., Any]
) -> None:
    make_customer(web_db, "c-1")
    make_customer(web_db, "c-2")
    now = datetime.now(UTC)
    add_payment(web_db, "payment_received", now - timedelta(minutes=10))
    add_payment(web_db, "payment_received", now - timedelta(minutes=20))
    add_payment(web_db, "payment_received", now - timedelta(minutes=30))
    add_payment(web_db, "payment_declined", now - timedelta(minutes=40))
    add_payment(web_db, "payment_declined", now - timedelta(hours=2))  # outside the 1 h window
    user = make_user("locked@staff.test", ["support"])
    with web_db.session() as s:
        staff = s.get(StaffUser, user.id)
        assert staff is not None
        staff.failed_logins = 5
        staff.locked_until = now + timedelta(minutes=15)
        audit.append(
            s, "t-1", actor="cli", role="sys", action="audit.verified", occurred_at=now, payload={"ok": True}
        )
        audit.append(
            s,
            "platform",
            actor="cli",
            role="sys",
            action="audit.verified",
            occurred_at=now,
            payload={"ok": False, "tenants": {"t-9": {"ok": False}}},
        )

    with web_db.session() as s:
        expected_instances = {
            (g, st): float(n)
            for g, st, n in s.execute(
                select(GovernorInstance.governor, GovernorInstance.state, func.count()).group_by(
                    GovernorInstance.governor, GovernorInstance.state
                )
            )
        }
        expected_transitions = {
            (g, f or "", t): float(n)
            for g, f, t, n in s.execute(
                select(
                    TransitionRecord.governor,
                    TransitionRecord.from_state,
                    TransitionRecord.to_state,
                    func.count(),
                ).group_by(TransitionRecord.governor, TransitionRecord.from_state, TransitionRecord.to_state)
            )
        }
        undelivered = s.scalar(
            select(func.count()).select_from(OutboxMessage).where(OutboxMessage.delivered_at.is_(None))
        )

    samples = scrape(client)  # no sign-in needed

    assert len(expected_instances) > 4
    assert by(samples["governor_instances"], "governor", "state") == expected_instances
    assert sum(expected_instances.values()) == sum(v for _, v in samples["governor_instances"])
    assert (
        by(samples["governor_transitions_total"], "governor", "from_state", "to_state")
        == expected_transitions
    )
    assert expected_transitions[("billing", "payment_pending", "payment_received")] == 3.0
    assert by(samples["billing_payment_attempts"], "outcome") == {("received",): 3.0, ("declined",): 1.0}
    assert samples["billing_payment_success_rate"] == [({}, 0.75)]
    assert by(samples["billing_retry_depth"], "retry_level") == {
        ("1",): 0.0,
        ("2",): 0.0,
        ("3",): 0.0,
        ("collection_agency",): 0.0,
    }
    assert by(samples["orchestrator_event_queue_depth"], "source") == {("outbox",): float(undelivered or 0)}
    assert samples["console_pending_approvals"] == [({}, 0.0)]
    assert samples["console_failed_logins"] == [({}, 5.0)]
    assert samples["console_locked_users"] == [({}, 1.0)]
    assert by(samples["audit_trail_integrity_verified"], "tenant") == {("t-1",): 1.0, ("t-9",): 0.0}
    assert "governor_attention_instances" in samples
    assert "governor_stuck_instances" in samples


def test_instance_gauge_follows_the_database_between_scrapes(client: FlaskClient, web_db: Database) -> None:
    make_customer(web_db, "c-1")
    first = by(scrape(client)["governor_instances"], "governor", "state")
    make_customer(web_db, "c-2")
    second = by(scrape(client)["governor_instances"], "governor", "state")
    assert second[("customer_account", "active")] == first[("customer_account", "active")] + 1


def test_decision_latency_histogram_is_exposed(client: FlaskClient, web_db: Database) -> None:
    observe_decision("billing-test", 0.3)
    samples = scrape(client)
    buckets = {
        labels["le"]: value
        for labels, value in samples["orchestrator_decision_latency_seconds_bucket"]
        if labels["governor"] == "billing-test"
    }
    assert buckets["0.25"] == 0.0
    assert buckets["0.5"] >= 1.0
    assert buckets["+Inf"] == buckets["0.5"]


def test_two_apps_have_their_own_registries(app: Flask, pg_url: str, web_db: Database) -> None:
    from tests.web.conftest import make_app

    other = make_app(pg_url, app.extensions["runtime"])
    assert app.test_client().get("/metrics").status_code == 200
    assert other.test_client().get("/metrics").status_code == 200
    assert app.extensions["metrics_registry"] is not other.extensions["metrics_registry"]


def test_rq_queue_length_is_reported_when_redis_is_configured(web_db: Database) -> None:
    from redis import Redis
    from rq import Queue

    from webapp.metrics import build_registry

    url, name = "redis://127.0.0.1:6379/0", f"metrics-test-{uuid.uuid4().hex[:8]}"
    queue = Queue(name, connection=Redis.from_url(url))
    try:
        queue.enqueue("builtins.print", "a")
        queue.enqueue("builtins.print", "b")
        registry = build_registry(web_db, url, name)
        assert registry.get_sample_value("orchestrator_event_queue_depth", {"source": "rq"}) == 2.0
        assert registry.get_sample_value("orchestrator_event_queue_depth", {"source": "outbox"}) == 0.0
    finally:
        queue.empty()
        queue.delete(delete_jobs=True)


def test_unreachable_redis_leaves_the_rq_sample_out(web_db: Database) -> None:
    from webapp.metrics import build_registry

    registry = build_registry(web_db, "redis://127.0.0.1:1/0", "nowhere")
    assert registry.get_sample_value("orchestrator_event_queue_depth", {"source": "rq"}) is None
    assert registry.get_sample_value("orchestrator_event_queue_depth", {"source": "outbox"}) == 0.0
