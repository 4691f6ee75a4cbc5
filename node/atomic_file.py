"""Small files that must survive a crash whole: the node's identity, the at-rest key, the
roster, the tombstone spool. One guarantee for all of them, written once here.

After a crash (power loss included) the file holds its old content or all of the new,
never a part and never nothing: the new bytes go to a temporary beside it, which is
fsynced before the rename (else the rename could reach the disk before the bytes), and
the folder is fsynced after it (else the rename itself could be lost).
"""

from __future__ import annotations

import os
import secrets
import threading
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make the entries of folder ``path`` (names created, renamed, removed) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data``, durably and all at once, with permissions ``mode``."""
    # A name of its own: two writers (or a stale temporary from a crash) never share it.
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            os.fchmod(fd, mode)  # the umask may have taken bits ``mode`` asks for
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


class GroupSync:
    """``fsync_dir`` of one folder shared by concurrent callers: a caller's change (made
    before it calls :meth:`sync`) is durable once any fsync that started after it
    returns, so callers that arrive while one runs wait for the next one, and a single
    fsync then covers all of them (group commit). Several associations storing at once
    otherwise queue one directory fsync each, one after another, on the same folder."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._cond = threading.Condition()
        self._registered = 0  # changes announced so far
        self._durable = 0  # changes covered by a completed fsync
        self._running = False

    def sync(self) -> None:
        with self._cond:
            self._registered += 1
            mine = self._registered
            while self._running:
                self._cond.wait()
            if self._durable >= mine:
                return
            self._running = True
            covers = self._registered
        synced = False
        try:
            fsync_dir(self.path)
            synced = True
        finally:
            with self._cond:
                self._running = False
                # A failed fsync covers nothing: each waiter then runs (and fails) its own.
                if synced:
                    self._durable = max(self._durable, covers)
                self._cond.notify_all()
