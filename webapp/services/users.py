"""Staff accounts: creation, role grants (separation of duties), passwords, lockout, TOTP, API tokens.

Rules from CONSOLE.md §1.3–§1.4, each a named constant below so a reviewer finds them in one place:

- passwords are hashed with Argon2id (``argon2-cffi``); there are no default accounts, a new user gets
  the password typed on standard input or a generated one printed once;
- 6 failed sign-ins lock the account for 30 minutes (counted on the user row); every refusal uses one
  message, so the page never says whether an email exists;
- ``admin`` and ``compliance`` need a TOTP second factor; four-eyes approvals need a fresh TOTP code
  (step-up); wrong step-up codes count like failed sign-ins, and the one that reaches the threshold
  locks the account and signs the user out everywhere (a stolen session cannot guess codes for long);
  a TOTP code is accepted once (RFC 6238 §5.2): the last accepted time-step is kept on the
  user row and a code of that step or an earlier one is refused, at sign-in, enrolment and step-up;
- a password older than the ``console.password_max_age`` setting (90 days), or one somebody else set
  (``password_must_change``: a new account's generated password, a reset), must be changed right
  after signing in; a new password must differ from the current one;
- no user holds ``admin`` with ``compliance`` or ``auditor`` (``webapp.policy.role_conflicts``), and
  nobody grants a role to themselves;
- every change that must sign a user out everywhere (password, roles, disabling, signing out) bumps
  ``session_version``; the session loader refuses a cookie carrying an older version;
- API tokens are random, shown once, stored as SHA-256 and expire after 90 days;
- every account event (user created, role granted or revoked, password changed, disabled, locked,
  unlocked, signed in or out, second factor enrolled, token created or revoked) is appended to the
  ``platform`` audit chain, with user ids only (no emails: payloads never carry PII).

The caller owns the transaction (``with runtime().db.session() as s:``).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from governors.settings import parse_duration
from webapp import audit
from webapp.models import ApiToken, RoleGrant, StaffUser
from webapp.policy import ROLES, role_conflicts

MIN_PASSWORD_LENGTH = 12
"""CONSOLE.md §1.4 asks for ≥ 8 characters (PCI req 8); we require 12, which NIST 800-63B prefers."""
MAX_PASSWORD_LENGTH = 256
MIN_DISTINCT_CHARACTERS = 5
"""``aaaaaaaaaaaa`` or ``abababababab`` is long but not a password."""
COMMON_PASSWORD_WORDS = frozenset(
    {
        "",
        "password",
        "passwort",
        "passw",
        "changeme",
        "welcome",
        "letmein",
        "qwerty",
        "qwertyuiop",
        "asdfgh",
        "admin",
        "administrator",
        "root",
        "secret",
        "default",
        "marketplace",
        "console",
        "iloveyou",
        "trustno",
        "monkey",
        "dragon",
        "master",
        "abc",
        "abcdef",
        "test",
        "guest",
    }
)
"""Default or most-used passwords: a password that is one of these once digits and symbols are
stripped is refused (``Password123!``, ``changeme2026``, ``123456789012``); no default accounts (§1.4)."""
LOCKOUT_THRESHOLD = 6
"""Failed sign-ins that lock an account (CONSOLE.md §1.4: PCI 8.2.3)."""
LOCKOUT_DURATION = timedelta(minutes=30)
"""Automatic lockout release (CONSOLE.md §1.4)."""
IDLE_TIMEOUT = timedelta(minutes=15)
"""Default session idle timeout (CONSOLE.md §1.4); the setting ``console.session_idle_timeout`` rules."""
ABSOLUTE_TIMEOUT = timedelta(hours=8)
"""Default session absolute lifetime (CONSOLE.md §1.4); the setting ``console.session_absolute_timeout``."""
PASSWORD_MAX_AGE_SETTING = "console.password_max_age"
"""Setting: passwords older than this must be changed at sign-in (CONSOLE.md §1.4: 90 days; "0s" = never)."""
IDLE_TIMEOUT_SETTING = "console.session_idle_timeout"
ABSOLUTE_TIMEOUT_SETTING = "console.session_absolute_timeout"
API_TOKEN_TTL = timedelta(days=90)
"""API key rotation period (CONSOLE.md §1.4: SOC2 CC6.1)."""
TOTP_REQUIRED_ROLES = frozenset({"admin", "compliance"})
"""Roles that cannot use the console without a second factor (CONSOLE.md §1.4, issue 4), by default."""
TOTP_REQUIRED_SETTING = "console.totp_required_roles"
"""Setting: the roles that must enrol (§1.4 proposes every console role, as HIPAA asks for 2FA)."""
TOTP_ISSUER = "Marketplace Console"
SIGN_IN_REFUSED = (
    "Sign-in failed: the email or password is wrong, or the account is locked"
    f" ({LOCKOUT_THRESHOLD} failed attempts lock it for {LOCKOUT_DURATION.seconds // 60} minutes)."
)
"""The one message for every refused sign-in (unknown email, wrong password, locked, disabled)."""
STEP_UP_NOT_ENROLLED = "enrol a second factor to approve"
STEP_UP_WRONG_CODE = "the authenticator code is wrong or expired"
TOTP_REUSED = "this code was already used; wait for the next code from your app"
"""A valid code of a time-step already accepted (codes are single-use)."""
TOTP_DRIFT_STEPS = 1
"""Codes of one 30-second step before or after the current one are accepted (clock drift)."""
PASSWORD_REUSED = "choose a password different from the current one"
AUDIT_CHAIN = "platform"
"""Staff accounts are not a tenant's: their events go to the platform's audit chain."""
AUDIT_ROLE = "account"
"""The ``role`` column of account audit entries (the actor is a user id, ``cli`` or ``system``)."""

_LEET = str.maketrans("@4310$5", "aaeioss")
"""``P@ssw0rd`` is ``password``."""
_EMAIL = re.compile(r"^[^@\s<>\"']{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,}$")
_hasher = PasswordHasher()
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))
"""Verified against when the email is unknown, so a refusal takes as long either way."""


def _audit(session: Session, action: str, actor: str, now: datetime, **payload: object) -> None:
    audit.append(
        session,
        AUDIT_CHAIN,
        actor=actor,
        role=AUDIT_ROLE,
        action=f"staff.{action}",
        occurred_at=now,
        payload=payload,
    )


class UserError(ValueError):
    """Bad input for an account operation; ``field`` names the form field the message belongs to."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class StepUpError(Exception):
    """A four-eyes approval was attempted without a valid fresh second-factor code."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class SignInResult:
    """Outcome of a password check: the user on success, else ``message`` (always SIGN_IN_REFUSED)."""

    user: StaffUser | None
    message: str = ""
    locked_now: bool = False

    @property
    def ok(self) -> bool:
        """True when the password was right and the account may sign in."""
        return self.user is not None


# --- passwords -------------------------------------------------------------------------------------


def normalize_email(email: str) -> str:
    """Emails compare case-insensitively: stored lower-case and trimmed."""
    return email.strip().lower()


def check_email(email: str) -> str:
    """The normalized email, or UserError for something that is not an address."""
    value = normalize_email(email)
    if not _EMAIL.match(value):
        raise UserError("enter a valid email address", "email")
    return value


def check_password(password: str, *, email: str | None = None) -> None:
    """UserError unless the password meets the policy (CONSOLE.md §1.4 length; NIST 800-63B blocklist).

    Besides the length, a password may not contain the user's email name, be mostly one repeated
    character, or be a well-known default (``password``, ``changeme``…) padded with digits and symbols.
    """
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"the password needs at least {MIN_PASSWORD_LENGTH} characters", "password")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise UserError(f"the password may have at most {MAX_PASSWORD_LENGTH} characters", "password")
    if not password.strip():
        raise UserError("the password cannot be blank", "password")
    lowered = password.lower()
    name = normalize_email(email or "").split("@", 1)[0]
    if len(name) >= 3 and name in lowered:
        raise UserError("the password may not contain your email name", "password")
    if len(set(lowered)) < MIN_DISTINCT_CHARACTERS:
        raise UserError(
            f"the password needs at least {MIN_DISTINCT_CHARACTERS} different characters", "password"
        )
    words = {re.sub(r"[^a-z]", "", text) for text in (lowered, lowered.translate(_LEET))}
    if words & COMMON_PASSWORD_WORDS:
        raise UserError("this is a well-known default password; choose a passphrase of your own", "password")


def hash_password(password: str) -> str:
    """Argon2id hash with the library's current parameters."""
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """True when ``password`` matches; False for a mismatch or a corrupt hash."""
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def generate_password() -> str:
    """A strong random password (about 144 bits), printed once to whoever created the account."""
    return secrets.token_urlsafe(18)


# --- users and roles -------------------------------------------------------------------------------


def find_user(session: Session, email: str) -> StaffUser | None:
    """The user with that email (case-insensitive), or None."""
    return session.scalar(select(StaffUser).where(func.lower(StaffUser.email) == normalize_email(email)))


def staff_emails(session: Session, user_ids: Iterable[str | None]) -> dict[str, str]:
    """Staff user id → email, for showing who asked and who decided."""
    ids = sorted({u for u in user_ids if u})
    if not ids:
        return {}
    rows = session.execute(select(StaffUser.id, StaffUser.email).where(StaffUser.id.in_(ids))).all()
    return {row.id: row.email for row in rows}


def check_roles(roles: Iterable[str]) -> frozenset[str]:
    """The roles as a set; UserError for an unknown role, none at all, or a separation-of-duties conflict."""
    held = frozenset(roles)
    unknown = sorted(held - set(ROLES))
    if unknown:
        raise UserError(f"unknown role {', '.join(unknown)}; roles are {', '.join(ROLES)}", "roles")
    if not held:
        raise UserError("give at least one role", "roles")
    conflicts = role_conflicts(held)
    if conflicts:
        raise UserError(
            f"separation of duties: nobody may hold {'; '.join(conflicts)} together (CONSOLE.md §1.3)",
            "roles",
        )
    return held


def create_user(
    session: Session,
    email: str,
    roles: Iterable[str],
    password: str,
    *,
    granted_by: str,
    now: datetime,
    display_name: str | None = None,
    one_time_password: bool = False,
) -> StaffUser:
    """Create an active staff user with ``roles``; UserError on bad input or an existing email.

    With ``one_time_password`` (someone else will hand the password over), the user must choose their
    own right after the first sign-in.
    """
    address = check_email(email)
    held = check_roles(roles)
    check_password(password, email=address)
    if find_user(session, address) is not None:
        raise UserError("a user with this email already exists", "email")
    user = StaffUser(
        id=f"u-{secrets.token_hex(8)}",
        email=address,
        display_name=(display_name or address.split("@", 1)[0])[:200],
        password_hash=hash_password(password),
        active=True,
        failed_logins=0,
        locked_until=None,
        totp_secret=None,
        session_version=1,
        password_changed_at=now,
        password_must_change=one_time_password,
        created_at=now,
    )
    if granted_by in (user.id, address):
        raise UserError("nobody may grant a role to themselves", "roles")
    user.grants = [RoleGrant(role=r, granted_by=granted_by, granted_at=now) for r in sorted(held)]
    session.add(user)
    session.flush()
    _audit(session, "user_created", granted_by, now, user_id=user.id, roles=sorted(held))
    return user


def _get(session: Session, user_id: str) -> StaffUser:
    user = session.get(StaffUser, user_id, with_for_update=True)
    if user is None:
        raise UserError("no such user", "user")
    return user


def revoke_sessions(session: Session, user_id: str, *, now: datetime) -> None:
    """Sign the user out everywhere: every cookie carrying the old ``session_version`` is refused."""
    _get(session, user_id).session_version += 1
    _audit(session, "signed_out", user_id, now, user_id=user_id)


def grant_role(session: Session, user_id: str, role: str, *, granted_by: str, now: datetime) -> StaffUser:
    """Grant ``role``; refuses self-grants, unknown roles and separation-of-duties conflicts.

    The user must sign in again afterwards (their sessions are revoked).
    """
    if granted_by == user_id:
        raise UserError("nobody may grant a role to themselves", "roles")
    user = _get(session, user_id)
    if role in user.roles:
        return user
    check_roles(user.roles | {role})
    user.grants.append(RoleGrant(role=role, granted_by=granted_by, granted_at=now))
    user.session_version += 1
    session.flush()
    _audit(session, "role_granted", granted_by, now, user_id=user_id, role=role)
    return user


def revoke_role(session: Session, user_id: str, role: str, *, revoked_by: str, now: datetime) -> StaffUser:
    """Take ``role`` away (the user must keep at least one role); their sessions are revoked."""
    user = _get(session, user_id)
    remaining = [g for g in user.grants if g.role != role]
    if len(remaining) == len(user.grants):
        return user
    if not remaining:
        raise UserError("a user keeps at least one role; disable the account instead", "roles")
    user.grants = remaining
    user.session_version += 1
    session.flush()
    _audit(session, "role_revoked", revoked_by, now, user_id=user_id, role=role)
    return user


def set_password(
    session: Session, user_id: str, password: str, *, now: datetime, by: str | None = None
) -> StaffUser:
    """Replace the password; every session of the user must sign in again.

    A password set ``by`` somebody else is for one sign-in: the user must then choose their own.
    """
    user = _get(session, user_id)
    check_password(password, email=user.email)
    user.password_hash = hash_password(password)
    user.password_changed_at = now
    user.password_must_change = by is not None and by != user_id
    user.session_version += 1
    _audit(session, "password_changed", by or user_id, now, user_id=user_id)
    return user


def change_password(session: Session, user_id: str, current: str, new: str, *, now: datetime) -> StaffUser:
    """Change one's own password after proving the current one."""
    user = _get(session, user_id)
    if not verify_password(user.password_hash, current):
        raise UserError("the current password is wrong", "current_password")
    if current == new:  # ``current`` was just verified against the stored hash
        raise UserError(PASSWORD_REUSED, "new_password")
    return set_password(session, user_id, new, now=now)


def password_max_age(settings: Mapping[str, Any]) -> timedelta | None:
    """The ``console.password_max_age`` setting (None when it is zero: passwords never expire)."""
    raw = settings.get(PASSWORD_MAX_AGE_SETTING, "90d")
    age = parse_duration(str(raw))
    return age if age > timedelta(0) else None


def password_expires_at(user: StaffUser, settings: Mapping[str, Any]) -> datetime | None:
    """When the user's password expires (CONSOLE.md §1.4: change every 90 days), or None if never.

    A one-time password (``password_must_change``) expired when it was set.
    """
    if user.password_must_change:
        return user.password_changed_at
    age = password_max_age(settings)
    return None if age is None else user.password_changed_at + age


def password_expired(user: StaffUser, settings: Mapping[str, Any], *, now: datetime) -> bool:
    """True when the password is older than the ``console.password_max_age`` setting."""
    expires = password_expires_at(user, settings)
    return expires is not None and expires <= now


def session_timeouts(settings: Mapping[str, Any]) -> tuple[timedelta, timedelta]:
    """(idle, absolute) session limits from the settings (CONSOLE.md §1.4: 15 minutes, 8 hours).

    A zero limit would sign everybody out on every request, so it means the §1.4 default instead.
    """
    idle = parse_duration(str(settings.get(IDLE_TIMEOUT_SETTING) or "0s"))
    absolute = parse_duration(str(settings.get(ABSOLUTE_TIMEOUT_SETTING) or "0s"))
    return (idle or IDLE_TIMEOUT, absolute or ABSOLUTE_TIMEOUT)


def set_active(
    session: Session, user_id: str, active: bool, *, by: str, now: datetime | None = None
) -> StaffUser:
    """Disable (revoking every session and token use) or re-enable a user; nobody disables themselves."""
    if by == user_id and not active:
        raise UserError("you cannot disable your own account", "user")
    user = _get(session, user_id)
    if user.active != active:
        user.active = active
        user.session_version += 1
        _audit(session, "enabled" if active else "disabled", by, now or datetime.now(UTC), user_id=user_id)
    return user


def unlock(session: Session, user_id: str, *, by: str, now: datetime) -> StaffUser:
    """Release a lockout early (an admin action, audited; CONSOLE.md §1.4)."""
    user = _get(session, user_id)
    user.failed_logins = 0
    user.locked_until = None
    _audit(session, "unlocked", by, now, user_id=user_id)
    return user


# --- sign-in ---------------------------------------------------------------------------------------


def is_locked(user: StaffUser, now: datetime) -> bool:
    """True while a lockout lasts."""
    return user.locked_until is not None and user.locked_until > now


def authenticate(session: Session, email: str, password: str, *, now: datetime) -> SignInResult:
    """Check a password, counting failures on the user row; the 6th failure locks for 30 minutes.

    While locked, even the right password is refused (and does not extend the lock). Unknown emails,
    disabled users, wrong passwords and locks all return the same message.
    """
    user = session.scalar(
        select(StaffUser).where(func.lower(StaffUser.email) == normalize_email(email)).with_for_update()
    )
    if user is None:
        verify_password(_DUMMY_HASH, password)
        return SignInResult(None, SIGN_IN_REFUSED)
    if is_locked(user, now):
        return SignInResult(None, SIGN_IN_REFUSED)
    if user.locked_until is not None:  # an expired lock: start counting afresh
        user.locked_until = None
        user.failed_logins = 0
    if not verify_password(user.password_hash, password):
        return SignInResult(None, SIGN_IN_REFUSED, locked_now=_count_failure(session, user, now))
    if not user.active:
        return SignInResult(None, SIGN_IN_REFUSED)
    user.failed_logins = 0
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    return SignInResult(user)


def _count_failure(session: Session, user: StaffUser, now: datetime) -> bool:
    """Count one failed sign-in; True when this failure locked the account (audited)."""
    user.failed_logins += 1
    if user.failed_logins >= LOCKOUT_THRESHOLD:
        user.locked_until = now + LOCKOUT_DURATION
        _audit(session, "locked", "system", now, user_id=user.id, until=user.locked_until.isoformat())
        return True
    return False


def record_sign_in(session: Session, user_id: str, *, method: str, now: datetime) -> None:
    """A completed sign-in (password, and the second factor when enrolled): reset failures, audit it."""
    _get(session, user_id).failed_logins = 0
    _audit(session, "signed_in", user_id, now, user_id=user_id, method=method)


def record_failed_factor(session: Session, user_id: str, *, now: datetime) -> bool:
    """A wrong TOTP code at sign-in counts like a wrong password (no brute-forcing the second factor)."""
    return _count_failure(session, _get(session, user_id), now)


def check_sign_in_code(session: Session, user_id: str, code: str, *, now: datetime) -> str | None:
    """Second step of sign-in: accept ``code`` once (None), else count a failure and return why not."""
    user = _get(session, user_id)
    refusal = accept_totp(user, code, now=now)
    if refusal is not None:
        _count_failure(session, user, now)
    return refusal


# --- second factor ---------------------------------------------------------------------------------


def totp_required(roles: Iterable[str], settings: Mapping[str, Any] | None = None) -> bool:
    """True when one of ``roles`` must use a second factor (the ``console.totp_required_roles`` setting)."""
    required = settings.get(TOTP_REQUIRED_SETTING) if settings is not None else None
    return bool(set(TOTP_REQUIRED_ROLES if required is None else required) & set(roles))


def new_totp_secret() -> str:
    """A fresh base32 TOTP secret (160 bits)."""
    return pyotp.random_base32(32)


def totp_uri(secret: str, email: str) -> str:
    """The ``otpauth://`` URI an authenticator app imports."""
    return pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=TOTP_ISSUER)


def totp_step(secret: str | None, code: str, *, now: datetime) -> int | None:
    """The time-step (the current one ±1 for clock drift) whose 6-digit code is ``code``, or None."""
    digits = (code or "").strip().replace(" ", "")
    if not secret or not re.fullmatch(r"\d{6}", digits):
        return None
    totp = pyotp.TOTP(secret)
    current = totp.timecode(now)
    for step in range(current - TOTP_DRIFT_STEPS, current + TOTP_DRIFT_STEPS + 1):
        if hmac.compare_digest(totp.generate_otp(step), digits):
            return step
    return None


def verify_totp(secret: str | None, code: str, *, now: datetime) -> bool:
    """True when ``code`` is a current code of ``secret``; does not consume it (use ``accept_totp``)."""
    return totp_step(secret, code, now=now) is not None


def accept_totp(user: StaffUser, code: str, *, now: datetime, secret: str | None = None) -> str | None:
    """Accept ``code`` of the user's (or the given) secret once: None, or the refusal message.

    The accepted step is recorded on the row; the caller holds the row lock (``FOR UPDATE``), so two
    requests racing with the same code cannot both pass.
    """
    step = totp_step(secret or user.totp_secret, code, now=now)
    if step is None:
        return STEP_UP_WRONG_CODE
    if user.totp_last_step is not None and step <= user.totp_last_step:
        return TOTP_REUSED
    user.totp_last_step = step
    return None


def enable_totp(session: Session, user_id: str, secret: str, code: str, *, now: datetime) -> StaffUser:
    """Turn the second factor on after the user proved their app produces codes for ``secret``."""
    user = _get(session, user_id)
    if user.totp_secret:
        raise UserError("a second factor is already enrolled", "code")
    refusal = accept_totp(user, code, now=now, secret=secret)
    if refusal is not None:
        raise UserError(refusal, "code")
    user.totp_secret = secret
    _audit(session, "totp_enrolled", user_id, now, user_id=user_id)
    return user


STEP_UP_FAILURES: ContextVar[list[str] | None] = ContextVar("step_up_failures", default=None)
"""Users whose step-up code was wrong in this request. The caller's transaction is rolled back when
the step-up fails, so the count cannot be written there: the web app opens the list at the start of a
request and records it afterwards in a transaction of its own (``record_step_up_failures``)."""


def verify_step_up(session: Session, user_id: str, code: str, *, now: datetime) -> None:
    """Raise StepUpError unless ``code`` is a valid, not yet used TOTP code of an active user with TOTP.

    Every step-up (four-eyes approvals, admin role grants, the API) comes here; accepting the code
    records its step, so the same code cannot approve a second request. A wrong code is noted in
    ``STEP_UP_FAILURES`` to be counted against the user once the request is over.
    """
    # populate_existing: a row the caller loaded earlier must not hide a step recorded since then.
    user = session.get(StaffUser, user_id, with_for_update=True, populate_existing=True)
    if user is None or not user.active:
        raise StepUpError("the approver's account is not active")
    if not user.totp_secret:
        raise StepUpError(STEP_UP_NOT_ENROLLED)
    refusal = accept_totp(user, code, now=now)
    if refusal is not None:
        noted = STEP_UP_FAILURES.get()
        if noted is not None:
            noted.append(user_id)
        raise StepUpError(refusal)


def record_step_up_failures(session: Session, user_ids: Iterable[str], *, now: datetime) -> list[str]:
    """Count wrong step-up codes like failed sign-ins; returns the users this locked out.

    Reaching the threshold locks the account for the lockout duration and signs the user out
    everywhere: whoever holds the session is guessing codes.
    """
    locked: list[str] = []
    for user_id in user_ids:
        user = session.get(StaffUser, user_id, with_for_update=True, populate_existing=True)
        if user is None:
            continue
        _audit(session, "step_up_failed", user_id, now, user_id=user_id)
        if not is_locked(user, now) and _count_failure(session, user, now):
            user.session_version += 1
            locked.append(user_id)
    return locked


# --- API tokens ------------------------------------------------------------------------------------


def token_hash(token: str) -> str:
    """SHA-256 (hex) of a bearer token; only this is stored."""
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(
    session: Session, user_id: str, *, now: datetime, by: str | None = None
) -> tuple[ApiToken, str]:
    """A new API token for an active user, valid 90 days; returns the row and the plaintext (shown once)."""
    user = session.get(StaffUser, user_id)
    if user is None or not user.active:
        raise UserError("no active user with this id", "email")
    plaintext = f"mct_{secrets.token_urlsafe(32)}"
    row = ApiToken(
        id=f"tok-{secrets.token_hex(8)}",
        user_id=user_id,
        token_hash=token_hash(plaintext),
        created_at=now,
        expires_at=now + API_TOKEN_TTL,
        revoked_at=None,
        last_used_at=None,
    )
    session.add(row)
    session.flush()
    _audit(session, "token_created", by or user_id, now, user_id=user_id, token_id=row.id)
    return row, plaintext


def revoke_token(session: Session, token_id: str, *, now: datetime, by: str | None = None) -> None:
    """Revoke a token (idempotent, audited)."""
    row = session.get(ApiToken, token_id)
    if row is not None and row.revoked_at is None:
        row.revoked_at = now
        _audit(session, "token_revoked", by or row.user_id, now, user_id=row.user_id, token_id=token_id)


def user_for_token(session: Session, token: str, *, now: datetime) -> StaffUser | None:
    """The active, unlocked user a valid token belongs to (None if unknown, revoked or expired)."""
    if not token or len(token) > 200:
        return None
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == token_hash(token)))
    if row is None or row.revoked_at is not None:
        return None
    if row.expires_at is not None and row.expires_at <= now:
        return None
    user = session.get(StaffUser, row.user_id)
    if user is None or not user.active or is_locked(user, now):
        return None
    row.last_used_at = now
    return user
