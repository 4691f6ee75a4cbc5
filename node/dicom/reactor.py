"""Acceptor associations that wait on their socket and queues instead of polling.

pynetdicom's two per-association threads poll: the DUL thread sleeps 1 ms whenever
neither the socket nor its queues have anything, and the association thread sleeps 1 ms
before each look at the DIMSE message queue. A C-STORE crosses both threads in each
direction, so every instance paid up to ~3 ms of sleeping: a bare pynetdicom SCP whose
handler did nothing took as long as Orthanc's whole ingest. Here the DUL thread blocks
in ``select`` on the peer's socket and on a wake-up socket that queued outgoing PDUs
ring, and the association thread blocks on the DIMSE queue; each still wakes on a tick
(``TICK``, ``DUL_TICK``) for the timers and flags it used to poll.

Only the waiting changes; the state machine, queues and events are pynetdicom's own.
The loops follow pynetdicom 3.0's ``DULServiceProvider.run_reactor`` and
``Association._run_reactor``.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import select
import socket
import ssl
import struct
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, cast

from pynetdicom import evt
from pynetdicom._globals import MODE_ACCEPTOR
from pynetdicom.ae import ApplicationEntity
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_primitives import C_FIND, C_GET, C_MOVE, C_STORE
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.transport import (
    AssociationSocket,
    RequestHandler,
    ThreadedAssociationServer,
)
from pynetdicom.utils import make_target

from node.dicom.admission import Slot
from node.dicom.direct import take_response, write_message
from node.dicom.encoding import C_GET_RSP, C_MOVE_RSP, encode_retrieve_rsp, encode_store_rsp
from node.dicom.find_encoding import send_find_rsp
from node.dicom.patches import memoize_uid_checks

log = logging.getLogger(__name__)
# The longest the association thread blocks before re-checking its flags (pynetdicom
# polled at this interval). The DUL thread is woken by the socket, queued PDUs and kills,
# so it re-checks only for its timers (seconds long) and events other threads queue
# without waking it (a DIMSE decode failure): each tick cost a Python turn and two
# selects, per association, 1,000 times a second, a third of the node's CPU with four
# senders storing (py-spy); 20 ms of slack on those is none that matters.
TICK = 0.001
DUL_TICK = 0.02
_RECV_CHUNK = 256 * 1024
_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)  # Linux only
_DONTWAIT: int = getattr(socket, "MSG_DONTWAIT", 0)
_quiet = threading.local()  # set on a DUL thread whose PDU read we cut short


class _CutShort(logging.Filter):
    """Drops pynetdicom's error line for a PDU we cut short on purpose (one per flooding
    connection): the gate's throttled line says it instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(_quiet, "cut", False) and "shorter than expected" in record.getMessage():
            _quiet.cut = False
            return False
        return True


logging.getLogger("pynetdicom.dul").addFilter(_CutShort())


class WakingDUL(DULServiceProvider):
    """A DUL whose reactor sleeps in ``select`` until data or a queued PDU arrives."""

    _wake_recv: socket.socket | None = None
    _wake_send: socket.socket | None = None

    def send_pdu(self, primitive: Any) -> None:
        super().send_pdu(primitive)
        wake = self._wake_send
        if wake is not None:
            # Full buffer: the reactor has wake-ups pending anyway. Closed: it has ended.
            with contextlib.suppress(OSError):
                wake.send(b"\0")

    def kill_dul(self) -> None:
        super().kill_dul()
        if self._wake_send is not None:
            with contextlib.suppress(OSError):
                self._wake_send.send(b"\0")

    def run(self) -> None:
        # The thread's target was bound to pynetdicom's run_reactor when it was made.
        make_target(self.run_reactor)()

    def run_reactor(self) -> None:
        # Held while the state machine runs (where queued PDUs are written), so that
        # node.dicom.direct can write to the socket from the serving thread in between.
        self.send_lock = threading.RLock()
        self._wake_recv, self._wake_send = socket.socketpair()
        self._wake_recv.setblocking(False)
        self._wake_send.setblocking(False)
        try:
            self._loop()
        finally:
            self._wake_send.close()
            self._wake_recv.close()

    def _loop(self) -> None:
        self._idle_timer.start()
        while True:
            if not self.assoc._dul_ready.is_set():
                self.assoc._dul_ready.set()
            if self._kill_thread:
                break
            # The ARTIM timer first, so its event is queued ahead of this loop's others.
            if self.artim_timer.expired:
                self.event_queue.put("Evt18")
            try:
                # One outgoing primitive or one incoming PDU per turn, as pynetdicom does.
                if self._process_recv_primitive():
                    pass
                elif self._is_transport_event():
                    self._idle_timer.restart()
            except Exception as exc:
                self._abort_on(exc)
                return
            try:
                event = self.event_queue.get(block=False)
            except queue.Empty:
                self._wait()
                continue
            with self.send_lock:
                self.state_machine.do_action(event)

    def _wait(self) -> None:
        """Block until the peer sends, a PDU is queued to go out, or a tick passes."""
        if not self.to_provider_queue.empty():
            return
        assoc_socket = self.socket
        sock = assoc_socket.socket if assoc_socket is not None else None
        if sock is None:
            time.sleep(TICK)
            return
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return  # decrypted bytes waiting inside the TLS layer: select cannot see them
        wake = cast(socket.socket, self._wake_recv)
        try:
            ready, _, _ = select.select([sock, wake], [], [], DUL_TICK)
        except (OSError, ValueError):
            # The socket closed under us; the next turn's transport check reports it.
            time.sleep(TICK)
            return
        if wake in ready:
            with contextlib.suppress(OSError):
                wake.recv(4096)

    def _abort_on(self, exc: Exception) -> None:
        """Bypass the state machine with an A-ABORT, as pynetdicom does on a reactor error."""
        log.error("DICOM upper layer failed, aborting the association: %s", exc)
        log.debug("upper layer failure", exc_info=exc)
        abort_pdu = A_ABORT_RQ()
        abort_pdu.source = 0x02
        abort_pdu.reason_diagnostic = 0x00
        with contextlib.suppress(OSError, AttributeError):
            self.socket.send(abort_pdu.encode())  # type: ignore[union-attr]
        self.assoc.is_aborted = True
        self.assoc.is_established = False
        self.assoc._kill = True
        self._kill_thread = True


class FastStoreResponses(DIMSEServiceProvider):
    """Sends C-STORE, C-GET and C-MOVE responses from :mod:`node.dicom.encoding` and
    C-FIND pending responses as :func:`node.dicom.find_encoding.send_find_rsp` does, and
    hands the C-STORE responses that retrieve sub-operations wait for straight over
    (:mod:`node.dicom.direct`)."""

    def send_msg(self, primitive: Any, context_id: int) -> None:
        if isinstance(primitive, C_FIND) and send_find_rsp(self, primitive, context_id):
            return
        encoded = _store_rsp(primitive) or _retrieve_rsp(primitive)
        if encoded is None or self.assoc.get_handlers(evt.EVT_DIMSE_SENT):
            super().send_msg(primitive, context_id)
            return
        write_message(self.assoc, context_id, encoded)

    def receive_primitive(self, primitive: P_DATA) -> None:
        if not take_response(self, primitive):
            super().receive_primitive(primitive)


def _store_rsp(primitive: Any) -> bytes | None:
    """The encoded C-STORE-RSP command set, or None for anything else."""
    if not isinstance(primitive, C_STORE) or primitive.MessageIDBeingRespondedTo is None:
        return None
    if primitive.Status is None or primitive.OffendingElement is not None:
        return None
    return encode_store_rsp(
        str(primitive.AffectedSOPClassUID), str(primitive.AffectedSOPInstanceUID),
        int(primitive.MessageIDBeingRespondedTo), int(primitive.Status),
        primitive.ErrorComment,
    )


def _retrieve_rsp(primitive: Any) -> bytes | None:
    """The encoded C-GET-RSP or C-MOVE-RSP command set without identifier, or None."""
    if not isinstance(primitive, C_GET | C_MOVE) or primitive.MessageIDBeingRespondedTo is None:
        return None
    if (primitive.Status is None or primitive.Identifier is not None
            or primitive.ErrorComment is not None or primitive.OffendingElement is not None):
        return None
    return encode_retrieve_rsp(
        C_GET_RSP if isinstance(primitive, C_GET) else C_MOVE_RSP,
        str(primitive.AffectedSOPClassUID), int(primitive.MessageIDBeingRespondedTo),
        int(primitive.Status),
        (primitive.NumberOfRemainingSuboperations, primitive.NumberOfCompletedSuboperations,
         primitive.NumberOfFailedSuboperations, primitive.NumberOfWarningSuboperations),
    )


# Asked before a C-GET or C-MOVE request is served: a status answers it at once and no
# handler runs. pynetdicom's C-MOVE handler cannot fail a request with a status of its
# choosing before it has associated with the destination, and a refused requester must
# not cause any association at all.
# (status, error comment) to answer a request with instead of serving it, or None.
Refusal = Callable[[Association, Any], "tuple[int, str] | None"]


class WakingAssociation(Association):
    """An acceptor association whose reactor blocks on the DIMSE queue."""

    admission_slot: Slot | None = None

    def run(self) -> None:
        try:
            super().run()
        finally:
            self.release_slot()

    def release_slot(self) -> None:
        """Gives the connection's slot back (at most once): when the transport ends,
        not when this thread does, which may wait out the ACSE timeout after the peer
        has gone."""
        release = getattr(self._server, "release_slot", None)
        if release is not None and self.admission_slot is not None:
            release(self.admission_slot)

    def _serve_request(self, msg: Any, context_id: int) -> None:
        refuse: Refusal | None = getattr(self._server, "refuse_retrieve", None)
        if refuse is not None and isinstance(msg, C_GET | C_MOVE):
            refusal = refuse(self, msg)
            if refusal is not None:
                rsp = type(msg)()
                rsp.MessageIDBeingRespondedTo = msg.MessageID
                rsp.AffectedSOPClassUID = msg.AffectedSOPClassUID
                rsp.Status, comment = refusal
                rsp.ErrorComment = comment  # type: ignore[assignment]  # stubbed as None
                self.dimse.send_msg(rsp, context_id)
                return
        super()._serve_request(msg, context_id)

    def _run_reactor(self) -> None:
        self._is_paused = False
        while not self._kill:
            # A send_*() call by a handler (C-GET sub-operations) pauses the reactor here
            # so that the responses it waits for are not taken off the queue.
            self._is_paused = True
            self._reactor_checkpoint.wait()
            self._is_paused = False

            try:
                context_id, msg = self.dimse.msg_queue.get(timeout=TICK)
            except queue.Empty:
                context_id, msg = None, None
            if msg:
                self._serve_request(msg, cast(int, context_id))

            if self.is_established and self.acse.is_release_requested():
                self.acse.send_release(is_response=True)
                self.is_released = True
                self.is_established = False
                evt.trigger(self, evt.EVT_RELEASED, {})
                self.kill()
                return

            if self.acse.is_aborted():
                # So that EVT_ACSE_RECV fires for subscribers.
                self.dul.receive_pdu(wait=False)
                self.is_aborted = True
                self.is_established = False
                evt.trigger(self, evt.EVT_ABORTED, {})
                self.kill()
                return

            if not self.dul.is_alive():
                self.kill()
                return

            if self.dul.idle_timer_expired():
                log.warning("DICOM association idle past the network timeout: aborted")
                if self.network_timeout_response == "A-RELEASE":
                    self._is_paused = True
                    self._reactor_checkpoint.wait()
                    self.release()
                    self._is_paused = False
                else:
                    self.abort()
                self.kill()
                return


class BulkReceiveSocket(AssociationSocket):
    """Reads a PDU in as few system calls as the network allows, and never waits for
    one without end.

    pynetdicom reads 4096 bytes per ``recv``: over a hundred Python-level rounds for one
    CT image. This takes whatever the kernel holds, up to 256 KiB a call, into one
    scratch buffer per connection, with the same contract: block until ``nr_bytes`` are
    read, or return what arrived before the peer closed. Memory grows only with what
    arrives, never with the length a PDU header claims (garbage can claim 4 GiB).

    A PDU that has started must go on arriving: after ``pdu_timeout`` seconds without a
    byte, or past ``request_deadline`` (monotonic) while the association request is not
    complete, the read ends short and the connection is shut. pynetdicom's blocking read
    waited for ever there, and its DUL thread with it, so neither the ACSE timeout nor a
    kill could end such a connection. No system call is added per PDU: once the request
    is in, the kernel's receive timeout (SO_RCVTIMEO, set once per connection) ends a
    stalled read. Before it, a read that would block waits in ``select`` for the time
    left to the deadline (a per-read timeout alone lets a peer dribble a byte at a time).
    TLS sockets carry a Python socket timeout instead.
    """

    _scratch: memoryview | None = None
    pdu_timeout: float = 30.0
    request_deadline: float | None = None
    kernel_timeout = False  # SO_RCVTIMEO holds pdu_timeout

    def set_timeouts(self, pdu_timeout: float, request_deadline: float) -> None:
        self.pdu_timeout = pdu_timeout
        self.request_deadline = request_deadline
        sock = self.socket
        if sock is None or isinstance(sock, ssl.SSLSocket):
            return
        seconds = int(pdu_timeout)
        timeval = struct.pack("@ll", seconds, int((pdu_timeout - seconds) * 1_000_000))
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
        except OSError as exc:  # another timeval layout: every read waits in select
            log.debug("SO_RCVTIMEO not set: %s", exc)
            return
        self.kernel_timeout = True

    def recv(self, nr_bytes: int) -> bytearray:
        sock = cast(socket.socket, self.socket)
        if self._scratch is None:
            self._scratch = memoryview(bytearray(_RECV_CHUNK))
        scratch = self._scratch
        tls = isinstance(sock, ssl.SSLSocket)
        received = bytearray()
        while len(received) < nr_bytes:
            if tls and not self._tls_timeout(sock):
                self._cut_short(sock)
                break
            # Until the request is in, a read must not wait past its deadline. After it,
            # the kernel's receive timeout (SO_RCVTIMEO, set once) ends a stalled read.
            flags = _DONTWAIT if not tls and (
                self.request_deadline is not None or not self.kernel_timeout) else 0
            try:
                count = sock.recv_into(
                    scratch, min(nr_bytes - len(received), _RECV_CHUNK), flags)
            except (BlockingIOError, TimeoutError):
                if flags and self._bytes_come(sock):
                    continue
                self._cut_short(sock)
                break
            if not count:
                self._ended()
                break
            received += scratch[:count]
        if _QUICKACK is not None:
            # Acknowledge at once rather than after up to 40 ms: a peer with Nagle's
            # algorithm on (DCMTK unless TCP_NODELAY=1 is set) holds its next small write
            # until our ACK, which stalled each C-STORE response of a C-GET. Linux resets
            # the flag by itself, so it is set again after every read.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
        return received

    def _bytes_come(self, sock: socket.socket) -> bool:
        """Wait for the next bytes while the PDU timeout and request deadline allow."""
        wait = self.pdu_timeout
        if self.request_deadline is not None:
            wait = min(wait, self.request_deadline - time.monotonic())
        if wait <= 0:
            return False
        try:
            ready, _, _ = select.select([sock], [], [], wait)
        except (OSError, ValueError):
            return False
        return bool(ready)

    def _tls_timeout(self, sock: socket.socket) -> bool:
        """Sets a TLS socket's timeout to the time a read may wait (False: none left);
        a system call only when it changes (around the association request)."""
        wanted = self.pdu_timeout
        if self.request_deadline is not None:
            wanted = min(wanted, self.request_deadline - time.monotonic())
            if wanted <= 0:
                return False
        if sock.gettimeout() != wanted:
            sock.settimeout(wanted)
        return True

    def _cut_short(self, sock: socket.socket) -> None:
        _quiet.cut = True
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        self._ended()
        report: OnTimeout | None = getattr(self.assoc._server, "on_timeout", None)
        if report is not None:
            why = ("association request not complete within the ACSE timeout"
                   if self.request_deadline is not None
                   else f"a PDU stalled for {self.pdu_timeout:g} s")
            report(str(self.assoc.requestor.address or ""), why)

    def close(self) -> None:
        super().close()
        self._ended()

    def _ended(self) -> None:
        if isinstance(self.assoc, WakingAssociation):
            self.assoc.release_slot()


class WakingRequestHandler(RequestHandler):
    """Makes each accepted connection a :class:`WakingAssociation`.

    As pynetdicom's ``RequestHandler._create_association``, except that the server's
    supported contexts are shared rather than deep-copied: negotiation only reads them,
    and copying ~120 storage classes x every transfer syntax (each UID re-validated)
    cost over 100 ms of CPU per association.
    """

    def handle(self) -> None:
        server = cast(TlsServer, self.server)
        slot = server.slots.pop(id(self.request), None)
        try:
            if isinstance(self.request, ssl.SSLSocket) and not self._handshake(self.request):
                raise _Dropped
            self._slot = slot
            super().handle()
        except BaseException:
            # The association thread releases the slot once it runs; it never will now.
            if slot is not None and server.release_slot is not None:
                server.release_slot(slot)
            with contextlib.suppress(OSError):
                self.request.close()
            if not isinstance(sys.exc_info()[1], _Dropped):
                raise

    def _handshake(self, sock: ssl.SSLSocket) -> bool:
        """The TLS handshake, here on the connection's own thread (see
        :class:`TlsServer`); a peer that fails or stalls it is dropped with a log line."""
        previous = sock.gettimeout()
        sock.settimeout(self.ae.acse_timeout)
        try:
            sock.do_handshake()
        except (OSError, ValueError) as exc:  # ssl.SSLError and timeouts are OSErrors
            log.warning("DICOM TLS handshake with %s failed: %s",
                        self.client_address[0], getattr(exc, "reason", None) or exc)
            with contextlib.suppress(OSError):
                sock.close()
            return False
        sock.settimeout(previous)
        return True

    def _create_association(self) -> Association:
        server = cast(ThreadedAssociationServer, self.server)
        assoc = WakingAssociation(self.ae, MODE_ACCEPTOR)
        # Both add methods only, and the DUL's thread is not started yet.
        assoc.dul.__class__ = WakingDUL
        assoc.dimse.__class__ = FastStoreResponses
        assoc._server = server
        assoc.name = f"AcceptorThread@{datetime.now():%Y%m%d%H%M%S}"
        assoc.admission_slot = getattr(self, "_slot", None)
        sock = BulkReceiveSocket(assoc, client_socket=self.request)
        # The whole A-ASSOCIATE-RQ must be in within the ACSE timeout of the accept.
        sock.set_timeouts(cast(TlsServer, server).pdu_timeout,
                          time.monotonic() + float(self.ae.acse_timeout or 30))
        assoc.set_socket(sock)
        acceptor, requestor = assoc.acceptor, assoc.requestor
        acceptor.maximum_length = self.ae.maximum_pdu_size
        acceptor.ae_title = server.ae_title
        acceptor.address_info = self.local
        acceptor.implementation_class_uid = self.ae.implementation_class_uid
        acceptor.implementation_version_name = self.ae.implementation_version_name
        acceptor.supported_contexts = server.contexts
        requestor.address_info = self.remote
        for event, bound in server._handlers.items():
            if event.is_intervention and bound:
                assoc.bind(event, *bound)
            elif isinstance(event, evt.NotificationEvent):
                for handler, args in bound:
                    assoc.bind(event, handler, args)
        return assoc


class _Dropped(Exception):
    """The connection ended before an association could start (e.g. a failed handshake)."""


# At accept: the connection's slot, or None to close it at once (node.dicom.gate).
OnConnect = Callable[[str], "Slot | None"]
# A connection closed by a timeout: (address, why).
OnTimeout = Callable[[str, str], None]


class TlsServer(ThreadedAssociationServer):
    """Admits connections through the gate, and leaves the TLS handshake to each
    connection's thread.

    pynetdicom wraps accepted sockets with the handshake done at once, in the one thread
    that accepts connections: a client that connects and stays silent would hold every
    other client out until it timed out.
    """

    # socketserver listens with a backlog of 5: a burst of connections past it waits for
    # SYN retries (1 s, 3 s, ...) before the gate even sees it.
    request_queue_size = 128
    on_connect: OnConnect | None = None
    on_timeout: OnTimeout | None = None
    release_slot: Callable[[Slot], None] | None = None
    pdu_timeout: float = 30.0
    slots: dict[int, Slot]  # id(accepted socket) -> its slot, until its handler takes it

    def verify_request(self, request: Any, client_address: Any) -> bool:
        if self.on_connect is None:
            return True
        slot = self.on_connect(str(client_address[0]))
        if slot is None:
            return False  # socketserver closes it
        self.slots[id(request)] = slot
        return True

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        client, address = cast(socket.socket, self.socket).accept()
        if self.ssl_context is not None:
            client = self.ssl_context.wrap_socket(
                client, server_side=True, do_handshake_on_connect=False
            )
        return client, address


def start_server(
    ae: ApplicationEntity, address: tuple[str, int], handlers: list[Any],
    ssl_context: ssl.SSLContext | None = None, refuse_retrieve: Refusal | None = None,
    on_connect: OnConnect | None = None, release_slot: Callable[[Slot], None] | None = None,
    pdu_timeout: float = 30.0, on_timeout: OnTimeout | None = None,
) -> ThreadedAssociationServer:
    """``ae.start_server(address, block=False, ...)`` with the waking associations;
    ``on_connect`` admits each connection (None: all), ``release_slot`` frees its slot
    when it ends."""
    memoize_uid_checks()
    server = cast(TlsServer, ae.make_server(
        address, evt_handlers=handlers, server_class=TlsServer, ssl_context=ssl_context,
        request_handler=WakingRequestHandler,
    ))
    server.refuse_retrieve = refuse_retrieve  # type: ignore[attr-defined]
    server.on_connect = on_connect
    server.on_timeout = on_timeout
    server.release_slot = release_slot
    server.pdu_timeout = pdu_timeout
    server.slots = {}
    stamp = datetime.now().strftime("%Y%m%d%H%M%S")
    thread = threading.Thread(
        target=make_target(server.serve_forever), name=f"AcceptorServer@{stamp}", daemon=True
    )
    thread.start()
    # AE.shutdown() stops the servers it lists, and a server removes itself from the
    # list when it shuts down: list it as AE.start_server does.
    ae._servers.append(server)
    return server
