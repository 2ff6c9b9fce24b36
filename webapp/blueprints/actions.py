"""Manual governor actions (form → what-if preview → confirm) and the four-eyes approval queue.

GOVERNORS.md §11, CONSOLE.md §1.2–1.3. Views are thin: parse the form, call one service
(``transitions.preview`` / ``transitions.fire_event`` / ``services.approvals``), choose the response.
The role is checked on every POST by the engine's own definitions (``manual_actions``), whatever the
page showed: a role outside the row's ``by``/``requesters`` gets 403 with the reason.

Responses for htmx (fragments swapped into the card's action panel; the base template swaps 409 and
422): 200 applied, 202 request sent for approval, 409 stale version (the refreshed actions with
"the account changed since you opened this form: it is now locked; review and resubmit"), 422 bad
input (the form again, the message next to the field). Without htmx the same templates render as
whole pages.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, abort, make_response, redirect, render_template, request, url_for
from flask_login import current_user  # type: ignore[import-untyped,unused-ignore]
from sqlalchemy.orm import Session

from governors import AllowedEvent, get_governor
from webapp import relay_after_response
from webapp.current import roles as _roles
from webapp.current import rt as _rt
from webapp.forms import ActionForm, DecisionForm, apply_field_error, build_action_form
from webapp.htmx import is_htmx, render_page_or_block
from webapp.models import Approval, Customer, GovernorInstance, IdempotencyRecord
from webapp.policy import permission
from webapp.services import approvals as approval_service
from webapp.services import users
from webapp.services.actions import best_actions_for_row
from webapp.services.transitions import Actor, EventRequest, TransitionError, fire_event, preview

bp = Blueprint("actions", __name__)


GUARD_FIELDS = {
    "billing_refund_amount_ok": "amount_cents",
    "entitlement_refund_amount_ok": "amount_cents",
}
"""Guards whose failure is about one typed value: shown next to that field with 422."""


def utcnow() -> datetime:
    """Now, timezone-aware UTC (tests may monkeypatch this)."""
    return datetime.now(UTC)


# --------------------------------------------------------------------------- which actions, which role


def actions_for(
    session: Session, row: GovernorInstance, roles: Iterable[str], now: datetime, settings: Any
) -> list[AllowedEvent]:
    """What the card shows for this user: every manual action of the state, disabled ones with a reason."""
    return [a for a, _ in best_actions_for_row(session, row, roles, now, settings).values()]


# --------------------------------------------------------------------------- helpers


def _in_scope(tenant_id: str) -> bool:
    """True when the user may see the tenant's data (``current_user.tenant_ids``; None means all)."""
    scope = getattr(current_user, "tenant_ids", None)
    return scope is None or tenant_id in scope


def _instance(session: Session, instance_id: str) -> GovernorInstance:
    row = session.get(GovernorInstance, instance_id)
    if row is None or not _in_scope(row.tenant_id):
        abort(404, description="no such governor instance")
    return row


def _customer(session: Session, row: GovernorInstance) -> Customer | None:
    return session.get(Customer, row.customer_id) if row.customer_id else None


def _settings() -> Any:
    return _rt().settings


def _limits() -> tuple[int, int]:
    settings = _settings()
    return int(settings["engine.min_reason_length"]), min(2000, int(settings["engine.max_text_length"]))


def _form(action: AllowedEvent, version: int | None, *, fresh_key: bool = False) -> ActionForm:
    low, high = _limits()
    return build_action_form(
        action.inputs, version=version, min_reason=low, max_text=high, fresh_key=fresh_key
    )


def _context(
    session: Session, row: GovernorInstance, action: AllowedEvent, form: ActionForm, **extra: Any
) -> dict[str, Any]:
    gov = get_governor(row.governor)
    return {
        "instance": row,
        "governor_title": gov.title,
        "action": action,
        "form": form,
        "customer": _customer(session, row),
        "plan": extra.pop("plan", None),
        "error": extra.pop("error", None),
        **extra,
    }


def _resolve(session: Session, instance_id: str, event: str) -> tuple[GovernorInstance, AllowedEvent, str]:
    """The instance, the action as the user's best role sees it, and that role (404/403 otherwise)."""
    row = _instance(session, instance_id)
    best = best_actions_for_row(session, row, _roles(), utcnow(), _settings())
    if event not in best:
        state = row.state
        abort(
            409 if event in _all_manual_events(row.governor) else 404,
            description=f"'{event}' is not a staff action of the {get_governor(row.governor).title} "
            f"in state {state}",
        )
    action, role = best[event]
    return row, action, role


def _all_manual_events(governor: str) -> set[str]:
    return {e for t in get_governor(governor).transitions for e in t.events}


def _forbidden(row: GovernorInstance, action: AllowedEvent) -> Response:
    message = action.reason or "your role may not do this"
    if is_htmx():
        body = render_template("actions/_message.html", kind="error", message=message, instance=row)
        return make_response(body, 403)
    return make_response(
        render_template("errors/error.html", status=403, title="Not allowed", message=message), 403
    )


def _role_refusal(row: GovernorInstance, action: AllowedEvent) -> Response | None:
    """403 unless the role may trigger or request the row (guards are the engine's to judge)."""
    if action.allowed:
        return None
    if "you have" in action.reason and action.reason.startswith("needs "):
        return _forbidden(row, action)
    return None


# --------------------------------------------------------------------------- the form


@bp.get("/instances/<instance_id>/actions/<event>")
@permission("governor.act")
def action_form(instance_id: str, event: str) -> Response:
    """The action form (a page, or the fragment for the card's action panel)."""
    with _rt().db.session() as session:
        row, action, _role = _resolve(session, instance_id, event)
        refusal = _role_refusal(row, action)
        if refusal is not None:
            return refusal
        form = _form(action, row.version)
        return render_page_or_block(
            "actions/form.html", "action_panel", **_context(session, row, action, form)
        )


@bp.post("/instances/<instance_id>/actions/<event>/preview")
@permission("governor.preview")
def action_preview(instance_id: str, event: str) -> Response:
    """The what-if plan of the filled-in form (applies nothing)."""
    with _rt().db.session() as session:
        row, action, role = _resolve(session, instance_id, event)
        refusal = _role_refusal(row, action)
        if refusal is not None:
            return refusal
        form = _form(action, row.version)
        if not form.validate():
            return render_page_or_block(
                "actions/form.html", "action_panel", 422, **_context(session, row, action, form)
            )
        req = EventRequest(tenant_id=row.tenant_id, event=event, instance_id=row.id, payload=form.payload())
        plan = preview(
            session,
            req,
            Actor(current_user.id, role),
            utcnow(),
            settings=_settings(),
        )
        return render_page_or_block(
            "actions/form.html", "action_panel", **_context(session, row, action, form, plan=plan)
        )


@bp.post("/instances/<instance_id>/actions/<event>")
@permission("governor.act")
def action_submit(instance_id: str, event: str) -> Response:
    """Apply (200), request approval (202), or refuse: 403 role, 409 stale/not allowed, 422 bad input."""
    rt = _rt()
    with rt.db.session() as session:
        row = _instance(session, instance_id)
        posted = request.form.get("expected_version", "")
        key = f"web:{current_user.id}:{request.form.get('idempotency_key', '')}"
        replay = session.get(IdempotencyRecord, (row.tenant_id, key)) is not None
        if posted.isdigit() and int(posted) != row.version and not replay:
            # A stale tab: the action may not even exist in the new state; show the card as it is now.
            best = best_actions_for_row(session, row, _roles(), utcnow(), rt.settings)
            if event in best and (refusal := _role_refusal(row, best[event][0])) is not None:
                return refusal
            return _stale(session, row, event)
        row, action, role = _resolve(session, instance_id, event)
        refusal = _role_refusal(row, action)
        if refusal is not None:
            return refusal
        form = _form(action, row.version)
        if not form.validate():
            return render_page_or_block(
                "actions/form.html", "action_panel", 422, **_context(session, row, action, form)
            )
        req = EventRequest(
            tenant_id=row.tenant_id,
            event=event,
            instance_id=row.id,
            payload=form.payload(),
            expected_version=form.version(),
            idempotency_key=key,
        )
        # The reads above (role, form, staleness) end here: the event begins its own transaction
        # with its load and ends it with its write (the engine checks everything again, locked).
        session.commit()
        try:
            result = fire_event(
                session,
                req,
                Actor(current_user.id, role),
                utcnow(),
                settings=rt.settings,
                commit=True,  # what follows only reads, to render the result
            )
        except TransitionError as exc:
            form = _form(action, row.version, fresh_key=True)
            return render_page_or_block(
                "actions/form.html",
                "action_panel",
                exc.status,
                **_context(session, row, action, form, error=exc.message),
            )
        relay_after_response(result.outbox_ids)
        status, body = result.status, result.body
        if status == 200:
            response = render_page_or_block(
                "actions/result.html",
                "action_panel",
                200,
                instance=row,
                governor_title=get_governor(row.governor).title,
                action=action,
                body=body,
                replayed=result.replayed,
                approval=None,
                customer=_customer(session, row),
            )
            response.headers["HX-Trigger"] = "governor-changed"
            return response
        if status == 202:
            approval = session.get(Approval, body.get("approval_id"))
            return render_page_or_block(
                "actions/result.html",
                "action_panel",
                202,
                instance=row,
                governor_title=get_governor(row.governor).title,
                action=action,
                body=body,
                replayed=result.replayed,
                approval=approval,
                customer=_customer(session, row),
            )
        error = body.get("error", {})
        code, message = error.get("code", ""), error.get("message", "refused")
        details = error.get("details") or {}
        if status == 403:
            return _forbidden(row, replace(action, reason=message))
        if code == "stale_version":
            session.refresh(row)
            return _stale(session, row, event)
        field = (
            details.get("field") if code == "invalid_input" else GUARD_FIELDS.get(details.get("guard", ""))
        )
        form = _form(action, row.version, fresh_key=True)
        placed = apply_field_error(form, field, message) if field else False
        http = 422 if placed or status == 422 else status
        return render_page_or_block(
            "actions/form.html",
            "action_panel",
            http,
            **_context(session, row, action, form, error=None if placed else message),
        )


def _stale(session: Session, row: GovernorInstance, event: str) -> Response:
    gov = get_governor(row.governor)
    message = (
        f"the {approval_service.noun(row.governor)} changed since you opened this form: "
        f"it is now {row.state}; review and resubmit"
    )
    actions = actions_for(session, row, _roles(), utcnow(), _settings())
    return render_page_or_block(
        "actions/stale.html",
        "action_panel",
        409,
        instance=row,
        governor_title=gov.title,
        actions=actions,
        customer=_customer(session, row),
        message=message,
    )


# --------------------------------------------------------------------------- approvals


def _age(now: datetime, then: datetime) -> str:
    seconds = int((now - then).total_seconds())
    return _duration(seconds) + " ago"


def _duration(seconds: int) -> str:
    seconds = max(0, seconds)
    hours, rest = divmod(seconds, 3600)
    minutes = rest // 60
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min"


def _queue_context(session: Session, now: datetime) -> dict[str, Any]:
    user_id = current_user.id
    pending = [
        a
        for a in approval_service.pending_for(session, user_id, _roles(), now)
        if _in_scope(a.tenant_id) and approval_service.void_if_stale(session, a, now) is None
    ]
    mine = [a for a in approval_service.requested_by(session, user_id, now) if _in_scope(a.tenant_id)]
    return {
        "pending": pending,
        "mine": mine,
        "people": users.staff_emails(
            session, [a.requested_by for a in pending] + [a.decided_by for a in mine]
        ),
        "now": now,
        "age": lambda a: _age(now, a.created_at),
        "expires_in": lambda a: _duration(int((a.expires_at - now).total_seconds())),
        "title_of": _gov_title,
    }


def _gov_title(governor: str) -> str:
    try:
        return get_governor(governor).title
    except KeyError:
        return governor


@bp.get("/approvals")
@permission("approval.view")
def approvals_index() -> Response:
    """The queue: requests I may decide (with age and expiry), and my own requests."""
    with _rt().db.session() as session:
        return render_page_or_block("approvals/index.html", "queue", **_queue_context(session, utcnow()))


def _detail(
    session: Session,
    approval: Approval,
    now: datetime,
    *,
    status: int = 200,
    message: str = "",
    kind: str = "error",
) -> Response:
    form = DecisionForm()
    row = session.get(GovernorInstance, approval.instance_id)
    why = approval_service.why_not_approver(approval, current_user.id, _roles())
    body = render_template(
        "approvals/detail.html",
        approval=approval,
        instance=row,
        customer=session.get(Customer, approval.customer_id) if approval.customer_id else None,
        plan=approval.preview,
        form=form,
        why_not=why,
        message=message,
        kind=kind,
        age=_age(now, approval.created_at),
        people=users.staff_emails(session, [approval.requested_by, approval.decided_by]),
        expires_in=_duration(int((approval.expires_at - now).total_seconds())),
        title_of=_gov_title,
    )
    return make_response(body, status)


@bp.get("/approvals/<approval_id>")
@permission("approval.view")
def approval_detail(approval_id: str) -> Response:
    """One request: the stored preview, the inputs, who asked, and the decision form."""
    now = utcnow()
    with _rt().db.session() as session:
        approval = approval_service.get(session, approval_id, now)
        if approval is None or not _in_scope(approval.tenant_id):
            abort(404, description="no such approval request")
        if approval.status == "pending":
            approval_service.void_if_stale(session, approval, now)
        return _detail(session, approval, now)


def _scoped_approval(session: Session, approval_id: str, now: datetime) -> Approval:
    approval = approval_service.get(session, approval_id, now)
    if approval is None or not _in_scope(approval.tenant_id):
        abort(404, description="no such approval request")
    return approval


@bp.post("/approvals/<approval_id>/approve")
@permission("approval.decide")
def approval_approve(approval_id: str) -> Response:
    """Approve with a step-up code: fires the event as the requester's, approved by me."""
    now = utcnow()
    form = DecisionForm()
    rt = _rt()
    with rt.db.session() as session:
        _scoped_approval(session, approval_id, now)
        if not form.validate():
            approval = approval_service.get(session, approval_id, now)
            if approval is None:
                abort(404)
            return _detail(session, approval, now, status=422, message="check the fields below")
        decided = approval_service.approve(
            session,
            approval_id,
            user_id=current_user.id,
            roles=_roles(),
            code=form.code.data or "",
            note=form.note.data or "",
            now=now,
            settings=rt.settings,
        )
        if decided.result is not None:
            relay_after_response(decided.result.outbox_ids)
        if decided.approval is None:
            abort(404, description=decided.message)
        if decided.ok:
            return _detail(
                session, decided.approval, now, message="approved: the action was applied", kind="ok"
            )
        return _detail(session, decided.approval, now, status=decided.status, message=decided.message)


@bp.post("/approvals/<approval_id>/reject")
@permission("approval.decide")
def approval_reject(approval_id: str) -> Response:
    """Reject with a note."""
    now = utcnow()
    form = DecisionForm()
    with _rt().db.session() as session:
        _scoped_approval(session, approval_id, now)
        if not form.validate():
            approval = approval_service.get(session, approval_id, now)
            if approval is None:
                abort(404)
            return _detail(session, approval, now, status=422, message="check the fields below")
        decided = approval_service.reject(
            session, approval_id, user_id=current_user.id, roles=_roles(), note=form.note.data or "", now=now
        )
        if decided.approval is None:
            abort(404, description=decided.message)
        if decided.ok:
            return _detail(session, decided.approval, now, message="rejected", kind="ok")
        return _detail(session, decided.approval, now, status=decided.status, message=decided.message)


@bp.app_template_filter("cents")
def cents_filter(value: Any) -> str:
    """1234 → "12.34" (money is integer cents; the currency is shown next to it where known)."""
    try:
        cents = int(value)
    except (TypeError, ValueError):
        return str(value)
    sign = "-" if cents < 0 else ""
    whole, frac = divmod(abs(cents), 100)
    return f"{sign}{whole:,}.{frac:02d}"


def redirect_to_queue() -> Response:
    """Back to the queue (used after a decision without htmx)."""
    return redirect(url_for("actions.approvals_index"))  # type: ignore[return-value]


@bp.app_template_global("governor_name")
def governor_title_global(governor: str) -> str:
    """A governor's display title (templates: ``governor_name(step.governor)``)."""
    return _gov_title(governor)
