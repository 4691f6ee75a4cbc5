"""The root of the errors the discovery package raises on purpose.

Local failures (our roster, identity or invite files) are told apart from remote ones (a peer
unreachable, refusing us, or answering something that does not parse).
"""

from __future__ import annotations


class DiscoveryError(Exception):
    """Root of every error the discovery package raises on purpose."""


class LocalDiscoveryError(DiscoveryError):
    """This node's own mesh state (roster, invite, identity) failed."""


class RemoteDiscoveryError(DiscoveryError):
    """A peer failed, refused us, or answered something we cannot use."""


class RemoteAnswerInvalid(RemoteDiscoveryError, ValueError):
    """A peer's answer did not have the shape of the message its path promises."""


class StartFailed(LocalDiscoveryError, RuntimeError):
    """Discovery cannot start as configured; the message is one line.

    Also a RuntimeError, as discovery's start errors were before the package had a root."""


class ProbeFailed(RemoteDiscoveryError, ConnectionError):
    """Nothing answered, or something that is not a PACSmesh member of our mesh."""


class Refused(ProbeFailed):
    """The peer answered, with an HTTP error status."""

    def __init__(self, status: int, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail  # the body of the answer (its first 200 characters)
