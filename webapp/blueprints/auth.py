"""Sign-in, second factor, sign-out and the signed-in user's own account (``/auth/...``).

Sign-in is two steps when the user has (or must have) a second factor: after the password, the
session holds only a short-lived *pending* marker (no Flask-Login user), and the user is signed in
once the TOTP code is verified, or, for ``admin``/``compliance`` without one, once they enrolled.
A TOTP code is accepted once only (``users.accept_totp``). A user whose password is older than the
``console.password_max_age`` setting, or was set by an administrator, is signed in but sent to
``/auth/password`` by every other page until they chose a new one (CONSOLE.md §1.4: every 90 days).
The rules themselves live in ``webapp.services.users``; sessions in ``webapp.auth_session``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from flask import (
    Blueprint,
    current_app,
    flash,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField, StringField
from wtforms.validators import DataRequired, EqualTo, Length

from webapp.auth_session import end_session, safe_next, start_session, utcnow
from webapp.models import StaffUser
from webapp.policy import can, permission, public, why_not
from webapp.services import users

bp = Blueprint("auth", __name__, url_prefix="/auth")
bp.add_app_template_global(can, "can")
bp.add_app_template_global(why_not, "why_not")


def route_exists(path: str) -> bool:
    """True when the app serves ``path`` (the navigation links only to pages that exist)."""
    return path in {rule.rule for rule in current_app.url_map.iter_rules()}


bp.add_app_template_global(route_exists, "route_exists")

PENDING = "pending_sign_in"
"""Session key of a half-finished sign-in: {"uid", "sv", "at", "step": "verify"|"enrol", "next"}."""
PENDING_TTL_SECONDS = 300
ENROL_SECRET = "enrol_secret"
PASSWORD_EXPIRES_AT = "pw_expires_at"
"""Session key: when the signed-in user's password expires (epoch seconds), set at sign-in."""
EXPIRED_PASSWORD_ALLOWED = frozenset({"auth.password", "auth.sign_out", "static"})
"""The only endpoints a user with an expired password may reach."""


class SignInForm(FlaskForm):  # type: ignore[misc]
    email = EmailField("Email", validators=[DataRequired(), Length(max=320)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=users.MAX_PASSWORD_LENGTH)])


class CodeForm(FlaskForm):  # type: ignore[misc]
    code = StringField("Authenticator code", validators=[DataRequired(), Length(min=6, max=8)])


class ChangePasswordForm(FlaskForm):  # type: ignore[misc]
    current_password = PasswordField("Current password", validators=[DataRequired()])
    new_password = PasswordField(
        "New password",
        validators=[DataRequired(), Length(min=users.MIN_PASSWORD_LENGTH, max=users.MAX_PASSWORD_LENGTH)],
    )
    confirm = PasswordField("Repeat the new password", validators=[EqualTo("new_password", "does not match")])


def home_url() -> str:
    """Where a signed-in user lands: the customer search when it exists, else their account page."""
    for path in ("/customers", "/"):
        if route_exists(path):
            return path
    return url_for("auth.account")


def _pending() -> dict[str, Any] | None:
    """The half-finished sign-in of this session, if still fresh."""
    pending = session.get(PENDING)
    if not isinstance(pending, dict) or time.time() - float(pending.get("at", 0)) > PENDING_TTL_SECONDS:
        session.pop(PENDING, None)
        return None
    return pending


def _finish(user: StaffUser, next_url: str | None, method: str) -> Any:
    from webapp import runtime

    now = utcnow()
    with runtime().db.session() as s:
        users.record_sign_in(s, user.id, method=method, now=now)
    start_session(user, now=now)
    expires = users.password_expires_at(user, runtime().settings)
    if expires is not None:
        # Kept in the (signed) session so that a session outliving the expiry is also caught.
        session[PASSWORD_EXPIRES_AT] = expires.timestamp()
        if expires <= now:  # the page says why
            return redirect(url_for("auth.password"))
    return redirect(safe_next(next_url) or home_url())


def _password_expired(now: datetime) -> bool:
    expires = session.get(PASSWORD_EXPIRES_AT)
    return isinstance(expires, int | float) and expires <= now.timestamp()


@bp.before_app_request
def _require_password_change() -> Any:
    """With an expired password, every page but the change-password page and sign-out leads there."""
    if request.endpoint in EXPIRED_PASSWORD_ALLOWED or request.path.startswith("/api/"):
        return None
    if not _password_expired(utcnow()) or not current_user.is_authenticated or current_user.via_token:
        return None
    target = url_for("auth.password")
    if request.headers.get("HX-Request") == "true":
        response = make_response("", 403)
        response.headers["HX-Redirect"] = target
        return response
    return redirect(target)


def _pending_user(pending: dict[str, Any]) -> StaffUser | None:
    """The pending user's row when still active, unlocked and unchanged since the password step."""
    from webapp import runtime

    with runtime().db.session() as s:
        user = s.get(StaffUser, pending["uid"])
        if user is None or not user.active or users.is_locked(user, utcnow()):
            return None
        if user.session_version != pending["sv"]:
            return None
        user.grants  # noqa: B018 - load roles before the session closes
        return user


@bp.route("/sign-in", methods=["GET", "POST"])
@public
def sign_in() -> Any:
    """Email and password; the 6th failure locks the account for 30 minutes."""
    if current_user.is_authenticated:
        return redirect(home_url())
    form = SignInForm()
    next_url = safe_next(request.args.get("next"))
    if request.method == "POST" and not form.validate():
        return render_template("auth/sign_in.html", form=form, error=None, next_url=next_url), 422
    if request.method == "POST":
        from webapp import runtime

        with runtime().db.session() as s:
            result = users.authenticate(s, form.email.data or "", form.password.data or "", now=utcnow())
            if result.user is not None:
                result.user.grants  # noqa: B018 - load roles before the session closes
        user = result.user
        if user is None:
            return render_template(
                "auth/sign_in.html", form=form, error=result.message, next_url=next_url
            ), 401
        if user.totp_secret or users.totp_required(user.roles, runtime().settings):
            step = "verify" if user.totp_secret else "enrol"
            session.clear()
            session[PENDING] = {
                "uid": user.id,
                "sv": user.session_version,
                "at": time.time(),
                "step": step,
                "next": next_url,
            }
            return redirect(url_for("auth.verify" if step == "verify" else "auth.enrol"))
        return _finish(user, next_url, "password")
    return render_template("auth/sign_in.html", form=form, error=None, next_url=next_url)


@bp.route("/verify", methods=["GET", "POST"])
@public
def verify() -> Any:
    """Second step of sign-in: the current code of the user's authenticator app."""
    pending = _pending()
    if pending is None or pending.get("step") != "verify":
        flash("Sign in with your email and password first.", "error")
        return redirect(url_for("auth.sign_in"))
    form = CodeForm()
    if request.method == "POST":
        if not form.validate():
            return render_template("auth/verify.html", form=form), 422
        from webapp import runtime

        user = _pending_user(pending)
        if user is None:
            session.pop(PENDING, None)
            flash(users.SIGN_IN_REFUSED, "error")
            return redirect(url_for("auth.sign_in"))
        with runtime().db.session() as s:
            refusal = users.check_sign_in_code(s, user.id, form.code.data or "", now=utcnow())
        if refusal is None:
            return _finish(user, pending.get("next"), "totp")
        form.code.errors = [refusal]
        return render_template("auth/verify.html", form=form), 401
    return render_template("auth/verify.html", form=form)


@bp.route("/enrol", methods=["GET", "POST"])
@public
def enrol() -> Any:
    """Enrol a TOTP second factor: show the secret, then require one valid code before enabling it.

    Reached by a signed-in user from their account page, or mid sign-in by an ``admin``/``compliance``
    user who has none yet (they cannot use the console before finishing this).
    """
    from webapp import runtime

    pending = _pending()
    if current_user.is_authenticated:
        user_id, email, next_url = current_user.id, current_user.email, None
        if current_user.has_totp:
            flash("A second factor is already enrolled.", "success")
            return redirect(url_for("auth.account"))
    elif pending is not None and pending.get("step") == "enrol":
        row = _pending_user(pending)
        if row is None:
            session.pop(PENDING, None)
            flash(users.SIGN_IN_REFUSED, "error")
            return redirect(url_for("auth.sign_in"))
        user_id, email, next_url = row.id, row.email, pending.get("next")
    else:
        flash("Sign in with your email and password first.", "error")
        return redirect(url_for("auth.sign_in"))
    secret = session.get(ENROL_SECRET)
    if not isinstance(secret, str):
        secret = session[ENROL_SECRET] = users.new_totp_secret()
    form = CodeForm()
    context = {
        "form": form,
        "secret": secret,
        "uri": users.totp_uri(secret, email),
        "required": pending is not None,
    }
    if request.method == "POST":
        if not form.validate():
            return render_template("auth/enrol.html", **context), 422
        try:
            with runtime().db.session() as s:
                row = users.enable_totp(s, user_id, secret, form.code.data or "", now=utcnow())
                row.grants  # noqa: B018 - load roles before the session closes
        except users.UserError as exc:
            form.code.errors = [exc.message]
            return render_template("auth/enrol.html", **context), 422
        session.pop(ENROL_SECRET, None)
        if current_user.is_authenticated:
            flash("Second factor enrolled. Approvals will ask for a code from your app.", "success")
            return redirect(url_for("auth.account"))
        return _finish(row, next_url, "totp_enrolled")
    return render_template("auth/enrol.html", **context)


@bp.post("/sign-out")
@permission("self.profile")
def sign_out() -> Any:
    """Sign out everywhere: the server stops honouring every cookie of this user."""
    end_session(current_user.id)
    flash("You are signed out.", "success")
    return redirect(url_for("auth.sign_in"))


@bp.get("/account")
@permission("self.profile")
def account() -> Any:
    """The signed-in user's roles, second factor and password form."""
    return _account_page(ChangePasswordForm())


def _account_page(form: ChangePasswordForm, status: int = 200) -> Any:
    from webapp import runtime

    with runtime().db.session() as s:
        row = s.get(StaffUser, current_user.id)
        expires = users.password_expires_at(row, runtime().settings) if row is not None else None
    return render_template(
        "auth/account.html", form=form, min_length=users.MIN_PASSWORD_LENGTH, password_expires=expires
    ), status


def _password_page(form: ChangePasswordForm, status: int = 200) -> Any:
    return render_template(
        "auth/password.html",
        form=form,
        min_length=users.MIN_PASSWORD_LENGTH,
        expired=_password_expired(utcnow()),
    ), status


@bp.route("/password", methods=["GET", "POST"])
@permission("self.profile")
def password() -> Any:
    """Choose a new password (where an expired password leads); then sign in again with it."""
    form = ChangePasswordForm()
    if request.method == "GET":
        return _password_page(form)
    return _change_password(form, _password_page)


@bp.post("/account/password")
@permission("self.profile")
def change_password() -> Any:
    """Change one's password from the account page; every session must sign in again."""
    return _change_password(ChangePasswordForm(), _account_page)


def _change_password(form: ChangePasswordForm, page: Callable[[ChangePasswordForm, int], Any]) -> Any:
    from webapp import runtime

    if not form.validate():
        return page(form, 422)
    try:
        with runtime().db.session() as s:
            users.change_password(
                s,
                current_user.id,
                form.current_password.data or "",
                form.new_password.data or "",
                now=utcnow(),
            )
    except users.UserError as exc:
        field = getattr(form, exc.field or "", None) or form.new_password
        field.errors = [exc.message]
        return page(form, 422)
    end_session(None)
    flash("Password changed. Sign in with the new password.", "success")
    return redirect(url_for("auth.sign_in"))
