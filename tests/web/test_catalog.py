"""The admins' SKU catalog (/catalog): pages per role, the editor's schema errors, optimistic
concurrency between two admins, revisions and diffs, four-eyes publication, price changes with an
effective date, and deprecation with a published replacement (Flask client, PostgreSQL, CSRF on).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from webapp.db import Database
from webapp.models import Approval, AuditEntry, GovernorInstance, TransitionRecord
from webapp.services.setup import PLATFORM_TENANT, ensure_catalog, ensure_tenant
from webapp.services.transitions import SYSTEM, EventRequest, fire_event

from .conftest import MadeUser, sign_in

NOW = datetime.now(UTC)
ROLES = ("support", "finance", "manager", "admin", "compliance", "auditor")
TOTP_ROLES = {"admin", "compliance", "manager"}
NOTE = "first cut of the reporting add-on for Q3"

_HIDDEN = re.compile(r'<input[^>]*name="([a-z_]+)"[^>]*type="hidden"[^>]*value="([^"]*)"')
_HIDDEN_ALT = re.compile(r'<input[^>]*type="hidden"[^>]*name="([a-z_]+)"[^>]*value="([^"]*)"')
_HIDDEN_VALUE_FIRST = re.compile(r'<input[^>]*name="([a-z_]+)"[^>]*value="([^"]*)"[^>]*type="hidden"')
_HX_CSRF = re.compile(r'"X-CSRFToken": "([^"]+)"')


class Signed:
    """A signed-in staff client."""

    def __init__(self, app: Flask, user: MadeUser) -> None:
        self.user = user
        self.client: FlaskClient = app.test_client()
        response = sign_in(self.client, user.email, user.password, totp=user.totp_secret)
        assert response.status_code == 302, response.get_data(as_text=True)[:300]

    def get(self, path: str) -> tuple[int, str]:
        page = self.client.get(path)
        return page.status_code, page.get_data(as_text=True)

    def hidden(self, path: str) -> dict[str, str]:
        """The hidden inputs of the form on ``path`` (csrf token, idempotency key, versions)."""
        status, html = self.get(path)
        assert status == 200, (path, status, html[:300])
        found: dict[str, str] = {}
        for pattern in (_HIDDEN, _HIDDEN_ALT, _HIDDEN_VALUE_FIRST):
            found.update(dict(pattern.findall(html)))
        return found

    def token(self) -> str:
        match = _HX_CSRF.search(self.get("/catalog/")[1])
        assert match
        return match.group(1)

    def post(self, path: str, data: dict[str, str]) -> tuple[int, str, str | None]:
        response = self.client.post(path, data=data)
        return response.status_code, response.get_data(as_text=True), response.location


@pytest.fixture
def staff(app: Flask, make_user: Callable[..., MadeUser]) -> Callable[..., Signed]:
    made: dict[str, Signed] = {}

    def get(role: str, n: int = 1) -> Signed:
        key = f"{role}{n}"
        if key not in made:
            made[key] = Signed(app, make_user(f"{key}@staff.test", [role], totp=role in TOTP_ROLES))
        return made[key]

    return get


@pytest.fixture
def catalog(web_db: Database) -> list[str]:
    """The published platform catalog (sku-core, sku-analytics, sku-sso)."""
    with web_db.session() as s:
        ensure_tenant(s, PLATFORM_TENANT, NOW)
        ensure_catalog(s, NOW - timedelta(days=1))
    return ["sku-analytics", "sku-core", "sku-sso"]


def _sku(db: Database, sku_id: str) -> GovernorInstance | None:
    with db.session() as s:
        return s.scalars(
            select(GovernorInstance).where(
                GovernorInstance.governor == "catalog", GovernorInstance.subject_id == sku_id
            )
        ).first()


def _count(db: Database, model: Any, **where: Any) -> int:
    with db.session() as s:
        stmt = select(func.count()).select_from(model)
        for key, value in where.items():
            stmt = stmt.where(getattr(model, key) == value)
        return int(s.scalar(stmt) or 0)


def _draft_form(**overrides: str) -> dict[str, str]:
    return {
        "sku_id": "sku-reports",
        "name": "Reports add-on",
        "description": "Scheduled PDF and CSV reports",
        "price_cents": "4999",
        "currency": "USD",
        "tier": "professional",
        "features": "reports\nexports",
        "limits": "reports_per_day = 50",
        "comment": NOTE,
        **overrides,
    }


def _create(admin: Signed, **overrides: str) -> tuple[int, str, str | None]:
    hidden = admin.hidden("/catalog/new")
    return admin.post("/catalog/new", {**hidden, **_draft_form(**overrides)})


def _edit(admin: Signed, sku: str, hidden: dict[str, str], **fields: str) -> tuple[int, str, str | None]:
    assert admin.get(f"/catalog/{sku}/edit")[0] == 200
    current = {
        "name": "Reports add-on",
        "description": "Scheduled PDF and CSV reports",
        "price_cents": "4999",
        "currency": "USD",
        "tier": "professional",
        "features": "reports\nexports",
        "limits": "reports_per_day = 50",
    }
    return admin.post(f"/catalog/{sku}/edit", {**hidden, **current, "comment": NOTE, **fields})


def _fire_sys(db: Database, sku: str, event: str) -> None:
    row = _sku(db, sku)
    assert row is not None
    with db.session() as s:
        result = fire_event(
            s, EventRequest(PLATFORM_TENANT, event, instance_id=row.id), SYSTEM, datetime.now(UTC)
        )
        assert result.ok, result.body


def _decide(who: Signed, approval_id: str, verb: str, **fields: str) -> tuple[int, str]:
    status, page = who.get(f"/approvals/{approval_id}")
    assert status == 200
    token = _HX_CSRF.search(page)
    assert token
    response = who.client.post(
        f"/approvals/{approval_id}/{verb}", data={"csrf_token": token.group(1), **fields}
    )
    return response.status_code, response.get_data(as_text=True)


# --------------------------------------------------------------------------- pages per role


@pytest.mark.parametrize("role", ROLES)
def test_every_role_sees_the_catalog_and_only_admins_may_change_it(
    role: str, catalog: list[str], staff: Callable[..., Signed], web_db: Database
) -> None:
    who = staff(role)
    status, html = who.get("/catalog/")
    assert status == 200
    for sku in catalog:
        assert f'data-sku="{sku}"' in html
    assert "29.99 USD" in html  # sku-core's price, in cents shown as money
    status, detail = who.get("/catalog/sku-core/")
    assert status == 200
    assert 'data-state="published"' in detail
    assert "<svg" in detail and 'id="sku-diagram"' in detail
    assert 'data-revision="1"' in detail and 'data-revision="2"' in detail
    assert who.get("/catalog/sku-core/diff?a=1&b=2")[0] == 200

    if role == "admin":
        assert 'id="read-only"' not in html
        assert 'href="/catalog/new"' in html
        assert who.get("/catalog/new")[0] == 200
        assert 'href="/catalog/sku-core/actions/update_pricing"' in detail
        return
    # Read-only: the buttons are there, disabled, saying why; the server refuses whatever the page showed.
    reason = f"needs admin; you have {role}"
    assert reason in html and reason in detail
    assert 'id="new-sku" disabled' in html
    assert 'id="act-update_pricing" disabled' in detail
    new_status, new_page = who.get("/catalog/new")
    assert new_status == 403 and reason in new_page
    assert who.get("/catalog/sku-core/edit")[0] == 403
    assert who.get("/catalog/sku-core/actions/deprecate")[0] == 403
    before = _count(web_db, GovernorInstance, governor="catalog")
    forged = who.post(
        "/catalog/new", {"csrf_token": who.token(), "idempotency_key": str(uuid.uuid4()), **_draft_form()}
    )
    assert forged[0] == 403
    forged_price = who.post(
        "/catalog/sku-core/actions/update_pricing",
        {"csrf_token": who.token(), "idempotency_key": str(uuid.uuid4()), "in_new_price_cents": "1"},
    )
    assert forged_price[0] == 403
    forged_edit = who.post(
        "/catalog/sku-core/edit",
        {
            "csrf_token": who.token(),
            "idempotency_key": str(uuid.uuid4()),
            "row_version": "4",
            **_draft_form(),
        },
    )
    assert forged_edit[0] == 403
    assert _count(web_db, GovernorInstance, governor="catalog") == before
    row = _sku(web_db, "sku-core")
    assert row is not None and row.state == "published" and row.data["price_cents"] == 2999


def test_unknown_sku_is_404_and_the_list_filters(catalog: list[str], staff: Callable[..., Signed]) -> None:
    admin = staff("admin")
    assert admin.get("/catalog/sku-nope/")[0] == 404
    _, html = admin.get("/catalog/?tier=enterprise")
    assert 'data-sku="sku-sso"' in html and 'data-sku="sku-core"' not in html
    _, html = admin.get("/catalog/?q=analytics")
    assert 'data-sku="sku-analytics"' in html and 'data-sku="sku-sso"' not in html
    _, html = admin.get("/catalog/?state=draft")
    assert "No SKU matches" in html
    fragment = admin.client.get("/catalog/?state=published", headers={"HX-Request": "true"})
    body = fragment.get_data(as_text=True)
    assert fragment.status_code == 200 and "<html" not in body and 'id="results"' in body
    assert "HX-Request" in fragment.headers["Vary"]


# --------------------------------------------------------------------------- the editor


def test_schema_errors_show_per_field_and_change_nothing(
    catalog: list[str], staff: Callable[..., Signed], web_db: Database
) -> None:
    admin = staff("admin")
    before = (_count(web_db, GovernorInstance), _count(web_db, TransitionRecord), _count(web_db, AuditEntry))
    status, html, _ = _create(
        admin,
        sku_id="bad id!",
        name="",
        description="d" * 5001,
        price_cents="12.50",
        currency="usd",
        tier="gold",
        features="reports, reports",
        limits="reports_per_day = lots",
        comment="short",
    )
    assert status == 422
    assert "Nothing was saved" in html
    expected = {
        "sku_id": "SKU id may contain only letters, digits and hyphens",
        "name": "Name is required",
        "description": "Description must be at most 5000 characters",
        "price_cents": "Price must be a whole number of cents, e.g. 4999 for 49.99",
        "currency": "Currency must be an ISO-4217 code of 3 upper-case letters, e.g. USD",
        "tier": "Not a valid choice",
        "features": "Features lists a feature twice",
        "limits": "line 1: write name = number, e.g. api_calls = 100000",
        "comment": "at least 10 characters",
    }
    for field, message in expected.items():
        match = re.search(rf'<p class="field-error" id="{field}-error" role="alert">([^<]*)</p>', html)
        assert match, (field, html[:2000])
        assert message in match.group(1).replace("&#39;", "'"), (field, match.group(1))
    # What was typed comes back, escaped.
    assert 'value="bad id!"' in html
    # A price out of range and a negative limit: the governor's own rules, next to their fields.
    status, html, _ = _create(admin, price_cents="0", limits="reports_per_day = -1")
    assert status == 422
    assert "Price (cents) must be between 1 and 999,999,999 cents" in html
    assert "Limits limit reports_per_day must be a whole number ≥ 0" in html
    # An id that exists is a field error too.
    status, html, _ = _create(admin, sku_id="sku-core")
    assert status == 422 and "sku-core already exists" in html
    after = (_count(web_db, GovernorInstance), _count(web_db, TransitionRecord), _count(web_db, AuditEntry))
    assert after == before


def test_create_then_fix_a_field_error_and_see_the_draft(
    catalog: list[str], staff: Callable[..., Signed], web_db: Database
) -> None:
    admin = staff("admin")
    status, _, _ = _create(admin, name="<script>alert(1)</script>", price_cents="")
    assert status == 422
    status, _, location = _create(admin, name="<script>alert(1)</script>")
    assert status == 303 and location is not None and location.endswith("/catalog/sku-reports/")
    row = _sku(web_db, "sku-reports")
    assert row is not None and row.state == "draft"
    assert row.data["version"] == 1 and row.data["price_cents"] == 4999 and row.data["currency"] == "USD"
    assert row.data["features"] == ["reports", "exports"] and row.data["limits"] == {"reports_per_day": 50}
    _, html = admin.get("/catalog/sku-reports/")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>alert(1)" not in html
    assert 'data-revision="1"' in html and NOTE in html
    with web_db.session() as s:
        record = s.scalars(select(TransitionRecord).where(TransitionRecord.instance_id == row.id)).one()
        assert (record.event, record.actor, record.role) == ("create_draft", admin.user.id, "admin")


def test_two_admins_editing_one_draft_the_second_save_gets_409(
    catalog: list[str], staff: Callable[..., Signed], web_db: Database
) -> None:
    first, second = staff("admin", 1), staff("admin", 2)
    assert _create(first)[0] == 303
    # Both open the editor on version 1.
    mine = first.hidden("/catalog/sku-reports/edit")
    theirs = second.hidden("/catalog/sku-reports/edit")
    assert mine["sku_version"] == theirs["sku_version"] == "1"
    status, _, _ = _edit(first, "sku-reports", mine, name="Reports add-on (v2)")
    assert status == 303
    status, html, _ = _edit(second, "sku-reports", theirs, price_cents="5999")
    assert status == 409
    assert "Not saved: this draft changed since you opened it" in html
    assert "version 2 by admin1@staff.test" in html
    assert re.search(r'data-field="name"><th>Name</th><td class="diff-old">Reports add-on</td>', html)
    assert "Reports add-on (v2)" in html
    # Nothing of the second admin's save was applied.
    row = _sku(web_db, "sku-reports")
    assert row is not None
    assert (row.data["version"], row.data["name"], row.data["price_cents"]) == (
        2,
        "Reports add-on (v2)",
        4999,
    )
    # The 409 page carries the current versions: saving again is a deliberate, informed overwrite.
    refreshed = dict(re.findall(r'name="(row_version|sku_version)" type="hidden" value="(\d+)"', html))
    assert refreshed["sku_version"] == "2"
    again = {**theirs, **refreshed, "idempotency_key": str(uuid.uuid4())}
    status, _, _ = _edit(second, "sku-reports", again, name="Reports add-on (v2)", price_cents="5999")
    assert status == 303
    row = _sku(web_db, "sku-reports")
    assert row is not None and (row.data["version"], row.data["price_cents"]) == (3, 5999)


def test_saving_nothing_new_or_a_submitted_draft_is_refused(
    catalog: list[str], staff: Callable[..., Signed], web_db: Database
) -> None:
    admin = staff("admin")
    assert _create(admin)[0] == 303
    hidden = admin.hidden("/catalog/sku-reports/edit")
    status, html, _ = _edit(admin, "sku-reports", hidden)
    assert status == 422 and "nothing changed" in html
    # Clearing a required field is an error, not a silent "keep the old value".
    status, html, _ = _edit(admin, "sku-reports", hidden, name="", price_cents="")
    assert status == 422
    assert '<p class="field-error" id="name-error" role="alert">Name is required</p>' in html
    assert '<p class="field-error" id="price_cents-error" role="alert">Price (cents) is required</p>' in html
    row = _sku(web_db, "sku-reports")
    assert row is not None and row.data["version"] == 1
    # Published SKUs are not drafts: their editor says so and a save is a 409.
    status, html = admin.get("/catalog/sku-core/edit")
    assert status == 409 and "only a draft can be edited" in html


# --------------------------------------------------------------------------- revisions and diffs


def test_diff_shows_field_changes_between_any_two_revisions(
    catalog: list[str], staff: Callable[..., Signed], web_db: Database
) -> None:
    admin = staff("admin")
    assert _create(admin)[0] == 303
    hidden = admin.hidden("/catalog/sku-reports/edit")
    assert _edit(admin, "sku-reports", hidden, name="Reports Plus", price_cents="5500")[0] == 303
    hidden = admin.hidden("/catalog/sku-reports/edit")
    changes = {
        "name": "Reports Plus",
        "price_cents": "5500",
        "features": "reports\nexports\nalerts",
        "limits": "",
    }
    assert _edit(admin, "sku-reports", hidden, **changes)[0] == 303
    status, html = admin.get("/catalog/sku-reports/diff?a=1&b=3")
    assert status == 200
    rows = dict(re.findall(r'<tr data-field="(\w+)">(.*?)</tr>', html, re.S))
    assert set(rows) == {"name", "price_cents", "features", "limits"}
    assert "Reports add-on" in rows["name"] and "Reports Plus" in rows["name"]
    assert "4999" in rows["price_cents"] and "5500" in rows["price_cents"]
    assert (
        "alerts" in rows["features"].split("diff-new")[1]
        and "alerts" not in rows["features"].split("diff-new")[0]
    )
    assert "reports_per_day = 50" in rows["limits"]
    status, html = admin.get("/catalog/sku-reports/diff?a=2&b=2")
    assert status == 200 and "No field differs" in html
    status, html = admin.get("/catalog/sku-reports/diff?a=1&b=99")
    assert status == 400 and "versions: 1, 2, 3" in html
    # Support may read the diff too.
    assert staff("support").get("/catalog/sku-reports/diff?a=1&b=2")[0] == 200


# --------------------------------------------------------------------------- publication (four-eyes)


def test_first_publication_needs_a_second_admin(
    catalog: list[str], staff: Callable[..., Signed], web_db: Database
) -> None:
    requester, approver = staff("admin", 1), staff("admin", 2)
    assert _create(requester)[0] == 303
    hidden = requester.hidden("/catalog/sku-reports/actions/submit_for_review")
    assert hidden["in_expected_version"] == "1"
    status, html, _ = requester.post(
        "/catalog/sku-reports/actions/submit_for_review",
        {**hidden, "reason_code": "other", "comment": "ready for sale after review"},
    )
    assert status == 202, html[:500]
    assert "Waiting for approval by admin or manager" in html
    with web_db.session() as s:
        approval = s.scalars(select(Approval).where(Approval.event == "submit_for_review")).one()
        approval_id = approval.id
    row = _sku(web_db, "sku-reports")
    assert row is not None and row.state == "draft"
    # The list and the SKU show the pending approval; the requester cannot approve it themselves.
    assert "1 pending" in requester.get("/catalog/")[1]
    pending = requester.get("/catalog/sku-reports/")[1].split('id="pending-approvals"')[1].split("</div>")[0]
    assert f"/approvals/{approval_id}" in pending and "requested by admin1@staff.test" in pending
    status, _ = _decide(requester, approval_id, "approve", code=requester.user.code())
    assert status == 403
    status, html = _decide(approver, approval_id, "approve", code=approver.user.code())
    assert status == 200, html[:500]
    row = _sku(web_db, "sku-reports")
    assert row is not None and row.state == "validation" and row.data["locked_version"] == 1
    # Validation and propagation report back (as the relay's effects would), and it goes on sale.
    _fire_sys(web_db, "sku-reports", "validation_succeeded")
    _fire_sys(web_db, "sku-reports", "propagation_succeeded")
    row = _sku(web_db, "sku-reports")
    assert row is not None and row.state == "published" and row.data["version"] == 2
    _, html = requester.get("/catalog/sku-reports/")
    assert 'data-state="published"' in html and 'data-event="submit_for_review"' in html


def test_a_stale_submit_is_a_409_that_changes_nothing(
    catalog: list[str], staff: Callable[..., Signed], web_db: Database
) -> None:
    admin, other = staff("admin", 1), staff("admin", 2)
    assert _create(admin)[0] == 303
    submit = admin.hidden("/catalog/sku-reports/actions/submit_for_review")
    edit = other.hidden("/catalog/sku-reports/edit")
    assert _edit(other, "sku-reports", edit, name="Renamed meanwhile")[0] == 303
    status, html, _ = admin.post(
        "/catalog/sku-reports/actions/submit_for_review",
        {**submit, "reason_code": "other", "comment": "ready for sale after review"},
    )
    assert status == 409 and "changed since you opened this form" in html
    assert _count(web_db, Approval) == 0


# --------------------------------------------------------------------------- price changes


def test_price_change_with_an_effective_date(
    catalog: list[str], staff: Callable[..., Signed], web_db: Database
) -> None:
    requester, approver = staff("admin", 1), staff("manager", 1)
    path = "/catalog/sku-core/actions/update_pricing"
    hidden = requester.hidden(path)
    base = {**hidden, "in_tier": "starter", "reason_code": "other", "comment": "annual price review 2026"}
    # In the past: refused next to the field, nothing staged.
    past = (datetime.now(UTC) - timedelta(days=1)).isoformat(timespec="seconds")
    status, html, _ = requester.post(path, {**base, "in_new_price_cents": "3099", "in_effective_at": past})
    assert status == 422 and "the effective date must be in the future" in html
    # A > 10 % rise needs 30 days' notice.
    soon = (datetime.now(UTC) + timedelta(days=3)).isoformat(timespec="seconds")
    status, html, _ = requester.post(
        path,
        {**base, "idempotency_key": str(uuid.uuid4()), "in_new_price_cents": "3999", "in_effective_at": soon},
    )
    assert status == 422 and "at least 30 days from now" in html
    assert _count(web_db, Approval) == 0
    # A small rise with a future date: four-eyes, then validation with the change staged.
    status, html, _ = requester.post(
        path,
        {**base, "idempotency_key": str(uuid.uuid4()), "in_new_price_cents": "3099", "in_effective_at": soon},
    )
    assert status == 202, html[:500]
    with web_db.session() as s:
        approval_id = s.scalars(select(Approval.id).where(Approval.event == "update_pricing")).one()
    status, html = _decide(approver, approval_id, "approve", code=approver.user.code())
    assert status == 200, html[:500]
    row = _sku(web_db, "sku-core")
    assert row is not None and row.state == "validation"
    assert row.data["pending_change"]["price_cents"] == 3099
    _, page = requester.get("/catalog/sku-core/")
    assert 'id="pending-change"' in page and "3099" in page
    _fire_sys(web_db, "sku-core", "validation_succeeded")
    _fire_sys(web_db, "sku-core", "propagation_succeeded")
    row = _sku(web_db, "sku-core")
    assert row is not None and row.state == "published"
    assert (row.data["price_cents"], row.data["previous_price_cents"]) == (3099, 2999)
    assert row.data["price_effective_at"].startswith(soon[:16])
    # Until the effective date customers pay the old price; the pages say both.
    _, page = requester.get("/catalog/sku-core/")
    scheduled = re.search(r'<dd id="scheduled-price">(.*?)</dd>', page, re.S)
    assert scheduled and "30.99" in scheduled.group(1) and "29.99" in scheduled.group(1)
    assert soon[:10] in scheduled.group(1)
    _, listing = requester.get("/catalog/")
    core = re.search(r'<tr data-sku="sku-core">(.*?)</tr>', listing, re.S)
    assert core and f'29.99 USD<br><span class="muted scheduled">30.99 from {soon[:10]}' in core.group(1)


# --------------------------------------------------------------------------- promotion and deprecation


def test_promotion_needs_the_sla_confirmed_then_applies_at_once(
    catalog: list[str], staff: Callable[..., Signed], web_db: Database
) -> None:
    admin = staff("admin")
    path = "/catalog/sku-analytics/actions/move_to_featured"
    ends = (datetime.now(UTC) + timedelta(days=30)).isoformat(timespec="seconds")
    body = {
        **admin.hidden(path),
        "in_campaign_id": "spring-2026",
        "in_featured_price_cents": "7999",
        "in_ends_at": ends,
        "reason_code": "other",
        "comment": "spring campaign approved by marketing",
    }
    status, html, _ = admin.post(path, body)
    assert status == 409 and "featured SLA targets" in html
    # A featured price above the regular one is refused next to its field.
    body["idempotency_key"] = str(uuid.uuid4())
    status, html, _ = admin.post(path, {**body, "in_featured_price_cents": "10999", "in_sla_confirmed": "y"})
    assert status == 422 and "below the regular price" in html
    row = _sku(web_db, "sku-analytics")
    assert row is not None and row.state == "published"
    body["idempotency_key"] = str(uuid.uuid4())
    status, _, location = admin.post(path, {**body, "in_sla_confirmed": "y"})
    assert status == 303 and location is not None and location.endswith("/catalog/sku-analytics/")
    row = _sku(web_db, "sku-analytics")
    assert row is not None and row.state == "featured"
    assert (row.data["campaign_id"], row.data["featured_price_cents"]) == ("spring-2026", 7999)
    _, page = admin.get("/catalog/sku-analytics/")
    assert 'id="campaign"' in page and "spring-2026" in page
    assert 'href="/catalog/sku-analytics/actions/demote_from_featured"' in page


def test_deprecation_needs_a_published_replacement(
    catalog: list[str], staff: Callable[..., Signed], web_db: Database
) -> None:
    requester, approver = staff("admin", 1), staff("admin", 2)
    assert _create(requester, sku_id="sku-core-2")[0] == 303  # a draft: not a valid replacement
    path = "/catalog/sku-core/actions/deprecate"
    status, html = requester.get(path)
    assert status == 200
    options = re.findall(
        r'<option value="([^"]*)"', html.split('name="in_replacement_sku"')[1].split("</select>")[0]
    )
    assert options == ["", "sku-analytics", "sku-sso"]  # only the other SKUs on sale
    base = {
        **requester.hidden(path),
        "in_sunset_note": "moving to v2",
        "reason_code": "other",
        "comment": "core v1 is retired",
    }
    # A forged choice of the draft is refused next to the field; nothing is requested.
    status, html, _ = requester.post(path, {**base, "in_replacement_sku": "sku-core-2"})
    assert status == 422 and "Not a valid choice" in html
    status, html, _ = requester.post(
        path, {**base, "idempotency_key": str(uuid.uuid4()), "in_replacement_sku": "sku-sso"}
    )
    assert status == 202, html[:500]
    with web_db.session() as s:
        approval_id = s.scalars(select(Approval.id).where(Approval.event == "deprecate")).one()
    status, html = _decide(approver, approval_id, "approve", code=approver.user.code())
    assert status == 200, html[:500]
    row = _sku(web_db, "sku-core")
    assert row is not None and row.state == "deprecated" and row.data["replacement_sku"] == "sku-sso"
    _, page = requester.get("/catalog/sku-core/")
    assert 'id="replacement"' in page and 'data-state="deprecated"' in page
    # Resurrecting is judged against the whole catalog: disabled while the replacement is on sale.
    resurrect = page.split('id="act-resurrect"')[1].split("</span></span>")[0]
    assert "disabled" in resurrect
    assert "replacement sku-sso is on sale; withdraw it before resurrecting this SKU" in resurrect


def test_the_engine_refuses_a_replacement_that_is_not_on_sale(
    catalog: list[str], staff: Callable[..., Signed], web_db: Database
) -> None:
    """Even past the form: the governor's guard judges the replacement when the approval fires."""
    from webapp.services.transitions import Actor

    assert _create(staff("admin"), sku_id="sku-core-2")[0] == 303
    row = _sku(web_db, "sku-core")
    assert row is not None
    with web_db.session() as s:
        result = fire_event(
            s,
            EventRequest(
                PLATFORM_TENANT,
                "deprecate",
                instance_id=row.id,
                payload={
                    "replacement_sku": "sku-core-2",
                    "sunset_note": "v2",
                    "reason": "core v1 is retired",
                },
            ),
            Actor("someone", "admin"),
            datetime.now(UTC),
        )
    assert result.status == 409
    assert (
        "replacement sku-core-2 is draft; it must be published or featured" in result.body["error"]["message"]
    )


def test_a_repeated_submission_is_answered_once_not_as_a_conflict(
    catalog: list[str], staff: Callable[..., Signed], web_db: Database
) -> None:
    """A double click sends the same form (same key) twice: one draft, one revision, no 409."""
    admin = staff("admin")
    form = {**admin.hidden("/catalog/new"), **_draft_form()}
    assert admin.post("/catalog/new", form)[0] == 303
    assert admin.post("/catalog/new", form)[0] == 303
    assert _count(web_db, GovernorInstance, subject_id="sku-reports") == 1
    hidden = admin.hidden("/catalog/sku-reports/edit")
    assert _edit(admin, "sku-reports", hidden, name="Reports Plus")[0] == 303
    assert _edit(admin, "sku-reports", hidden, name="Reports Plus")[0] == 303
    row = _sku(web_db, "sku-reports")
    assert row is not None and row.data["version"] == 2
    assert _count(web_db, TransitionRecord, instance_id=row.id) == 2


def test_catalog_checks_report_withdrawn_replacements_and_legacy_data(
    catalog: list[str], staff: Callable[..., Signed], web_db: Database
) -> None:
    from webapp.services.transitions import Actor

    admin = staff("admin")
    _, html = admin.get("/catalog/")
    assert 'id="checks-ok"' in html and "All 3 SKUs" in html

    def deprecate(sku: str, replacement: str | None) -> None:
        row = _sku(web_db, sku)
        assert row is not None
        payload = {"sunset_note": "retired", "reason": "product line consolidated"}
        if replacement:
            payload["replacement_sku"] = replacement
        with web_db.session() as s:
            result = fire_event(
                s,
                EventRequest(PLATFORM_TENANT, "deprecate", instance_id=row.id, payload=payload),
                Actor("a1", "admin"),
                datetime.now(UTC),
                approved_by="a2",
            )
            assert result.ok, result.body

    deprecate("sku-core", "sku-sso")
    deprecate("sku-sso", None)  # the replacement is withdrawn afterwards
    # Data from before a rule tightened (written as an old release would have): the check finds it.
    with web_db.session() as s:
        row = s.scalars(select(GovernorInstance).where(GovernorInstance.subject_id == "sku-analytics")).one()
        row.data = {**row.data, "currency": "usd", "featured_price_cents": 99_999}
    _, html = admin.get("/catalog/")
    findings = re.findall(r'<li data-issue="(\w+)"><a class="mono" href="[^"]+">([\w-]+)</a>', html)
    assert sorted(findings) == [
        ("price_conflict", "sku-analytics"),
        ("replacement", "sku-core"),
        ("schema", "sku-analytics"),
    ]
    assert "replacement sku-sso is deprecated, not on sale" in html
    assert "Currency must be an ISO-4217 code" in html


def test_a_save_that_loses_the_race_under_the_lock_is_a_conflict_too(
    catalog: list[str], staff: Callable[..., Signed], web_db: Database
) -> None:
    """Both editors pass the early version check; the service's row lock decides, the loser gets 409."""
    from webapp.services import catalog_admin
    from webapp.services.transitions import Actor

    first = staff("admin", 1)
    assert _create(first)[0] == 303
    with web_db.session() as slow:
        row = slow.scalars(select(GovernorInstance).where(GovernorInstance.subject_id == "sku-reports")).one()
        assert row.version == 1
        # Meanwhile another admin saves version 2 (committed in its own transaction).
        with web_db.session() as fast:
            other = fast.get(GovernorInstance, row.id)
            assert other is not None
            won = catalog_admin.save_draft(
                fast,
                other,
                {"name": "Saved first"},
                row_version=1,
                sku_version=1,
                actor=Actor(first.user.id, "admin"),
                reason="rename agreed with product",
                now=datetime.now(UTC),
            )
            assert won.status == 200
        # This session still holds the version-1 row: the early check passes, the lock does not.
        lost = catalog_admin.save_draft(
            slow,
            row,
            {"price_cents": 6100},
            row_version=1,
            sku_version=1,
            actor=Actor("someone-else", "admin"),
            reason="price agreed with finance",
            now=datetime.now(UTC),
        )
        assert lost.status == 409 and lost.conflict is not None
        assert lost.result is not None  # decided by the service under the lock, not the early check
        assert [c.field for c in lost.conflict.changes] == ["name"]
        assert "version 2 by admin1@staff.test" in lost.conflict.message
    row = _sku(web_db, "sku-reports")
    assert row is not None and (row.data["name"], row.data["price_cents"], row.data["version"]) == (
        "Saved first",
        4999,
        2,
    )


def test_force_archive_is_refused_while_customers_hold_the_sku(
    catalog: list[str], staff: Callable[..., Signed], web_db: Database
) -> None:
    from webapp.services.setup import signup_customer
    from webapp.services.transitions import Actor

    admin = staff("admin")
    with web_db.session() as s:
        ensure_tenant(s, "t-1", NOW)
        signup_customer(s, "t-1", "c-1", name="Ada", email="ada@x.test", tier="starter", now=NOW)
    for sku in ("sku-core", "sku-sso"):
        row = _sku(web_db, sku)
        assert row is not None
        with web_db.session() as s:
            result = fire_event(
                s,
                EventRequest(
                    PLATFORM_TENANT,
                    "deprecate",
                    instance_id=row.id,
                    payload={"sunset_note": "retired", "reason": "product line consolidated"},
                ),
                Actor("a1", "admin"),
                datetime.now(UTC),
                approved_by="a2",
            )
            assert result.ok, result.body
    body = {"in_confirm_no_holders": "y", "reason_code": "other", "comment": "sunset finished for good"}
    path = "/catalog/sku-core/actions/force_archive"
    status, html, _ = admin.post(path, {**admin.hidden(path), **body})
    assert status == 409 and "1 non-archived entitlement(s) still hold this SKU" in html
    # The confirmation box is required, next to its field.
    path = "/catalog/sku-sso/actions/force_archive"
    status, html, _ = admin.post(path, {**admin.hidden(path), **body, "in_confirm_no_holders": ""})
    assert status == 422 and "confirm that no holders remain" in html
    status, html, _ = admin.post(path, {**admin.hidden(path), **body})
    assert status == 202 and "Waiting for approval by admin or manager" in html
    assert _count(web_db, Approval, event="force_archive") == 1


def test_a_post_without_its_csrf_token_is_refused(
    catalog: list[str], staff: Callable[..., Signed], web_db: Database
) -> None:
    admin = staff("admin")
    status, _, _ = admin.post("/catalog/new", {"idempotency_key": str(uuid.uuid4()), **_draft_form()})
    assert status == 400
    assert _sku(web_db, "sku-reports") is None
