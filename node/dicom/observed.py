"""DIMSE handlers timed and counted for /metrics: a wrapper around each, so the handlers
themselves stay as they are and the C-STORE path pays two clock reads and two counter
updates (prometheus-client's own per-value locks, nothing more)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from pydicom import Dataset
from pynetdicom.events import Event

_PENDING = (0xFF00, 0xFF01)
_SUCCESS = 0x0000


class Observer(Protocol):
    def observe(self, service: str, ok: bool, elapsed: float) -> None: ...


def _ok(status: Any) -> bool:
    code = status.get("Status", _SUCCESS) if isinstance(status, Dataset) else status
    return isinstance(code, int) and (code == _SUCCESS or code in _PENDING
                                      or 0xB000 <= code <= 0xBFFF)  # warnings: stored


def timed(observer: Observer, service: str,
          handler: Callable[[Event], Any]) -> Callable[[Event], Any]:
    """A handler that returns its status (C-ECHO, C-STORE)."""
    def run(event: Event) -> Any:
        start = time.perf_counter()
        answer = None
        try:
            answer = handler(event)
            return answer
        finally:
            observer.observe(service, answer is not None and _ok(answer),
                             time.perf_counter() - start)
    return run


def timed_stream(observer: Observer, service: str,
                 handler: Callable[[Event], Iterator[Any]]) -> Callable[[Event], Iterator[Any]]:
    """A handler that yields (C-FIND, C-GET, C-MOVE): timed until its last yield; failed
    if it raised or yielded a final status that is neither success nor a warning."""
    def run(event: Event) -> Iterator[Any]:
        start = time.perf_counter()
        ok = False
        try:
            ok = True
            for item in handler(event):
                if isinstance(item, tuple) and item and not _ok(item[0]):
                    ok = False
                yield item
        except BaseException:
            ok = False
            raise
        finally:
            observer.observe(service, ok, time.perf_counter() - start)
    return run
