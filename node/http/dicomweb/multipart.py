"""multipart/related bodies (RFC 2387, RFC 2046 5.1) split into their parts. Pure.

Strict on purpose: a STOW-RS body that does not end with its closing delimiter, or whose
parts lack the blank line after their headers, is refused whole, so that nothing of a
body cut off or garbled is stored.
"""

from __future__ import annotations

from dataclasses import dataclass

from node.http.dicomweb.context import media_type


class MultipartError(ValueError):
    """The body is not a well-formed multipart body (answered 400 with the reason)."""


@dataclass(frozen=True)
class Part:
    content_type: str  # lower-cased media type without parameters; "" when not given
    body: bytes


def _headers(block: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in block.split(b"\r\n"):
        name, colon, value = line.partition(b":")
        if not colon:
            raise MultipartError("a part's header line has no colon")
        out[name.decode("latin-1").strip().lower()] = value.decode("latin-1").strip()
    return out


def parse(body: bytes, boundary: str) -> list[Part]:
    # RFC 2046 allows 70 characters; Orthanc's DICOMweb plugin sends longer ones.
    if not boundary or len(boundary) > 200:
        raise MultipartError("the Content-Type has no usable boundary parameter")
    marker = b"--" + boundary.encode("latin-1")
    if body.startswith(marker):
        at = 0
    else:
        found = body.find(b"\r\n" + marker)
        if found < 0:
            raise MultipartError("the body has no part delimited by the boundary")
        at = found + 2
    parts: list[Part] = []
    while True:
        at += len(marker)
        if body[at:at + 2] == b"--":
            break  # the closing delimiter; what follows is the epilogue
        line_end = body.find(b"\r\n", at)
        if line_end < 0 or body[at:line_end].strip(b" \t"):
            raise MultipartError("a boundary line is not followed by a line break")
        start = line_end + 2
        end = body.find(b"\r\n" + marker, start)
        if end < 0:
            raise MultipartError("the body ends without its closing boundary (cut off?)")
        parts.append(_part(body[start:end]))
        at = end + 2
    if not parts:
        raise MultipartError("the body has no parts")
    return parts


def _part(raw: bytes) -> Part:
    if raw.startswith(b"\r\n"):
        return Part("", raw[2:])
    head_end = raw.find(b"\r\n\r\n")
    if head_end < 0:
        raise MultipartError("a part has no blank line after its headers")
    headers = _headers(raw[:head_end])
    kind = media_type(headers.get("content-type", ""))[0]
    return Part(kind, raw[head_end + 4:])
