"""Staff-user administration (``/staff``): the admins' list, creation, roles, lockouts and API tokens.

CONSOLE.md §1.3–§1.4. Changes need ``users.manage`` (admin); compliance and auditors see the same
pages read-only (``users.view``; every button is shown disabled with the reason, and the server
refuses the POST with 403 whatever the page showed). The rules live in ``webapp.services.users``
(separation of duties, no self-grant, disabling revokes sessions, tokens) and
``webapp.services.staff_admin`` (the list, and four-eyes on a grant of ``admin``: a second admin
approves it with a fresh TOTP code). Views only parse the form, call them and pick a page.

One-time secrets (a new user's generated password, a new API token) are rendered once in the
response to the POST that made them, never stored in plaintext, with ``Cache-Control: no-store``.
"""

from __future__ import annotations

from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    flash,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user
from werkzeug.wrappers import Response as WerkzeugResponse

from webapp.current import now as _now
from webapp.current import roles as _roles
from webapp.current import rt as _rt
from webapp.htmx import render_page_or_block
from webapp.models import RoleGrantRequest, StaffUser
from webapp.policy import ROLES, can, permission, why_not
from webapp.services import staff_admin, users
from webapp.services.staff_admin import FourEyesError, StepUpError, UserError
from webapp.validation import InputError, clean_text

bp = Blueprint("staff", __name__, url_prefix="/staff")

MANAGE = "users.manage"
VIEW = "users.view"


def _access() -> dict[str, Any]:
    """Whether the viewer may change anything, and why not (shown next to disabled buttons)."""
    roles = _roles()
    manage = can(roles, MANAGE)
    return {
        "manage": manage,
        "why_not_manage": "" if manage else why_not(roles, MANAGE),
        "me": current_user.id,
    }


def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response


def _back(user_id: str) -> WerkzeugResponse:
    return redirect(url_for("staff.detail", user_id=user_id), code=303)


# --- list and search -----------------------------------------------------------------------------


@bp.get("/")
@permission(VIEW)
def index() -> Response:
    """Every staff user (search by email or display name), and the admin grants waiting for approval."""
    query = (request.args.get("q") or "").strip()[: staff_admin.MAX_SEARCH]
    now = _now()
    with _rt().db.session() as s:
        rows = staff_admin.list_staff(s, query)
        pending = staff_admin.pending_requests(s, now)
        return render_page_or_block(
            "staff/index.html",
            "results",
            rows=rows,
            query=query,
            pending=pending,
            names={r.user.id: r.user.display_name for r in rows},
            now=now,
            **_access(),
        )


# --- create --------------------------------------------------------------------------------------


def _new_form(status: int = 200, errors: dict[str, str] | None = None, **values: Any) -> Response:
    response = make_response(
        render_template(
            "staff/new.html",
            roles=ROLES,
            errors=errors or {},
            values={"email": "", "display_name": "", "roles": [], **values},
            **_access(),
        ),
        status,
    )
    return response


@bp.get("/new")
@permission(MANAGE)
def new() -> Response:
    """The form for a new staff user."""
    return _new_form()


@bp.post("/new")
@permission(MANAGE)
def create() -> Response:
    """Create a user with a generated one-time password, shown once on the response page.

    A grant of ``admin`` is never immediate: the user is created with the other roles and the admin
    grant waits for a second admin (so admin alone is refused).
    """
    email = request.form.get("email", "")
    picked = [r for r in request.form.getlist("roles") if r]
    values = {"email": email, "display_name": request.form.get("display_name", ""), "roles": picked}
    try:
        display_name = clean_text(values["display_name"], max_length=200, label="the display name")
    except InputError as exc:
        return _new_form(422, {"display_name": str(exc)}, **values)
    immediate = [r for r in picked if r not in staff_admin.FOUR_EYES_ROLES]
    four_eyes = [r for r in picked if r in staff_admin.FOUR_EYES_ROLES]
    password = users.generate_password()
    now = _now()
    try:
        users.check_roles(picked)
        if four_eyes and not immediate:
            raise UserError(
                "admin needs a second admin's approval: give another role too (admin is then "
                "requested and waits for approval)",
                "roles",
            )
        with _rt().db.session() as s:
            user = users.create_user(
                s,
                email,
                immediate,
                password,
                granted_by=current_user.id,
                now=now,
                display_name=display_name,
                one_time_password=True,  # the admin saw it: the user must choose their own at sign-in
            )
            requests = [
                staff_admin.request_or_grant(s, user.id, role, by=current_user.id, now=now)
                for role in four_eyes
            ]
            created = {"id": user.id, "email": user.email, "display_name": user.display_name}
            created["roles"] = ", ".join(r for r in ROLES if r in user.roles)
            created["requested"] = ", ".join(r.role for r in requests if isinstance(r, RoleGrantRequest))
    except UserError as exc:
        return _new_form(422, {exc.field or "form": exc.message}, **values)
    body = render_template("staff/created.html", created=created, password=password, **_access())
    return _no_store(make_response(body, 201))


# --- one user ------------------------------------------------------------------------------------


def _detail(
    user_id: str,
    status: int = 200,
    *,
    errors: dict[str, str] | None = None,
    new_token: str | None = None,
    message: str | None = None,
) -> Response:
    now = _now()
    with _rt().db.session() as s:
        row = staff_admin.get_staff(s, user_id)
        if row is None:
            abort(404)
        user: StaffUser = row.user
        body = render_template(
            "staff/detail.html",
            row=row,
            user=user,
            held=[r for r in ROLES if r in user.roles],
            grantable=[r for r in ROLES if r not in user.roles],
            locked=users.is_locked(user, now),
            tokens=staff_admin.tokens_of(s, user_id),
            pending=staff_admin.pending_requests(s, now, user_id),
            errors=errors or {},
            new_token=new_token,
            message=message,
            now=now,
            **_access(),
        )
    response = make_response(body, status)
    return _no_store(response) if new_token else response


@bp.get("/<user_id>")
@permission(VIEW)
def detail(user_id: str) -> Response:
    """One user: roles, lockout, second factor, tokens, pending admin grant."""
    return _detail(user_id)


def _change(user_id: str, done: str, action: Any) -> Response | WerkzeugResponse:
    """Run ``action(session)``; 422 with the message on a UserError, else flash ``done`` and go back."""
    try:
        with _rt().db.session() as s:
            action(s)
    except UserError as exc:
        return _detail(user_id, 422, errors={exc.field or "form": exc.message})
    flash(done, "ok")
    return _back(user_id)


@bp.post("/<user_id>/disable")
@permission(MANAGE)
def disable(user_id: str) -> Response | WerkzeugResponse:
    """Disable the account: every session and API token of the user stops working at once."""
    return _change(
        user_id,
        "Account disabled; the user was signed out everywhere.",
        lambda s: users.set_active(s, user_id, False, by=current_user.id, now=_now()),
    )


@bp.post("/<user_id>/enable")
@permission(MANAGE)
def enable(user_id: str) -> Response | WerkzeugResponse:
    """Enable a disabled account again."""
    return _change(
        user_id,
        "Account enabled.",
        lambda s: users.set_active(s, user_id, True, by=current_user.id, now=_now()),
    )


@bp.post("/<user_id>/unlock")
@permission(MANAGE)
def unlock(user_id: str) -> Response | WerkzeugResponse:
    """Release a lockout before its 30 minutes are over."""
    return _change(
        user_id, "Account unlocked.", lambda s: users.unlock(s, user_id, by=current_user.id, now=_now())
    )


@bp.post("/<user_id>/roles")
@permission(MANAGE)
def grant(user_id: str) -> Response | WerkzeugResponse:
    """Grant a role (separation of duties, no self-grant); ``admin`` waits for a second admin."""
    role = request.form.get("role", "")
    try:
        with _rt().db.session() as s:
            if s.get(StaffUser, user_id) is None:
                abort(404)
            outcome = staff_admin.request_or_grant(s, user_id, role, by=current_user.id, now=_now())
            waiting = isinstance(outcome, RoleGrantRequest)
    except UserError as exc:
        return _detail(user_id, 422, errors={"role": exc.message})
    if waiting:
        flash(f"The grant of {role} waits for a second admin's approval.", "ok")
    else:
        flash(f"Role {role} granted; the user must sign in again.", "ok")
    return _back(user_id)


@bp.post("/<user_id>/roles/<role>/revoke")
@permission(MANAGE)
def revoke(user_id: str, role: str) -> Response | WerkzeugResponse:
    """Take a role away (the user keeps at least one); their sessions are revoked."""
    return _change(
        user_id,
        f"Role {role} revoked; the user must sign in again.",
        lambda s: users.revoke_role(s, user_id, role, revoked_by=current_user.id, now=_now()),
    )


# --- API tokens ----------------------------------------------------------------------------------


@bp.post("/<user_id>/tokens")
@permission(MANAGE)
def create_token(user_id: str) -> Response:
    """A new API token for the user: the plaintext is on this response only."""
    try:
        with _rt().db.session() as s:
            _row, plaintext = users.create_token(s, user_id, now=_now(), by=current_user.id)
    except UserError as exc:
        return _detail(user_id, 422, errors={"token": exc.message})
    return _detail(
        user_id, 201, new_token=plaintext, message="Token created. Copy it now: it is shown only once."
    )


@bp.post("/<user_id>/tokens/<token_id>/revoke")
@permission(MANAGE)
def revoke_token(user_id: str, token_id: str) -> Response | WerkzeugResponse:
    """Revoke one of the user's tokens."""
    with _rt().db.session() as s:
        if staff_admin.token_of(s, user_id, token_id) is None:
            abort(404)
        users.revoke_token(s, token_id, now=_now(), by=current_user.id)
    flash("Token revoked.", "ok")
    return _back(user_id)


# --- four-eyes on admin grants -------------------------------------------------------------------


def _request_user(request_id: str) -> str:
    with _rt().db.session() as s:
        row = s.get(RoleGrantRequest, request_id)
        if row is None:
            abort(404)
        return str(row.user_id)


@bp.post("/requests/<request_id>/approve")
@permission(MANAGE)
def approve(request_id: str) -> Response | WerkzeugResponse:
    """A second admin approves an admin grant with a fresh authenticator code."""
    user_id = _request_user(request_id)
    field = f"code-{request_id}"
    try:
        with _rt().db.session() as s:
            staff_admin.approve_request(
                s,
                request_id,
                approver_id=current_user.id,
                approver_roles=frozenset(_roles()),
                code=request.form.get("code", ""),
                now=_now(),
            )
    except FourEyesError as exc:
        return _detail(user_id, exc.status, errors={field: exc.message})
    except StepUpError as exc:
        return _detail(user_id, 422, errors={field: exc.message})
    except UserError as exc:
        return _detail(user_id, 422, errors={field: exc.message})
    flash("Admin grant approved; the user must sign in again.", "ok")
    return _back(user_id)


@bp.post("/requests/<request_id>/reject")
@permission(MANAGE)
def reject(request_id: str) -> Response | WerkzeugResponse:
    """Reject (or withdraw) a pending admin grant."""
    user_id = _request_user(request_id)
    try:
        with _rt().db.session() as s:
            staff_admin.reject_request(
                s, request_id, by=current_user.id, now=_now(), note=request.form.get("note", "")
            )
    except FourEyesError as exc:
        return _detail(user_id, exc.status, errors={f"code-{request_id}": exc.message})
    flash("Admin grant rejected.", "ok")
    return _back(user_id)
