"""The steps every browser journey repeats (the ``server`` and ``browser`` fixtures are in conftest).

- ``new_visit(browser)``: a fresh browser context (its own cookies: another person) with one page,
  collecting console errors and 404 responses into ``Visit.errors``.
- ``signed_in(browser, server, user)``: ``new_visit`` signed in through the real form, with the
  user's password and, if they have one, a TOTP code (``fresh_code``: each code is accepted once).
- ``assert_no_errors(*errors)``: at the end of a journey, none of its visits saw an error.
- ``Shots(team)``: ``shoot(page_or_locator, step)`` saves ``tests/artifacts/<team>-<step>.png``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, NamedTuple

from playwright.sync_api import Browser, BrowserContext, Locator, Page

from tests.web.conftest import ARTIFACTS, MadeUser, fresh_code

VIEWPORT = (1500, 1000)
"""Width and height of a new page, wide enough for the cockpit's two columns."""


class Visit(NamedTuple):
    """One person's browser context, its page, and what went wrong in it so far."""

    context: BrowserContext
    page: Page
    errors: list[str]


def new_visit(browser: Browser, viewport: tuple[int, int] = VIEWPORT) -> Visit:
    """A new context and page; console errors (CSP violations, script errors) and 404s are collected."""
    width, height = viewport
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    errors: list[str] = []

    def on_console(message: Any) -> None:
        # "Failed to load resource" repeats a failed response (the 404s are caught below) or is the
        # browser's own favicon probe.
        if message.type == "error" and "Failed to load resource" not in message.text:
            errors.append(message.text)

    def on_response(response: Any) -> None:
        if response.status == 404:  # every page and fragment a journey loads must exist
            errors.append(f"{response.status} {response.url}")

    page.on("console", on_console)
    page.on("response", on_response)
    return Visit(context, page, errors)


def signed_in(browser: Browser, server: str, user: MadeUser, viewport: tuple[int, int] = VIEWPORT) -> Visit:
    """``new_visit`` after signing ``user`` in through the form (password, then TOTP if enrolled)."""
    visit = new_visit(browser, viewport)
    page = visit.page
    page.goto(f"{server}/auth/sign-in")
    page.fill("input[name=email]", user.email)
    page.fill("input[name=password]", user.password)
    page.click("button[type=submit]")
    if user.totp_secret:
        page.wait_for_url(re.compile(r".*/auth/verify.*"))
        page.fill("input[name=code]", fresh_code(user.totp_secret))
        page.click("button[type=submit]")
    page.wait_for_load_state("networkidle")
    assert "/auth/" not in page.url, page.url
    return visit


def assert_no_errors(*errors: list[str]) -> None:
    """None of the visits whose ``errors`` these are saw a console error or a 404."""
    assert all(found == [] for found in errors), errors


class Shots:
    """Screenshots of one team's journeys, saved as ``ARTIFACTS/<team>-<step>.png``."""

    def __init__(self, team: str) -> None:
        self.team = team

    def path(self, step: str) -> Path:
        return ARTIFACTS / f"{self.team}-{step}.png"

    def __call__(self, target: Page | Locator, step: str, *, full_page: bool = True) -> Path:
        """Save a screenshot of a page (whole length unless ``full_page=False``) or of one element."""
        path = self.path(step)
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(target, Page):
            target.screenshot(path=str(path), full_page=full_page)
        else:
            target.screenshot(path=str(path))
        return path
