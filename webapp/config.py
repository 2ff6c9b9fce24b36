"""Configuration from the environment (INTERFACES.md); nothing here is read at import time."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

INSTANCE_DIR = Path(os.environ.get("MARKETPLACE_INSTANCE_DIR", Path.cwd() / "instance"))


class ConfigError(RuntimeError):
    """The environment is missing something the console cannot run without."""


@dataclass(frozen=True)
class Config:
    """Resolved settings of one process (web node, worker or CLI)."""

    database_url: str
    redis_url: str | None
    secret_key: str
    audit_anchor_key: bytes
    audit_anchor_dir: Path
    settings_path: str | None
    testing: bool = False
    demo: bool = False

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        demo: bool = False,
        testing: bool = False,
        secret_key: str | None = None,
    ) -> Config:
        """Read the environment; outside demo and tests a missing SECRET_KEY is refused."""
        env = os.environ if environ is None else environ
        secret = env.get("SECRET_KEY") or secret_key
        if not secret:
            if not (demo or testing):
                raise ConfigError("SECRET_KEY is not set; the console refuses to start without it")
            secret = os.urandom(32).hex()
        instance = Path(env.get("MARKETPLACE_INSTANCE_DIR", str(INSTANCE_DIR)))
        database_url = env.get("DATABASE_URL") or f"sqlite:///{instance / 'marketplace.db'}"
        anchor_key = env.get("AUDIT_ANCHOR_KEY")
        key = (
            anchor_key.encode() if anchor_key else hashlib.sha256(b"audit-anchor:" + secret.encode()).digest()
        )
        return cls(
            database_url=database_url,
            redis_url=env.get("REDIS_URL") or None,
            secret_key=secret,
            audit_anchor_key=key,
            audit_anchor_dir=Path(env.get("AUDIT_ANCHOR_DIR") or instance / "anchors"),
            settings_path=env.get("MARKETPLACE_SETTINGS") or None,
            testing=testing,
            demo=demo,
        )
