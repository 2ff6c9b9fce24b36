"""The process-wide runtime: configuration, database, governor settings and the job queue.

Built once per process (web node, worker, CLI command) from ``Config``; nothing is created at
import time. Web views reach it through ``current_app.extensions["runtime"]``; jobs through
``webapp.jobs.runtime()`` after the worker has installed it.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass, field
from typing import Any

from governors import Settings, load_settings
from webapp.config import Config
from webapp.db import Database


@dataclass
class Runtime:
    """Everything a service call needs that is not a parameter of the call."""

    config: Config
    db: Database
    settings: Settings
    extras: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: Config) -> Runtime:
        """Connect to the database and load the governor settings (TOML overrides included)."""
        return cls(
            config=config, db=Database(config.database_url), settings=load_settings(config.settings_path)
        )

    def close(self) -> None:
        """Release connections."""
        self.db.dispose()


def ready_process() -> None:
    """Get a serving process ready once it has built its app (a gunicorn worker, ``marketplace
    worker`` before it forks work horses): generate every governor's decision code and configure
    the ORM now, not during the first requests or in every forked horse, then take everything built
    so far out of the garbage collector's sight.

    Those objects (definitions, compiled engine, mappers, compiled SQL, templates) live as long as
    the process. The transition service allocates thousands of short-lived objects per event, so
    young collections run often, and each older collection walked all of those long-lived objects
    too (about 6 % of an event's CPU); a forked child's collections no longer touch (and so copy)
    the pages it shares with its parent either. Objects created afterwards are collected as usual.
    Not for tests that build many apps in one process.
    """
    from sqlalchemy.orm import configure_mappers

    from governors.engine import prepare
    from governors.registry import GOVERNORS

    for name in GOVERNORS:
        prepare(name)  # every decision function (~0.6 s for the eight)
    configure_mappers()
    gc.collect()
    gc.freeze()
