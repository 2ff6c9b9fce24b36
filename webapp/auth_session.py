"""Who is signed in: the Flask-Login loaders, session rules and the four-eyes step-up check.

Browser sessions (CONSOLE.md §1.4). Flask's session is a signed cookie, so "revoking a session on the
server" means refusing cookies the server no longer honours:

- at sign-in the session is cleared and refilled: a fresh random ``sid``, the user's current
  ``session_version`` (``sv``), the sign-in instant (``auth_at``) and the last activity (``seen_at``);
- the user loader refuses a cookie whose ``sv`` differs from the user's row (signing out, disabling,
  a password or role change all bump the row: every copy of an old cookie, replayed or not, is
  dead), a disabled user, more than 15 minutes idle or more than 8 hours since sign-in (the settings
  ``console.session_idle_timeout`` and ``console.session_absolute_timeout``);
- the JSON API (``/api/``) accepts only ``Authorization: Bearer <token>`` (its blueprint is exempt
  from CSRF, so cookies are ignored there); tokens come from ``marketplace users token``.

Views that browsers poll on their own (htmx change markers) are marked ``@background`` so that they
do not keep an unattended session alive. Views use ``current_user`` (a ``SessionUser``: ``id``,
``email``, ``display_name``, ``roles``, ``has_totp``, ``acting_role(allowed)``) and
``require_step_up(current_user, code)`` before approving a four-eyes request.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from flask import Request, flash, g, jsonify, make_response, redirect, request, session, url_for
from flask_login import UserMixin, login_user, logout_user

from webapp.extensions import login_manager
from webapp.models import StaffUser
from webapp.policy import ROLES
from webapp.services import users
from webapp.services.users import StepUpError

__all__ = [
    "SessionUser",
    "StepUpError",
    "background",
    "end_session",
    "load_user",
    "load_user_from_request",
    "require_step_up",
    "safe_next",
    "start_session",
    "utcnow",
]

F = TypeVar("F", bound=Callable[..., object])

SID, SV, AUTH_AT, SEEN_AT = "sid", "sv", "auth_at", "seen_at"
"""Keys this module keeps in the session cookie (next to Flask-Login's ``_user_id``/``_id``/``_fresh``)."""

REFUSALS = {
    "idle": "Your session was idle for more than {idle}; please sign in again.",
    "absolute": "Your session reached its limit of {absolute}; please sign in again.",
    "revoked": "Your session has ended; please sign in again.",
}


def utcnow() -> datetime:
    """The current instant (timezone-aware UTC)."""
    return datetime.now(UTC)


@dataclass(frozen=True, eq=False)
class SessionUser(UserMixin):  # type: ignore[misc]
    """The signed-in member of staff as views see it (a snapshot; never an ORM row)."""

    id: str
    email: str
    display_name: str
    roles: frozenset[str]
    has_totp: bool
    session_version: int
    via_token: bool = False

    @classmethod
    def of(cls, user: StaffUser, *, via_token: bool = False) -> SessionUser:
        """Snapshot of a user row."""
        return cls(
            id=user.id,
            email=user.email,
            display_name=user.display_name,
            roles=user.roles,
            has_totp=bool(user.totp_secret),
            session_version=user.session_version,
            via_token=via_token,
        )

    @property
    def role_list(self) -> list[str]:
        """The roles in the canonical order of ``webapp.policy.ROLES``."""
        return [r for r in ROLES if r in self.roles]

    def acting_role(self, allowed: Iterable[str]) -> str | None:
        """The first of the user's roles that is in ``allowed`` (for ``Actor(user.id, role)``), or None."""
        wanted = set(allowed)
        return next((r for r in self.role_list if r in wanted), None)

    def get_id(self) -> str:
        return self.id


def _epoch(moment: datetime) -> float:
    return moment.timestamp()


def start_session(user: StaffUser, *, now: datetime | None = None) -> SessionUser:
    """Sign ``user`` in: clear whatever the session held (fixation), store a fresh id and version."""
    moment = now or utcnow()
    session.clear()
    session[SID] = secrets.token_urlsafe(32)
    session[SV] = user.session_version
    session[AUTH_AT] = session[SEEN_AT] = _epoch(moment)
    signed_in = SessionUser.of(user)
    login_user(signed_in, fresh=True)
    return signed_in


def end_session(user_id: str | None) -> None:
    """Sign out: revoke every session of the user on the server, then forget this cookie's contents."""
    if user_id:
        from webapp import runtime

        with runtime().db.session() as s:
            users.revoke_sessions(s, user_id, now=utcnow())
    logout_user()
    session.clear()


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _refuse(reason: str) -> None:
    g.auth_refused = reason
    for key in (SID, SV, AUTH_AT, SEEN_AT, "_user_id", "_fresh", "_id"):
        session.pop(key, None)


def load_user(user_id: str) -> SessionUser | None:
    """The user of a session cookie, or None when the session is stale, revoked or timed out."""
    if request.path.startswith("/api/"):
        return None  # the API is bearer-only: its blueprint is exempt from CSRF
    from webapp import runtime

    now = utcnow()
    version, auth_at, seen_at = session.get(SV), session.get(AUTH_AT), session.get(SEEN_AT)
    if not isinstance(version, int) or not _is_number(auth_at) or not _is_number(seen_at):
        _refuse("revoked")
        return None
    assert auth_at is not None and seen_at is not None
    idle, absolute = users.session_timeouts(runtime().settings)
    if now.timestamp() - seen_at > idle.total_seconds():
        _refuse("idle")
        return None
    if now.timestamp() - auth_at > absolute.total_seconds():
        _refuse("absolute")
        return None
    with runtime().db.session() as s:
        row = s.get(StaffUser, user_id)
        if row is None or not row.active or row.session_version != version:
            _refuse("revoked")
            return None
        user = SessionUser.of(row)
    if not _is_background():
        session[SEEN_AT] = now.timestamp()
    return user


def background(view: F) -> F:
    """Mark a view that browsers call on their own (htmx polling of a change marker): calling it does
    not count as activity, so a console left open still times out after 15 idle minutes."""
    view.background = True  # type: ignore[attr-defined]
    return view


def _is_background() -> bool:
    from flask import current_app

    view = current_app.view_functions.get(request.endpoint or "")
    return bool(getattr(view, "background", False))


def load_user_from_request(req: Request) -> SessionUser | None:
    """The user of an ``Authorization: Bearer <token>`` header on an ``/api/`` request, else None."""
    if not req.path.startswith("/api/"):
        return None
    scheme, _, token = req.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    from webapp import runtime

    with runtime().db.session() as s:
        row = users.user_for_token(s, token.strip(), now=utcnow())
        return SessionUser.of(row, via_token=True) if row is not None else None


def safe_next(target: str | None) -> str | None:
    """A same-site path to return to after sign-in, or None (no open redirects)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return None
    if target.startswith(("/auth/sign-", "/auth/verify", "/auth/enrol", "/static/")):
        return None
    return target.rstrip("?") or None


def _spoken(span: timedelta) -> str:
    """A duration as people say it: "15 minutes", "8 hours", "1 day 12 hours"."""
    seconds, parts = int(span.total_seconds()), []
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count} {unit}{'' if count == 1 else 's'}")
    return " ".join(parts) or "0 seconds"


def unauthorized() -> Any:
    """401 JSON for the API; otherwise send the browser to the sign-in page (htmx via HX-Redirect)."""
    if request.path.startswith("/api/"):
        message = "sign-in required: send Authorization: Bearer <token> (marketplace users token)"
        return jsonify({"error": {"code": "unauthorized", "message": message}}), 401
    reason = g.get("auth_refused")
    if reason in REFUSALS:
        from webapp import runtime

        idle, absolute = users.session_timeouts(runtime().settings)
        flash(REFUSALS[reason].format(idle=_spoken(idle), absolute=_spoken(absolute)), "error")
    back = safe_next(request.full_path) if request.method == "GET" else None
    target = url_for("auth.sign_in", next=back) if back else url_for("auth.sign_in")
    if request.headers.get("HX-Request") == "true":
        response = make_response("", 401)
        response.headers["HX-Redirect"] = target
        return response
    return redirect(target)


def require_step_up(user: SessionUser | StaffUser | str, code: str, *, now: datetime | None = None) -> None:
    """Raise StepUpError unless ``code`` is a fresh TOTP code of ``user`` (call before approving).

    A user without a second factor gets ``"enrol a second factor to approve"``.
    """
    from webapp import runtime

    user_id = user if isinstance(user, str) else user.id
    with runtime().db.session() as s:
        users.verify_step_up(s, user_id, code, now=now or utcnow())


login_manager.user_loader(load_user)
login_manager.request_loader(load_user_from_request)
login_manager.unauthorized_handler(unauthorized)
