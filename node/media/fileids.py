"""File ids on media (PS3.10 8.2, PS3.12 STD-GEN-CD): at most 8 components, each 1 to 8
characters of ``A-Z 0-9 _``. Pure code."""

from __future__ import annotations

import re

from node.errors import NodeError

MAX_LEVELS = 8
_COMPONENT = re.compile(r"[A-Z0-9_]{1,8}")


class BadFileId(NodeError, ValueError):
    """A DICOMDIR names a file outside the rules: refused before anything is read."""


def check_file_id(components: list[str] | tuple[str, ...] | str) -> tuple[str, ...]:
    """The components of a Referenced File ID, checked. Media written on systems that
    lower-case names are accepted: components compare upper-cased, and the file is then
    looked up without regard to case. Anything else (``..``, ``/``, a dot, more than 8
    levels) is a :class:`BadFileId`, so no file id can reach outside the medium."""
    parts = (components,) if isinstance(components, str) else tuple(components)
    if not parts:
        raise BadFileId("empty file id")
    if len(parts) > MAX_LEVELS:
        raise BadFileId(f"file id {'/'.join(parts)!r} has {len(parts)} levels"
                        f" (at most {MAX_LEVELS})")
    for part in parts:
        if not _COMPONENT.fullmatch(str(part).upper()):
            raise BadFileId(f"file id {'/'.join(map(str, parts))!r}: component {part!r} is not"
                            " 1 to 8 characters of A-Z, 0-9 and _")
    return tuple(str(p).upper() for p in parts)
