"""Browser journey for finance (Playwright + Debian's Chromium): retry board → retry now → refund request →
a second finance person approves.

Finance A opens the overview, goes to the retry board, retries a failed invoice at once (B10), then asks
for a refund of a paid invoice from the refunds & settlements desk (B22, four-eyes) and sees it pending
under "My approvals". Finance B, in another browser context with a second factor, finds it waiting,
approves it with a step-up code; A sees the refund in the issued-refunds list. Screenshots go to
tests/artifacts/finance-*.png.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from tests.web.browser import Shots, assert_no_errors, signed_in
from tests.web.conftest import MadeUser, fresh_code
from tests.web.test_finance import _failed_invoice
from webapp.db import Database
from webapp.models import Approval, GovernorInstance, TransitionRecord
from webapp.services.demo import Driver, buy_and_invoice, pay_invoice
from webapp.services.setup import activate_customer, ensure_catalog, ensure_tenant, signup_customer

shoot = Shots("finance")


def _paid_invoice(db: Database, customer_id: str) -> str:
    at = datetime.now(UTC) - timedelta(hours=3)
    with db.session() as s:
        ensure_tenant(s, "t-1", at)
        ensure_catalog(s, at)
    with db.session() as s:
        signup_customer(
            s,
            "t-1",
            customer_id,
            name="Katherine Johnson",
            email=f"{customer_id}@x.test",
            tier="starter",
            now=at,
        )
    with db.session() as s:
        activate_customer(s, "t-1", customer_id, now=at + timedelta(minutes=1))
    driver = Driver(db, None)
    assert buy_and_invoice(driver, "t-1", customer_id, at + timedelta(minutes=2))
    assert pay_invoice(driver, "t-1", customer_id, at + timedelta(hours=1))
    with db.session() as s:
        return s.scalars(
            select(GovernorInstance.id).where(
                GovernorInstance.customer_id == customer_id, GovernorInstance.governor == "billing"
            )
        ).one()


def test_finance_retries_then_refunds_with_a_second_approver(
    server: str, browser: Any, web_db: Database, make_user: Callable[..., MadeUser]
) -> None:
    # The paid one first: making a customer fires every timer due by then, and the failed invoice
    # (declined in March 2026) must still be waiting for its first retry.
    paid = _paid_invoice(web_db, "c-2")
    failed = _failed_invoice(web_db, "c-1").id
    fin_a = make_user("ada@staff.test", ["finance"])
    fin_b = make_user("bob@staff.test", ["finance"], totp=True)

    # A: overview → retry board → retry now.
    _, page, a_errors = signed_in(browser, server, fin_a)
    page.goto(f"{server}/finance/")
    page.wait_for_selector("#finance-overview")
    assert page.locator("#tile-ladder .n").inner_text() == "1"
    # The dashboards' finance charts load into the overview (htmx, on load).
    for name in ("payments", "recovery", "failures"):
        page.wait_for_selector(f"#chart-{name} .dash-loading", state="detached")
    page.wait_for_load_state("networkidle")
    shoot(page, "overview")
    page.click("#tab-retries")
    page.wait_for_selector(f"#invoice-{failed}")
    page.click(f"#actions-{failed} a[data-event=retry_now]")
    page.wait_for_selector(f"#action-form-{failed}")
    page.select_option(f"#action-form-{failed} select[name=reason_code]", index=1)
    page.fill(f"#action-form-{failed} textarea[name=comment]", "customer updated the card, retry at once")
    shoot(page, "retry-form")
    page.click(f"#action-form-{failed} button[name=confirm]")
    page.wait_for_selector(f"#action-result-{failed}")
    shoot(page, "retried")
    with web_db.session() as s:
        row = s.get(GovernorInstance, failed)
        assert row is not None and row.state == "retry_1"

    # A: refunds & settlements → refund (four-eyes) → pending under My approvals.
    page.click("#tab-invoices")
    page.wait_for_selector(f"#invoice-{paid}")
    page.click(f"#actions-{paid} a[data-event=issue_refund]")
    page.wait_for_selector(f"#action-form-{paid}")
    page.fill(f"#action-form-{paid} input[name=in_amount_cents]", "750")
    page.select_option(f"#action-form-{paid} select[name=reason_code]", "duplicate_charge")
    page.fill(f"#action-form-{paid} textarea[name=comment]", "charged twice for March, see ticket 5521")
    page.click(f"#action-form-{paid} button[name=preview]")
    page.wait_for_selector(f"#action-panel-{paid} .plan")
    shoot(page, "refund-preview")
    page.click(f"#action-form-{paid} button[name=confirm]")
    page.wait_for_selector(f"#action-result-{paid}")
    assert "Waiting for approval" in page.locator(f"#action-result-{paid}").inner_text()
    with web_db.session() as s:
        approval_id = s.scalars(select(Approval.id)).one()
    page.click("#tab-my_approvals")
    page.wait_for_selector(f"#mine-{approval_id}")
    assert page.locator(f"#mine-{approval_id}").get_attribute("data-status") == "pending"
    assert page.locator(f"#waiting-{approval_id}").count() == 0
    shoot(page, "my-requests")

    # B, in another browser: waiting for me → review → step-up → approve.
    _, bpage, b_errors = signed_in(browser, server, fin_b)
    bpage.goto(f"{server}/finance/approvals")
    bpage.wait_for_selector(f"#waiting-{approval_id}")
    shoot(bpage, "waiting-for-me")
    bpage.click(f"#waiting-{approval_id} a")
    bpage.wait_for_selector("#approve-form")
    bpage.fill("#approve-form input[name=code]", fresh_code(fin_b.totp_secret or ""))
    bpage.fill("#approve-form textarea[name=note]", "duplicate confirmed in the processor report")
    bpage.click("#approve-form button[type=submit]")
    bpage.wait_for_selector("#decision-message")
    assert "approved" in bpage.locator("#approval-status").inner_text()
    shoot(bpage, "approved")

    # A: the refund is issued once, listed with who asked and who approved.
    page.click("#tab-refunds")
    page.wait_for_selector(f"tr[data-invoice='{paid}']")
    listed = page.locator(f"tr[data-invoice='{paid}']").inner_text()
    assert "7.50 USD" in listed and "ada@staff.test" in listed and "bob@staff.test" in listed
    shoot(page, "refunds")
    with web_db.session() as s:
        records = s.scalars(select(TransitionRecord).where(TransitionRecord.event == "issue_refund")).all()
        assert [(r.actor, r.approval_id) for r in records] == [(fin_a.id, approval_id)]
        row = s.get(GovernorInstance, paid)
        assert row is not None and row.data.get("refunded_cents") == 750

    # The other desks render in the browser too.
    page.click("#tab-ladder_preview")
    page.wait_for_selector("#ladder-calendar")
    shoot(page, "ladder")
    page.click("#tab-reconciliation")
    page.wait_for_selector("#unreconciled")
    shoot(page, "reconciliation")
    assert_no_errors(a_errors, b_errors)
