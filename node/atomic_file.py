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
