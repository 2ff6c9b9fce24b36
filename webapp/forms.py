"""Flask-WTF forms for manual governor actions, built from the row's declared ``inputs``.

Each action form has: one field per declared input (named ``in_<input name>``, so an input can never
shadow a form attribute or the hidden fields), a reason code select, a comment (sent to the engine as
``payload["reason"]``, which needs at least ``engine.min_reason_length`` characters), a hidden
``idempotency_key`` (a fresh uuid4 each time the form is rendered) and the hidden
``expected_version`` the form was rendered from. CSRF comes from FlaskForm.

The form checks shape (types, bounds, choices, text hygiene from ``webapp.validation``); the engine
still checks every input and guard again, so a forged POST that skips the form gains nothing.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from flask_wtf import FlaskForm  # type: ignore[import-untyped,unused-ignore]
from wtforms import (  # type: ignore[import-untyped,unused-ignore]
    BooleanField,
    Field,
    HiddenField,
    IntegerField,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
)
from wtforms.fields.choices import SelectChoice  # type: ignore[import-untyped,unused-ignore]
from wtforms.validators import (  # type: ignore[import-untyped,unused-ignore]
    InputRequired,
    NumberRange,
    Optional,
    ValidationError,
)

from governors.spec import Input
from webapp.validation import MAX_CODE, InputError, clean_code, clean_text

PREFIX: Final = "in_"
"""Form field name prefix for declared inputs."""

REASON_CODES: Final = (
    "customer_request",
    "duplicate_charge",
    "billing_error",
    "service_failure",
    "goodwill",
    "fraud_suspected",
    "policy_violation",
    "verification_completed",
    "compliance_review",
    "other",
)
"""Reason codes offered when the row declares none of its own (§11: every action has a reason)."""

MAX_CENTS: Final = 100_000_000_00
"""Ceiling for a typed amount (100 million in major units); the engine's guards bound it further."""

_LONG_TEXT: Final = frozenset(
    {"note", "evidence", "description", "findings", "review_notes", "resolution_note", "text"}
)


class _SafeText:
    """WTForms validator: ``webapp.validation.clean_text`` (control characters, card numbers, length)."""

    def __init__(self, max_length: int, min_length: int = 0, code: bool = False) -> None:
        self.max_length, self.min_length, self.code = max_length, min_length, code

    def __call__(self, form: FlaskForm, field: Field) -> None:
        label = str(field.label.text)
        try:
            if self.code:
                field.data = clean_code(field.data, max_length=self.max_length, label=label)
            else:
                field.data = clean_text(
                    field.data, max_length=self.max_length, min_length=self.min_length, label=label
                )
        except InputError as exc:
            raise ValidationError(exc.message) from None


class _Iso:
    """WTForms validator: an ISO 8601 date and time with a time zone."""

    def __call__(self, form: FlaskForm, field: Field) -> None:
        if not field.data:
            return
        try:
            moment = datetime.fromisoformat(str(field.data).strip())
        except ValueError:
            raise ValidationError("use an ISO 8601 date and time, e.g. 2026-03-02T09:00:00+00:00") from None
        if moment.tzinfo is None:
            raise ValidationError("add a time zone, e.g. +00:00")


class _Json:
    """WTForms validator: a JSON object."""

    def __call__(self, form: FlaskForm, field: Field) -> None:
        if not field.data:
            return
        try:
            value = json.loads(field.data)
        except ValueError:
            raise ValidationError('type a JSON object, e.g. {"api_calls": 1000}') from None
        if not isinstance(value, dict):
            raise ValidationError('type a JSON object, e.g. {"api_calls": 1000}')


class ActionForm(FlaskForm):  # type: ignore[misc,unused-ignore]
    """Base of every action form; subclasses add one field per declared input."""

    idempotency_key = HiddenField(
        validators=[InputRequired(message="the form is missing its key; reload it")]
    )
    expected_version = HiddenField()
    reason_code = SelectField("Reason code", validators=[InputRequired(message="choose a reason code")])
    comment = TextAreaField("Comment (why)")

    inputs: tuple[Input, ...] = ()

    def validate_idempotency_key(self, field: Field) -> None:
        try:
            uuid.UUID(str(field.data))
        except ValueError:
            raise ValidationError("the form key is malformed; reload the form") from None

    def validate_expected_version(self, field: Field) -> None:
        if field.data in (None, ""):
            return
        if not str(field.data).isdigit():
            raise ValidationError("the form version is malformed; reload the form")

    def version(self) -> int | None:
        """The instance version the form was rendered from."""
        raw = self.expected_version.data
        return int(raw) if raw not in (None, "") and str(raw).isdigit() else None

    def input_fields(self) -> list[Field]:
        """The declared-input fields, in declaration order."""
        return [self[PREFIX + inp.name] for inp in self.inputs]

    def payload(self) -> dict[str, Any]:
        """The event payload: declared inputs (typed), ``reason_code`` and ``reason`` (the comment)."""
        out: dict[str, Any] = {}
        for inp in self.inputs:
            value = self[PREFIX + inp.name].data
            if inp.kind == "bool":
                out[inp.name] = bool(value)
                continue
            if value is None or value == "" or value == []:
                continue
            if inp.kind == "list" and isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            elif inp.kind == "mapping" and isinstance(value, str):
                value = json.loads(value)
            out[inp.name] = value
        out["reason_code"] = self.reason_code.data
        out["reason"] = (self.comment.data or "").strip()
        return out


def _choices(values: Sequence[str], *, blank: bool) -> list[SelectChoice]:
    options = [SelectChoice(v, v.replace("_", " ")) for v in values]
    return [SelectChoice("", "— choose —"), *options] if blank else options


def _range_message(label: str, low: int | None, high: int | None) -> str:
    if low is not None and high is not None:
        return f"{label} must be between {low} and {high}"
    if low is not None:
        return f"{label} must be at least {low}"
    return f"{label} must be at most {high}"


def _field_for(inp: Input, max_text: int) -> Field:
    label = inp.label or inp.name.replace("_", " ").capitalize()
    presence: Any = InputRequired(message=f"{label} is required") if inp.required else Optional()
    if inp.kind in ("cents", "int"):
        low = inp.min if inp.min is not None else (0 if inp.kind == "cents" else None)
        high = inp.max if inp.max is not None else (MAX_CENTS if inp.kind == "cents" else None)
        if inp.kind == "cents" and not inp.label:
            label = inp.name.removesuffix("_cents").replace("_", " ").capitalize() + " (cents)"
        return IntegerField(
            label,
            validators=[presence, NumberRange(min=low, max=high, message=_range_message(label, low, high))],
            render_kw={"inputmode": "numeric", **({"min": low} if low is not None else {})},
        )
    if inp.kind == "bool":
        return BooleanField(label)
    if inp.kind == "code" and inp.choices:
        return SelectField(
            label,
            choices=_choices(inp.choices, blank=True),
            validators=[presence],
        )
    if inp.kind == "list" and inp.choices:
        return SelectMultipleField(label, choices=_choices(inp.choices, blank=False), validators=[presence])
    if inp.kind == "code":
        return StringField(label, validators=[presence, _SafeText(inp.max or MAX_CODE, code=True)])
    if inp.kind == "datetime":
        return StringField(
            label, validators=[presence, _Iso()], render_kw={"placeholder": "2026-03-02T09:00:00+00:00"}
        )
    if inp.kind == "mapping":
        return TextAreaField(label, validators=[presence, _SafeText(max_text), _Json()])
    if inp.kind == "list":
        return StringField(
            label, validators=[presence, _SafeText(max_text)], render_kw={"placeholder": "comma, separated"}
        )
    limit = min(inp.max, max_text) if inp.max is not None else max_text
    cls = TextAreaField if inp.name in _LONG_TEXT else StringField
    return cls(label, validators=[presence, _SafeText(limit, inp.min or 0)])


def action_form_class(
    inputs: Sequence[Input], *, min_reason: int = 10, max_text: int = 2000
) -> type[ActionForm]:
    """A form class for one action's declared inputs (the comment needs ``min_reason`` characters)."""
    attrs: dict[str, Any] = {"inputs": tuple(i for i in inputs if i.name not in ("reason", "reason_code"))}
    for inp in attrs["inputs"]:
        attrs[PREFIX + inp.name] = _field_for(inp, max_text)
    attrs["comment"] = TextAreaField(
        "Comment (why)",
        validators=[
            InputRequired(message=f"say why, in at least {min_reason} characters"),
            _SafeText(max_text, min_reason),
        ],
        render_kw={"minlength": min_reason, "maxlength": max_text, "rows": 3},
    )
    return type("DynamicActionForm", (ActionForm,), attrs)


def reason_choices(inputs: Sequence[Input]) -> tuple[str, ...]:
    """The reason codes for an action: the row's own ``reason_code`` choices, or REASON_CODES."""
    for inp in inputs:
        if inp.name == "reason_code" and inp.choices:
            return inp.choices
    return REASON_CODES


def build_action_form(
    inputs: Sequence[Input],
    *,
    version: int | None,
    min_reason: int = 10,
    max_text: int = 2000,
    formdata: Mapping[str, Any] | None = None,
    fresh_key: bool = False,
) -> ActionForm:
    """Instantiate the form: from the request (``formdata`` None → Flask-WTF reads the request) or blank.

    A blank form gets a new idempotency key and ``version``; ``fresh_key`` replaces the key of a
    posted form (after a rejection, so the corrected resubmission is a new request).
    """
    cls = action_form_class(inputs, min_reason=min_reason, max_text=max_text)
    form = cls(formdata=formdata) if formdata is not None else cls()
    choices = reason_choices(inputs)
    form.reason_code.choices = _choices(choices, blank=True)
    if not form.is_submitted():
        form.idempotency_key.data = str(uuid.uuid4())
        form.expected_version.data = "" if version is None else str(version)
    if fresh_key:
        form.idempotency_key.data = str(uuid.uuid4())
    return form


def apply_field_error(form: ActionForm, name: str | None, message: str) -> bool:
    """Attach an engine error to its field (``name`` is an input name, ``reason`` or ``reason_code``)."""
    if name == "reason":
        form.comment.errors = [*form.comment.errors, message]
        return True
    if name == "reason_code":
        form.reason_code.errors = [*form.reason_code.errors, message]
        return True
    if name and (PREFIX + name) in form:
        field = form[PREFIX + name]
        field.errors = [*field.errors, message]
        return True
    return False


class DecisionForm(FlaskForm):  # type: ignore[misc,unused-ignore]
    """Approve or reject a four-eyes request: a note, and the step-up TOTP code to approve."""

    note = TextAreaField("Note", validators=[Optional(), _SafeText(2000)], render_kw={"rows": 2})
    code = StringField(
        "Authenticator code",
        render_kw={
            "inputmode": "numeric",
            "autocomplete": "one-time-code",
            "maxlength": 8,
            "pattern": "[0-9]{6,8}",
        },
    )


__all__ = [
    "PREFIX",
    "REASON_CODES",
    "ActionForm",
    "DecisionForm",
    "action_form_class",
    "apply_field_error",
    "build_action_form",
    "reason_choices",
]
