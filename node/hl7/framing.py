"""MLLP framing (HL7 v2 Appendix C), sans I/O in the manner of h11: bytes in, whole
frames out.

Written here rather than taken from python-hl7's ``hl7.mllp`` reader, which decodes
every block with one encoding fixed for the connection (MSH-18 names it per message, so
a Latin-1 name after a UTF-8 one would fail to decode) and raises on bytes before a
start block only once a whole block has been read past them.
"""

from __future__ import annotations

from node.hl7.errors import FramingError

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\x0d"
DEFAULT_MAX_FRAME = 1 << 20  # ADT messages are a few kB; a bound keeps memory bounded
# Between frames senders leave line ends and padding; anything else is not MLLP.
_BETWEEN_FRAMES = b" \t\r\n\x00"


def frame(payload: bytes) -> bytes:
    return START_BLOCK + payload + END_BLOCK


class MllpFramer:
    """Feed received bytes; take the complete frames' payloads."""

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buffer = bytearray()
        self._in_frame = False

    def feed(self, data: bytes) -> list[bytes]:
        """The payloads completed by ``data``; raises :class:`FramingError` on bytes
        outside a frame or on a frame larger than the bound."""
        self._buffer += data
        frames: list[bytes] = []
        while True:
            if not self._in_frame:
                start = self._buffer.find(START_BLOCK)
                junk = self._buffer if start < 0 else self._buffer[:start]
                if junk.strip(_BETWEEN_FRAMES):
                    raise FramingError(f"{len(junk)} byte(s) outside an MLLP frame")
                if start < 0:
                    self._buffer.clear()
                    return frames
                del self._buffer[:start + 1]
                self._in_frame = True
            end = self._buffer.find(END_BLOCK)
            if end < 0:
                if len(self._buffer) > self.max_frame:
                    raise FramingError(f"MLLP frame longer than {self.max_frame} bytes")
                return frames
            if end > self.max_frame:
                raise FramingError(f"MLLP frame longer than {self.max_frame} bytes")
            payload = bytes(self._buffer[:end])
            if START_BLOCK in payload:
                raise FramingError("a start block inside an MLLP frame (a frame cut short)")
            frames.append(payload)
            del self._buffer[:end + len(END_BLOCK)]
            self._in_frame = False

    @property
    def partial(self) -> bool:
        """Whether a frame has begun and not ended (at EOF: a truncated frame)."""
        return self._in_frame
