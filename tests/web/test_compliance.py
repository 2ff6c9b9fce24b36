"""The compliance desk (/compliance/): policy, investigations, SAR bundle and clock, erasure four-eyes."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from tests.web.conftest import MadeUser, fresh_code, sign_in
from webapp import audit
from webapp.db import Database
from webapp.models import AuditEntry, Customer, GovernorInstance, PrivacyRequest
from webapp.policy import ROLES
from webapp.services import sar
from webapp.services.transitions import Actor, EventRequest, fire_event
from webapp.validation import CARD_MESSAGE

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=3)
CSRF = re.compile(r'name="csrf_token" (?:type="hidden" )?value="([^"]+)"')
CARD = "4111 1111 1111 1111"


@pytest.fixture
def as_user(app: Flask, make_user: Callable[..., MadeUser]) -> Callable[..., tuple[FlaskClient, MadeUser]]:
    """A signed-in client for a new user with ``roles`` (second factor enrolled)."""

    def make(email: str, *roles: str) -> tuple[FlaskClient, MadeUser]:
        user = make_user(email, list(roles), totp=True)
        client = app.test_client()
        assert sign_in(client, user.email, user.password, totp=user.totp_secret).status_code == 302
        return client, user

    return make


def _token(client: FlaskClient, path: str = "/compliance/") -> str:
    match = CSRF.search(client.get(path).get_data(as_text=True))
    assert match, path
    return match.group(1)


def _customers(db: Database, *ids: str, active: bool = True) -> None:
    from webapp.services.setup import activate_customer, ensure_catalog, ensure_tenant, signup_customer

    with db.session() as s:
        ensure_tenant(s, "t-1", T0)
        ensure_catalog(s, T0)
    for cid in ids:
        with db.session() as s:
            signup_customer(
                s, "t-1", cid, name=f"Name of {cid}", email=f"{cid}@example.test", tier="starter", now=T0
            )
        if active:
            with db.session() as s:
                activate_customer(s, "t-1", cid, now=T0)


def _instance(db: Database, customer_id: str, governor: str) -> GovernorInstance:
    with db.session() as s:
        row = s.scalars(
            select(GovernorInstance).where(
                GovernorInstance.customer_id == customer_id, GovernorInstance.governor == governor
            )
        ).one()
        s.expunge(row)
        return row


def _fire(db: Database, customer_id: str, governor: str, event: str, payload: dict, at: datetime) -> None:
    row = _instance(db, customer_id, governor)
    with db.session() as s:
        body = {"reason": "compliance desk test setup", **payload}
        setup = Actor("u-cmp-setup", "compliance")
        result = fire_event(s, EventRequest("t-1", event, row.id, body), setup, at)
        assert result.status == 200, result.body


# --------------------------------------------------------------------------- access


def test_desk_follows_the_policy(
    as_user: Callable[..., tuple[FlaskClient, MadeUser]], web_db: Database
) -> None:
    expected = {
        # role: (desk + kyc, forms shown)
        "compliance": (200, True),
        "auditor": (200, False),
        "manager": (200, False),
        "admin": (200, False),
        "support": (403, False),
        "finance": (403, False),
    }
    assert set(expected) == set(ROLES)
    for role, (status, forms) in expected.items():
        client, _ = as_user(f"{role}@staff.test", role)
        page = client.get("/compliance/")
        assert page.status_code == status, role
        assert client.get("/compliance/kyc").status_code == status, role
        if status == 200:
            html = page.get_data(as_text=True)
            assert 'href="/compliance/" class="active"' in html, "the nav links to the desk"
            assert 'id="kyc-link" href="/compliance/kyc"' in html
            assert ('id="sar-form"' in html) is forms and ('id="erasure-form"' in html) is forms, role
            token = CSRF.search(html).group(1)  # type: ignore[union-attr]
        else:
            token = _token(client, "/auth/account")
        # Executing is for compliance officers only (support may file a SAR), whatever the page showed.
        post = client.post("/compliance/sar", data={"csrf_token": token, "customer_id": "c-x", "reason": "x"})
        assert post.status_code == (422 if role in ("compliance", "support") else 403), role


def test_anonymous_is_sent_to_sign_in(client: FlaskClient) -> None:
    assert client.get("/compliance/").status_code in (302, 401)


# --------------------------------------------------------------------------- investigations


def test_investigation_list_matches_the_fixture(
    as_user: Callable[..., tuple[FlaskClient, MadeUser]], web_db: Database
) -> None:
    _customers(web_db, "c-inv", "c-rem", "c-nc", "c-ok")
    opened = T0 + timedelta(hours=1)
    _fire(
        web_db,
        "c-inv",
        "compliance_audit",
        "violation_detected",
        {"kind": "violation", "description": "late DPA"},
        opened,
    )
    for cid in ("c-rem", "c-nc"):
        _fire(
            web_db,
            cid,
            "compliance_audit",
            "violation_detected",
            {"kind": "violation", "description": "x"},
            opened,
        )
        _fire(
            web_db,
            cid,
            "compliance_audit",
            "violation_confirmed",
            {
                "violations": [{"framework": "GDPR", "control": "art32", "severity": "high"}],
                "notify_regulator": False,
            },
            opened + timedelta(hours=1),
        )
    _fire(
        web_db,
        "c-rem",
        "compliance_audit",
        "remediation_plan_approved",
        {"plan": "encrypt backups"},
        opened + timedelta(hours=2),
    )

    client, _ = as_user("cmp@staff.test", "compliance")
    html = client.get("/compliance/").get_data(as_text=True)
    rows = dict(re.findall(r'<tr id="case-([^"]+)" data-status="([A-Z_]+)">', html))
    expected = {
        _instance(web_db, "c-inv", "compliance_audit").id: "OK",
        _instance(web_db, "c-rem", "compliance_audit").id: "OK",
        _instance(web_db, "c-nc", "compliance_audit").id: "OK",
    }
    assert rows == expected, "the three open cases, not the compliant customer"
    for cid, state, kind, days in (
        ("c-inv", "investigation", "legal escalation", 30),
        ("c-rem", "remediation in progress", "remediation deadline", 30),
        ("c-nc", "non compliant", "violation deadline", 30),
    ):
        iid = _instance(web_db, cid, "compliance_audit").id
        row = re.search(rf'<tr id="case-{re.escape(iid)}"[^>]*>(.*?)</tr>', html, re.S)
        assert row, cid
        cell = row.group(1)
        assert f'href="/customers/{cid}"' in cell and state in cell and kind in cell, cid
        left = float(re.search(r"([\d.]+) d left", cell).group(1))  # type: ignore[union-attr]
        assert days - 4 < left < days - 2, (cid, left)
    inv = _instance(web_db, "c-inv", "compliance_audit").id
    assert f'href="/instances/{inv}/actions/violation_confirmed"' in html
    assert f'href="/instances/{inv}/actions/investigation_cleared"' in html
    rem = _instance(web_db, "c-rem", "compliance_audit").id
    assert f'href="/instances/{rem}/actions/remediation_completed"' in html

    # An auditor sees the same cases, with the actions disabled (read-only).
    auditor, _ = as_user("aud@staff.test", "auditor")
    seen = auditor.get("/compliance/").get_data(as_text=True)
    assert dict(re.findall(r'<tr id="case-([^"]+)" data-status="([A-Z_]+)">', seen)) == expected
    assert "/actions/" not in seen


def test_status_class_of_a_remediation_near_its_deadline(web_db: Database) -> None:
    from webapp.services import compliance as desk

    now = datetime(2026, 5, 1, tzinfo=UTC)
    assert desk.status_class(None, now) == "NONE"
    assert desk.status_class(now - timedelta(seconds=1), now) == "OVERDUE"
    assert desk.status_class(now + timedelta(days=7), now) == "DUE_SOON"
    assert desk.status_class(now + timedelta(days=7, seconds=1), now) == "OK"


# --------------------------------------------------------------------------- SAR


def test_sar_clock_bundle_and_audit(
    as_user: Callable[..., tuple[FlaskClient, MadeUser]], web_db: Database
) -> None:
    _customers(web_db, "c-sar", "c-other")
    client, officer = as_user("cmp@staff.test", "compliance")
    token = _token(client)
    bad = client.post(
        "/compliance/sar", data={"csrf_token": token, "customer_id": "c-sar", "reason": f"card {CARD}"}
    )
    assert bad.status_code == 422 and CARD_MESSAGE in bad.get_data(as_text=True)
    missing = client.post(
        "/compliance/sar", data={"csrf_token": token, "customer_id": "c-nope", "reason": "received by email"}
    )
    assert missing.status_code == 422 and "no customer with this id" in missing.get_data(as_text=True)
    with web_db.session() as s:
        assert s.scalars(select(PrivacyRequest)).all() == [], "refused input writes nothing"

    ok = client.post(
        "/compliance/sar",
        data={"csrf_token": token, "customer_id": "c-sar", "reason": "email from the customer"},
    )
    assert ok.status_code == 303
    # An older request, received 26 days ago: 4 days left, shown red.
    with web_db.session() as s:
        customer = s.get(Customer, "c-sar")
        assert customer is not None
        old = sar.open_sar(
            s,
            customer,
            reason="letter",
            actor=Actor(officer.id, "compliance"),
            now=datetime.now(UTC) - timedelta(days=26),
        )
        old_id = old.id
    with web_db.session() as s:
        fresh = s.scalars(select(PrivacyRequest).where(PrivacyRequest.id != old_id)).one()
        assert fresh.due_at - fresh.received_at == timedelta(days=30) and fresh.status == "open"
        fresh_id = fresh.id
    html = client.get("/compliance/").get_data(as_text=True)
    old_row = re.search(rf'<tr id="req-{old_id}"[^>]*>(.*?)</tr>', html, re.S).group(1)  # type: ignore[union-attr]
    assert re.search(r'class="days-left days-red">4<', old_row), old_row
    fresh_row = re.search(rf'<tr id="req-{fresh_id}"[^>]*>(.*?)</tr>', html, re.S).group(1)  # type: ignore[union-attr]
    assert re.search(r'class="days-left ">30<', fresh_row), fresh_row

    response = client.post(f"/compliance/sar/{fresh_id}/export", data={"csrf_token": token})
    assert response.status_code == 200 and response.mimetype == "application/json"
    assert f'filename="sar-c-sar-{fresh_id}.json"' in response.headers["Content-Disposition"]
    body = response.get_data()
    bundle = json.loads(body)
    assert bundle["customer"]["id"] == "c-sar" and bundle["customer"]["email"] == "c-sar@example.test"
    tables = bundle["tables"]
    governors = {r["governor"]: r["state"] for r in tables["governor_instances"]}
    assert governors["customer_account"] == "active" and governors["compliance_audit"] == "compliant"
    assert len(tables["transitions"]) >= 5 and {r["event"] for r in tables["transitions"]} >= {
        "signup",
        "kyc_passed",
    }
    assert {r["id"] for r in tables["privacy_requests"]} == {old_id, fresh_id}
    assert {"approvals", "notifications", "effect_runs", "due_timers", "outbox", "state_snapshots"} <= set(
        tables
    )
    assert any(e["action"] == "privacy.sar_received" for e in bundle["audit_entries"])
    assert {d["table"] for d in bundle["data_sources"]} >= set(tables) | {"audit_entries"}
    text = body.decode()
    assert "c-other" not in text and "Name of c-other" not in text, "no other customer's data"

    with web_db.session() as s:
        done = s.get(PrivacyRequest, fresh_id)
        assert done is not None and done.status == "fulfilled" and done.fulfilled_by == officer.id
        entry = s.scalars(
            select(AuditEntry)
            .where(AuditEntry.action == "privacy.sar_exported")
            .order_by(AuditEntry.seq.desc())
        ).first()
        assert entry is not None and entry.customer_id == "c-sar" and entry.actor == officer.id
        payload = json.loads(entry.payload)
        import hashlib

        assert payload["bundle_sha256"] == hashlib.sha256(body).hexdigest() == done.result_sha256
        assert "Name of c-sar" not in entry.payload and "@example.test" not in entry.payload
        assert audit.verify_tenant(s, "t-1", []).ok
    html = client.get("/compliance/").get_data(as_text=True)
    assert f'id="req-{fresh_id}"' not in html and f'id="closed-{fresh_id}"' in html
    assert client.post("/compliance/sar/sar-nope/export", data={"csrf_token": token}).status_code == 404


# --------------------------------------------------------------------------- erasure


def test_erasure_four_eyes_through_the_desk(
    as_user: Callable[..., tuple[FlaskClient, MadeUser]], web_db: Database
) -> None:
    _customers(web_db, "c-era")
    _fire(
        web_db,
        "c-era",
        "customer_account",
        "lock",
        {"reason_code": "manual", "reason": "customer asked"},
        T0 + timedelta(hours=1),
    )
    first, one = as_user("cmp1@staff.test", "compliance")
    second, two = as_user("cmp2@staff.test", "compliance")
    token = _token(first)
    form = {
        "csrf_token": token,
        "customer_id": "c-era",
        "ownership_verification": "idcheck-1",
        "reason": "GDPR Art 17 request by email",
    }
    assert first.post("/compliance/erasure", data={**form, "reason": CARD}).status_code == 422
    assert first.post("/compliance/erasure", data=form).status_code == 303
    again = first.post("/compliance/erasure", data=form)
    assert again.status_code == 409 and "already open" in again.get_data(as_text=True)
    with web_db.session() as s:
        req = s.scalars(select(PrivacyRequest).where(PrivacyRequest.kind == "erasure")).one()
        request_id = req.id
    page = first.get("/compliance/").get_data(as_text=True)
    row = re.search(rf'<tr id="req-{request_id}"[^>]*>(.*?)</tr>', page, re.S).group(1)  # type: ignore[union-attr]
    assert "waiting for a second compliance officer" in row and "Approve erasure" not in row
    # The requester is refused by the server too, even with a valid code.
    own = first.post(
        f"/compliance/erasure/{request_id}/approve",
        data={"csrf_token": token, "code": fresh_code(one.totp_secret or "")},
    )
    assert own.status_code == 403 and "second compliance officer" in own.get_data(as_text=True)
    token2 = _token(second)
    assert "Approve erasure" in second.get("/compliance/").get_data(as_text=True)
    wrong = second.post(
        f"/compliance/erasure/{request_id}/approve", data={"csrf_token": token2, "code": "000000"}
    )
    assert wrong.status_code == 403
    done = second.post(
        f"/compliance/erasure/{request_id}/approve",
        data={"csrf_token": token2, "code": fresh_code(two.totp_secret or "")},
    )
    assert done.status_code == 303, done.get_data(as_text=True)[:2000]
    with web_db.session() as s:
        customer = s.get(Customer, "c-era")
        assert customer is not None and customer.erased_at is not None and customer.name == "erased"
        req = s.get(PrivacyRequest, request_id)
        assert req is not None and req.status == "fulfilled" and req.fulfilled_by == two.id
        assert audit.verify_tenant(s, "t-1", []).ok


# --------------------------------------------------------------------------- card numbers (PCI DSS 3.4)

NOT_FREE_TEXT = {
    # (form, field): why a card number cannot be stored through it.
    ("DecisionForm", "code"): "a 6–8 digit step-up code, checked and never stored",
    ("CodeForm", "code"): "a 6–8 digit sign-in code, checked and never stored",
    ("SignInForm", "email"): "looked up, never stored as typed (a failed sign-in stores no email)",
    ("SkuForm", "price_cents"): "an integer amount (a 16-digit number is refused by its range check)",
}


def _form_classes() -> list[type]:
    from flask_wtf import FlaskForm

    def walk(cls: type) -> list[type]:
        return [c for sub in cls.__subclasses__() for c in (sub, *walk(sub))]

    # ActionForm is only a base: the forms people fill are built per action (walked below).
    skip = {"DynamicActionForm", "ActionForm"}
    return [c for c in walk(FlaskForm) if c.__module__.startswith("webapp.") and c.__name__ not in skip]


def _text_fields(form: object) -> list[str]:
    from wtforms import HiddenField, PasswordField, StringField, TextAreaField

    return [
        name
        for name, f in form._fields.items()  # type: ignore[attr-defined]
        if isinstance(f, StringField | TextAreaField) and not isinstance(f, PasswordField | HiddenField)
    ]


def _refuses_cards(app: Flask, cls: type, label: str) -> list[str]:
    """The text fields of ``cls`` that accept a Luhn-valid card number (should be none).

    Each field gets the number inside free text and bare (a code-shaped field takes no spaces). A
    field refuses it with the card message, or because its shape cannot hold one (an ISO time,
    a 3-letter currency): either way the number is never stored.
    """
    from werkzeug.datastructures import MultiDict

    accepted = []
    for value in (f"see {CARD} please", CARD.replace(" ", "")):
        with app.test_request_context(method="POST"):
            probe = cls(meta={"csrf": False})
            names = [n for n in _text_fields(probe) if (cls.__name__, n) not in NOT_FREE_TEXT]
            form = cls(formdata=MultiDict(dict.fromkeys(names, value)), meta={"csrf": False})
            for f in form:
                if getattr(f, "choices", False) is None:
                    f.choices = []  # set per request by the views (e.g. reason codes)
            form.validate()
            accepted += [f"{label}.{n}" for n in names if not form._fields[n].errors]  # type: ignore[attr-defined]
    return sorted(set(accepted))


def test_every_free_text_field_of_every_form_refuses_card_numbers(app: Flask) -> None:
    from governors.registry import GOVERNORS
    from webapp.forms import action_form_class

    classes = _form_classes()
    names = {c.__name__ for c in classes}
    assert {"RevealForm", "SarForm", "ErasureForm", "DecisionForm", "SkuForm"} <= names, names
    accepted: list[str] = []
    for cls in classes:
        accepted += _refuses_cards(app, cls, cls.__name__)
    # Every manual action of every governor: its declared text/code/list inputs and the comment.
    checked = 0
    for gov in GOVERNORS.values():
        for t in gov.transitions:
            if t.inputs:
                checked += 1
                accepted += _refuses_cards(app, action_form_class(t.inputs), f"{gov.name}.{t.id}")
    assert checked > 50
    assert accepted == [], f"these fields accept a card number: {accepted}"


@pytest.mark.parametrize(
    "value",
    [
        "4111111111111111",
        "4111-1111-1111-1111",
        "note 5500 0000 0000 0004 end",
        "378282246310005",
        "6011000990139424",
    ],
)
def test_luhn_valid_numbers_are_card_numbers(value: str) -> None:
    from webapp.validation import contains_card_number

    assert contains_card_number(value)


@pytest.mark.parametrize("value", ["123456789012", "order 2026-03-02 ref 77", "+44 20 7946 0958"])
def test_other_numbers_are_not(value: str) -> None:
    from webapp.validation import contains_card_number

    assert not contains_card_number(value)


def test_the_json_api_refuses_a_card_number_in_any_payload_string(
    as_user: Callable[..., tuple[FlaskClient, MadeUser]], web_db: Database
) -> None:
    from webapp.services import users

    _customers(web_db, "c-api")
    _, officer = as_user("cmp@staff.test", "compliance")
    with web_db.session() as s:
        _, token = users.create_token(s, officer.id, now=datetime.now(UTC))
    row = _instance(web_db, "c-api", "compliance_audit")
    response = as_user("other@staff.test", "support")[0].post(
        f"/api/v1/instances/{row.id}/events",
        json={
            "event": "violation_detected",
            "reason": "a valid reason here",
            "payload": {"kind": "violation", "description": {"nested": [f"card {CARD}"]}},
        },
        headers={"Authorization": f"Bearer {token}", "Idempotency-Key": "k-1"},
    )
    assert response.status_code == 422, response.get_data(as_text=True)
    assert CARD_MESSAGE in response.get_json()["error"]["message"]


# --------------------------------------------------------------------------- PII reveal


def test_a_pii_reveal_is_audited_with_its_reason_and_shows_in_the_audit_log(
    as_user: Callable[..., tuple[FlaskClient, MadeUser]], web_db: Database
) -> None:
    _customers(web_db, "c-rev")
    officer, user = as_user("cmp@staff.test", "compliance")
    token = _token(officer, "/customers/c-rev")
    comment = "caller Name of c-rev verified by date of birth"
    response = officer.post(
        "/customers/c-rev/reveal",
        data={"csrf_token": token, "reason_code": "identity_verification", "comment": comment},
    )
    assert response.status_code == 200 and "c-rev@example.test" in response.get_data(as_text=True)
    refused = officer.post(
        "/customers/c-rev/reveal",
        data={"csrf_token": token, "reason_code": "identity_verification", "comment": f"card {CARD} given"},
    )
    assert refused.status_code == 422 and CARD_MESSAGE in refused.get_data(as_text=True)
    with web_db.session() as s:
        entries = s.scalars(select(AuditEntry).where(AuditEntry.action == "pii.revealed")).all()
    assert len(entries) == 1, "the refused reveal is not recorded"
    payload = json.loads(entries[0].payload)
    import hashlib

    assert payload["reason_code"] == "identity_verification"
    assert payload["comment_sha256"] == hashlib.sha256(comment.encode()).hexdigest()
    assert "Name of" not in entries[0].payload and entries[0].actor == user.id
    log = officer.get("/audit?action=pii.revealed&customer=c-rev").get_data(as_text=True)
    assert f'id="audit-t-1-{entries[0].seq}"' in log and "identity_verification" in log


# --------------------------------------------------------------------------- audit integrity stat


def test_the_desk_shows_the_last_integrity_run_and_the_first_broken_seq(
    as_user: Callable[..., tuple[FlaskClient, MadeUser]], web_db: Database
) -> None:
    from tests.web.test_audit_desk import _entries, _tamper

    _entries(web_db, "t-1", 5)
    _entries(web_db, "t-2", 2)
    client, user = as_user("cmp@staff.test", "compliance")
    assert "No integrity run recorded yet" in client.get("/compliance/").get_data(as_text=True)
    token = _token(client)
    assert client.post("/audit/verify", data={"csrf_token": token}).status_code == 200
    summary = re.search(
        r'id="integrity-summary">(.*?)</p>', client.get("/compliance/").get_data(as_text=True), re.S
    )
    assert summary and "intact" in summary.group(1) and "100% of 3 chains verified" in summary.group(1)
    assert user.email in summary.group(1), "the officer is named by email"
    _tamper(web_db, "t-1", 3)
    assert client.post("/audit/verify", data={"csrf_token": token}).status_code == 200
    html = client.get("/compliance/").get_data(as_text=True)
    summary = re.search(r'id="integrity-summary">(.*?)</p>', html, re.S)
    assert summary and "broken" in summary.group(1)
    assert "67% of 3 chains verified" in summary.group(1), summary.group(1)
    assert re.search(r"t-1</span> first broken at seq 3", summary.group(1))


def test_support_files_a_sar_that_only_compliance_can_export(
    as_user: Callable[..., tuple[FlaskClient, MadeUser]], web_db: Database
) -> None:
    _customers(web_db, "c-ask")
    support, agent = as_user("sam@staff.test", "support")
    page = support.get("/compliance/sar/new?customer=c-ask")
    assert page.status_code == 200 and 'value="c-ask"' in page.get_data(as_text=True)
    token = _token(support, "/compliance/sar/new")
    bad = support.post("/compliance/sar", data={"csrf_token": token, "customer_id": "c-ask", "reason": CARD})
    assert bad.status_code == 422 and CARD_MESSAGE in bad.get_data(as_text=True)
    filed = support.post(
        "/compliance/sar",
        data={"csrf_token": token, "customer_id": "c-ask", "reason": "customer asked on chat"},
    )
    assert filed.status_code == 303 and filed.location.endswith("/customers/c-ask")
    with web_db.session() as s:
        req = s.scalars(select(PrivacyRequest)).one()
        assert (req.requested_by, req.requester_role, req.status) == (agent.id, "support", "open")
        assert req.due_at - req.received_at == timedelta(days=30)
        request_id = req.id
    assert support.post(f"/compliance/sar/{request_id}/export", data={"csrf_token": token}).status_code == 403
    officer, _ = as_user("cmp@staff.test", "compliance")
    assert f'id="req-{request_id}"' in officer.get("/compliance/").get_data(as_text=True)
    token = _token(officer)
    assert officer.post(f"/compliance/sar/{request_id}/export", data={"csrf_token": token}).status_code == 200
