"""The journeys' shared browser steps (tests/web/browser.py) catch what they are there to catch.

Every journey ends with ``assert_no_errors``; this shows that a script error, a script the CSP refuses
and a missing page each land in ``Visit.errors`` (so that assertion can fail), and that ``signed_in``
gets a user with a second factor past the code page. Screenshot: tests/artifacts/helpers-signed-in.png.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.web.browser import Shots, assert_no_errors, new_visit, signed_in
from tests.web.conftest import ARTIFACTS, MadeUser


def test_a_visit_records_script_errors_csp_refusals_and_missing_pages(server: str, browser: Any) -> None:
    context, page, errors = new_visit(browser)
    page.goto(f"{server}/auth/sign-in")
    assert errors == []

    page.evaluate("console.error('boom from the test')")
    page.evaluate(
        """() => {
            const script = document.createElement('script');
            script.textContent = 'window.inlineRan = true';
            document.body.append(script);
        }"""
    )
    page.goto(f"{server}/no-such-page")
    context.close()

    assert "boom from the test" in errors
    assert any("Content Security Policy" in e for e in errors), errors
    assert f"404 {server}/no-such-page" in errors
    with pytest.raises(AssertionError):
        assert_no_errors([], errors)


def test_signed_in_passes_the_second_factor_and_shots_land_in_artifacts(
    server: str, browser: Any, make_user: Callable[..., MadeUser]
) -> None:
    user = make_user("tess@staff.test", ["support"], totp=True)
    context, page, errors = signed_in(browser, server, user)
    assert page.url.startswith(f"{server}/customers"), page.url

    path = Shots("helpers")(page, "signed-in")
    assert path == ARTIFACTS / "helpers-signed-in.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    context.close()
    assert_no_errors(errors)
