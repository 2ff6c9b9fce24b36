"""Right to erasure: four-eyes, legal holds, and no PII left in any column of any table afterwards."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pyotp
import pytest
from sqlalchemy import JSON, String, Text, cast, func, or_, select
from sqlalchemy.orm import Session

from tests.services.conftest import NOW
from webapp import audit
from webapp.config import Config
from webapp.db import Database
from webapp.models import (
    Approval,
    AuditEntry,
    Base,
    Customer,
    GovernorInstance,
    OutboxMessage,
    PrivacyRequest,
    TransitionRecord,
)
from webapp.runtime import Runtime
from webapp.services import approvals, erasure, sar, users
from webapp.services.transitions import Actor, EventRequest, fire_event

NAME = "Zelda Quintessa Erasable"
EMAIL = "zelda.q.erasable@example.test"
OTHER_NAME = "Bob Keepsake"


@pytest.fixture
def officers(db: Database) -> dict[str, tuple[str, str]]:
    """Two compliance officers and a manager, each with a second factor: name → (user id, secret)."""
    out = {}
    with db.session() as s:
        for who, roles in (("cmp1", ["compliance"]), ("cmp2", ["compliance"]), ("mgr", ["manager"])):
            user = users.create_user(
                s, f"{who}@staff.test", roles, "correct horse battery", granted_by="t", now=NOW
            )
            user.totp_secret = users.new_totp_secret()
            out[who] = (user.id, user.totp_secret)
    return out


def _code(secret: str, at: object) -> str:
    return pyotp.TOTP(secret).at(at)  # type: ignore[arg-type]


def _account(s: Session, customer_id: str) -> GovernorInstance:
    return s.scalars(
        select(GovernorInstance).where(
            GovernorInstance.customer_id == customer_id, GovernorInstance.governor == "customer_account"
        )
    ).one()


def _customer_with_pii(db: Database, make_customer: Callable[..., str], customer_id: str = "c-zel") -> str:
    """An active customer with PII copied into free text: a lock reason naming them, a SAR reason."""
    make_customer(customer_id, active=True)
    with db.session() as s:
        row = s.get(Customer, customer_id)
        assert row is not None
        row.name, row.email = NAME, EMAIL
    with db.session() as s:
        account = _account(s, customer_id)
        result = fire_event(
            s,
            EventRequest(
                "t-1",
                "lock",
                account.id,
                {"reason_code": "manual", "reason": f"{NAME} ({EMAIL}) called about a stolen phone"},
            ),
            Actor("u-sup", "support"),
            NOW + timedelta(minutes=5),
        )
        assert result.status == 200, result.body
    with db.session() as s:
        customer = s.get(Customer, customer_id)
        assert customer is not None
        sar.open_sar(s, customer, reason=f"letter signed {NAME}", actor=Actor("u-cmp", "compliance"), now=NOW)
    return customer_id


def text_columns() -> list[tuple[str, object]]:
    """Every (table, column) of every mapped table that can hold text (strings, text, JSON)."""
    return [
        (t.name, c)
        for t in Base.metadata.sorted_tables
        for c in t.columns
        if isinstance(c.type, String | Text | JSON)
    ]


def scan(db: Database, *values: str) -> dict[str, int]:
    """``table.column`` → rows holding any of ``values`` (case-insensitive), over ALL tables and columns."""
    found = {}
    with db.session() as s:
        for table_name, column in text_columns():
            table = Base.metadata.tables[table_name]
            as_text = cast(column, Text)  # type: ignore[arg-type]
            n = s.scalar(
                select(func.count()).select_from(table).where(or_(*(as_text.ilike(f"%{v}%") for v in values)))
            )
            if n:
                found[f"{table_name}.{column.name}"] = int(n)  # type: ignore[attr-defined]
    return found


def _request(db: Database, customer_id: str, by: str) -> str:
    with db.session() as s:
        customer = s.get(Customer, customer_id)
        assert customer is not None
        req = erasure.request_erasure(
            s,
            customer,
            reason=f"GDPR Art 17 email from {NAME}",
            ownership_verification="idcheck-17",
            actor=Actor(by, "compliance"),
            now=NOW + timedelta(hours=1),
        )
        return req.id


def _chains_ok(db: Database) -> None:
    with db.session() as s:
        for tenant in audit.tenants_with_chains(s):
            result = audit.verify_tenant(s, tenant, [])
            assert result.ok, (tenant, result)


def test_the_scan_sees_every_table_and_finds_the_seeded_pii(
    db: Database, make_customer: Callable[..., str]
) -> None:
    _customer_with_pii(db, make_customer)
    columns = {t for t, _ in text_columns()}
    assert {
        "customers",
        "transitions",
        "audit_entries",
        "approvals",
        "notifications",
        "effect_runs",
    } <= columns
    assert {"privacy_requests", "governor_instances", "outbox", "idempotency_records"} <= columns
    found = scan(db, NAME, EMAIL)
    assert {"customers.name", "customers.email", "transitions.reason", "privacy_requests.reason"} <= set(
        found
    )


def test_erasure_needs_a_second_compliance_officer_then_leaves_no_pii_and_the_chain_verifies(
    db: Database, make_customer: Callable[..., str], officers: dict[str, tuple[str, str]]
) -> None:
    cid = _customer_with_pii(db, make_customer)
    make_customer("c-keep", active=True)
    with db.session() as s:
        keep = s.get(Customer, "c-keep")
        assert keep is not None
        keep.name = OTHER_NAME
    cmp1, secret1 = officers["cmp1"]
    cmp2, secret2 = officers["cmp2"]
    mgr, secret_m = officers["mgr"]
    request_id = _request(db, cid, cmp1)
    at = NOW + timedelta(hours=2)

    with db.session() as s:
        req = s.get(PrivacyRequest, request_id)
        assert req is not None and req.status == "pending_approval"
        assert req.due_at - req.received_at == timedelta(days=30)
        approval = s.get(Approval, req.approval_id)
        assert approval is not None and approval.requested_by == cmp1 and approval.event == "erasure_request"
        assert approval.approver_roles == ["compliance"]

    # The requester can never approve their own request, even with a valid code.
    with db.session() as s, pytest.raises(erasure.ErasureError) as own:
        erasure.approve_erasure(
            s, request_id, user_id=cmp1, roles={"compliance"}, code=_code(secret1, at), note="", now=at
        )
    assert own.value.status == 403 and "second compliance officer" in own.value.message
    # A manager is not a compliance officer.
    with db.session() as s, pytest.raises(erasure.ErasureError) as manager:
        erasure.approve_erasure(
            s, request_id, user_id=mgr, roles={"manager"}, code=_code(secret_m, at), note="", now=at
        )
    assert manager.value.status == 403
    # A wrong step-up code changes nothing.
    with db.session() as s, pytest.raises(erasure.ErasureError) as wrong:
        erasure.approve_erasure(
            s, request_id, user_id=cmp2, roles={"compliance"}, code="000000", note="", now=at
        )
    assert wrong.value.status == 403 and wrong.value.field == "code"
    assert scan(db, NAME, EMAIL), "nothing was erased by the refused approvals"

    with db.session() as s:
        report = erasure.approve_erasure(
            s,
            request_id,
            user_id=cmp2,
            roles={"compliance"},
            code=_code(secret2, at),
            note=f"ok, checked the letter from {NAME}",
            now=at,
        )
    assert report.residue == []
    assert scan(db, NAME, EMAIL) == {}, "no PII of the customer in any column of any table"
    assert scan(db, OTHER_NAME) == {"customers.name": 1}, "the other customer is untouched"
    _chains_ok(db)

    with db.session() as s:
        req = s.get(PrivacyRequest, request_id)
        assert req is not None
        assert (req.status, req.fulfilled_by, req.decided_by) == ("fulfilled", cmp2, cmp2)
        customer = s.get(Customer, cid)
        assert customer is not None and customer.erased_at == at and customer.name == "erased"
        states = dict(
            s.execute(
                select(GovernorInstance.governor, GovernorInstance.state).where(
                    GovernorInstance.customer_id == cid
                )
            ).all()
        )
        assert states["customer_account"] == "archived" and states["compliance_audit"] == "data_retention"
        entitlement = s.scalars(
            select(GovernorInstance).where(
                GovernorInstance.customer_id == cid, GovernorInstance.governor == "entitlement"
            )
        ).one()
        assert entitlement.data["sku_id"] == "sku-core", "references are kept, only PII goes"
        reasons = s.scalars(select(TransitionRecord.reason).where(TransitionRecord.customer_id == cid)).all()
        assert all(r is None for r in reasons)
        actions = s.scalars(
            select(AuditEntry.action).where(AuditEntry.customer_id == cid).order_by(AuditEntry.seq)
        ).all()
        assert "privacy.erasure_requested" in actions and actions[-1] == "privacy.erasure_completed"


def test_an_erasure_approved_from_the_approvals_queue_is_completed_by_its_effect(
    db: Database, pg_url: str, make_customer: Callable[..., str], officers: dict[str, tuple[str, str]]
) -> None:
    from webapp.effects import execute

    cid = _customer_with_pii(db, make_customer)
    request_id = _request(db, cid, officers["cmp1"][0])
    at = NOW + timedelta(hours=3)
    with db.session() as s:
        req = s.get(PrivacyRequest, request_id)
        assert req is not None and req.approval_id
        decided = approvals.approve(
            s,
            req.approval_id,
            user_id=officers["cmp2"][0],
            roles={"compliance"},
            code=_code(officers["cmp2"][1], at),
            note="fine",
            now=at,
        )
        assert decided.ok, decided.message
    assert scan(db, NAME, EMAIL), "the generic approval applied the event only; the effect erases"
    with db.session() as s:
        ids = s.scalars(
            select(OutboxMessage.id)
            .where(OutboxMessage.customer_id == cid, OutboxMessage.delivered_at.is_(None))
            .order_by(OutboxMessage.id)
        ).all()
    runtime = Runtime.from_config(Config.from_env({"DATABASE_URL": pg_url}, testing=True))
    try:
        for outbox_id in ids:
            execute(runtime, outbox_id, now=at)
    finally:
        runtime.close()
    assert scan(db, NAME, EMAIL) == {}
    _chains_ok(db)
    with db.session() as s:
        req = s.get(PrivacyRequest, request_id)
        assert req is not None and req.status == "fulfilled" and req.fulfilled_by == officers["cmp2"][0]


def test_a_legal_hold_blocks_the_request_and_an_approval_after_it(
    db: Database, make_customer: Callable[..., str], officers: dict[str, tuple[str, str]]
) -> None:
    cid = _customer_with_pii(db, make_customer)
    officer = Actor(officers["cmp1"][0], "compliance")
    with db.session() as s:
        customer = s.get(Customer, cid)
        assert customer is not None
        hold = erasure.place_hold(s, customer, reference="case-2026-17", actor=officer, now=NOW)
        hold_id = hold.id
    with pytest.raises(erasure.ErasureError) as held:
        _request(db, cid, officer.id)
    assert held.value.status == 409 and "case-2026-17" in held.value.message
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Approval)) == 0, "nothing half-applied"
        assert (
            s.scalar(select(func.count()).select_from(PrivacyRequest).where(PrivacyRequest.kind == "erasure"))
            == 0
        )
        erasure.release_hold(s, hold_id, actor=officer, now=NOW)
    request_id = _request(db, cid, officer.id)
    with db.session() as s:
        customer = s.get(Customer, cid)
        assert customer is not None
        erasure.place_hold(s, customer, reference="court-order-9", actor=officer, now=NOW)
    at = NOW + timedelta(hours=2)
    with db.session() as s, pytest.raises(erasure.ErasureError) as blocked:
        erasure.approve_erasure(
            s,
            request_id,
            user_id=officers["cmp2"][0],
            roles={"compliance"},
            code=_code(officers["cmp2"][1], at),
            note="",
            now=at,
        )
    assert blocked.value.status == 409 and "court-order-9" in blocked.value.message
    # The governor itself sees the hold too (world fact), whatever path fires the event.
    with db.session() as s:
        account = _account(s, cid)
        result = fire_event(
            s,
            EventRequest(
                "t-1",
                "erasure_request",
                account.id,
                {
                    "customer_id": cid,
                    "ownership_verification": "x-1",
                    "legal_hold_checked": True,
                    "reason": "second attempt at erasure",
                },
            ),
            Actor("u-other", "compliance"),
            at,
            approved_by="someone-else",
        )
        assert result.status == 409 and "legal hold" in result.body["error"]["message"]
        s.rollback()
    assert scan(db, NAME)["customers.name"] == 1, "nothing erased while the hold stands"


def test_erasure_is_refused_while_the_account_is_active(
    db: Database, make_customer: Callable[..., str]
) -> None:
    make_customer("c-act", active=True)
    with db.session() as s:
        customer = s.get(Customer, "c-act")
        assert customer is not None
        with pytest.raises(erasure.ErasureError) as refused:
            erasure.request_erasure(
                s,
                customer,
                reason="customer asked",
                ownership_verification="id-1",
                actor=Actor("u-cmp", "compliance"),
                now=NOW,
            )
    assert refused.value.status == 409 and "active" in refused.value.message
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(PrivacyRequest)) == 0
        assert s.scalar(select(func.count()).select_from(Approval)) == 0


def test_free_text_of_compliance_cases_never_reaches_the_chain(
    db: Database, pg_url: str, make_customer: Callable[..., str], officers: dict[str, tuple[str, str]]
) -> None:
    """A case appeal whose reason names the customer (C14 writes an audit note): erasable all the same."""
    from webapp.effects import execute

    cid = _customer_with_pii(db, make_customer)
    with db.session() as s:
        comp = s.scalars(
            select(GovernorInstance).where(
                GovernorInstance.customer_id == cid, GovernorInstance.governor == "compliance_audit"
            )
        ).one()
        comp_id = comp.id
    for n, (event, payload) in enumerate(
        (
            ("violation_detected", {"kind": "violation", "description": f"{NAME} shared a password"}),
            ("violation_confirmed", {"violations": [{"control": "a1"}], "notify_regulator": False}),
            ("customer_appeal", {}),
        )
    ):
        with db.session() as s:
            result = fire_event(
                s,
                EventRequest(
                    "t-1", event, comp_id, {"reason": f"{NAME} phoned about it ({EMAIL})", **payload}
                ),
                Actor("u-cmp", "compliance"),
                NOW + timedelta(minutes=10 + n),
            )
            assert result.status == 200, result.body
    request_id = _request(db, cid, officers["cmp1"][0])
    at = NOW + timedelta(hours=2)
    runtime = Runtime.from_config(Config.from_env({"DATABASE_URL": pg_url}, testing=True))
    try:
        with db.session() as s:
            ids = s.scalars(select(OutboxMessage.id).where(OutboxMessage.delivered_at.is_(None))).all()
        for outbox_id in ids:  # the audit notes are written by the effects
            execute(runtime, outbox_id, now=at)
        with db.session() as s:
            notes = s.scalars(
                select(AuditEntry.payload).where(AuditEntry.action == "effect.audit_note")
            ).all()
        assert any("customer_appeal" in p for p in notes)
        with db.session() as s:
            erasure.approve_erasure(
                s,
                request_id,
                user_id=officers["cmp2"][0],
                roles={"compliance"},
                code=_code(officers["cmp2"][1], at),
                note="",
                now=at,
            )
        with db.session() as s:
            ids = s.scalars(select(OutboxMessage.id).where(OutboxMessage.delivered_at.is_(None))).all()
        for outbox_id in ids:
            execute(runtime, outbox_id, now=at + timedelta(minutes=1))
    finally:
        runtime.close()
    assert scan(db, NAME, EMAIL) == {}
    _chains_ok(db)


def test_a_namesake_customer_keeps_their_data(
    db: Database, make_customer: Callable[..., str], officers: dict[str, tuple[str, str]]
) -> None:
    cid = _customer_with_pii(db, make_customer)
    make_customer("c-twin", active=True)
    with db.session() as s:
        twin = s.get(Customer, "c-twin")
        assert twin is not None
        twin.name = NAME
        account = _account(s, "c-twin")
        twin_account = account.id
    with db.session() as s:
        result = fire_event(
            s,
            EventRequest(
                "t-1", "lock", twin_account, {"reason_code": "manual", "reason": f"{NAME} asked us (Annual)"}
            ),
            Actor("u-sup", "support"),
            NOW + timedelta(minutes=5),
        )
        assert result.status == 200, result.body
    request_id = _request(db, cid, officers["cmp1"][0])
    at = NOW + timedelta(hours=2)
    with db.session() as s:
        report = erasure.approve_erasure(
            s,
            request_id,
            user_id=officers["cmp2"][0],
            roles={"compliance"},
            code=_code(officers["cmp2"][1], at),
            note="",
            now=at,
        )
    assert report.residue == []
    assert scan(db, EMAIL) == {}
    assert scan(db, NAME) == {"customers.name": 1, "transitions.reason": 1}, "only the namesake's own rows"
    with db.session() as s:
        twin = s.get(Customer, "c-twin")
        assert twin is not None and twin.name == NAME and twin.erased_at is None


def test_a_request_whose_approval_expired_can_be_made_again_on_the_same_clock(
    db: Database, make_customer: Callable[..., str], officers: dict[str, tuple[str, str]]
) -> None:
    cid = _customer_with_pii(db, make_customer)
    first = _request(db, cid, officers["cmp1"][0])
    with pytest.raises(erasure.ErasureError) as twice:
        _request(db, cid, officers["cmp1"][0])
    assert twice.value.status == 409 and first in twice.value.message
    later = NOW + timedelta(hours=30)  # approvals expire after 24 h
    with db.session() as s:
        customer = s.get(Customer, cid)
        assert customer is not None
        second = erasure.request_erasure(
            s,
            customer,
            reason="asked again by the customer",
            ownership_verification="idcheck-18",
            actor=Actor(officers["cmp1"][0], "compliance"),
            now=later,
        ).id
    with db.session() as s:
        old, new = s.get(PrivacyRequest, first), s.get(PrivacyRequest, second)
        assert old is not None and new is not None
        assert (old.status, new.status) == ("voided", "pending_approval")
        assert new.due_at == old.due_at == old.received_at + timedelta(days=30), "same clock"
