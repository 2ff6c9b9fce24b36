"""Manual actions and four-eyes approvals through the console (Flask client, PostgreSQL, CSRF on).

The role × action matrix is derived from the governor definitions (``governors.manual_actions``:
who is in ``by``/``requesters``, which rows carry ``four_eyes``) and cross-checked by explicit spot
checks taken from GOVERNORS.md §11.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pyotp
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from governors import Facts, manual_actions
from webapp.db import Database
from webapp.models import Approval, AuditEntry, GovernorInstance, StaffUser, TransitionRecord
from webapp.services.instances import to_instance
from webapp.services.setup import activate_customer, ensure_catalog, ensure_tenant, run_step, signup_customer
from webapp.services.transitions import Actor, EventRequest, fire_event
from webapp.validation import contains_card_number, luhn_ok

from .conftest import MadeUser, sign_in

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
ROLES = ("support", "finance", "manager", "admin", "compliance")
TOTP_ROLES = {"admin", "compliance", "manager"}

_HIDDEN = re.compile(r'name="(csrf_token|idempotency_key|expected_version)" type="hidden" value="([^"]*)"')
_HX_CSRF = re.compile(r'"X-CSRFToken": "([^"]+)"')


# --------------------------------------------------------------------------- world building


def _world(db: Database, customer_id: str, *, stage: str) -> dict[str, str]:
    """A customer at ``stage``: signed_up, profiled (email+profile), onboarded (KYC passed), active."""
    from governors.scenarios import onboard

    with db.session() as s:
        ensure_tenant(s, "t-1", NOW)
        ensure_catalog(s, NOW)
    with db.session() as s:
        signup_customer(
            s,
            "t-1",
            customer_id,
            name="Ada <b>Example</b>",
            email=f"{customer_id}@x.test",
            tier="starter",
            now=NOW,
        )
    if stage in ("profiled", "onboarded"):
        with db.session() as s:
            account = _row(s, customer_id, "customer_account")
            steps = onboard(f"kyc-{customer_id}")
            for step in steps[: 2 if stage == "profiled" else 3]:
                run_step(s, step, tenant_id="t-1", now=NOW, instance_id=account.id)
    if stage == "active":
        with db.session() as s:
            activate_customer(s, "t-1", customer_id, now=NOW)
    with db.session() as s:
        rows = s.scalars(select(GovernorInstance).where(GovernorInstance.customer_id == customer_id)).all()
        return {r.governor: r.id for r in rows}


def _row(s: Any, customer_id: str, governor: str) -> GovernorInstance:
    row: GovernorInstance = s.scalars(
        select(GovernorInstance).where(
            GovernorInstance.customer_id == customer_id, GovernorInstance.governor == governor
        )
    ).one()
    return row


def _invoice(db: Database, customer_id: str, *, paid: bool, amount: int = 5000) -> str:
    """An invoice of an active customer, paid (payment_received) or declined (payment_failed)."""
    sys = Actor("system", "sys")
    with db.session() as s:
        r = fire_event(
            s,
            EventRequest(
                "t-1",
                "cycle_begin",
                governor="billing",
                customer_id=customer_id,
                subject_id=f"inv-{customer_id}",
                payload={"kind": "initial", "amount_cents": amount, "currency": "USD"},
            ),
            sys,
            NOW,
        )
        assert r.status == 200, r.body
        inv = str(r.body["instance_id"])
        r = fire_event(
            s,
            EventRequest(
                "t-1", "invoice_generation_time_reached", inv, timer="generate_invoice", timer_seq=1
            ),
            Actor("timer", "timer"),
            NOW,
        )
        assert r.status == 200, r.body
        r = fire_event(s, EventRequest("t-1", "invoice_delivered", inv, {"confirmed": True}), sys, NOW)
        assert r.status == 200, r.body
        event, payload = (
            ("payment_received", {"amount_cents": amount, "payment_id": f"pay-{customer_id}"})
            if paid
            else ("payment_declined", {"decline_code": "insufficient_funds"})
        )
        r = fire_event(s, EventRequest("t-1", event, inv, payload), sys, NOW)
        assert r.status == 200, r.body
        return inv


def _lock(db: Database, instance_id: str) -> None:
    with db.session() as s:
        r = fire_event(
            s,
            EventRequest(
                "t-1",
                "lock",
                instance_id,
                {"reason": "suspected takeover of the account", "reason_code": "compromised_account"},
            ),
            Actor("u-setup", "support"),
            NOW,
        )
        assert r.status == 200, r.body


# The representative actions of GOVERNORS.md §11: (name, governor, event, world builder, form data).
def _refund(db: Database, cid: str) -> str:
    _world(db, cid, stage="active")
    return _invoice(db, cid, paid=True)


def _retry(db: Database, cid: str) -> str:
    _world(db, cid, stage="active")
    return _invoice(db, cid, paid=False)


def _lockdown(db: Database, cid: str) -> str:
    return _world(db, cid, stage="active")["customer_account"]


def _unlock(db: Database, cid: str) -> str:
    acct = _world(db, cid, stage="active")["customer_account"]
    _lock(db, acct)
    return acct


def _kyc(db: Database, cid: str) -> str:
    return _world(db, cid, stage="profiled")["customer_account"]


def _ent_approve(db: Database, cid: str) -> str:
    return _world(db, cid, stage="onboarded")["entitlement"]


def _quota(db: Database, cid: str) -> str:
    return _world(db, cid, stage="active")["quota_sla"]


ACTIONS: dict[str, tuple[Callable[[Database, str], str], str, dict[str, str]]] = {
    "B22 refund": (_refund, "issue_refund", {"in_amount_cents": "1500", "reason_code": "duplicate_charge"}),
    "B10 payment retry": (_retry, "retry_now", {"reason_code": "customer_request"}),
    "A11 lockdown": (_lockdown, "lock", {"reason_code": "compromised_account"}),
    "A13 unlock": (
        _unlock,
        "unlock",
        {
            "in_verification_method": "phone, document",
            "in_verifier_id": "u-verifier",
            "reason_code": "verification_completed",
        },
    ),
    "A03 KYC approve": (
        _kyc,
        "kyc_passed",
        {
            "in_provider_request_id": "kyc-123",
            "in_document_check": "passed",
            "in_provider_result": "passed",
            "reason_code": "verification_completed",
        },
    ),
    "E02 entitlement approval": (
        _ent_approve,
        "approve",
        {"in_note": "checked the order with the customer", "reason_code": "customer_request"},
    ),
    "Q17 quota override": (
        _quota,
        "quota_override",
        {
            "in_metric": "api_requests",
            "in_limit": "10",
            "in_expires_at": (datetime.now(UTC) + timedelta(days=10)).isoformat(timespec="seconds"),
            "reason_code": "other",
        },
    ),
}

COMMENT = "customer called; verified and documented in ticket 4411"


# --------------------------------------------------------------------------- client helpers


class Staff:
    """A signed-in staff client."""

    def __init__(self, app: Flask, user: MadeUser) -> None:
        self.user = user
        self.client: FlaskClient = app.test_client()
        response = sign_in(self.client, user.email, user.password, totp=user.totp_secret)
        assert response.status_code == 302, response.get_data(as_text=True)[:500]

    def form(self, instance_id: str, event: str) -> tuple[int, dict[str, str], str]:
        page = self.client.get(f"/instances/{instance_id}/actions/{event}")
        html = page.get_data(as_text=True)
        return page.status_code, dict(_HIDDEN.findall(html)), html

    def token(self) -> str:
        page = self.client.get("/approvals")
        match = _HX_CSRF.search(page.get_data(as_text=True))
        assert match, page.status_code
        return match.group(1)

    def submit(
        self,
        instance_id: str,
        event: str,
        data: dict[str, str],
        *,
        hidden: dict[str, str] | None = None,
        htmx: bool = True,
    ) -> Any:
        if hidden is None:
            status, hidden, _ = self.form(instance_id, event)
            if status != 200:
                hidden = {
                    "csrf_token": self.token(),
                    "idempotency_key": str(uuid.uuid4()),
                    "expected_version": "",
                }
        body = {**hidden, "comment": COMMENT, **data}
        headers = {"HX-Request": "true"} if htmx else {}
        return self.client.post(f"/instances/{instance_id}/actions/{event}", data=body, headers=headers)


@pytest.fixture
def staff(app: Flask, make_user: Callable[..., MadeUser]) -> Callable[..., Staff]:
    made: dict[str, Staff] = {}

    def get(role: str, n: int = 1) -> Staff:
        key = f"{role}{n}"
        if key not in made:
            user = make_user(f"{key}@staff.test", [role], totp=role in TOTP_ROLES)
            made[key] = Staff(app, user)
        return made[key]

    return get


def _count(db: Database, model: Any, **where: Any) -> int:
    with db.session() as s:
        stmt = select(func.count()).select_from(model)
        for k, v in where.items():
            stmt = stmt.where(getattr(model, k) == v)
        return int(s.scalar(stmt) or 0)


def _payload(data: dict[str, str]) -> dict[str, Any]:
    """The event payload a form submission stands for (what the engine is asked)."""
    out: dict[str, Any] = {"reason": COMMENT, "reason_code": data.get("reason_code")}
    for key, value in data.items():
        if key.startswith("in_"):
            name = key[3:]
            out[name] = (
                int(value)
                if value.isdigit()
                else ([v.strip() for v in value.split(",")] if "," in value else value)
            )
    return out


def _expected(db: Database, instance_id: str, event: str, role: str, data: dict[str, str]) -> int:
    """The status the definitions promise: direct 200, four-eyes/request 202, role not listed 403."""
    with db.session() as s:
        row = s.get(GovernorInstance, instance_id)
        assert row is not None
        inst = to_instance(row)
    facts = Facts(now=datetime.now(UTC), payload=_payload(data))
    offered = {a.event: a for a in manual_actions(inst.governor, inst, facts, role)}
    action = offered[event]
    if not action.allowed and action.reason.startswith("needs ") and f"you have {role}" in action.reason:
        return 403
    return 200 if action.mode == "direct" else 202


# --------------------------------------------------------------------------- the matrix


SPOT = {
    ("B22 refund", "support"): 202,  # support may only request
    ("B22 refund", "finance"): 202,  # 4E[finance, manager]
    ("B22 refund", "manager"): 403,  # approver only
    ("B22 refund", "admin"): 403,
    ("B10 payment retry", "finance"): 200,
    ("B10 payment retry", "support"): 202,
    ("B10 payment retry", "compliance"): 403,
    ("A11 lockdown", "support"): 200,  # protective: single actor
    ("A11 lockdown", "finance"): 403,
    ("A13 unlock", "support"): 202,  # 4E[manager, compliance]
    ("A13 unlock", "manager"): 403,
    ("A03 KYC approve", "compliance"): 200,
    ("A03 KYC approve", "support"): 403,
    ("E02 entitlement approval", "manager"): 200,
    ("E02 entitlement approval", "support"): 202,
    ("E02 entitlement approval", "finance"): 403,
    ("Q17 quota override", "admin"): 200,
    ("Q17 quota override", "support"): 403,
}


@pytest.mark.parametrize("name", list(ACTIONS))
def test_role_action_matrix(name: str, web_db: Database, staff: Callable[..., Staff]) -> None:
    build, event, data = ACTIONS[name]
    for n, role in enumerate(ROLES):
        cid = f"c-{n}"
        instance_id = build(web_db, cid)
        expected = _expected(web_db, instance_id, event, role, data)
        if (name, role) in SPOT:
            assert SPOT[(name, role)] == expected, f"definitions disagree with §11 for {name}/{role}"
        before = _count(web_db, TransitionRecord)
        response = staff(role).submit(instance_id, event, data)
        html = response.get_data(as_text=True)
        assert response.status_code == expected, f"{name} as {role}: {response.status_code} {html[:600]}"
        if expected == 403:
            assert "you have " + role in html
            assert _count(web_db, TransitionRecord) == before
        elif expected == 202:
            assert _count(web_db, Approval, instance_id=instance_id, status="pending") == 1
            assert "needs approval" in html or "Waiting for approval" in html
            assert _count(web_db, TransitionRecord) == before
        else:
            assert _count(web_db, TransitionRecord, instance_id=instance_id, event=event) == 1


def test_disabled_buttons_show_the_reason_and_forged_post_is_refused(
    web_db: Database, staff: Callable[..., Staff], app: Flask
) -> None:
    inv = _refund(web_db, "c-1")
    finance = staff("finance")
    support_like = staff("manager")
    with app.test_request_context():
        from flask import render_template

        from webapp.blueprints.actions import actions_for

        with web_db.session() as s:
            row = s.get(GovernorInstance, inv)
            assert row is not None
            actions = actions_for(s, row, ["manager"], NOW, app.extensions["runtime"].settings)
            html = render_template("actions/_card_actions.html", instance=row, actions=actions, customer=None)
    assert "needs finance; you have manager" in html
    assert (
        'disabled aria-disabled="true" title="needs finance; you have manager"' in html.replace("\n", " ")
        or "disabled" in html
    )
    # The form itself is refused, and so is a hand-made POST with a valid CSRF token.
    assert support_like.form(inv, "issue_refund")[0] == 403
    forged = support_like.submit(inv, "issue_refund", ACTIONS["B22 refund"][2])
    assert forged.status_code == 403
    assert "needs finance" in forged.get_data(as_text=True)
    assert _count(web_db, Approval) == 0
    # Finance sees the enabled button marked four-eyes.
    with app.test_request_context(), web_db.session() as s:
        from flask import render_template

        from webapp.blueprints.actions import actions_for

        row = s.get(GovernorInstance, inv)
        assert row is not None
        actions = actions_for(s, row, list(finance.user.roles), NOW, app.extensions["runtime"].settings)
        html = render_template("actions/_card_actions.html", instance=row, actions=actions, customer=None)
    assert "needs approval by finance or manager" in html


# --------------------------------------------------------------------------- CSRF, stale, double submit


def test_csrf_missing_or_wrong_is_refused_and_changes_nothing(
    web_db: Database, staff: Callable[..., Staff]
) -> None:
    acct = _lockdown(web_db, "c-1")
    support = staff("support")
    _, hidden, _ = support.form(acct, "lock")
    data = ACTIONS["A11 lockdown"][2]
    for token in (None, "wrong-token"):
        fields = {k: v for k, v in hidden.items() if k != "csrf_token"}
        if token:
            fields["csrf_token"] = token
        response = support.submit(acct, "lock", data, hidden=fields)
        assert response.status_code == 400
        assert "CSRF" in response.get_data(as_text=True)
    with web_db.session() as s:
        assert s.get(GovernorInstance, acct).state == "active"  # type: ignore[union-attr]
    assert _count(web_db, TransitionRecord, instance_id=acct, event="lock") == 0


def test_double_submit_returns_the_stored_response_and_applies_once(
    web_db: Database, staff: Callable[..., Staff]
) -> None:
    acct = _lockdown(web_db, "c-1")
    support = staff("support")
    _, hidden, _ = support.form(acct, "lock")
    data = ACTIONS["A11 lockdown"][2]
    first = support.submit(acct, "lock", data, hidden=hidden)
    second = support.submit(acct, "lock", data, hidden=hidden)
    assert first.status_code == second.status_code == 200
    assert "Applied." in first.get_data(as_text=True)
    assert "Already applied" in second.get_data(as_text=True)
    assert _count(web_db, TransitionRecord, instance_id=acct, event="lock") == 1


def test_stale_tab_gets_409_with_the_refreshed_card(web_db: Database, staff: Callable[..., Staff]) -> None:
    acct = _lockdown(web_db, "c-1")
    support = staff("support")
    _, tab_one, _ = support.form(acct, "lock")
    _, tab_two, _ = support.form(acct, "lock")
    assert tab_one["idempotency_key"] != tab_two["idempotency_key"]
    assert support.submit(acct, "lock", ACTIONS["A11 lockdown"][2], hidden=tab_one).status_code == 200
    stale = support.submit(acct, "lock", ACTIONS["A11 lockdown"][2], hidden=tab_two)
    html = stale.get_data(as_text=True)
    assert stale.status_code == 409
    assert "the account changed since you opened this form: it is now locked; review and resubmit" in html
    assert "<html" not in html  # a fragment, not an error page
    assert 'data-event="unlock"' in html  # the refreshed actions of the new state
    assert _count(web_db, TransitionRecord, instance_id=acct, event="lock") == 1


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"in_amount_cents": "-500"}, "Amount (cents) must be between 1 and"),
        ({"in_amount_cents": "99999999"}, "the refund must be between 1 and 5000 cents"),
        ({"in_amount_cents": "12.5"}, "Not a valid integer value"),
        ({"reason_code": "made_up_code"}, "Not a valid choice"),
        ({"comment": "card 4111 1111 1111 1111 please"}, "do not type card numbers here"),
        ({"comment": "short"}, "at least 10 characters"),
        ({"comment": "bell \x07 inside the comment text"}, "control characters"),
    ],
)
def test_bad_input_is_422_next_to_the_field_and_changes_nothing(
    fields: dict[str, str], message: str, web_db: Database, staff: Callable[..., Staff]
) -> None:
    inv = _refund(web_db, "c-1")
    finance = staff("finance")
    data = {**ACTIONS["B22 refund"][2], **fields}
    response = finance.submit(inv, "issue_refund", data)
    html = response.get_data(as_text=True)
    assert response.status_code == 422, html[:800]
    assert message in html
    assert 'class="field-error"' in html
    assert _count(web_db, Approval) == 0
    assert _count(web_db, TransitionRecord, instance_id=inv, event="issue_refund") == 0


def test_script_in_a_comment_is_kept_as_text_and_escaped(
    web_db: Database, staff: Callable[..., Staff]
) -> None:
    inv = _refund(web_db, "c-1")
    finance = staff("finance")
    script = "<script>alert('x')</script> customer asked twice"
    response = finance.submit(inv, "issue_refund", {**ACTIONS["B22 refund"][2], "comment": script})
    assert response.status_code == 202
    with web_db.session() as s:
        approval = s.scalars(select(Approval)).one()
        assert approval.payload["reason"] == script
        approval_id = approval.id
    page = staff("manager").client.get(f"/approvals/{approval_id}").get_data(as_text=True)
    assert "&lt;script&gt;alert(" in page
    assert "<script>alert(" not in page


def test_validation_helpers() -> None:
    assert luhn_ok("4111111111111111")
    assert not luhn_ok("4111111111111112")
    assert contains_card_number("pay with 4111-1111-1111-1111 ok")
    assert contains_card_number("x5555555555554444y")
    assert not contains_card_number("order 1234567890123 ref")  # 13 digits, Luhn fails
    assert not contains_card_number("ticket 4411")


# --------------------------------------------------------------------------- preview


def test_preview_shows_cascade_timers_and_money_and_applies_nothing(
    web_db: Database, staff: Callable[..., Staff]
) -> None:
    acct = _lockdown(web_db, "c-1")
    support = staff("support")
    status, hidden, _ = support.form(acct, "lock")
    assert status == 200
    body = {**hidden, "comment": COMMENT, **ACTIONS["A11 lockdown"][2]}
    response = support.client.post(
        f"/instances/{acct}/actions/lock/preview", data=body, headers={"HX-Request": "true"}
    )
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "What will happen" in html
    assert '<code>active</code> <span class="arrow">→</span> <code>locked</code>' in html
    assert "Entitlement" in html and "suspended" in html  # X12 cascade
    assert "timer" in html
    assert _count(web_db, TransitionRecord, instance_id=acct, event="lock") == 0
    # The preview keeps the same idempotency key, so "Confirm" after it is the same request.
    assert hidden["idempotency_key"] in html

    inv = _refund(web_db, "c-2")
    finance = staff("finance")
    _, hidden, _ = finance.form(inv, "issue_refund")
    body = {**hidden, "comment": COMMENT, **ACTIONS["B22 refund"][2]}
    html = finance.client.post(
        f"/instances/{inv}/actions/issue_refund/preview", data=body, headers={"HX-Request": "true"}
    ).get_data(as_text=True)
    assert '<span class="badge badge-4e">money</span> billing_process_refund amount_cents 15.00' in html
    assert "needs approval by finance or manager" in html


# --------------------------------------------------------------------------- four-eyes


def _request_refund(db: Database, finance: Staff, cid: str = "c-1") -> tuple[str, str]:
    inv = _refund(db, cid)
    response = finance.submit(inv, "issue_refund", ACTIONS["B22 refund"][2])
    assert response.status_code == 202, response.get_data(as_text=True)[:500]
    with db.session() as s:
        approval = s.scalars(select(Approval).where(Approval.instance_id == inv)).one()
        return inv, approval.id


def _decide(who: Staff, approval_id: str, verb: str, **fields: str) -> Any:
    page = who.client.get(f"/approvals/{approval_id}")
    token = _HX_CSRF.search(page.get_data(as_text=True))
    assert token
    return who.client.post(f"/approvals/{approval_id}/{verb}", data={"csrf_token": token.group(1), **fields})


def test_requester_can_never_approve(
    web_db: Database, staff: Callable[..., Staff], app: Flask, make_user: Callable[..., MadeUser]
) -> None:
    # A user holding finance and manager requests as finance; approving their own request is refused.
    both = Staff(app, make_user("both@staff.test", ["finance", "manager"], totp=True))
    inv, approval_id = _request_refund(web_db, both)
    page = both.client.get(f"/approvals/{approval_id}").get_data(as_text=True)
    assert "you made this request" in page
    response = _decide(both, approval_id, "approve", code=both.user.code())
    assert response.status_code == 403
    assert "a different person must approve it" in response.get_data(as_text=True)
    assert _count(web_db, Approval, id=approval_id, status="pending") == 1
    assert _count(web_db, TransitionRecord, instance_id=inv, event="issue_refund") == 0
    # Not even in the queue.
    queue = both.client.get("/approvals").get_data(as_text=True)
    assert f'data-approval="{approval_id}"' in queue.split("My requests")[1]
    assert f'data-approval="{approval_id}"' not in queue.split("My requests")[0]


def test_manager_approves_finance_refund_and_the_refund_is_recorded(
    web_db: Database, staff: Callable[..., Staff]
) -> None:
    finance, manager = staff("finance"), staff("manager")
    inv, approval_id = _request_refund(web_db, finance)
    queue = manager.client.get("/approvals").get_data(as_text=True)
    assert approval_id in queue and "Expires in" in queue
    assert finance.user.email in queue  # people are shown by email, not by their user id
    assert finance.user.email in manager.client.get(f"/approvals/{approval_id}").get_data(as_text=True)
    wrong = _decide(manager, approval_id, "approve", code="000000")
    assert wrong.status_code == 403 and "authenticator code is wrong" in wrong.get_data(as_text=True)
    assert _count(web_db, TransitionRecord, instance_id=inv, event="issue_refund") == 0
    ok = _decide(manager, approval_id, "approve", code=manager.user.code(), note="checked duplicate")
    assert ok.status_code == 200, ok.get_data(as_text=True)[:800]
    assert "approved: the action was applied" in ok.get_data(as_text=True)
    with web_db.session() as s:
        record = s.scalars(
            select(TransitionRecord).where(
                TransitionRecord.instance_id == inv, TransitionRecord.event == "issue_refund"
            )
        ).one()
        # Recorded as the requester's action, bound to the approval; the approver is in the audit.
        assert record.actor == finance.user.id and record.role == "finance"
        assert record.approval_id == approval_id
        approval = s.get(Approval, approval_id)
        assert approval is not None and approval.status == "approved"
        assert approval.decided_by == manager.user.id
        inst = s.get(GovernorInstance, inv)
        assert inst is not None and inst.data.get("refunded_cents") == 1500
        entry = s.scalars(select(AuditEntry).where(AuditEntry.action == "approval.approved")).one()
        assert entry.actor == manager.user.id and entry.role == "manager"
    # A second approval attempt is a 409: nothing applies twice.
    again = _decide(manager, approval_id, "approve", code=manager.user.code())
    assert again.status_code == 409
    assert _count(web_db, TransitionRecord, instance_id=inv, event="issue_refund") == 1


def test_reject_with_a_note(web_db: Database, staff: Callable[..., Staff]) -> None:
    finance, manager = staff("finance"), staff("manager")
    inv, approval_id = _request_refund(web_db, finance)
    response = _decide(manager, approval_id, "reject", note="not a duplicate charge")
    assert response.status_code == 200
    assert _count(web_db, Approval, id=approval_id, status="rejected") == 1
    assert _count(web_db, TransitionRecord, instance_id=inv, event="issue_refund") == 0


def test_expired_request_is_marked_expired_on_read(
    web_db: Database, staff: Callable[..., Staff], monkeypatch: pytest.MonkeyPatch
) -> None:
    finance, manager = staff("finance"), staff("manager")
    inv, approval_id = _request_refund(web_db, finance)
    import webapp.blueprints.actions as actions

    later = datetime.now(UTC) + timedelta(hours=24, minutes=1)
    monkeypatch.setattr(actions, "utcnow", lambda: later)
    page = manager.client.get("/approvals").get_data(as_text=True)
    assert approval_id not in page.split("My requests")[0]
    assert _count(web_db, Approval, id=approval_id, status="expired") == 1
    # (the TOTP code is computed for the real clock; the request is refused before step-up anyway)
    response = _decide(manager, approval_id, "approve", code=manager.user.code())
    assert response.status_code == 409
    assert "already expired" in response.get_data(as_text=True)
    assert _count(web_db, TransitionRecord, instance_id=inv, event="issue_refund") == 0


def test_approval_is_voided_when_the_state_changed(web_db: Database, staff: Callable[..., Staff]) -> None:
    finance, manager = staff("finance"), staff("manager")
    inv, approval_id = _request_refund(web_db, finance)
    with web_db.session() as s:  # the invoice moves on (archived by its timer) after the request
        row = s.get(GovernorInstance, inv)
        assert row is not None
        row.state_seq += 1
        row.state = "archived"
    response = _decide(manager, approval_id, "approve", code=manager.user.code())
    html = response.get_data(as_text=True)
    assert response.status_code == 409
    assert "voided: the invoice moved from payment_received to archived after the request" in html
    assert _count(web_db, Approval, id=approval_id, status="voided") == 1
    assert _count(web_db, TransitionRecord, instance_id=inv, event="issue_refund") == 0


def test_only_a_listed_approver_role_may_decide(web_db: Database, staff: Callable[..., Staff]) -> None:
    finance, compliance, support = staff("finance"), staff("compliance"), staff("support")
    inv, approval_id = _request_refund(web_db, finance)
    refused = _decide(compliance, approval_id, "approve", code=compliance.user.code())
    assert refused.status_code == 403
    assert "needs finance or manager; you have compliance" in refused.get_data(as_text=True)
    assert _decide(support, approval_id, "reject", note="I do not like it").status_code == 403
    assert _count(web_db, Approval, id=approval_id, status="pending") == 1
    assert _count(web_db, TransitionRecord, instance_id=inv, event="issue_refund") == 0


def test_support_request_is_applied_when_finance_approves(
    web_db: Database, staff: Callable[..., Staff]
) -> None:
    support, finance = staff("support"), staff("finance", 2)
    inv = _retry(web_db, "c-1")
    response = support.submit(inv, "retry_now", ACTIONS["B10 payment retry"][2])
    assert response.status_code == 202
    assert "Waiting for approval by finance" in response.get_data(as_text=True)
    with web_db.session() as s:
        approval_id = s.scalars(select(Approval)).one().id
    # finance2 has no second factor enrolled: step-up is refused until they enrol.
    refused = _decide(finance, approval_id, "approve", code="123456")
    assert refused.status_code == 403 and "enrol a second factor" in refused.get_data(as_text=True)
    with web_db.session() as s:
        from webapp.services import users

        user = s.get(StaffUser, finance.user.id)
        assert user is not None
        user.totp_secret = users.new_totp_secret()
        secret = user.totp_secret
    ok = _decide(finance, approval_id, "approve", code=pyotp.TOTP(secret).now())
    assert ok.status_code == 200, ok.get_data(as_text=True)[:600]
    with web_db.session() as s:
        record = s.scalars(
            select(TransitionRecord).where(
                TransitionRecord.instance_id == inv, TransitionRecord.event == "retry_now"
            )
        ).one()
        assert (record.actor, record.role, record.to_state) == (support.user.id, "support", "retry_1")
        assert record.approval_id == approval_id
