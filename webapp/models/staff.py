"""Staff users, their role grants and API tokens, and four-eyes approval requests."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String, Text, false
from sqlalchemy.orm import Mapped, mapped_column, relationship

from webapp.models.base import Base, JSONType, UTCDateTime


class StaffUser(Base):
    """A member of staff who signs in to the console."""

    __tablename__ = "staff_users"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    display_name: Mapped[str] = mapped_column(String(200))
    password_hash: Mapped[str] = mapped_column(String(300))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    totp_secret: Mapped[str | None] = mapped_column(String(64), default=None)
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger, default=None)
    """The last TOTP time-step accepted from this user; codes of it or earlier are refused (single use)."""
    session_version: Mapped[int] = mapped_column(Integer, default=1)
    password_changed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    password_must_change: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    """Set when someone else chose or saw the password (new account, reset): change it at sign-in."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    grants: Mapped[list[RoleGrant]] = relationship(back_populates="user", cascade="all, delete-orphan")

    @property
    def roles(self) -> frozenset[str]:
        """The roles currently granted."""
        return frozenset(g.role for g in self.grants)


class RoleGrant(Base):
    """A role held by a user (separation-of-duties rules are checked when granting)."""

    __tablename__ = "role_grants"

    user_id: Mapped[str] = mapped_column(ForeignKey("staff_users.id"), primary_key=True)
    role: Mapped[str] = mapped_column(String(32), primary_key=True)
    granted_by: Mapped[str] = mapped_column(String(64))
    granted_at: Mapped[datetime] = mapped_column(UTCDateTime())

    user: Mapped[StaffUser] = relationship(back_populates="grants")


class ApiToken(Base):
    """A bearer token for the JSON API, stored only as a SHA-256 hash."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("staff_users.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class Approval(Base):
    """A four-eyes request: bound to the exact inputs (``input_hash``) and the state it was made in."""

    __tablename__ = "approvals"
    __table_args__ = (Index("ix_approvals_status", "status", "created_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    customer_id: Mapped[str | None] = mapped_column(String(64))
    instance_id: Mapped[str] = mapped_column(String(80))
    governor: Mapped[str] = mapped_column(String(32))
    event: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    input_hash: Mapped[str] = mapped_column(String(64))
    preview: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    state_seq: Mapped[int] = mapped_column(Integer)
    version: Mapped[int] = mapped_column(Integer)
    requested_by: Mapped[str] = mapped_column(String(64))
    requester_role: Mapped[str] = mapped_column(String(32))
    approver_roles: Mapped[list[str]] = mapped_column(JSONType, default=list)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    decided_by: Mapped[str | None] = mapped_column(String(64), default=None)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    decision_note: Mapped[str | None] = mapped_column(Text, default=None)
