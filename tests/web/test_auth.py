"""Sign-in, lockout, sessions (rotation, revocation, timeouts), TOTP, separation of duties, CLI, tokens."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pyotp
import pytest
from click.testing import CliRunner
from flask import Blueprint, Flask, jsonify
from flask.testing import FlaskClient
from flask_login import current_user
from werkzeug.test import TestResponse

from tests.web.conftest import PASSWORD, MadeUser, csrf_token, make_app, sign_in
from webapp.db import Database
from webapp.models import ApiToken, StaffUser
from webapp.policy import permission
from webapp.runtime import Runtime
from webapp.services import users

MakeUser = Callable[..., MadeUser]


def row(db: Database, user_id: str) -> StaffUser:
    with db.session() as s:
        user = s.get(StaffUser, user_id)
        assert user is not None
        user.grants  # noqa: B018 - load roles while attached
        return user


def signed_in_as(client: FlaskClient) -> str | None:
    """The user id the server accepts for this client's cookie (None when it sends us to sign in)."""
    response = client.get("/auth/account")
    if response.status_code == 302:
        assert "/auth/sign-in" in response.location
        return None
    assert response.status_code == 200
    match = re.search(r"<dd>([^<]+@[^<]+)</dd>", response.get_data(as_text=True))
    return match.group(1) if match else "?"


def session_cookie(client: FlaskClient) -> str:
    cookie = client.get_cookie("session")
    assert cookie is not None
    return cookie.value


# --- sign-in and session rotation ------------------------------------------------------------------


def test_sign_in_works_and_rotates_the_session(client: FlaskClient, make_user: MakeUser) -> None:
    user = make_user("sam@corp.test", ["support"])
    with client.session_transaction() as sess:
        sess["planted"] = "attacker-chosen"  # session fixation attempt
    before = session_cookie(client)

    response = sign_in(client, "SAM@corp.test ", PASSWORD)

    assert response.status_code == 302
    assert response.location in ("/customers", "/auth/account")  # the cockpit, or the account page
    assert session_cookie(client) != before
    with client.session_transaction() as sess:
        assert "planted" not in sess
        assert sess["_user_id"] == user.id
        assert sess["_fresh"] is True
        first_sid = sess["sid"]
        assert len(first_sid) >= 40
    assert signed_in_as(client) == "sam@corp.test"

    client.post("/auth/sign-out", data={"csrf_token": csrf_token(client, "/auth/account")})
    assert sign_in(client, "sam@corp.test").status_code == 302
    with client.session_transaction() as sess:
        assert sess["sid"] != first_sid
        assert sess["sv"] == 2  # signing out bumped the version once


def test_wrong_password_gets_one_message_whether_or_not_the_email_exists(
    client: FlaskClient, make_user: MakeUser
) -> None:
    make_user("sam@corp.test", ["support"])
    wrong = sign_in(client, "sam@corp.test", "not the password!!")
    unknown = sign_in(client, "nobody@corp.test", "not the password!!")
    assert wrong.status_code == unknown.status_code == 401
    for response in (wrong, unknown):
        assert users.SIGN_IN_REFUSED in response.get_data(as_text=True)
    assert signed_in_as(client) is None


def test_next_parameter_cannot_redirect_off_site(client: FlaskClient, make_user: MakeUser) -> None:
    make_user("sam@corp.test", ["support"])
    token = csrf_token(client)
    response = client.post(
        "/auth/sign-in?next=//evil.example/x",
        data={"email": "sam@corp.test", "password": PASSWORD, "csrf_token": token},
    )
    assert response.status_code == 302
    assert "evil" not in response.location
    client.post("/auth/sign-out", data={"csrf_token": csrf_token(client, "/auth/account")})
    token = csrf_token(client)
    response = client.post(
        "/auth/sign-in?next=/auth/account",
        data={"email": "sam@corp.test", "password": PASSWORD, "csrf_token": token},
    )
    assert response.location.endswith("/auth/account")


def test_anonymous_page_request_goes_to_sign_in_with_next(client: FlaskClient) -> None:
    response = client.get("/auth/account")
    assert response.status_code == 302
    assert response.location == "/auth/sign-in?next=/auth/account"
    htmx = client.get("/auth/account", headers={"HX-Request": "true"})
    assert htmx.status_code == 401
    assert htmx.headers["HX-Redirect"].startswith("/auth/sign-in")


# --- lockout ---------------------------------------------------------------------------------------


def test_six_failures_lock_the_account_for_30_minutes(
    client: FlaskClient, make_user: MakeUser, web_db: Database
) -> None:
    user = make_user("fin@corp.test", ["finance"])
    for attempt in range(1, 6):
        assert sign_in(client, user.email, f"wrong password {attempt}").status_code == 401
        assert row(web_db, user.id).failed_logins == attempt
        assert row(web_db, user.id).locked_until is None
    started = datetime.now(UTC)
    assert sign_in(client, user.email, "wrong password 6").status_code == 401
    locked_until = row(web_db, user.id).locked_until
    assert locked_until is not None
    assert started + timedelta(minutes=29) < locked_until <= datetime.now(UTC) + timedelta(minutes=30)

    seventh = sign_in(client, user.email, PASSWORD)  # the right password, while locked
    assert seventh.status_code == 401
    assert users.SIGN_IN_REFUSED in seventh.get_data(as_text=True)
    assert signed_in_as(client) is None
    assert row(web_db, user.id).locked_until == locked_until  # refusals while locked do not extend it

    with web_db.session() as s:  # 30 minutes later
        s.get(StaffUser, user.id).locked_until = datetime.now(UTC) - timedelta(seconds=1)  # type: ignore[union-attr]
    assert sign_in(client, user.email, PASSWORD).status_code == 302
    assert signed_in_as(client) == user.email
    assert row(web_db, user.id).failed_logins == 0
    assert row(web_db, user.id).locked_until is None


def test_a_success_resets_the_failure_count(
    client: FlaskClient, make_user: MakeUser, web_db: Database
) -> None:
    user = make_user("fin@corp.test", ["finance"])
    for attempt in range(5):
        sign_in(client, user.email, f"wrong password {attempt}")
    assert sign_in(client, user.email, PASSWORD).status_code == 302
    assert row(web_db, user.id).failed_logins == 0
    client.post("/auth/sign-out", data={"csrf_token": csrf_token(client, "/auth/account")})
    sign_in(client, user.email, "wrong again!!")
    assert row(web_db, user.id).failed_logins == 1
    assert row(web_db, user.id).locked_until is None


# --- revocation and timeouts -----------------------------------------------------------------------


def test_signed_out_cookie_replayed_is_refused(app: Flask, client: FlaskClient, make_user: MakeUser) -> None:
    user = make_user("sam@corp.test", ["support"])
    sign_in(client, user.email)
    stolen = session_cookie(client)
    assert signed_in_as(client) == user.email

    response = client.post("/auth/sign-out", data={"csrf_token": csrf_token(client, "/auth/account")})
    assert response.status_code == 302
    assert signed_in_as(client) is None

    client.set_cookie("session", stolen)
    assert signed_in_as(client) is None
    other = app.test_client()
    other.set_cookie("session", stolen)
    assert signed_in_as(other) is None


def test_disabled_users_session_is_refused(
    client: FlaskClient, make_user: MakeUser, web_db: Database
) -> None:
    user = make_user("sam@corp.test", ["support"])
    admin = make_user("root@corp.test", ["admin"], totp=True)
    sign_in(client, user.email)
    assert signed_in_as(client) == user.email
    with web_db.session() as s:
        users.set_active(s, user.id, False, by=admin.id, now=datetime.now(UTC))
    assert signed_in_as(client) is None
    assert sign_in(client, user.email).status_code == 401


def test_role_change_and_password_change_require_signing_in_again(
    client: FlaskClient, make_user: MakeUser, web_db: Database
) -> None:
    user = make_user("sam@corp.test", ["support"])
    admin = make_user("root@corp.test", ["admin"], totp=True)
    sign_in(client, user.email)
    with web_db.session() as s:
        users.grant_role(s, user.id, "finance", granted_by=admin.id, now=datetime.now(UTC))
    assert signed_in_as(client) is None

    sign_in(client, user.email)
    old_cookie = session_cookie(client)
    new_password = "a much better passphrase"
    response = client.post(
        "/auth/account/password",
        data={
            "current_password": PASSWORD,
            "new_password": new_password,
            "confirm": new_password,
            "csrf_token": csrf_token(client, "/auth/account"),
        },
    )
    assert response.status_code == 302
    assert signed_in_as(client) is None
    client.set_cookie("session", old_cookie)
    assert signed_in_as(client) is None
    assert sign_in(client, user.email, PASSWORD).status_code == 401
    assert sign_in(client, user.email, new_password).status_code == 302


def test_password_change_with_wrong_current_password_changes_nothing(
    client: FlaskClient, make_user: MakeUser, web_db: Database
) -> None:
    user = make_user("sam@corp.test", ["support"])
    sign_in(client, user.email)
    before = row(web_db, user.id)
    response = client.post(
        "/auth/account/password",
        data={
            "current_password": "not my password",
            "new_password": "short",
            "confirm": "short",
            "csrf_token": csrf_token(client, "/auth/account"),
        },
    )
    assert response.status_code == 422
    assert "between 12 and 256 characters" in response.get_data(as_text=True)
    response = client.post(
        "/auth/account/password",
        data={
            "current_password": "not my password",
            "new_password": "a long enough new password",
            "confirm": "a long enough new password",
            "csrf_token": csrf_token(client, "/auth/account"),
        },
    )
    assert response.status_code == 422
    assert "the current password is wrong" in response.get_data(as_text=True)
    after = row(web_db, user.id)
    assert (after.password_hash, after.session_version) == (before.password_hash, before.session_version)
    assert signed_in_as(client) == user.email


@pytest.mark.parametrize(
    ("idle", "age", "accepted"),
    [
        (timedelta(minutes=14), timedelta(minutes=14), True),
        (timedelta(minutes=16), timedelta(minutes=16), False),
        (timedelta(minutes=1), timedelta(hours=7, minutes=59), True),
        (timedelta(minutes=1), timedelta(hours=8, minutes=1), False),
    ],
)
def test_idle_and_absolute_timeouts(
    client: FlaskClient, make_user: MakeUser, idle: timedelta, age: timedelta, accepted: bool
) -> None:
    user = make_user("sam@corp.test", ["support"])
    sign_in(client, user.email)
    now = time.time()
    with client.session_transaction() as sess:
        sess["seen_at"] = now - idle.total_seconds()
        sess["auth_at"] = now - age.total_seconds()
    assert (signed_in_as(client) == user.email) is accepted
    if not accepted:
        page = client.get("/auth/sign-in").get_data(as_text=True)
        assert "please sign in again" in page


# --- CSRF and cookies ------------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "wrong-token", "IjE2ZjRi.bogus"])
def test_sign_in_without_a_valid_csrf_token_is_refused_and_changes_nothing(
    client: FlaskClient, make_user: MakeUser, web_db: Database, token: str | None
) -> None:
    user = make_user("sam@corp.test", ["support"])
    client.get("/auth/sign-in")
    data = {"email": user.email, "password": "wrong password!!"}
    if token is not None:
        data["csrf_token"] = token
    assert client.post("/auth/sign-in", data=data).status_code == 400
    data["password"] = PASSWORD
    response = client.post("/auth/sign-in", data=data)
    assert response.status_code == 400
    assert "CSRF" in response.get_data(as_text=True)
    assert row(web_db, user.id).failed_logins == 0
    assert signed_in_as(client) is None


def test_sign_out_needs_csrf(client: FlaskClient, make_user: MakeUser, web_db: Database) -> None:
    user = make_user("sam@corp.test", ["support"])
    sign_in(client, user.email)
    assert client.post("/auth/sign-out").status_code == 400
    assert client.post("/auth/sign-out", data={"csrf_token": "forged"}).status_code == 400
    assert signed_in_as(client) == user.email
    assert row(web_db, user.id).session_version == 1


def test_session_cookie_is_httponly_samesite_strict_and_secure_outside_tests(
    client: FlaskClient, pg_url: str, web_runtime: Runtime
) -> None:
    header = client.get("/auth/sign-in").headers["Set-Cookie"]
    assert "HttpOnly" in header
    assert "SameSite=Strict" in header
    from webapp import create_app
    from webapp.config import Config

    production = create_app(
        Config.from_env({"DATABASE_URL": pg_url, "SECRET_KEY": "k" * 40}), runtime=web_runtime
    )
    assert production.config["SESSION_COOKIE_SECURE"] is True
    assert production.config["SESSION_COOKIE_SAMESITE"] == "Strict"
    secure_header = production.test_client().get("/auth/sign-in").headers["Set-Cookie"]
    assert "Secure" in secure_header
    assert "HttpOnly" in secure_header


# --- second factor ---------------------------------------------------------------------------------


def enrol_page_secret(response: TestResponse) -> str:
    match = re.search(r'id="totp-secret">([A-Z2-7]+)<', response.get_data(as_text=True))
    assert match
    return match.group(1)


@pytest.mark.parametrize("role", ["admin", "compliance"])
def test_admin_and_compliance_without_totp_must_enrol_first(
    client: FlaskClient, make_user: MakeUser, web_db: Database, role: str
) -> None:
    user = make_user(f"{role}@corp.test", [role])
    response = sign_in(client, user.email)
    assert response.status_code == 302
    assert response.location.endswith("/auth/enrol")
    assert signed_in_as(client) is None  # nothing else works before enrolling

    page = client.get("/auth/enrol")
    assert page.status_code == 200
    secret = enrol_page_secret(page)
    assert f"secret={secret}" in page.get_data(as_text=True)  # the otpauth:// URI
    token = csrf_token(client, "/auth/enrol")
    wrong = client.post("/auth/enrol", data={"code": "000000", "csrf_token": token})
    assert wrong.status_code == 422
    assert row(web_db, user.id).totp_secret is None

    done = client.post("/auth/enrol", data={"code": pyotp.TOTP(secret).now(), "csrf_token": token})
    assert done.status_code == 302
    assert row(web_db, user.id).totp_secret == secret
    assert signed_in_as(client) == user.email


def test_enrol_page_without_a_password_step_sends_to_sign_in(client: FlaskClient) -> None:
    response = client.get("/auth/enrol")
    assert response.status_code == 302
    assert response.location.endswith("/auth/sign-in")


def test_totp_code_is_checked_at_sign_in(client: FlaskClient, make_user: MakeUser, web_db: Database) -> None:
    user = make_user("boss@corp.test", ["manager"], totp=True)
    response = sign_in(client, user.email)
    assert response.location.endswith("/auth/verify")
    assert signed_in_as(client) is None

    wrong = client.post(
        "/auth/verify", data={"code": "123456", "csrf_token": csrf_token(client, "/auth/verify")}
    )
    assert wrong.status_code == 401
    assert users.STEP_UP_WRONG_CODE in wrong.get_data(as_text=True)
    assert row(web_db, user.id).failed_logins == 1
    assert signed_in_as(client) is None

    right = client.post(
        "/auth/verify", data={"code": user.code(), "csrf_token": csrf_token(client, "/auth/verify")}
    )
    assert right.status_code == 302
    assert signed_in_as(client) == user.email
    assert row(web_db, user.id).failed_logins == 0


def test_pending_second_factor_expires(client: FlaskClient, make_user: MakeUser) -> None:
    user = make_user("boss@corp.test", ["manager"], totp=True)
    sign_in(client, user.email)
    with client.session_transaction() as sess:
        sess["pending_sign_in"] = {**sess["pending_sign_in"], "at": time.time() - 301}
    response = client.get("/auth/verify")
    assert response.status_code == 302
    assert response.location.endswith("/auth/sign-in")


def test_signed_in_user_can_enrol_voluntarily(
    client: FlaskClient, make_user: MakeUser, web_db: Database
) -> None:
    user = make_user("fin@corp.test", ["finance"])
    sign_in(client, user.email)
    assert "enrol now" in client.get("/auth/account").get_data(as_text=True)
    page = client.get("/auth/enrol")
    secret = enrol_page_secret(page)
    token = csrf_token(client, "/auth/enrol")
    response = client.post("/auth/enrol", data={"code": pyotp.TOTP(secret).now(), "csrf_token": token})
    assert response.location.endswith("/auth/account")
    assert row(web_db, user.id).totp_secret == secret
    assert signed_in_as(client) == user.email  # enrolling does not sign the user out


def test_step_up_needs_a_fresh_code_and_an_enrolled_factor(app: Flask, make_user: MakeUser) -> None:
    from webapp.auth_session import StepUpError, require_step_up

    plain = make_user("fin@corp.test", ["finance"])
    strong = make_user("boss@corp.test", ["manager"], totp=True)
    with app.app_context():
        with pytest.raises(StepUpError, match="enrol a second factor to approve"):
            require_step_up(plain.id, "123456")
        with pytest.raises(StepUpError, match="wrong or expired"):
            require_step_up(strong.id, "000000" if strong.code() != "000000" else "111111")
        old = pyotp.TOTP(strong.totp_secret or "").at(datetime.now(UTC) - timedelta(minutes=5))
        with pytest.raises(StepUpError, match="wrong or expired"):
            require_step_up(strong.id, old)
        require_step_up(strong.id, strong.code())  # no exception


# --- roles and separation of duties ----------------------------------------------------------------


@pytest.mark.parametrize(
    "roles", [["admin", "compliance"], ["admin", "auditor"], ["support", "admin", "auditor"]]
)
def test_separation_of_duties_refuses_conflicting_roles(web_db: Database, roles: list[str]) -> None:
    with web_db.session() as s, pytest.raises(users.UserError, match="separation of duties"):
        users.create_user(s, "x@corp.test", roles, PASSWORD, granted_by="test", now=datetime.now(UTC))
    with web_db.session() as s:
        assert users.find_user(s, "x@corp.test") is None


def test_granting_a_conflicting_role_or_ones_own_role_is_refused(
    make_user: MakeUser, web_db: Database
) -> None:
    admin = make_user("root@corp.test", ["admin"], totp=True)
    other = make_user("root2@corp.test", ["admin"], totp=True)
    now = datetime.now(UTC)
    with web_db.session() as s, pytest.raises(users.UserError, match="themselves"):
        users.grant_role(s, admin.id, "manager", granted_by=admin.id, now=now)
    with web_db.session() as s, pytest.raises(users.UserError, match="separation of duties"):
        users.grant_role(s, admin.id, "compliance", granted_by=other.id, now=now)
    with web_db.session() as s, pytest.raises(users.UserError, match="unknown role"):
        users.grant_role(s, admin.id, "superuser", granted_by=other.id, now=now)
    assert row(web_db, admin.id).roles == {"admin"}
    assert row(web_db, admin.id).session_version == 1
    with web_db.session() as s:
        users.grant_role(s, admin.id, "manager", granted_by=other.id, now=now)
    assert row(web_db, admin.id).roles == {"admin", "manager"}
    assert row(web_db, admin.id).session_version == 2


def test_short_passwords_and_bad_emails_are_refused(web_db: Database) -> None:
    now = datetime.now(UTC)
    with web_db.session() as s, pytest.raises(users.UserError, match="at least 12"):
        users.create_user(s, "a@corp.test", ["support"], "elevenchars", granted_by="t", now=now)
    with web_db.session() as s, pytest.raises(users.UserError, match="valid email"):
        users.create_user(s, "<script>@x", ["support"], PASSWORD, granted_by="t", now=now)


def test_passwords_are_stored_as_argon2_hashes(make_user: MakeUser, web_db: Database) -> None:
    user = make_user("sam@corp.test", ["support"])
    stored = row(web_db, user.id).password_hash
    assert stored.startswith("$argon2id$")
    assert PASSWORD not in stored


# --- command line ----------------------------------------------------------------------------------


def cli(pg_url: str, args: list[str], stdin: str | None = None) -> Any:
    from webapp.cli import main

    return CliRunner().invoke(main, args, input=stdin, env={"DATABASE_URL": pg_url}, catch_exceptions=False)


def test_cli_users_create_and_token(pg_url: str, web_db: Database, client: FlaskClient, app: Flask) -> None:
    made = cli(
        pg_url, ["users", "create", "--email", "Ops@Corp.test", "--role", "support", "--role", "finance"]
    )
    assert made.exit_code == 0, made.output
    password = re.search(r"password \(shown once; to be changed at the first sign-in\): (\S+)", made.output)
    assert password
    with web_db.session() as s:
        user = users.find_user(s, "ops@corp.test")
        assert user is not None
        assert user.roles == {"support", "finance"}
        assert user.password_hash.startswith("$argon2id$")
        assert user.password_must_change  # the operator saw it: the user chooses their own
    signed_in = sign_in(client, "ops@corp.test", password.group(1))
    assert signed_in.status_code == 302
    assert client.get("/customers").location.endswith("/auth/password")

    stdin = cli(
        pg_url,
        ["users", "create", "--email", "c@corp.test", "--role", "compliance", "--password-stdin"],
        stdin="a long stdin passphrase\n",
    )
    assert stdin.exit_code == 0, stdin.output
    assert "shown once" not in stdin.output
    with web_db.session() as s:
        own = users.find_user(s, "c@corp.test")
        assert own is not None and not own.password_must_change
    assert "must enrol" in stdin.output

    token = cli(pg_url, ["users", "token", "--email", "ops@corp.test"])
    assert token.exit_code == 0, token.output
    plaintext = token.output.strip().splitlines()[0]
    assert plaintext.startswith("mct_")
    with web_db.session() as s:
        stored = s.query(ApiToken).one()
        assert stored.token_hash == users.token_hash(plaintext)
        assert plaintext not in stored.token_hash
        assert stored.expires_at is not None
        assert timedelta(days=89) < stored.expires_at - stored.created_at <= timedelta(days=90)


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["--email", "a@corp.test", "--role", "admin", "--role", "compliance"], None, "separation of duties"),
        (["--email", "a@corp.test", "--role", "admin", "--role", "auditor"], None, "separation of duties"),
        (["--email", "a@corp.test", "--role", "root"], None, "unknown role root"),
        (["--email", "not-an-email", "--role", "support"], None, "valid email"),
        (["--email", "a@corp.test", "--role", "support", "--password-stdin"], "short\n", "at least 12"),
    ],
)
def test_cli_users_create_refuses_bad_input_with_exit_2(
    pg_url: str, web_db: Database, args: list[str], stdin: str | None, message: str
) -> None:
    result = cli(pg_url, ["users", "create", *args], stdin)
    assert result.exit_code == 2
    assert message in result.output
    with web_db.session() as s:
        assert s.query(StaffUser).count() == 0


def test_cli_duplicate_user_and_unknown_token_user_exit_2(pg_url: str, web_db: Database) -> None:
    assert cli(pg_url, ["users", "create", "--email", "a@corp.test", "--role", "support"]).exit_code == 0
    again = cli(pg_url, ["users", "create", "--email", "A@corp.test", "--role", "finance"])
    assert again.exit_code == 2
    assert "already exists" in again.output
    missing = cli(pg_url, ["users", "token", "--email", "ghost@corp.test"])
    assert missing.exit_code == 2
    assert "no active user" in missing.output


def test_cli_disable_and_unlock(pg_url: str, web_db: Database, make_user: MakeUser) -> None:
    user = make_user("sam@corp.test", ["support"])
    with web_db.session() as s:
        u = s.get(StaffUser, user.id)
        assert u is not None
        u.locked_until, u.failed_logins = datetime.now(UTC) + timedelta(minutes=20), 0
    assert cli(pg_url, ["users", "unlock", "--email", user.email]).exit_code == 0
    assert row(web_db, user.id).locked_until is None
    assert cli(pg_url, ["users", "disable", "--email", user.email]).exit_code == 0
    assert row(web_db, user.id).active is False
    assert row(web_db, user.id).session_version == 2


# --- API bearer tokens -----------------------------------------------------------------------------


@pytest.fixture
def api_app(pg_url: str, web_runtime: Runtime, web_db: Database) -> Flask:
    """The console plus a tiny permission-protected API route (the real API blueprint is elsewhere)."""
    app = make_app(pg_url, web_runtime)
    probe = Blueprint("api_probe", __name__, url_prefix="/api/probe")

    @probe.get("/whoami")
    @permission("customer.view")
    def whoami() -> Any:
        return jsonify(
            {"id": current_user.id, "roles": sorted(current_user.roles), "token": current_user.via_token}
        )

    @probe.get("/export")
    @permission("audit.export")
    def export() -> Any:
        return jsonify({"ok": True})

    app.register_blueprint(probe)
    return app


def test_bearer_token_authenticates_api_requests(
    api_app: Flask, make_user: MakeUser, web_db: Database
) -> None:
    user = make_user("sam@corp.test", ["support"])
    with web_db.session() as s:
        token_row, token = users.create_token(s, user.id, now=datetime.now(UTC))
    client = api_app.test_client()
    ok = client.get("/api/probe/whoami", headers={"Authorization": f"Bearer {token}"})
    assert ok.status_code == 200
    assert ok.get_json() == {"id": user.id, "roles": ["support"], "token": True}

    forbidden = client.get("/api/probe/export", headers={"Authorization": f"Bearer {token}"})
    assert forbidden.status_code == 403
    assert forbidden.get_json()["error"]["code"] == "forbidden"
    assert "needs compliance; you have support" in forbidden.get_json()["error"]["message"]

    for header in ({}, {"Authorization": "Bearer mct_not-a-token"}, {"Authorization": f"Basic {token}"}):
        refused = client.get("/api/probe/whoami", headers=header)
        assert refused.status_code == 401
        assert refused.get_json()["error"]["code"] == "unauthorized"

    with web_db.session() as s:
        users.revoke_token(s, token_row.id, now=datetime.now(UTC))
    assert client.get("/api/probe/whoami", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_expired_token_and_disabled_users_token_are_refused(
    api_app: Flask, make_user: MakeUser, web_db: Database
) -> None:
    from webapp.auth_session import load_user_from_request

    user = make_user("sam@corp.test", ["support"])
    other = make_user("fin@corp.test", ["finance"])
    now = datetime.now(UTC)
    with web_db.session() as s:
        _, expired = users.create_token(s, user.id, now=now - timedelta(days=91))
        _, live = users.create_token(s, other.id, now=now)
    with api_app.test_request_context("/api/v1/customers", headers={"Authorization": f"Bearer {expired}"}):
        from flask import request

        assert load_user_from_request(request) is None
    with api_app.test_request_context("/api/v1/customers", headers={"Authorization": f"Bearer {live}"}):
        from flask import request

        loaded = load_user_from_request(request)
        assert loaded is not None and loaded.id == other.id
    with api_app.test_request_context("/customers", headers={"Authorization": f"Bearer {live}"}):
        from flask import request

        assert load_user_from_request(request) is None  # bearer tokens are for /api/ only
    with web_db.session() as s:
        users.set_active(s, other.id, False, by="test")
    client = api_app.test_client()
    assert client.get("/api/probe/whoami", headers={"Authorization": f"Bearer {live}"}).status_code == 401


def test_api_ignores_session_cookies(api_app: Flask, make_user: MakeUser) -> None:
    user = make_user("sam@corp.test", ["support"])
    client = api_app.test_client()
    sign_in(client, user.email)
    assert signed_in_as(client) == user.email
    assert client.get("/api/probe/whoami").status_code == 401


# --- navigation ------------------------------------------------------------------------------------


def test_nav_shows_links_by_capability_and_a_sign_out_form(client: FlaskClient, make_user: MakeUser) -> None:
    support = make_user("sam@corp.test", ["support", "finance"])
    sign_in(client, support.email)
    page = client.get("/auth/account").get_data(as_text=True)
    assert 'href="/customers"' in page
    assert 'href="/approvals"' in page
    assert 'href="/audit"' not in page
    assert '<span class="nav-roles" id="nav-roles">support, finance</span>' in page
    assert re.search(
        r'<form method="post" action="/auth/sign-out">\s*<input type="hidden" name="csrf_token"', page
    )

    client.post("/auth/sign-out", data={"csrf_token": csrf_token(client, "/auth/account")})
    auditor = make_user("aud@corp.test", ["auditor"])
    sign_in(client, auditor.email)
    page = client.get("/auth/account").get_data(as_text=True)
    audit_page = "/audit" in {rule.rule for rule in client.application.url_map.iter_rules()}
    assert ('href="/audit"' in page) is audit_page  # linked once the audit page exists
    assert 'href="/approvals"' not in page
    anonymous = client.application.test_client().get("/auth/sign-in").get_data(as_text=True)
    assert "Sign out" not in anonymous


def test_user_supplied_text_is_escaped_on_the_sign_in_page(client: FlaskClient) -> None:
    token = csrf_token(client)
    response = client.post(
        "/auth/sign-in",
        data={"email": '"><script>alert(1)</script>', "password": "x" * 13, "csrf_token": token},
    )
    body = response.get_data(as_text=True)
    assert "<script>alert(1)</script>" not in body
    assert "&lt;script&gt;" in body or "&#34;&gt;&lt;script&gt;" in body


# --- audit -----------------------------------------------------------------------------------------


def test_account_events_are_audited_in_the_platform_chain_without_emails(
    client: FlaskClient, make_user: MakeUser, web_db: Database
) -> None:
    from sqlalchemy import select

    from webapp import audit
    from webapp.models import AuditEntry

    user = make_user("sam@corp.test", ["support"])
    sign_in(client, user.email)
    client.post("/auth/sign-out", data={"csrf_token": csrf_token(client, "/auth/account")})
    for attempt in range(6):
        sign_in(client, user.email, f"wrong password {attempt}")
    with web_db.session() as s:
        users.unlock(s, user.id, by="cli", now=datetime.now(UTC))
        entries = s.scalars(
            select(AuditEntry).where(AuditEntry.tenant_id == "platform").order_by(AuditEntry.seq)
        ).all()
        assert [(e.action, e.actor) for e in entries] == [
            ("staff.user_created", "test-setup"),
            ("staff.signed_in", user.id),
            ("staff.signed_out", user.id),
            ("staff.locked", "system"),
            ("staff.unlocked", "cli"),
        ]
        assert all("sam@corp.test" not in e.payload for e in entries)
        assert f'"user_id":"{user.id}"' in entries[1].payload
        assert audit.verify_tenant(s, "platform").ok


def test_background_polling_does_not_count_as_activity(
    pg_url: str, web_runtime: Runtime, web_db: Database, make_user: MakeUser
) -> None:
    from webapp.auth_session import background

    app = make_app(pg_url, web_runtime)
    probe = Blueprint("poll_probe", __name__)

    @probe.get("/poll-probe")
    @permission("customer.view")
    @background
    def poll() -> Any:
        return "same"

    app.register_blueprint(probe)
    client = app.test_client()
    user = make_user("sam@corp.test", ["support"])
    sign_in(client, user.email)
    ten_minutes_ago = time.time() - 600
    with client.session_transaction() as sess:
        sess["seen_at"] = ten_minutes_ago
    assert client.get("/poll-probe").status_code == 200
    with client.session_transaction() as sess:
        assert sess["seen_at"] == ten_minutes_ago  # polling kept nothing alive
    assert signed_in_as(client) == user.email
    with client.session_transaction() as sess:
        assert sess["seen_at"] > ten_minutes_ago + 590  # a page the user opened did
