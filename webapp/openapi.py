"""The OpenAPI 3.1 document of ``/api/v1`` (served at ``/api/v1/openapi.json``).

Built from one route table (``OPERATIONS``: method, path, capability, parameters, body, responses) and
the shared JSON schemas below. A test walks the app's URL map and fails when a ``/api/v1`` route is
missing here, so the document cannot fall behind the blueprint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from governors import GOVERNORS
from webapp.policy import CAPABILITIES, ROLES

API_PREFIX: Final = "/api/v1"
VERSION: Final = "1.0.0"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


_STR = {"type": "string"}
_INT = {"type": "integer"}
_BOOL = {"type": "boolean"}
_TIME = {"type": "string", "format": "date-time"}
_OBJ = {"type": "object", "additionalProperties": True}

SCHEMAS: Final[dict[str, dict[str, Any]]] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {**_STR, "description": "machine code, e.g. not_found, stale_version"},
                    "message": {**_STR, "description": "human text saying what to do"},
                    "field": {**_STR, "description": "the offending input (422)"},
                    "details": _OBJ,
                },
            }
        },
    },
    "Customer": {
        "type": "object",
        "required": ["id", "name", "tenant", "tier"],
        "properties": {
            "id": _STR,
            "name": {**_STR, "description": "masked (revealing PII is an audited console action)"},
            "email": {**_STR, "description": "masked"},
            "tenant": _STR,
            "tier": _STR,
            "created_at": _TIME,
            "erased": _BOOL,
        },
    },
    "CustomerPage": {
        "type": "object",
        "required": ["items", "next_cursor"],
        "properties": {
            "items": {"type": "array", "items": _ref("Customer")},
            "next_cursor": _nullable(_STR),
        },
    },
    "Input": {
        "type": "object",
        "required": ["name", "kind", "required"],
        "properties": {
            "name": _STR,
            "kind": _STR,
            "required": _BOOL,
            "choices": {"type": "array", "items": _STR},
            "min": _nullable(_INT),
            "max": _nullable(_INT),
            "label": _STR,
        },
    },
    "AllowedEvent": {
        "type": "object",
        "required": ["event", "title", "mode", "role", "approvers", "inputs"],
        "properties": {
            "event": _STR,
            "title": _STR,
            "mode": {"type": "string", "enum": ["direct", "four_eyes", "request"]},
            "role": {"type": "string", "enum": list(ROLES)},
            "approvers": {"type": "array", "items": _STR},
            "inputs": {"type": "array", "items": _ref("Input")},
        },
    },
    "GovernorCard": {
        "type": "object",
        "required": [
            "governor",
            "instance_id",
            "subject",
            "state",
            "version",
            "entered_at",
            "timeout_at",
            "attention",
            "allowed_events",
        ],
        "properties": {
            "governor": {"type": "string", "enum": list(GOVERNORS)},
            "instance_id": _STR,
            "subject": _nullable(_STR),
            "state": _STR,
            "version": _INT,
            "entered_at": _TIME,
            "timeout_at": _nullable(_TIME),
            "attention": _BOOL,
            "attention_reason": _nullable(_STR),
            "allowed_events": {"type": "array", "items": _ref("AllowedEvent")},
        },
    },
    "CustomerDetail": {
        "allOf": [
            _ref("Customer"),
            {
                "type": "object",
                "required": ["governors"],
                "properties": {"governors": {"type": "array", "items": _ref("GovernorCard")}},
            },
        ]
    },
    "HistoryRow": {
        "type": "object",
        "required": [
            "seq",
            "instance_id",
            "governor",
            "event",
            "from_state",
            "to_state",
            "actor",
            "reason",
            "occurred_at",
            "cause",
        ],
        "properties": {
            "seq": _INT,
            "instance_id": _STR,
            "governor": _STR,
            "event": _STR,
            "from_state": _nullable(_STR),
            "to_state": _STR,
            "actor": _STR,
            "role": _STR,
            "reason": _nullable(_STR),
            "occurred_at": _TIME,
            "cause": {
                **_nullable(_INT),
                "description": "seq of the transition whose cascade caused this one",
            },
            "cascade": _nullable(_STR),
            "approval_id": _nullable(_STR),
        },
    },
    "HistoryPage": {
        "type": "object",
        "required": ["items", "next_cursor"],
        "properties": {
            "items": {"type": "array", "items": _ref("HistoryRow")},
            "next_cursor": _nullable(_STR),
        },
    },
    "StateAsOf": {
        "type": "object",
        "required": ["customer_id", "as_of", "governors"],
        "properties": {
            "customer_id": _STR,
            "as_of": _TIME,
            "governors": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["governor", "instance_id", "state"],
                    "properties": {
                        "governor": _STR,
                        "instance_id": _STR,
                        "subject": _nullable(_STR),
                        "state": _STR,
                        "state_seq": _INT,
                        "version": _INT,
                        "entered_at": _TIME,
                        "timers": {"type": "array", "items": _STR},
                        "due_at": {"type": "object", "additionalProperties": _nullable(_STR)},
                        "last_seq": _nullable(_INT),
                        "last_event": _nullable(_STR),
                        "data": _OBJ,
                    },
                    "additionalProperties": True,
                },
            },
        },
    },
    "EventRequest": {
        "type": "object",
        "required": ["event", "reason"],
        "additionalProperties": False,
        "properties": {
            "event": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,63}$"},
            "reason": {
                "type": "string",
                "maxLength": 2000,
                "description": "why (stored in the history; card numbers are refused)",
            },
            "payload": {**_OBJ, "description": "the event's inputs (see allowed_events[].inputs)"},
            "expected_version": {
                "type": "integer",
                "minimum": 0,
                "description": "the version you loaded; a different current version is a 409",
            },
        },
    },
    "Decision": {
        "type": "object",
        "required": ["step", "governor", "instance_id", "event", "status"],
        "properties": {
            "step": _INT,
            "governor": _STR,
            "instance_id": _STR,
            "event": _STR,
            "row": _STR,
            "from_state": _nullable(_STR),
            "to_state": _STR,
            "status": {
                "type": "string",
                "enum": ["applied", "ignored", "failed", "rejected", "cycle", "depth_exceeded"],
            },
            "changes": _OBJ,
            "effects": {"type": "array", "items": _OBJ},
            "timers": {"type": "array", "items": _OBJ},
            "cascade": _nullable(_STR),
            "cause_step": _nullable(_INT),
        },
        "additionalProperties": True,
    },
    "EventApplied": {
        "type": "object",
        "required": ["decisions"],
        "properties": {
            "decisions": {"type": "array", "items": _ref("Decision")},
            "alerts": {"type": "array", "items": _OBJ},
            "instance_id": _STR,
        },
    },
    "Plan": {
        "type": "object",
        "required": ["steps", "alerts", "ok"],
        "properties": {
            "steps": {"type": "array", "items": _ref("Decision")},
            "alerts": {"type": "array", "items": _OBJ},
            "ok": _BOOL,
            "needs_approval": _nullable({"type": "array", "items": _STR}),
            "rejection": _OBJ,
            "role": _STR,
        },
    },
    "ApprovalRequested": {
        "type": "object",
        "required": ["approval_id"],
        "properties": {
            "approval_id": _STR,
            "approvers": {"type": "array", "items": _STR},
            "expires_at": _TIME,
            "preview": _ref("Plan"),
        },
    },
    "Approval": {
        "type": "object",
        "required": ["id", "status", "governor", "event", "instance_id", "requested_by"],
        "properties": {
            "id": _STR,
            "tenant": _STR,
            "status": {"type": "string", "enum": ["pending", "approved", "rejected", "expired", "voided"]},
            "governor": _STR,
            "event": _STR,
            "instance_id": _STR,
            "customer_id": _nullable(_STR),
            "payload": _OBJ,
            "preview": _OBJ,
            "requested_by": _STR,
            "requester_role": _STR,
            "approver_roles": {"type": "array", "items": _STR},
            "created_at": _TIME,
            "expires_at": _TIME,
            "decided_by": _nullable(_STR),
            "decided_at": _nullable(_TIME),
            "decision_note": _nullable(_STR),
            "can_decide": _BOOL,
            "why_not": _nullable(_STR),
            "result": _OBJ,
        },
    },
    "ApprovalPage": {
        "type": "object",
        "required": ["items", "next_cursor"],
        "properties": {
            "items": {"type": "array", "items": _ref("Approval")},
            "next_cursor": _nullable(_STR),
        },
    },
    "ApprovalDecision": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "step_up_code": {
                "type": "string",
                "pattern": "^[0-9]{6}$",
                "description": "current TOTP code (required to approve)",
            },
            "note": {"type": "string", "maxLength": 2000, "description": "required to reject"},
        },
    },
    "AuditVerify": {
        "type": "object",
        "required": ["ok", "checked", "first_broken_seq"],
        "properties": {
            "ok": _BOOL,
            "checked": _INT,
            "first_broken_seq": _nullable(_INT),
            "broken_tenant": _nullable(_STR),
            "tenants": {"type": "array", "items": _OBJ},
        },
    },
}


def _param(
    name: str, where: str, description: str, schema: dict[str, Any], required: bool = False
) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": required or where == "path",
        "description": description,
        "schema": schema,
    }


LIMIT = _param(
    "limit", "query", "page size", {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}
)
CURSOR = _param("cursor", "query", "next_cursor of the previous page", _STR)
IDEMPOTENCY = _param(
    "Idempotency-Key",
    "header",
    "a replay with the same key and body returns the first response and changes nothing; "
    "the same key with another body is a 409",
    {"type": "string", "minLength": 1, "maxLength": 120},
)


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref("Error")}}}


def _ok(schema: str, description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}


COMMON_ERRORS: Final = {
    "401": _error("no or invalid bearer token"),
    "403": _error("your roles do not allow this"),
}


@dataclass(frozen=True)
class Operation:
    """One route of the API."""

    method: str
    path: str
    operation_id: str
    summary: str
    capability: str | None
    responses: dict[str, Any]
    parameters: tuple[dict[str, Any], ...] = ()
    body: str | None = None
    tags: tuple[str, ...] = field(default=("console",))


def _path(name: str, what: str) -> dict[str, Any]:
    return _param(name, "path", what, _STR)


EVENT_ERRORS: Final = {
    "404": _error("no such instance (or not yours to see)"),
    "409": _error("stale version, event not allowed in this state, guard failed, or key reused"),
    "422": _error("invalid input (the message names the field)"),
}

OPERATIONS: Final[tuple[Operation, ...]] = (
    Operation(
        "get",
        "/openapi.json",
        "openapi",
        "This document",
        None,
        {"200": {"description": "the OpenAPI document", "content": {"application/json": {"schema": _OBJ}}}},
        tags=("meta",),
    ),
    Operation(
        "get",
        "/customers",
        "searchCustomers",
        "Search customers by id, name, email or invoice id (keyset pagination)",
        "customer.search",
        {"200": _ok("CustomerPage"), "422": _error("bad query parameter")},
        (
            _param(
                "q",
                "query",
                "customer id, email, name prefix or invoice id",
                {"type": "string", "maxLength": 200},
            ),
            _param("state", "query", "a governor state, or governor:state", _STR),
            LIMIT,
            CURSOR,
        ),
    ),
    Operation(
        "get",
        "/customers/{customer_id}",
        "getCustomer",
        "The customer with every governor and the events you may fire now",
        "customer.view",
        {"200": _ok("CustomerDetail"), "404": _error("no such customer")},
        (_path("customer_id", "customer id"),),
    ),
    Operation(
        "get",
        "/customers/{customer_id}/history",
        "getHistory",
        "Transitions, newest first",
        "customer.history",
        {"200": _ok("HistoryPage"), "404": _error("no such customer"), "422": _error("bad query parameter")},
        (
            _path("customer_id", "customer id"),
            _param("governor", "query", "only this governor", {"type": "string", "enum": list(GOVERNORS)}),
            LIMIT,
            CURSOR,
        ),
    ),
    Operation(
        "get",
        "/customers/{customer_id}/state",
        "getStateAsOf",
        "The customer's governors as they were at an instant (read-only time travel)",
        "customer.time_travel",
        {"200": _ok("StateAsOf"), "404": _error("no such customer"), "422": _error("bad or missing as_of")},
        (
            _path("customer_id", "customer id"),
            _param("as_of", "query", "ISO 8601 instant with a time zone", _TIME, required=True),
        ),
    ),
    Operation(
        "post",
        "/instances/{instance_id}/events",
        "fireEvent",
        "Apply an event (the whole cascade) or file a four-eyes request",
        "governor.act",
        {
            "200": _ok("EventApplied", "applied"),
            "202": _ok("ApprovalRequested", "waiting for a second approver"),
            **EVENT_ERRORS,
        },
        (_path("instance_id", "governor instance id"), IDEMPOTENCY),
        body="EventRequest",
    ),
    Operation(
        "post",
        "/instances/{instance_id}/events/preview",
        "previewEvent",
        "The cascade plan (governors, timers, money); applies nothing",
        "governor.preview",
        {"200": _ok("Plan"), "404": EVENT_ERRORS["404"], "422": EVENT_ERRORS["422"]},
        (_path("instance_id", "governor instance id"),),
        body="EventRequest",
    ),
    Operation(
        "get",
        "/approvals",
        "listApprovals",
        "The four-eyes queue",
        "approval.view",
        {"200": _ok("ApprovalPage"), "422": _error("bad query parameter")},
        (
            _param(
                "status",
                "query",
                "request status",
                {
                    "type": "string",
                    "enum": ["pending", "approved", "rejected", "expired", "voided"],
                    "default": "pending",
                },
            ),
            LIMIT,
            CURSOR,
        ),
    ),
    Operation(
        "post",
        "/approvals/{approval_id}/approve",
        "approve",
        "Approve (a different person holding an approver role; TOTP step-up) and apply the event",
        "approval.decide",
        {
            "200": _ok("Approval", "approved and applied"),
            "404": _error("no such request"),
            "409": _error("already decided, expired or voided (the state changed)"),
            "422": _error("missing step-up code"),
        },
        (_path("approval_id", "approval id"),),
        body="ApprovalDecision",
    ),
    Operation(
        "post",
        "/approvals/{approval_id}/reject",
        "reject",
        "Reject a pending request (a note is required)",
        "approval.decide",
        {
            "200": _ok("Approval", "rejected"),
            "404": _error("no such request"),
            "409": _error("already decided or expired"),
            "422": _error("missing note"),
        },
        (_path("approval_id", "approval id"),),
        body="ApprovalDecision",
    ),
    Operation(
        "get",
        "/audit/verify",
        "verifyAudit",
        "Verify every tenant's audit hash chain",
        "audit.verify",
        {"200": _ok("AuditVerify")},
        tags=("audit",),
    ),
)


def _operation(op: Operation) -> dict[str, Any]:
    roles = sorted(CAPABILITIES[op.capability], key=ROLES.index) if op.capability else []
    out: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "tags": list(op.tags),
        "responses": {**op.responses, **(COMMON_ERRORS if op.capability else {})},
    }
    if op.capability:
        out["description"] = f"Capability `{op.capability}`: roles {', '.join(roles)}."
        out["x-capability"] = op.capability
    else:
        out["security"] = []
    if op.parameters:
        out["parameters"] = list(op.parameters)
    if op.body:
        out["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(op.body)}}}
    return out


def document() -> dict[str, Any]:
    """The whole OpenAPI 3.1 document."""
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(API_PREFIX + op.path, {})[op.method] = _operation(op)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Marketplace Governance Console API",
            "version": VERSION,
            "description": (
                "The eight governors per customer, their history, time travel, events with four-eyes "
                "approvals and audit verification. Authenticate with `Authorization: Bearer <token>` "
                "(`marketplace users token --email E`). Errors are "
                '`{"error": {"code", "message"}}`.'
            ),
        },
        "servers": [{"url": "/"}],
        "security": [{"bearerAuth": []}],
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "a staff API token from `marketplace users token`",
                }
            },
        },
    }
