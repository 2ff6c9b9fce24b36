"""The engine set-up: pooled connections are checked after sitting idle, not on every checkout."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import event, func, text

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


def test_execute_many_writes_what_sqlalchemy_writes_and_raises_its_errors(db: Database) -> None:
    """The raw-cursor path: JSON and aware datetimes stored as through SQLAlchemy, listeners see the
    statement, a constraint violation is SQLAlchemy's IntegrityError; a statement that needs column
    defaults goes through SQLAlchemy."""
    from datetime import UTC, datetime, timedelta, timezone

    from sqlalchemy import Table, event, insert, select
    from sqlalchemy.exc import IntegrityError

    from webapp.db import execute_many, raw_execute
    from webapp.models import OutboxMessage

    outbox = OutboxMessage.__table__
    assert isinstance(outbox, Table)
    statement = insert(outbox).inline()
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    row = {
        "job": "run_effect",
        "tenant_id": "t-db",
        "customer_id": None,
        "instance_id": "i-1",
        "governor": "billing",
        "args": {"nested": {"n": 1, "s": "é"}, "list": [1, "two"]},
        "created_at": at,
        "delivered_at": None,
        "attempts": 0,
    }
    seen: list[str] = []

    def record(conn: object, cursor: object, sql: str, *rest: object) -> None:
        seen.append(sql)

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        with db.session() as s:
            connection = s.connection()
            execute_many(connection, statement, [{**row, "id": 9001, "job_id": "db-1"}])
            execute_many(
                connection,
                statement,
                [{**row, "id": 9002, "job_id": "db-2"}, {**row, "id": 9003, "job_id": "db-3"}],
            )
            # No delivered_at/attempts: their defaults are SQLAlchemy's to fill in.
            short = {k: v for k, v in row.items() if k not in ("delivered_at", "attempts")}
            execute_many(connection, statement, [{**short, "id": 9004, "job_id": "db-4"}])
            sql = "SELECT id, args, created_at, attempts FROM outbox ORDER BY id"
            rows = raw_execute(connection, sql, (), named=True).fetchall()
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
    assert sum("INSERT INTO outbox" in sql for sql in seen) == 3 and any("SELECT id" in q for q in seen)
    assert [r.id for r in rows] == [9001, 9002, 9003, 9004]
    assert all(r.args == row["args"] and r.attempts == 0 for r in rows)
    assert all(r.created_at == at and r.created_at.utcoffset() is not None for r in rows)
    with db.session() as s:
        orm = s.scalars(select(OutboxMessage).order_by(OutboxMessage.id)).all()
        assert [o.created_at for o in orm] == [at.astimezone(UTC)] * 4
    with pytest.raises(IntegrityError), db.session() as s:
        execute_many(s.connection(), statement, [{**row, "id": 9005, "job_id": "db-1"}])  # job_id is unique
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(outbox)) == 4


def test_a_json_batch_inserts_updates_upserts_and_deletes_in_one_statement(db: Database) -> None:
    """webapp.db.JsonBatch: each write over its part of one jsonb document, types from the table,
    a re-armed (upserted) row replaced with a new id, listeners told once, errors SQLAlchemy's."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import Table, event, select
    from sqlalchemy.exc import IntegrityError

    from webapp.db import JsonBatch, JsonWrite
    from webapp.models import DueTimer, Tenant

    due: Table = DueTimer.__table__  # type: ignore[assignment]
    tenants: Table = Tenant.__table__  # type: ignore[assignment]
    keys = (
        "tenant_id",
        "customer_id",
        "instance_id",
        "governor",
        "name",
        "event",
        "state_seq",
        "due_at",
        "payload",
    )
    batch = JsonBatch(
        [
            JsonWrite("armed", due, "upsert", keys, match=("instance_id", "name"), renew=("id",)),
            JsonWrite("gone", due, "delete", ("instance_id", "name"), match=("instance_id", "name")),
            JsonWrite(
                "moved", due, "update", ("instance_id", "name", "event"), match=("instance_id", "name")
            ),
        ]
    )
    at = datetime(2026, 3, 2, 9, 30, 15, 123456, tzinfo=UTC)

    def timer(name: str, when: datetime) -> dict[str, object]:
        return {
            "tenant_id": "t",
            "customer_id": None,
            "instance_id": "inst-1",
            "governor": "billing",
            "name": name,
            "event": "retry_due",
            "state_seq": 3,
            "due_at": when,
            "payload": {"attempt": 1, "codes": ["card_declined"]},
        }

    def rows() -> dict[str, tuple[object, ...]]:
        with db.session() as s:
            found = s.execute(select(due.c.name, due.c.id, due.c.due_at, due.c.payload, due.c.event)).all()
        return {r[0]: tuple(r[1:]) for r in found}

    seen: list[str] = []
    event.listen(db.engine, "before_cursor_execute", lambda *a: seen.append(a[2]))
    with db.session() as s:
        batch.execute(s.connection(), {"armed": [timer("a", at), timer("b", at)], "gone": [], "moved": []})
    first = rows()
    assert set(first) == {"a", "b"} and first["a"][1:] == (
        at,
        {"attempt": 1, "codes": ["card_declined"]},
        "retry_due",
    )
    assert len([sql for sql in seen if "jsonb_to_recordset" in sql]) == 1

    later = at + timedelta(hours=1)
    with db.session() as s:
        batch.execute(
            s.connection(),
            {
                "armed": [timer("a", later)],
                "gone": [{"instance_id": "inst-1", "name": "b"}],
                "moved": [{"instance_id": "inst-1", "name": "c", "event": "nothing here"}],
            },
        )
    second = rows()
    assert set(second) == {"a"} and second["a"][1] == later
    assert second["a"][0] != first["a"][0], "re-armed: replaced as a delete and an insert would"

    naive = at.replace(tzinfo=None)
    with pytest.raises(ValueError, match="naive"), db.session() as s:
        batch.execute(s.connection(), {"armed": [timer("n", naive)]})
    duplicate = JsonBatch([JsonWrite("t", tenants, "insert", ("id", "name", "pool_id", "created_at"))])
    row = {"id": "dup", "name": "Dup", "pool_id": "pool-1", "created_at": at}
    with pytest.raises(IntegrityError, match="pk_tenants"), db.session() as s:
        duplicate.execute(s.connection(), {"t": [row, row]})
    assert set(rows()) == {"a"}


def test_begin_with_sends_begin_and_the_statement_in_one_round_trip(db: Database, tmp_path: Path) -> None:
    from psycopg import pq

    from webapp.db import begin_with

    trace = tmp_path / "libpq.trace"
    seen: list[str] = []

    def told(_conn: object, _cursor: object, statement: str, *_rest: object) -> None:
        seen.append(statement)

    event.listen(db.engine, "before_cursor_execute", told)
    try:
        with db.session() as s, open(trace, "w") as out:
            connection = s.connection()
            driver = connection.connection.driver_connection
            assert driver is not None
            driver.pgconn.trace(out.fileno())
            driver.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
            try:
                cursor = begin_with(
                    connection, "SELECT %s::int + 1 AS n, %s AS quoted", (41, "it's"), named=True
                )
                assert cursor is not None
                assert [(r.n, r.quoted) for r in cursor.fetchall()] == [(42, "it's")]
                assert driver.pgconn.transaction_status == pq.TransactionStatus.INTRANS
                # The transaction is open now: a second call leaves the statement to the caller.
                assert begin_with(connection, "SELECT 1", ()) is None
            finally:
                driver.pgconn.untrace()
    finally:
        event.remove(db.engine, "before_cursor_execute", told)
    sent = [line for line in trace.read_text().splitlines() if line.startswith("F") and "\tQuery\t" in line]
    assert len(sent) == 1 and "BEGIN; SELECT 41::int + 1" in sent[0], sent  # no BEGIN of its own
    assert [sql for sql in seen if "BEGIN" in sql] == ["BEGIN; SELECT %s::int + 1 AS n, %s AS quoted"]


def test_begin_with_keeps_the_transaction_settings_and_raises_sqlalchemy_errors(db: Database) -> None:
    from sqlalchemy.exc import DataError

    from webapp.db import begin_with

    with db.engine.connect().execution_options(isolation_level="REPEATABLE READ") as connection:
        cursor = begin_with(connection, "SELECT current_setting(%s)", ("transaction_isolation",))
        assert cursor is not None and cursor.fetchall() == [("repeatable read",)]
    with db.session() as s:
        cursor = begin_with(s.connection(), "SELECT current_setting(%s)", ("transaction_isolation",))
        assert cursor is not None and cursor.fetchall() == [("read committed",)]  # reset on return
    with db.session() as s:
        with pytest.raises(DataError, match="division by zero"):
            begin_with(s.connection(), "SELECT 1 / %s", (0,))
        s.rollback()
        cursor = begin_with(s.connection(), "SELECT %s", (7,))  # the session is usable again
        assert cursor is not None and cursor.fetchall() == [(7,)]


def test_simple_query_runs_its_statements_in_one_query_and_returns_the_last_ones_rows(db: Database) -> None:
    from sqlalchemy.exc import DataError

    from webapp.db import simple_query

    with db.session() as s:
        s.execute(text("SELECT 1"))  # a transaction is open: the statements run inside it
        cursor = simple_query(
            s.connection(),
            "SET LOCAL enable_seqscan = off; SELECT current_setting(%s), %s",
            ("enable_seqscan", "o'k"),
        )
        assert cursor.fetchall() == [("off", "o'k")]
        s.rollback()
        assert s.execute(text("SHOW enable_seqscan")).scalar() == "on"  # SET LOCAL ended with it
    with pytest.raises(DataError, match="division by zero"), db.session() as s:
        simple_query(s.connection(), "SELECT 1; SELECT 1 / %s", (0,))


def test_a_document_quoted_for_the_committing_write_reads_back_byte_for_byte(db: Database) -> None:
    """``execute_committing`` quotes the document itself (quotes doubled, standard_conforming_strings
    on); quotes, backslashes, JSON escapes and non-ASCII text survive the round trip unchanged."""
    import orjson

    from webapp.db import _text_literal

    doc = orjson.dumps(
        {"reason": "it's O'Brien's \\ \"quoted\" \\n C:\\path", "name": "Zoë — 東京", "e": "$gov$ ''"}
    ).decode()
    with db.session() as s:
        driver = s.connection().connection.driver_connection
        assert driver is not None
        literal = _text_literal(driver, doc.encode())
        assert literal.startswith(b"'") and b"E'" not in literal[:2]
        back = driver.execute(
            b"SELECT " + literal + b"::text, (" + literal + b"::jsonb) ->> 'reason'"
        ).fetchone()
    assert back is not None and back[0] == doc
    assert back[1] == orjson.loads(doc)["reason"]


def test_a_guarded_json_batch_writes_only_if_the_rows_read_are_unchanged_and_leaves_them_locked(
    db: Database,
) -> None:
    """webapp.db.JsonGuard: the rows under the guard's key are locked and compared first; every write
    happens only if all still hold the values given, and the statement returns them as they are."""
    from datetime import UTC, datetime

    import psycopg
    from sqlalchemy import Table, select

    from webapp.db import JsonBatch, JsonGuard, JsonWrite
    from webapp.models import Tenant

    tenants: Table = Tenant.__table__  # type: ignore[assignment]
    at = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
    columns = ("id", "name", "pool_id", "created_at")
    batch = JsonBatch(
        [
            JsonWrite("new", tenants, "insert", columns),
            JsonWrite("renamed", tenants, "update", ("id", "name"), match=("id",)),
        ],
        guard=JsonGuard("expect", tenants, ("id",), ("name",)),
    )
    with db.session() as s:
        batch.execute(
            s.connection(),
            {"new": [{"id": i, "name": i.upper(), "pool_id": "p", "created_at": at} for i in "ab"]},
        )

    def names() -> dict[str, str]:
        with db.session() as s:
            return {r[0]: r[1] for r in s.execute(select(tenants.c.id, tenants.c.name))}

    def new(tenant: str) -> dict[str, object]:
        return {"id": tenant, "name": tenant.upper(), "pool_id": "p", "created_at": at}

    # As read: written; the rows come back as they are now (the update of "a" is not in them).
    with db.session() as s:
        found = batch.execute(
            s.connection(),
            {
                "new": [new("c")],
                "renamed": [{"id": "a", "name": "A2"}],
                "expect": [{"id": "b", "name": "B"}, {"id": "a", "name": "A"}],
            },
        )
    assert found == [("a", "A", True), ("b", "B", True)]  # locked in id order
    assert names() == {"a": "A2", "b": "B", "c": "C"}

    # One of them moved since: nothing written, and both are locked until the transaction ends.
    with db.session() as s:
        found = batch.execute(
            s.connection(),
            {
                "new": [new("d")],
                "renamed": [{"id": "b", "name": "B2"}],
                "expect": [{"id": "a", "name": "A"}, {"id": "b", "name": "B"}],
            },
        )
        assert found == [("a", "A2", False), ("b", "B", False)]
        with (
            psycopg.connect(
                db.engine.url.render_as_string(hide_password=False).replace("+psycopg", "")
            ) as other,
            pytest.raises(psycopg.errors.LockNotAvailable),
        ):
            other.execute("SELECT 1 FROM tenants WHERE id = 'b' FOR UPDATE NOWAIT")
    assert names() == {"a": "A2", "b": "B", "c": "C"}

    # A row that does not exist cannot hold the value read: nothing written, nothing returned.
    with db.session() as s:
        assert (
            batch.execute(s.connection(), {"new": [new("e")], "expect": [{"id": "zz", "name": "ZZ"}]}) == []
        )
    # Without the guard's key the batch writes unconditionally and returns nothing.
    with db.session() as s:
        assert batch.execute(s.connection(), {"new": [new("f")]}) is None
    assert set(names()) == {"a", "b", "c", "f"}


def test_the_hot_path_reuses_one_cursor_per_connection_and_kind(db: Database) -> None:
    """webapp.db.own_cursor: raw_execute and begin_with reuse the cursor kept with the DBAPI
    connection (per class and row kind); each connection has its own; results are the last call's."""
    from psycopg import ClientCursor, RawCursor

    from webapp.db import begin_with, own_cursor, raw_execute

    with db.session() as s:
        connection = s.connection()
        first = begin_with(connection, "SELECT %s::int AS n", (1,), named=True)
        assert first is own_cursor(connection, ClientCursor, True) and first.fetchone().n == 1
        a = raw_execute(connection, "SELECT $1::int", (2,))
        assert a.fetchall() == [(2,)]
        b = raw_execute(connection, "SELECT $1::int, $2::text", (3, "x"))
        assert b is a and b.fetchall() == [(3, "x")]
        named = raw_execute(connection, "SELECT $1::int AS n", (4,), named=True)
        assert named is not a and named.fetchone().n == 4
        assert a is own_cursor(connection, RawCursor, False)
        with db.session() as other:  # another pooled connection: its own cursor
            theirs = raw_execute(other.connection(), "SELECT 5", ())
            assert theirs is not a and theirs.fetchall() == [(5,)]


def test_begin_with_quotes_its_parameters_as_psycopg_would(db: Database) -> None:
    """begin_with puts the parameters into the query itself: strings with quotes, backslashes and
    any script come back unchanged, and other values as psycopg's client-side binding sends them."""
    from datetime import UTC, datetime
    from decimal import Decimal

    from webapp.db import begin_with

    values = [
        "plain",
        "it's",
        "back\\slash \\' and \\\\ two",
        "'; DROP TABLE tenants; --",
        "ünïcødé ✓ 漢字 \U0001f600",
        "%s %% $1",
        "",
        "line\nbreak\ttab",
        0,
        -(2**62),
        None,
        True,
        Decimal("12.50"),
        datetime(2026, 3, 2, 9, 30, 1, 5, tzinfo=UTC),
    ]
    for value in values:
        with db.session() as s:
            cursor = begin_with(s.connection(), "SELECT %s AS v, pg_typeof(%s)::text AS t", (value, value))
            assert cursor is not None
            got, _type = cursor.fetchone()
            assert got == value, (value, got)
