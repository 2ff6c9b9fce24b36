"""The JSON API on PostgreSQL: every endpoint's answers and errors, the role × action matrix, idempotency,
four-eyes through the API, audit verification, tenant isolation and the OpenAPI document's completeness."""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pyotp
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select, text

from governors import Facts, manual_actions
from governors.spec import frozen_map
from tests.web.conftest import fresh_code
from webapp import create_app
from webapp.config import Config
from webapp.db import Database
from webapp.models import AuditEntry, Base, GovernorInstance, TransitionRecord
from webapp.policy import ROLES
from webapp.services import users
from webapp.services.demo import Driver, buy_and_invoice, pay_invoice
from webapp.services.instances import to_instance
from webapp.services.setup import activate_customer, ensure_catalog, ensure_tenant, signup_customer

NOW = datetime.now(UTC) - timedelta(hours=2)
"""Customers are made shortly before the requests (the API acts at the real current time)."""

CARD = "4111 1111 1111 1111"


@dataclass
class Staff:
    id: str
    token: str
    secret: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def code(self) -> str:
        return fresh_code(self.secret)  # each code is accepted once


STAFF_TABLES = frozenset({"staff_users", "role_grants", "api_tokens"})
"""Kept between tests: the staff are made once per module (Argon2 hashing is deliberately slow)."""


@pytest.fixture(scope="module")
def database(pg_url: str) -> Iterator[Database]:
    db = Database(pg_url)
    yield db
    db.dispose()


@pytest.fixture(scope="module")
def staff(database: Database) -> dict[str, Staff]:
    """One user per role (made once per module), each with an API token and a TOTP secret (step-up)."""
    out: dict[str, Staff] = {}
    now = datetime.now(UTC)
    run = uuid.uuid4().hex[:8]
    with database.session() as s:
        for role in ROLES:
            user = users.create_user(
                s, f"{role}-{run}@api.test", [role], "correct horse battery", granted_by="t", now=now
            )
            user.totp_secret = pyotp.random_base32()
            _row, token = users.create_token(s, user.id, now=now)
            out[role] = Staff(user.id, token, user.totp_secret)
    return out


@pytest.fixture
def db(database: Database, staff: dict[str, Staff]) -> Database:
    """Empty tables before each test (the audit table's append-only trigger is paused for TRUNCATE)."""
    tables = ", ".join(
        f'"{t.name}"' for t in reversed(Base.metadata.sorted_tables) if t.name not in STAFF_TABLES
    )
    with database.engine.begin() as conn:
        conn.execute(text("ALTER TABLE audit_entries DISABLE TRIGGER USER"))
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        conn.execute(text("ALTER TABLE audit_entries ENABLE TRIGGER USER"))
    return database


@pytest.fixture
def app(db: Database, pg_url: str) -> Iterator[Flask]:
    application = create_app(Config.from_env({"DATABASE_URL": pg_url}, testing=True))
    yield application
    application.extensions["runtime"].close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def make_customer(db: Database) -> Callable[..., str]:
    """A customer through the real services: signed up, optionally active, optionally with a paid invoice."""

    def make(customer_id: str, tenant_id: str = "t-1", *, active: bool = True, paid: bool = False) -> str:
        with db.session() as s:
            ensure_tenant(s, tenant_id, NOW)
            ensure_catalog(s, NOW)
        with db.session() as s:
            signup_customer(
                s,
                tenant_id,
                customer_id,
                name="Ada Lovelace",
                email=f"{customer_id}@example.test",
                tier="starter",
                now=NOW,
            )
        if active or paid:
            with db.session() as s:
                activate_customer(s, tenant_id, customer_id, now=NOW + timedelta(minutes=1))
        if paid:
            driver = Driver(db, None)
            assert buy_and_invoice(driver, tenant_id, customer_id, NOW + timedelta(minutes=2))
            assert pay_invoice(driver, tenant_id, customer_id, NOW + timedelta(minutes=20))
        return customer_id

    return make


def instance(db: Database, customer_id: str, governor: str) -> GovernorInstance:
    with db.session() as s:
        return s.scalars(
            select(GovernorInstance)
            .where(GovernorInstance.customer_id == customer_id, GovernorInstance.governor == governor)
            .order_by(GovernorInstance.id)
        ).first()  # type: ignore[return-value]


def history_count(db: Database, customer_id: str | None = None) -> int:
    query = select(func.count()).select_from(TransitionRecord)
    if customer_id is not None:
        query = query.where(TransitionRecord.customer_id == customer_id)
    with db.session() as s:
        return int(s.scalar(query) or 0)


LOCK: dict[str, Any] = {
    "event": "lock",
    "reason": "customer reports an account takeover",
    "payload": {"reason_code": "manual"},
}
REFUND: dict[str, Any] = {
    "event": "issue_refund",
    "reason": "duplicate charge confirmed by the processor",
    "payload": {"amount_cents": 500, "reason_code": "duplicate_charge"},
}


def post_event(client: FlaskClient, who: Staff, instance_id: str, body: Any, key: str | None = None) -> Any:
    headers = dict(who.headers)
    if key:
        headers["Idempotency-Key"] = key
    return client.post(f"/api/v1/instances/{instance_id}/events", json=body, headers=headers)


# --------------------------------------------------------------------------- auth and errors


def test_no_token_a_bad_token_or_another_scheme_is_401_json(
    client: FlaskClient, staff: dict[str, Staff]
) -> None:
    plain = client.get("/api/v1/customers")
    assert plain.status_code == 401
    assert plain.get_json()["error"]["code"] == "unauthorized"
    bad = client.get("/api/v1/customers", headers={"Authorization": "Bearer mct_not-a-token"})
    assert bad.status_code == 401
    basic = client.get("/api/v1/customers", headers={"Authorization": f"Basic {staff['support'].token}"})
    assert basic.status_code == 401
    ok = client.get("/api/v1/customers", headers=staff["support"].headers)
    assert ok.status_code == 200 and ok.get_json() == {"items": [], "next_cursor": None}


def test_unknown_routes_and_methods_answer_json_errors(client: FlaskClient, staff: dict[str, Staff]) -> None:
    missing = client.get("/api/v1/nothing-here", headers=staff["support"].headers)
    assert missing.status_code == 404 and set(missing.get_json()) == {"error"}
    wrong = client.delete("/api/v1/customers", headers=staff["support"].headers)
    assert wrong.status_code == 405 and "error" in wrong.get_json()


# --------------------------------------------------------------------------- reading


def test_search_pages_by_keyset_and_filters(
    client: FlaskClient, staff: dict[str, Staff], make_customer: Callable[..., str], db: Database
) -> None:
    for n in (1, 2, 3):
        make_customer(f"c-{n}", active=n != 3)
    h = staff["support"].headers
    first = client.get("/api/v1/customers?limit=2", headers=h).get_json()
    assert [c["id"] for c in first["items"]] == ["c-1", "c-2"]
    assert first["items"][0]["tenant"] == "t-1" and first["items"][0]["tier"] == "starter"
    assert first["items"][0]["email"] == "c***@example.test", "PII is masked in the API"
    assert first["items"][0]["name"] == "A** L*******"
    second = client.get(f"/api/v1/customers?limit=2&cursor={first['next_cursor']}", headers=h).get_json()
    assert [c["id"] for c in second["items"]] == ["c-3"] and second["next_cursor"] is None
    by_email = client.get("/api/v1/customers?q=C-2@EXAMPLE.TEST", headers=h).get_json()
    assert [c["id"] for c in by_email["items"]] == ["c-2"]
    by_id = client.get("/api/v1/customers?q=c-3", headers=h).get_json()
    assert [c["id"] for c in by_id["items"]] == ["c-3"]
    onboarding = client.get("/api/v1/customers?state=customer_account:onboarding", headers=h).get_json()
    assert [c["id"] for c in onboarding["items"]] == ["c-3"]
    active = client.get("/api/v1/customers?state=active", headers=h).get_json()
    assert {c["id"] for c in active["items"]} == {"c-1", "c-2"}


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=ten", "limit"),
        ("cursor=%%%", "cursor"),
        ("cursor=WzEsMl0", "cursor"),
        ("state=sleeping", "state"),
        ("state=nogov:active", "state"),
        ("q=" + "x" * 201, "q"),
    ],
)
def test_search_rejects_bad_parameters_with_422(
    client: FlaskClient, staff: dict[str, Staff], query: str, field: str
) -> None:
    response = client.get(f"/api/v1/customers?{query}", headers=staff["support"].headers)
    assert response.status_code == 422
    assert response.get_json()["error"]["field"] == field


def _expected_allowed(db: Database, customer_id: str, role: str) -> dict[str, set[str]]:
    """What the engine says ``role`` may do on each of the customer's instances (allowed actions only)."""
    from webapp.services.facts import world_facts

    with db.session() as s:
        rows = s.scalars(select(GovernorInstance).where(GovernorInstance.customer_id == customer_id)).all()
        snap = {r.id: to_instance(r) for r in rows}
        out: dict[str, set[str]] = {}
        for r in rows:
            peers: dict[str, list[Any]] = {}
            for other in snap.values():
                if other.id != r.id:
                    peers.setdefault(other.governor, []).append(other)
            facts = Facts(
                now=datetime.now(UTC),
                peers=frozen_map({k: tuple(v) for k, v in peers.items()}),
                extra=frozen_map(world_facts(s, snap, snap[r.id], "")),
            )
            out[r.id] = {a.event for a in manual_actions(r.governor, snap[r.id], facts, role) if a.allowed}
    return out


def test_customer_lists_every_governor_with_the_callers_allowed_events(
    client: FlaskClient, staff: dict[str, Staff], make_customer: Callable[..., str], db: Database
) -> None:
    make_customer("c-1", paid=True)
    for role in ROLES:
        body = client.get("/api/v1/customers/c-1", headers=staff[role].headers).get_json()
        assert body["id"] == "c-1"
        cards = {g["instance_id"]: g for g in body["governors"]}
        assert {g["governor"] for g in body["governors"]} >= {
            "customer_account",
            "subscription",
            "billing",
            "entitlement",
            "quota_sla",
            "compliance_audit",
        }
        expected = _expected_allowed(db, "c-1", role) if role != "auditor" else {i: set() for i in cards}
        got = {i: {a["event"] for a in g["allowed_events"]} for i, g in cards.items()}
        assert got == expected, role
    account = next(
        g
        for g in client.get("/api/v1/customers/c-1", headers=staff["support"].headers).get_json()["governors"]
        if g["governor"] == "customer_account"
    )
    assert account["state"] == "active" and account["version"] >= 1
    lock = next(a for a in account["allowed_events"] if a["event"] == "lock")
    assert lock["mode"] == "direct" and lock["role"] == "support"
    billing = next(
        g
        for g in client.get("/api/v1/customers/c-1", headers=staff["finance"].headers).get_json()["governors"]
        if g["governor"] == "billing"
    )
    refund = next(a for a in billing["allowed_events"] if a["event"] == "issue_refund")
    assert refund["mode"] == "four_eyes" and refund["approvers"] == ["finance", "manager"]
    assert {i["name"] for i in refund["inputs"]} >= {"amount_cents", "reason_code"}


def test_history_is_newest_first_with_cascade_causes_and_pages(
    client: FlaskClient, staff: dict[str, Staff], make_customer: Callable[..., str], db: Database
) -> None:
    make_customer("c-1")
    h = staff["support"].headers
    rows = client.get("/api/v1/customers/c-1/history?limit=200", headers=h).get_json()["items"]
    seqs = [r["seq"] for r in rows]
    assert seqs == sorted(seqs, reverse=True) and len(rows) == history_count(db, "c-1")
    signup = rows[-1]
    assert (signup["governor"], signup["event"], signup["cause"]) == ("customer_account", "signup", None)
    assert any(r["cause"] == signup["seq"] for r in rows), "cascades link to the transition that caused them"
    page1 = client.get("/api/v1/customers/c-1/history?limit=3", headers=h).get_json()
    page2 = client.get(
        f"/api/v1/customers/c-1/history?limit=3&cursor={page1['next_cursor']}", headers=h
    ).get_json()
    assert [r["seq"] for r in page1["items"] + page2["items"]] == seqs[:6]
    only = client.get("/api/v1/customers/c-1/history?governor=entitlement&limit=200", headers=h).get_json()
    assert only["items"] and {r["governor"] for r in only["items"]} == {"entitlement"}
    bad = client.get("/api/v1/customers/c-1/history?governor=nope", headers=h)
    assert bad.status_code == 422 and bad.get_json()["error"]["field"] == "governor"


def test_state_as_of_shows_the_past_and_validates_the_instant(
    client: FlaskClient, staff: dict[str, Staff], make_customer: Callable[..., str], db: Database
) -> None:
    make_customer("c-1")
    account = instance(db, "c-1", "customer_account")
    h = staff["support"].headers
    assert post_event(client, staff["support"], account.id, LOCK).status_code == 200

    def account_state(as_of: str) -> str | None:
        body = client.get("/api/v1/customers/c-1/state", query_string={"as_of": as_of}, headers=h).get_json()
        return next((g["state"] for g in body["governors"] if g["governor"] == "customer_account"), None)

    assert account_state((NOW - timedelta(days=1)).isoformat()) is None, "before sign-up there was nothing"
    assert account_state((NOW + timedelta(minutes=5)).isoformat()) == "active"
    assert account_state(datetime.now(UTC).isoformat().replace("+00:00", "Z")) == "locked"
    for bad in ("yesterday", "2026-01-01T00:00:00", (datetime.now(UTC) + timedelta(days=1)).isoformat(), ""):
        response = client.get("/api/v1/customers/c-1/state", query_string={"as_of": bad}, headers=h)
        assert response.status_code == 422 and response.get_json()["error"]["field"] == "as_of", bad


def test_unknown_and_other_tenants_ids_are_404_with_no_data(
    client: FlaskClient,
    staff: dict[str, Staff],
    make_customer: Callable[..., str],
    db: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    make_customer("c-1", "t-1")
    make_customer("c-2", "t-2")
    other = instance(db, "c-2", "customer_account")
    h = staff["support"].headers
    for path in ("/api/v1/customers/nope", "/api/v1/customers/nope/history", "/api/v1/customers/../x"):
        response = client.get(path, headers=h)
        assert response.status_code == 404 and set(response.get_json()) == {"error"}
    unknown = post_event(client, staff["support"], "inst-nope", LOCK)
    assert unknown.status_code == 404 and set(unknown.get_json()) == {"error"}
    # A caller scoped to tenant t-1 sees t-2's ids exactly as if they did not exist.
    monkeypatch.setattr("webapp.blueprints.api.tenant_scope", lambda: frozenset({"t-1"}))
    before = history_count(db)
    for path in (
        "/api/v1/customers/c-2",
        "/api/v1/customers/c-2/history",
        f"/api/v1/customers/c-2/state?as_of={datetime.now(UTC).isoformat().replace('+00:00', 'Z')}",
    ):
        response = client.get(path, headers=h)
        assert response.status_code == 404, path
        assert "c-2" not in response.get_data(as_text=True) and "Ada" not in response.get_data(as_text=True)
    fired = post_event(client, staff["support"], other.id, LOCK)
    assert fired.status_code == 404 and set(fired.get_json()) == {"error"}
    preview = client.post(f"/api/v1/instances/{other.id}/events/preview", json=LOCK, headers=h)
    assert preview.status_code == 404
    listed = client.get("/api/v1/customers", headers=h).get_json()
    assert [c["id"] for c in listed["items"]] == ["c-1"]
    assert history_count(db) == before
    assert instance(db, "c-2", "customer_account").state == "active"


# --------------------------------------------------------------------------- events


def test_support_lock_applies_the_cascade_and_a_replay_returns_the_first_response(
    client: FlaskClient, staff: dict[str, Staff], make_customer: Callable[..., str], db: Database
) -> None:
    make_customer("c-1")
    account = instance(db, "c-1", "customer_account")
    body = {**LOCK, "expected_version": account.version}
    first = post_event(client, staff["support"], account.id, body, key="lock-1")
    assert first.status_code == 200, first.get_json()
    decisions = first.get_json()["decisions"]
    assert (decisions[0]["governor"], decisions[0]["event"], decisions[0]["to_state"]) == (
        "customer_account",
        "lock",
        "locked",
    )
    assert ("entitlement", "suspend", "applied") in {
        (d["governor"], d["event"], d["status"]) for d in decisions
    }
    with db.session() as s:
        row = s.scalars(
            select(TransitionRecord)
            .where(TransitionRecord.instance_id == account.id)
            .order_by(TransitionRecord.id.desc())
        ).first()
        assert row is not None and row.reason == LOCK["reason"] and row.actor == staff["support"].id
        assert row.role == "support"
    count = history_count(db)
    again = post_event(client, staff["support"], account.id, body, key="lock-1")
    assert again.status_code == 200 and again.get_json() == first.get_json()
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert history_count(db) == count, "a replay applies nothing"
    reused = post_event(
        client, staff["support"], account.id, {**body, "reason": "another reason entirely"}, "lock-1"
    )
    assert reused.status_code == 409 and reused.get_json()["error"]["code"] == "idempotency_key_reused"
    assert history_count(db) == count
    # Keys are per user: another user's identical key is a different request (here: not allowed now).
    other = post_event(client, staff["manager"], account.id, body, key="lock-1")
    assert other.status_code == 409 and other.get_json()["error"]["code"] != "idempotency_key_reused"


def test_an_api_event_begins_its_own_transaction_with_its_load_and_commits_with_its_write(
    client: FlaskClient, staff: dict[str, Staff], make_customer: Callable[..., str], db: Database
) -> None:
    """The reads that choose the acting role are committed first, so the event's load goes out with
    its BEGIN (ids reserved, the key read after the locks), and its write is the one that follows."""
    from sqlalchemy import Engine, event

    make_customer("c-1")
    make_customer("c-2")
    accounts = [instance(db, c, "customer_account") for c in ("c-1", "c-2")]
    seen: list[tuple[str, str]] = []

    def record(_conn: object, cursor: object, sql: str, *_rest: object) -> None:
        seen.append((type(cursor).__name__, sql))

    post_event(client, staff["support"], accounts[0].id, LOCK, key="warm-up")  # hints, prepared write
    event.listen(Engine, "before_cursor_execute", record)  # the app's engine is its own
    try:
        response = post_event(client, staff["support"], accounts[1].id, LOCK, key="api-lock")
    finally:
        event.remove(Engine, "before_cursor_execute", record)
    assert response.status_code == 200, response.get_json()
    loads = [sql for _, sql in seen if "governor_event_" in sql]
    assert len(loads) == 1 and loads[0].startswith("BEGIN") and "governor_event_load" in loads[0], loads
    assert "FROM idempotency_records" in loads[0]
    # One write (with the COMMIT once psycopg has prepared it on the connection: see
    # tests/services/test_commit_with_write.py), no allocation round trip.
    assert len([sql for _, sql in seen if "jsonb_to_recordset" in sql]) == 1, seen
    assert not any("nextval" in sql for _, sql in seen)
    assert history_count(db, "c-2") > 0


def test_stale_expected_version_is_409_and_changes_nothing(
    client: FlaskClient, staff: dict[str, Staff], make_customer: Callable[..., str], db: Database
) -> None:
    make_customer("c-1")
    account = instance(db, "c-1", "customer_account")
    count = history_count(db)
    response = post_event(
        client, staff["support"], account.id, {**LOCK, "expected_version": account.version - 1}
    )
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "stale_version"
    assert instance(db, "c-1", "customer_account").state == "active"
    assert history_count(db) == count


def test_event_not_allowed_in_this_state_is_409(
    client: FlaskClient, staff: dict[str, Staff], make_customer: Callable[..., str], db: Database
) -> None:
    make_customer("c-1")
    account = instance(db, "c-1", "customer_account")
    response = post_event(
        client,
        staff["support"],
        account.id,
        {"event": "unlock", "reason": "customer verified by phone", "payload": {}},
    )
    assert response.status_code == 409 and response.get_json()["error"]["code"] == "invalid_transition"


BAD_BODIES: list[tuple[Any, str]] = [
    ("not json", "body"),
    ([1, 2], "body"),
    ({"reason": "customer reports an account takeover"}, "event"),
    ({"event": "LOCK!", "reason": "customer reports an account takeover"}, "event"),
    ({"event": "lock"}, "reason"),
    ({"event": "lock", "reason": "   "}, "reason"),
    ({"event": "lock", "reason": f"card {CARD} was stolen"}, "reason"),
    ({"event": "lock", "reason": "x" * 2001}, "reason"),
    ({"event": "lock", "reason": "takeover\x00reported"}, "reason"),
    ({**LOCK, "payload": [1]}, "payload"),
    ({**LOCK, "payload": {"note": f"card {CARD}"}}, "payload"),
    ({**LOCK, "payload": {"reason": "twice"}}, "payload.reason"),
    ({**LOCK, "expected_version": "3"}, "expected_version"),
    ({**LOCK, "expected_version": True}, "expected_version"),
    ({**LOCK, "role": "admin"}, "role"),
]


def test_bad_event_bodies_are_422_and_change_nothing(
    client: FlaskClient, staff: dict[str, Staff], make_customer: Callable[..., str], db: Database
) -> None:
    make_customer("c-1")
    account = instance(db, "c-1", "customer_account")
    count = history_count(db)
    for (body, field), suffix in itertools.product(BAD_BODIES, ("events", "events/preview")):
        path = f"/api/v1/instances/{account.id}/{suffix}"
        if isinstance(body, str):
            response = client.post(
                path, data=body, headers={**staff["support"].headers, "Content-Type": "application/json"}
            )
        else:
            response = client.post(path, json=body, headers=staff["support"].headers)
        assert response.status_code == 422, (body, response.get_json())
        assert response.get_json()["error"]["field"] == field, body
        assert CARD not in response.get_data(as_text=True)
    assert history_count(db) == count


def test_malformed_idempotency_key_is_422(
    client: FlaskClient, staff: dict[str, Staff], make_customer: Callable[..., str], db: Database
) -> None:
    make_customer("c-1")
    account = instance(db, "c-1", "customer_account")
    response = post_event(client, staff["support"], account.id, LOCK, key="has spaces in it")
    assert response.status_code == 422 and response.get_json()["error"]["field"] == "Idempotency-Key"
    assert instance(db, "c-1", "customer_account").state == "active"


def test_engine_input_errors_are_422(
    client: FlaskClient, staff: dict[str, Staff], make_customer: Callable[..., str], db: Database
) -> None:
    make_customer("c-1", paid=True)
    bill = instance(db, "c-1", "billing")
    response = post_event(
        client,
        staff["finance"],
        bill.id,
        {**REFUND, "payload": {"amount_cents": -5, "reason_code": "duplicate_charge"}},
    )
    assert response.status_code == 422, response.get_json()
    assert instance(db, "c-1", "billing").version == bill.version


def test_preview_returns_the_cascade_plan_and_applies_nothing(
    client: FlaskClient, staff: dict[str, Staff], make_customer: Callable[..., str], db: Database
) -> None:
    make_customer("c-1")
    account = instance(db, "c-1", "customer_account")
    count = history_count(db)
    response = client.post(
        f"/api/v1/instances/{account.id}/events/preview", json=LOCK, headers=staff["support"].headers
    )
    assert response.status_code == 200
    plan = response.get_json()
    assert plan["ok"] is True and plan["needs_approval"] is None and plan["role"] == "support"
    assert (plan["steps"][0]["governor"], plan["steps"][0]["to_state"]) == ("customer_account", "locked")
    assert any(s["governor"] == "entitlement" and s["event"] == "suspend" for s in plan["steps"])
    assert history_count(db) == count and instance(db, "c-1", "customer_account").state == "active"
    auditor = client.post(
        f"/api/v1/instances/{account.id}/events/preview", json=LOCK, headers=staff["auditor"].headers
    )
    assert auditor.status_code == 403


# --------------------------------------------------------------------------- the role × action matrix

MATRIX_ACTIONS = [
    ("lock", "customer_account", dict(LOCK), False),
    ("refund", "billing", dict(REFUND), True),
    (
        "cancel_trial",
        "subscription",
        {
            "event": "cancel",
            "reason": "customer asked to cancel the trial",
            "payload": {"reason_code": "too_expensive", "churn_offer_outcome": "declined"},
        },
        False,
    ),
]


def _expected_status(db: Database, customer_id: str, governor: str, event: str, role: str) -> int:
    """200 direct, 202 four-eyes or request, 403 when the definition gives the role nothing."""
    if role == "auditor":
        return 403
    row = instance(db, customer_id, governor)
    allowed = _expected_allowed(db, customer_id, role)[row.id]
    if event not in allowed:
        return 403
    from webapp.services.facts import world_facts

    with db.session() as s:
        rows = s.scalars(select(GovernorInstance).where(GovernorInstance.customer_id == customer_id)).all()
        snap = {r.id: to_instance(r) for r in rows}
        peers: dict[str, list[Any]] = {}
        for other in snap.values():
            if other.id != row.id:
                peers.setdefault(other.governor, []).append(other)
        facts = Facts(
            now=datetime.now(UTC),
            peers=frozen_map({k: tuple(v) for k, v in peers.items()}),
            extra=frozen_map(world_facts(s, snap, snap[row.id], "")),
        )
        mode = next(a.mode for a in manual_actions(governor, snap[row.id], facts, role) if a.event == event)
    return 200 if mode == "direct" else 202


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(
    ("name", "governor", "body", "paid"), MATRIX_ACTIONS, ids=[a[0] for a in MATRIX_ACTIONS]
)
def test_role_action_matrix_matches_the_definitions(
    client: FlaskClient,
    staff: dict[str, Staff],
    make_customer: Callable[..., str],
    db: Database,
    role: str,
    name: str,
    governor: str,
    body: dict[str, Any],
    paid: bool,
) -> None:
    customer = make_customer(f"c-{role}", active=governor != "subscription", paid=paid)
    target = instance(db, customer, governor)
    expected = _expected_status(db, customer, governor, body["event"], role)
    count = history_count(db)
    response = post_event(client, staff[role], target.id, body, key=f"{name}-{role}")
    assert response.status_code == expected, (role, name, response.get_json())
    after = instance(db, customer, governor)
    if expected == 200:
        assert after.version > target.version and history_count(db) > count
    else:
        assert after.version == target.version and history_count(db) == count
    if expected == 202:
        assert response.get_json()["approval_id"].startswith("apr-")
    if expected == 403:
        assert set(response.get_json()) == {"error"}


def test_spot_checks_support_refund_is_a_request_finance_refund_is_four_eyes_support_lock_applies(
    client: FlaskClient, staff: dict[str, Staff], make_customer: Callable[..., str], db: Database
) -> None:
    make_customer("c-1", paid=True)
    bill = instance(db, "c-1", "billing")
    support = post_event(client, staff["support"], bill.id, REFUND)
    assert support.status_code == 202 and support.get_json()["approvers"] == ["finance"]
    finance = post_event(
        client, staff["finance"], bill.id, {**REFUND, "payload": {**REFUND["payload"], "refund_id": "r2"}}
    )
    assert finance.status_code == 202 and finance.get_json()["approvers"] == ["finance", "manager"]
    manager = post_event(client, staff["manager"], bill.id, REFUND)
    assert manager.status_code == 403
    account = instance(db, "c-1", "customer_account")
    assert post_event(client, staff["support"], account.id, LOCK).status_code == 200
    assert post_event(client, staff["finance"], account.id, LOCK).status_code in (403, 409)


# --------------------------------------------------------------------------- four-eyes


def test_four_eyes_queue_approve_with_step_up_and_reject(
    client: FlaskClient, staff: dict[str, Staff], make_customer: Callable[..., str], db: Database
) -> None:
    make_customer("c-1", paid=True)
    bill = instance(db, "c-1", "billing")
    requested = post_event(client, staff["finance"], bill.id, REFUND, key="refund-1")
    approval_id = requested.get_json()["approval_id"]
    queue = client.get("/api/v1/approvals?status=pending", headers=staff["manager"].headers).get_json()
    item = next(a for a in queue["items"] if a["id"] == approval_id)
    assert item["event"] == "issue_refund" and item["requested_by"] == staff["finance"].id
    assert item["can_decide"] is True and item["why_not"] is None
    mine = client.get("/api/v1/approvals", headers=staff["finance"].headers).get_json()
    assert next(a for a in mine["items"] if a["id"] == approval_id)["can_decide"] is False
    url = f"/api/v1/approvals/{approval_id}/approve"
    own = client.post(url, json={"step_up_code": staff["finance"].code()}, headers=staff["finance"].headers)
    assert own.status_code == 403, "the requester can never approve their own request"
    no_code = client.post(url, json={}, headers=staff["manager"].headers)
    assert no_code.status_code == 422 and no_code.get_json()["error"]["field"] == "step_up_code"
    wrong = client.post(url, json={"step_up_code": "000000"}, headers=staff["manager"].headers)
    if wrong.status_code != 403:  # one in a million: 000000 is the current code
        assert staff["manager"].code() == "000000"
    assert instance(db, "c-1", "billing").version == bill.version
    support = client.post(
        url, json={"step_up_code": staff["support"].code()}, headers=staff["support"].headers
    )
    assert support.status_code == 403
    ok = client.post(
        url,
        json={"step_up_code": staff["manager"].code(), "note": "checked"},
        headers=staff["manager"].headers,
    )
    assert ok.status_code == 200, ok.get_json()
    assert ok.get_json()["status"] == "approved" and ok.get_json()["decided_by"] == staff["manager"].id
    with db.session() as s:
        applied = s.scalars(
            select(TransitionRecord).where(
                TransitionRecord.instance_id == bill.id, TransitionRecord.event == "issue_refund"
            )
        ).all()
        assert len(applied) == 1 and applied[0].approval_id == approval_id
    twice = client.post(url, json={"step_up_code": staff["manager"].code()}, headers=staff["manager"].headers)
    assert twice.status_code == 409
    # A second request, rejected with a note.
    again = post_event(
        client, staff["finance"], bill.id, {**REFUND, "payload": {**REFUND["payload"], "refund_id": "rf-2"}}
    )
    second = again.get_json()["approval_id"]
    no_note = client.post(f"/api/v1/approvals/{second}/reject", json={}, headers=staff["manager"].headers)
    assert no_note.status_code == 422
    rejected = client.post(
        f"/api/v1/approvals/{second}/reject",
        json={"note": "not a duplicate"},
        headers=staff["manager"].headers,
    )
    assert rejected.status_code == 200 and rejected.get_json()["status"] == "rejected"
    listed = client.get("/api/v1/approvals?status=rejected", headers=staff["manager"].headers).get_json()
    assert [a["id"] for a in listed["items"]] == [second]
    assert client.get("/api/v1/approvals?status=odd", headers=staff["manager"].headers).status_code == 422
    missing = client.post(
        "/api/v1/approvals/apr-nope/approve",
        json={"step_up_code": "123456"},
        headers=staff["manager"].headers,
    )
    assert missing.status_code == 404 and set(missing.get_json()) == {"error"}
    auditor = client.get("/api/v1/approvals", headers=staff["auditor"].headers)
    assert auditor.status_code == 403


# --------------------------------------------------------------------------- audit


def test_audit_verify_for_admin_compliance_auditor_only_and_names_the_first_broken_seq(
    client: FlaskClient, staff: dict[str, Staff], make_customer: Callable[..., str], db: Database
) -> None:
    make_customer("c-1")
    for role in ("admin", "compliance", "auditor"):
        body = client.get("/api/v1/audit/verify", headers=staff[role].headers).get_json()
        assert body["ok"] is True and body["checked"] > 0 and body["first_broken_seq"] is None
    for role in ("support", "finance", "manager"):
        assert client.get("/api/v1/audit/verify", headers=staff[role].headers).status_code == 403
    with db.engine.begin() as conn:
        conn.execute(text("ALTER TABLE audit_entries DISABLE TRIGGER USER"))
        conn.execute(text("UPDATE audit_entries SET actor = 'mallory' WHERE tenant_id = 't-1' AND seq = 3"))
        conn.execute(text("ALTER TABLE audit_entries ENABLE TRIGGER USER"))
    broken = client.get("/api/v1/audit/verify", headers=staff["auditor"].headers).get_json()
    assert broken["ok"] is False and broken["first_broken_seq"] == 3 and broken["broken_tenant"] == "t-1"
    with db.session() as s:
        assert (
            s.scalar(select(func.count()).select_from(AuditEntry)) == broken["checked"] + 1
            or broken["checked"] >= 2
        )


# --------------------------------------------------------------------------- OpenAPI


def _api_routes(app: Flask) -> set[tuple[str, str]]:
    out = set()
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1"):
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in rule.methods or ():
            if method not in ("HEAD", "OPTIONS"):
                out.add((method.lower(), path))
    return out


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref":
                yield v
            else:
                yield from _refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from _refs(v)


def test_openapi_document_covers_every_api_route_and_is_valid(app: Flask, client: FlaskClient) -> None:
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200, "the document is public"
    doc = response.get_json()
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    routes = _api_routes(app)
    assert routes - documented == set(), "undocumented API routes"
    assert documented - routes == set(), "documented routes that do not exist"
    assert len(routes) == 11
    # Structural validity (openapi-spec-validator is used too when it is installed).
    assert doc["openapi"].startswith("3.1") and doc["info"]["title"] and doc["info"]["version"]
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": doc["components"]["securitySchemes"]["bearerAuth"]["description"],
    }
    schemas = doc["components"]["schemas"]
    for ref in _refs(doc):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas, ref
    for path, ops in doc["paths"].items():
        names = set(re.findall(r"{([^}]+)}", path))
        for method, op in ops.items():
            assert method in {"get", "post", "put", "patch", "delete"}
            assert op["operationId"] and op["responses"]
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert declared == names, (path, method)
            assert all(p["required"] for p in op.get("parameters", []) if p["in"] == "path")
            for status, resp in op["responses"].items():
                assert re.fullmatch(r"[1-5]\d\d", status) and resp["description"]
            if path != "/api/v1/openapi.json":
                assert "401" in op["responses"] and "403" in op["responses"]
                errors = [r for s, r in op["responses"].items() if s.startswith("4")]
                assert all(
                    r["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
                    for r in errors
                )
    ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))
    try:
        from openapi_spec_validator import validate  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return
    validate(doc)
