"""CONSOLE.md §2.3 alert rules: fire on a hand-made fixture, stay single while open, resolve when clear."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from webapp import audit
from webapp.db import Database
from webapp.models import GovernorInstance
from webapp.models.background import Alert
from webapp.models.governance import TransitionRecord
from webapp.models.work import OutboxMessage
from webapp.services.alerts import RESOLVED_BY, RULES, evaluate_alerts

NOW = datetime(2026, 3, 5, 12, 0, tzinfo=UTC)
RULES_FILE = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yml"
PROMETHEUS_ONLY = {"decision_latency", "orchestrator_down"}
"""Rules in the rules file that need data the database does not hold."""


def history(db: Database, n: int, at: datetime, *, governor: str, event: str, to_state: str) -> None:
    with db.session() as s:
        for i in range(n):
            s.add(
                TransitionRecord(
                    tenant_id="t-1",
                    customer_id=f"c-{i}",
                    instance_id=f"{governor}-{i}",
                    governor=governor,
                    row_id="X",
                    event=event,
                    from_state="x",
                    to_state=to_state,
                    state_seq=2,
                    actor="sys",
                    role="sys",
                    event_id=uuid.uuid4().hex,
                    occurred_at=at,
                )
            )


def evaluate(db: Database, now: datetime = NOW, **settings: float) -> dict[str, list[str]]:
    with db.session() as s:
        report = evaluate_alerts(s, now, {f"alerts.{k}": v for k, v in settings.items()} or None)
    return {"raised": report.raised, "resolved": report.resolved}


def alerts(db: Database) -> list[Alert]:
    with db.session() as s:
        return list(s.scalars(select(Alert).order_by(Alert.id)))


def test_retry_escalation_fires_once_and_resolves(db: Database) -> None:
    history(
        db,
        51,
        NOW - timedelta(minutes=30),
        governor="billing",
        event="retry_window_elapsed",
        to_state="retry_3",
    )
    assert evaluate(db) == {"raised": ["retry_escalation:billing"], "resolved": []}
    assert evaluate(db, NOW + timedelta(minutes=1)) == {"raised": [], "resolved": []}
    [alert] = alerts(db)
    assert alert.level == "high"
    assert alert.acknowledged_at is None
    assert "51 invoices reached retry 3" in alert.message
    # An hour later the 51 rows are out of the window.
    assert evaluate(db, NOW + timedelta(minutes=31)) == {
        "raised": [],
        "resolved": ["retry_escalation:billing"],
    }
    [alert] = alerts(db)
    assert alert.acknowledged_by == RESOLVED_BY
    assert alert.job_id.endswith(":resolved")
    # A new burst raises a new alert.
    history(
        db,
        51,
        NOW + timedelta(minutes=40),
        governor="billing",
        event="retry_window_elapsed",
        to_state="retry_3",
    )
    assert evaluate(db, NOW + timedelta(minutes=41))["raised"] == ["retry_escalation:billing"]
    assert len(alerts(db)) == 2


def test_fifty_retries_are_not_more_than_fifty(db: Database) -> None:
    history(
        db,
        50,
        NOW - timedelta(minutes=5),
        governor="billing",
        event="retry_window_elapsed",
        to_state="retry_3",
    )
    assert evaluate(db) == {"raised": [], "resolved": []}
    assert alerts(db) == []


def test_fraud_volume(db: Database) -> None:
    history(
        db,
        51,
        NOW - timedelta(minutes=5),
        governor="compliance_audit",
        event="anomaly_detected",
        to_state="fraud_detection_active",
    )
    assert evaluate(db)["raised"] == ["fraud_volume:compliance_audit"]


def test_payment_failure_needs_ten_minutes_below_95_percent(db: Database) -> None:
    # 1 success, 9 declines 20 minutes ago: the 1 h windows ending now, -5 and -10 min all see 10 %.
    history(
        db,
        1,
        NOW - timedelta(minutes=20),
        governor="billing",
        event="payment_received",
        to_state="payment_received",
    )
    history(
        db,
        9,
        NOW - timedelta(minutes=20),
        governor="billing",
        event="payment_declined",
        to_state="payment_failed",
    )
    assert evaluate(db)["raised"] == ["payment_processing_failure:billing"]
    [alert] = alerts(db)
    assert alert.level == "critical"
    assert "10.0% (1/10 in 1 h)" in alert.message


def test_payment_failure_that_started_five_minutes_ago_does_not_fire(db: Database) -> None:
    history(
        db,
        9,
        NOW - timedelta(minutes=3),
        governor="billing",
        event="payment_declined",
        to_state="payment_failed",
    )
    assert evaluate(db)["raised"] == []


def test_payment_rate_recovering_resolves(db: Database) -> None:
    history(
        db,
        1,
        NOW - timedelta(minutes=20),
        governor="billing",
        event="payment_declined",
        to_state="payment_failed",
    )
    assert evaluate(db)["raised"] == ["payment_processing_failure:billing"]
    history(db, 40, NOW, governor="billing", event="payment_received", to_state="payment_received")
    assert evaluate(db)["resolved"] == ["payment_processing_failure:billing"]


def test_queue_backing_up_needs_five_minutes_over_eighty_percent(db: Database) -> None:
    def outbox(n: int, at: datetime) -> None:
        with db.session() as s:
            for _ in range(n):
                s.add(
                    OutboxMessage(job_id=uuid.uuid4().hex, tenant_id="t-1", job="run_effect", created_at=at)
                )

    outbox(9, NOW - timedelta(minutes=1))
    assert evaluate(db, queue_capacity=10)["raised"] == []  # over 8, but not for 5 minutes yet
    outbox(9, NOW - timedelta(minutes=6))
    assert evaluate(db, queue_capacity=10)["raised"] == ["queue_backing_up:outbox"]
    assert evaluate(db)["resolved"] == ["queue_backing_up:outbox"]  # default cap 1000: 18 is fine


def test_compliance_violation_per_instance(db: Database, make_customer: Callable[..., str]) -> None:
    make_customer("c-1", active=True)
    with db.session() as s:
        row = s.scalars(
            select(GovernorInstance).where(
                GovernorInstance.customer_id == "c-1", GovernorInstance.governor == "compliance_audit"
            )
        ).one()
        instance_id, state = row.id, row.state
        row.state = "non_compliant"
    assert evaluate(db)["raised"] == [f"compliance_violation:{instance_id}"]
    [alert] = alerts(db)
    assert (alert.customer_id, alert.instance_id, alert.tenant_id, alert.level) == (
        "c-1",
        instance_id,
        "t-1",
        "critical",
    )
    with db.session() as s:
        found = s.get(GovernorInstance, instance_id)
        assert found is not None
        found.state = state
    assert evaluate(db)["resolved"] == [f"compliance_violation:{instance_id}"]


def test_security_event_for_a_locked_user_and_acknowledgement_does_not_refire(db: Database) -> None:
    from webapp.services.users import create_user

    with db.session() as s:
        user = create_user(
            s, "eve@staff.test", ["support"], "correct horse battery staple", granted_by="t", now=NOW
        )
        user.failed_logins = 5
        user.locked_until = NOW + timedelta(minutes=15)
        user_id = user.id
    assert evaluate(db)["raised"] == [f"security_event:user:{user_id}"]
    with db.session() as s:
        [alert] = s.scalars(select(Alert)).all()
        alert.acknowledged_at, alert.acknowledged_by = NOW, "u-sec"
    assert evaluate(db, NOW + timedelta(minutes=1)) == {"raised": [], "resolved": []}
    assert evaluate(db, NOW + timedelta(minutes=16)) == {
        "raised": [],
        "resolved": [f"security_event:user:{user_id}"],
    }
    [alert] = alerts(db)
    assert alert.acknowledged_by == "u-sec"  # the person's acknowledgement is kept
    assert alert.job_id.endswith(":resolved")


def test_data_consistency_from_the_last_recorded_verification(db: Database) -> None:
    with db.session() as s:
        audit.append(
            s, "t-1", actor="cli", role="sys", action="audit.verified", occurred_at=NOW, payload={"ok": True}
        )
        audit.append(
            s,
            "platform",
            actor="cli",
            role="sys",
            action="audit.verified",
            occurred_at=NOW + timedelta(minutes=1),
            payload={"ok": False, "tenants": {"t-1": {"ok": False, "first_broken_seq": 1}}},
        )
    assert evaluate(db, NOW + timedelta(minutes=2))["raised"] == ["data_consistency:t-1"]
    [alert] = alerts(db)
    assert alert.tenant_id == "t-1"
    with db.session() as s:
        audit.append(
            s,
            "t-1",
            actor="cli",
            role="sys",
            action="audit.verified",
            occurred_at=NOW + timedelta(minutes=3),
            payload={"ok": True},
        )
    assert evaluate(db, NOW + timedelta(minutes=4))["resolved"] == ["data_consistency:t-1"]


def test_nothing_fires_on_an_empty_database(db: Database) -> None:
    assert evaluate(db) == {"raised": [], "resolved": []}


def test_rules_file_has_the_evaluator_rules() -> None:
    import yaml

    document = yaml.safe_load(RULES_FILE.read_text())
    rules = [rule for group in document["groups"] for rule in group["rules"]]
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    assert set(names) - PROMETHEUS_ONLY == set(RULES)
    levels = {rule["alert"]: rule["labels"]["severity"] for rule in rules}
    assert {name: levels[name] for name in RULES} == {name: rule.level for name, (rule, _) in RULES.items()}
    assert all(rule["expr"] for rule in rules)
