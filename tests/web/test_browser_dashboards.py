"""Browser journey (Playwright + Debian's Chromium): a manager opens the dashboards.

Every panel loads itself over htmx and its Plotly chart is drawn by ``static/js/charts.js`` (an SVG
appears in each chart) without a console error (the CSP forbids inline scripts and eval); the
entitlement approval queue lists the waiting entitlements by age class and links to /approvals.
The finance charts page draws its gauges too. Screenshots: /tmp/shots/dashboards-*.png.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.services.test_rollups import LATER
from tests.web.conftest import MadeUser
from tests.web.test_browser_actions import _sign_in, browser, server  # noqa: F401  (fixtures reused)
from tests.web.test_dashboards import world
from webapp.blueprints import dashboards
from webapp.db import Database

SHOTS = Path("/tmp/shots")


def test_a_manager_sees_the_charts_drawn_and_the_approval_queue(
    server: str,  # noqa: F811
    browser: Any,  # noqa: F811
    web_db: Database,
    make_user: Callable[..., MadeUser],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    world(web_db)
    monkeypatch.setattr(dashboards, "utcnow", lambda: LATER)  # the fixture history's "now"
    manager = make_user("mara@staff.test", ["manager"])
    _, page, errors = _sign_in(browser, server, manager)

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
    page.screenshot(path=str(SHOTS / "dashboards-manager.png"), full_page=True)
    page.locator("#slot-sla").screenshot(path=str(SHOTS / "dashboards-sla.png"))
    page.locator("#slot-approvals").screenshot(path=str(SHOTS / "dashboards-approvals.png"))
    page.locator("#slot-latency").screenshot(path=str(SHOTS / "dashboards-latency.png"))

    page.click("#link-finance-charts")
    page.wait_for_url(f"{server}/dashboards/finance/")
    for name in ("payments", "recovery", "failures"):
        page.wait_for_selector(f"#slot-{name} .chart[data-drawn=yes] svg.main-svg", timeout=20_000)
    page.screenshot(path=str(SHOTS / "dashboards-finance.png"), full_page=True)

    page.click("#link-approvals") if page.locator("#link-approvals").count() else page.goto(
        f"{server}/approvals"
    )
    assert errors == [], errors
