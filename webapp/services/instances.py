"""Conversions between database rows and the engine's frozen Instance snapshots.

JSON columns hold datetimes as ISO 8601 text; ``revive`` turns them back into timezone-aware
datetimes so guards see the same values whether an instance came from memory or from the database.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any

import orjson
from sqlalchemy import Row

from governors import Instance, TimerState
from governors.spec import frozen_map
from webapp.isotime import iso_moment, iso_text, known_moment
from webapp.models import GovernorInstance

_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?([+-]\d{2}:\d{2}|Z)$")


def revive(value: Any) -> Any:
    """Recursively turn ISO 8601 timestamps (with an offset) back into datetimes."""
    kind = type(value)  # exact types first: the common cases skip the isinstance chain and the regex
    if kind is str:
        # A match has the "T" at index 10 and at least 20 characters ("YYYY-MM-DDTHH:MM:SSZ").
        if len(value) >= 20 and value[10] == "T":
            known = known_moment(value)
            if known is not None:
                return known
            if _ISO.match(value):
                return iso_moment(value)
        return value
    if kind is dict:
        return {k: revive(v) for k, v in value.items()}
    if kind is list:
        return [revive(v) for v in value]
    if isinstance(value, str) and _ISO.match(value):
        return datetime.fromisoformat(value)
    if isinstance(value, dict):
        return {k: revive(v) for k, v in value.items()}
    if isinstance(value, list):
        return [revive(v) for v in value]
    return value


_SCALARS = frozenset({str, int, float, bool, type(None)})
_MAPPINGS = frozenset({dict, MappingProxyType})
_SEQUENCES = frozenset({list, tuple})


def jsonable(value: Any) -> Any:
    """A JSON-ready copy: datetimes as ISO text, timedeltas as seconds, tuples as lists."""
    kind = type(value)
    if kind in _SCALARS:  # most values: skip the (slow) abstract Mapping check below
        return value
    # The common containers by exact type, their scalar members copied without a call each: an
    # event serializes a few thousand values (instance data, changes, payloads), mostly leaves.
    if kind in _MAPPINGS:
        scalars = _SCALARS
        return {
            (k if type(k) is str else str(k)): (v if type(v) in scalars else jsonable(v))
            for k, v in value.items()
        }
    if kind in _SEQUENCES:
        scalars = _SCALARS
        return [v if type(v) in scalars else jsonable(v) for v in value]
    if kind is datetime:
        return iso_text(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return int(value.total_seconds())
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [jsonable(v) for v in value]
        return sorted(items, key=str) if isinstance(value, set | frozenset) else items
    return value


def timers_to_json(timers: Mapping[str, TimerState]) -> dict[str, Any]:
    """The engine's timers as JSON."""
    return {
        name: {
            "event": t.event,
            "state_seq": t.state_seq,
            "due_at": iso_text(t.due_at) if t.due_at else None,
            "remaining": int(t.remaining.total_seconds()) if t.remaining is not None else None,
            "payload": jsonable(t.payload),
        }
        for name, t in sorted(timers.items())
    }


def timers_from_json(raw: Mapping[str, Any]) -> dict[str, TimerState]:
    """Timers stored by ``timers_to_json`` back as TimerState objects."""
    out: dict[str, TimerState] = {}
    for name, t in raw.items():
        out[name] = TimerState(
            name=name,
            event=t["event"],
            state_seq=int(t["state_seq"]),
            due_at=datetime.fromisoformat(t["due_at"]) if t.get("due_at") else None,
            remaining=timedelta(seconds=int(t["remaining"])) if t.get("remaining") is not None else None,
            payload=frozen_map(revive(t.get("payload") or {})),
        )
    return out


def to_instance(row: GovernorInstance | Row[Any]) -> Instance:
    """The engine's view of a row (an ORM object or a plain row with the same columns)."""
    return decoded_instance(row, row.data, row.timers)


def decoded_instance(row: Any, data: Mapping[str, Any] | None, timers: Mapping[str, Any] | None) -> Instance:
    """An Instance of ``row``'s columns (attributes) with its data and timers, stored as JSON, decoded
    (datetimes revived; the JSON containers copied)."""
    return Instance(
        governor=row.governor,
        id=row.id,
        state=row.state,
        state_seq=row.state_seq,
        version=row.version,
        entered_at=row.entered_at,
        customer_id=row.customer_id,
        subject_id=row.subject_id,
        data=frozen_map(revive(dict(data or {}))),
        timers=frozen_map(timers_from_json(timers or {})),
    )


def next_due(timers: Mapping[str, TimerState]) -> datetime | None:
    """The earliest due time of the running timers (the row's ``timeout_at``)."""
    due = [t.due_at for t in timers.values() if t.due_at is not None]
    return min(due) if due else None


_DECODED: dict[tuple[Any, ...], Instance] = {}
_DECODED_MAX = 20_000


def instance_from_row(row: Row[Any]) -> Instance:
    """``to_instance`` for a plain row whose ``data`` and ``timers`` came back as JSON text.

    The same stored row decodes to the same frozen Instance, so decoded instances are kept by the
    row's whole content (a bounded cache, emptied when full): the catalog, which every plan reads,
    and a customer's untouched governors are decoded once, not on every event. Any change to the
    row (state, version, data, timers, ...) is a different key. Rows whose JSON is already decoded
    (SQLite's driver, ORM objects) go through ``to_instance``.
    """
    data, timers = row.data, row.timers
    if type(data) is not str or type(timers) is not str:
        return to_instance(row)
    key = (
        row.id,
        row.governor,
        row.state,
        row.state_seq,
        row.version,
        row.entered_at,
        row.customer_id,
        row.subject_id,
        data,
        timers,
    )
    found = _DECODED.get(key)
    if found is not None:
        return found
    instance = decoded_instance(row, orjson.loads(data), orjson.loads(timers))
    if len(_DECODED) >= _DECODED_MAX:
        _DECODED.clear()
    _DECODED[key] = instance
    return instance
