"""ISO 8601 text of UTC datetimes and back, remembered: the service formats the same instants again
and again.

Every event writes its instances' data as JSON, and that data carries the datetimes it has carried
since it was written (a compliance record's security events, timers' due times, entry times), as
well as the event's own ``now`` in a dozen columns. ``datetime.isoformat`` builds its text with
C ``printf`` (about 1.5 µs a call); measured with callgrind on the transition service, formatting
was some 4 % of an event's Python instructions. Both directions are pure functions of immutable
values, so the results are kept in bounded dictionaries (emptied when full, like
``webapp.services.instances``' decoded rows): a remembered datetime is shared, as any datetime may be.

Only datetimes whose ``tzinfo`` is ``datetime.UTC`` itself are remembered: equal datetimes in other
zones may print different offsets, and naive ones must keep failing where they fail today.
"""

from __future__ import annotations

from datetime import UTC, datetime

_TEXT: dict[datetime, str] = {}
_MOMENTS: dict[str, datetime] = {}
REMEMBERED = 20_000
"""At most this many of each direction are kept (a few megabytes)."""


def iso_text(value: datetime) -> str:
    """``value.isoformat()``."""
    if value.tzinfo is not UTC:
        return value.isoformat()
    text = _TEXT.get(value)
    if text is None:
        if len(_TEXT) >= REMEMBERED:
            _TEXT.clear()
        text = _TEXT[value] = value.isoformat()
        _remember_moment(text, value)  # read back later (the row is loaded again): the same value
    return text


def iso_moment(text: str) -> datetime:
    """``datetime.fromisoformat(text)``, for text already known to be an ISO 8601 timestamp."""
    moment = _MOMENTS.get(text)
    if moment is None:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is UTC:
            _remember_moment(text, moment)
    return moment


def _remember_moment(text: str, moment: datetime) -> None:
    if len(_MOMENTS) >= REMEMBERED:
        _MOMENTS.clear()
    _MOMENTS[text] = moment


def known_moment(text: str) -> datetime | None:
    """The datetime of ``text`` if it has been parsed or printed here before (cheaper than a match)."""
    return _MOMENTS.get(text)
