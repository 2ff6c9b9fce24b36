"""Governor settings: every duration, ladder, threshold, SLA target and disputed value.

Defaults come from GOVERNORS.md and are declared next to the governor that uses them (each
definitions module has a ``SETTINGS`` mapping with keys prefixed by the governor's name). A TOML
file (``MARKETPLACE_SETTINGS``, see INTERFACES.md) overrides them by table::

    [billing]
    retry_1_after = "1h"       # PAT ladder instead of the C/G default "2d"

Durations are written as "90s", "5m", "24h", "7d", "2w" or combinations ("1d12h"). Unknown keys
and values of the wrong type are refused when the file is loaded, naming the key.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator, Mapping
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

ENGINE_SETTINGS: Mapping[str, Any] = {
    "engine.max_cascade_depth": 8,
    "engine.max_plan_steps": 500,
    "engine.min_reason_length": 10,
    "engine.max_text_length": 5000,
    # GOVERNORS.md §0.5 / CONSOLE.md §1.3: a four-eyes request expires after 24 h (configurable).
    "engine.approval_expiry": "24h",
    # CONSOLE.md §1.4 (staff sign-in; read by webapp.services.users). "0s" turns password expiry off.
    "console.password_max_age": "90d",
    "console.session_idle_timeout": "15m",
    "console.session_absolute_timeout": "8h",
    "console.totp_required_roles": ("admin", "compliance"),
}

_DURATION = re.compile(r"(\d+)\s*(w|d|h|m|s)")
_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}


class SettingsError(ValueError):
    """A settings file or value is invalid; the message names the key."""


def parse_duration(text: str) -> timedelta:
    """Parse "24h", "7d", "1d12h", "90s" into a timedelta (SettingsError if malformed)."""
    compact = text.replace(" ", "")
    parts = _DURATION.findall(compact)
    if not parts or "".join(n + u for n, u in parts) != compact:
        raise SettingsError(f"not a duration: {text!r} (use e.g. 90s, 5m, 24h, 7d, 2w)")
    return timedelta(seconds=sum(int(n) * _UNITS[u] for n, u in parts))


class Settings(Mapping[str, Any]):
    """Read-only, validated settings; ``duration(key)`` parses duration strings once."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = dict(values)
        self._durations: dict[str, timedelta] = {}

    def __getitem__(self, key: str) -> Any:
        try:
            return self._values[key]
        except KeyError:
            raise KeyError(f"unknown setting {key!r}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __hash__(self) -> int:
        return id(self)

    def duration(self, key: str) -> timedelta:
        """The setting ``key`` as a timedelta."""
        cached = self._durations.get(key)
        if cached is None:
            cached = parse_duration(str(self[key]))
            self._durations[key] = cached
        return cached

    def override(self, changes: Mapping[str, Any]) -> Settings:
        """Return new settings with ``changes`` (flat dotted keys) applied and validated."""
        merged = dict(self._values)
        for key, value in changes.items():
            if key not in merged:
                raise SettingsError(f"unknown setting {key!r}")
            merged[key] = _check_type(key, merged[key], value)
        return Settings(merged)


def _check_type(key: str, default: Any, value: Any) -> Any:
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise SettingsError(f"{key}: expected true or false, got {value!r}")
        return value
    if isinstance(default, int) and not isinstance(value, bool) and isinstance(value, int):
        return value
    if isinstance(default, float) and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise SettingsError(f"{key}: expected a string, got {value!r}")
        if _looks_like_duration(default):
            parse_duration(value)
        return value
    if isinstance(default, list | tuple):
        if not isinstance(value, list | tuple):
            raise SettingsError(f"{key}: expected a list, got {value!r}")
        return tuple(value)
    if isinstance(default, Mapping) and isinstance(value, Mapping):
        return dict(value)
    raise SettingsError(f"{key}: expected {type(default).__name__}, got {value!r}")


def _looks_like_duration(text: str) -> bool:
    try:
        parse_duration(text)
    except SettingsError:
        return False
    return True


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and not dotted.count("."):
            flat.update(_flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


@lru_cache(maxsize=1)
def default_settings() -> Settings:
    """The built-in defaults from GOVERNORS.md (all governors plus the engine's own)."""
    from governors.definitions import ALL

    values: dict[str, Any] = dict(ENGINE_SETTINGS)
    for module in ALL:
        for key, value in module.SETTINGS.items():
            if key in values:
                raise SettingsError(f"setting {key!r} declared twice")
            values[key] = value
    return Settings(values)


def load_settings(path: str | Path | None) -> Settings:
    """Defaults overridden by the TOML file at ``path`` (None: the defaults alone)."""
    base = default_settings()
    if path is None:
        return base
    with open(path, "rb") as handle:
        try:
            tree = tomllib.load(handle)
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"{path}: {exc}") from exc
    return base.override(_flatten(tree))
