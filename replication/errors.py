"""The root of the errors the replication package raises on purpose.

A failure is either local (this node's store or spool) or remote (a peer unreachable, or
answering something that does not parse); the loop treats them differently: a remote failure
counts against that peer's circuit breaker, a local one does not.
"""

from __future__ import annotations


class ReplicationError(Exception):
    """Root of every error the replication package raises on purpose."""


class LocalReplicationError(ReplicationError):
    """This node's own replication state or files failed."""


class RemoteReplicationError(ReplicationError):
    """A peer failed or answered something we cannot use."""


class RemoteAnswerInvalid(RemoteReplicationError, ValueError):
    """A peer's answer did not have the shape of the message its path promises."""
