"""Owner-only permissions on the data dir (index, audit trail, token digests, keys).

Every ``pacsmesh`` process sets a umask of 077 before it creates anything, so what it
writes is owner-only whatever the shell's umask. With ``data_dir_group`` the umask is
027 and the data dir's folders are setgid to that group (``2750``), so what is created
in them is ``0640`` and belongs to it; the private folders (``identity``, ``keys``,
``mesh``: the node's, the at-rest and the admin keys) stay owner-only.

:func:`secure_data_dir` fixes what an older version (or a copy, a restore) left open:
the data dir itself, everything at its top level, the index and its ``-wal``/``-shm``,
and every folder but the object files' own (``objects/<xx>/*.dcm``). Walking a million
objects before the DICOM port opens would delay every start; the data dir's mode already
shuts other users out of them, and the background scrub fixes each object file as it
passes (:func:`tighten_file`). The at-rest key folder is checked, not fixed (see below).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from node.at_rest_keys import KEYS_DIR

UMASK = 0o077
SHARED_UMASK = 0o027
OBJECTS_DIR = "objects"
# Owner-only even when the data dir is shared with a group: they hold private keys.
PRIVATE_DIRS = frozenset({"identity", KEYS_DIR, "mesh"})


class DataDirModeError(OSError):
    """The data dir is open to other users and cannot be fixed (not its owner?)."""


@dataclass(frozen=True)
class ModeFix:
    path: Path
    old: int
    new: int
    gid: int | None = None  # the group it was given, if that changed too

    def describe(self, name: str) -> str:
        group = f" group {self.gid}" if self.gid is not None else ""
        return f"{name} {self.old:o} -> {self.new:o}{group}"

    def __str__(self) -> str:
        return self.describe(str(self.path))


def set_process_umask(shared: bool = False) -> None:
    """Owner-only (or owner and group, with ``data_dir_group``) for everything this
    process creates from now on."""
    os.umask(SHARED_UMASK if shared else UMASK)


def _wanted(mode: int, is_dir: bool, shared: bool) -> int:
    if not shared:
        return mode & 0o7700
    if is_dir:  # setgid: what is created inside belongs to the group too
        return mode & 0o5700 | 0o2050
    return mode & 0o4700 | 0o040


def _tighten(
    path: Path, st: os.stat_result, fixed: list[ModeFix], gid: int | None
) -> None:
    mode = stat.S_IMODE(st.st_mode)
    is_dir = stat.S_ISDIR(st.st_mode)
    new = _wanted(mode, is_dir, gid is not None)
    regroup = gid is not None and st.st_gid != gid
    if new == mode and not regroup:
        return
    try:
        if regroup:
            assert gid is not None
            os.chown(path, -1, gid, follow_symlinks=False)
        os.chmod(path, new)  # after chown, which may clear setgid
    except OSError as exc:
        raise DataDirModeError(
            exc.errno, f"{path} has mode {mode:o} and cannot be made {new:o}"
                       f"{f' with group {gid}' if regroup else ''}: {exc.strerror}"
        ) from None
    fixed.append(ModeFix(path, mode, new, gid if regroup else None))


def tighten_file(path: Path, gid: int | None = None) -> bool:
    """Give one file the data dir's mode (and group); return whether it was changed."""
    fixed: list[ModeFix] = []
    _tighten(path, path.lstat(), fixed, gid)
    return bool(fixed)


def secure_data_dir(data_dir: Path, gid: int | None = None) -> list[ModeFix]:
    """Give ``data_dir`` and what lies in it owner-only modes (owner and group ``gid``
    when given), except object files (see the module docstring); return what was
    changed. Raises DataDirModeError."""
    fixed: list[ModeFix] = []
    _tighten(data_dir, data_dir.stat(), fixed, gid)
    for root, dirs, files in os.walk(data_dir):
        here = Path(root)
        if here == data_dir and KEYS_DIR in dirs:
            # An at-rest key found readable may have been copied: the node refuses to
            # start (node/at_rest_keys.py) rather than hide that by fixing it.
            dirs.remove(KEYS_DIR)
        top = here.relative_to(data_dir).parts[:1]
        private = bool(top) and top[0] in PRIVATE_DIRS
        for name in dirs:
            path = here / name
            st = path.lstat()
            if stat.S_ISDIR(st.st_mode):  # a symlink is followed by no one here
                inner = private or (here == data_dir and name in PRIVATE_DIRS)
                _tighten(path, st, fixed, None if inner else gid)
        if here == data_dir / OBJECTS_DIR:
            dirs.clear()  # the shards' files: left to scrub
        for name in files:
            path = here / name
            st = path.lstat()
            if stat.S_ISREG(st.st_mode):
                _tighten(path, st, fixed, None if private else gid)
    return fixed
