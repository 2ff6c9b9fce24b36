"""The Alembic migrations build exactly the schema the models describe, on PostgreSQL and on SQLite.

Alembic is the only way the schema is made (``marketplace db upgrade``), so a model changed without
a migration (or a migration that drifts from the models) must fail here: ``compare_metadata`` is
the same comparison ``alembic revision --autogenerate`` makes, and it must find nothing to do.
"""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Column, MetaData, create_engine, inspect, text

import webapp.models
from webapp.migrate import alembic_config, upgrade
from webapp.models import Base


def _import_every_model_module() -> None:
    """Import every module of ``webapp.models`` so ``Base.metadata`` holds every mapped table."""
    for info in pkgutil.iter_modules(webapp.models.__path__):
        importlib.import_module(f"webapp.models.{info.name}")


_import_every_model_module()


def _compare(url: str, metadata: MetaData) -> list[Any]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn, warnings.catch_warnings():
            # Expression indexes made by raw SQL in a migration (lower(name) for search) cannot be
            # reflected; SQLAlchemy says so and skips them, which is all a comparison can do.
            warnings.filterwarnings("ignore", "Skipped unsupported reflection of expression-based index")
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "include_object": _comparable}
            )
            return list(compare_metadata(context, metadata))
    finally:
        engine.dispose()


def _comparable(obj: Any, _name: str | None, type_: str, _reflected: bool, _other: Any) -> bool:
    """Leave expression indexes (``lower(name)``, made by raw SQL in a migration) out of the comparison.

    PostgreSQL cannot reflect them at all and SQLite only as text, so neither side can be compared
    faithfully; every plain column index still is.
    """
    if type_ != "index":
        return True
    return all(isinstance(e, Column) for e in obj.expressions)


def _differences(url: str) -> list[Any]:
    return _compare(url, Base.metadata)


def _revision(url: str) -> str | None:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def _head(url: str) -> str | None:
    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


def test_postgresql_migrations_match_the_models(pg_url: str) -> None:
    assert _revision(pg_url) == _head(pg_url)
    assert _differences(pg_url) == []


def test_postgresql_has_the_append_only_audit_trigger(pg_url: str) -> None:
    engine = create_engine(pg_url)
    try:
        with engine.connect() as conn:
            triggers = set(
                conn.scalars(
                    text(
                        "SELECT tgname FROM pg_trigger"
                        " WHERE tgrelid = 'audit_entries'::regclass AND NOT tgisinternal"
                    )
                )
            )
    finally:
        engine.dispose()
    assert triggers == {"audit_entries_append_only", "audit_entries_no_truncate"}


def test_a_fresh_sqlite_file_upgrades_to_the_models(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    upgrade(url)
    assert _revision(url) == _head(url)
    assert _differences(url) == []
    engine = create_engine(url)
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert set(Base.metadata.tables) <= tables


def test_a_comparison_would_notice_a_missing_migration(tmp_path: Path) -> None:
    """The check can fail: a table the migrations do not create shows up as a difference."""
    from sqlalchemy import Integer, Table

    url = f"sqlite:///{tmp_path / 'drift.db'}"
    upgrade(url)
    extra = MetaData()
    for table in Base.metadata.tables.values():
        table.to_metadata(extra)
    Table("not_migrated", extra, Column("id", Integer, primary_key=True))
    diffs = _compare(url, extra)
    assert [d[0] for d in diffs] == ["add_table"] and diffs[0][1].name == "not_migrated"


def test_importing_webapp_models_registers_every_model() -> None:
    """Alembic's env.py and the app see ``webapp.models``: a model module it forgets to import is
    invisible to them (autogenerate would drop its table)."""
    probe = "import webapp.models as m; print(' '.join(sorted(m.Base.metadata.tables)))"
    seen = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.split()
    assert sorted(Base.metadata.tables) == seen
