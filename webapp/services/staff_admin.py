"""Staff-user administration on top of ``webapp.services.users`` (CONSOLE.md §1.3–§1.4).

What ``users`` does not cover:

- the admins' list of staff users with search, lockout state, second factor and last sign-in (read
  from the ``staff.signed_in`` entries of the platform audit chain; no column records it);
- four-eyes on a grant of the ``admin`` role ("Only a second ADM may approve a role grant to an
  ADM"): the grant becomes a pending ``RoleGrantRequest``; a *different* admin approves it with a
  fresh TOTP code (``users.verify_step_up``), and only then is ``users.grant_role`` called, with the
  approver as ``granted_by``. Requests expire after ``GRANT_REQUEST_TTL``. The requester, and the
  user the role is for, can never approve it;
- the API tokens of one user, for listing.

Every change is appended to the ``platform`` audit chain with user ids only (no emails).
The caller owns the transaction.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session, selectinload

from webapp import audit
from webapp.models import ApiToken, AuditEntry, RoleGrantRequest, StaffUser
from webapp.services import users
from webapp.services.users import StepUpError, UserError
from webapp.validation import InputError, clean_text

FOUR_EYES_ROLES: Final = frozenset({"admin"})
"""Roles whose grant needs a second admin's approval (CONSOLE.md §1.3)."""
APPROVER_ROLE: Final = "admin"
GRANT_REQUEST_TTL: Final = timedelta(hours=24)
"""How long a pending role grant waits for the second admin (as four-eyes requests, CONSOLE.md §1.3)."""
PENDING: Final = "pending"
MAX_SEARCH: Final = 100
LIST_LIMIT: Final = 500


class FourEyesError(Exception):
    """The person may not decide this request (they made it, it is for them, or it is closed): 403/409."""

    def __init__(self, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class StaffRow:
    """One line of the staff list."""

    user: StaffUser
    last_sign_in: datetime | None

    def locked(self, now: datetime) -> bool:
        """True while a lockout lasts."""
        return users.is_locked(self.user, now)


def _audit(session: Session, action: str, actor: str, now: datetime, **payload: object) -> None:
    audit.append(
        session,
        users.AUDIT_CHAIN,
        actor=actor,
        role=users.AUDIT_ROLE,
        action=f"staff.{action}",
        occurred_at=now,
        payload=payload,
    )


def last_sign_ins(session: Session, user_ids: list[str]) -> dict[str, datetime]:
    """The latest recorded sign-in of each user (from the platform audit chain)."""
    if not user_ids:
        return {}
    rows = session.execute(
        select(AuditEntry.actor, func.max(AuditEntry.occurred_at))
        .where(
            AuditEntry.tenant_id == users.AUDIT_CHAIN,
            AuditEntry.action == "staff.signed_in",
            AuditEntry.actor.in_(user_ids),
        )
        .group_by(AuditEntry.actor)
    ).all()
    return {str(actor): at for actor, at in rows}


def list_staff(session: Session, query: str = "") -> list[StaffRow]:
    """Staff users ordered by email; ``query`` matches a part of the email or display name."""
    stmt = select(StaffUser).options(selectinload(StaffUser.grants)).order_by(StaffUser.email)
    needle = query.strip().lower()[:MAX_SEARCH]
    if needle:
        pattern = "%" + needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        stmt = stmt.where(
            or_(
                func.lower(StaffUser.email).like(pattern, escape="\\"),
                func.lower(StaffUser.display_name).like(pattern, escape="\\"),
            )
        )
    found = list(session.scalars(stmt.limit(LIST_LIMIT)))
    seen = last_sign_ins(session, [u.id for u in found])
    return [StaffRow(u, seen.get(u.id)) for u in found]


def get_staff(session: Session, user_id: str) -> StaffRow | None:
    """One user with their last sign-in, or None."""
    user = session.get(StaffUser, user_id)
    if user is None:
        return None
    return StaffRow(user, last_sign_ins(session, [user.id]).get(user.id))


def tokens_of(session: Session, user_id: str) -> list[ApiToken]:
    """The user's API tokens, newest first (hashes only; the plaintext was shown once)."""
    return list(
        session.scalars(
            select(ApiToken).where(ApiToken.user_id == user_id).order_by(ApiToken.created_at.desc())
        )
    )


def token_of(session: Session, user_id: str, token_id: str) -> ApiToken | None:
    """The token when it belongs to ``user_id``."""
    row = session.get(ApiToken, token_id)
    return row if row is not None and row.user_id == user_id else None


# --- role grants with four-eyes ----------------------------------------------------------------------


def expire_due(session: Session, now: datetime) -> int:
    """Mark pending requests past their expiry as expired; returns the count."""
    result = session.execute(
        update(RoleGrantRequest)
        .where(RoleGrantRequest.status == PENDING, RoleGrantRequest.expires_at <= now)
        .values(status="expired", decided_at=now, decision_note="expired: no second admin approved it")
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def pending_requests(session: Session, now: datetime, user_id: str | None = None) -> list[RoleGrantRequest]:
    """Open requests (all, or those for one user), oldest first."""
    expire_due(session, now)
    stmt = select(RoleGrantRequest).where(RoleGrantRequest.status == PENDING)
    if user_id is not None:
        stmt = stmt.where(RoleGrantRequest.user_id == user_id)
    return list(
        session.scalars(stmt.order_by(RoleGrantRequest.created_at).execution_options(populate_existing=True))
    )


def request_or_grant(
    session: Session, user_id: str, role: str, *, by: str, now: datetime
) -> RoleGrantRequest | StaffUser:
    """Grant ``role`` now, or (for ``admin``) file a request a second admin must approve.

    Both refuse a self-grant, an unknown role and a separation-of-duties conflict (UserError, field
    ``role``), checked when asking and again when approving.
    """
    if by == user_id:
        raise UserError("nobody may grant a role to themselves", "role")
    user = session.get(StaffUser, user_id)
    if user is None:
        raise UserError("no such user", "role")
    if role in user.roles:
        raise UserError(f"the user already holds {role}", "role")
    try:
        users.check_roles(user.roles | {role})
    except UserError as exc:
        raise UserError(exc.message, "role") from exc
    if role not in FOUR_EYES_ROLES:
        return users.grant_role(session, user_id, role, granted_by=by, now=now)
    if not user.active:
        raise UserError("enable the account before granting it admin", "role")
    if any(r.role == role for r in pending_requests(session, now, user_id)):
        raise UserError(f"a grant of {role} to this user already waits for approval", "role")
    request = RoleGrantRequest(
        id=f"rgr-{secrets.token_hex(8)}",
        user_id=user_id,
        role=role,
        requested_by=by,
        status=PENDING,
        created_at=now,
        expires_at=now + GRANT_REQUEST_TTL,
    )
    session.add(request)
    session.flush()
    _audit(session, "role_grant_requested", by, now, user_id=user_id, role=role, request_id=request.id)
    return request


def why_not_approver(
    request: RoleGrantRequest, approver_id: str, approver_roles: frozenset[str]
) -> str | None:
    """Why this person may not approve the request (None when they may)."""
    if request.requested_by == approver_id:
        return "you asked for this grant: a second admin must approve it (four-eyes)"
    if request.user_id == approver_id:
        return "nobody may approve a role grant to themselves"
    if APPROVER_ROLE not in approver_roles:
        return "only a second admin may approve a grant of admin"
    return None


def _locked_request(session: Session, request_id: str, now: datetime) -> RoleGrantRequest:
    expire_due(session, now)
    row = session.execute(
        select(RoleGrantRequest)
        .where(RoleGrantRequest.id == request_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if row is None:
        raise FourEyesError("no such request", 404)
    if row.status != PENDING:
        raise FourEyesError(f"this request is already {row.status}", 409)
    return row


def approve_request(
    session: Session,
    request_id: str,
    *,
    approver_id: str,
    approver_roles: frozenset[str],
    code: str,
    now: datetime,
) -> RoleGrantRequest:
    """Approve a pending grant (a different admin, with a fresh TOTP code) and grant the role.

    FourEyesError (403) for the requester or the grantee, StepUpError for a missing or wrong code,
    UserError when the grant would now break separation of duties (the request stays pending).
    """
    row = _locked_request(session, request_id, now)
    reason = why_not_approver(row, approver_id, approver_roles)
    if reason:
        raise FourEyesError(reason)
    users.verify_step_up(session, approver_id, code, now=now)
    users.grant_role(session, row.user_id, row.role, granted_by=approver_id, now=now)
    row.status = "approved"
    row.decided_by = approver_id
    row.decided_at = now
    _audit(
        session,
        "role_grant_approved",
        approver_id,
        now,
        user_id=row.user_id,
        role=row.role,
        request_id=row.id,
        requested_by=row.requested_by,
    )
    return row


def reject_request(
    session: Session, request_id: str, *, by: str, now: datetime, note: str = ""
) -> RoleGrantRequest:
    """Reject (or, for the requester, withdraw) a pending grant; no step-up needed to say no.

    The note is checked like every free-text input (length, control characters, no card number):
    FourEyesError 422 with the reason, and nothing is decided.
    """
    try:
        note = clean_text(note, max_length=2000, label="the note")
    except InputError as exc:
        raise FourEyesError(str(exc), status=422) from None
    row = _locked_request(session, request_id, now)
    row.status = "rejected"
    row.decided_by = by
    row.decided_at = now
    row.decision_note = note or None
    _audit(session, "role_grant_rejected", by, now, user_id=row.user_id, role=row.role, request_id=row.id)
    return row


__all__ = [
    "APPROVER_ROLE",
    "FOUR_EYES_ROLES",
    "GRANT_REQUEST_TTL",
    "FourEyesError",
    "StaffRow",
    "StepUpError",
    "UserError",
    "approve_request",
    "expire_due",
    "get_staff",
    "list_staff",
    "pending_requests",
    "reject_request",
    "request_or_grant",
    "tokens_of",
    "why_not_approver",
]
