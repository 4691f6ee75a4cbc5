"""The root of the errors the node raises on purpose.

Catching `NodeError` (or one of its two branches) instead of a builtin such as `KeyError`
or `ValueError` keeps our own bugs visible: a builtin raised by a typo is not swallowed as if
it were bad input. Existing error classes keep their builtin base beside this root, so code
that catches the builtin still works while call sites move to the root.
"""

from __future__ import annotations


class NodeError(Exception):
    """Root of every error the node package raises on purpose."""


class LocalFailure(NodeError):
    """Something on this machine failed: the disk, the index, the configuration, a key."""


class RemoteFailure(NodeError):
    """Another DICOM or HTTP party failed or answered something we cannot use."""
