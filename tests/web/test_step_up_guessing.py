"""Wrong step-up codes count like failed sign-ins: the sixth locks the account and signs it out everywhere.

A four-eyes approval asks for a fresh TOTP code. The request's transaction is rolled back when the
code is wrong, so the failure is counted after the request in a transaction of its own; without the
count a stolen session could try codes until one fits.
"""

from __future__ import annotations

from collections.abc import Callable

import pyotp
from sqlalchemy import select

from tests.web import test_actions
from tests.web.conftest import MadeUser, sign_in
from tests.web.test_actions import Staff, _decide, _request_refund
from webapp.db import Database
from webapp.models import Approval, AuditEntry, StaffUser
from webapp.services.users import LOCKOUT_THRESHOLD

staff = test_actions.staff  # the signed-in staff factory fixture


def _wrong(user: MadeUser) -> str:
    """A six-digit code that is not the current one (nor the previous or next step's)."""
    totp = pyotp.TOTP(user.totp_secret or "")
    valid = {totp.now()}
    return next(c for c in ("000000", "111111", "222222", "333333") if c not in valid)


def test_wrong_step_up_codes_lock_the_approver_out_and_end_their_sessions(
    web_db: Database, staff: Callable[..., Staff]
) -> None:
    finance, manager = staff("finance"), staff("manager")
    _, approval_id = _request_refund(web_db, finance)
    for attempt in range(1, LOCKOUT_THRESHOLD):
        refused = _decide(manager, approval_id, "approve", code=_wrong(manager.user))
        assert refused.status_code == 403, attempt
        with web_db.session() as s:
            user = s.get(StaffUser, manager.user.id)
            assert user is not None and user.failed_logins == attempt and user.locked_until is None
    # Still signed in after five; the sixth wrong code locks the account and signs it out everywhere.
    assert manager.client.get("/approvals").status_code == 200
    assert _decide(manager, approval_id, "approve", code=_wrong(manager.user)).status_code == 403
    with web_db.session() as s:
        user = s.get(StaffUser, manager.user.id)
        assert user is not None and user.locked_until is not None
        approval = s.get(Approval, approval_id)
        assert approval is not None and approval.status == "pending"  # nothing was decided
        actions = list(s.scalars(select(AuditEntry.action).where(AuditEntry.tenant_id == "platform")))
        assert actions.count("staff.step_up_failed") == LOCKOUT_THRESHOLD and "staff.locked" in actions
    after = manager.client.get("/approvals")
    assert after.status_code == 302 and "/auth/sign-in" in after.location
    # Locked: even the right password (and code) is refused until the lock ends.
    again = sign_in(manager.client.application.test_client(), manager.user.email, manager.user.password)
    assert again.status_code == 401


def test_a_right_code_after_a_few_wrong_ones_still_approves(
    web_db: Database, staff: Callable[..., Staff]
) -> None:
    finance, manager = staff("finance"), staff("manager")
    _, approval_id = _request_refund(web_db, finance)
    for _ in range(2):
        assert _decide(manager, approval_id, "approve", code=_wrong(manager.user)).status_code == 403
    done = _decide(manager, approval_id, "approve", code=manager.user.code())
    assert done.status_code == 200, done.get_data(as_text=True)[:500]
    with web_db.session() as s:
        approval = s.get(Approval, approval_id)
        assert approval is not None and approval.status == "approved"
