"""The alerts panel: open alerts with their escalation tier, acknowledging (audited), role checks."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from tests.web.conftest import MadeUser, sign_in
from webapp import audit
from webapp.db import Database
from webapp.models import AuditEntry
from webapp.models.background import Alert
from webapp.services.alerts import escalation_tier

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def as_role(app: Flask, make_user: Callable[..., MadeUser]) -> Callable[[str], FlaskClient]:
    def make(role: str) -> FlaskClient:
        user = make_user(f"{role}@staff.test", [role], totp=True)
        client = app.test_client()
        assert sign_in(client, user.email, user.password, totp=user.totp_secret).status_code == 302
        return client

    return make


def _alert(db: Database, level: str, minutes_ago: int, message: str, **extra: str) -> int:
    now = datetime.now(UTC)
    with db.session() as s:
        alert = Alert(
            job_id=f"alert-rule:test:{message}:",
            tenant_id=extra.get("tenant_id", "platform"),
            customer_id=extra.get("customer_id"),
            level=level,
            message=message,
            created_at=now - timedelta(minutes=minutes_ago),
        )
        s.add(alert)
        s.flush()
        return alert.id


def _token(page: str) -> str:
    match = CSRF.search(page)
    assert match
    return match.group(1)


@pytest.mark.parametrize(
    ("level", "minutes", "tier"),
    [
        ("critical", 0, "Tier 1 SRE"),
        ("critical", 4, "Tier 1 SRE"),
        ("high", 5, "Tier 2 Eng Manager"),
        ("high", 16, "Tier 3 Director"),
        ("high", 45, "Tier 3 Director"),
        ("critical", 30, "Tier 4 VP Eng"),
        ("medium", 90, "email only"),
    ],
)
def test_escalation_ladder(level: str, minutes: int, tier: str) -> None:
    assert escalation_tier(level, timedelta(minutes=minutes)) == tier


def test_open_alerts_most_severe_first_with_tier_and_escaped_message(
    web_db: Database, as_role: Callable[[str], FlaskClient]
) -> None:
    high = _alert(web_db, "high", 20, "Queue backing up: depth 900")
    critical = _alert(web_db, "critical", 2, "Security event: <script>alert(1)</script>")
    auditor = as_role("auditor")
    page = auditor.get("/alerts/")
    assert page.status_code == 200
    body = page.get_data(as_text=True)
    assert body.index(f'id="alert-{critical}"') < body.index(f'id="alert-{high}"')
    assert "<script>alert(1)</script>" not in body and "&lt;script&gt;" in body
    assert "Tier 3 Director" in body and "Tier 1 SRE" in body
    # Auditors are read-only: the button is disabled with the reason, and the server refuses it.
    assert "disabled" in body and "needs" in body
    refused = auditor.post(f"/alerts/{high}/acknowledge", data={"csrf_token": _token(body)})
    assert refused.status_code == 403


def test_acknowledge_is_audited_and_only_once(
    web_db: Database, as_role: Callable[[str], FlaskClient]
) -> None:
    alert_id = _alert(web_db, "critical", 7, "Data consistency: chain broken", tenant_id="t-1")
    manager = as_role("manager")
    page = manager.get("/alerts/").get_data(as_text=True)
    done = manager.post(
        f"/alerts/{alert_id}/acknowledge", data={"csrf_token": _token(page)}, headers={"HX-Request": "true"}
    )
    assert done.status_code == 200
    fragment = done.get_data(as_text=True)
    assert f"Alert {alert_id} acknowledged." in fragment and "<html" not in fragment
    assert 'id="alerts-none"' in fragment
    with web_db.session() as s:
        row = s.get(Alert, alert_id)
        assert row is not None and row.acknowledged_at is not None and row.acknowledged_by
        entry = s.scalars(select(AuditEntry).where(AuditEntry.action == "alert.acknowledged")).one()
        assert entry.tenant_id == "t-1" and entry.actor == row.acknowledged_by
        assert audit.verify_tenant(s, "t-1").ok
    again = manager.post(f"/alerts/{alert_id}/acknowledge", data={"csrf_token": _token(page)})
    assert again.status_code == 409
    assert "already acknowledged" in again.get_data(as_text=True)
    missing = manager.post("/alerts/999999/acknowledge", data={"csrf_token": _token(page)})
    assert missing.status_code == 409


def test_count_badge(web_db: Database, as_role: Callable[[str], FlaskClient]) -> None:
    client = as_role("support")
    assert ">0 open alerts<" in client.get("/alerts/count").get_data(as_text=True)
    _alert(web_db, "high", 1, "Retry escalation: 51 in 1h")
    assert ">1 open alert<" in client.get("/alerts/count").get_data(as_text=True)


def test_signed_out_is_sent_to_sign_in(client: FlaskClient) -> None:
    assert client.get("/alerts/").status_code in (302, 401)
