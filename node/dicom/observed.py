"""DIMSE handlers timed and counted for /metrics: a wrapper around each, so the handlers
themselves stay as they are and the C-STORE path pays two clock reads and two counter
updates (prometheus-client's own per-value locks, nothing more)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from pydicom import Dataset
from pynetdicom.events import Event

_PENDING = (0xFF00, 0xFF01)
_SUCCESS = 0x0000


class Observer(Protocol):
    def observe(self, service: str, ok: bool, elapsed: float) -> None: ...


class LateObserver:
    """An observer for the DICOM port, which opens before the metrics registry exists (it
    loads with the HTTP half: node/app.py): what it observes until :meth:`attach` is kept
    (bounded) and handed over then."""

    EARLY_LIMIT = 100_000

    def __init__(self) -> None:
        self._target: Observer | None = None
        self._early: list[tuple[str, bool, float]] = []
        self._lock = threading.Lock()

    def attach(self, target: Observer) -> None:
        with self._lock:
            for early in self._early:
                target.observe(*early)
            self._early.clear()
            self._target = target

    def observe(self, service: str, ok: bool, elapsed: float) -> None:
        target = self._target
        if target is None:
            with self._lock:
                target = self._target
                if target is None:
                    if len(self._early) < self.EARLY_LIMIT:
                        self._early.append((service, ok, elapsed))
                    return
        target.observe(service, ok, elapsed)


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
