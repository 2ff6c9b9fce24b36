"""JSON columns of instances: ``revive`` and ``jsonable`` against plain recursive reference versions."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from types import MappingProxyType
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from webapp.services.instances import jsonable, revive

_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?([+-]\d{2}:\d{2}|Z)$")


def reference_revive(value: Any) -> Any:
    if isinstance(value, str):
        return datetime.fromisoformat(value) if _ISO.match(value) else value
    if isinstance(value, dict):
        return {k: reference_revive(v) for k, v in value.items()}
    if isinstance(value, list):
        return [reference_revive(v) for v in value]
    return value


# hypothesis takes naive bounds for aware datetimes
EARLIEST, LATEST = datetime(2000, 1, 1), datetime(2100, 1, 1)  # noqa: DTZ001
stamps = st.datetimes(min_value=EARLIEST, max_value=LATEST, timezones=st.just(UTC)).map(
    lambda d: d.isoformat()
)
texts = st.one_of(
    st.text(max_size=30),
    stamps,
    stamps.map(lambda s: s.replace("+00:00", "Z")),
    stamps.map(lambda s: s[:-1]),  # not a timestamp: a broken offset
    st.sampled_from(["2026-11-29T10:00:00", "2026-11-29 10:00:00+00:00", "xxxxxxxxxxTxxxxxxxxxxxx"]),
)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), texts),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(json_values)
def test_revive_equals_the_plain_recursive_version(value: Any) -> None:
    revived = revive(value)
    assert revived == reference_revive(value)
    assert type(revived) is type(reference_revive(value))


def test_revive_turns_offset_timestamps_into_aware_datetimes_at_any_depth() -> None:
    at = datetime(2026, 11, 29, 10, 0, 0, 123456, tzinfo=UTC)
    stored = {"a": at.isoformat(), "b": [{"c": "2026-11-29T10:00:00Z"}], "d": "2026-11-29T10:00:00", "e": 5}
    assert revive(stored) == {
        "a": at,
        "b": [{"c": datetime(2026, 11, 29, 10, tzinfo=UTC)}],
        "d": "2026-11-29T10:00:00",  # no offset: left as text
        "e": 5,
    }


def test_jsonable_round_trips_through_revive() -> None:
    at = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
    value = MappingProxyType(
        {"at": at, "ladder": (at, at + timedelta(days=1)), "nested": {"n": 1, "s": "x"}, "flag": None}
    )
    as_json = jsonable(value)
    assert as_json == {
        "at": at.isoformat(),
        "ladder": [at.isoformat(), (at + timedelta(days=1)).isoformat()],
        "nested": {"n": 1, "s": "x"},
        "flag": None,
    }
    assert revive(as_json) == {**value, "ladder": [at, at + timedelta(days=1)]}
    assert jsonable({"wait": timedelta(hours=2), 3: {"b", "a"}}) == {"wait": 7200, "3": ["a", "b"]}


_ZONES = st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-3)), None])


@given(st.datetimes(timezones=_ZONES), st.booleans())
def test_remembered_iso_text_and_moments_are_what_datetime_gives(value: datetime, twice: bool) -> None:
    """webapp.isotime: the remembered text is isoformat()'s, the remembered moment fromisoformat()'s
    (same instant, same tzinfo, same fields), whether first seen printed or parsed, and again."""
    from webapp import isotime

    for _ in range(2 if twice else 1):
        text = isotime.iso_text(value)
        assert text == value.isoformat()
        if value.tzinfo is not None:
            parsed = isotime.iso_moment(text)
            expected = datetime.fromisoformat(text)
            assert parsed == expected and parsed.tzinfo == expected.tzinfo
            assert parsed.isoformat() == expected.isoformat()
            assert revive({"at": [text]}) == {"at": [expected]}
    # Only UTC itself is remembered: equal instants in other zones print other offsets.
    remembered = isotime.known_moment(value.isoformat())
    assert remembered is None or (remembered.tzinfo is UTC and remembered == value)


def test_remembered_datetimes_stay_bounded(monkeypatch: Any) -> None:
    from webapp import isotime

    monkeypatch.setattr(isotime, "REMEMBERED", 5)
    monkeypatch.setattr(isotime, "_TEXT", {})
    monkeypatch.setattr(isotime, "_MOMENTS", {})
    start = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    for n in range(12):
        moment = start + timedelta(seconds=n)
        assert isotime.iso_text(moment) == moment.isoformat()
        assert isotime.iso_moment((moment + timedelta(days=1)).isoformat()) == moment + timedelta(days=1)
        assert len(isotime._TEXT) <= 5 and len(isotime._MOMENTS) <= 5
    naive = datetime(2026, 3, 2, 9, 0)  # noqa: DTZ001 - a naive one on purpose
    assert isotime.iso_text(naive) == naive.isoformat() and naive not in isotime._TEXT
