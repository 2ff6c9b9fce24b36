"""Input hygiene shared by the console's forms and the JSON API.

Everything a person types goes through ``clean_text``: surrounding whitespace is stripped, the length
is limited, control characters are refused, and a payment card number (13–19 digits passing the Luhn
check, spaces or dashes allowed between digits) is refused wherever it appears, because free-text
fields are stored in history and audit records that must never hold card data (PCI DSS 3.4).

Markup is *not* refused: ``<script>`` in a comment is kept as text and escaped on output (Jinja
autoescape; no ``|safe`` on user data), so the record shows exactly what was typed.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any, Final

MAX_TEXT: Final = 2000
"""Default limit for free text (comments, notes); the engine's own limit may be lower."""

MAX_CODE: Final = 80
"""Limit for identifiers and codes typed by hand (provider ids, references)."""

CARD_MESSAGE: Final = "this looks like a payment card number: do not type card numbers here"

_CARD_RUN = re.compile(r"\d(?:[ -]?\d){12,}")
_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@/#-]*$")
_ALLOWED_CONTROLS: Final = frozenset("\n\t")


class InputError(ValueError):
    """A value that must not be accepted; ``message`` is shown next to the field."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def luhn_ok(digits: str) -> bool:
    """True when the digit string passes the Luhn checksum."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = ord(ch) - 48
        if i % 2 == 1:
            n *= 2
            if n > 9:
                n -= 9
        total += n
    return total % 10 == 0


def contains_card_number(text: str) -> bool:
    """True when ``text`` holds 13–19 consecutive digits (spaces/dashes between them allowed) passing Luhn."""
    for match in _CARD_RUN.finditer(text):
        digits = re.sub(r"[ -]", "", match.group())
        for size in range(13, min(19, len(digits)) + 1):
            for start in range(len(digits) - size + 1):
                if luhn_ok(digits[start : start + size]):
                    return True
    return False


def has_control_characters(text: str) -> bool:
    """True for control or format characters other than newline and tab (NUL, escapes, bidi overrides)."""
    return any(unicodedata.category(ch) in ("Cc", "Cf") and ch not in _ALLOWED_CONTROLS for ch in text)


def clean_text(
    value: Any, *, max_length: int = MAX_TEXT, min_length: int = 0, label: str = "this field"
) -> str:
    """The stripped text, or InputError with a message for the field."""
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise InputError(f"{label} must be text")
    text = value.replace("\r\n", "\n").strip()
    if has_control_characters(text):
        raise InputError(f"{label} contains control characters; type plain text")
    if len(text) > max_length:
        raise InputError(f"{label} must be at most {max_length} characters (it has {len(text)})")
    if len(text) < min_length:
        raise InputError(f"{label} must be at least {min_length} characters")
    if contains_card_number(text):
        raise InputError(CARD_MESSAGE)
    return text


def clean_code(value: Any, *, max_length: int = MAX_CODE, label: str = "this field") -> str:
    """An identifier typed by hand: letters, digits and ``_.:@/#-`` only."""
    text = clean_text(value, max_length=max_length, label=label)
    if text and not _CODE.match(text):
        raise InputError(f"{label} may only contain letters, digits and _ . : @ / # -")
    return text


def clean_payload(payload: Any, *, max_length: int = MAX_TEXT) -> dict[str, Any]:
    """Check every string in a JSON payload (nested lists and objects included); return it stripped.

    Used by the JSON API, whose payloads are not built from a form.
    """
    if not isinstance(payload, dict):
        raise InputError("payload must be a JSON object")
    return {str(k): _clean_value(v, str(k), max_length) for k, v in payload.items()}


def _clean_value(value: Any, label: str, max_length: int) -> Any:
    if isinstance(value, str):
        return clean_text(value, max_length=max_length, label=label)
    if isinstance(value, list):
        return [_clean_value(v, label, max_length) for v in value]
    if isinstance(value, dict):
        return {str(k): _clean_value(v, f"{label}.{k}", max_length) for k, v in value.items()}
    return value


__all__ = [
    "CARD_MESSAGE",
    "MAX_CODE",
    "MAX_TEXT",
    "InputError",
    "clean_code",
    "clean_payload",
    "clean_text",
    "contains_card_number",
    "has_control_characters",
    "luhn_ok",
]
