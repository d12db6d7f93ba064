"""The asyncio transport adapter: bytes in and out of a sans-I/O `UpperLayer`.

Theory of operation
-------------------
`DicomProtocol` is an ``asyncio.BufferedProtocol``. The loop (or its TLS layer) asks
`get_buffer` where to put received bytes; we hand it a view into the upper layer's receive
buffer, so a PDU body is written once, in place, and travels up as a memoryview. After
every input (bytes, connection loss, ARTIM expiry) `_pump` does three things the core asked
for: writes what it queued (``transport.writelines``: header and data-set views go out
without being joined), hands each service primitive to the owner synchronously, and closes
the transport when the state machine says so. ARTIM (``UpperLayer.get_timer()``) and the
owner's watch (`call_watch_at`, the server's idle watchdog) share one ``loop.call_at`` handle
per connection; the clock is the loop's monotonic ``time()``. A deadline that moves later or
stops leaves the handle alone: it fires early, finds nothing due and re-arms, so a short
association makes one timer, not three (issue 18).

Flow control is both ways: ``pause_writing``/``resume_writing`` gate an ``asyncio.Event``
that senders await (`drain`), and the owner may `pause_reading` while a handler is behind,
so memory stays bounded by a few PDUs whatever the peer sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Sequence
from typing import Any

from aiodicom.core.buffer import ReadableBuffer
from aiodicom.core.fsm import State
from aiodicom.core.pdu import AAssociateAC, AAssociateRJ
from aiodicom.core.primitives import Primitive
from aiodicom.core.upper_layer import UpperLayer
from aiodicom.errors import AssociationAborted, LocalProtocolError, fresh_error

__all__ = ["DicomProtocol"]

_SENDING_STATES = frozenset({State.STA6, State.STA8})
"""Where a P-DATA request is allowed (DT-1, AR-7; PS3.8 Table 9-10). Primitives are queued
while a read is processed, so an owner handling a P-DATA indication may find that a later
PDU of the same read (an A-ABORT) already moved the state machine on."""

log = logging.getLogger("aiodicom.transport")

_JOIN_BELOW = 64 * 1024
"""Small writes (commands, responses) go out as one joined buffer: a copy of a few hundred
bytes is cheaper than one writelines call, which costs ~1 ms on uvloop's TLS transport."""


def _ignore(primitive: Primitive) -> None:
    """The owner's callback once the connection is gone: nothing is left to hand it."""


class DicomProtocol(asyncio.BufferedProtocol):
    """Feeds an `UpperLayer` from a transport and applies what it asks for."""

    def __init__(
        self,
        upper_layer: UpperLayer,
        on_primitive: Callable[[Primitive], None],
        *,
        on_connection_made: Callable[[DicomProtocol], None] | None = None,
    ) -> None:
        self.ul = upper_layer
        self._on_primitive = on_primitive
        self._on_connection_made = on_connection_made
        self.transport: asyncio.Transport | None = None
        self._peername: Any = None
        """The transport's peername, kept when the connection is lost (`extra`)."""
        self._loop = asyncio.get_running_loop()
        self._writable: asyncio.Event | None = None
        """Cleared while the transport is paused; made on the first pause (most never do)."""
        self._timer: asyncio.TimerHandle | None = None
        self._timer_deadline: float | None = None
        """When ``_timer`` fires: never later than ARTIM's deadline or the watch's."""
        self._artim: float | None = None
        """ARTIM's deadline as last seen (``_pump`` re-arms only when it moved)."""
        self._watch_at: float | None = None
        self._watch: Callable[[], None] | None = None
        self._reading_paused = False
        self._pause_holders: set[object] = set()
        self.closed: asyncio.Future[None] = self._loop.create_future()
        self.close_error: BaseException | None = None
        self.last_activity = self._loop.time()
        self.bytes_received = 0
        self.handshake_done = [False]
        """Set by connection_made; a shared cell so a finalizer can read it after we are gone."""

    # -- asyncio callbacks ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TLS transport is not an asyncio.Transport subclass, but has its methods.
        self.transport = transport  # type: ignore[assignment]
        self.handshake_done[0] = True
        # Both loops set TCP_NODELAY on every TCP transport (tests/aio/test_nodelay.py); we
        # keep setting it on the default loop, where it is cheap, but not on uvloop, whose
        # get_extra_info("socket") builds a socket object per connection.
        if "uvloop" not in type(self._loop).__module__:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._on_connection_made is not None:
            self._on_connection_made(self)
        self.ul.connection_made(self._loop.time())
        self._pump()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.ul.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        now = self._loop.time()
        self.last_activity = now
        self.bytes_received += nbytes
        self.ul.buffer_updated(nbytes, now)
        self._pump()

    def eof_received(self) -> bool:
        return False  # close our side too: one association per connection

    def connection_lost(self, exc: Exception | None) -> None:
        # Kept without its traceback: a write that failed in our frames would hold them.
        self.close_error = None if exc is None else fresh_error(exc)
        if self._writable is not None:
            self._writable.set()  # wake senders; they will see the association is gone
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._watch_at = self._watch = None
        self.ul.connection_lost(self._loop.time())
        self._pump()
        if not self.closed.done():
            self.closed.set_result(None)
        # The owner holds us and we hold its callbacks, and a TLS transport holds us through
        # its SSL protocol: drop them, so the association, its buffers and the SSL object are
        # freed when the owner lets go, not at the next full collection. Under 10,000 held
        # associations that waits for a quarter as many to end: 125 MB of peak RSS in
        # bench/concurrency.py (issue 18). The peer's address outlives the transport: a
        # requestor reads it once the AC is in, and the peer may have closed by then.
        self._on_primitive = _ignore
        self._on_connection_made = None
        if self.transport is not None:
            self._peername = self.transport.get_extra_info("peername")
            self.transport = None

    def pause_writing(self) -> None:
        if self._writable is None:
            self._writable = asyncio.Event()  # made unset: paused
        else:
            self._writable.clear()

    def resume_writing(self) -> None:
        if self._writable is not None:
            self._writable.set()

    # -- local requests: the association asks, the upper layer decides, we apply -------------

    def accept(self, ac: AAssociateAC, encoded: bytes | None = None) -> None:
        """Send A-ASSOCIATE-AC (Evt7); ``encoded``, if given, is ``encode_pdu(ac)``."""
        self.ul.accept(ac, encoded)
        self._pump()

    def reject(self, rj: AAssociateRJ) -> None:
        """Send A-ASSOCIATE-RJ (Evt8); ARTIM then waits for the peer to close."""
        self.ul.reject(rj, self._loop.time())
        self._pump()

    def release_request(self) -> None:
        """Send A-RELEASE-RQ (Evt11)."""
        self.ul.release_request()
        self._pump()

    def release_response(self) -> None:
        """Send A-RELEASE-RP (Evt14)."""
        self.ul.release_response(self._loop.time())
        self._pump()

    def abort(self) -> None:
        """Send A-ABORT (Evt15) if the state allows one; the transport closes either way."""
        with contextlib.suppress(LocalProtocolError):
            self.ul.abort(self._loop.time())
        self._pump()

    # -- used by the association ------------------------------------------------------------

    def send(self, buffers: Sequence[ReadableBuffer]) -> None:
        """Queue already-framed P-DATA-TF bytes (header and views) through the state machine.

        A P-DATA request (Evt9) is only allowed in Sta6 and Sta8, where DT-1 and AR-7 send
        and do nothing else (PS3.8 Table 9-10): no primitive, no close, no timer, so only
        the output is written, not the whole `_pump`."""
        ul = self.ul
        ul.send_data(buffers)
        self._write(ul.data_to_send())

    @property
    def can_send(self) -> bool:
        """True while the state machine takes a P-DATA request (Sta6, Sta8): false once a
        received A-ABORT or A-RELEASE has moved it on, even before the owner hears of it."""
        return self.ul.state in _SENDING_STATES

    def close_transport(self) -> None:
        """Close after what is queued is written (an A-ABORT we just sent, say)."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    async def drain(self) -> None:
        """Wait until the transport takes more; raises if the connection is gone."""
        writable = self._writable
        if writable is not None and not writable.is_set():
            await writable.wait()
        if self.closed.done():
            raise AssociationAborted(2, 0, "the connection closed while sending")

    def pause_reading(self, holder: object) -> None:
        """Stop reading until ``holder`` (and every other holder) resumes: each consumer
        that is behind holds its own pause, so one catching up never unpauses another."""
        self._pause_holders.add(holder)
        if not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            with contextlib.suppress(RuntimeError):
                self.transport.pause_reading()

    def resume_reading(self, holder: object) -> None:
        self._pause_holders.discard(holder)
        if not self._pause_holders:
            self._resume()

    def resume_all(self) -> None:
        """Read on whatever was held (the association ended: see the peer's close)."""
        self._pause_holders.clear()
        self._resume()

    def _resume(self) -> None:
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            with contextlib.suppress(RuntimeError):
                self.transport.resume_reading()

    def abort_transport(self) -> None:
        """Drop the connection without ceremony (the peer stalled or misbehaved)."""
        if self.transport is not None:
            self.transport.abort()

    def call_watch_at(self, when: float, callback: Callable[[], None]) -> None:
        """Call ``callback`` at loop time ``when`` (once; it replaces any earlier watch), on
        the connection's one timer. Not after the connection is lost."""
        self._watch_at = when
        self._watch = callback
        self._arm()

    def cancel_watch(self) -> None:
        self._watch_at = self._watch = None  # the timer, if armed for it, fires to nothing

    def extra(self, name: str) -> Any:
        if self.transport is None:
            return self._peername if name == "peername" else None
        return self.transport.get_extra_info(name)

    # -- internals ----------------------------------------------------------------------------

    def _write(self, out: list[ReadableBuffer]) -> None:
        transport = self.transport
        if out and transport is not None and not transport.is_closing():
            if len(out) == 1:
                transport.write(out[0])
            elif sum(map(len, out)) <= _JOIN_BELOW:
                transport.write(b"".join(out))
            else:
                transport.writelines(out)

    def _pump(self) -> None:
        ul = self.ul
        out = ul.data_to_send()
        if out:
            self._write(out)
        while (primitive := ul.next_event()) is not None:
            try:
                self._on_primitive(primitive)
            except Exception:  # an owner bug must not leave the connection half-handled
                log.exception("error while handling %s", type(primitive).__name__)
                self.abort_transport()
        transport = self.transport
        if ul.close_requested and transport is not None and not transport.is_closing():
            transport.close()
        if ul.get_timer() != self._artim:  # ARTIM moved (never within Sta6)
            self._artim = ul.get_timer()
            self._arm()

    def _arm(self) -> None:
        """Have the timer fire no later than the earliest of ARTIM and the watch."""
        artim, watch = self._artim, self._watch_at
        deadline = watch if artim is None else artim if watch is None else min(artim, watch)
        if deadline is None or self.closed.done():
            return  # a timer still armed fires to nothing
        timer = self._timer
        if timer is not None:
            if self._timer_deadline is not None and self._timer_deadline <= deadline:
                return  # fires in time; `_on_timer` re-arms for the rest
            timer.cancel()
        self._timer_deadline = deadline
        self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_deadline = None
        now = self._loop.time()
        if self._artim is not None:
            self.ul.handle_timer(now)  # Evt18 if its deadline has passed
            self._pump()
        watch = self._watch
        if watch is not None and self._watch_at is not None and now >= self._watch_at:
            self._watch_at = self._watch = None
            watch()
        self._arm()

