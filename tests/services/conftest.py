"""Service fixtures: the database, a clean slate per test, and factories for tenants and customers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from webapp.db import Database
from webapp.models import Base

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="session")
def database(pg_url: str) -> Iterator[Database]:
    db = Database(pg_url)
    yield db
    db.dispose()


@pytest.fixture
def db(database: Database) -> Database:
    """The database, emptied before each test (append-only audit rows need TRUNCATE's trigger off)."""
    tables = ", ".join(f'"{t.name}"' for t in reversed(Base.metadata.sorted_tables))
    with database.engine.begin() as conn:
        conn.execute(text("ALTER TABLE audit_entries DISABLE TRIGGER USER"))
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        conn.execute(text("ALTER TABLE audit_entries ENABLE TRIGGER USER"))
    return database


@pytest.fixture(autouse=True)
def _uncontended(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no tenant marked contended (a mark makes events lock their audit head
    up front, which would change the statements an earlier test's race leaves behind)."""
    from webapp.services import transitions

    monkeypatch.setattr(transitions, "_CONTENDED", {})


@pytest.fixture
def make_customer(db: Database) -> Callable[..., str]:
    """Create a tenant (once) and a signed-up customer through the real service; returns the customer id."""
    from webapp.services.setup import activate_customer, ensure_catalog, ensure_tenant, signup_customer

    def make(
        customer_id: str = "c-1", tenant_id: str = "t-1", tier: str = "starter", active: bool = False
    ) -> str:
        with db.session() as session:
            ensure_tenant(session, tenant_id, NOW)
            ensure_catalog(session, NOW)
        with db.session() as session:
            signup_customer(
                session,
                tenant_id,
                customer_id,
                name="Ada Example",
                email=f"{customer_id}@example.test",
                tier=tier,
                now=NOW,
            )
        if active:
            with db.session() as session:
                activate_customer(session, tenant_id, customer_id, now=NOW)
        return customer_id

    return make
