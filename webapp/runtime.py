"""The process-wide runtime: configuration, database, governor settings and the job queue.

Built once per process (web node, worker, CLI command) from ``Config``; nothing is created at
import time. Web views reach it through ``current_app.extensions["runtime"]``; jobs through
``webapp.jobs.runtime()`` after the worker has installed it.
"""

from __future__ import annotations

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
