"""Browser journey (Playwright + Debian's Chromium): an admin authors a SKU and submits it.

The admin opens the catalog, creates a draft with a price typed as money ("49.99"), sees the
error next to the price field and nothing saved, fixes it, lands on the draft with its state
diagram, and submits it for publication; the first publication needs a second admin, who approves
it from the queue in ANOTHER browser context with a step-up code. The SKU is then in validation,
and the diagram marks it. A support user sees the same catalog read-only, buttons disabled with
the reason.

Screenshots: tests/artifacts/catalog-*.png.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from tests.web.browser import Shots, assert_no_errors, signed_in
from tests.web.conftest import MadeUser, fresh_code
from webapp.db import Database
from webapp.models import GovernorInstance
from webapp.services.setup import PLATFORM_TENANT, ensure_catalog, ensure_tenant

shoot = Shots("catalog")


def _state(db: Database, sku: str) -> str | None:
    with db.session() as s:
        row = s.scalars(
            select(GovernorInstance).where(
                GovernorInstance.governor == "catalog", GovernorInstance.subject_id == sku
            )
        ).first()
        return row.state if row is not None else None


def test_admin_creates_fixes_and_submits_a_sku(
    browser: Any, server: str, web_db: Database, make_user: Callable[..., MadeUser]
) -> None:
    with web_db.session() as s:
        ensure_tenant(s, PLATFORM_TENANT, datetime.now(UTC))
        ensure_catalog(s, datetime.now(UTC))
    admin = make_user("ada@staff.test", ["admin"], totp=True)
    second = make_user("grace@staff.test", ["admin"], totp=True)
    support = make_user("sam@staff.test", ["support"])

    context, page, errors = signed_in(browser, server, admin)
    page.goto(f"{server}/catalog/")
    page.wait_for_selector("#sku-table")
    assert page.locator("tr[data-sku]").count() == 3
    shoot(page, "list")

    # New draft with a price typed as money: refused next to the field, nothing saved.
    page.click("#new-sku")
    page.wait_for_selector("#sku-form")
    page.fill("#sku_id", "sku-reports")
    page.fill("#name", "Reports add-on")
    page.fill("#description", "Scheduled PDF and CSV reports for every workspace")
    page.fill("#price_cents", "49.99")
    page.select_option("#tier", "professional")
    page.fill("#features", "reports\nexports")
    page.fill("#limits", "reports_per_day = 50")
    page.fill("#comment", "first cut of the reporting add-on")
    page.click("#save-draft")
    page.wait_for_selector("#price_cents-error")
    assert (
        page.inner_text("#price_cents-error") == "Price must be a whole number of cents, e.g. 4999 for 49.99"
    )
    assert page.locator(".field-error").count() == 1
    assert page.get_attribute("#price_cents", "aria-invalid") == "true"
    assert page.input_value("#name") == "Reports add-on"  # what was typed is kept
    assert _state(web_db, "sku-reports") is None
    shoot(page, "field-error")

    # Fixed: the draft exists, version 1, with its diagram on the draft state.
    page.fill("#price_cents", "4999")
    page.click("#save-draft")
    page.wait_for_url(f"{server}/catalog/sku-reports/")
    assert "saved as version 1" in page.inner_text("#flash")
    assert page.get_attribute("#sku-state .state", "data-state") == "draft"
    assert page.locator("#sku-diagram svg .state.current").count() == 1
    assert _state(web_db, "sku-reports") == "draft"
    shoot(page, "draft")

    # A second revision, and the diff between the two.
    page.click("#act-edit_draft")
    page.wait_for_selector("#sku-form")
    page.fill("#price_cents", "5999")
    page.fill("#comment", "priced like the analytics suite minus support")
    page.click("#save-draft")
    page.wait_for_url(f"{server}/catalog/sku-reports/")
    assert page.locator("#revisions tr[data-revision]").count() == 2
    page.click("#compare")
    page.wait_for_selector("#diff")
    assert page.locator("#diff tr[data-field]").count() == 1
    assert "4999" in page.inner_text("#diff tr[data-field=price_cents] .diff-old")
    assert "5999" in page.inner_text("#diff tr[data-field=price_cents] .diff-new")
    shoot(page, "diff")
    page.goto(f"{server}/catalog/sku-reports/")

    # Submit for publication: the first publication waits for a second admin.
    page.click("#act-submit_for_review")
    page.wait_for_selector("#catalog-action")
    page.select_option("#reason_code", "other")
    page.fill("#comment", "ready for sale after product review")
    page.click("#confirm")
    page.wait_for_selector("#approval-requested")
    assert "Waiting for approval by admin or manager" in page.inner_text("#approval-requested")
    assert _state(web_db, "sku-reports") == "draft"
    shoot(page, "requested")
    approval_url = page.get_attribute("#approval-link", "href")
    assert approval_url

    # The second admin approves in another browser context, with a step-up code.
    context2, page2, errors2 = signed_in(browser, server, second)
    page2.goto(f"{server}{approval_url}")
    page2.fill("input[name=code]", fresh_code(second.totp_secret or ""))
    page2.click("button:has-text('Approve and apply')")
    page2.wait_for_load_state("networkidle")
    assert "approved" in page2.content()
    assert _state(web_db, "sku-reports") == "validation"
    page2.goto(f"{server}/catalog/sku-reports/")
    assert page2.get_attribute("#sku-state .state", "data-state") == "validation"
    assert page2.locator("#sku-diagram svg .state.current").count() == 1
    assert page2.locator("#history tr[data-event=submit_for_review] .badge").inner_text() == "approved"
    shoot(page2, "validation")

    # A published SKU: its lifecycle actions, and deprecation offering only SKUs on sale as replacement.
    page.goto(f"{server}/catalog/sku-core/")
    assert page.get_attribute("#sku-state .state", "data-state") == "published"
    shoot(page, "published")
    page.click("#act-deprecate")
    page.wait_for_selector("#catalog-action")
    offered = page.eval_on_selector_all("#in_replacement_sku option", "els => els.map(e => e.value)")
    assert offered == ["", "sku-analytics", "sku-sso"]
    shoot(page, "deprecate-form")

    # Support: read-only, every change button disabled with the reason.
    context3, page3, errors3 = signed_in(browser, server, support)
    page3.goto(f"{server}/catalog/sku-reports/")
    assert page3.locator("#read-only").is_visible()
    page3.goto(f"{server}/catalog/")
    assert page3.is_disabled("#new-sku")
    assert "needs admin; you have support" in page3.inner_text("#catalog-page")
    # Filters swap the table in place (htmx) and push the filtered URL.
    page3.select_option("#f-state", "validation")
    page3.wait_for_selector('#sku-table tr[data-sku="sku-core"]', state="detached")
    assert page3.locator("#sku-table tr[data-sku]").count() == 1
    assert page3.get_attribute("#sku-table tr[data-sku]", "data-sku") == "sku-reports"
    assert "state=validation" in page3.url
    shoot(page3, "read-only")

    for ctx in (context, context2, context3):
        ctx.close()
    assert_no_errors(errors, errors2, errors3)
