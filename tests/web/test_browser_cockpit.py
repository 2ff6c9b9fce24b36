"""Browser journey (Playwright + Debian's Chromium): sign in, find a customer, watch the cockpit go live.

Screenshots go to tests/artifacts/ (cockpit-customer.png, cockpit-top.png, cockpit-search.png,
cockpit-locked.png, cockpit-full-size.png, cockpit-time-travel.png) to be looked at.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from tests.web.browser import Shots, assert_no_errors, signed_in
from tests.web.conftest import MadeUser
from tests.web.test_console import T_LOCK, build_customer, fire
from webapp.db import Database

shoot = Shots("cockpit")


def test_find_a_customer_and_watch_the_cockpit_update_live(
    server: str, browser: Any, web_db: Database, make_user: Callable[..., MadeUser]
) -> None:
    build_customer(web_db, "c-1001", name="Ada Example")
    build_customer(web_db, "c-1002", name="Grace Hopper", billed=False)
    support = make_user("sam@staff.test", ["support"])
    context, page, errors = signed_in(browser, server, support, viewport=(1600, 1000))
    page.wait_for_url(f"{server}/customers*")

    page.fill("#q", "ada")
    page.wait_for_selector("#customer-row-c-1002", state="detached")  # the live search narrowed the list
    assert page.locator("#customer-row-c-1001").count() == 1
    shoot(page, "search", full_page=False)
    page.click("#customer-row-c-1001 a")
    page.wait_for_selector("#gov-customer_account-state-active.current")
    assert page.locator(".gov-group").count() == 8
    shoot(page, "customer")
    shoot(page, "top", full_page=False)

    # A colleague locks the account: the Account card, the header and the timeline follow without a reload.
    marker = page.get_attribute("#live", "data-marker")
    page.evaluate("window.__sameDocument = true")
    fire(
        web_db,
        "c-1001",
        "customer_account",
        "lock",
        {"reason": "suspected account takeover", "reason_code": "compromised_account"},
        T_LOCK,
    )
    page.wait_for_selector("#gov-customer_account-state-locked.current", timeout=15000)
    page.wait_for_selector("#timeline-rows .tl-row .tl-event:text-is('lock')", timeout=5000)
    page.wait_for_selector("#lock-flag")
    assert page.evaluate("window.__sameDocument") is True  # no reload happened
    assert page.get_attribute("#live", "data-marker") != marker
    # The swapped-in diagram is styled by the page's one diagram stylesheet (it carries none itself).
    current = "#gov-customer_account-state-locked"
    assert page.evaluate(f"getComputedStyle(document.querySelector('{current} > rect')).fill") == (
        "rgb(37, 99, 235)"
    )
    assert (
        page.evaluate(f"getComputedStyle(document.querySelector('{current} > text')).textAnchor") == "middle"
    )
    assert page.locator("svg.gov-diagram style").count() == 0
    shoot(page, "locked")

    # The full-size toggle widens a diagram without any script of ours.
    page.click("#group-customer_account .diagram-toggle summary")
    page.wait_for_timeout(200)
    width = page.evaluate(
        "document.querySelector('#group-customer_account .diagram svg').getBoundingClientRect().width"
    )
    assert width > 800
    shoot(page, "full-size", full_page=False)

    # Time travel: back to before the lock, read-only with a banner.
    page.fill("#as-of-at", (T_LOCK - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M"))
    page.click(".as-of-form button[type=submit]")
    page.wait_for_selector("#time-travel-banner")
    assert page.locator("#gov-customer_account-state-active.current").count() == 1
    assert page.locator("#live").count() == 0
    shoot(page, "time-travel", full_page=False)
    context.close()
    assert_no_errors(errors)
