"""Log lines that cannot be forged: control characters are escaped, whoever sent them.

AE titles, addresses, HTTP paths and peers' error texts reach log messages. A newline in
one would start a fake line ("... INFO node.audit: login ok"), an escape sequence would
rewrite the terminal. Every record the process writes goes through :class:`SafeFormatter`:
C0 and C1 controls, DEL and the Unicode line and paragraph separators become ``\\xNN`` /
``\\uNNNN`` (``\\n``, ``\\r``, ``\\t`` for the common ones). A traceback keeps its lines,
each escaped and marked with ``| `` so none of them can pass for a record of its own.
"""

from __future__ import annotations

import logging
import re
import sys
from types import TracebackType
from typing import TypeAlias

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_ExcInfo: TypeAlias = (
    tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]
)


def _escape_one(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """``text`` with every control character written out, so it stays one line."""
    return _CONTROL.sub(_escape_one, text)


def _escape_block(text: str) -> str:
    return "\n".join("| " + escape_controls(line) for line in text.splitlines())


class SafeFormatter(logging.Formatter):
    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape_controls(super().formatMessage(record))

    def formatException(self, ei: _ExcInfo) -> str:
        return _escape_block(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return _escape_block(super().formatStack(stack_info))


def escape_last_resort() -> None:
    """Commands that set up no logging still print warnings through logging's last
    resort (message only): escaped too, and nothing else changes."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(SafeFormatter("%(message)s"))
    logging.lastResort = handler


def setup_logging(level: str) -> None:
    """One stderr handler with :class:`SafeFormatter` on the root logger, at ``level``."""
    root = logging.getLogger()
    handler = next((h for h in root.handlers if isinstance(h.formatter, SafeFormatter)), None)
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(SafeFormatter(FORMAT))
        root.addHandler(handler)
    root.setLevel(level)
