"""Browser journey (Playwright + Debian's Chromium): a four-eyes refund across two people.

Finance requests a refund of a paid invoice from the cockpit (form → what-if preview → request); a
manager, signed in in ANOTHER browser context with their second factor, approves it from the queue
with a fresh step-up code (each code is accepted once); the refund appears in the customer's history. Support
sees the entitlement refund button disabled with the reason, and a forged POST (valid CSRF token,
sent with page.request) is refused with 403.

Screenshots: tests/artifacts/actions-*.png.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from tests.web.browser import Shots, assert_no_errors, signed_in
from tests.web.conftest import MadeUser, fresh_code
from tests.web.test_actions import NOW, _refund, _world
from webapp.db import Database
from webapp.models import Approval, GovernorInstance, TransitionRecord
from webapp.services.transitions import Actor, EventRequest, fire_event

shoot = Shots("actions")


def _cancelled_entitlement(db: Database, customer_id: str) -> str:
    ids = _world(db, customer_id, stage="active")
    with db.session() as s:
        result = fire_event(
            s,
            EventRequest(
                "t-1",
                "cancel_early",
                ids["entitlement"],
                {"reason": "customer asked to cancel on the phone", "confirmation_ref": "call-778"},
            ),
            Actor("u-setup", "support"),
            NOW,
        )
        assert result.status == 200, result.body
    return ids["entitlement"]


def test_finance_requests_a_refund_and_a_manager_approves_it(
    server: str, browser: Any, web_db: Database, make_user: Callable[..., MadeUser]
) -> None:
    invoice = _refund(web_db, "c-1")
    finance = make_user("fiona@staff.test", ["finance"])
    manager = make_user("max@staff.test", ["manager"], totp=True)

    # Finance: cockpit → refund form → preview → request approval.
    _, fpage, ferrors = signed_in(browser, server, finance)
    fpage.goto(f"{server}/customers/c-1")
    button = fpage.locator(f"#actions-{invoice} a[data-event=issue_refund]")
    assert "needs approval by finance or manager" in fpage.locator(f"#actions-{invoice}").inner_text()
    button.click()
    fpage.wait_for_selector(f"#action-form-{invoice}")
    fpage.fill("#in_amount_cents", "1500")
    fpage.select_option("#reason_code", "duplicate_charge")
    fpage.fill("#comment", "customer was charged twice for March; see ticket 4411")
    fpage.click("button[name=preview]")
    fpage.wait_for_selector(f"#action-panel-{invoice} .plan")
    plan = fpage.locator(f"#action-panel-{invoice} .plan").inner_text()
    assert "billing_process_refund amount_cents 15.00" in plan
    fpage.locator(f"#action-panel-{invoice}").scroll_into_view_if_needed()
    shoot(fpage, "refund-preview", full_page=False)
    fpage.click("button[name=confirm]")
    fpage.wait_for_selector(f"#action-result-{invoice}")
    assert (
        "Waiting for approval by finance or manager"
        in fpage.locator(f"#action-result-{invoice}").inner_text()
    )
    shoot(fpage, "refund-requested", full_page=False)
    with web_db.session() as s:
        approval = s.scalars(select(Approval)).one()
        approval_id = approval.id

    # Manager, in another browser context: queue → request → step-up → approve.
    _, mpage, merrors = signed_in(browser, server, manager)
    mpage.goto(f"{server}/approvals")
    assert mpage.locator(f"#pending tr[data-approval='{approval_id}']").count() == 1
    shoot(mpage, "approval-queue")
    mpage.click(f"#pending tr[data-approval='{approval_id}'] a")
    mpage.wait_for_selector("#approve-form")
    assert "billing_process_refund amount_cents 15.00" in mpage.locator(".plan").inner_text()
    mpage.fill("#approve-form input[name=code]", fresh_code(manager.totp_secret or ""))
    mpage.fill("#approve-form textarea[name=note]", "duplicate confirmed in the processor report")
    shoot(mpage, "approval-detail")
    mpage.click("#approve-form button[type=submit]")
    mpage.wait_for_selector("#decision-message")
    assert "approved" in mpage.locator("#approval-status").inner_text()
    shoot(mpage, "approved")

    # The refund is in the customer's history (recorded as finance's action, approved by the manager).
    fpage.goto(f"{server}/customers/c-1")
    fpage.wait_for_selector(".tl-row")
    assert fpage.locator(".tl-row[data-governor=billing] .tl-event", has_text="issue_refund").count() == 1
    shoot(fpage, "refund-history")
    with web_db.session() as s:
        record = s.scalars(select(TransitionRecord).where(TransitionRecord.event == "issue_refund")).one()
        assert record.actor == finance.id and record.approval_id == approval_id
        inst = s.get(GovernorInstance, invoice)
        assert inst is not None and inst.data.get("refunded_cents") == 1500
    assert_no_errors(ferrors, merrors)


def test_support_sees_the_refund_disabled_and_a_forged_post_is_refused(
    server: str, browser: Any, web_db: Database, make_user: Callable[..., MadeUser]
) -> None:
    entitlement = _cancelled_entitlement(web_db, "c-2")
    support = make_user("sam@staff.test", ["support"])
    _, page, errors = signed_in(browser, server, support)
    page.goto(f"{server}/customers/c-2")
    button = page.locator(f"#actions-{entitlement} button[data-event=approve_refund]")
    assert button.is_disabled()
    assert button.get_attribute("title") == "needs finance; you have support"
    assert "needs finance; you have support" in page.locator(f"#actions-{entitlement}").inner_text()
    button.scroll_into_view_if_needed()
    shoot(page, "support-disabled", full_page=False)

    # A hand-made POST with a valid CSRF token from the page is refused by the server.
    token = page.evaluate("() => JSON.parse(document.body.getAttribute('hx-headers'))['X-CSRFToken']")
    response = page.request.post(
        f"{server}/instances/{entitlement}/actions/approve_refund",
        form={
            "csrf_token": token,
            "idempotency_key": str(uuid.uuid4()),
            "expected_version": "",
            "in_amount_cents": "100",
            "reason_code": "customer_request",
            "comment": "forged request trying to refund money",
        },
        headers={"X-CSRFToken": token},
    )
    assert response.status == 403
    assert "needs finance; you have support" in response.text()
    with web_db.session() as s:
        assert s.scalars(select(Approval)).first() is None
        assert (
            s.scalars(select(TransitionRecord).where(TransitionRecord.event == "approve_refund")).first()
            is None
        )
    assert_no_errors(errors)
