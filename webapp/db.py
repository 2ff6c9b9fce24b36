"""Engine and session factory for PostgreSQL (production, tests) and SQLite (the embedded default)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, cast
from weakref import WeakKeyDictionary

import orjson
from sqlalchemy import Connection, Engine, Executable, String, Table, create_engine, event
from sqlalchemy.exc import DBAPIError, DisconnectionError, StatementError
from sqlalchemy.orm import Session, sessionmaker

from webapp.isotime import iso_text

PING_AFTER_IDLE = 5.0
"""Seconds a pooled connection may sit idle before its next checkout pings the server first."""


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def _note_idle(_dbapi_connection: Any, record: Any) -> None:
    record.info["idle_since"] = time.monotonic()


def _ping_when_idle(engine: Engine) -> None:
    """Ping a pooled connection at checkout only when it sat idle for a while.

    ``pool_pre_ping`` pings on every checkout: a round trip per transaction, which a busy service
    (one short transaction per event) pays thousands of times a second on connections it used a
    millisecond ago. A connection idle longer than ``PING_AFTER_IDLE`` (a restarted server, a dropped
    socket) is still checked, and replaced if dead.
    """

    def checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is not None and time.monotonic() - since < PING_AFTER_IDLE:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            raise DisconnectionError(str(exc)) from exc

    event.listen(engine, "connect", _note_idle)
    event.listen(engine, "checkin", _note_idle)
    event.listen(engine, "checkout", checkout)


_RAW: dict[tuple[Executable, tuple[str, ...]], tuple[str, dict[str, Any]] | None] = {}
"""Compiled SQL per (statement, parameter keys); the statements are module-level constants."""


def execute_many(connection: Connection, statement: Executable, rows: Sequence[Mapping[str, Any]]) -> None:
    """Run a prebuilt Core INSERT/UPDATE/DELETE (no RETURNING) once per row, as ``connection.execute``.

    On PostgreSQL it goes straight to the psycopg cursor with SQL compiled once per statement and
    key set, and the columns' own bind processing (JSON, datetimes): SQLAlchemy's per-execution
    set-up costs more than sending the rows. The statement is used as given, so it must not rely on
    Python-side column defaults (a statement that would is run through SQLAlchemy instead).
    SQLAlchemy's ``before_cursor_execute`` listeners still see it. Elsewhere: ``connection.execute``.
    """
    if not rows:
        return
    if connection.dialect.name != "postgresql":
        connection.execute(statement, list(rows))
        return
    key = (statement, tuple(rows[0]))
    if key not in _RAW:
        _RAW[key] = _compile_raw(connection, statement, key[1])
    raw = _RAW[key]
    if raw is None:
        connection.execute(statement, list(rows))
        return
    sql, processors = raw
    params = [{k: (processors[k](v) if k in processors else v) for k, v in row.items()} for row in rows]
    driver = connection.connection.driver_connection
    assert driver is not None
    cursor = driver.cursor()
    if len(params) == 1:
        _run(connection, cursor, sql, params[0])
    else:
        _run(connection, cursor, sql, params, many=True)


def _run(
    connection: Connection,
    cursor: Any,
    sql: str,
    params: Any,
    *,
    many: bool = False,
    sent: bytes | None = None,
    prepare: bool | None = None,
) -> None:
    """Execute on a driver cursor as ``connection.execute`` would: listeners told, errors wrapped.
    ``sent``: the query with its parameters already in it, sent instead of ``sql`` and ``params``;
    ``prepare``: psycopg's (True: prepare it now, None: once it has been seen a few times)."""
    if connection._has_events or connection.engine._has_events:
        connection.dispatch.before_cursor_execute(connection, cursor, sql, params, None, many)
    try:
        if many:
            cursor.executemany(sql, params)
        elif sent is not None:
            cursor.execute(sent)
        else:
            cursor.execute(sql, params, prepare=prepare)
    except connection.dialect.loaded_dbapi.Error as exc:
        raise _sqlalchemy_error(connection, sql, params, exc) from exc


def _sqlalchemy_error(connection: Connection, sql: str, params: Any, exc: Exception) -> StatementError:
    """The driver's error as SQLAlchemy raises it (IntegrityError, ...) from ``connection.execute``."""
    return DBAPIError.instance(
        sql, params, exc, connection.dialect.loaded_dbapi.Error, dialect=connection.dialect
    )


def _compile_raw(
    connection: Connection, statement: Executable, keys: tuple[str, ...]
) -> tuple[str, dict[str, Any]] | None:
    dialect = connection.dialect
    compiled = cast(Any, statement).compile(dialect=dialect, column_keys=list(keys))
    names: dict[Any, str] = compiled.bind_names
    if not set(names.values()) <= set(keys) or compiled.returning:
        return None
    processors = {}
    for bind, name in names.items():
        process = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if process is not None:
            processors[name] = process
    return str(compiled), processors


class Database:
    """One engine and its session factory. ``session()`` is a unit of work: commit or roll back."""

    def __init__(self, url: str, **engine_options: Any) -> None:
        self.url = url
        if url.startswith("sqlite"):
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            engine_options.setdefault("connect_args", {"check_same_thread": False})
        else:
            engine_options.setdefault("pool_size", 10)
            engine_options.setdefault("max_overflow", 10)
        self.engine: Engine = create_engine(url, **engine_options)
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        elif not engine_options.get("pool_pre_ping"):
            _ping_when_idle(self.engine)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        """True for the embedded default (no row locks: SQLite serializes writers instead)."""
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on any exception."""
        with self.sessions() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


# --------------------------------------------------------------------------- one-statement write batches


@dataclass(frozen=True)
class JsonWrite:
    """One table's share of a ``JsonBatch``: rows given under ``key`` in the batch's JSON document.

    ``kind``: ``insert``; ``update`` (set ``columns`` on the rows whose ``match`` columns equal the
    row's); ``delete`` (the rows whose ``match`` columns equal one of the given rows'); ``upsert``
    (insert, or on a conflict over ``match`` set the other columns, and the ``renew`` columns to
    their defaults: the row is replaced as a delete and an insert would, new id and all). Rows are
    dicts of the named columns; datetimes may be given as such (aware ones only), JSON columns as
    plain JSON values.
    """

    key: str
    table: Table
    kind: str
    columns: tuple[str, ...]
    match: tuple[str, ...] = ()
    renew: tuple[str, ...] = ()


@dataclass(frozen=True)
class JsonGuard:
    """The condition of a ``JsonBatch``: rows that must still hold the values the writer read.

    The document's ``key`` lists rows by their ``match`` columns with the ``expect`` columns' values
    as the writer last read them, unlocked. The statement first locks those rows FOR UPDATE (in
    ``match`` order, text compared bytewise as Python's ``sorted`` orders it, the order every other
    locker of such rows uses) and compares; every write of the batch happens only if all of them
    still match. Either way the rows stay locked until the transaction ends, and the statement
    returns them as they are now: a writer that read stale values works its rows out again from
    these (nobody else can move them any more) and writes again. Compare-and-set, for a write set
    worked out from an unlocked read instead of a locking round trip of its own.
    """

    key: str
    table: Table
    match: tuple[str, ...]
    expect: tuple[str, ...]


class JsonBatch:
    """Several tables' writes sent to PostgreSQL as ONE statement with ONE ``jsonb`` parameter.

    Each write is a data-modifying CTE over ``jsonb_to_recordset`` of its part of the document, so a
    transaction's whole write set costs one round trip and one parameter to encode (``orjson``, some
    ten times faster than ``json.dumps`` on such a document) instead of a statement and a parameter
    adaptation per row and column: on the transition service's hot path the driver's per-parameter
    work cost more than PostgreSQL's. The column types come from the tables, so the SQL follows the
    models. All CTEs see the same snapshot and run to completion; a table may appear in several
    writes only on disjoint rows. Only the writes that have rows are in the statement (the server
    opens every table and index a statement names, rows or not); the text of each combination is
    made once, and the server prepares each once (an event writes one of a handful). With a
    ``guard`` (``JsonGuard``) and rows under its key, the writes are conditional on it.
    """

    def __init__(self, writes: Sequence[JsonWrite], guard: JsonGuard | None = None) -> None:
        self.writes = tuple(writes)
        self.guard = guard
        self._sql: dict[frozenset[str], str] = {}

    def sql(self, dialect: Any, keys: Iterable[str] | None = None) -> str:
        """The statement's PostgreSQL text (``$1`` is the document) for the writes named by ``keys``
        (default: all of them, unguarded), in their declared order; the guard's key makes them
        conditional, and the statement returns the guarded rows (``execute``)."""
        wanted = frozenset(w.key for w in self.writes) if keys is None else frozenset(keys)
        text = self._sql.get(wanted)
        if text is None:
            parts = ["d AS (SELECT CAST($1 AS jsonb) AS doc)"]
            guard = self.guard if self.guard is not None and self.guard.key in wanted else None
            if guard is not None:
                parts.extend(_guard_sql(guard, dialect))
            for n, w in enumerate(self.writes):
                if w.key in wanted:
                    parts.append(f"w{n} AS ({_write_sql(w, dialect, guarded=guard is not None)})")
            result = "SELECT 1"
            if guard is not None:
                quote = dialect.identifier_preparer.quote
                names = ", ".join(quote(c) for c in (*guard.match, *guard.expect))
                result = f"SELECT {names}, (SELECT ok FROM ok) FROM g"
            text = self._sql[wanted] = "WITH " + ",\n".join(parts) + "\n" + result
        return text

    def execute(
        self, connection: Connection, doc: Mapping[str, Sequence[Mapping[str, Any]]], *, commit: bool = False
    ) -> list[tuple[Any, ...]] | None:
        """Write ``doc`` (write key → rows) in one statement on ``connection`` (PostgreSQL only).

        With rows under the guard's key: returns the guarded rows as they are now, each as its
        match and expect columns then whether the writes happened (the same on every row), or an
        empty list if none of them exists (nothing written). Otherwise None. ``commit``: the
        transaction is committed with the statement, in the same round trip (``execute_committing``;
        the guarded rows' locks end with it, and a guard that failed committed nothing).
        """
        present = {key: rows for key, rows in doc.items() if rows}
        if not present:
            return None
        # Datetimes pass through to _json_default, which refuses naive ones as json.dumps did.
        try:
            text = orjson.dumps(
                present, default=_json_default, option=orjson.OPT_PASSTHROUGH_DATETIME
            ).decode()
        except orjson.JSONEncodeError as exc:
            if isinstance(exc.__cause__, ValueError):  # orjson wraps what the default raised
                raise exc.__cause__ from None
            raise
        sql = self.sql(connection.dialect, present)
        if commit:
            cursor = execute_committing(connection, sql, text)
        else:
            cursor = raw_execute(connection, sql, (text,))
        if self.guard is None or self.guard.key not in present:
            return None
        return cast(list[tuple[Any, ...]], cursor.fetchall())


def raw_execute(connection: Connection, sql: str, params: Sequence[Any], *, named: bool = False) -> Any:
    """Run PostgreSQL ``sql`` with ``$1``-style ``params`` on the connection's psycopg connection.

    For the hot path's fixed statements: no SQLAlchemy execution context and no client-side
    rewriting of the query text (a raw cursor sends it as written, and psycopg prepares it once
    it has seen it a few times). Returns the cursor, its rows as plain tuples (``named``: named
    tuples); errors are raised as SQLAlchemy's (IntegrityError, ...), and ``before_cursor_execute``
    listeners see the statement. The cursor is the connection's own (``own_cursor``): read its
    rows before the next ``raw_execute`` or ``begin_with`` on the connection.
    """
    from psycopg import RawCursor

    cursor = own_cursor(connection, RawCursor, named)
    _run(connection, cursor, sql, params)
    return cursor


_PREPARED_KEYS: WeakKeyDictionary[Any, dict[str, Any]] = WeakKeyDictionary()
"""psycopg connection → statement text → psycopg's key for it in the connection's prepared statements."""


def execute_committing(connection: Connection, sql: str, param: str) -> Any:
    """Run PostgreSQL ``sql`` (one parameter, ``$1``, sent as text) and COMMIT, in one round trip.

    A transaction's last statement and its ``COMMIT`` go out as one simple-protocol query,
    ``EXECUTE <name>('…'); COMMIT``, where ``<name>`` is the statement as psycopg prepared it on this
    connection (so the server plans it once, as before). A round trip costs the calling thread and
    the server about as much CPU as a small statement does (see ``begin_with``). psycopg keeps the
    book of what is prepared (it deallocates everything after a rollback, and the least used past
    its limit): when the statement is not prepared there (a new connection, or since a rollback),
    it runs the usual way, prepared by psycopg as it goes, and the COMMIT follows in a round trip of
    its own. If the statement fails, the server skips the ``COMMIT`` and the transaction is left
    failed, to be rolled back as usual; errors are raised as SQLAlchemy's. The caller's own commit
    afterwards finds no transaction open and sends nothing (psycopg does not send ``COMMIT`` when
    idle); the next statement begins a new transaction. Returns the cursor on the statement's rows.
    """
    from psycopg import ClientCursor, RawCursor

    driver = connection.connection.driver_connection
    assert driver is not None
    name = _prepared_name(driver, sql)
    if name is None:
        cursor = own_cursor(connection, RawCursor, False)
        _run(connection, cursor, sql, (param,), prepare=True)
        try:
            driver.commit()
        except connection.dialect.loaded_dbapi.Error as exc:
            raise _sqlalchemy_error(connection, "COMMIT", (), exc) from exc
        return cursor
    cursor = own_cursor(connection, ClientCursor, False)
    literal = _text_literal(driver, param.encode())
    _run(connection, cursor, sql, (param,), sent=b"EXECUTE " + name + b"(" + literal + b"); COMMIT")
    return cursor


def _text_literal(driver: Any, text: bytes) -> bytes:
    """``text`` as an SQL string literal. With ``standard_conforming_strings`` on (PostgreSQL's
    default) only quotes are doubled, by one C pass of ``bytes.replace`` (libpq's escaping of an
    event's ~10 kB document cost a fifth of a millisecond); otherwise libpq quotes it."""
    if driver.pgconn.parameter_status(b"standard_conforming_strings") == b"on" and b"\0" not in text:
        return b"'" + text.replace(b"'", b"''") + b"'"
    from psycopg.pq import Escaping

    return bytes(Escaping(driver.pgconn).escape_literal(text))


def _prepared_name(driver: Any, sql: str) -> bytes | None:
    """The name of ``sql`` among the statements psycopg has prepared on ``driver``, if it is one.

    Read from psycopg's own book (``Connection._prepared``, not public API): should it move in a
    later psycopg, this finds nothing and the write goes the usual way, one round trip slower.
    """
    names = getattr(getattr(driver, "_prepared", None), "_names", None)
    if not names:
        return None
    keys = _PREPARED_KEYS.get(driver)
    if keys is None:
        keys = _PREPARED_KEYS[driver] = {}
    key = keys.get(sql)
    if key is None or key not in names:
        query = sql.encode()
        key = next((k for k in names if isinstance(k, tuple) and k and k[0] == query), None)
        if key is None:
            return None
        keys[sql] = key
    name = names.get(key)
    return name if isinstance(name, bytes) else None


def own_cursor(connection: Connection, kind: type, named: bool) -> Any:
    """A psycopg cursor of class ``kind`` kept with the connection's DBAPI connection, made once.

    A psycopg cursor copies the connection's adapter map when it is made (some 5 % of the transition
    service's Python per event, for its two statements); the hot path's statements reuse one
    instead. Its results are the last statement's: callers read them at once.
    """
    from psycopg.rows import namedtuple_row

    fairy = connection.connection
    driver = fairy.driver_connection
    assert driver is not None
    key = (kind, named)
    cursors = fairy.info.setdefault("own_cursors", {})
    cursor = cursors.get(key)
    if cursor is None or cursor.connection is not driver or cursor.closed:
        cursor = cursors[key] = kind(driver, row_factory=namedtuple_row) if named else kind(driver)
    return cursor


def begin_with(connection: Connection, sql: str, params: Sequence[Any], *, named: bool = False) -> Any:
    """Begin the connection's transaction with ``sql`` (statements with ``%s`` parameters): one round
    trip for both, where psycopg would send its ``BEGIN`` and wait for it first.

    On a busy service every round trip costs the calling thread CPU (driver work, a wake-up, the GIL
    taken back) and the server a statement: measured with four threads, each extra round trip of an
    event cost about 0.2 ms of Python and 0.1 ms of PostgreSQL. Here ``BEGIN`` (with the isolation
    level, read-only and deferrable settings psycopg would give it) and ``sql`` go out as one
    simple-protocol query (``simple_query``). Returns the cursor on the first statement's rows, or
    None when the transaction is already open (the caller then runs the statement as usual).

    psycopg sends ``BEGIN`` itself before the first statement unless the connection is in
    autocommit; its flag is set for the one call (an internal attribute: should psycopg rename it,
    psycopg sends its ``BEGIN`` first again and the server ignores the second one with a warning,
    so the result is the same, one round trip slower).
    """
    from psycopg import IsolationLevel
    from psycopg.pq import TransactionStatus

    driver = connection.connection.driver_connection
    assert driver is not None
    if driver.autocommit or driver.pgconn.transaction_status != TransactionStatus.IDLE:
        return None
    begin = ["BEGIN"]
    if driver.isolation_level is not None:
        begin.append("ISOLATION LEVEL " + IsolationLevel(driver.isolation_level).name.replace("_", " "))
    if driver.read_only is not None:
        begin.append("READ ONLY" if driver.read_only else "READ WRITE")
    if driver.deferrable is not None:
        begin.append("DEFERRABLE" if driver.deferrable else "NOT DEFERRABLE")
    driver._autocommit = True  # see above
    try:
        return simple_query(connection, " ".join(begin) + "; " + sql, params, named=named)
    finally:
        driver._autocommit = False


def simple_query(connection: Connection, sql: str, params: Sequence[Any], *, named: bool = False) -> Any:
    """Send ``sql`` (one or more statements, ``%s`` parameters) as one simple-protocol query, the
    parameters quoted on the client (``_literal``), errors raised as SQLAlchemy's. Returns the cursor
    on the first statement's rows that has any (past BEGIN, SET, ...; ``nextset()`` moves on to the
    next statement's), to be read before the next statement on the connection."""
    from psycopg import ClientCursor
    from psycopg.pq import ExecStatus

    rows = ExecStatus.TUPLES_OK
    driver = connection.connection.driver_connection
    assert driver is not None
    cursor = own_cursor(connection, ClientCursor, named)
    # Quoted here rather than by the cursor's query conversion (its parse and adapter lookups cost
    # more than the few ids and counts this is sent with); listeners still see text and params.
    sent = sql.encode() % tuple(_literal(driver, p) for p in params)
    _run(connection, cursor, sql, params, sent=sent)
    # Past BEGIN, SET, ... (a result's status is cheap to read; ``description`` builds its columns).
    while cursor.pgresult is not None and cursor.pgresult.status != rows and cursor.nextset():
        pass
    return cursor


def _literal(driver: Any, value: Any) -> bytes:
    """``value`` as an SQL literal, as psycopg's client-side binding would quote it."""
    kind = type(value)
    if kind is str:
        return _text_literal(driver, value.encode())
    if kind is int:
        return str(value).encode()
    if value is None:
        return b"NULL"
    from psycopg import sql

    return sql.Literal(value).as_bytes(driver)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return iso_text(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _guard_sql(guard: JsonGuard, dialect: Any) -> list[str]:
    """The guard's CTEs: ``g`` locks and reads the rows, ``ok`` says whether all still match."""
    quote = dialect.identifier_preparer.quote
    table = quote(guard.table.name)
    columns = (*guard.match, *guard.expect)
    matched = " AND ".join(f"t.{quote(c)} = x.{quote(c)}" for c in guard.match)
    same = " AND ".join(f"t.{quote(c)} IS NOT DISTINCT FROM x.{quote(c)}" for c in guard.expect)
    order = ", ".join(
        f"t.{quote(c)}" + (' COLLATE "C"' if isinstance(guard.table.c[c].type, String) else "")
        for c in guard.match
    )
    return [
        f"g AS MATERIALIZED (SELECT {', '.join(f't.{quote(c)}' for c in columns)}, {same} AS same"
        f" FROM {table} AS t JOIN (d CROSS JOIN {_recordset(guard.table, guard.key, columns, dialect)})"
        f" ON {matched} ORDER BY {order} FOR UPDATE OF t)",
        f"ok AS MATERIALIZED (SELECT count(*) FILTER (WHERE same)"
        f" = (SELECT jsonb_array_length(doc -> '{guard.key}') FROM d) AS ok FROM g)",
    ]


def _recordset(table: Table, key: str, columns: Sequence[str], dialect: Any) -> str:
    """The rows under ``key`` of the document ``d`` as a record set ``x`` of ``table``'s column types."""
    quote = dialect.identifier_preparer.quote
    record = ", ".join(
        f"{quote(c)} {table.c[c].type.dialect_impl(dialect).compile(dialect)}" for c in columns
    )
    return f"jsonb_to_recordset(d.doc -> '{key}') AS x({record})"


def _write_sql(w: JsonWrite, dialect: Any, *, guarded: bool = False) -> str:
    quote = dialect.identifier_preparer.quote
    table = quote(w.table.name)
    source = f"d, {_recordset(w.table, w.key, w.columns, dialect)}"
    condition = " AND (SELECT ok FROM ok)" if guarded else ""
    where = " WHERE (SELECT ok FROM ok)" if guarded else ""
    names = ", ".join(quote(c) for c in w.columns)
    matched = " AND ".join(f"t.{quote(c)} = x.{quote(c)}" for c in w.match)
    rest = [c for c in w.columns if c not in w.match]
    if w.kind == "insert":
        return f"INSERT INTO {table} ({names}) SELECT {names} FROM {source}{where}"
    if w.kind == "upsert":
        sets = ", ".join(
            [f"{quote(c)} = DEFAULT" for c in w.renew] + [f"{quote(c)} = EXCLUDED.{quote(c)}" for c in rest]
        )
        conflict = ", ".join(quote(c) for c in w.match)
        return (
            f"INSERT INTO {table} ({names}) SELECT {names} FROM {source}{where}"
            f" ON CONFLICT ({conflict}) DO UPDATE SET {sets}"
        )
    if w.kind == "update":
        sets = ", ".join(f"{quote(c)} = x.{quote(c)}" for c in rest)
        return f"UPDATE {table} AS t SET {sets} FROM {source} WHERE {matched}{condition}"
    if w.kind == "delete":
        return f"DELETE FROM {table} AS t USING {source} WHERE {matched}{condition}"
    raise ValueError(f"unknown write kind {w.kind!r}")
