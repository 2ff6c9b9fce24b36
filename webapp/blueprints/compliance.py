"""The compliance desk (/compliance/): KYC queue, investigations, SAR and erasure queues, legal holds.

Views are thin: validate the form, call ``webapp.services.sar`` / ``erasure`` / ``compliance``,
flash and redirect (303), or re-render the desk with 422 and the form's errors. Reading the desk
needs ``dashboard.compliance`` (manager, admin, compliance, auditor); executing needs the
``compliance.*`` capabilities (compliance officers only; the auditor sub-role is read-only).
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
from flask_wtf import FlaskForm
from wtforms import PasswordField, StringField, TextAreaField
from wtforms.validators import InputRequired, ValidationError

from webapp.current import now as _now
from webapp.current import roles as _roles
from webapp.current import rt as _rt
from webapp.current import tenants as _tenants
from webapp.models import Customer, LegalHold, PrivacyRequest
from webapp.policy import can, permission
from webapp.services import audit_queries as aq
from webapp.services import compliance as desk
from webapp.services import erasure, sar
from webapp.services.queries import find_customer
from webapp.services.transitions import Actor
from webapp.services.users import staff_emails
from webapp.validation import InputError, clean_code, clean_text

bp = Blueprint("compliance", __name__, url_prefix="/compliance")

TEMPLATE = "compliance/index.html"


def _officer() -> Actor:
    return Actor(str(current_user.id), "compliance")


def _text(field: Any, label: str, min_length: int = 0, max_length: int = 500) -> None:
    try:
        field.data = clean_text(field.data, max_length=max_length, min_length=min_length, label=label)
    except InputError as exc:
        raise ValidationError(exc.message) from None


def _code(field: Any, label: str) -> None:
    try:
        field.data = clean_code(field.data, label=label)
    except InputError as exc:
        raise ValidationError(exc.message) from None
    if not field.data:
        raise ValidationError(f"enter {label}")


class SarForm(FlaskForm):  # type: ignore[misc]
    """A subject access request received from a customer (starts the 30-day clock)."""

    customer_id = StringField("Customer id", validators=[InputRequired()])
    reason = TextAreaField("How it was received", validators=[InputRequired()])

    def validate_customer_id(self, field: Any) -> None:
        _code(field, "the customer id")

    def validate_reason(self, field: Any) -> None:
        _text(field, "the reason", min_length=10)


class ErasureForm(FlaskForm):  # type: ignore[misc]
    """An erasure request (a second compliance officer approves it)."""

    customer_id = StringField("Customer id", validators=[InputRequired()])
    ownership_verification = StringField("Ownership verification ref", validators=[InputRequired()])
    reason = TextAreaField("Reason", validators=[InputRequired()])

    def validate_customer_id(self, field: Any) -> None:
        _code(field, "the customer id")

    def validate_ownership_verification(self, field: Any) -> None:
        _code(field, "the ownership verification reference")

    def validate_reason(self, field: Any) -> None:
        _text(field, "the reason", min_length=10)


class ApproveForm(FlaskForm):  # type: ignore[misc]
    """The second officer's approval: a step-up code and an optional note."""

    code = PasswordField("Authenticator code", validators=[InputRequired()])
    note = TextAreaField("Note")

    def validate_note(self, field: Any) -> None:
        _text(field, "the note")


class RejectForm(FlaskForm):  # type: ignore[misc]
    """Rejecting an erasure request needs a note."""

    note = TextAreaField("Why", validators=[InputRequired()])

    def validate_note(self, field: Any) -> None:
        _text(field, "the note", min_length=3)


class HoldForm(FlaskForm):  # type: ignore[misc]
    """Place a legal hold (a case or court reference)."""

    customer_id = StringField("Customer id", validators=[InputRequired()])
    reference = StringField("Case reference", validators=[InputRequired()])

    def validate_customer_id(self, field: Any) -> None:
        _code(field, "the customer id")

    def validate_reference(self, field: Any) -> None:
        _code(field, "the case reference")


class ReleaseForm(FlaskForm):  # type: ignore[misc]
    """Release a legal hold (CSRF only)."""


def _desk(status: int = 200, **forms: Any) -> Response:
    """The desk page, with the given forms (bound, with errors) replacing fresh ones."""
    now = _now()
    roles = _roles()
    tenants = _tenants()
    with _rt().db.session() as s:
        queue = desk.privacy_queue(s, now=now, tenants=tenants)
        recent = desk.recent_requests(s, tenants=tenants)
        holds = desk.active_holds(s, tenants=tenants)
        integrity = desk.last_integrity_run(s, tenants=tenants)
        people: list[str | None] = [q.request.requested_by for q in queue]
        people += [r.fulfilled_by or r.decided_by for r in recent] + [h.placed_by for h in holds]
        context = {
            "now": now,
            "cases": desk.cases(s, now=now, roles=roles, tenants=tenants),
            "queue": queue,
            "recent": recent,
            "holds": holds,
            "integrity": integrity,
            "emails": staff_emails(s, [*people, integrity.actor if integrity else None]),
            "kyc_count": len(aq.kyc_queue(s, now=now, tenants=tenants)),
            "user_id": str(current_user.id),
            "can_sar": can(roles, "compliance.sar"),
            "can_erase": can(roles, "compliance.erasure"),
            "can_hold": can(roles, "compliance.legal_hold"),
            "can_verify": can(roles, "audit.verify"),
            "can_export": can(roles, "audit.export"),
            "can_audit": can(roles, "audit.view"),
            "can_act": can(roles, "governor.act"),
            "sar_form": forms.get("sar_form") or SarForm(formdata=None),
            "erasure_form": forms.get("erasure_form") or ErasureForm(formdata=None),
            "hold_form": forms.get("hold_form") or HoldForm(formdata=None),
            "approve_form": ApproveForm(formdata=None),
            "reject_form": RejectForm(formdata=None),
            "release_form": ReleaseForm(formdata=None),
            "error": forms.get("error", ""),
        }
        body = render_template(TEMPLATE, **context)
    return make_response(body, status)


def _customer(session: Any, customer_id: str) -> Customer | None:
    return find_customer(session, customer_id, _tenants())


def _scoped(model: Any, row_id: str) -> None:
    """404 unless the request or hold exists in a tenant the user may see."""
    scope = _tenants()
    with _rt().db.session() as s:
        row = s.get(model, row_id)
        if row is None or (scope is not None and row.tenant_id not in scope):
            abort(404, description="No such request or hold.")


def _done(message: str) -> Response:
    flash(message, "success")
    return redirect(url_for("compliance.index"), code=303)  # type: ignore[return-value]


@bp.get("/")
@permission("dashboard.compliance")
def index() -> Response:
    """The desk: cases with deadlines, SAR and erasure queues, legal holds, integrity and export."""
    return _desk()


@bp.get("/kyc")
@permission("dashboard.compliance")
def kyc() -> Response:
    """The KYC review queue: accounts in manual review and open compliance audits, with deadlines."""
    now = _now()
    with _rt().db.session() as s:
        items = aq.kyc_queue(s, now=now, tenants=_tenants())
    return make_response(render_template("compliance/kyc.html", items=items, now=now), 200)


def _sar_page(form: SarForm, status: int) -> Response:
    """The SAR form on its own page (support files requests there; they have no desk)."""
    if can(_roles(), "dashboard.compliance"):
        return _desk(status, sar_form=form)
    return make_response(render_template("compliance/sar_new.html", sar_form=form), status)


@bp.get("/sar/new")
@permission("compliance.sar_request")
def new_sar() -> Response:
    """File a subject access request received from a customer (support: request only)."""
    form = SarForm(formdata=None)
    form.customer_id.data = request.args.get("customer", "")[:64]
    return _sar_page(form, 200)


@bp.post("/sar")
@permission("compliance.sar_request")
def open_sar() -> Response:
    """Record a received subject access request; the 30-day clock starts now (CONSOLE.md §1.2:
    support may file it, a compliance officer exports it)."""
    form = SarForm()
    if not form.validate_on_submit():
        return _sar_page(form, 422)
    role = "compliance" if "compliance" in _roles() else "support"
    due = ""
    with _rt().db.session() as s:
        customer = _customer(s, form.customer_id.data)
        if customer is not None:
            actor = Actor(str(current_user.id), role)
            filed = sar.open_sar(s, customer, reason=form.reason.data, actor=actor, now=_now())
            due, customer_id = filed.due_at.strftime("%Y-%m-%d"), customer.id
    if not due:
        form.customer_id.errors = [*form.customer_id.errors, "no customer with this id"]
        return _sar_page(form, 422)
    if role == "compliance":
        return _done(f"Subject access request recorded; due {due}.")
    flash(f"Subject access request recorded; compliance must answer by {due}.", "success")
    return redirect(url_for("console.customer", customer_id=customer_id), code=303)  # type: ignore[return-value]


@bp.post("/sar/<request_id>/export")
@permission("compliance.sar")
def export_sar(request_id: str) -> Response:
    """Download the customer's SAR bundle (JSON); fulfils the request; audited."""
    _scoped(PrivacyRequest, request_id)
    if not ReleaseForm().validate_on_submit():
        abort(400, description="The form expired; reload the page and try again.")
    with _rt().db.session() as s:
        try:
            filed, body = sar.export_sar(s, request_id, actor=_officer(), now=_now())
        except sar.SarError as exc:
            s.rollback()
            abort(exc.status, description=exc.message)
        name = f"sar-{filed.customer_id}-{filed.id}.json"
    response = make_response(body, 200)
    response.headers["Content-Type"] = "application/json; charset=utf-8"
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/erasure")
@permission("compliance.erasure")
def request_erasure() -> Response:
    """Ask for an erasure; a second compliance officer must approve it."""
    form = ErasureForm()
    if not form.validate_on_submit():
        return _desk(422, erasure_form=form)
    failure: erasure.ErasureError | None = None
    with _rt().db.session() as s:
        customer = _customer(s, form.customer_id.data)
        try:
            if customer is None:
                raise erasure.ErasureError(422, "no customer with this id", field="customer_id")
            erasure.request_erasure(
                s,
                customer,
                reason=form.reason.data,
                ownership_verification=form.ownership_verification.data,
                actor=_officer(),
                now=_now(),
            )
        except erasure.ErasureError as exc:
            s.rollback()
            failure = exc
    if failure is not None:
        if failure.field == "customer_id":
            form.customer_id.errors = [*form.customer_id.errors, failure.message]
        return _desk(failure.status, erasure_form=form, error=failure.message)
    return _done("Erasure requested; a second compliance officer must approve it.")


@bp.post("/erasure/<request_id>/approve")
@permission("compliance.erasure")
def approve_erasure(request_id: str) -> Response:
    """Second officer: approve (step-up code), which archives the account and erases the PII."""
    _scoped(PrivacyRequest, request_id)
    form = ApproveForm()
    if not form.validate_on_submit():
        return _desk(422, error="Enter your authenticator code to approve.")
    failure: erasure.ErasureError | None = None
    with _rt().db.session() as s:
        try:
            report = erasure.approve_erasure(
                s,
                request_id,
                user_id=str(current_user.id),
                roles=_roles(),
                code=form.code.data,
                note=form.note.data or "",
                now=_now(),
            )
        except erasure.ErasureError as exc:
            # A request the approvals service closed (voided, expired) stays closed; refusals roll back.
            if not exc.keep:
                s.rollback()
            failure = exc
    if failure is not None:
        return _desk(failure.status, error=failure.message)
    left = f"; PII left in {', '.join(report.residue)}" if report.residue else ""
    return _done(f"Erasure approved and carried out for {report.customer_id}{left}.")


@bp.post("/erasure/<request_id>/reject")
@permission("compliance.erasure")
def reject_erasure(request_id: str) -> Response:
    """Reject an erasure request with a note."""
    _scoped(PrivacyRequest, request_id)
    form = RejectForm()
    if not form.validate_on_submit():
        return _desk(422, error="Say why you reject the erasure request.")
    failure: erasure.ErasureError | None = None
    with _rt().db.session() as s:
        try:
            erasure.reject_erasure(
                s, request_id, user_id=str(current_user.id), roles=_roles(), note=form.note.data, now=_now()
            )
        except erasure.ErasureError as exc:
            s.rollback()
            failure = exc
    if failure is not None:
        return _desk(failure.status, error=failure.message)
    return _done("Erasure request rejected.")


@bp.post("/holds")
@permission("compliance.legal_hold")
def place_hold() -> Response:
    """Place a legal hold on a customer's data (blocks erasure)."""
    form = HoldForm()
    if not form.validate_on_submit():
        return _desk(422, hold_form=form)
    placed = False
    with _rt().db.session() as s:
        customer = _customer(s, form.customer_id.data)
        if customer is not None:
            erasure.place_hold(s, customer, reference=form.reference.data, actor=_officer(), now=_now())
            placed = True
    if not placed:
        form.customer_id.errors = [*form.customer_id.errors, "no customer with this id"]
        return _desk(422, hold_form=form)
    return _done("Legal hold placed.")


@bp.post("/holds/<hold_id>/release")
@permission("compliance.legal_hold")
def release_hold(hold_id: str) -> Response:
    """Release a legal hold."""
    _scoped(LegalHold, hold_id)
    if not ReleaseForm().validate_on_submit():
        abort(400, description="The form expired; reload the page and try again.")
    with _rt().db.session() as s:
        try:
            erasure.release_hold(s, hold_id, actor=_officer(), now=_now())
        except erasure.ErasureError as exc:
            s.rollback()
            abort(exc.status, description=exc.message)
    return _done("Legal hold released.")
