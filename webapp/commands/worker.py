"""``marketplace worker [--burst]``: the background worker, with the runtime built once.

With ``REDIS_URL`` it is a real RQ worker with the scheduler (retries and the periodic sweep are RQ
scheduled jobs); at start it relays whatever the outbox holds and books the periodic sweep. Without
``REDIS_URL`` the same jobs run on the in-process runner in the foreground. ``--burst`` exits when
there is nothing left to do.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType

import click

from webapp.config import Config, ConfigError


def register(main: click.Group) -> None:
    """Add the ``worker`` command."""

    @main.command("worker")
    @click.option("--burst", is_flag=True, help="Exit when the queue is empty.")
    def worker_command(burst: bool) -> None:
        """Run background jobs (RQ worker with the scheduler, or in-process without REDIS_URL)."""
        from webapp.jobs import (
            InProcessRunner,
            get_queue,
            install_runtime,
            redis_connection,
            relay_outbox,
            schedule_periodic,
        )
        from webapp.runtime import Runtime, ready_process

        try:
            config = Config.from_env()
        except ConfigError as exc:
            click.echo(f"worker: {exc}", err=True)
            sys.exit(2)
        rt = Runtime.from_config(config)
        install_runtime(rt)
        try:
            connection = redis_connection(rt)
            if connection is None:
                runner = InProcessRunner(rt)
                rt.extras["inprocess_runner"] = runner
                if burst:
                    report = runner.run_until_idle()
                    click.echo(
                        f"in-process burst: {report.executed} executed, {report.gave_up} failed, "
                        f"timers {report.timers}"
                    )
                    return

                def _stop(signum: int, frame: FrameType | None) -> None:
                    runner.stop(timeout=0)

                signal.signal(signal.SIGTERM, _stop)
                signal.signal(signal.SIGINT, _stop)
                click.echo("no REDIS_URL: running background work in-process")
                runner.run_forever()
                return

            from rq import Worker

            ready_process()  # RQ forks a work horse per job: each inherits what is built here
            queue = get_queue(rt, connection)
            relayed = relay_outbox(rt)
            if relayed.error:
                click.echo(f"worker: outbox relay: {relayed.error}", err=True)
            if not burst:
                schedule_periodic(rt)
            worker = Worker([queue], connection=connection)
            worker.work(burst=burst, with_scheduler=True, logging_level="INFO")
        finally:
            rt.close()
