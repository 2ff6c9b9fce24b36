"""The engine set-up: pooled connections are checked after sitting idle, not on every checkout."""

from __future__ import annotations

import pytest
from sqlalchemy import text

import webapp.db
from webapp.db import Database


def _backend(db: Database) -> int:
    with db.engine.connect() as conn:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def test_a_connection_used_a_moment_ago_is_not_pinged(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    db = Database(pg_url, pool_size=1)
    pings: list[object] = []
    ping = db.engine.dialect.do_ping

    def counted(dbapi_connection: object) -> bool:
        pings.append(dbapi_connection)
        return bool(ping(dbapi_connection))

    monkeypatch.setattr(db.engine.dialect, "do_ping", counted)
    try:
        first, second = _backend(db), _backend(db)
        assert first == second and pings == []  # no round trip before each transaction
        monkeypatch.setattr(webapp.db, "PING_AFTER_IDLE", 0.0)
        assert _backend(db) == first and len(pings) == 1  # idle long enough: checked first
    finally:
        db.dispose()


def test_a_pooled_connection_that_died_while_idle_is_replaced(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = Database(pg_url, pool_size=1)
    admin = Database(pg_url, pool_size=1)
    try:
        dead = _backend(db)
        with admin.engine.begin() as conn:
            assert conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": dead}).scalar_one()
        monkeypatch.setattr(webapp.db, "PING_AFTER_IDLE", 0.0)  # it has now sat idle "long enough"
        assert _backend(db) != dead
    finally:
        db.dispose()
        admin.dispose()
