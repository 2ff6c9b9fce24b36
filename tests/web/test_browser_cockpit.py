"""Browser journey (Playwright + Debian's Chromium): sign in, find a customer, watch the cockpit go live.

Screenshots go to tests/artifacts/ (cockpit.png, cockpit-top.png, cockpit-search.png,
cockpit-locked.png, cockpit-full-size.png, cockpit-time-travel.png) to be looked at.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from werkzeug.serving import make_server

from tests.web.test_console import T_LOCK, build_customer, fire
from webapp.db import Database

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"

# No skip: browser journeys are part of the suite (.ci/run installs Debian's chromium).


@pytest.fixture
def server(app: Flask) -> Iterator[str]:
    """The app served from a thread on a free port."""
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()
        thread.join(timeout=5)


@pytest.fixture
def browser() -> Iterator[Any]:
    assert CHROMIUM.exists(), "browser tests drive Debian's chromium: apt-get install -y chromium"
    from playwright import sync_api

    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            yield chromium
        finally:
            chromium.close()


def test_find_a_customer_and_watch_the_cockpit_update_live(
    server: str, browser: Any, web_db: Database, make_user: Callable[..., Any]
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    build_customer(web_db, "c-1001", name="Ada Example")
    build_customer(web_db, "c-1002", name="Grace Hopper", billed=False)
    make_user("sam@staff.test", ["support"])
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

    page.goto(f"{server}/auth/sign-in")
    page.fill("input[name=email]", "sam@staff.test")
    page.fill("input[name=password]", "correct horse battery staple")
    page.click("button[type=submit]")
    page.wait_for_url(f"{server}/customers*")

    page.fill("#q", "ada")
    page.wait_for_selector("#customer-row-c-1002", state="detached")  # the live search narrowed the list
    assert page.locator("#customer-row-c-1001").count() == 1
    page.screenshot(path=str(ARTIFACTS / "cockpit-search.png"))
    page.click("#customer-row-c-1001 a")
    page.wait_for_selector("#gov-customer_account-state-active.current")
    assert page.locator(".gov-group").count() == 8
    page.screenshot(path=str(ARTIFACTS / "cockpit.png"), full_page=True)
    page.screenshot(path=str(ARTIFACTS / "cockpit-top.png"))

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
    page.screenshot(path=str(ARTIFACTS / "cockpit-locked.png"), full_page=True)

    # The full-size toggle widens a diagram without any script of ours.
    page.click("#group-customer_account .diagram-toggle summary")
    page.wait_for_timeout(200)
    width = page.evaluate(
        "document.querySelector('#group-customer_account .diagram svg').getBoundingClientRect().width"
    )
    assert width > 800
    page.screenshot(path=str(ARTIFACTS / "cockpit-full-size.png"))

    # Time travel: back to before the lock, read-only with a banner.
    page.fill("#as-of-at", (T_LOCK - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M"))
    page.click(".as-of-form button[type=submit]")
    page.wait_for_selector("#time-travel-banner")
    assert page.locator("#gov-customer_account-state-active.current").count() == 1
    assert page.locator("#live").count() == 0
    page.screenshot(path=str(ARTIFACTS / "cockpit-time-travel.png"))
    assert not [e for e in errors if "Content Security Policy" in e], errors
    context.close()
