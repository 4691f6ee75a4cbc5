"""The data dir's lock and the names every process agrees on.

One process at a time writes a data dir: a running node, or ``pacsmesh import`` (and
``retrieve`` when no node runs). They take the same ``flock`` so that two writers never
share an index; commands that only need to know whether a node runs (``retrieve``) ask
:func:`data_dir_in_use`. This module sits below the composition root so that the CLI and
the pull tool need not import the root (and, through it, the whole mesh) for a file name.
"""

from __future__ import annotations

import fcntl
import logging
from pathlib import Path
from typing import IO

from node.data_dir_modes import DataDirModeError, secure_data_dir
from node.errors import LocalFailure

# The logger of the composition root, where these lines were first written: operators'
# log filters keep matching after the move.
log = logging.getLogger("node.app")
INDEX_FILE = "index.sqlite"
LOCK_FILE = ".lock"


class StartupError(LocalFailure, RuntimeError):
    """The node cannot start; the message is one line saying why."""


class DataDirInUse(StartupError):
    """Another node (or an import) holds the data dir's lock."""


def lock_data_dir(data_dir: Path, gid: int | None = None, secure: bool = True) -> IO[str]:
    """Take the data dir's lock (creating the dir), and with ``secure`` fix its modes
    (node/data_dir_modes.py); the caller closes the returned file to release it."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        fh = (data_dir / LOCK_FILE).open("a+")
    except OSError as exc:
        raise StartupError(f"cannot use data dir {data_dir}: {exc.strerror}") from None
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise DataDirInUse(f"data dir {data_dir} is in use by another PACSmesh process") from None
    if not secure:
        return fh
    try:
        fixed = secure_data_dir(data_dir, gid)
    except DataDirModeError as exc:
        fh.close()
        raise StartupError(str(exc)) from None
    if fixed:
        # The top level by name (index, folders); what lies deeper, counted.
        named = [f.describe(str(f.path.relative_to(data_dir))) for f in fixed
                 if data_dir in (f.path, f.path.parent)]
        deeper = len(fixed) - len(named)
        log.warning("data dir %s was open to other users; fixed: %s%s",
                    data_dir, "; ".join(named),
                    f"; and {deeper} path(s) inside its folders" if deeper else "")
    return fh


def data_dir_in_use(data_dir: Path) -> bool:
    """Whether a node (or an import) holds ``data_dir`` right now."""
    try:
        lock_data_dir(data_dir, secure=False).close()
    except DataDirInUse:
        return True
    return False
