"""The compliance audit desk: log browser, integrity verification, exports, KYC review queue."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select, text

from tests.web.conftest import MadeUser, sign_in
from webapp import audit
from webapp.cli import main
from webapp.db import Database
from webapp.models import AuditEntry, GovernorInstance
from webapp.policy import ROLES
from webapp.services.transitions import Actor, EventRequest, fire_event

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
ROW = re.compile(r'id="audit-(.+?)-(\d+)" class="audit-row"')
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def as_role(app: Flask, make_user: Callable[..., MadeUser]) -> Callable[[str], FlaskClient]:
    """A client signed in as a user holding one role (every user has a second factor)."""

    def make(role: str) -> FlaskClient:
        user = make_user(f"{role}@staff.test", [role], totp=True)
        client = app.test_client()
        assert sign_in(client, user.email, user.password, totp=user.totp_secret).status_code == 302
        return client

    return make


def _entries(db: Database, tenant: str, n: int, *, start: datetime = T0, **fields: str) -> None:
    with db.session() as s:
        for i in range(n):
            audit.append(
                s,
                tenant,
                actor=fields.get("actor", "u-ops"),
                role=fields.get("role", "support"),
                action=fields.get("action", "demo.event"),
                occurred_at=start + timedelta(minutes=i),
                customer_id=fields.get("customer_id"),
                payload={"i": i, "note": fields.get("note", "<b>x</b>")},
            )


def _rows(html: str) -> list[tuple[str, int]]:
    return [(t, int(s)) for t, s in ROW.findall(html)]


def _next(html: str) -> str | None:
    match = re.search(r'id="next-page" href="([^"]+)"', html)
    return match.group(1).replace("&amp;", "&") if match else None


def _last(db: Database, tenant: str) -> AuditEntry:
    with db.session() as s:
        return s.scalars(
            select(AuditEntry).where(AuditEntry.tenant_id == tenant).order_by(AuditEntry.seq.desc())
        ).first()  # type: ignore[return-value]


def _count(db: Database, tenant: str, action: str | None = None) -> int:
    query = select(func.count()).select_from(AuditEntry).where(AuditEntry.tenant_id == tenant)
    if action is not None:
        query = query.where(AuditEntry.action == action)
    with db.session() as s:
        return int(s.scalar(query) or 0)


# --------------------------------------------------------------------------- access


def test_desk_pages_follow_the_policy(as_role: Callable[[str], FlaskClient], web_db: Database) -> None:
    _entries(web_db, "t-1", 2)
    expected = {
        # role: (log, kyc, verify, export)
        "compliance": (200, 200, 200, 200),
        "auditor": (200, 200, 200, 403),
        "admin": (200, 200, 200, 403),
        "manager": (200, 200, 403, 403),
        "support": (403, 403, 403, 403),
        "finance": (403, 403, 403, 403),
    }
    assert set(expected) == set(ROLES)
    for role, (log, kyc, verify, export) in expected.items():
        client = as_role(role)
        page = client.get("/audit")
        assert page.status_code == log, role
        assert client.get("/compliance/kyc").status_code == kyc, role
        old = client.get("/audit/kyc")
        assert old.status_code == (301 if kyc == 200 else 403), role
        if kyc == 200:
            assert old.location.endswith("/compliance/kyc"), "the old URL follows the queue's move"
        # Roles without the log take a token from the approvals queue (every CSRF token is per session).
        token = CSRF.search(client.get("/approvals").get_data(as_text=True))
        token_value = token.group(1) if token else ""
        if log == 200:
            html = page.get_data(as_text=True)
            assert 'href="/audit" class="active"' in html, "the nav links to the desk"
            token_value = CSRF.search(html).group(1)  # type: ignore[union-attr]
            assert ('id="verify-form"' in html) is (verify == 200)
            assert ('id="export-jsonl"' in html) is (export == 200)
        response = client.post("/audit/verify", data={"csrf_token": token_value})
        assert response.status_code == verify, role
        assert client.get("/audit/export?format=csv").status_code == export, role


def test_anonymous_is_sent_to_sign_in(client: FlaskClient) -> None:
    assert client.get("/audit").status_code in (302, 401)


# --------------------------------------------------------------------------- browser


def test_filters_and_keyset_pagination_newest_first(
    as_role: Callable[[str], FlaskClient], web_db: Database
) -> None:
    _entries(web_db, "t-1", 60, action="demo.event")
    _entries(
        web_db,
        "t-1",
        5,
        start=T0 + timedelta(hours=5),
        action="pii.revealed",
        actor="u-ada",
        customer_id="c-7",
    )
    _entries(web_db, "t-2", 3, start=T0 + timedelta(hours=1), action="demo.event")
    client = as_role("auditor")

    first = client.get("/audit?tenant=t-1").get_data(as_text=True)
    rows = _rows(first)
    assert rows == [("t-1", s) for s in range(65, 15, -1)], "50 newest of t-1, newest first"
    second = client.get(_next(first) or "").get_data(as_text=True)
    assert _rows(second) == [("t-1", s) for s in range(15, 0, -1)]
    assert _next(second) is None

    by_action = _rows(client.get("/audit?action=pii.revealed").get_data(as_text=True))
    assert by_action == [("t-1", s) for s in (65, 64, 63, 62, 61)]
    assert _rows(client.get("/audit?customer=c-7&actor=u-ada").get_data(as_text=True)) == by_action
    assert _rows(client.get("/audit?actor=nobody").get_data(as_text=True)) == []
    window = client.get("/audit?since=2026-03-02T10:00&until=2026-03-02T10:02").get_data(as_text=True)
    assert _rows(window) == [("t-2", 2), ("t-2", 1)]
    bad = client.get("/audit?since=yesterday")
    assert bad.status_code == 422 and "not an ISO 8601" in bad.get_data(as_text=True)

    htmx = client.get("/audit?tenant=t-2", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert htmx.lstrip().startswith('<div id="results"') and "<html" not in htmx
    assert _rows(htmx) == [("t-2", 3), ("t-2", 2), ("t-2", 1)]


def test_payloads_are_formatted_and_escaped(as_role: Callable[[str], FlaskClient], web_db: Database) -> None:
    _entries(web_db, "t-1", 1, note="<script>alert(1)</script>")
    html = as_role("compliance").get("/audit?tenant=t-1").get_data(as_text=True)
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&#34;i&#34;: 0,\n  &#34;note&#34;" in html, "indented JSON"


def test_a_page_view_is_audited_without_pii_and_the_chain_still_verifies(
    as_role: Callable[[str], FlaskClient], web_db: Database
) -> None:
    _entries(web_db, "t-1", 3)
    client = as_role("manager")
    assert client.get("/audit?tenant=t-1&actor=ada@example.test&since=2026-03-01").status_code == 200
    entry = _last(web_db, "platform")
    assert entry.action == "audit.read" and entry.role == "manager"
    payload = json.loads(entry.payload)
    assert payload["filters"] == {
        "tenant": "t-1",
        "action": None,
        "actor_sha256": hashlib.sha256(b"ada@example.test").hexdigest(),
        "customer_sha256": None,
        "since": "2026-03-01T00:00:00+00:00",
        "until": None,
    }
    assert payload["entries_shown"] == 0 and "ada@" not in entry.payload
    assert client.get("/audit").status_code == 200
    assert _count(web_db, "platform", "audit.read") == 2
    assert _count(web_db, "t-1", "audit.read") == 0, "reads go to the platform chain only"
    with web_db.session() as s:
        assert audit.verify_tenant(s, "platform").ok
        assert audit.verify_tenant(s, "t-1").ok


# --------------------------------------------------------------------------- verify


def _tamper(db: Database, tenant: str, seq: int) -> None:
    with db.engine.begin() as conn:
        conn.execute(text("ALTER TABLE audit_entries DISABLE TRIGGER USER"))
        conn.execute(
            text(
                "UPDATE audit_entries SET payload = replace(payload, '\"i\":', '\"j\":')"
                " WHERE tenant_id = :t AND seq = :s"
            ),
            {"t": tenant, "s": seq},
        )
        conn.execute(text("ALTER TABLE audit_entries ENABLE TRIGGER USER"))


def _verify(client: FlaskClient, tenant: str = "") -> str:
    token = CSRF.search(client.get("/audit").get_data(as_text=True)).group(1)  # type: ignore[union-attr]
    response = client.post("/audit/verify", data={"csrf_token": token, "tenant": tenant})
    assert response.status_code == 200
    return response.get_data(as_text=True)


def _cell(html: str, tenant: str, cls: str) -> str:
    row = re.search(rf'<tr id="verify-{tenant}">(.*?)</tr>', html, re.S)
    assert row, tenant
    cell = re.search(rf'class="{cls}">([^<]*)<', row.group(1))
    assert cell
    return cell.group(1)


def test_verify_shows_the_first_broken_seq_after_tampering(
    as_role: Callable[[str], FlaskClient], web_db: Database
) -> None:
    _entries(web_db, "t-1", 5)
    _entries(web_db, "t-2", 2)
    client = as_role("auditor")
    clean = _verify(client)
    assert _cell(clean, "t-1", "first-broken") == "–" and _cell(clean, "t-1", "checked") == "5"
    assert 'id="verify-summary"' in clean and "badge-ok" in clean
    verified = _last(web_db, "t-1")
    assert verified.action == "audit.verified" and json.loads(verified.payload)["checked"] == 5

    _tamper(web_db, "t-1", 3)
    broken = _verify(client)
    assert _cell(broken, "t-1", "first-broken") == "3"
    assert "entry hash does not match" in broken
    assert _cell(broken, "t-2", "first-broken") == "–"
    summary = _last(web_db, "platform")
    assert summary.action == "audit.verified"
    body = json.loads(summary.payload)
    assert body["ok"] is False and body["tenants"]["t-1"]["first_broken_seq"] == 3
    assert _last(web_db, "t-1").seq == 6, "nothing appended to the broken chain"

    only = _verify(client, "t-2")
    assert 'id="verify-t-1"' not in only and _cell(only, "t-2", "checked") == "4"
    token = CSRF.search(client.get("/audit").get_data(as_text=True)).group(1)  # type: ignore[union-attr]
    assert client.post("/audit/verify", data={"csrf_token": token, "tenant": "t-9"}).status_code == 404


# --------------------------------------------------------------------------- export


def test_jsonl_export_verifies_offline_and_csv_has_the_same_rows(
    as_role: Callable[[str], FlaskClient], web_db: Database, tmp_path: Path
) -> None:
    _entries(web_db, "t-1", 7, note="Ünïcode ✓")
    _entries(web_db, "t-2", 4)
    client = as_role("compliance")

    before = _count(web_db, "t-1")
    response = client.get("/audit/export?format=csv&tenant=t-1")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert 'filename="audit-t-1-' in response.headers["Content-Disposition"]
    table = list(csv.reader(io.StringIO(response.get_data(as_text=True))))
    assert table[0] == list(audit.EXPORT_FIELDS)
    assert len(table) - 1 == before == 7
    exported = _last(web_db, "t-1")
    assert exported.action == "audit.exported"
    assert json.loads(exported.payload)["entries"] == 7 and json.loads(exported.payload)["complete"] is True

    before = _count(web_db, "t-1")
    jsonl = client.get("/audit/export?format=jsonl&tenant=t-1").get_data()
    lines = jsonl.decode().splitlines()
    assert len(lines) == before == 8
    assert [json.loads(line)["seq"] for line in lines] == list(range(1, 9))

    path = tmp_path / "audit.jsonl"
    path.write_bytes(jsonl)
    runner = CliRunner()
    ok = runner.invoke(main, ["audit", "verify", "--file", str(path)])
    assert ok.exit_code == 0, ok.output
    assert "t-1: intact, 8 entries" in ok.output

    tampered = jsonl.replace(b'"i\\":3', b'"i\\":4', 1)
    assert tampered != jsonl
    path.write_bytes(tampered)
    bad = runner.invoke(main, ["audit", "verify", "--file", str(path)])
    assert bad.exit_code == 1 and "BROKEN at seq 4" in bad.output


def test_export_of_every_chain_and_since(as_role: Callable[[str], FlaskClient], web_db: Database) -> None:
    _entries(web_db, "t-1", 3)
    _entries(web_db, "t-2", 3, start=T0 + timedelta(days=1))
    client = as_role("compliance")
    platform = _count(web_db, "platform")
    every = client.get("/audit/export").get_data(as_text=True).splitlines()
    keys = [(json.loads(x)["tenant_id"], json.loads(x)["seq"]) for x in every]
    assert keys[:platform] == [("platform", n) for n in range(1, platform + 1)], "sign-ins"
    assert keys[platform:] == [
        ("t-1", 1),
        ("t-1", 2),
        ("t-1", 3),
        ("t-2", 1),
        ("t-2", 2),
        ("t-2", 3),
    ]
    # From the first entry at or after ``since``: a contiguous tail (seq 4 is the first export's record).
    since = client.get("/audit/export?format=jsonl&tenant=t-2&since=2026-03-03T09:01").get_data(as_text=True)
    tail = [json.loads(x) for x in since.splitlines()]
    assert [(x["tenant_id"], x["seq"]) for x in tail] == [("t-2", 2), ("t-2", 3), ("t-2", 4)]
    assert tail[2]["action"] == "audit.exported"
    assert client.get("/audit/export?format=xml").status_code == 422
    assert client.get("/audit/export?since=soon").status_code == 422
    assert client.get("/audit/export?tenant=t-9").status_code == 404


# --------------------------------------------------------------------------- KYC queue


def test_kyc_queue_lists_an_onboarding_customer_under_manual_review(
    as_role: Callable[[str], FlaskClient], web_db: Database
) -> None:
    from webapp.services.setup import activate_customer, ensure_catalog, ensure_tenant, signup_customer

    with web_db.session() as s:
        ensure_tenant(s, "t-1", T0)
        ensure_catalog(s, T0)
    for cid in ("c-review", "c-fine"):
        with web_db.session() as s:
            signup_customer(
                s, "t-1", cid, name="Ada Example", email=f"{cid}@example.test", tier="starter", now=T0
            )
    with web_db.session() as s:
        activate_customer(s, "t-1", "c-fine", now=T0)
    with web_db.session() as s:
        account = s.scalars(
            select(GovernorInstance).where(
                GovernorInstance.customer_id == "c-review", GovernorInstance.governor == "customer_account"
            )
        ).one()
        assert account.state == "onboarding"
        result = fire_event(
            s,
            EventRequest("t-1", "kyc_manual_review", account.id, {"provider_request_id": "kyc-77"}),
            Actor("kyc-provider", "sys"),
            T0 + timedelta(hours=1),
        )
        assert result.status == 200, result.body
        account_id = account.id
    html = as_role("compliance").get("/audit/kyc", follow_redirects=True).get_data(as_text=True)
    row = re.search(rf'<tr id="kyc-{re.escape(account_id)}"[^>]*>(.*?)</tr>', html, re.S)
    assert row, html[:2000]
    assert 'href="/customers/c-review"' in row.group(1)
    assert "KYC is waiting for a manual review" in row.group(1)
    assert "onboarding" in row.group(1)
    assert "/customers/c-fine" not in html


@pytest.mark.parametrize("field", ["actor", "occurred_at", "hash", "prev_hash", "payload"])
def test_changing_one_byte_of_an_exported_entry_breaks_offline_verification_there(
    as_role: Callable[[str], FlaskClient], web_db: Database, tmp_path: Path, field: str
) -> None:
    _entries(web_db, "t-1", 6)
    jsonl = as_role("compliance").get("/audit/export?format=jsonl&tenant=t-1").get_data()
    path = tmp_path / "audit.jsonl"
    path.write_bytes(jsonl)
    runner = CliRunner()
    assert runner.invoke(main, ["audit", "verify", "--file", str(path)]).exit_code == 0
    lines = jsonl.split(b"\n")
    record = json.loads(lines[3])
    assert record["seq"] == 4
    key = f'"{field}":'.encode()
    # One byte inside the value of ``field`` on the fourth line (a digit or hex letter, swapped).
    at = lines[3].index(key) + len(key) + 3
    original = lines[3][at : at + 1]
    lines[3] = lines[3][:at] + (b"0" if original != b"0" else b"1") + lines[3][at + 1 :]
    tampered = b"\n".join(lines)
    assert sum(a != b for a, b in zip(tampered, jsonl, strict=True)) == 1
    path.write_bytes(tampered)
    bad = runner.invoke(main, ["audit", "verify", "--file", str(path)])
    assert bad.exit_code == 1, bad.output
    # Reported at the changed entry (or the next, when the byte was in its own hash), or as an
    # unreadable line 4 when the byte broke the JSON itself.
    assert any(where in bad.output for where in ("BROKEN at seq 4", "BROKEN at seq 5", "line 4")), bad.output
