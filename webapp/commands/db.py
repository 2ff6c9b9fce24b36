"""``marketplace db upgrade``: the only way the schema is made (Alembic)."""

from __future__ import annotations

import click

from webapp.config import Config


def register(main: click.Group) -> None:
    """Add the ``db`` group."""

    @main.group("db")
    def db_group() -> None:
        """Database schema."""

    @db_group.command("upgrade")
    @click.option("--revision", default="head", show_default=True)
    def upgrade_command(revision: str) -> None:
        """Apply Alembic migrations up to REVISION."""
        from webapp.migrate import upgrade

        config = Config.from_env(testing=True)  # the schema needs no SECRET_KEY
        upgrade(config.database_url, revision)
        click.echo(f"database at {revision}")
