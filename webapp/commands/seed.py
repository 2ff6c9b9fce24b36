"""``marketplace seed``: deterministic bulk customers, every life replayed through the service."""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime

import click

from webapp.config import Config


def register(main: click.Group) -> None:
    """Add the ``seed`` command."""

    @main.command("seed")
    @click.option("--customers", type=click.IntRange(min=1), required=True, help="How many customers.")
    @click.option("--tenants", type=click.IntRange(min=1), default=4, show_default=True)
    @click.option(
        "--days", type=click.IntRange(min=1), default=30, show_default=True, help="Length of history."
    )
    @click.option("--seed", "seed_", type=int, default=1, show_default=True, help="Same seed, same data.")
    @click.option(
        "--workers",
        type=click.IntRange(min=1),
        default=None,
        help="Processes (customers are split by tenant; at most one per tenant)."
        " Default: one per CPU on PostgreSQL, one on SQLite.",
    )
    @click.option(
        "--batch", type=click.IntRange(min=1), default=25, show_default=True, help="Customers per commit."
    )
    @click.option(
        "--end",
        default=None,
        help="The simulated now every life runs up to (ISO 8601, UTC); default today 00:00 UTC.",
    )
    def seed_command(
        customers: int, tenants: int, days: int, seed_: int, workers: int | None, batch: int, end: str | None
    ) -> None:
        """Build CUSTOMERS customers over DAYS days of simulated history (re-running skips existing ones)."""
        from webapp.db import Database
        from webapp.services.seed import SeedOptions, SeedReport, seed

        until = None
        if end is not None:
            try:
                moment = datetime.fromisoformat(end)
            except ValueError:
                raise click.BadParameter(f"not an ISO 8601 instant: {end!r}", param_hint="--end") from None
            until = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
        config = Config.from_env(testing=True)  # seeding needs the database only
        db = Database(config.database_url)
        if workers is None:
            workers = 1 if db.is_sqlite else max(1, min(os.cpu_count() or 1, tenants))
        options = SeedOptions(
            customers=customers,
            tenants=tenants,
            days=days,
            seed=seed_,
            end=until,
            batch=batch,
            workers=workers,
        )

        def progress(report: SeedReport, total: int) -> None:
            done = report.created + report.skipped + report.failed
            click.echo(f"  {done}/{total} customers, {report.transitions} transitions", err=True)

        try:
            report = seed(db, options, progress=progress)
        finally:
            db.dispose()
        click.echo(json.dumps(report.as_json(), sort_keys=True))
        for error in report.errors:
            click.echo(f"failed: {error}", err=True)
        sys.exit(1 if report.failed else 0)
