"""Typed reads of fields from parsed JSON, for the wire and for local files alike.

Each reader raises the error its caller names (through ``fail``, which turns a reason into
that error), never KeyError or TypeError, so a caller catches only its own error and a bug
of ours still raises. Numbers are read as ``int()`` and ``float()`` read them before these
readers existed (numbers, booleans and numeric text), so no peer's answer that parsed then
is refused now. Pure code.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable, Mapping
from typing import Any

Fail = Callable[[str], Exception]
_MISSING: Any = object()


def as_float(value: object) -> float | None:
    """``float(value)`` for JSON values, or None where that would raise."""
    if isinstance(value, bool | int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def as_int(value: object) -> int | None:
    """``int(value)`` for JSON values, or None where that would raise."""
    if isinstance(value, bool | int):
        return int(value)
    if isinstance(value, float):
        return int(value) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return None
    return None


def as_bytes(value: object) -> bytes | None:
    """The bytes of unpadded URL-safe base64 text, or None if it is not that."""
    if not isinstance(value, str):
        return None
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except ValueError:  # binascii.Error, or text that is not ASCII
        return None


def mapping(value: object, what: str, fail: Fail) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise fail(f"{what} is not an object")
    return value


def _field(data: Mapping[str, Any], key: str, fail: Fail, default: Any) -> Any:
    value = data.get(key, default)
    if value is _MISSING:
        raise fail(f"no {key!r}")
    return value


def text(data: Mapping[str, Any], key: str, fail: Fail, default: str = _MISSING) -> str:
    value = _field(data, key, fail, default)
    if not isinstance(value, str):
        raise fail(f"{key!r} is not text")
    return value


def integer(data: Mapping[str, Any], key: str, fail: Fail, default: int = _MISSING) -> int:
    number = as_int(_field(data, key, fail, default))
    if number is None:
        raise fail(f"{key!r} is not an integer")
    return number


def real(data: Mapping[str, Any], key: str, fail: Fail, default: float = _MISSING) -> float:
    number = as_float(_field(data, key, fail, default))
    if number is None:
        raise fail(f"{key!r} is not a number")
    return number


def items(data: Mapping[str, Any], key: str, fail: Fail) -> list[Any]:
    """A list field; missing counts as empty."""
    value = data.get(key, [])
    if not isinstance(value, list):
        raise fail(f"{key!r} is not a list")
    return value


def texts(data: Mapping[str, Any], key: str, fail: Fail) -> tuple[str, ...]:
    """A list of text; missing counts as empty."""
    values = items(data, key, fail)
    if not all(isinstance(v, str) for v in values):
        raise fail(f"{key!r} holds something that is not text")
    return tuple(values)
