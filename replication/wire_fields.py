"""Checks of JSON values from a peer, each raising only RemoteAnswerInvalid.

``what`` names the message (and field) in the error, so a log line says which answer of
which peer was wrong. JSON has no integer apart from numbers, and Python's ``bool`` is an
``int``: ``true`` is refused where a number is meant, and the reverse.
"""

from __future__ import annotations

from typing import Any

from replication.errors import RemoteAnswerInvalid


def as_object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise RemoteAnswerInvalid(f"{what}: not a JSON object ({type(value).__name__})")
    return value


def as_list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise RemoteAnswerInvalid(f"{what}: not a JSON list ({type(value).__name__})")
    return value


def _present(obj: dict[str, Any], key: str, what: str) -> Any:
    if key not in obj:
        raise RemoteAnswerInvalid(f"{what}: {key!r} missing")
    return obj[key]


def _wrong(key: str, what: str, meant: str, value: Any) -> RemoteAnswerInvalid:
    return RemoteAnswerInvalid(f"{what}: {key!r} is not {meant} ({type(value).__name__})")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def required_str(obj: dict[str, Any], key: str, what: str) -> str:
    value = _present(obj, key, what)
    if not isinstance(value, str):
        raise _wrong(key, what, "a string", value)
    return value


def optional_str(obj: dict[str, Any], key: str, what: str) -> str | None:
    """A string, or None when missing or null."""
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise _wrong(key, what, "a string", value)
    return value


def nullable_str(obj: dict[str, Any], key: str, what: str) -> str | None:
    """A key that must be there, holding a string or null."""
    _present(obj, key, what)
    return optional_str(obj, key, what)


def required_int(obj: dict[str, Any], key: str, what: str) -> int:
    value = _present(obj, key, what)
    if not _is_int(value):
        raise _wrong(key, what, "an integer", value)
    return int(value)


def optional_int(obj: dict[str, Any], key: str, what: str) -> int | None:
    value = obj.get(key)
    if value is not None and not _is_int(value):
        raise _wrong(key, what, "an integer", value)
    return value


def required_number(obj: dict[str, Any], key: str, what: str) -> float:
    value = _present(obj, key, what)
    if not (_is_int(value) or isinstance(value, float)):
        raise _wrong(key, what, "a number", value)
    return float(value)


def required_bool(obj: dict[str, Any], key: str, what: str) -> bool:
    value = _present(obj, key, what)
    if not isinstance(value, bool):
        raise _wrong(key, what, "true or false", value)
    return value


def optional_bool(obj: dict[str, Any], key: str, what: str) -> bool:
    """False when missing."""
    value = obj.get(key, False)
    if not isinstance(value, bool):
        raise _wrong(key, what, "true or false", value)
    return value
