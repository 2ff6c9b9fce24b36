"""Shared web fixtures: the console on PostgreSQL, a test client, users and sign-in.

- ``web_db``: the session-wide PostgreSQL ``Database`` (``pg_url``, migrated to head), emptied
  before each test (TRUNCATE of every table, like ``tests/services/conftest.py``).
- ``app``: ``create_app`` on that database with CSRF ON (as in production; ``TESTING`` only relaxes
  the Secure cookie flag). Build more apps with ``make_app(pg_url, runtime)`` if a test needs one.
- ``client``: ``app.test_client()``.
- ``make_user(email, roles, password=PASSWORD, totp=False) -> MadeUser``: a staff user created
  through ``webapp.services.users``; with ``totp=True`` a second factor is enrolled and
  ``MadeUser.code()`` gives a code no earlier call handed out (``fresh_code``).
- ``login(client, email, password=PASSWORD, totp=None) -> Response``: the real sign-in form (with
  its CSRF token); ``totp`` is a 6-digit code or a TOTP secret (the current code is computed).
  Returns the last response (a redirect on success).
- ``csrf_token(client, path)``: the CSRF token of the form on ``path``, for hand-made POSTs.
- ``fresh_code(secret)``: a TOTP code of a time-step not handed out before in this test process.
  The console accepts each step once per user (RFC 6238 §5.2), so signing in and then approving
  needs two codes: the previous, current and next steps are all accepted (clock drift), and after
  those the helper waits for the clock.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyotp
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text
from werkzeug.serving import make_server
from werkzeug.test import TestResponse

from webapp import create_app
from webapp.config import Config
from webapp.db import Database
from webapp.models import Base
from webapp.runtime import Runtime

PASSWORD = "correct horse battery staple"
"""Default password of ``make_user`` (long enough for the policy)."""

_CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"|name="csrf_token" value="([^"]+)"')


@dataclass(frozen=True)
class MadeUser:
    """A user made by ``make_user``."""

    id: str
    email: str
    password: str
    roles: frozenset[str]
    totp_secret: str | None

    def code(self) -> str:
        """A current TOTP code not handed out before (the user must have been made with ``totp=True``)."""
        assert self.totp_secret, "made without totp=True"
        return fresh_code(self.totp_secret)


_HANDED_OUT: dict[str, int] = {}
"""The last TOTP time-step ``fresh_code`` gave out, per secret."""


def fresh_code(secret: str) -> str:
    """A code of ``secret`` for a time-step no earlier call returned (see the module docstring)."""
    totp = pyotp.TOTP(secret)
    while True:
        now = time.time()
        current = totp.timecode(datetime.fromtimestamp(now, UTC))
        left = (current + 1) * totp.interval - now
        # The console accepts one step of drift either way; the previous step only while it cannot
        # expire before the request is checked.
        oldest = current - 1 if left > 10 else current
        step = max(oldest, _HANDED_OUT.get(secret, oldest - 1) + 1)
        if step <= current + 1:
            _HANDED_OUT[secret] = step
            return totp.generate_otp(step)
        time.sleep(max(0.05, left))


def make_app(pg_url: str, runtime: Runtime | None = None) -> Flask:
    """The console on ``pg_url`` (testing config; CSRF enabled)."""
    config = Config.from_env({"DATABASE_URL": pg_url}, testing=True)
    app = create_app(config, runtime=runtime)
    assert app.config.get("WTF_CSRF_ENABLED", True) is True
    return app


@pytest.fixture(scope="session")
def web_runtime(pg_url: str) -> Iterator[Runtime]:
    runtime = Runtime.from_config(Config.from_env({"DATABASE_URL": pg_url}, testing=True))
    yield runtime
    runtime.close()


@pytest.fixture
def web_db(web_runtime: Runtime) -> Database:
    """The database, emptied before each test (audit rows need their TRUNCATE trigger off)."""
    database = web_runtime.db
    tables = ", ".join(f'"{t.name}"' for t in reversed(Base.metadata.sorted_tables))
    with database.engine.begin() as conn:
        conn.execute(text("ALTER TABLE audit_entries DISABLE TRIGGER USER"))
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        conn.execute(text("ALTER TABLE audit_entries ENABLE TRIGGER USER"))
    return database


@pytest.fixture
def app(pg_url: str, web_runtime: Runtime, web_db: Database) -> Flask:
    return make_app(pg_url, web_runtime)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def make_user(web_db: Database) -> Callable[..., MadeUser]:
    """Factory: ``make_user("a@x.test", ["support"], password=PASSWORD, totp=False)``."""
    from webapp.services import users

    def make(email: str, roles: Iterable[str], password: str = PASSWORD, totp: bool = False) -> MadeUser:
        now = datetime.now(UTC)
        with web_db.session() as s:
            user = users.create_user(s, email, roles, password, granted_by="test-setup", now=now)
            secret = users.new_totp_secret() if totp else None
            user.totp_secret = secret
            return MadeUser(user.id, user.email, password, user.roles, secret)

    return make


def csrf_token(client: FlaskClient, path: str = "/auth/sign-in") -> str:
    """The CSRF token embedded in the page at ``path`` (a hidden ``csrf_token`` input)."""
    page = client.get(path)
    match = _CSRF.search(page.get_data(as_text=True))
    assert match, f"no csrf_token on {path} ({page.status_code})"
    return match.group(1) or match.group(2)


def sign_in(
    client: FlaskClient, email: str, password: str = PASSWORD, totp: str | None = None
) -> TestResponse:
    """Sign in through the real forms; see the module docstring."""
    response = client.post(
        "/auth/sign-in", data={"email": email, "password": password, "csrf_token": csrf_token(client)}
    )
    if totp is not None and response.status_code == 302 and response.location.endswith("/auth/verify"):
        code = totp if re.fullmatch(r"\d{6}", totp) else fresh_code(totp)
        token = csrf_token(client, "/auth/verify")
        response = client.post("/auth/verify", data={"code": code, "csrf_token": token})
    return response


@pytest.fixture
def login() -> Callable[..., TestResponse]:
    """``login(client, email, password=PASSWORD, totp=None)`` (the module-level ``sign_in``)."""
    return sign_in


# --------------------------------------------------------------------------- browser journeys
# The fixtures every tests/web/test_browser_*.py uses; the steps they repeat (sign in, collect console
# errors, save a screenshot as ARTIFACTS/<team>-<step>.png) are in tests/web/browser.py.

CHROMIUM = Path("/usr/bin/chromium")
"""Debian's Chromium (Playwright cannot download its own browser here); .ci/run installs it."""
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
"""Where browser journeys save their screenshots, to be looked at (git-ignored)."""


@pytest.fixture
def server(app: Flask) -> Iterator[str]:
    """The app served from a thread on a free port; yields its base URL."""
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
    """Headless Chromium (no skip: browser journeys are part of the suite)."""
    assert CHROMIUM.exists(), "browser tests drive Debian's chromium: apt-get install -y chromium"
    from playwright import sync_api

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            yield chromium
        finally:
            chromium.close()
