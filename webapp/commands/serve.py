"""``marketplace demo`` (the embedded default, end to end) and ``marketplace serve`` (gunicorn).

``demo`` needs nothing but this package: SQLite under ``instance/`` (unless ``DATABASE_URL`` is set),
the schema upgraded, demo data seeded once (``webapp.services.demo``), the users printed with their
passwords, background work run in-process, and the console served by Werkzeug's threaded server.

``serve`` is the production WSGI server: gunicorn with the app factory, refusing to start without
``SECRET_KEY`` (exit 2).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from gunicorn.app.base import BaseApplication  # type: ignore[import-untyped]

from webapp.config import INSTANCE_DIR, Config, ConfigError


def instance_dir() -> Path:
    """The instance folder (``MARKETPLACE_INSTANCE_DIR`` or ``./instance``)."""
    return Path(os.environ.get("MARKETPLACE_INSTANCE_DIR") or INSTANCE_DIR)


def _banner(url: str, users: list[Any], database_url: str, credentials: Path) -> str:
    lines = [
        "",
        "Marketplace Governance Console: demo",
        f"  console   {url}",
        f"  API       {url}api/v1/openapi.json",
        f"  database  {database_url}",
        "",
        f"  Demo users (generated for this instance; kept in {credentials}):",
    ]
    for u in users:
        lines.append(f"    {u.role:<11} {u.email:<26} password {u.password}")
        if u.totp_secret:
            lines.append(f"    {'':<11} {'':<26} TOTP secret {u.totp_secret}")
    lines += ["", "  Press Ctrl+C to stop.", ""]
    return "\n".join(lines)


def start_background(runtime: Any) -> Any:
    """Background work in-process (``webapp.jobs.InProcessRunner`` in a daemon thread) unless Redis is set."""
    from webapp.jobs import start_background as start

    runner = start(runtime)
    if runner is None:
        click.echo("REDIS_URL is set: background jobs go to RQ; run `marketplace worker` next to the demo")
    return runner


def register(main: click.Group) -> None:
    """Add ``demo`` and ``serve``."""

    @main.command("demo")
    @click.option("--host", default="127.0.0.1", show_default=True)
    @click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
    @click.option(
        "--customers", default=240, show_default=True, type=click.IntRange(0, 5000), help="Customers to seed."
    )
    def demo_command(host: str, port: int, customers: int) -> None:
        """Create or upgrade the database, seed demo data once, serve the console with background work."""
        from werkzeug.serving import make_server

        from webapp import create_app
        from webapp.migrate import upgrade
        from webapp.runtime import Runtime
        from webapp.services.demo import credentials_path, seed_demo

        config = Config.from_env(demo=True)
        click.echo(f"database: {config.database_url}")
        if config.database_url.startswith("sqlite:///"):
            Path(config.database_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        upgrade(config.database_url)
        runtime = Runtime.from_config(config)
        now = datetime.now(UTC)
        started = time.monotonic()
        click.echo("seeding demo data (once per database) ...")
        report = seed_demo(
            runtime.db,
            now,
            customers=customers,
            settings=runtime.settings,
            instance_dir=instance_dir(),
            progress=click.echo,
        )
        if report.seeded:
            click.echo(
                f"seeded {report.customers} customers, {report.events} events, {report.timers_fired} timers "
                f"fired in {time.monotonic() - started:.0f}s"
            )
        else:
            click.echo("demo data already present: reusing it")
        app = create_app(config, runtime=runtime)
        server = make_server(host, port, app, threaded=True)
        url = f"http://{host}:{server.server_port}/"
        runner = start_background(runtime)
        click.echo(_banner(url, report.users, config.database_url, credentials_path(instance_dir())))
        sys.stdout.flush()

        def _stop(_signum: int, _frame: Any) -> None:
            threading.Thread(target=server.shutdown, daemon=True).start()

        signal.signal(signal.SIGTERM, _stop)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            if runner is not None:
                runner.stop()
            runtime.close()
            click.echo("stopped")

    @main.command("serve")
    @click.option("--host", default="127.0.0.1", show_default=True)
    @click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
    @click.option("--workers", default=4, show_default=True, type=click.IntRange(1, 64))
    @click.option("--threads", default=1, show_default=True, type=click.IntRange(1, 64))
    def serve_command(host: str, port: int, workers: int, threads: int) -> None:
        """The production WSGI server (gunicorn); needs SECRET_KEY."""
        try:
            Config.from_env()
        except ConfigError as exc:
            hint = "python -c 'import secrets; print(secrets.token_hex(32))'"
            click.echo(f"error: {exc}. Set SECRET_KEY (for example from {hint}).", err=True)
            sys.exit(2)
        ConsoleServer(f"{host}:{port}", workers, threads).run()


class ConsoleServer(BaseApplication):  # type: ignore[misc]
    """gunicorn running ``create_app`` in every worker (each worker builds its own engine after fork)."""

    def __init__(self, bind: str, workers: int, threads: int = 1) -> None:
        self.options = {
            "bind": bind,
            "workers": workers,
            "threads": threads,
            "accesslog": "-",
            "errorlog": "-",
            "forwarded_allow_ips": "127.0.0.1",
            "timeout": 60,
        }
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from webapp import create_app
        from webapp.runtime import ready_process

        app = create_app(Config.from_env())
        ready_process()
        return app
