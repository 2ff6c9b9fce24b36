"""The adaptive fraud check end to end: the timer asks the scoring provider, its answer moves the account.

GOVERNORS.md §5.3 (A07–A09): an active account is re-scored every 7 d (0–30), 3 d (31–70) or daily.
The timer fires ``fraud_check_due`` (Ax16) through the sweep; that writes an outbox row for the
``account_request_fraud_score`` effect, whose job asks the fraud scorer and feeds ``fraud_check(score)``
back through the service, which re-arms the timer by band or suspends/escalates the account.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from tests.jobs.conftest import instance_of, new_customer
from webapp.adapters.fraud import SandboxFraudScorer, TransientFraudError
from webapp.effects import execute
from webapp.models import DueTimer, OutboxMessage
from webapp.runtime import Runtime
from webapp.services.timers import sweep_timers

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _collect(ids: list[int]) -> None:
    return None


def _fraud_timer(rt: Runtime, customer: str) -> DueTimer:
    with rt.db.session() as s:
        account = instance_of(s, customer, "customer_account")
        row = s.scalars(
            select(DueTimer).where(DueTimer.instance_id == account.id, DueTimer.name == "fraud_check")
        ).one()
        s.expunge(row)
        return row


def _check_once(rt: Runtime, customer: str) -> tuple[datetime, int]:
    """Let the fraud-check timer fall due, sweep, run the scoring job; (due time, outbox id run)."""
    timer = _fraud_timer(rt, customer)
    assert timer.event == "fraud_check_due" and timer.due_at is not None
    written: list[int] = []
    report = sweep_timers(rt, timer.due_at + timedelta(seconds=1), on_commit=written.extend)
    assert report.fired >= 1 and report.failed == 0
    with rt.db.session() as s:
        (job,) = [
            i
            for i in written
            if (row := s.get(OutboxMessage, i)) is not None
            and row.args.get("effect") == "account_request_fraud_score"
        ]
    result = execute(rt, job, now=timer.due_at + timedelta(seconds=2))
    assert result.status == "done", result
    return timer.due_at, job


def test_sandbox_scorer_is_deterministic_by_reference() -> None:
    scorer = SandboxFraudScorer()
    low = scorer.score("k-1", "c-plain")
    assert 0 <= low.score <= 30 and scorer.score("k-2", "c-plain").score == low.score
    assert (
        scorer.score("k-1", "c-plain").request_id
        == low.request_id
        != scorer.score("k-2", "c-plain").request_id
    )
    assert scorer.score("k", "c-fraud_medium").score == 50
    assert scorer.score("k", "c-fraud_high").score == 80
    assert scorer.score("k", "c-fraud_critical").score == 95
    with pytest.raises(TransientFraudError):
        scorer.score("k", "c-fraud_timeout")


def test_a_low_score_keeps_the_account_active_and_rearms_the_weekly_check(rt: Runtime) -> None:
    customer = new_customer(rt, "c-plain", now=T0)
    due, _ = _check_once(rt, customer)
    with rt.db.session() as s:
        account = instance_of(s, customer, "customer_account")
        assert account.state == "active"
        assert 0 <= account.data["fraud_score"] <= 30
    again = _fraud_timer(rt, customer)
    assert again.due_at == due + timedelta(seconds=2) + timedelta(days=7)


def test_a_high_score_suspends_and_the_daily_check_continues(rt: Runtime) -> None:
    customer = new_customer(rt, "c-fraud_high-1", now=T0)
    _, _ = _check_once(rt, customer)
    with rt.db.session() as s:
        account = instance_of(s, customer, "customer_account")
        assert account.state == "suspended" and account.data["fraud_score"] == 80
    assert _fraud_timer(rt, customer).event == "fraud_check_due"


def test_a_critical_score_sends_the_account_to_review(rt: Runtime) -> None:
    customer = new_customer(rt, "c-fraud_critical-1", now=T0)
    _check_once(rt, customer)
    with rt.db.session() as s:
        assert instance_of(s, customer, "customer_account").state == "under_review"


def test_running_the_scoring_job_twice_applies_once(rt: Runtime) -> None:
    customer = new_customer(rt, "c-plain-2", now=T0)
    due, job = _check_once(rt, customer)
    before = _fraud_timer(rt, customer).due_at
    assert execute(rt, job, now=due + timedelta(minutes=5)).status != "failed"
    assert _fraud_timer(rt, customer).due_at == before
