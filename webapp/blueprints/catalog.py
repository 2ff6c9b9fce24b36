"""The admins' SKU catalog (``/catalog``): list, editor, revisions and diffs, lifecycle actions.

GOVERNORS.md §3 and §11 rows 21–28, CONSOLE.md §3.5. Everyone may look (``catalog.view``); every
change needs ``catalog.edit`` (admin) *and* whatever the governor's row says (role, four-eyes),
checked on the server whatever the page showed: read-only viewers see the buttons disabled with
the reason ("needs admin; you have support"), and a forged POST gets that 403.

Views only parse a form, call ``webapp.services.catalog_admin`` (which fires every event through
``transitions.fire_event``) and pick a page: 303 to the SKU after an applied change, 202 with the
approval request for four-eyes rows, 422 with the message next to the field for bad input (nothing
changes), 409 for a stale editor (what changed since it was opened) or an event the state refuses.
The lifecycle actions reuse the console's action forms (``webapp.forms.action_form_class``: one
field per declared input, reason code and comment, idempotency key, expected version).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Final

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
from flask_login import current_user  # type: ignore[import-untyped,unused-ignore]
from flask_wtf import FlaskForm  # type: ignore[import-untyped,unused-ignore]
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response as WerkzeugResponse
from wtforms import (  # type: ignore[import-untyped,unused-ignore]
    Field,
    HiddenField,
    SelectField,
    StringField,
    TextAreaField,
)
from wtforms.fields.choices import SelectChoice  # type: ignore[import-untyped,unused-ignore]
from wtforms.validators import InputRequired, Optional, ValidationError  # type: ignore[import-untyped,unused-ignore]

from governors import AllowedEvent, get_governor
from governors.rules.catalog import sku_field_errors
from webapp import relay_after_response
from webapp.current import roles as _roles
from webapp.current import rt as _rt
from webapp.diagrams import render_svg
from webapp.forms import ActionForm, action_form_class, apply_field_error, reason_choices
from webapp.htmx import render_page_or_block
from webapp.models import Approval, GovernorInstance
from webapp.policy import can, permission, why_not
from webapp.services import approvals as approval_service
from webapp.services import catalog_admin
from webapp.services.transitions import Actor, EventResult
from webapp.validation import InputError, clean_text

bp = Blueprint("catalog", __name__, url_prefix="/catalog")

VIEW: Final = "catalog.view"
EDIT: Final = "catalog.edit"

EDITOR_EVENTS: Final = frozenset({"create_draft", "edit_draft"})
"""Rows the SKU editor handles (the other manual rows use the action form)."""

GUARD_FIELDS: Final = {
    "catalog_price_valid": "new_price_cents",
    "catalog_effective_in_future": "effective_at",
    "catalog_tier_matches": "tier",
    "catalog_increase_notice_ok": "effective_at",
    "catalog_feature_name_valid": "feature_name",
    "catalog_no_self_dependency": "dependencies",
    "catalog_dependencies_exist": "dependencies",
    "catalog_breaking_notice_ok": "effective_at",
    "catalog_featured_price_valid": "featured_price_cents",
    "catalog_campaign_end_in_future": "ends_at",
    "catalog_replacement_on_sale": "replacement_sku",
    "catalog_holders_confirmed": "confirm_no_holders",
}
"""Guards whose refusal is about one typed value: shown next to that field (422)."""

_LIMIT_LINE = re.compile(r"^\s*([^=:]+?)\s*[=:]\s*(-?\d+)\s*$")


def utcnow() -> datetime:
    """Now, timezone-aware UTC."""
    return datetime.now(UTC)


def _access() -> dict[str, Any]:
    roles = _roles()
    edit = can(roles, EDIT)
    return {"can_edit": edit, "why_not_edit": "" if edit else why_not(roles, EDIT)}


def _min_reason() -> int:
    return int(_rt().settings["engine.min_reason_length"])


def _sku_or_404(session: Session, sku_id: str) -> GovernorInstance:
    row = catalog_admin.find_sku(session, sku_id)
    if row is None:
        abort(404, description=f"no SKU {sku_id}")
    return row


# --------------------------------------------------------------------------- the SKU editor form


class _Cents:
    """A price typed as whole cents ("4999"), with a message that says so."""

    def __call__(self, form: FlaskForm, field: Field) -> None:
        raw = (field.data or "").strip().replace("_", "")
        if not raw:
            return
        if not re.fullmatch(r"-?\d+", raw):
            raise ValidationError("Price must be a whole number of cents, e.g. 4999 for 49.99")
        field.parsed = int(raw)


class _Text:
    """``webapp.validation.clean_text`` (control characters, card numbers) with the field's label."""

    def __init__(self, max_length: int) -> None:
        self.max_length = max_length

    def __call__(self, form: FlaskForm, field: Field) -> None:
        try:
            field.data = clean_text(field.data or "", max_length=self.max_length, label=str(field.label.text))
        except InputError as exc:
            raise ValidationError(exc.message) from None


class SkuForm(FlaskForm):  # type: ignore[misc,unused-ignore]
    """A SKU draft: the §3 fields, a change note, and the versions the editor was opened at."""

    sku_id = StringField("SKU id", validators=[Optional(), _Text(80)], render_kw={"maxlength": 80})
    name = StringField("Name", validators=[Optional(), _Text(400)])
    description = TextAreaField("Description", validators=[Optional(), _Text(10_000)], render_kw={"rows": 4})
    price_cents = StringField(
        "Price (cents)", validators=[Optional(), _Cents()], render_kw={"inputmode": "numeric"}
    )
    currency = StringField("Currency", validators=[Optional(), _Text(8)], render_kw={"maxlength": 3})
    tier = SelectField("Tier", validators=[Optional()])
    features = TextAreaField(
        "Features",
        validators=[Optional(), _Text(10_000)],
        render_kw={"rows": 3, "placeholder": "one feature id per line, e.g. api-access"},
    )
    limits = TextAreaField(
        "Limits",
        validators=[Optional(), _Text(10_000)],
        render_kw={"rows": 3, "placeholder": "one per line: name = number, e.g. api_calls = 100000"},
    )
    comment = TextAreaField("Change note (why)", render_kw={"rows": 2})
    row_version = HiddenField()
    sku_version = HiddenField()
    idempotency_key = HiddenField(
        validators=[InputRequired(message="the form is missing its key; reload it")]
    )

    def validate_idempotency_key(self, field: Field) -> None:
        try:
            uuid.UUID(str(field.data))
        except ValueError:
            raise ValidationError("the form key is malformed; reload the form") from None

    def validate_limits(self, field: Field) -> None:
        field.parsed = {}
        for n, line in enumerate((field.data or "").splitlines(), start=1):
            if not line.strip():
                continue
            match = _LIMIT_LINE.match(line)
            if match is None:
                raise ValidationError(f"line {n}: write name = number, e.g. api_calls = 100000")
            field.parsed[match.group(1)] = int(match.group(2))

    def validate_comment(self, field: Field) -> None:
        low = _min_reason()
        try:
            field.data = clean_text(
                field.data or "", max_length=2000, min_length=low, label="the change note"
            )
        except InputError as exc:
            raise ValidationError(exc.message) from None
        if len(field.data) < low:
            raise ValidationError(f"say why, in at least {low} characters")

    def fields_typed(self) -> dict[str, Any]:
        """The SKU fields as the governor takes them (typed; blank text → None)."""
        features = [f.strip() for f in re.split(r"[\n,]", self.features.data or "") if f.strip()]
        return {
            "name": (self.name.data or "").strip() or None,
            "description": (self.description.data or "").strip() or None,
            "price_cents": getattr(self.price_cents, "parsed", None),
            "currency": (self.currency.data or "").strip() or None,
            "tier": self.tier.data or None,
            "features": features,
            "limits": dict(getattr(self.limits, "parsed", {}) or {}),
        }

    def schema_errors(self, *, sku_id: str) -> None:
        """Run the governor's §3 schema rules on the whole SKU and put each message next to its field.

        An edit checks every field too, so clearing a required one says so instead of keeping the
        old value silently.
        """
        fields = {**self.fields_typed(), "sku_id": sku_id or None}
        errors = sku_field_errors({k: v for k, v in fields.items() if v is not None}, _rt().settings)
        self.put_errors(errors)

    def put_errors(self, errors: dict[str, str]) -> None:
        """Attach ``{field: message}`` (field names of the governor) to the form's fields."""
        for name, message in errors.items():
            target = self[name] if name in self and name != "form" else None
            label = catalog_admin.FIELD_LABELS.get(name, name)
            text = message if message[:1].isupper() else f"{label} {message}"
            if target is None:
                self.form_errors.append(text)
            elif not target.errors:  # one message per field: the form's own check already spoke
                target.errors = [*target.errors, text]

    def has_errors(self) -> bool:
        return bool(self.form_errors) or any(f.errors for f in self)


def _tier_choices() -> list[Any]:
    return [SelectChoice("", "— choose —"), *(SelectChoice(t, t) for t in _rt().settings["catalog.tiers"])]


def _sku_form(row: GovernorInstance | None = None) -> SkuForm:
    form = SkuForm()
    form.tier.choices = _tier_choices()
    if not form.is_submitted():
        form.idempotency_key.data = str(uuid.uuid4())
        if row is None:
            form.currency.data = _rt().settings["catalog.default_currency"]
        else:
            _fill(form, row)
    return form


def _fill(form: SkuForm, row: GovernorInstance) -> None:
    data = row.data or {}
    form.name.data = data.get("name") or ""
    form.description.data = data.get("description") or ""
    form.price_cents.data = "" if data.get("price_cents") is None else str(data["price_cents"])
    form.currency.data = data.get("currency") or _rt().settings["catalog.default_currency"]
    form.tier.data = data.get("tier") or ""
    form.features.data = "\n".join(data.get("features") or [])
    form.limits.data = "\n".join(f"{k} = {v}" for k, v in (data.get("limits") or {}).items())
    form.row_version.data = str(row.version)
    form.sku_version.data = str(data.get("version") or 0)


def _int(raw: Any) -> int | None:
    text = str(raw or "").strip()
    return int(text) if text.isdigit() else None


# --------------------------------------------------------------------------- list


@bp.get("/")
@permission(VIEW)
def index() -> Response:
    """Every SKU with its state, price and version; filters by state, tier, attention and text."""
    state = request.args.get("state") or None
    tier = request.args.get("tier") or None
    query = (request.args.get("q") or "").strip()[:100]
    attention = request.args.get("attention") == "1"
    gov = get_governor(catalog_admin.GOVERNOR)
    if state is not None and state not in {s.name for s in gov.states}:
        state = None
    now = utcnow()
    with _rt().db.session() as s:
        skus = catalog_admin.list_skus(s, now, state=state, tier=tier, query=query, attention=attention)
        counts = catalog_admin.state_counts(s)
        issues = catalog_admin.catalog_checks(s, _rt().settings)
        return render_page_or_block(
            "catalog/index.html",
            "results",
            skus=skus,
            counts=counts,
            issues=issues,
            total=sum(counts.values()) - counts.get("archived", 0),
            states=[st.name for st in gov.states],
            tiers=list(_rt().settings["catalog.tiers"]),
            filters={"state": state or "", "tier": tier or "", "q": query, "attention": attention},
            **_access(),
        )


# --------------------------------------------------------------------------- create


def _new_page(form: SkuForm, status: int = 200, error: str | None = None) -> Response:
    return make_response(render_template("catalog/new.html", form=form, error=error, **_access()), status)


@bp.get("/new")
@permission(EDIT)
def new() -> Response:
    """The empty SKU editor."""
    return _new_page(_sku_form())


@bp.post("/new")
@permission(EDIT)
def create() -> Response | WerkzeugResponse:
    """P01: save a new draft (422 with field errors, nothing created, when the schema rules fail)."""
    form = _sku_form()
    valid = form.validate()
    sku_id = (form.sku_id.data or "").strip()
    form.schema_errors(sku_id=sku_id)
    if not valid or form.has_errors():
        return _new_page(form, 422)
    with _rt().db.session() as s:
        saved = catalog_admin.create_draft(
            s,
            form.fields_typed(),
            sku_id=sku_id,
            actor=Actor(current_user.id, "admin"),
            reason=form.comment.data,
            now=utcnow(),
            settings=_rt().settings,
            idempotency_key=f"web:{current_user.id}:{form.idempotency_key.data}",
        )
        if saved.field_errors:
            form.put_errors(saved.field_errors)
            return _new_page(form, 422)
        assert saved.result is not None
        if not saved.result.ok:
            form.idempotency_key.data = str(uuid.uuid4())
            return _new_page(form, saved.status, _message(saved.result))
        relay_after_response(saved.result.outbox_ids)
    flash(f"Draft {sku_id} saved as version 1.", "success")
    return redirect(url_for("catalog.detail", sku_id=sku_id), code=303)


def _message(result: EventResult) -> str:
    return str((result.body.get("error") or {}).get("message") or "refused")


# --------------------------------------------------------------------------- detail


def _actions(session: Session, row: GovernorInstance) -> list[dict[str, Any]]:
    """Every manual action of the SKU's state, as buttons: allowed, or disabled with the reason."""
    roles = _roles()
    edit = can(roles, EDIT)
    best = catalog_admin.catalog_actions(session, row, roles, utcnow(), _rt().settings)
    out: list[dict[str, Any]] = []
    for event, (action, _role) in best.items():
        if event == "create_draft":
            continue
        if event == "edit_draft":
            url = url_for("catalog.edit", sku_id=row.subject_id)
        else:
            url = url_for("catalog.action", sku_id=row.subject_id, event=event)
        why = "" if edit else why_not(roles, EDIT)
        if not why and not action.allowed:
            why = action.reason
        out.append({"event": event, "title": action.title, "url": url, "mode": action.mode, "why": why})
    return out


def _recent(records: Iterable[Any]) -> list[tuple[str | None, str]]:
    return [(r.from_state, r.to_state) for r in reversed(list(records)[:6])]


@bp.get("/<sku_id>/")
@permission(VIEW)
def detail(sku_id: str) -> Response:
    """One SKU: its fields, state diagram, actions, pending approvals, revisions and history."""
    now = utcnow()
    with _rt().db.session() as s:
        row = _sku_or_404(s, sku_id)
        records = catalog_admin.history(s, row)
        revs = catalog_admin.revisions(s, row)
        pending = approval_service.for_instance(s, row.id, now)
        names = catalog_admin.display_names(s, [r.actor for r in records] + [a.requested_by for a in pending])
        gov = get_governor(catalog_admin.GOVERNOR)
        body = render_template(
            "catalog/detail.html",
            row=row,
            data=row.data or {},
            sku=catalog_admin.sku_fields(row.data or {}),
            scheduled=catalog_admin.scheduled_price(row.data or {}, now),
            labels=catalog_admin.FIELD_LABELS,
            state_meaning=next((st.description for st in gov.states if st.name == row.state), ""),
            svg=render_svg(gov, row.state, _recent(records)),
            actions=_actions(s, row),
            approvals=pending,
            revisions=list(reversed(revs)),
            history=records,
            names=names,
            **_access(),
        )
        return make_response(body)


# --------------------------------------------------------------------------- edit a draft


def _edit_page(
    session: Session,
    row: GovernorInstance,
    form: SkuForm,
    status: int = 200,
    *,
    conflict: catalog_admin.Conflict | None = None,
    error: str | None = None,
) -> Response:
    names = catalog_admin.display_names(session, [r.actor for r in conflict.by]) if conflict else {}
    body = render_template(
        "catalog/edit.html",
        row=row,
        form=form,
        conflict=conflict,
        error=error,
        names=names,
        editable=row.state in catalog_admin.EDITABLE_STATES,
        **_access(),
    )
    return make_response(body, status)


@bp.get("/<sku_id>/edit")
@permission(EDIT)
def edit(sku_id: str) -> Response:
    """The SKU editor on the current draft (the form remembers which version it was opened at)."""
    with _rt().db.session() as s:
        row = _sku_or_404(s, sku_id)
        form = _sku_form(row)
        status = 200 if row.state in catalog_admin.EDITABLE_STATES else 409
        error = None if status == 200 else f"{sku_id} is {row.state}: only a draft can be edited"
        return _edit_page(s, row, form, status, error=error)


@bp.post("/<sku_id>/edit")
@permission(EDIT)
def save(sku_id: str) -> Response | WerkzeugResponse:
    """P02: save the next revision; 409 (with what changed) if someone saved one since, 422 bad fields."""
    with _rt().db.session() as s:
        row = _sku_or_404(s, sku_id)
        form = _sku_form(row)
        valid = form.validate()
        form.schema_errors(sku_id=str(row.subject_id))
        row_version, sku_version = _int(form.row_version.data), _int(form.sku_version.data)
        if row_version is None or sku_version is None:
            form.form_errors.append("the form lost the version it was opened at; reload the editor")
        if not valid or form.has_errors():
            return _edit_page(s, row, form, 422)
        assert row_version is not None and sku_version is not None
        if row.state not in catalog_admin.EDITABLE_STATES:
            conflict = catalog_admin.conflict_since(s, row, sku_version)
            return _edit_page(s, row, form, 409, conflict=conflict)
        saved = catalog_admin.save_draft(
            s,
            row,
            form.fields_typed(),
            row_version=row_version,
            sku_version=sku_version,
            actor=Actor(current_user.id, "admin"),
            reason=form.comment.data,
            now=utcnow(),
            settings=_rt().settings,
            idempotency_key=f"web:{current_user.id}:{form.idempotency_key.data}",
        )
        form.idempotency_key.data = str(uuid.uuid4())
        if saved.conflict is not None:
            # The editor now carries the current versions: saving again is a deliberate overwrite
            # of what the conflict panel shows, never a silent one.
            form.row_version.data = str(row.version)
            form.sku_version.data = str(saved.conflict.current_version)
            return _edit_page(s, row, form, 409, conflict=saved.conflict)
        if saved.field_errors:
            form.put_errors(saved.field_errors)
            return _edit_page(s, row, form, 422)
        assert saved.result is not None
        if not saved.result.ok:
            return _edit_page(s, row, form, saved.status, error=_message(saved.result))
        relay_after_response(saved.result.outbox_ids)
        version = (row.data or {}).get("version")
    flash(f"Saved {sku_id} as version {version}.", "success")
    return redirect(url_for("catalog.detail", sku_id=sku_id), code=303)


# --------------------------------------------------------------------------- diff


@bp.get("/<sku_id>/diff")
@permission(VIEW)
def diff(sku_id: str) -> Response:
    """Two revisions field by field (old → new); ``a`` and ``b`` are SKU versions."""
    with _rt().db.session() as s:
        row = _sku_or_404(s, sku_id)
        revs = catalog_admin.revisions(s, row)
        a, b = _int(request.args.get("a")), _int(request.args.get("b"))
        if a is None and b is None and len(revs) >= 2:
            a, b = revs[-2].number, revs[-1].number
        old = catalog_admin.revision(revs, a) if a is not None else None
        new = catalog_admin.revision(revs, b) if b is not None else None
        if old is None or new is None:
            numbers = ", ".join(str(r.number) for r in revs) or "none"
            message = f"choose two revisions of {sku_id} to compare (versions: {numbers})"
            return make_response(
                render_template("errors/error.html", status=400, title="Pick two revisions", message=message),
                400,
            )
        return make_response(
            render_template(
                "catalog/diff.html",
                row=row,
                old=old,
                new=new,
                changes=catalog_admin.diff(old.fields, new.fields),
                revisions=revs,
                names=catalog_admin.display_names(s, [old.actor, new.actor]),
            )
        )


# --------------------------------------------------------------------------- lifecycle actions


def _resolve(session: Session, row: GovernorInstance, event: str) -> tuple[AllowedEvent, str]:
    best = catalog_admin.catalog_actions(session, row, _roles(), utcnow(), _rt().settings)
    if event in EDITOR_EVENTS or event not in best:
        known = {e for t in get_governor(catalog_admin.GOVERNOR).transitions for e in t.events}
        abort(
            409 if event in known else 404,
            description=f"'{event}' is not a staff action on a SKU in state {row.state}",
        )
    return best[event]


def _action_form(session: Session, row: GovernorInstance, action: AllowedEvent) -> ActionForm:
    """The console's action form for the row's inputs, with the catalog's own widgets."""
    data = row.data or {}
    base = action_form_class(action.inputs, min_reason=_min_reason())
    extra: dict[str, Any] = {}
    names = {i.name for i in action.inputs}
    if "replacement_sku" in names:
        on_sale = catalog_admin.replacement_choices(session, str(row.subject_id))
        choices = [SelectChoice("", "— no replacement —"), *(SelectChoice(v, label) for v, label in on_sale)]
        extra["in_replacement_sku"] = SelectField("Replacement SKU (published or featured)", choices=choices)
    if "expected_version" in names:
        extra["in_expected_version"] = HiddenField()
    cls = type("CatalogActionForm", (base,), extra) if extra else base
    form: ActionForm = cls()
    form.reason_code.choices = [
        SelectChoice("", "— choose —"),
        *(SelectChoice(c, c.replace("_", " ")) for c in reason_choices(action.inputs)),
    ]
    if not form.is_submitted():
        form.idempotency_key.data = str(uuid.uuid4())
        form.expected_version.data = str(row.version)
        if "expected_version" in names:
            form["in_expected_version"].data = str(data.get("version") or 0)
        if "tier" in names:
            form["in_tier"].data = data.get("tier") or ""
    return form


def _payload(form: ActionForm) -> dict[str, Any]:
    payload = form.payload()
    if "expected_version" in payload:
        payload["expected_version"] = _int(payload["expected_version"])
    return payload


def _action_page(
    row: GovernorInstance, action: AllowedEvent, form: ActionForm, status: int = 200, **extra: Any
) -> Response:
    body = render_template(
        "catalog/action.html",
        row=row,
        action=action,
        form=form,
        error=extra.pop("error", None),
        approval=extra.pop("approval", None),
        **_access(),
        **extra,
    )
    return make_response(body, status)


@bp.route("/<sku_id>/actions/<event>", methods=["GET", "POST"])
@permission(EDIT)
def action(sku_id: str, event: str) -> Response | WerkzeugResponse:
    """A lifecycle action on the SKU: submit, price, features, promotion, deprecation, archive ..."""
    rt = _rt()
    with rt.db.session() as s:
        row = _sku_or_404(s, sku_id)
        allowed, role = _resolve(s, row, event)
        if not allowed.allowed and allowed.reason.startswith("needs "):
            return make_response(
                render_template("errors/error.html", status=403, title="Not allowed", message=allowed.reason),
                403,
            )
        form = _action_form(s, row, allowed)
        if request.method == "GET":
            return _action_page(row, allowed, form)
        if not form.validate():
            return _action_page(row, allowed, form, 422)
        result = catalog_admin.fire(
            s,
            row,
            event,
            _payload(form),
            actor=Actor(current_user.id, role),
            now=utcnow(),
            expected_version=form.version(),
            settings=rt.settings,
            idempotency_key=f"web:{current_user.id}:{form.idempotency_key.data}",
        )
        if result.status == 200:
            relay_after_response(result.outbox_ids)
            s.refresh(row)
            flash(f"{allowed.title}: applied; {sku_id} is now {row.state}.", "success")
            return redirect(url_for("catalog.detail", sku_id=sku_id), code=303)
        if result.status == 202:
            approval = s.get(Approval, result.body.get("approval_id"))
            return _action_page(row, allowed, form, 202, approval=approval)
        form.idempotency_key.data = str(uuid.uuid4())
        error = result.body.get("error") or {}
        code, message = error.get("code", ""), str(error.get("message", "refused"))
        details = error.get("details") or {}
        if code == "stale_version":
            s.refresh(row)
            form.expected_version.data = str(row.version)
            message = (
                f"the SKU changed since you opened this form: it is now {row.state} "
                f"(version {(row.data or {}).get('version')}); review and resubmit"
            )
            return _action_page(row, allowed, form, 409, error=message)
        field = (
            details.get("field") if code == "invalid_input" else GUARD_FIELDS.get(details.get("guard", ""))
        )
        if field and apply_field_error(form, field, message):
            return _action_page(row, allowed, form, 422)
        return _action_page(row, allowed, form, result.status, error=message)
