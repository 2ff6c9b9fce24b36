"""Browser journey (Playwright + Debian's Chromium): a manager opens the dashboards.

Every panel loads itself over htmx and its Plotly chart is drawn by ``static/js/charts.js`` (an SVG
appears in each chart) without a console error (the CSP forbids inline scripts and eval); the
entitlement approval queue lists the waiting entitlements by age class and links to /approvals.
The finance charts page draws its gauges too. Screenshots: tests/artifacts/dashboards-*.png.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.services.test_rollups import LATER
from tests.web.browser import Shots, assert_no_errors, signed_in
from tests.web.conftest import MadeUser
from tests.web.test_dashboards import world
from webapp.blueprints import dashboards
from webapp.db import Database

shoot = Shots("dashboards")


def test_a_manager_sees_the_charts_drawn_and_the_approval_queue(
    server: str,
    browser: Any,
    web_db: Database,
    make_user: Callable[..., MadeUser],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world(web_db)
    monkeypatch.setattr(dashboards, "utcnow", lambda: LATER)  # the fixture history's "now"
    manager = make_user("mara@staff.test", ["manager"])
    _, page, errors = signed_in(browser, server, manager)

    page.click("nav >> text=Dashboards")
    page.wait_for_url(f"{server}/dashboards/")
    chart_panels = ("latency", "errors", "queue", "response", "sla", "subscriptions", "approvals")
    for name in chart_panels:
        page.wait_for_selector(f"#slot-{name} .chart[data-drawn=yes] svg.main-svg", timeout=20_000)
    page.wait_for_selector("#slot-states #time-in-state")
    page.wait_for_selector("#slot-stuck #stuck-inv-1")

    queue = page.locator("#approval-queue")
    assert queue.is_visible()
    rows = queue.locator("tbody tr")
    assert rows.count() == 3
    assert "ESCALATE" in rows.nth(0).inner_text()
    assert page.locator("#approval-queue-link").get_attribute("href") == "/approvals"
    # The SLA panel's chart carries its window and the violation of c-1 is listed.
    assert "last 90 days" in (page.locator("#slot-sla .gtitle").first.text_content() or "")
    assert page.locator("#violation-c-1-2026-02").is_visible()
    shoot(page, "manager")
    shoot(page.locator("#slot-sla"), "sla")
    shoot(page.locator("#slot-approvals"), "approvals")
    shoot(page.locator("#slot-latency"), "latency")

    page.click("#link-finance-charts")
    page.wait_for_url(f"{server}/dashboards/finance/")
    for name in ("payments", "recovery", "failures"):
        page.wait_for_selector(f"#slot-{name} .chart[data-drawn=yes] svg.main-svg", timeout=20_000)
    shoot(page, "finance")

    page.click("#link-approvals") if page.locator("#link-approvals").count() else page.goto(
        f"{server}/approvals"
    )
    assert_no_errors(errors)
