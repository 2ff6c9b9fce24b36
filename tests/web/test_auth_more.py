"""Sign-in hardening (CONSOLE.md §1.4): single-use TOTP codes, password expiry, session limits as settings."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pyotp
import pytest
from flask import Flask
from flask.testing import FlaskClient

from governors.settings import default_settings
from tests.web.conftest import PASSWORD, MadeUser, csrf_token, make_app, sign_in
from webapp.db import Database
from webapp.models import StaffUser
from webapp.runtime import Runtime
from webapp.services import users

MakeUser = Callable[..., MadeUser]
NEW_PASSWORD = "a brand new passphrase"


def row(db: Database, user_id: str) -> StaffUser:
    with db.session() as s:
        user = s.get(StaffUser, user_id)
        assert user is not None
        return user


def code_at(secret: str | None, step_offset: int = 0) -> str:
    """The code of the current time-step plus ``step_offset`` (the console accepts ±1 step)."""
    totp = pyotp.TOTP(secret or "")
    return totp.generate_otp(totp.timecode(datetime.now(UTC)) + step_offset)


def post_code(client: FlaskClient, code: str) -> Any:
    return client.post("/auth/verify", data={"code": code, "csrf_token": csrf_token(client, "/auth/verify")})


def sign_out(client: FlaskClient, page: str = "/auth/account") -> None:
    response = client.post("/auth/sign-out", data={"csrf_token": csrf_token(client, page)})
    assert response.status_code == 302


def app_with(pg_url: str, web_runtime: Runtime, **settings: Any) -> Flask:
    """The console with some ``console.*`` settings overridden (as a MARKETPLACE_SETTINGS file would)."""
    overridden = default_settings().override({f"console.{k}": v for k, v in settings.items()})
    return make_app(pg_url, Runtime(config=web_runtime.config, db=web_runtime.db, settings=overridden))


def age_password(db: Database, user_id: str, age: timedelta) -> None:
    with db.session() as s:
        user = s.get(StaffUser, user_id)
        assert user is not None
        user.password_changed_at = datetime.now(UTC) - age


# --- a TOTP code is accepted once --------------------------------------------------------------------


def test_a_sign_in_code_cannot_be_replayed_in_another_browser(
    app: Flask, make_user: MakeUser, web_db: Database
) -> None:
    user = make_user("boss@corp.test", ["manager"], totp=True)
    code = code_at(user.totp_secret)
    first, second = app.test_client(), app.test_client()
    sign_in(first, user.email)
    assert post_code(first, code).status_code == 302

    sign_in(second, user.email)
    replay = post_code(second, code)
    assert replay.status_code == 401
    assert users.TOTP_REUSED in replay.get_data(as_text=True)
    assert row(web_db, user.id).failed_logins == 1, "a replayed code counts as a failed attempt"
    assert second.get("/auth/account").status_code == 302  # not signed in

    assert post_code(second, code_at(user.totp_secret, +1)).status_code == 302  # the next code works
    assert row(web_db, user.id).failed_logins == 0


def test_a_code_older_than_the_last_accepted_one_is_refused(app: Flask, make_user: MakeUser) -> None:
    user = make_user("boss@corp.test", ["manager"], totp=True)
    client = app.test_client()
    sign_in(client, user.email)
    assert post_code(client, code_at(user.totp_secret, +1)).status_code == 302  # clock drift: next step
    sign_out(client)
    sign_in(client, user.email)
    refused = post_code(client, code_at(user.totp_secret))  # still valid in time, but an earlier step
    assert refused.status_code == 401
    assert users.TOTP_REUSED in refused.get_data(as_text=True)


def test_the_sign_in_code_cannot_be_used_again_for_a_step_up(app: Flask, make_user: MakeUser) -> None:
    from webapp.auth_session import StepUpError, require_step_up

    user = make_user("boss@corp.test", ["manager"], totp=True)
    code = code_at(user.totp_secret)
    client = app.test_client()
    sign_in(client, user.email)
    assert post_code(client, code).status_code == 302
    with app.app_context():
        with pytest.raises(StepUpError, match="already used"):
            require_step_up(user.id, code)
        require_step_up(user.id, code_at(user.totp_secret, +1))
        with pytest.raises(StepUpError, match="already used"):
            require_step_up(user.id, code_at(user.totp_secret, +1))  # one code, one approval


def test_the_enrolment_code_cannot_sign_in(
    client: FlaskClient, make_user: MakeUser, web_db: Database
) -> None:
    import re

    user = make_user("root@corp.test", ["admin"])
    sign_in(client, user.email)
    page = client.get("/auth/enrol").get_data(as_text=True)
    match = re.search(r'id="totp-secret">([A-Z2-7]+)<', page)
    assert match
    secret = match.group(1)
    code = code_at(secret)
    token = csrf_token(client, "/auth/enrol")
    assert client.post("/auth/enrol", data={"code": code, "csrf_token": token}).status_code == 302
    assert row(web_db, user.id).totp_last_step == pyotp.TOTP(secret).timecode(datetime.now(UTC))

    sign_out(client)
    sign_in(client, user.email)
    replay = post_code(client, code)
    assert replay.status_code == 401
    assert users.TOTP_REUSED in replay.get_data(as_text=True)


def test_two_step_ups_racing_with_one_code_let_only_one_through(
    web_db: Database, make_user: MakeUser
) -> None:
    """The row lock makes the check-and-record atomic: the second request waits, then sees the step."""
    user = make_user("boss@corp.test", ["manager"], totp=True)
    code = code_at(user.totp_secret)
    now = datetime.now(UTC)
    outcome: list[str] = []

    def second() -> None:
        try:
            with web_db.session() as s2:
                users.verify_step_up(s2, user.id, code, now=now)
            outcome.append("accepted")
        except users.StepUpError as exc:
            outcome.append(exc.message)

    with web_db.session() as s1:
        users.verify_step_up(s1, user.id, code, now=now)  # accepted, row locked until commit
        racer = threading.Thread(target=second)
        racer.start()
        racer.join(timeout=1.0)
        assert racer.is_alive(), "the second step-up must wait for the first one's lock"
    racer.join(timeout=10)
    assert outcome == [users.TOTP_REUSED]


def test_a_step_up_sees_a_step_recorded_after_its_session_loaded_the_user(
    web_db: Database, make_user: MakeUser
) -> None:
    user = make_user("boss@corp.test", ["manager"], totp=True)
    code = code_at(user.totp_secret)
    now = datetime.now(UTC)
    with web_db.session() as s1:
        loaded = s1.get(StaffUser, user.id)  # e.g. the caller looked the approver up first (kept alive)
        assert loaded is not None and loaded.totp_last_step is None
        with web_db.session() as s2:
            users.verify_step_up(s2, user.id, code, now=now)  # another request uses the code
        with pytest.raises(users.StepUpError, match="already used"):
            users.verify_step_up(s1, user.id, code, now=now)


# --- passwords expire (console.password_max_age, 90 days) ------------------------------------------


def test_an_expired_password_must_be_changed_before_anything_else(
    client: FlaskClient, make_user: MakeUser, web_db: Database
) -> None:
    user = make_user("boss@corp.test", ["manager"], totp=True)
    age_password(web_db, user.id, timedelta(days=91))
    response = sign_in(client, user.email, totp=user.totp_secret)  # after the second factor too
    assert response.status_code == 302
    assert response.location.endswith("/auth/password")

    for path in ("/auth/account", "/", "/customers", "/approvals", "/auth/enrol"):
        blocked = client.get(path)
        assert blocked.status_code == 302, path
        assert blocked.location.endswith("/auth/password"), path
    fragment = client.get("/auth/account", headers={"HX-Request": "true"})
    assert fragment.status_code == 403 and fragment.headers["HX-Redirect"].endswith("/auth/password")
    before = row(web_db, user.id)
    side_door = client.post(
        "/auth/account/password",
        data={
            "current_password": PASSWORD,
            "new_password": NEW_PASSWORD,
            "confirm": NEW_PASSWORD,
            "csrf_token": csrf_token(client, "/auth/password"),
        },
    )
    assert side_door.status_code == 302 and side_door.location.endswith("/auth/password")
    assert row(web_db, user.id).password_hash == before.password_hash

    page = client.get("/auth/password")
    assert page.status_code == 200
    assert 'id="password-expired"' in page.get_data(as_text=True)
    same = client.post(
        "/auth/password",
        data={
            "current_password": PASSWORD,
            "new_password": PASSWORD,
            "confirm": PASSWORD,
            "csrf_token": csrf_token(client, "/auth/password"),
        },
    )
    assert same.status_code == 422
    assert users.PASSWORD_REUSED in same.get_data(as_text=True)
    assert row(web_db, user.id).password_hash == before.password_hash

    changed = client.post(
        "/auth/password",
        data={
            "current_password": PASSWORD,
            "new_password": NEW_PASSWORD,
            "confirm": NEW_PASSWORD,
            "csrf_token": csrf_token(client, "/auth/password"),
        },
    )
    assert changed.status_code == 302 and changed.location.endswith("/auth/sign-in")
    after = row(web_db, user.id)
    assert after.password_changed_at > datetime.now(UTC) - timedelta(minutes=1)
    assert after.session_version == before.session_version + 1
    again = sign_in(client, user.email, NEW_PASSWORD, totp=user.totp_secret)
    assert again.status_code == 302 and not again.location.endswith("/auth/password")
    assert client.get("/auth/account").status_code == 200


def test_sign_out_stays_possible_with_an_expired_password(
    client: FlaskClient, make_user: MakeUser, web_db: Database
) -> None:
    user = make_user("sam@corp.test", ["support"])
    age_password(web_db, user.id, timedelta(days=120))
    assert sign_in(client, user.email).location.endswith("/auth/password")
    sign_out(client, "/auth/password")
    assert client.get("/auth/password").location.startswith("/auth/sign-in")


def test_a_password_younger_than_90_days_is_not_asked_for(
    client: FlaskClient, make_user: MakeUser, web_db: Database
) -> None:
    user = make_user("sam@corp.test", ["support"])
    age_password(web_db, user.id, timedelta(days=89, hours=23))
    assert not sign_in(client, user.email).location.endswith("/auth/password")
    account = client.get("/auth/account")
    assert account.status_code == 200
    expires = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%d")
    assert f'id="password-expires" datetime="{expires}' in account.get_data(as_text=True)


def test_a_session_that_outlives_the_password_is_sent_to_change_it(
    client: FlaskClient, make_user: MakeUser
) -> None:
    user = make_user("sam@corp.test", ["support"])
    sign_in(client, user.email)
    assert client.get("/auth/account").status_code == 200
    with client.session_transaction() as sess:
        assert sess["pw_expires_at"] > time.time() + 89 * 86400
        sess["pw_expires_at"] = time.time() - 1  # the 90 days ran out while signed in
    assert client.get("/auth/account").location.endswith("/auth/password")


@pytest.mark.parametrize(
    ("max_age", "age", "expired"),
    [
        ("30d", timedelta(days=31), True),
        ("30d", timedelta(days=29), False),
        ("0s", timedelta(days=999), False),
    ],
)
def test_the_password_age_is_a_setting(
    pg_url: str,
    web_runtime: Runtime,
    web_db: Database,
    make_user: MakeUser,
    max_age: str,
    age: timedelta,
    expired: bool,
) -> None:
    client = app_with(pg_url, web_runtime, password_max_age=max_age).test_client()
    user = make_user("sam@corp.test", ["support"])
    age_password(web_db, user.id, age)
    assert sign_in(client, user.email).location.endswith("/auth/password") is expired


def test_the_api_is_not_blocked_by_an_expired_password(
    client: FlaskClient, make_user: MakeUser, web_db: Database
) -> None:
    """Tokens rotate on their own 90-day clock; the password page is a browser concern."""
    user = make_user("sam@corp.test", ["support"])
    age_password(web_db, user.id, timedelta(days=200))
    with web_db.session() as s:
        _, token = users.create_token(s, user.id, now=datetime.now(UTC))
    response = client.get("/api/v1/approvals", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code != 302


# --- session limits are settings -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "idle", "age", "message"),
    [
        (
            {"session_idle_timeout": "5m"},
            timedelta(minutes=6),
            timedelta(minutes=6),
            "idle for more than 5 minutes",
        ),
        ({}, timedelta(minutes=16), timedelta(minutes=16), "idle for more than 15 minutes"),
        ({"session_absolute_timeout": "1h"}, timedelta(minutes=1), timedelta(minutes=61), "limit of 1 hour"),
        ({}, timedelta(minutes=1), timedelta(hours=8, minutes=1), "limit of 8 hours"),
    ],
)
def test_idle_and_absolute_timeouts_are_settings(
    pg_url: str,
    web_runtime: Runtime,
    make_user: MakeUser,
    settings: dict[str, str],
    idle: timedelta,
    age: timedelta,
    message: str,
) -> None:
    client = app_with(pg_url, web_runtime, **settings).test_client()
    user = make_user("sam@corp.test", ["support"])
    sign_in(client, user.email)
    now = time.time()
    with client.session_transaction() as sess:
        sess["seen_at"] = now - idle.total_seconds()
        sess["auth_at"] = now - age.total_seconds()
    assert client.get("/auth/account").status_code == 302
    assert message in client.get("/auth/sign-in").get_data(as_text=True)


def test_a_shorter_idle_setting_still_lets_an_active_session_through(
    pg_url: str, web_runtime: Runtime, make_user: MakeUser
) -> None:
    client = app_with(pg_url, web_runtime, session_idle_timeout="5m").test_client()
    user = make_user("sam@corp.test", ["support"])
    sign_in(client, user.email)
    with client.session_transaction() as sess:
        sess["seen_at"] = time.time() - 240
    assert client.get("/auth/account").status_code == 200


# --- password policy and the refusal message ---------------------------------------------------------


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("Password123!", "well-known default password"),
        ("P@ssw0rd!!!!!", "well-known default password"),
        ("changeme2026", "well-known default password"),
        ("123456789012", "well-known default password"),
        ("Marketplace2026", "well-known default password"),
        ("aaaaaaaaaaaaaaa", "at least 5 different characters"),
        ("abababababababab", "at least 5 different characters"),
        ("Samantha likes tea", "may not contain your email name"),
    ],
)
def test_weak_passwords_are_refused_with_a_reason(web_db: Database, password: str, message: str) -> None:
    with web_db.session() as s, pytest.raises(users.UserError, match=message):
        users.create_user(
            s, "samantha@corp.test", ["support"], password, granted_by="test", now=datetime.now(UTC)
        )
    with web_db.session() as s:
        assert users.find_user(s, "samantha@corp.test") is None


def test_a_weak_new_password_is_refused_on_the_form_and_changes_nothing(
    client: FlaskClient, make_user: MakeUser, web_db: Database
) -> None:
    user = make_user("sam@corp.test", ["support"])
    sign_in(client, user.email)
    before = row(web_db, user.id)
    response = client.post(
        "/auth/password",
        data={
            "current_password": PASSWORD,
            "new_password": "Password2026!",
            "confirm": "Password2026!",
            "csrf_token": csrf_token(client, "/auth/password"),
        },
    )
    assert response.status_code == 422
    assert "well-known default password" in response.get_data(as_text=True)
    after = row(web_db, user.id)
    assert (after.password_hash, after.session_version) == (before.password_hash, before.session_version)


def test_the_refusal_message_says_how_lockout_works(client: FlaskClient, make_user: MakeUser) -> None:
    user = make_user("sam@corp.test", ["support"])
    page = sign_in(client, user.email, "not the password").get_data(as_text=True)
    assert "6 failed attempts lock it for 30 minutes" in page


# --- which roles must use a second factor is a setting -------------------------------------------


@pytest.mark.parametrize(
    ("required", "must_enrol"),
    [(None, False), (["admin", "compliance", "support"], True), (["admin"], False)],
)
def test_the_roles_that_need_a_second_factor_are_a_setting(
    pg_url: str,
    web_runtime: Runtime,
    make_user: MakeUser,
    required: list[str] | None,
    must_enrol: bool,
) -> None:
    settings = {} if required is None else {"totp_required_roles": required}
    client = app_with(pg_url, web_runtime, **settings).test_client()
    user = make_user("sam@corp.test", ["support"])
    response = sign_in(client, user.email)
    assert response.location.endswith("/auth/enrol") is must_enrol
    assert (client.get("/auth/account").status_code == 200) is not must_enrol


# --- a password somebody else set is for one sign-in ------------------------------------------------


def test_a_one_time_password_must_be_replaced_at_the_first_sign_in(
    client: FlaskClient, make_user: MakeUser, web_db: Database
) -> None:
    admin = make_user("root@corp.test", ["admin"], totp=True)
    with web_db.session() as s:
        user = users.create_user(
            s,
            "newbie@corp.test",
            ["support"],
            PASSWORD,
            granted_by=admin.id,
            now=datetime.now(UTC),
            one_time_password=True,
        )
        user_id = user.id
    assert sign_in(client, "newbie@corp.test").location.endswith("/auth/password")
    assert client.get("/auth/account").location.endswith("/auth/password")
    changed = client.post(
        "/auth/password",
        data={
            "current_password": PASSWORD,
            "new_password": NEW_PASSWORD,
            "confirm": NEW_PASSWORD,
            "csrf_token": csrf_token(client, "/auth/password"),
        },
    )
    assert changed.status_code == 302
    assert row(web_db, user_id).password_must_change is False
    assert not sign_in(client, "newbie@corp.test", NEW_PASSWORD).location.endswith("/auth/password")


def test_a_reset_by_an_admin_is_one_time_and_ones_own_change_is_not(
    client: FlaskClient, make_user: MakeUser, web_db: Database
) -> None:
    admin = make_user("root@corp.test", ["admin"], totp=True)
    user = make_user("sam@corp.test", ["support"])
    with web_db.session() as s:
        users.set_password(s, user.id, "a reset passphrase here", now=datetime.now(UTC), by=admin.id)
    assert row(web_db, user.id).password_must_change is True
    assert sign_in(client, user.email, "a reset passphrase here").location.endswith("/auth/password")
    with web_db.session() as s:
        users.set_password(s, user.id, NEW_PASSWORD, now=datetime.now(UTC), by=user.id)
    assert row(web_db, user.id).password_must_change is False


# --- end to end: one code approves one four-eyes request ---------------------------------------------


def test_one_step_up_code_approves_one_request_only(
    app: Flask, make_user: MakeUser, web_db: Database
) -> None:
    from tests.web.test_actions import Staff, _decide, _request_refund
    from webapp.models import Approval

    finance = Staff(app, make_user("fin@staff.test", ["finance"]))
    manager = Staff(app, make_user("boss@staff.test", ["manager"], totp=True))
    _, first = _request_refund(web_db, finance, "c-1")
    _, second = _request_refund(web_db, finance, "c-2")
    code = manager.user.code()  # a step the sign-in did not use
    assert _decide(manager, first, "approve", code=code, note="checked").status_code == 200
    replay = _decide(manager, second, "approve", code=code, note="checked")
    assert replay.status_code == 403
    assert users.TOTP_REUSED in replay.get_data(as_text=True)
    with web_db.session() as s:
        assert s.get(Approval, second).status == "pending"  # type: ignore[union-attr]
