"""Sign-in, second factor, sign-out and the signed-in user's own account (``/auth/...``).

Sign-in is two steps when the user has (or must have) a second factor: after the password, the
session holds only a short-lived *pending* marker (no Flask-Login user), and the user is signed in
once the TOTP code is verified, or, for ``admin``/``compliance`` without one, once they enrolled.
The rules themselves live in ``webapp.services.users``; sessions in ``webapp.auth_session``.
"""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, current_app, flash, redirect, render_template, request, session, url_for
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
    return redirect(safe_next(next_url) or home_url())


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
        if user.totp_secret or users.totp_required(user.roles):
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
        if user is not None and users.verify_totp(user.totp_secret, form.code.data or "", now=utcnow()):
            return _finish(user, pending.get("next"), "totp")
        if user is not None:
            with runtime().db.session() as s:
                users.record_failed_factor(s, user.id, now=utcnow())
        else:
            session.pop(PENDING, None)
            flash(users.SIGN_IN_REFUSED, "error")
            return redirect(url_for("auth.sign_in"))
        form.code.errors = [users.STEP_UP_WRONG_CODE]
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
    return render_template("auth/account.html", form=form, min_length=users.MIN_PASSWORD_LENGTH), status


@bp.post("/account/password")
@permission("self.profile")
def change_password() -> Any:
    """Change one's password; every session (this one included) must sign in again."""
    from webapp import runtime

    form = ChangePasswordForm()
    if not form.validate():
        return _account_page(form, 422)
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
        return _account_page(form, 422)
    end_session(None)
    flash("Password changed. Sign in with the new password.", "success")
    return redirect(url_for("auth.sign_in"))
