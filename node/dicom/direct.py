"""DIMSE messages written straight to the socket, and the C-STORE sub-operations of a
C-GET or C-MOVE sent that way.

pynetdicom sends a message by turning it into one P-DATA primitive per PDU, each queued
to the DUL thread, which wakes, runs the state machine, encodes a PDU object and writes
it: for a 512 KiB image in 16 KiB PDUs, thirty-two hand-overs between threads, each a
wait for the GIL. A sub-operation then waits for its response on the DIMSE queue after
the response was decoded through pydicom. Here the serving thread writes the message
itself, in one ``sendmsg`` of headers and slices of the file's bytes, and the response
is read back from its command bytes (node/dicom/encoding.py) and handed straight to the
thread waiting for it.

Writing from another thread than the DUL's is safe because the DUL holds ``send_lock``
(node/dicom/reactor.py ``WakingDUL``) while it runs its state machine, which is where
it takes a queued primitive and writes it: a direct write goes out only when nothing is
queued and the association is established, otherwise the message is queued behind the
rest, pynetdicom's way. TLS sockets are always served pynetdicom's way (one OpenSSL
connection must not be read and written by two threads at once).
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import ssl
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.dsutils import split_dataset
from pynetdicom.pdu_primitives import P_DATA

from node.dicom.encoding import (
    PREAMBLE,
    StoreResponse,
    decode_store_rsp,
    encode_store_rq,
    pdv_headers,
)

log = logging.getLogger(__name__)

# Events whose handlers see the messages or PDUs sent; bound, they need pynetdicom's path.
_SENT_EVENTS = (evt.EVT_DIMSE_SENT, evt.EVT_PDU_SENT, evt.EVT_DATA_SENT)
_RECV_EVENTS = (evt.EVT_DIMSE_RECV,)
# Buffers per sendmsg call, well under Linux's IOV_MAX (1024).
_IOV_BATCH = 512
# How often a wait for a sub-operation's response looks at the association's state.
_RESPONSE_CHECK = 0.5


def can_write_directly(assoc: Any) -> bool:
    if any(assoc.get_handlers(event) for event in _SENT_EVENTS):
        return False
    lock = getattr(assoc.dul, "send_lock", None)
    sock = getattr(assoc.dul.socket, "socket", None)
    return lock is not None and sock is not None and not isinstance(sock, ssl.SSLSocket)


Data = bytes | memoryview | list[bytes | memoryview]


def write_message(assoc: Any, context_id: int, command: bytes, data: Data | None = None) -> None:
    """Send one DIMSE message (an encoded command set, and a data set if any: whole, or
    in parts sent one after the other), split into PDUs no longer than the peer takes."""
    max_pdu = int(assoc.dimse.maximum_pdu_size or 0)
    parts: list[tuple[bytes, bytes | memoryview]] = [
        (header, command[start:end])
        for header, start, end in pdv_headers(context_id, len(command), max_pdu, True)]
    if isinstance(data, list):
        parts += fragments(context_id, data, max_pdu)
    elif data is not None and len(data):
        view = memoryview(data)
        parts += [(header, view[start:end])
                  for header, start, end in pdv_headers(context_id, len(view), max_pdu, False)]
    dul = assoc.dul
    if can_write_directly(assoc):
        with dul.send_lock:
            if (dul.to_provider_queue.empty()
                    and dul.state_machine.current_state == "Sta6"):
                _send_all(dul.socket.socket, parts)
                return
    for header, fragment in _joined(parts):  # pynetdicom's way, behind what is queued
        pdata = P_DATA()
        pdata.presentation_data_value_list.append((context_id, header[-1:] + fragment))
        dul.send_pdu(pdata)


def _joined(parts: list[tuple[bytes, bytes | memoryview]]) -> list[tuple[bytes, bytes]]:
    """One (header, value) a PDU: the slices that follow a header without one, joined."""
    out: list[tuple[bytes, bytes]] = []
    for header, fragment in parts:
        if header:
            out.append((header, bytes(fragment)))
        else:
            out[-1] = (out[-1][0], out[-1][1] + bytes(fragment))
    return out


def fragments(context_id: int, pieces: list[bytes | memoryview],
               max_pdu: int) -> list[tuple[bytes, bytes | memoryview]]:
    """PDUs of a data set in pieces: each header followed by the slices of the pieces
    its fragment spans (a fragment of several slices is sent as one item per slice,
    after one header)."""
    views = [memoryview(p) for p in pieces if len(p)]
    total = sum(len(v) for v in views)
    out: list[tuple[bytes, bytes | memoryview]] = []
    index, offset = 0, 0  # the piece and the position in it where the next fragment starts
    for header, start, end in pdv_headers(context_id, total, max_pdu, False):
        need, slices = end - start, []
        while need:
            piece = views[index]
            take = min(need, len(piece) - offset)
            slices.append(piece[offset:offset + take])
            need -= take
            offset += take
            if offset == len(piece):
                index, offset = index + 1, 0
        out.append((header, slices[0]))
        out += [(b"", more) for more in slices[1:]]
    return out


def _send_all(sock: socket.socket, parts: Sequence[tuple[bytes, bytes | memoryview]]) -> None:
    buffers: list[bytes | memoryview] = [b for part in parts for b in part if len(b)]
    for first in range(0, len(buffers), _IOV_BATCH):
        batch = buffers[first:first + _IOV_BATCH]
        sent, total = sock.sendmsg(batch), sum(len(b) for b in batch)
        if sent < total:  # a partial write (a signal, a full buffer): the rest, copied
            sock.sendall(b"".join(bytes(b) for b in batch)[sent:])


class ResponseWaiter:
    """Hands the C-STORE response a sub-operation waits for to the thread waiting."""

    def __init__(self) -> None:
        self.awaiting: int | None = None
        self.responses: queue.SimpleQueue[StoreResponse] = queue.SimpleQueue()
        self.contexts: dict[tuple[str, str], int] = {}
        # Only for the instance being sent: its bytes are written before the next read.
        self.buffer = bytearray()


def take_response(dimse: Any, primitive: P_DATA) -> bool:
    """Called by the DUL for each P-DATA received: True if it was the complete C-STORE
    response a sub-operation waits for, now handed over; False for pynetdicom to decode."""
    waiter: ResponseWaiter | None = getattr(dimse.assoc, "response_waiter", None)
    if waiter is None or waiter.awaiting is None or dimse.message is not None:
        return False
    pdvs = primitive.presentation_data_value_list
    if len(pdvs) != 1 or pdvs[0][1][:1] != b"\x03":
        return False
    if any(dimse.assoc.get_handlers(event) for event in _RECV_EVENTS):
        return False
    response = decode_store_rsp(memoryview(pdvs[0][1])[1:])
    if response is None or response.message_id != waiter.awaiting:
        return False
    waiter.awaiting = None
    waiter.responses.put(response)
    return True


def dataset_offset(data: bytes | memoryview) -> int | None:
    """Where the data set starts in Part 10 bytes whose file meta begins with its group
    length, as every file this node writes does; None otherwise."""
    if data[:132] != PREAMBLE or data[132:140] != b"\x02\x00\x00\x00UL\x04\x00":
        return None
    return 144 + int.from_bytes(data[140:144], "little")


def stored_dataset(path: str | Path, into: ResponseWaiter | None = None) -> memoryview:
    """The data set of a Part 10 file, after its file meta: read whole, into the
    waiter's buffer if given (reused from one instance to the next: a new 512 KiB
    object per image cost more than the read)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        if into is None:
            buffer = bytearray(size)
        else:
            if len(into.buffer) < size:
                into.buffer = bytearray(size)
            buffer = into.buffer
        view = memoryview(buffer)[:size]
        got = 0
        while got < size and (count := os.readv(fd, [view[got:]])):
            got += count
    finally:
        os.close(fd)
    offset = dataset_offset(view[:144].tobytes())
    if offset is None:
        offset = split_dataset(Path(path))[1]
    return view[offset:got]


_STATUS: dict[int, Dataset] = {}


def _status(code: int) -> Dataset:
    """Read-only: pynetdicom's retrieve loops read the status and nothing else."""
    ds = _STATUS.get(code)
    if ds is None:
        ds = _STATUS[code] = Dataset()
        ds.Status = code
    return ds


def send_stored(
    assoc: Any, path: str | Path, sop_class: str, sop_instance: str, transfer_syntax: str,
    msg_id: int, originator_aet: str | None = None, originator_id: int | None = None,
    data: Data | None = None,
) -> Dataset | None:
    """``assoc.send_c_store(path)`` for a file sent as it is (or ``data``: a data set
    already in ``transfer_syntax``), written directly; None if this association needs
    pynetdicom's way."""
    if not assoc.is_established or not can_write_directly(assoc):
        return None
    waiter: ResponseWaiter | None = getattr(assoc, "response_waiter", None)
    if waiter is None:
        waiter = assoc.response_waiter = ResponseWaiter()
    context_id = waiter.contexts.get((sop_class, transfer_syntax))
    if context_id is None:
        context = assoc._get_valid_context(sop_class, transfer_syntax, "scu",
                                           allow_conversion=False)
        context_id = waiter.contexts[(sop_class, transfer_syntax)] = int(context.context_id)
    payload = stored_dataset(path, waiter) if data is None else data
    command = encode_store_rq(sop_class, sop_instance, msg_id, 2, originator_aet,
                              originator_id)
    waiter.awaiting = msg_id
    try:
        write_message(assoc, context_id, command, payload)
        response = _wait(assoc, waiter)
    finally:
        waiter.awaiting = None
    if response is None:
        log.warning("no C-STORE response to sub-operation %d", msg_id)
        assoc._handle_no_response()
        return Dataset()
    return _status(response.status)


def _wait(assoc: Any, waiter: ResponseWaiter) -> StoreResponse | None:
    timeout = assoc.dimse_timeout
    deadline = None if timeout is None else time.monotonic() + float(timeout)
    while True:
        try:
            return waiter.responses.get(timeout=_RESPONSE_CHECK)
        except queue.Empty:
            pass
        if not assoc.is_established or not assoc.dul.is_alive():
            return None
        if deadline is not None and time.monotonic() > deadline:
            return None
        # A response pynetdicom decoded (one this reader did not follow) is on its queue.
        if not waiter.responses.qsize() and not assoc.dimse.msg_queue.empty():
            return _from_pynetdicom(assoc)


def _from_pynetdicom(assoc: Any) -> StoreResponse | None:
    _, rsp = assoc.dimse.msg_queue.get(block=False)
    status = getattr(rsp, "Status", None)
    if status is None:
        return None
    return StoreResponse(int(rsp.MessageIDBeingRespondedTo or 0), int(status),
                         str(rsp.AffectedSOPInstanceUID or ""))


def pause_reactor(assoc: Any) -> None:
    """Keep another thread's association reactor off the DIMSE queue while a retrieve
    sends on it (a C-MOVE's association to its destination), as pynetdicom does around
    each send: here once for the whole retrieve. The caller's own reactor (a C-GET's)
    is already held by the call."""
    if threading.current_thread() is assoc or not assoc._reactor_checkpoint.is_set():
        return
    assoc._reactor_checkpoint.clear()
    deadline = time.monotonic() + 5.0
    # The reactor looks at its checkpoint at least once a millisecond.
    while not assoc._is_paused and assoc.is_alive() and time.monotonic() < deadline:
        time.sleep(0.0001)


def resume_reactor(assoc: Any) -> None:
    assoc._reactor_checkpoint.set()
