"""SQLAlchemy 2 typed models, one module per aggregate; import from here."""

from __future__ import annotations

from webapp.models import rollups as rollups  # the dashboards' rollup tables (registered with Base)
from webapp.models.audit import AuditEntry, AuditHead
from webapp.models.background import Alert, EffectRun, Notification, SandboxCharge
from webapp.models.base import Base
from webapp.models.bulk import BulkRun
from webapp.models.compliance import LegalHold, PrivacyRequest
from webapp.models.governance import DueTimer, GovernorInstance, StateSnapshot, TransitionRecord
from webapp.models.reconciliation import ProcessorCursor, ProcessorRecord
from webapp.models.staff import ApiToken, Approval, RoleGrant, StaffUser
from webapp.models.staff_requests import RoleGrantRequest
from webapp.models.tenancy import Customer, Tenant
from webapp.models.work import IdempotencyRecord, OutboxMessage

__all__ = [
    "Alert",
    "ApiToken",
    "Approval",
    "AuditEntry",
    "AuditHead",
    "Base",
    "BulkRun",
    "Customer",
    "DueTimer",
    "EffectRun",
    "GovernorInstance",
    "IdempotencyRecord",
    "LegalHold",
    "Notification",
    "OutboxMessage",
    "PrivacyRequest",
    "ProcessorCursor",
    "ProcessorRecord",
    "RoleGrant",
    "RoleGrantRequest",
    "SandboxCharge",
    "StaffUser",
    "StateSnapshot",
    "Tenant",
    "TransitionRecord",
]
