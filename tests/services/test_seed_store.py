"""The seed's BulkStore: a customer served from memory and written in one statement, on PostgreSQL.

The seed tests compare whole seeds built with and without it; these drive the service through it
by hand, down the paths where the service writes through the session itself (an approval request,
a rejection) and where a savepoint rolls back.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from governors.scenarios import onboard
from webapp import audit
from webapp.db import Database
from webapp.models import Approval, AuditEntry, Customer, GovernorInstance, TransitionRecord
from webapp.services.instances import to_instance
from webapp.services.seed_store import BulkStore
from webapp.services.setup import PLATFORM_TENANT, ensure_catalog, ensure_tenant
from webapp.services.transitions import SYSTEM, Actor, EventRequest, EventResult, fire_event

from .conftest import NOW
from .test_transitions import LOCK, SUPPORT, UNLOCK

TENANT = "bulk-t"


def _store(db: Database) -> BulkStore:
    with db.session() as s:
        ensure_catalog(s, NOW)
        ensure_tenant(s, TENANT, NOW)
    with db.session() as s:
        rows = s.scalars(select(GovernorInstance).where(GovernorInstance.governor == "catalog"))
        return BulkStore({r.id: to_instance(r) for r in rows}, PLATFORM_TENANT)


def _signup(s: Session, store: BulkStore, customer: str) -> str:
    """The customer row and its sign-up through the store; returns the account's instance id."""
    s.add(
        Customer(
            id=customer, tenant_id=TENANT, name="Bulk", email="b@example.test", tier="starter", created_at=NOW
        )
    )
    s.flush()
    result = fire_event(
        s,
        EventRequest(
            TENANT, "signup", governor="customer_account", customer_id=customer, payload={"tier": "starter"}
        ),
        SYSTEM,
        NOW,
        store=store,
    )
    assert result.status == 200, result.body
    return str(result.body["instance_id"])


def _fire(
    s: Session, store: BulkStore, iid: str, event: str, payload: dict[str, object], **kw: object
) -> EventResult:
    actor = kw.pop("actor", SUPPORT)
    assert isinstance(actor, Actor)
    return fire_event(
        s, EventRequest(TENANT, event, iid, payload), actor, NOW + timedelta(minutes=5), store=store, **kw
    )  # type: ignore[arg-type]


def _written(s: Session) -> int:
    return int(
        s.scalar(
            select(func.count())
            .select_from(TransitionRecord)
            .where(TransitionRecord.customer_id == "bulk-c1")
        )
        or 0
    )


def test_a_life_through_the_store_lands_whole_with_approvals_and_rejections_in_chain_order(
    db: Database,
) -> None:
    store = _store(db)
    with db.session() as s:
        account = _signup(s, store, "bulk-c1")
        for step in onboard("kyc-bulk-c1"):
            assert _fire(s, store, account, step.event, dict(step.payload), actor=SYSTEM).status == 200
        assert _written(s) == 0, "buffered, not written"
        assert _fire(s, store, account, "lock", LOCK).status == 200
        # Four-eyes: the approval request is written through the session, after the buffer.
        pending = _fire(s, store, account, "unlock", UNLOCK)
        assert pending.status == 202
        assert _written(s) > 0, "flushed first"
        # Refused (already locked): audited through the session too.
        assert _fire(s, store, account, "lock", LOCK).status == 409
        # And applied again through the buffer, chained after those direct appends.
        approved = _fire(s, store, account, "unlock", UNLOCK, approved_by="bulk-manager")
        assert approved.status == 200, approved.body
        store.flush(s)
        store.forget("bulk-c1")
    with db.session() as s:
        row = s.get(GovernorInstance, account)
        assert row is not None and row.state == "active"
        applied = s.scalar(
            select(func.count())
            .select_from(TransitionRecord)
            .where(TransitionRecord.customer_id == "bulk-c1")
        )
        actions = s.scalars(
            select(AuditEntry.action).where(AuditEntry.tenant_id == TENANT).order_by(AuditEntry.seq)
        ).all()
        assert s.scalar(select(func.count()).select_from(Approval)) == 1
        result = audit.verify_tenant(s, TENANT)
    assert result.ok, result
    assert actions.count("approval.requested") == 1 and actions.count("transition.rejected") == 1
    assert actions.count("transition") == applied
    assert actions.index("approval.requested") < actions.index("transition.rejected") < len(actions) - 1


def test_a_rolled_back_life_leaves_nothing_and_the_next_one_chains_on(db: Database) -> None:
    store = _store(db)
    with db.session() as s:
        savepoint = s.begin_nested()
        _signup(s, store, "bulk-gone")
        store.flush(s)
        savepoint.rollback()
        store.discard()
        store.forget("bulk-gone")
        savepoint = s.begin_nested()
        account = _signup(s, store, "bulk-kept")
        store.flush(s)
        savepoint.commit()
    with db.session() as s:
        customers = s.scalars(select(GovernorInstance.customer_id).distinct()).all()
        result = audit.verify_tenant(s, TENANT)
        first = s.scalar(select(func.min(AuditEntry.seq)).where(AuditEntry.tenant_id == TENANT))
    assert set(customers) == {None, "bulk-kept"}
    assert result.ok and first == 1, result
    assert store.instance(account) is not None
