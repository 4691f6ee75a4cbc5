"""The hand-off of tombstones from ``pacsmesh delete`` to the node on the same data dir.

The command writes one signed tombstone per file into ``<data dir>/mesh/tombstones/``
(temporary file, fsync, rename); the node picks the files up within a second while it
runs, or at its next start, so the command works whether the node is up or not and
never touches the index another process owns. Blocking file I/O, small files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from node.atomic_file import atomic_write

SPOOL = Path("mesh") / "tombstones"
SUFFIX = ".json"
REJECTED = ".rejected"


def spool_dir(data_dir: Path) -> Path:
    return data_dir / SPOOL


def drop(data_dir: Path, name: str, document: dict[str, Any]) -> Path:
    """Durably leave ``document`` for the node; return the file's path."""
    directory = spool_dir(data_dir)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    final = directory / f"{name}{SUFFIX}"
    atomic_write(final, json.dumps(document).encode(), 0o600)
    return final


def waiting(data_dir: Path) -> list[tuple[Path, Any]]:
    """Files left for the node, with their JSON (None where it does not parse)."""
    directory = spool_dir(data_dir)
    if not directory.is_dir():
        return []
    out: list[tuple[Path, Any]] = []
    for path in sorted(directory.glob(f"*{SUFFIX}")):
        try:
            out.append((path, json.loads(path.read_text())))
        except ValueError:
            out.append((path, None))
    return out


def done(path: Path) -> None:
    path.unlink(missing_ok=True)


def reject(path: Path) -> None:
    """Keep a refused file for the admin to see, but never read it again."""
    os.replace(path, path.with_suffix(REJECTED))
