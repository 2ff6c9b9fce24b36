"""Browser journey (Playwright + Debian's Chromium): a compliance officer at the compliance desk.

Officer one opens the desk, verifies the audit integrity, exports the audit trail (the file verifies
offline with ``marketplace audit verify --file``), and requests the erasure of a locked customer;
the desk tells them a second officer must approve. Officer two, signed in in ANOTHER browser
context with their second factor, approves it with a fresh step-up code; the customer's name is
gone and the chains still verify.

Screenshots: tests/artifacts/compliance-*.png.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from sqlalchemy import select

from tests.web.browser import Shots, assert_no_errors, signed_in
from tests.web.conftest import MadeUser, fresh_code
from tests.web.test_compliance import T0, _customers, _fire
from webapp import audit
from webapp.cli import main
from webapp.db import Database
from webapp.models import Customer, PrivacyRequest

shoot = Shots("compliance")


def test_compliance_officer_journey_with_a_second_officer_approving(
    server: str,
    browser: Any,
    web_db: Database,
    make_user: Callable[..., MadeUser],
    tmp_path: Path,
) -> None:
    _customers(web_db, "c-gdpr", "c-stay")
    with web_db.session() as s:
        customer = s.get(Customer, "c-gdpr")
        assert customer is not None
        customer.name = "Greta Forgetme"
    _fire(web_db, "c-gdpr", "customer_account", "lock", {"reason_code": "manual"}, T0)
    _fire(
        web_db,
        "c-stay",
        "compliance_audit",
        "violation_detected",
        {"kind": "violation", "description": "late DPA"},
        T0,
    )
    first = make_user("cora@staff.test", ["compliance"], totp=True)
    second = make_user("cato@staff.test", ["compliance"], totp=True)

    # Officer one: the desk, integrity, export.
    _, page, errors = signed_in(browser, server, first)
    page.goto(f"{server}/")
    page.click("nav >> text=Compliance")
    page.wait_for_selector("#compliance-desk")
    assert "c-stay" in page.locator("#cases").inner_text()
    shoot(page, "desk")
    page.click("#verify-form button")
    page.wait_for_selector("#verify-summary")
    assert "intact" in page.locator("#verify-summary").inner_text()
    shoot(page, "verify", full_page=False)
    page.goto(f"{server}/compliance/")
    with page.expect_download() as info:
        page.click("#export-jsonl")
    exported = tmp_path / "audit.jsonl"
    info.value.save_as(str(exported))
    result = CliRunner().invoke(main, ["audit", "verify", "--file", str(exported)])
    assert result.exit_code == 0 and "t-1: intact" in result.output, result.output

    # Officer one requests the erasure.
    page.fill("#erasure-form input[name=customer_id]", "c-gdpr")
    page.fill("#erasure-form input[name=ownership_verification]", "idcheck-2041")
    page.fill("#erasure-form textarea[name=reason]", "GDPR Art 17 request received by email")
    page.click("#erasure-form button[type=submit]")
    page.wait_for_selector("#privacy-queue")
    assert "Erasure requested" in page.locator("#flash").inner_text()
    row = page.locator("#privacy-queue tbody tr").first
    assert "waiting for a second compliance officer" in row.inner_text()
    shoot(page, "erasure-requested")

    # Officer two approves from their own browser context.
    _, page2, errors2 = signed_in(browser, server, second)
    page2.goto(f"{server}/compliance/")
    form = page2.locator("#privacy-queue .approve-form").first
    form.locator("input[name=code]").fill(fresh_code(second.totp_secret or ""))
    form.locator("input[name=note]").fill("ownership checked against the id document")
    shoot(page2, "approve")
    form.locator("button[type=submit]").click()
    page2.wait_for_selector("#flash .flash")
    assert "Erasure approved and carried out for c-gdpr" in page2.locator("#flash").inner_text()
    page2.locator("#recent-requests summary").click()
    shoot(page2, "erased")
    assert_no_errors(errors, errors2)

    with web_db.session() as s:
        customer = s.get(Customer, "c-gdpr")
        assert customer is not None and customer.name == "erased" and customer.erased_at is not None
        request = s.scalars(select(PrivacyRequest)).one()
        assert request.status == "fulfilled" and request.fulfilled_by == second.id
        for tenant in audit.tenants_with_chains(s):
            assert audit.verify_tenant(s, tenant, []).ok, tenant
