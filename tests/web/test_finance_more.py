"""Finance's other desks (CONSOLE.md §3.2, GOVERNORS.md §2, §9, §11): overview, refunds and settlements
with four-eyes, issued refunds, my approvals, unreconciled and stuck invoices, the dunning ladder preview.

Flask client on PostgreSQL with CSRF on; invoices get their states through ``fire_event`` the way
production does (``services.demo``: buy, deliver, pay or decline, timers fired by the sweep's path).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from governors import default_settings
from webapp.blueprints import finance as finance_bp
from webapp.db import Database
from webapp.models import Approval, AuditEntry, DueTimer, GovernorInstance, TransitionRecord
from webapp.runtime import Runtime
from webapp.services import ladder
from webapp.services.demo import SYSTEM, Driver, buy_and_invoice, fire_due_timers, pay_invoice
from webapp.services.facts import world_facts
from webapp.services.setup import activate_customer, ensure_catalog, ensure_tenant, signup_customer

from .conftest import MadeUser, fresh_code, sign_in

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
PAGES = (
    "/finance/",
    "/finance/retries",
    "/finance/invoices",
    "/finance/refunds",
    "/finance/approvals",
    "/finance/reconciliation",
    "/finance/ladder",
)
_HIDDEN = re.compile(r'name="(csrf_token|idempotency_key|expected_version)" type="hidden" value="([^"]*)"')
_HX_CSRF = re.compile(r'"X-CSRFToken": "([^"]+)"')
COMMENT = "customer was charged twice for the same month"


# --------------------------------------------------------------------------- fixtures


def _customer(db: Database, customer_id: str, at: datetime) -> Driver:
    with db.session() as s:
        ensure_tenant(s, "t-1", at)
        ensure_catalog(s, at)
    with db.session() as s:
        signup_customer(
            s, "t-1", customer_id, name="Grace Hopper", email=f"{customer_id}@x.test", tier="starter", now=at
        )
    with db.session() as s:
        activate_customer(s, "t-1", customer_id, now=at + timedelta(minutes=1))
    driver = Driver(db, None)
    assert buy_and_invoice(driver, "t-1", customer_id, at + timedelta(minutes=2))
    return driver


def _paid_invoice(db: Database, customer_id: str, paid_at: datetime) -> GovernorInstance:
    """A customer whose first invoice was paid at ``paid_at``: billing in payment_received."""
    driver = _customer(db, customer_id, paid_at - timedelta(hours=1))
    assert pay_invoice(driver, "t-1", customer_id, paid_at)
    return _billing(db, customer_id)


def _open_invoice(db: Database, customer_id: str, at: datetime) -> GovernorInstance:
    """An invoice delivered at ``at + 7 min``: billing in payment_pending with its 7-day window running."""
    _customer(db, customer_id, at)
    return _billing(db, customer_id)


def _billing(db: Database, customer_id: str) -> GovernorInstance:
    with db.session() as s:
        row = s.scalars(
            select(GovernorInstance).where(
                GovernorInstance.customer_id == customer_id, GovernorInstance.governor == "billing"
            )
        ).one()
        s.expunge(row)
        return row


def _count(db: Database, model: type, **where: object) -> int:
    with db.session() as s:
        stmt = select(func.count()).select_from(model)
        for key, value in where.items():
            stmt = stmt.where(getattr(model, key) == value)
        return int(s.scalar(stmt) or 0)


def _signed_in(app: Flask, user: MadeUser) -> FlaskClient:
    client = app.test_client()
    response = sign_in(client, user.email, user.password, totp=user.totp_secret)
    assert response.status_code == 302, response.get_data(as_text=True)[:300]
    return client


def _next_code(user: MadeUser) -> str:
    """A code for a time-step not handed out before (the sign-in used one; a code is accepted once)."""
    assert user.totp_secret
    return fresh_code(user.totp_secret)


def _submit(client: FlaskClient, instance_id: str, event: str, data: dict[str, str]) -> tuple[int, str]:
    form = client.get(f"/instances/{instance_id}/actions/{event}")
    assert form.status_code == 200, form.get_data(as_text=True)[:300]
    hidden = dict(_HIDDEN.findall(form.get_data(as_text=True)))
    response = client.post(
        f"/instances/{instance_id}/actions/{event}",
        data={**hidden, "comment": COMMENT, "reason_code": "other", **data},
        headers={"HX-Request": "true"},
    )
    return response.status_code, response.get_data(as_text=True)


def _decide(client: FlaskClient, approval_id: str, verb: str, **fields: str) -> tuple[int, str]:
    page = client.get(f"/approvals/{approval_id}")
    token = _HX_CSRF.search(page.get_data(as_text=True))
    assert token
    response = client.post(f"/approvals/{approval_id}/{verb}", data={"csrf_token": token.group(1), **fields})
    return response.status_code, response.get_data(as_text=True)


# --------------------------------------------------------------------------- access


@pytest.mark.parametrize("role", ["finance", "manager", "admin", "compliance", "auditor"])
def test_every_finance_page_renders_for_the_roles_with_the_finance_dashboard(
    app: Flask, make_user: Callable[..., MadeUser], role: str
) -> None:
    client = _signed_in(app, make_user(f"{role}@x.test", [role], totp=True))
    for page in PAGES:
        response = client.get(page)
        assert response.status_code == 200, (page, response.status_code)
        html = response.get_data(as_text=True)
        assert 'aria-label="Finance"' in html, page  # the finance tabs
    overview = client.get("/finance/").get_data(as_text=True)
    assert 'id="finance-overview"' in overview
    # The dashboards' finance charts are embedded as htmx fragments, in the issue's order.
    slots = re.findall(r'id="chart-(\w+)" hx-get="(/dashboards/finance/\w+)" hx-trigger="load', overview)
    assert slots == [
        ("payments", "/dashboards/finance/payments"),
        ("recovery", "/dashboards/finance/recovery"),
        ("failures", "/dashboards/finance/failures"),
    ]
    assert 'id="charts-pending"' not in overview


def test_support_is_refused_every_finance_page(app: Flask, make_user: Callable[..., MadeUser]) -> None:
    client = _signed_in(app, make_user("sup@x.test", ["support"]))
    for page in PAGES:
        response = client.get(page)
        assert response.status_code == 403, page
        assert "needs finance" in response.get_data(as_text=True)


def test_signed_out_visitors_are_sent_to_sign_in(client: FlaskClient) -> None:
    for page in PAGES:
        response = client.get(page)
        assert response.status_code in (302, 401), page


# --------------------------------------------------------------------------- refunds with four-eyes


def test_refund_is_requested_by_one_finance_person_and_applied_once_when_another_approves(
    web_db: Database, app: Flask, make_user: Callable[..., MadeUser]
) -> None:
    inv = _paid_invoice(web_db, "c-10", datetime.now(UTC) - timedelta(hours=2))
    paid = int(inv.data["paid_cents"])
    a_user = make_user("fin-a@x.test", ["finance"], totp=True)
    b_user = make_user("fin-b@x.test", ["finance"], totp=True)
    a, b = _signed_in(app, a_user), _signed_in(app, b_user)

    page = a.get("/finance/invoices").get_data(as_text=True)
    assert f'id="invoice-{inv.id}" data-state="payment_received"' in page
    assert f'/instances/{inv.id}/actions/issue_refund"' in page
    # Force-reconcile is offered, disabled until the payment is a day old (B08), with the reason.
    assert 'data-event="accounting_reconciled"' in page
    assert f'class="money refundable" data-cents="{paid}"' in page

    status, body = _submit(
        a, inv.id, "issue_refund", {"in_amount_cents": "500", "reason_code": "duplicate_charge"}
    )
    assert status == 202, body[:500]
    with web_db.session() as s:
        approval = s.scalars(select(Approval).where(Approval.instance_id == inv.id)).one()
        approval_id = approval.id
    assert _billing(web_db, "c-10").data.get("refunded_cents", 0) == 0

    # A sees it among their requests (pending), not among the ones waiting for them.
    mine = a.get("/finance/approvals").get_data(as_text=True)
    assert f'id="mine-{approval_id}" data-approval="{approval_id}" data-status="pending"' in mine
    assert f'id="waiting-{approval_id}"' not in mine
    # A cannot approve their own request.
    status, body = _decide(a, approval_id, "approve", code=_next_code(a_user))
    assert status == 403
    assert "you made this request: a different person must approve it" in body
    assert _count(web_db, TransitionRecord, instance_id=inv.id, event="issue_refund") == 0

    # B sees it waiting for them and approves it.
    waiting = b.get("/finance/approvals").get_data(as_text=True)
    assert f'id="waiting-{approval_id}"' in waiting
    overview = b.get("/finance/").get_data(as_text=True)
    assert (
        'id="tile-waiting"' in overview
        and 'data-count="1">1</span><span class="label">billing requests' in overview
    )
    status, body = _decide(b, approval_id, "approve", code=_next_code(b_user), note="duplicate confirmed")
    assert status == 200, body[:800]
    assert "approved: the action was applied" in body

    row = _billing(web_db, "c-10")
    assert row.data["refunded_cents"] == 500
    assert len(row.data["refunds"]) == 1 and row.state == "payment_received"
    with web_db.session() as s:
        record = s.scalars(
            select(TransitionRecord).where(
                TransitionRecord.instance_id == inv.id, TransitionRecord.event == "issue_refund"
            )
        ).one()
        assert (record.actor, record.role, record.approval_id) == (a_user.id, "finance", approval_id)
        audit = s.scalars(select(AuditEntry).where(AuditEntry.action == "approval.approved")).one()
        assert audit.actor == b_user.id and approval_id in str(audit.payload)

    # Approving again applies nothing twice.
    status, _ = _decide(b, approval_id, "approve", code="000000")
    assert status == 409
    assert _count(web_db, TransitionRecord, instance_id=inv.id, event="issue_refund") == 1
    assert _billing(web_db, "c-10").data["refunded_cents"] == 500

    # The refunds list: amount in cents, who asked, who approved, why.
    listed = a.get("/finance/refunds").get_data(as_text=True)
    assert f'data-invoice="{inv.id}" data-event="issue_refund"' in listed
    assert 'data-cents="500">5.00 USD' in listed
    assert "duplicate_charge" in listed and COMMENT in listed
    assert "fin-a@x.test" in listed and "fin-b@x.test" in listed
    status_page = a.get("/finance/approvals").get_data(as_text=True)
    assert f'id="mine-{approval_id}" data-approval="{approval_id}" data-status="approved"' in status_page


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        ("999999", "the refund must be between 1 and 2999 cents"),
        ("-5", "Amount (cents) must be between 1 and"),
        ("0", "Amount (cents) must be between 1 and"),
        ("abc", "Not a valid integer value"),
        ("", "Amount cents is required"),
    ],
)
def test_oversized_or_negative_refund_is_refused_with_a_message_and_nothing_is_applied(
    web_db: Database, app: Flask, make_user: Callable[..., MadeUser], amount: str, message: str
) -> None:
    inv = _paid_invoice(web_db, "c-20", datetime.now(UTC) - timedelta(hours=2))
    client = _signed_in(app, make_user("fin@x.test", ["finance"]))
    status, body = _submit(
        client, inv.id, "issue_refund", {"in_amount_cents": amount, "reason_code": "duplicate_charge"}
    )
    assert status == 422, body[:500]
    assert message in body
    assert re.search(r'class="[^"]*error[^"]*"', body)  # the message is shown next to the field
    assert _count(web_db, Approval, instance_id=inv.id) == 0
    assert _count(web_db, TransitionRecord, instance_id=inv.id, event="issue_refund") == 0
    assert _billing(web_db, "c-20").data.get("refunded_cents", 0) == 0


def test_money_page_lists_paid_disputed_and_collections_but_not_the_ladder(
    web_db: Database, app: Flask, make_user: Callable[..., MadeUser]
) -> None:
    paid = _paid_invoice(web_db, "c-30", NOW + timedelta(hours=1))
    driver = _customer(web_db, "c-31", NOW)
    driver.fire(
        "t-1",
        "c-31",
        "billing",
        "payment_declined",
        SYSTEM,
        NOW + timedelta(hours=1),
        {"decline_code": "card_declined"},
    )
    failed = _billing(web_db, "c-31")
    assert failed.state == "payment_failed"
    client = _signed_in(app, make_user("fin@x.test", ["finance"]))
    html = client.get("/finance/invoices").get_data(as_text=True)
    assert f"invoice-{paid.id}" in html and f"invoice-{failed.id}" not in html
    assert 'id="state-payment_received"' in html
    # Finance escalates the failed one to a dispute: it joins the money page with "Resolve dispute".
    status, body = _submit(client, failed.id, "escalate_to_admin", {"reason_code": "other"})
    assert status == 200, body[:400]
    html = client.get("/finance/invoices?state=payment_disputed").get_data(as_text=True)
    assert f'id="invoice-{failed.id}" data-state="payment_disputed"' in html
    assert f'/instances/{failed.id}/actions/dispute_resolved"' in html
    assert f"invoice-{paid.id}" not in html


# --------------------------------------------------------------------------- unreconciled and stuck


def test_unreconciled_and_stuck_tables_match_the_fixture(
    web_db: Database, app: Flask, make_user: Callable[..., MadeUser], monkeypatch: pytest.MonkeyPatch
) -> None:
    view_at = NOW + timedelta(days=10)
    old = _paid_invoice(web_db, "c-41", view_at - timedelta(days=2))  # 48 h: ESCALATE
    mid = _paid_invoice(web_db, "c-42", view_at - timedelta(hours=18))  # 18 h: WARN
    new = _paid_invoice(web_db, "c-43", view_at - timedelta(hours=3))  # 3 h: OK
    # Made after the later ones: making a customer fires every timer due by then (as the sweep would).
    recent = _open_invoice(web_db, "c-45", view_at - timedelta(days=1))  # window still open
    late = _open_invoice(web_db, "c-44", view_at - timedelta(days=9))  # window ended ~2 d ago
    with web_db.session() as s:
        window_due = s.scalars(
            select(DueTimer.due_at).where(DueTimer.instance_id == late.id, DueTimer.name == "payment_window")
        ).one()
    assert window_due is not None
    monkeypatch.setattr(finance_bp, "utcnow", lambda: view_at)
    client = _signed_in(app, make_user("fin@x.test", ["finance"]))
    html = client.get("/finance/reconciliation").get_data(as_text=True)

    rows = re.findall(
        r'<tr id="unreconciled-table-([^"]+)" data-class="(\w+)" data-age-seconds="(\d+)"', html
    )
    assert rows == [
        (old.id, "ESCALATE", str(2 * 86400)),
        (mid.id, "WARN", str(18 * 3600)),
        (new.id, "OK", str(3 * 3600)),
    ]
    stuck = re.findall(r'<tr id="stuck-table-([^"]+)" data-class="(\w+)" data-age-seconds="(\d+)"', html)
    overdue = int((view_at - window_due).total_seconds())
    assert stuck == [(late.id, "ESCALATE", str(overdue))]
    assert overdue > 86400
    assert "timer payment_window (payment_window_timeout) did not fire" in html
    assert f"stuck-table-{recent.id}" not in html
    overview = client.get("/finance/").get_data(as_text=True)
    assert 'id="tile-unreconciled"' in overview and "unreconciled (1 older than a day)" in overview
    assert 'id="tile-stuck"' in overview


# --------------------------------------------------------------------------- the dunning ladder


def _shape(cal: ladder.Calendar) -> list[tuple[str, str, str, str, str]]:
    return [(e.at.strftime("%Y-%m-%d %H:%M"), e.governor, e.row_id, e.to_state, e.kind) for e in cal.entries]


START = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)

DEFAULT_CALENDAR = [
    # Day 0: the decline; the subscription enters its grace period (X05, S17).
    ("2026-04-01 09:00", "billing", "B05", "payment_failed", "ladder"),
    ("2026-04-01 09:00", "subscription", "S17", "renewal_grace", "cascade"),
    # Retry ladder: +2 d, +3 d, +6 d (GOVERNORS.md §2.3).
    ("2026-04-03 09:00", "billing", "B10", "retry_1", "attempt"),
    ("2026-04-04 09:00", "billing", "B14", "retry_2", "attempt"),
    ("2026-04-07 09:00", "billing", "B15", "retry_3", "attempt"),
    # Day 7: grace over → cancelled (S20), entitlement suspended (X07, E07), access ends.
    ("2026-04-08 09:00", "subscription", "S20", "cancelled", "cascade"),
    ("2026-04-08 09:00", "entitlement", "E07", "suspended", "cascade"),
    ("2026-04-08 09:00", "subscription", "Sx6", "cancelled", "cascade"),
    # Day 10: the suspension times out (72 h).
    ("2026-04-11 09:00", "entitlement", "E11", "cancelled", "cascade"),
    # Day 13: collections; the account is flagged delinquent (X10).
    ("2026-04-14 09:00", "billing", "B16", "collection_agency", "ladder"),
    ("2026-04-14 09:00", "customer_account", "Ax1", "active", "cascade"),
    # Later: refund window closes (E20, 14 d after cancellation), retention ends (S23, 30 d).
    ("2026-04-25 09:00", "entitlement", "E20", "archived", "cascade"),
    ("2026-05-08 09:00", "subscription", "S23", "lapsed", "cascade"),
]


def test_ladder_calendar_matches_the_hand_computed_default_schedule() -> None:
    cal = ladder.calendar(START, "starter", default_settings())
    assert _shape(cal) == DEFAULT_CALENDAR
    notices = {(e.row_id, n) for e in cal.entries for n in e.notices}
    assert {
        ("B05", "payment_failed"),
        ("S17", "renewal_payment_failed"),
        ("B15", "final_payment_attempt"),
        ("B16", "delinquency_notice"),
        ("E07", "entitlement_suspended"),
    } <= notices
    assert [e.attempt for e in cal.entries if e.kind == "attempt"] == ["1", "2", "3"]
    assert {e.row_id: e.via for e in cal.entries if e.via} == {"S17": "X05", "E07": "X07", "Ax1": "X10"}
    assert cal.invoice_total_cents == 2999 and cal.settings["billing.retry_1_after"] == "2d"


def test_ladder_calendar_follows_overridden_settings() -> None:
    settings = default_settings().override(
        {"billing.retry_1_after": "1h", "billing.collections_after": "3d", "subscription.grace_period": "14d"}
    )
    cal = ladder.calendar(START, "professional", settings)
    shape = _shape(cal)
    assert ("2026-04-01 10:00", "billing", "B10", "retry_1", "attempt") in shape
    assert ("2026-04-02 10:00", "billing", "B14", "retry_2", "attempt") in shape
    assert ("2026-04-05 10:00", "billing", "B15", "retry_3", "attempt") in shape
    assert ("2026-04-08 10:00", "billing", "B16", "collection_agency", "ladder") in shape
    assert ("2026-04-15 09:00", "subscription", "S20", "cancelled", "cascade") in shape
    assert ("2026-04-15 09:00", "entitlement", "E07", "suspended", "cascade") in shape
    assert shape != DEFAULT_CALENDAR
    assert cal.invoice_total_cents == 9999 and cal.settings["subscription.grace_period"] == "14d"


def test_ladder_page_shows_the_calendar_and_the_settings_used(
    app: Flask, make_user: Callable[..., MadeUser]
) -> None:
    client = _signed_in(app, make_user("fin@x.test", ["finance"]))
    html = client.get("/finance/ladder?start=2026-04-01T09:00&tier=starter").get_data(as_text=True)
    days = re.findall(r'data-day="(\d+)" data-at="([^"]+)" data-governor="(\w+)" data-row="(\w+)"', html)
    expected = [
        (str((datetime.strptime(at, "%Y-%m-%d %H:%M").replace(tzinfo=UTC) - START).days), g, r)
        for at, g, r, _, _ in DEFAULT_CALENDAR
    ]
    assert [(d, g, r) for d, _, g, r in days] == expected
    assert 'id="setting-billing-retry_1_after">2d<' in html
    assert 'id="setting-subscription-grace_period">7d<' in html
    assert "Charge attempt 3" in html and "final payment attempt" in html
    fragment = client.get(
        "/finance/ladder?start=2026-04-01&tier=professional", headers={"HX-Request": "true"}
    )
    body = fragment.get_data(as_text=True)
    assert fragment.status_code == 200 and "<html" not in body and 'id="calendar"' in body
    assert "99.99 USD" in body


def test_ladder_page_follows_the_settings_in_force(
    app: Flask, web_runtime: Runtime, make_user: Callable[..., MadeUser], monkeypatch: pytest.MonkeyPatch
) -> None:
    overridden = default_settings().override(
        {"billing.retry_1_after": "12h", "subscription.grace_period": "10d"}
    )
    monkeypatch.setattr(web_runtime, "settings", overridden)
    client = _signed_in(app, make_user("fin@x.test", ["finance"]))
    html = client.get("/finance/ladder?start=2026-04-01T09:00&tier=starter").get_data(as_text=True)
    assert 'data-day="0" data-at="2026-04-01T21:00:00+00:00" data-governor="billing" data-row="B10"' in html
    assert (
        'data-day="10" data-at="2026-04-11T09:00:00+00:00" data-governor="subscription" data-row="S20"'
        in html
    )
    assert 'id="setting-billing-retry_1_after">12h<' in html
    assert 'id="setting-subscription-grace_period">10d<' in html


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("start=yesterday&tier=starter", "give the start as a date"),
        ("start=1900-01-01&tier=starter", "between the years 2000 and 2100"),
        ("start=2026-04-01&tier=enterprise", "choose one of the tiers with a list price"),
        ("start=2026-04-01&tier=%3Cscript%3E", "choose one of the tiers"),
    ],
)
def test_ladder_page_refuses_bad_input_with_a_message(
    app: Flask, make_user: Callable[..., MadeUser], query: str, message: str
) -> None:
    client = _signed_in(app, make_user("fin@x.test", ["finance"]))
    response = client.get(f"/finance/ladder?{query}")
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert 'id="ladder-error"' in html and message in html
    assert "<script>" not in html.split('id="ladder-form"')[1]


# ------------------------------------------------------------------ settlements, write-offs, reconcile


def _in_collections(db: Database, customer_id: str) -> GovernorInstance:
    """A declined invoice whose ladder ran out (B16): billing in collection_agency."""
    driver = _customer(db, customer_id, NOW)
    result = driver.fire(
        "t-1",
        customer_id,
        "billing",
        "payment_declined",
        SYSTEM,
        NOW + timedelta(hours=1),
        {"decline_code": "insufficient_funds"},
    )
    assert result is not None and result.status == 200
    fire_due_timers(db, NOW + timedelta(days=14))
    row = _billing(db, customer_id)
    assert row.state == "collection_agency", row.state
    return row


def test_settlement_is_requested_by_finance_and_applied_when_a_manager_approves(
    web_db: Database, app: Flask, make_user: Callable[..., MadeUser]
) -> None:
    inv = _in_collections(web_db, "c-60")
    total = int(inv.data["total_cents"])
    fin = _signed_in(app, make_user("fin@x.test", ["finance"]))
    mgr_user = make_user("mgr@x.test", ["manager"], totp=True)
    mgr = _signed_in(app, mgr_user)
    html = fin.get("/finance/invoices?state=collection_agency").get_data(as_text=True)
    assert f'id="invoice-{inv.id}" data-state="collection_agency"' in html
    for event in ("settlement_agreed", "account_written_off", "payment_recovered"):
        assert f'/instances/{inv.id}/actions/{event}"' in html
    assert f'class="money" data-cents="{total}">' in html  # outstanding = the whole total

    # Above the outstanding amount: refused with the bound, nothing requested.
    status, body = _submit(
        fin, inv.id, "settlement_agreed", {"in_settlement_cents": str(total + 1), "in_agreement_ref": "agr-1"}
    )
    assert status in (409, 422) and f"between 1 and {total} cents" in body
    assert _count(web_db, Approval, instance_id=inv.id) == 0

    status, body = _submit(
        fin, inv.id, "settlement_agreed", {"in_settlement_cents": "2000", "in_agreement_ref": "agr-7"}
    )
    assert status == 202, body[:500]
    with web_db.session() as s:
        approval = s.scalars(select(Approval).where(Approval.instance_id == inv.id)).one()
        assert approval.approver_roles == ["manager"]
        approval_id = approval.id
    # Another finance person is no approver of a settlement: it is not waiting for them.
    other = _signed_in(app, make_user("fin2@x.test", ["finance"]))
    assert f"waiting-{approval_id}" not in other.get("/finance/approvals").get_data(as_text=True)
    assert f'id="waiting-{approval_id}"' in mgr.get("/finance/approvals").get_data(as_text=True)
    status, body = _decide(mgr, approval_id, "approve", code=_next_code(mgr_user))
    assert status == 200, body[:500]
    row = _billing(web_db, "c-60")
    assert row.state == "archived"
    assert (row.data["settled_cents"], row.data["written_off_cents"]) == (2000, total - 2000)
    assert f'id="mine-{approval_id}" data-approval="{approval_id}" data-status="approved"' in fin.get(
        "/finance/approvals"
    ).get_data(as_text=True)
    # Settled without any payment: nothing to refund, so not on the archived tab either.
    assert f"invoice-{inv.id}" not in fin.get("/finance/invoices?state=archived").get_data(as_text=True)


def test_archived_invoices_with_money_left_to_refund_have_their_own_tab(
    web_db: Database, app: Flask, make_user: Callable[..., MadeUser]
) -> None:
    inv = _paid_invoice(web_db, "c-65", NOW + timedelta(hours=1))
    driver = Driver(web_db, None)
    reconciled = driver.fire(
        "t-1",
        "c-65",
        "billing",
        "accounting_reconciled",
        SYSTEM,
        NOW + timedelta(days=2),
        hook=lambda *args: {**world_facts(*args), "processor_record_matches": True},
    )
    assert reconciled is not None and reconciled.status == 200, reconciled and reconciled.body
    assert _billing(web_db, "c-65").state == "archived"
    client = _signed_in(app, make_user("fin@x.test", ["finance"]))
    assert f"invoice-{inv.id}" not in client.get("/finance/invoices").get_data(as_text=True)
    html = client.get("/finance/invoices?state=archived").get_data(as_text=True)
    assert f'id="invoice-{inv.id}" data-state="archived"' in html
    assert f'/instances/{inv.id}/actions/issue_refund"' in html
    assert 'id="state-archived"' in html and 'data-count="1">1</span>' in html


def test_write_off_needs_a_manager_and_a_negative_amount_is_refused(
    web_db: Database, app: Flask, make_user: Callable[..., MadeUser]
) -> None:
    inv = _in_collections(web_db, "c-70")
    fin = _signed_in(app, make_user("fin@x.test", ["finance"]))
    status, body = _submit(
        fin, inv.id, "account_written_off", {"in_amount_cents": "-1", "in_justification": "bankrupt"}
    )
    assert status == 422
    assert _count(web_db, Approval, instance_id=inv.id) == 0
    status, body = _submit(
        fin,
        inv.id,
        "account_written_off",
        {"in_amount_cents": str(inv.data["total_cents"]), "in_justification": "customer insolvent"},
    )
    assert status == 202, body[:500]
    assert "Waiting for approval by manager" in body
    assert _billing(web_db, "c-70").state == "collection_agency"


def test_force_reconcile_before_a_day_is_refused_with_the_reason(
    web_db: Database, app: Flask, make_user: Callable[..., MadeUser]
) -> None:
    inv = _paid_invoice(web_db, "c-80", datetime.now(UTC) - timedelta(hours=2))
    fin = _signed_in(app, make_user("fin@x.test", ["finance"]))
    html = fin.get("/finance/invoices").get_data(as_text=True)
    assert "the payment must be at least a day old before reconciliation" in html
    token = _csrf_of(fin)
    forged = fin.post(
        f"/instances/{inv.id}/actions/accounting_reconciled",
        data={
            "csrf_token": token,
            "idempotency_key": "f" * 32,
            "in_processor_proof_ref": "proc-1",
            "reason_code": "other",
            "comment": COMMENT,
        },
    )
    assert forged.status_code == 409
    assert _count(web_db, Approval, instance_id=inv.id) == 0
    assert _billing(web_db, "c-80").state == "payment_received"


def _csrf_of(client: FlaskClient) -> str:
    match = _HX_CSRF.search(client.get("/finance/").get_data(as_text=True))
    assert match
    return match.group(1)


def test_a_chargeback_resolved_with_a_refund_is_listed_and_a_valid_payment_is_not(
    web_db: Database, app: Flask, make_user: Callable[..., MadeUser]
) -> None:
    refunded = _paid_invoice(web_db, "c-95", NOW + timedelta(hours=1))
    upheld = _paid_invoice(web_db, "c-96", NOW + timedelta(hours=1))
    driver = Driver(web_db, None)
    for cid, inv in (("c-95", refunded), ("c-96", upheld)):
        result = driver.fire(
            "t-1",
            cid,
            "billing",
            "chargeback_received",
            SYSTEM,
            NOW + timedelta(hours=5),
            {"dispute_id": f"dp-{cid}", "amount_cents": int(inv.data["paid_cents"])},
        )
        assert result is not None and result.status == 200, result and result.body
    paid = int(refunded.data["paid_cents"])
    a_user = make_user("fin-a@x.test", ["finance"])
    mgr_user = make_user("mgr@x.test", ["manager"], totp=True)
    a, mgr = _signed_in(app, a_user), _signed_in(app, mgr_user)
    html = a.get("/finance/invoices?state=payment_disputed").get_data(as_text=True)
    assert f'/instances/{refunded.id}/actions/dispute_resolved"' in html
    # A valid payment: no refund, no four-eyes, applied at once; not a refund.
    status, body = _submit(
        a, upheld.id, "dispute_resolved", {"in_outcome": "payment_valid", "in_evidence_ref": "ev-2"}
    )
    assert status == 200, body[:500]
    # A refund resolution needs a second person; the manager approves it.
    status, body = _submit(
        a,
        refunded.id,
        "dispute_resolved",
        {"in_outcome": "refund", "in_refund_cents": str(paid), "in_evidence_ref": "ev-1"},
    )
    assert status == 202, body[:500]
    with web_db.session() as s:
        approval_id = s.scalars(select(Approval.id).where(Approval.instance_id == refunded.id)).one()
    status, body = _decide(mgr, approval_id, "approve", code=_next_code(mgr_user))
    assert status == 200, body[:500]
    listed = a.get("/finance/refunds").get_data(as_text=True)
    assert f'data-invoice="{refunded.id}" data-event="dispute_resolved"' in listed
    assert f'data-cents="{paid}">' in listed and "dispute refund" in listed and "mgr@x.test" in listed
    assert f'data-invoice="{upheld.id}"' not in listed


@pytest.mark.parametrize(
    ("page", "root"),
    [
        ("/finance/invoices", 'id="money"'),
        ("/finance/refunds", 'id="refunds"'),
        ("/finance/approvals", 'id="finance-approvals"'),
        ("/finance/reconciliation", 'id="aged"'),
        ("/finance/ladder?start=2026-04-01&tier=starter", 'id="calendar"'),
    ],
)
def test_htmx_gets_the_fragment_and_a_full_page_otherwise(
    app: Flask, make_user: Callable[..., MadeUser], page: str, root: str
) -> None:
    client = _signed_in(app, make_user("fin@x.test", ["finance"]))
    full = client.get(page)
    fragment = client.get(page, headers={"HX-Request": "true"})
    assert full.status_code == fragment.status_code == 200
    assert "<html" in full.get_data(as_text=True) and root in full.get_data(as_text=True)
    body = fragment.get_data(as_text=True)
    assert "<html" not in body and root in body
    assert "HX-Request" in fragment.headers["Vary"]


def test_what_people_typed_is_escaped_on_the_finance_pages(
    web_db: Database, app: Flask, make_user: Callable[..., MadeUser]
) -> None:
    inv = _paid_invoice(web_db, "c-99", datetime.now(UTC) - timedelta(hours=2))
    with web_db.session() as s:
        from webapp.models import Customer

        customer = s.get(Customer, "c-99")
        assert customer is not None
        customer.name = '<img src=x onerror="alert(1)">'
    client = _signed_in(app, make_user("fin@x.test", ["finance"]))
    html = client.get("/finance/invoices").get_data(as_text=True)
    assert f"invoice-{inv.id}" in html
    assert "<img src=x" not in html and "&lt;img src=x onerror=" in html
    # The start field echoes what was typed, escaped.
    echoed = client.get('/finance/ladder?start="><script>alert(1)</script>').get_data(as_text=True)
    assert "<script>alert(1)</script>" not in echoed
