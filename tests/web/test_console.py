"""The customer cockpit (read side): search, the customer page, fragments, live marker, time travel."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import delete as sa_delete
from sqlalchemy import event, select
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.engine import Engine

from webapp.db import Database
from webapp.models import AuditEntry, Customer, GovernorInstance, OutboxMessage
from webapp.policy import ROLES, can
from webapp.services.transitions import Actor, EventRequest, fire_event

CSRF = r'name="csrf_token"[^>]*value="([^"]+)"'
SUPPORT = Actor("u-test", "support")
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
T_PURCHASE = T0 + timedelta(days=1)
T_LOCK = T0 + timedelta(days=3)
EIGHT = (
    "customer_account",
    "subscription",
    "entitlement",
    "billing",
    "quota_sla",
    "compliance_audit",
    "multi_tenant",
    "catalog",
)


def _instance(db: Database, customer_id: str, governor: str) -> GovernorInstance:
    with db.session() as s:
        return s.scalars(
            select(GovernorInstance).where(
                GovernorInstance.customer_id == customer_id, GovernorInstance.governor == governor
            )
        ).one()


def fire(
    db: Database,
    customer_id: str,
    governor: str,
    event: str,
    payload: dict[str, Any],
    when: datetime,
    actor: Actor = SUPPORT,
    **extra: Any,
) -> dict[str, Any]:
    """Apply one event through the transition service (as a colleague or a job would)."""
    row = _instance(db, customer_id, governor)
    with db.session() as s:
        result = fire_event(
            s,
            EventRequest(row.tenant_id, event, row.id, payload, **extra),
            actor,
            when,
            facts_hook=lambda *_: {"payment_method_valid": True},
        )
    assert result.status == 200, result.body
    return result.body


def build_customer(
    db: Database,
    customer_id: str = "c-1001",
    *,
    name: str = "Ada Example",
    email: str | None = None,
    tenant_id: str = "t-1",
    billed: bool = True,
) -> str:
    """A signed-up, onboarded customer; with ``billed`` they bought a plan and have an invoice issued."""
    from webapp.services.setup import activate_customer, ensure_catalog, ensure_tenant, signup_customer

    with db.session() as s:
        ensure_tenant(s, tenant_id, T0)
        ensure_catalog(s, T0)
    with db.session() as s:
        signup_customer(
            s,
            tenant_id,
            customer_id,
            name=name,
            email=email or f"{customer_id}@example.test",
            tier="starter",
            now=T0,
        )
    with db.session() as s:
        activate_customer(s, tenant_id, customer_id, now=T0)
    if billed:
        fire(
            db,
            customer_id,
            "subscription",
            "purchase",
            {"reason": "customer bought the plan", "tier": "starter", "cycle": "monthly"},
            T_PURCHASE,
        )
        fire(
            db,
            customer_id,
            "billing",
            "invoice_generation_time_reached",
            {},
            T_PURCHASE,
            Actor("timer", "timer"),
            timer="generate_invoice",
            timer_seq=1,
        )
    return customer_id


@pytest.fixture(autouse=True)
def _fresh_filter_menus() -> None:
    """Each test empties the database, so customer and history ids repeat: no menus from earlier tests."""
    from webapp.services import queries

    queries.clear_caches()


@pytest.fixture
def staff(client: FlaskClient, make_user: Callable[..., Any], login: Callable[..., Any]) -> FlaskClient:
    """The client signed in as a support agent."""
    make_user("sam@staff.test", ["support"])
    assert login(client, "sam@staff.test").status_code == 302
    return client


def page(client: FlaskClient, url: str, **headers: str) -> tuple[int, str]:
    response = client.get(url, headers=headers)
    return response.status_code, response.get_data(as_text=True)


# --------------------------------------------------------------------------- search


def test_search_finds_a_customer_by_id_name_email_and_invoice_id(
    web_db: Database, staff: FlaskClient
) -> None:
    build_customer(web_db, "c-1001", name="Ada Example")
    build_customer(web_db, "c-2002", name="Grace Hopper", billed=False)
    invoice = _instance(web_db, "c-1001", "billing").id

    for query, why in (
        ("c-1001", "customer id"),
        ("ada", "name"),
        ("c-1001@example.test", "email"),
        (invoice, "invoice id"),
    ):
        status, body = page(staff, f"/customers?q={query}")
        assert status == 200
        assert 'id="customer-row-c-1001"' in body, query
        assert 'id="customer-row-c-2002"' not in body, query
        assert f'<td class="muted">{why}</td>' in body
    _, body = page(staff, "/customers?q=grace")
    assert 'id="customer-row-c-2002"' in body and 'id="customer-row-c-1001"' not in body
    # PII is masked in the results.
    assert "Ada Example" not in body and "A••• E•••" not in body
    _, body = page(staff, "/customers?q=ada")
    assert "A••• E•••" in body and "Ada Example" not in body and "c-1001@example.test" not in body


def test_search_pages_with_a_keyset_cursor(web_db: Database, staff: FlaskClient) -> None:
    from webapp.services.setup import ensure_tenant

    with web_db.session() as s:
        ensure_tenant(s, "t-1", T0)
        for n in range(30):
            s.add(
                Customer(
                    id=f"c-{n:04d}",
                    tenant_id="t-1",
                    name=f"Zed {n}",
                    email=f"z{n}@example.test",
                    tier="starter",
                    created_at=T0,
                )
            )
    status, first = page(staff, "/customers")
    assert status == 200
    ids = re.findall(r'id="customer-row-(c-\d{4})"', first)
    assert ids == [f"c-{n:04d}" for n in range(25)]
    cursor = re.search(r'id="next-page" href="[^"]*cursor=(c-\d{4})', first)
    assert cursor and cursor.group(1) == "c-0024"
    _, second = page(staff, f"/customers?cursor={cursor.group(1)}")
    assert re.findall(r'id="customer-row-(c-\d{4})"', second) == [f"c-{n:04d}" for n in range(25, 30)]
    assert 'id="next-page"' not in second
    # An htmx request gets only the results block.
    _, fragment = page(staff, "/customers?q=zed", **{"HX-Request": "true"})
    assert fragment.lstrip().startswith('<div id="results"') and "<html" not in fragment


# --------------------------------------------------------------------------- the customer page


def test_customer_page_shows_eight_governor_cards_with_the_current_state(
    web_db: Database, staff: FlaskClient
) -> None:
    build_customer(web_db)
    status, body = page(staff, "/customers/c-1001")
    assert status == 200
    expected = {
        "customer_account": "active",
        "subscription": "active",
        "entitlement": "active",
        "billing": "invoice_issued",
        "quota_sla": "within_limits",
        "compliance_audit": "compliant",
        "multi_tenant": "healthy",
        "catalog": "published",
    }
    for governor, state in expected.items():
        assert f'id="group-{governor}"' in body
        node = re.search(rf'<g id="gov-{governor}-state-{state}" class="([^"]*)"', body)
        assert node, governor
        assert "current" in node.group(1).split(), governor
    assert len(re.findall(r'class="[^"]*\bcurrent\b[^"]*" data-state=', body)) >= 8
    # Header: masked name, tier, account state, KYC; money formatted from cents; a timer countdown.
    assert 'id="customer-name" class="masked">A••• E•••<' in body
    assert 'id="account-state">active<' in body
    assert "<dd>verified</dd>" in body
    assert "$29.99" in body
    assert re.search(r'<time class="countdown( overdue)?" datetime="2026-03-\d\dT[0-9:]+\+00:00"', body)
    # Live polling and the console stylesheet.
    assert 'hx-trigger="every 3s"' in body and "css/console.css" in body
    # The timeline links cascades to their cause.
    cause = re.search(r'<a class="tl-cause" href="#tr-(\d+)">cascade (X\w+)', body)
    assert cause and f'id="tr-{cause.group(1)}"' in body


def test_cards_fragment_for_htmx_has_no_layout_and_varies_on_hx_request(
    web_db: Database, staff: FlaskClient
) -> None:
    build_customer(web_db)
    response = staff.get("/customers/c-1001/cards", headers={"HX-Request": "true"})
    body = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "<html" not in body and body.lstrip().startswith('<div id="cards"')
    assert 'id="gov-customer_account-state-active"' in body
    assert "HX-Request" in [v.strip() for v in response.headers["Vary"].split(",")]
    full = staff.get("/customers/c-1001/cards")
    assert "<html" in full.get_data(as_text=True)


def test_history_pages_and_filters(web_db: Database, staff: FlaskClient) -> None:
    build_customer(web_db)
    _, body = page(staff, "/customers/c-1001/history?governor=billing", **{"HX-Request": "true"})
    governors = re.findall(r'class="tl-row[^"]*" data-governor="(\w+)"', body)
    assert governors and set(governors) == {"billing"}
    _, body = page(staff, "/customers/c-1001/history?event=signup", **{"HX-Request": "true"})
    assert re.findall(r'<span class="tl-event mono">(\w+)</span>', body) == ["signup"]
    # Keyset: the "load older" link carries the last id seen; the next page holds only older rows.
    from webapp.services import queries

    with web_db.session() as s:
        first = queries.history_page(s, "c-1001", limit=5)
        second = queries.history_page(s, "c-1001", limit=5, cursor=first.next_cursor)
    assert first.next_cursor == first.items[-1].id
    assert [i.id for i in second.items] == sorted((i.id for i in second.items), reverse=True)
    assert max(i.id for i in second.items) < min(i.id for i in first.items)


def test_change_marker_changes_after_an_event_and_changes_returns_only_what_changed(
    web_db: Database, staff: FlaskClient
) -> None:
    build_customer(web_db)
    _, body = page(staff, "/customers/c-1001")
    marker = re.search(r'data-marker="([^"]+)"', body)
    assert marker
    unchanged = staff.get(
        f"/customers/c-1001/changes?since={marker.group(1)}", headers={"HX-Request": "true"}
    )
    assert unchanged.status_code == 204

    fire(
        web_db,
        "c-1001",
        "customer_account",
        "lock",
        {"reason": "suspected account takeover", "reason_code": "compromised_account"},
        T_LOCK,
    )
    changed = staff.get(f"/customers/c-1001/changes?since={marker.group(1)}", headers={"HX-Request": "true"})
    body = changed.get_data(as_text=True)
    assert changed.status_code == 200
    new_marker = re.search(r'data-marker="([^"]+)"', body)
    assert new_marker and new_marker.group(1) != marker.group(1)
    assert (
        'id="group-customer_account" class="gov-group" data-governor="customer_account" hx-swap-oob="true"'
        in body
    )
    node = re.search(r'<g id="gov-customer_account-state-locked" class="([^"]*)"', body)
    assert node and "current" in node.group(1)
    # Only the governors the lock cascade touched are re-rendered (quota, compliance, ... are not).
    from webapp.models import TransitionRecord

    with web_db.session() as s:
        touched = set(
            s.scalars(select(TransitionRecord.governor).where(TransitionRecord.occurred_at == T_LOCK))
        )
    swapped = set(re.findall(r'<div id="group-(\w+)" class="gov-group"', body))
    assert "customer_account" in touched and touched <= swapped
    assert swapped - touched <= {"catalog"} and len(swapped) < 8
    assert 'hx-swap-oob="afterbegin:#timeline-rows"' in body and ">lock</span>" in body
    assert 'id="lock-flag">locked<' in body


def test_time_travel_shows_the_earlier_state_read_only(web_db: Database, staff: FlaskClient) -> None:
    build_customer(web_db)
    fire(
        web_db,
        "c-1001",
        "customer_account",
        "lock",
        {"reason": "suspected account takeover", "reason_code": "compromised_account"},
        T_LOCK,
    )
    _, live = page(staff, "/customers/c-1001")
    assert 'id="account-state">locked<' in live
    before = (T_LOCK - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    status, body = page(staff, f"/customers/c-1001/as-of?at={before}")
    assert status == 200
    assert 'id="time-travel-banner"' in body
    assert 'id="account-state">active<' in body
    node = re.search(r'<g id="gov-customer_account-state-active" class="([^"]*)"', body)
    assert node and "current" in node.group(1)
    assert 'hx-trigger="every 3s"' not in body and 'class="actions"' not in body
    assert ">lock</span>" not in body  # the later history is hidden too
    # Before the purchase there was no invoice yet.
    _, early = page(
        staff, f"/customers/c-1001/as-of?at={(T0 + timedelta(hours=1)).strftime('%Y-%m-%dT%H:%M')}"
    )
    assert 'id="gov-subscription-state-trial" class="state current' in early
    assert 'id="card-empty-billing"' in early
    # Bad or future instants: 422 with the message next to the field.
    status, bad = page(staff, "/customers/c-1001/as-of?at=yesterday")
    assert status == 422 and 'id="as-of-error"' in bad
    status, future = page(staff, "/customers/c-1001/as-of?at=2999-01-01T00:00")
    assert status == 422 and "in the past" in future


def test_unknown_customer_is_404_without_data(web_db: Database, staff: FlaskClient) -> None:
    build_customer(web_db, billed=False)
    for url in (
        "/customers/nope",
        "/customers/nope/cards",
        "/customers/nope/history",
        "/customers/nope/changes",
        "/customers/nope/as-of?at=2026-03-02T10:00",
    ):
        status, body = page(staff, url)
        assert status == 404, url
        assert "c-1001" not in body and "gov-card" not in body


def test_script_in_a_name_is_escaped(
    web_db: Database, client: FlaskClient, make_user: Callable[..., Any], login: Callable[..., Any]
) -> None:
    build_customer(web_db, "c-x", name="<script>alert(1)</script> Mallory", billed=False)
    make_user("rita@staff.test", ["support"])
    login(client, "rita@staff.test")
    token = re.search(CSRF, page(client, "/customers/c-x")[1])
    assert token
    response = client.post(
        "/customers/c-x/reveal",
        data={
            "reason_code": "customer_contact",
            "comment": "ticket 4711, caller verified",
            "csrf_token": token.group(1),
        },
        headers={"HX-Request": "true"},
    )
    body = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "<script>alert(1)</script>" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt; Mallory" in body
    _, search = page(client, "/customers?q=c-x")
    assert "<script>alert" not in search


def test_reveal_is_audited_and_needs_a_reason(web_db: Database, staff: FlaskClient) -> None:
    build_customer(web_db, billed=False)
    _, body = page(staff, "/customers/c-1001")
    assert "Ada Example" not in body and "c-1001@example.test" not in body
    token = re.search(CSRF, body)
    assert token
    refused = staff.post(
        "/customers/c-1001/reveal",
        data={"reason_code": "customer_contact", "comment": "x", "csrf_token": token.group(1)},
    )
    assert refused.status_code == 422 and "Ada Example" not in refused.get_data(as_text=True)
    ok = staff.post(
        "/customers/c-1001/reveal",
        data={
            "reason_code": "customer_contact",
            "comment": "ticket 4711, caller verified",
            "csrf_token": token.group(1),
        },
        headers={"HX-Request": "true"},
    )
    text = ok.get_data(as_text=True)
    assert ok.status_code == 200 and "Ada Example" in text and "c-1001@example.test" in text
    assert "<html" not in text
    with web_db.session() as s:
        entries = list(s.scalars(select(AuditEntry).where(AuditEntry.action == "pii.revealed")))
    assert len(entries) == 1 and entries[0].customer_id == "c-1001"
    assert '"reason_code":"customer_contact"' in entries[0].payload and "ticket" not in entries[0].payload


def test_reveal_is_refused_for_admin(
    web_db: Database, client: FlaskClient, make_user: Callable[..., Any], login: Callable[..., Any]
) -> None:
    build_customer(web_db, billed=False)
    make_user("adam@staff.test", ["admin"], totp=True)
    user_secret = None
    from webapp.models import StaffUser

    with web_db.session() as s:
        user_secret = s.scalars(
            select(StaffUser.totp_secret).where(StaffUser.email == "adam@staff.test")
        ).one()
    login(client, "adam@staff.test", totp=user_secret)
    status, body = page(client, "/customers/c-1001")
    assert status == 200
    assert "needs support or finance or manager or compliance; you have admin" in body
    token = re.search(CSRF, body)
    assert token
    forged = client.post(
        "/customers/c-1001/reveal",
        data={
            "reason_code": "customer_contact",
            "comment": "ticket 4711, caller verified",
            "csrf_token": token.group(1),
        },
    )
    assert forged.status_code == 403 and "Ada Example" not in forged.get_data(as_text=True)


@pytest.mark.parametrize("role", [*ROLES, None])
def test_every_role_with_customer_view_opens_the_page_and_no_one_else(
    role: str | None,
    web_db: Database,
    client: FlaskClient,
    make_user: Callable[..., Any],
    login: Callable[..., Any],
) -> None:
    build_customer(web_db, billed=False)
    needs_totp = role in ("admin", "compliance")
    if role is None:
        # A user without any role cannot be made through the service: revoke the grant afterwards.
        made = make_user("nobody@staff.test", ["support"])
        from webapp.models import RoleGrant

        with web_db.session() as s:
            for grant in s.scalars(select(RoleGrant).where(RoleGrant.user_id == made.id)):
                s.delete(grant)
        login(client, "nobody@staff.test")
    else:
        made = make_user(f"{role}@staff.test", [role], totp=needs_totp)
        login(client, made.email, totp=made.totp_secret)
    status, _ = page(client, "/customers/c-1001")
    allowed = role is not None and can({role}, "customer.view")
    assert status == (200 if allowed else 403)


def test_signed_out_users_are_sent_to_sign_in(web_db: Database, client: FlaskClient) -> None:
    build_customer(web_db, billed=False)
    response = client.get("/customers/c-1001")
    assert response.status_code in (302, 401)
    assert "Ada" not in response.get_data(as_text=True)


# --------------------------------------------------------------------------- cost of the page (issue 4)

PAGE_QUERIES = 5
"""Statements of GET /customers/<id>, whatever it shows: the signed-in user (2), the customer with its
instances, their recent paths and world facts (1), its jobs (1), the timeline (1). The filter menus add
one when the history has grown since they were last read (they are kept per newest history id)."""


@contextmanager
def statements() -> Iterator[list[str]]:
    """The SQL statements run inside the block (on any engine)."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(Engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", record)


def _copy_row(row: Any, **changes: Any) -> Any:
    """A new ORM row with ``row``'s column values, ``changes`` applied."""
    values = {a.key: getattr(row, a.key) for a in sa_inspect(type(row)).column_attrs}
    values.update(changes)
    return type(row)(**values)


def _more_of_everything(db: Database, customer_id: str, invoices: int, rows: int, jobs: int) -> None:
    """More invoices (each with its own diagram and history), history rows and pending jobs."""
    from webapp.models import OutboxMessage, TransitionRecord

    with db.session() as s:
        bill = s.scalars(
            select(GovernorInstance).where(
                GovernorInstance.customer_id == customer_id, GovernorInstance.governor == "billing"
            )
        ).first()
        assert bill is not None
        steps = list(s.scalars(select(TransitionRecord).where(TransitionRecord.instance_id == bill.id)))
        for n in range(invoices):
            copy = _copy_row(bill, id=f"{bill.id}-copy{n}")
            s.add(copy)
            s.flush()
            for k, step in enumerate(steps):
                s.add(_copy_row(step, id=None, instance_id=copy.id, event_id=f"copy-{n}-{k}", cause_id=None))
        last = steps[-1]
        for k in range(rows):
            s.add(_copy_row(last, id=None, event_id=f"more-{k}", cause_id=None))
        for k in range(jobs):
            s.add(
                OutboxMessage(
                    job_id=f"bench-job-{k}",
                    tenant_id=bill.tenant_id,
                    customer_id=customer_id,
                    instance_id=bill.id,
                    governor="billing",
                    job="effect",
                    args={"effect": "notify_customer"},
                    created_at=T0 + timedelta(minutes=k),
                    attempts=0,
                )
            )


def test_customer_page_runs_a_fixed_number_of_queries_whatever_it_lists(
    web_db: Database, staff: FlaskClient
) -> None:
    """No query per card, per diagram, per history row or per job: a guard against N+1 reads."""
    build_customer(web_db)
    with statements() as first:
        assert staff.get("/customers/c-1001").status_code == 200
    with statements() as few:
        assert staff.get("/customers/c-1001").status_code == 200
    _more_of_everything(web_db, "c-1001", invoices=3, rows=60, jobs=5)
    with statements() as grown:
        assert staff.get("/customers/c-1001").status_code == 200
    with statements() as many:
        body = staff.get("/customers/c-1001").get_data(as_text=True)
    assert len(re.findall(r'<article id="card-bill-', body)) == 4
    assert body.count('class="tl-row') == 50 and "and 5 more" not in body
    assert len(many) == len(few) <= PAGE_QUERIES, "\n".join(many)
    assert len(first) == len(grown) == len(few) + 1, "\n".join(grown)


def test_page_marker_equals_the_polled_marker_with_many_pending_jobs(
    web_db: Database, staff: FlaskClient
) -> None:
    """The page computes the jobs digest from its job lists; past JOBS_LIMIT it asks for the counts."""
    from webapp.services import queries

    build_customer(web_db)
    for jobs in (3, queries.JOBS_LIMIT + 5):
        with web_db.session() as s:
            s.execute(sa_delete(OutboxMessage).where(OutboxMessage.customer_id == "c-1001"))
        _more_of_everything(web_db, "c-1001", invoices=0, rows=0, jobs=jobs)
        _, body = page(staff, "/customers/c-1001")
        marker = re.search(r'data-marker="([^"]+)"', body)
        assert marker
        with web_db.session() as s:
            assert marker.group(1) == queries.change_marker(s, "c-1001")
        polled = staff.get(
            f"/customers/c-1001/changes?since={marker.group(1)}", headers={"HX-Request": "true"}
        )
        assert polled.status_code == 204, jobs
        assert body.count('<li class="job job-pending">') == min(jobs, 8)
        if jobs > 8:
            assert f"and {min(jobs, queries.JOBS_LIMIT) - 8} more" in body


def test_filter_menus_show_an_event_as_soon_as_it_happened(web_db: Database, staff: FlaskClient) -> None:
    build_customer(web_db)
    _, before = page(staff, "/customers/c-1001")
    assert '<option value="lock">' not in before
    fire(
        web_db,
        "c-1001",
        "customer_account",
        "lock",
        {"reason": "suspected account takeover", "reason_code": "compromised_account"},
        T_LOCK,
    )
    _, after = page(staff, "/customers/c-1001")
    assert '<option value="lock">lock</option>' in after


def test_rows_read_with_the_instances_match_the_separate_lookups(web_db: Database) -> None:
    """Recent paths and world facts read along with the instance rows equal the per-item lookups."""
    from webapp.models.compliance import LegalHold
    from webapp.services import queries
    from webapp.services.facts import world_facts
    from webapp.services.instances import to_instance

    build_customer(web_db)
    _more_of_everything(web_db, "c-1001", invoices=1, rows=3, jobs=0)
    for held in (False, True):
        if held:
            with web_db.session() as s:
                s.add(
                    LegalHold(
                        id="hold-1",
                        tenant_id="t-1",
                        customer_id="c-1001",
                        reference="case 7",
                        placed_by="u-legal",
                        placed_at=T0,
                    )
                )
        with web_db.session() as s:
            read = queries.read_customer(s, "c-1001")
            assert read is not None and read.customer.id == "c-1001"
            ids = [r.id for r in read.instances]
            assert {r.governor for r in read.instances} == set(EIGHT)
            window: dict[str, list[tuple[str | None, str]]] = {i: [] for i in ids}
            for iid, a, b in s.execute(queries._recent_window(ids, None)):
                window[iid].append((a, b))
            assert read.recent == queries._recent_paths(s, ids) == window
            assert all(len(path) == min(len(path), queries.RECENT_PATH) for path in window.values())
            at = T_PURCHASE - timedelta(minutes=1)
            window_at: dict[str, list[tuple[str | None, str]]] = {i: [] for i in ids}
            for iid, a, b in s.execute(queries._recent_window(ids, at)):
                window_at[iid].append((a, b))
            assert queries._recent_paths(s, ids, before=at) == window_at
            snapshot = {r.id: to_instance(r) for r in read.instances}
            for r in read.instances:
                looked_up = world_facts(s, snapshot, snapshot[r.id], "")
                assert world_facts(s, snapshot, snapshot[r.id], "", known=read.known[r.id]) == looked_up
                if r.customer_id is not None:
                    assert looked_up["legal_hold"] is held
                else:
                    assert looked_up["sku_active_entitlements"] >= 1


def test_the_page_carries_the_diagram_stylesheet_once(web_db: Database, staff: FlaskClient) -> None:
    build_customer(web_db)
    _, body = page(staff, "/customers/c-1001")
    svgs = re.findall(r"<svg\b.*?</svg>", body, re.S)
    assert len(svgs) == 8
    assert not [svg for svg in svgs if "<style" in svg or "font-family=" in svg]
    assert body.count('<style id="diagram-css">') == 1
    assert ".gov-diagram .state.current>rect" in body and "text-anchor:middle" in body
    assert 'text-anchor="middle"' not in body
    # A live update re-renders cards inside the page, which keeps the stylesheet.
    _, cards = page(staff, "/customers/c-1001/cards", **{"HX-Request": "true"})
    assert "<svg" in cards and "diagram-css" not in cards and ".gov-diagram .state" not in cards
