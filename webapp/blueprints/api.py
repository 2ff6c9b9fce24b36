"""The JSON API, ``/api/v1`` (INTERFACES.md): the same services and permission policy as the console.

Authentication is ``Authorization: Bearer <token>`` (``webapp.auth_session``'s request loader); every
view declares its capability, checked by ``create_app``'s one ``before_request`` hook. Errors are always
``{"error": {"code", "message"}}``; bad input is a 422 that names the field, unknown (or other
tenants') ids are a 404 that reveals nothing, and nothing here answers a bad request with a 500.

Views stay thin: parse and validate, call one service (``webapp.services.transitions`` for events and
previews, ``webapp.services.approvals`` for the four-eyes queue, ``webapp.audit`` for verification),
choose the response. The read queries (search, customer, history) are small keyset queries kept here.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, jsonify, request
from flask_login import current_user
from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import Session

from governors import GOVERNORS, Instance
from webapp import relay_after_response
from webapp.audit import tenants_with_chains, verify_tenant
from webapp.current import now as _now
from webapp.current import rt as _rt
from webapp.models import Approval, Customer, GovernorInstance, TransitionRecord
from webapp.policy import can, permission, public
from webapp.services import approvals as approval_service
from webapp.services.actions import best_actions, facts_for
from webapp.services.history import state_as_of as rebuild
from webapp.services.instances import jsonable, to_instance
from webapp.services.transitions import Actor, EventRequest, TransitionError, apply_with_retry, fire_event
from webapp.services.transitions import preview as plan_preview

bp = Blueprint("api", __name__, url_prefix="/api/v1")
csrf_exempt = True
"""Bearer-token clients send no CSRF token; the console's cookie session is never accepted here."""

MAX_LIMIT = 200
DEFAULT_LIMIT = 50
MAX_REASON = 2000
MAX_KEY = 120
_EVENT_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,79}$")
_KEY = re.compile(r"^[\x21-\x7e]{1,120}$")
"""When a user holds several roles, the role that may act most directly is the one used."""

APPROVAL_STATUSES = ("pending", "approved", "rejected", "expired", "voided")
ALL_STATES = frozenset(s for g in GOVERNORS.values() for s in g.state_names)
GOVERNOR_ORDER = {name: n for n, name in enumerate(GOVERNORS)}


# --------------------------------------------------------------------------- errors and parsing


class ApiError(Exception):
    """A 4xx answer: ``{"error": {"code", "message"}}`` (plus ``field`` for a bad input)."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field

    def response(self) -> tuple[Response, int]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field:
            error["field"] = self.field
        return jsonify({"error": error}), self.status


@bp.errorhandler(ApiError)
def _api_error(exc: ApiError) -> tuple[Response, int]:
    return exc.response()


def invalid(field: str, message: str) -> ApiError:
    """A 422 naming the offending field."""
    return ApiError(422, "invalid_input", f"{field}: {message}", field)


def not_found(what: str) -> ApiError:
    """A 404 that says nothing about whether the id exists elsewhere."""
    return ApiError(404, "not_found", f"no such {what}")


def parse_limit(raw: str | None) -> int:
    """``limit`` between 1 and MAX_LIMIT (default DEFAULT_LIMIT)."""
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise invalid("limit", f"must be a whole number from 1 to {MAX_LIMIT}")
    return int(raw)


def encode_cursor(values: Iterable[Any]) -> str:
    """An opaque keyset cursor."""
    return base64.urlsafe_b64encode(json.dumps(list(values)).encode()).decode().rstrip("=")


def decode_cursor(raw: str | None, kinds: tuple[type, ...]) -> list[Any] | None:
    """The keyset values of a cursor made by ``encode_cursor`` (422 when it was not)."""
    if not raw:
        return None
    try:
        padded = raw + "=" * (-len(raw) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode()).decode())
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise invalid("cursor", "not a cursor this API returned") from None
    if (
        not isinstance(values, list)
        or len(values) != len(kinds)
        or not all(isinstance(v, k) and not isinstance(v, bool) for v, k in zip(values, kinds, strict=True))
    ):
        raise invalid("cursor", "not a cursor this API returned")
    return values


def parse_instant(field: str, raw: str | None) -> datetime:
    """An ISO 8601 instant with an offset (``Z`` accepted), as UTC."""
    if not raw:
        raise invalid(field, "required (ISO 8601 with a time zone, e.g. 2026-03-01T12:00:00Z)")
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00") if raw.endswith("Z") else raw)
    except ValueError:
        raise invalid(field, "not an ISO 8601 date-time (e.g. 2026-03-01T12:00:00Z)") from None
    if moment.tzinfo is None:
        raise invalid(field, "needs a time zone offset (e.g. Z or +00:00)")
    return moment.astimezone(UTC)


def json_body() -> dict[str, Any]:
    """The request's JSON object (422 when the body is missing, not JSON or not an object)."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise invalid("body", "send a JSON object with Content-Type: application/json")
    return body


def check_free_text(field: str, value: str, max_length: int = MAX_REASON) -> str:
    """Free-text hygiene shared with the console (``webapp.validation``): no card numbers, no controls."""
    from webapp.validation import InputError, clean_text

    try:
        return clean_text(value, max_length=max_length, label=field)
    except InputError as exc:
        raise invalid(field, exc.message) from None


def parse_event_body() -> tuple[str, str, dict[str, Any], int | None]:
    """``{"event", "reason", "payload"?, "expected_version"?}`` validated (422 names the field)."""
    body = json_body()
    unknown = sorted(set(body) - {"event", "reason", "payload", "expected_version"})
    if unknown:
        raise invalid(unknown[0], "unknown field")
    event = body.get("event")
    if not isinstance(event, str) or not _EVENT_NAME.match(event):
        raise invalid("event", "required: an event name such as lock or issue_refund")
    reason = body.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise invalid("reason", "required: why you are doing this")
    reason = check_free_text("reason", reason)
    payload = body.get("payload", {})
    if payload is None:
        payload = {}
    if not isinstance(payload, dict):
        raise invalid("payload", "must be a JSON object")
    if "reason" in payload:
        raise invalid("payload.reason", "give the reason once, at the top level")
    if len(json.dumps(payload)) > 20_000:
        raise invalid("payload", "too large")
    from webapp.validation import InputError, clean_payload

    try:
        payload = clean_payload(payload)
    except InputError as exc:
        raise invalid("payload", exc.message) from None
    expected = body.get("expected_version")
    if expected is not None and (isinstance(expected, bool) or not isinstance(expected, int) or expected < 0):
        raise invalid("expected_version", "must be a whole number (the version you loaded)")
    return event, reason, {**payload, "reason": reason}, expected


def idempotency_key() -> str | None:
    """The ``Idempotency-Key`` header, scoped to the calling user (422 when malformed)."""
    raw = request.headers.get("Idempotency-Key")
    if raw is None:
        return None
    if not _KEY.match(raw):
        raise invalid("Idempotency-Key", f"1 to {MAX_KEY} printable characters without spaces")
    return f"api:{user_id()}:{raw}"


def path_id(raw: str, what: str) -> str:
    """A path id; anything malformed is simply not found."""
    if not _ID.match(raw):
        raise not_found(what)
    return raw


# --------------------------------------------------------------------------- caller


def user_id() -> str:
    """The calling staff user's id."""
    return str(current_user.id)


def user_roles() -> frozenset[str]:
    """The calling user's roles."""
    return frozenset(getattr(current_user, "roles", frozenset()))


def tenant_scope() -> frozenset[str] | None:
    """Tenants the caller may see (None: all). Other tenants' ids answer 404, as if absent."""
    scope = getattr(current_user, "tenant_ids", None)
    return frozenset(scope) if scope is not None else None


def in_scope(tenant_id: str) -> bool:
    """True when the caller may see ``tenant_id``'s data."""
    scope = tenant_scope()
    return scope is None or tenant_id in scope


# --------------------------------------------------------------------------- read helpers


def _mask_email(email: str) -> str:
    local, _, domain = email.partition("@")
    return f"{local[:1]}***@{domain}" if domain else "***"


def _mask_name(name: str) -> str:
    return " ".join(w[:1] + "*" * max(len(w) - 1, 1) for w in name.split()) or "***"


def customer_json(c: Customer) -> dict[str, Any]:
    """A customer as the API lists it; name and email stay masked (revealing is an audited console action)."""
    return {
        "id": c.id,
        "name": _mask_name(c.name),
        "email": _mask_email(c.email),
        "tenant": c.tenant_id,
        "tier": c.tier,
        "created_at": c.created_at.isoformat(),
        "erased": c.erased_at is not None,
    }


def load_customer(session: Session, raw_id: str) -> Customer:
    """The customer (404 when unknown or in another tenant)."""
    customer = session.get(Customer, path_id(raw_id, "customer"))
    if customer is None or not in_scope(customer.tenant_id):
        raise not_found("customer")
    return customer


def customer_instances(session: Session, customer_id: str) -> list[GovernorInstance]:
    """The customer's governor instances in badge order (governor, then id)."""
    rows = session.scalars(select(GovernorInstance).where(GovernorInstance.customer_id == customer_id)).all()
    return sorted(rows, key=lambda r: (GOVERNOR_ORDER.get(r.governor, 99), r.created_at, r.id))


def allowed_for_user(
    session: Session,
    instance: Instance,
    snapshot: Mapping[str, Instance],
    roles: Iterable[str],
    now: datetime,
) -> list[dict[str, Any]]:
    """The manual actions the caller may use now, merged over their roles (the most direct mode wins)."""
    if not can(roles, "governor.act"):
        return []
    facts = facts_for(snapshot, instance, now, _rt().settings, session, actor=user_id())
    merged = best_actions(instance.governor, instance, facts, roles)
    best = {event: (a, role) for event, (a, role) in merged.items() if a.allowed}
    return [
        {
            "event": a.event,
            "title": a.title,
            "mode": a.mode,
            "role": role,
            "approvers": list(a.approvers),
            "inputs": [
                {
                    "name": i.name,
                    "kind": i.kind,
                    "required": i.required,
                    "choices": list(i.choices),
                    "min": i.min,
                    "max": i.max,
                    "label": i.label or i.name.replace("_", " "),
                }
                for i in a.inputs
            ],
        }
        for a, role in best.values()
    ]


def choose_role(
    session: Session, instance: Instance, snapshot: Mapping[str, Instance], event: str, now: datetime
) -> str:
    """The role the caller acts in: the one that may fire ``event`` most directly (else their first)."""
    roles = sorted(user_roles())
    for item in allowed_for_user(session, instance, snapshot, roles, now):
        if item["event"] == event:
            return str(item["role"])
    staff = [r for r in roles if can([r], "governor.act")]
    return (staff or roles or ["none"])[0]


def instance_json(row: GovernorInstance, allowed: list[dict[str, Any]]) -> dict[str, Any]:
    """One governor card."""
    return {
        "governor": row.governor,
        "instance_id": row.id,
        "subject": row.subject_id,
        "state": row.state,
        "version": row.version,
        "entered_at": row.entered_at.isoformat(),
        "timeout_at": row.timeout_at.isoformat() if row.timeout_at else None,
        "attention": row.attention,
        "attention_reason": row.attention_reason or None,
        "allowed_events": allowed,
    }


def history_json(r: TransitionRecord) -> dict[str, Any]:
    """One history row."""
    return {
        "seq": r.id,
        "instance_id": r.instance_id,
        "governor": r.governor,
        "event": r.event,
        "from_state": r.from_state,
        "to_state": r.to_state,
        "actor": r.actor,
        "role": r.role,
        "reason": r.reason,
        "occurred_at": r.occurred_at.isoformat(),
        "cause": r.cause_id,
        "cascade": r.cascade_id,
        "approval_id": r.approval_id,
    }


def approval_json(a: Approval) -> dict[str, Any]:
    """One four-eyes request as the queue lists it."""
    why = (
        approval_service.why_not_approver(a, user_id(), user_roles())
        if a.status == "pending"
        else "already decided"
    )
    return {
        "id": a.id,
        "tenant": a.tenant_id,
        "customer_id": a.customer_id,
        "instance_id": a.instance_id,
        "governor": a.governor,
        "event": a.event,
        "payload": a.payload,
        "requested_by": a.requested_by,
        "requester_role": a.requester_role,
        "approver_roles": list(a.approver_roles),
        "status": a.status,
        "created_at": a.created_at.isoformat(),
        "expires_at": a.expires_at.isoformat(),
        "decided_by": a.decided_by,
        "decided_at": a.decided_at.isoformat() if a.decided_at else None,
        "decision_note": a.decision_note,
        "can_decide": why is None,
        "why_not": why,
        "preview": a.preview,
    }


# --------------------------------------------------------------------------- views: reading


@bp.get("/openapi.json")
@public
def openapi() -> Response:
    """The OpenAPI 3.1 document of this API."""
    from webapp.openapi import document

    return jsonify(document())


@bp.get("/customers")
@permission("customer.search")
def customers() -> Response:
    """Search customers by id, name, email or invoice id; filter by a governor state; keyset pages."""
    q = (request.args.get("q") or "").strip()
    if len(q) > 200:
        raise invalid("q", "at most 200 characters")
    state = (request.args.get("state") or "").strip()
    governor = None
    if ":" in state:
        governor, _, state = state.partition(":")
        if governor not in GOVERNORS:
            raise invalid("state", f"unknown governor {governor!r}")
    if state and state not in ALL_STATES:
        raise invalid("state", f"unknown state {state!r}")
    limit = parse_limit(request.args.get("limit"))
    cursor = decode_cursor(request.args.get("cursor"), (str,))
    query: Select[Any] = select(Customer).order_by(Customer.id).limit(limit + 1)
    scope = tenant_scope()
    if scope is not None:
        query = query.where(Customer.tenant_id.in_(scope))
    if cursor:
        query = query.where(Customer.id > cursor[0])
    if q:
        invoices = select(GovernorInstance.customer_id).where(
            GovernorInstance.governor == "billing", GovernorInstance.subject_id == q
        )
        query = query.where(
            or_(
                Customer.id == q,
                func.lower(Customer.email) == q.lower(),
                Customer.name.ilike(_like(q) + "%"),
                Customer.id.in_(invoices),
            )
        )
    if state:
        having = select(GovernorInstance.customer_id).where(GovernorInstance.state == state)
        if governor:
            having = having.where(GovernorInstance.governor == governor)
        query = query.where(Customer.id.in_(having))
    with _rt().db.session() as s:
        rows = list(s.scalars(query))
    page = rows[:limit]
    return jsonify(
        {
            "items": [customer_json(c) for c in page],
            "next_cursor": encode_cursor([page[-1].id]) if len(rows) > limit else None,
        }
    )


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@bp.get("/customers/<customer_id>")
@permission("customer.view")
def customer(customer_id: str) -> Response:
    """The customer with every governor instance and the events the caller may fire on each."""
    now = _now()
    roles = user_roles()
    with _rt().db.session() as s:
        c = load_customer(s, customer_id)
        rows = customer_instances(s, c.id)
        snapshot = {r.id: to_instance(r) for r in rows}
        cards = [instance_json(r, allowed_for_user(s, snapshot[r.id], snapshot, roles, now)) for r in rows]
        body = customer_json(c)
    body["governors"] = cards
    return jsonify(body)


@bp.get("/customers/<customer_id>/history")
@permission("customer.history")
def history(customer_id: str) -> Response:
    """The customer's transitions, newest first, keyset-paginated, optionally one governor's."""
    governor = request.args.get("governor") or None
    if governor is not None and governor not in GOVERNORS:
        raise invalid("governor", f"unknown governor; one of {', '.join(GOVERNORS)}")
    limit = parse_limit(request.args.get("limit"))
    cursor = decode_cursor(request.args.get("cursor"), (int,))
    with _rt().db.session() as s:
        c = load_customer(s, customer_id)
        query = (
            select(TransitionRecord)
            .where(TransitionRecord.customer_id == c.id)
            .order_by(TransitionRecord.id.desc())
            .limit(limit + 1)
        )
        if governor:
            query = query.where(TransitionRecord.governor == governor)
        if cursor:
            query = query.where(TransitionRecord.id < cursor[0])
        rows = list(s.scalars(query))
    page = rows[:limit]
    return jsonify(
        {
            "items": [history_json(r) for r in page],
            "next_cursor": encode_cursor([page[-1].id]) if len(rows) > limit else None,
        }
    )


@bp.get("/customers/<customer_id>/state")
@permission("customer.time_travel")
def state_as_of(customer_id: str) -> Response:
    """The customer's governors as they were at ``as_of`` (read-only time travel)."""
    instant = parse_instant("as_of", request.args.get("as_of"))
    if instant > _now():
        raise invalid("as_of", "is in the future; time travel only looks back")
    with _rt().db.session() as s:
        c = load_customer(s, customer_id)
        governors = _state_at(s, c, instant)
    return jsonify({"customer_id": c.id, "as_of": instant.isoformat(), "governors": governors})


def _state_at(session: Session, c: Customer, instant: datetime) -> list[dict[str, Any]]:
    """Every instance that existed at ``instant`` with its state then (``webapp.services.history``)."""
    views = rebuild(session, c.tenant_id, c.id, instant)
    out = [
        {
            "governor": v.governor,
            "instance_id": v.instance_id,
            "subject": v.subject_id,
            "state": v.state,
            "state_seq": v.state_seq,
            "version": v.version,
            "entered_at": v.entered_at.isoformat(),
            "timers": list(v.timers),
            "due_at": dict(v.due_at),
            "last_seq": v.last_transition_id,
            "last_event": v.last_event,
            "data": jsonable(v.data),
        }
        for v in views.values()
    ]
    return sorted(out, key=lambda g: (GOVERNOR_ORDER.get(str(g["governor"]), 99), str(g["instance_id"])))


# --------------------------------------------------------------------------- views: events


def _load_event_target(session: Session, raw_id: str) -> tuple[GovernorInstance, dict[str, Instance]]:
    row = session.get(GovernorInstance, path_id(raw_id, "governor instance"))
    if row is None or not in_scope(row.tenant_id):
        raise not_found("governor instance")
    rows = customer_instances(session, row.customer_id) if row.customer_id else [row]
    return row, {r.id: to_instance(r) for r in rows}


@bp.post("/instances/<instance_id>/events")
@permission("governor.act")
def fire(instance_id: str) -> Any:
    """Apply an event (200) or file a four-eyes request (202); a replay returns the first answer."""
    event, _reason, payload, expected = parse_event_body()
    key = idempotency_key()
    rt = _rt()

    def run() -> Any:
        now = _now()
        with rt.db.session() as s:
            row, snapshot = _load_event_target(s, instance_id)
            role = choose_role(s, snapshot[row.id], snapshot, event, now)
            # The reads that chose the role end here; the event begins its own transaction with its
            # load (ids reserved, the audit head read) and ends it with its write. The engine checks
            # the role again under the event's locks, against the instance as it then stands.
            s.commit()
            return fire_event(
                s,
                EventRequest(
                    tenant_id=row.tenant_id,
                    event=event,
                    instance_id=row.id,
                    payload=payload,
                    expected_version=expected,
                    idempotency_key=key,
                ),
                Actor(user_id(), role),
                now,
                settings=rt.settings,
                commit=True,  # the transaction ends with the event
            )

    try:
        result = apply_with_retry(run)
    except TransitionError as exc:
        return jsonify(exc.body()), exc.status
    relay_after_response(result.outbox_ids)
    response = jsonify(result.body)
    response.status_code = result.status
    if result.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


@bp.post("/instances/<instance_id>/events/preview")
@permission("governor.preview")
def preview(instance_id: str) -> Any:
    """The cascade plan the event would cause (governors, timers, money); applies nothing."""
    event, _reason, payload, _expected = parse_event_body()
    rt = _rt()
    now = _now()
    try:
        with rt.db.sessions() as s:
            row, snapshot = _load_event_target(s, instance_id)
            role = choose_role(s, snapshot[row.id], snapshot, event, now)
            body = plan_preview(
                s,
                EventRequest(tenant_id=row.tenant_id, event=event, instance_id=row.id, payload=payload),
                Actor(user_id(), role),
                now,
                settings=rt.settings,
            )
            s.rollback()
    except TransitionError as exc:
        return jsonify(exc.body()), exc.status
    body["role"] = role
    return jsonify(body)


# --------------------------------------------------------------------------- views: four-eyes


@bp.get("/approvals")
@permission("approval.view")
def approvals() -> Response:
    """The four-eyes queue (``status``, default pending), oldest first, keyset-paginated."""
    status = request.args.get("status") or "pending"
    if status not in APPROVAL_STATUSES:
        raise invalid("status", f"one of {', '.join(APPROVAL_STATUSES)}")
    limit = parse_limit(request.args.get("limit"))
    cursor = decode_cursor(request.args.get("cursor"), (str, str))
    query = (
        select(Approval)
        .where(Approval.status == status)
        .order_by(Approval.created_at, Approval.id)
        .limit(limit + 1)
    )
    scope = tenant_scope()
    if scope is not None:
        query = query.where(Approval.tenant_id.in_(scope))
    if cursor:
        after = parse_instant("cursor", cursor[0])
        query = query.where(
            or_(Approval.created_at > after, (Approval.created_at == after) & (Approval.id > cursor[1]))
        )
    with _rt().db.session() as s:
        approval_service.expire_due(s, _now())
        rows = list(s.scalars(query))
    page = rows[:limit]
    last = page[-1] if page else None
    return jsonify(
        {
            "items": [approval_json(a) for a in page],
            "next_cursor": encode_cursor([last.created_at.isoformat(), last.id])
            if last is not None and len(rows) > limit
            else None,
        }
    )


def _decision_body(verb: str) -> tuple[str, str]:
    """``{"step_up_code"?, "note"?}``: approving needs the TOTP code, rejecting a note (422 names it)."""
    body = request.get_json(silent=True)
    if body is None and not request.get_data():
        body = {}
    if not isinstance(body, dict):
        raise invalid("body", "send a JSON object with Content-Type: application/json")
    unknown = sorted(set(body) - {"step_up_code", "note"})
    if unknown:
        raise invalid(unknown[0], "unknown field")
    code = body.get("step_up_code")
    if verb == "approve" and (not isinstance(code, str) or not re.fullmatch(r"\d{6}", code)):
        raise invalid("step_up_code", "required: the 6-digit code from your authenticator app")
    note = body.get("note") or ""
    if not isinstance(note, str):
        raise invalid("note", "must be text")
    return (code if isinstance(code, str) else ""), check_free_text("note", note)


def _decide(approval_id: str, verb: str) -> Any:
    """Approve or reject through ``webapp.services.approvals`` (the requester never decides)."""
    code, note = _decision_body(verb)
    rt = _rt()
    with rt.db.session() as s:
        approval = s.get(Approval, path_id(approval_id, "approval"))
        if approval is None or not in_scope(approval.tenant_id):
            raise not_found("approval")
        if verb == "approve":
            decided = approval_service.approve(
                s,
                approval.id,
                user_id=user_id(),
                roles=user_roles(),
                code=code,
                note=note,
                now=_now(),
                settings=rt.settings,
            )
            if decided.result is not None:
                relay_after_response(decided.result.outbox_ids)
        else:
            decided = approval_service.reject(
                s, approval.id, user_id=user_id(), roles=user_roles(), note=note, now=_now()
            )
        body = decided.body()
        if not decided.ok and decided.details.get("field"):
            body["error"]["field"] = decided.details["field"]
    return jsonify(body), decided.status


@bp.post("/approvals/<approval_id>/approve")
@permission("approval.decide")
def approve(approval_id: str) -> Any:
    """Approve a pending request (a second person holding an approver role; TOTP step-up)."""
    return _decide(approval_id, "approve")


@bp.post("/approvals/<approval_id>/reject")
@permission("approval.decide")
def reject(approval_id: str) -> Any:
    """Reject a pending request."""
    return _decide(approval_id, "reject")


# --------------------------------------------------------------------------- views: audit


@bp.get("/audit/verify")
@permission("audit.verify")
def audit_verify() -> Response:
    """Verify every tenant's audit hash chain: ``{"ok", "checked", "first_broken_seq"}`` and per tenant."""
    tenants: list[dict[str, Any]] = []
    with _rt().db.session() as s:
        for tenant in tenants_with_chains(s):
            if not in_scope(tenant):
                continue
            result = verify_tenant(s, tenant)
            tenants.append(
                {
                    "tenant": tenant,
                    "ok": result.ok,
                    "checked": result.checked,
                    "first_broken_seq": result.first_broken_seq,
                    "problem": result.problem or None,
                }
            )
    broken = next((t for t in tenants if not t["ok"]), None)
    return jsonify(
        {
            "ok": broken is None,
            "checked": sum(int(t["checked"]) for t in tenants),
            "first_broken_seq": broken["first_broken_seq"] if broken else None,
            "broken_tenant": broken["tenant"] if broken else None,
            "tenants": tenants,
        }
    )
