"""The HL7 side's errors: one root, a framing error that ends a connection, and a
rejection that is answered with an AR or AE acknowledgement."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from node.errors import NodeError, RemoteFailure


class Hl7Error(NodeError):
    """Root of every error node.hl7 raises on purpose."""


class FramingError(Hl7Error, RemoteFailure):
    """The byte stream is not MLLP (bytes outside a frame, a frame past the size bound):
    nothing on that connection can be trusted to line up again, so it is closed."""


class AckCode(enum.StrEnum):
    ACCEPT = "AA"
    ERROR = "AE"  # understood, but could not be applied
    REJECT = "AR"  # structure, version or message type we do not take


class ErrorCode(enum.IntEnum):
    """HL7 table 0357 (message error condition codes)."""

    SEGMENT_SEQUENCE = 100
    REQUIRED_FIELD_MISSING = 101
    DATA_TYPE = 102
    UNSUPPORTED_MESSAGE_TYPE = 200
    UNSUPPORTED_EVENT_CODE = 201
    UNSUPPORTED_PROCESSING_ID = 202
    UNSUPPORTED_VERSION = 203
    UNKNOWN_KEY = 204
    DUPLICATE_KEY = 205
    APPLICATION_ERROR = 207


ERROR_TEXT = {
    ErrorCode.SEGMENT_SEQUENCE: "Segment sequence error",
    ErrorCode.REQUIRED_FIELD_MISSING: "Required field missing",
    ErrorCode.DATA_TYPE: "Data type error",
    ErrorCode.UNSUPPORTED_MESSAGE_TYPE: "Unsupported message type",
    ErrorCode.UNSUPPORTED_EVENT_CODE: "Unsupported event code",
    ErrorCode.UNSUPPORTED_PROCESSING_ID: "Unsupported processing id",
    ErrorCode.UNSUPPORTED_VERSION: "Unsupported version id",
    ErrorCode.UNKNOWN_KEY: "Unknown key identifier",
    ErrorCode.DUPLICATE_KEY: "Duplicate key identifier",
    ErrorCode.APPLICATION_ERROR: "Application internal error",
}


@dataclass(frozen=True)
class Problem:
    """Why a message was not applied, as its acknowledgement tells it."""

    ack: AckCode
    code: ErrorCode
    text: str
    location: str = ""  # ERR-2, e.g. "PID^1^3"


class MessageRejected(Hl7Error, RemoteFailure):
    """A message we will not apply; answered with ``problem`` (AR or AE)."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.text)
        self.problem = problem


def reject(code: ErrorCode, text: str, location: str = "") -> MessageRejected:
    """AR: the message's structure, version or type is not one we take."""
    return MessageRejected(Problem(AckCode.REJECT, code, text, location))


def error(code: ErrorCode, text: str, location: str = "") -> MessageRejected:
    """AE: understood, but it cannot be applied."""
    return MessageRejected(Problem(AckCode.ERROR, code, text, location))
