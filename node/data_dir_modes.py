"""Owner-only permissions on the data dir (index, audit trail, token digests, keys).

Every ``pacsmesh`` process sets a umask of 077 before it creates anything, so what it
writes is owner-only whatever the shell's umask. :func:`secure_data_dir` fixes what an
older version (or a copy, a restore) left open: the data dir itself (0700), everything at
its top level, the index and its ``-wal``/``-shm``, and every folder but the object
files' own (``objects/<xx>/*.dcm``). Walking a million objects before the DICOM port
opens would delay every start; the data dir's 0700 already shuts other users out of
them, and the background scrub tightens each object file as it passes
(:func:`tighten_file`). The at-rest key folder is checked, not fixed (see below).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from node.at_rest_keys import KEYS_DIR

UMASK = 0o077
DIR_MODE = 0o700
FILE_MODE = 0o600
OBJECTS_DIR = "objects"


class DataDirModeError(OSError):
    """The data dir is open to other users and cannot be fixed (not its owner?)."""


@dataclass(frozen=True)
class ModeFix:
    path: Path
    old: int
    new: int

    def __str__(self) -> str:
        return f"{self.path} {self.old:o} -> {self.new:o}"


def set_process_umask() -> None:
    """Owner-only for everything this process creates from now on."""
    os.umask(UMASK)


def _tighten(path: Path, st: os.stat_result, fixed: list[ModeFix]) -> None:
    want = DIR_MODE if stat.S_ISDIR(st.st_mode) else FILE_MODE
    mode = stat.S_IMODE(st.st_mode)
    if not mode & 0o077:
        return
    new = mode & ~0o077 & 0o7777 | (want & 0o700)
    try:
        os.chmod(path, new)
    except OSError as exc:
        raise DataDirModeError(
            exc.errno, f"{path} is open to other users (mode {mode:o}) and cannot be made "
                       f"{want:o}: {exc.strerror}"
        ) from None
    fixed.append(ModeFix(path, mode, new))


def tighten_file(path: Path) -> bool:
    """Make one file owner-only if it is not; return whether it was changed."""
    fixed: list[ModeFix] = []
    _tighten(path, path.lstat(), fixed)
    return bool(fixed)


def secure_data_dir(data_dir: Path) -> list[ModeFix]:
    """Make ``data_dir`` and what lies in it owner-only, except object files (see the
    module docstring); return what was changed. Raises DataDirModeError."""
    fixed: list[ModeFix] = []
    _tighten(data_dir, data_dir.stat(), fixed)
    for root, dirs, files in os.walk(data_dir):
        here = Path(root)
        if here == data_dir and KEYS_DIR in dirs:
            # An at-rest key found readable may have been copied: the node refuses to
            # start (node/at_rest_keys.py) rather than hide that by fixing it.
            dirs.remove(KEYS_DIR)
        for name in dirs:
            path = here / name
            st = path.lstat()
            if stat.S_ISDIR(st.st_mode):  # a symlink is followed by no one here
                _tighten(path, st, fixed)
        if here == data_dir / OBJECTS_DIR:
            dirs.clear()  # the shards' files: left to scrub
        for name in files:
            path = here / name
            st = path.lstat()
            if stat.S_ISREG(st.st_mode):
                _tighten(path, st, fixed)
    return fixed
