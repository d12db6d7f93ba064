"""`UpperLayer`: one DICOM UL connection (PS3.8 §9), sans-I/O.

Theory of operation
-------------------
An `UpperLayer` is the state machine of one transport connection, either side. It owns no
socket and no clock: the shell (``aiodicom.aio.protocol``) feeds it what happened and
carries out what it asks.

In: received bytes (`get_buffer`/`buffer_updated` for an asyncio ``BufferedProtocol``, or
`receive_data`), the transport's opening and closing (`connection_made`,
`connection_lost`), the time (``now`` on the shell's monotonic clock, `handle_timer`) and
the local user's requests (`request_association`, `accept`, `reject`, `send_data`,
`release_request`, `release_response`, `abort`).

Out: the primitives for the user, in order (`next_event`), the bytes to write
(`data_to_send`, a list for ``transport.writelines``), whether to close the transport
(`close_requested`; write `data_to_send` first) and when to call `handle_timer`
(`get_timer`, ARTIM's deadline).

Every input becomes a PS3.8 event; `aiodicom.core.fsm.step` looks it up in Table 9-10 and
this class applies the action's `Effects`, nothing else changes the state. Received bytes
are framed by `ReceiveBuffer` (a PDU length over ``max_pdu_length`` is refused before
anything is allocated), decoded by `decode_pdu`, and become Evt3/4/6/10/12/13/16, or Evt19
when malformed. Peer input never raises: an unexpected or malformed PDU ends as the table
says (AA-1 in Sta2, AA-8 in Sta3-Sta12, AA-7 in Sta13): an A-ABORT with source 2 and the
reason carried by the `RemoteProtocolError`, and an `AbortIndication` holding that error.
A local request the table has no cell for raises `LocalProtocolError` and changes nothing.

Once the stream cannot be framed any more (a refused PDU length) or the connection is
finished (back in Sta1, `ConnectionClosed` emitted), received bytes are dropped unread.
One `UpperLayer` serves one connection (PS3.8 §9.1: one association per connection).
"""

from __future__ import annotations

from collections.abc import Sequence

from aiodicom.core.buffer import ReadableBuffer, ReceiveBuffer
from aiodicom.core.fsm import (
    PDU_EVENTS,
    Action,
    Artim,
    Effects,
    Event,
    Indication,
    State,
    Transport,
    effects,
    step,
)
from aiodicom.core.pdu import (
    PDU,
    AAbort,
    AAssociateAC,
    AAssociateRJ,
    AAssociateRQ,
    AReleaseRP,
    AReleaseRQ,
    PDataTF,
    PDUType,
    decode_pdu,
    encode_pdu,
)
from aiodicom.core.primitives import (
    AbortIndication,
    AssociateAccepted,
    AssociateIndication,
    AssociateRejected,
    ConnectionClosed,
    DataIndication,
    Primitive,
    ReleaseConfirmed,
    ReleaseIndication,
)
from aiodicom.errors import (
    AbortReason,
    AbortSource,
    InvalidPDU,
    LocalProtocolError,
    RejectResult,
    RejectSource,
    RemoteProtocolError,
)

__all__ = [
    "RQ_MEMO_ENTRIES",
    "RQ_MEMO_MAX_BODY",
    "UpperLayer",
    "decode_associate_rq_memo",
    "rq_memo_holds",
]

_PDU_EVENT: dict[type[PDU], Event] = {
    AAssociateAC: Event.EVT3,
    AAssociateRJ: Event.EVT4,
    AAssociateRQ: Event.EVT6,
    PDataTF: Event.EVT10,
    AReleaseRQ: Event.EVT12,
    AReleaseRP: Event.EVT13,
    AAbort: Event.EVT16,
}
_PEER_FAULT_ACTIONS = frozenset({Action.AA_1, Action.AA_7, Action.AA_8})
"""Actions that answer a PDU the table does not expect (or Evt19) with an A-ABORT."""

_Plan = dict[tuple[State, Event], tuple[Action, State, Effects, bool]]


def _plan(requestor: bool, acceptable: bool) -> _Plan:
    """`step` and `effects` of every filled cell of Table 9-10 for one side, computed once:
    (action, next state, effects, whether it answers a peer's PDU with an A-ABORT)."""
    plan: _Plan = {}
    for state in State:
        for event in Event:
            try:
                action, nxt = step(state, event, requestor=requestor, acceptable=acceptable)
            except LocalProtocolError:
                continue
            fault = event in PDU_EVENTS and action in _PEER_FAULT_ACTIONS
            plan[state, event] = (action, nxt, effects(action, nxt), fault)
    return plan


_PLANS = {(requestor, acceptable): _plan(requestor, acceptable)
          for requestor in (False, True) for acceptable in (False, True)}
# Enum members read through their class cost a metaclass attribute lookup each time (Python
# 3.11): the hot paths below use these module-level names instead.
_STA1, _STA4, _STA6 = State.STA1, State.STA4, State.STA6
_EVT7, _EVT9, _EVT19 = Event.EVT7, Event.EVT9, Event.EVT19
_START, _STOP, _CLOSE = Artim.START, Artim.STOP, Transport.CLOSE
_AA_1 = Action.AA_1
_RQ_TYPE = PDUType.A_ASSOCIATE_RQ
_T_ABORT, _T_RELEASE_RQ, _T_RELEASE_RP = (
    PDUType.A_ABORT, PDUType.A_RELEASE_RQ, PDUType.A_RELEASE_RP)
_AR_8 = Action.AR_8
_I_P_DATA, _I_ASSOCIATE, _I_ACCEPTED, _I_REJECTED = (
    Indication.P_DATA, Indication.ASSOCIATE, Indication.ASSOCIATE_ACCEPTED,
    Indication.ASSOCIATE_REJECTED)
_I_RELEASE, _I_RELEASE_CONFIRMED, _I_ABORT, _I_P_ABORT = (
    Indication.RELEASE, Indication.RELEASE_CONFIRMED, Indication.ABORT, Indication.P_ABORT)

_PROVIDER_REJECT = AAssociateRJ(
    result=RejectResult.PERMANENT,
    source=RejectSource.SERVICE_PROVIDER_ACSE,
    reason=2,  # protocol-version-not-supported (PS3.8 Table 9-21)
)
"""AE-6's answer to an A-ASSOCIATE-RQ whose protocol-version lacks bit 0 (PS3.8 §9.3.2)."""

RQ_MEMO_ENTRIES = 16
"""A-ASSOCIATE-RQ bodies whose decoded value is kept (least recently used goes first)."""
RQ_MEMO_MAX_BODY = 16 * 1024
"""Longest RQ body kept (storescu's default proposal, 120 contexts, is ~13 KiB). With
`RQ_MEMO_ENTRIES` this bounds the memo to 256 KiB of keys plus their decoded values
(~100 KiB for a full one: ~1.9 MiB at worst, a few KiB for a fleet of echo/store clients)."""
_RQ_MEMO: dict[bytes, AAssociateRQ] = {}
_RQ_HELD: dict[int, AAssociateRQ] = {}
"""The memo's values by id (`rq_memo_holds`)."""

_SCRATCH = memoryview(bytearray(4096))
"""Where bytes we drop unread go (after the end, or once the stream cannot be framed): one
area for every connection, since nothing ever reads it."""


def decode_associate_rq_memo(body: ReadableBuffer) -> PDU:
    """`decode_pdu` of an A-ASSOCIATE-RQ body, the same value for the same bytes.

    A fleet's clients send the same RQ every time; its decoded value is a pure function of
    the body and immutable (frozen dataclasses, tuples, str, bytes), so it is kept by exact
    body bytes and handed out again: the same object, which lets the shell memoize the
    negotiation by identity. Never kept: a body over `RQ_MEMO_MAX_BODY`, a malformed one
    (`InvalidPDU` is raised every time, as by `decode_pdu`) and an RQ with a user identity
    sub-item of any identity type (it carries a secret; nothing of it outlives its
    association). Bounded (`RQ_MEMO_ENTRIES`): a peer sending distinct RQs only turns hits
    into misses.
    """
    if len(body) > RQ_MEMO_MAX_BODY:
        return decode_pdu(PDUType.A_ASSOCIATE_RQ, body)
    key = bytes(body)
    rq = _RQ_MEMO.pop(key, None)
    if rq is None:
        pdu = decode_pdu(PDUType.A_ASSOCIATE_RQ, key)  # decoded from the copy: no view kept
        assert isinstance(pdu, AAssociateRQ)
        if pdu.user_information.user_identity_rq is not None or _has_identity_item(key):
            return pdu
        rq = pdu
        if len(_RQ_MEMO) >= RQ_MEMO_ENTRIES:
            _RQ_HELD.pop(id(_RQ_MEMO.pop(next(iter(_RQ_MEMO)))), None)
        _RQ_HELD[id(rq)] = rq
    _RQ_MEMO[key] = rq
    return rq


def rq_memo_holds(rq: AAssociateRQ) -> bool:
    """True if ``rq`` is a value of the memo: the same object comes back for the same bytes,
    so what is memoized by its identity (the shell's negotiation) can hit again. An RQ the
    memo does not keep (oversized, with a user identity) is a new object every time."""
    return _RQ_HELD.get(id(rq)) is rq


_RQ_ITEMS_AT = 68
"""Where an A-ASSOCIATE-RQ body's variable items begin (PS3.8 Table 9-11)."""
_USER_INFORMATION, _USER_IDENTITY_RQ = 0x50, 0x58


def _has_identity_item(body: bytes) -> bool:
    """True if a user identity sub-item (0x58) is in ``body``, of any identity type: the
    decoder ignores a type it does not know (PS3.7 D.1), but its secret is in these bytes.
    ``body`` has decoded, so its items are framed; a truncated one ends the walk."""
    pos, end = _RQ_ITEMS_AT, len(body)
    while pos + 4 <= end:
        kind, length = body[pos], int.from_bytes(body[pos + 2 : pos + 4], "big")
        pos += 4
        if kind == _USER_INFORMATION:
            sub, stop = pos, min(pos + length, end)
            while sub + 4 <= stop:
                if body[sub] == _USER_IDENTITY_RQ:
                    return True
                sub += 4 + int.from_bytes(body[sub + 2 : sub + 4], "big")
        pos += length
    return False


class UpperLayer:
    """The PS3.8 upper-layer state machine of one transport connection (see the module doc).

    ``requestor`` picks the side: the association-requestor calls `request_association`
    then `connection_made`; the acceptor calls `connection_made` and waits for an
    `AssociateIndication`. ``max_pdu_length`` is the largest PDU body (the header's length
    field) we accept; ``artim_timeout`` is ARTIM's duration in seconds (PS3.8 §9.1.5);
    ``staging_size`` sizes the small reused receive buffer. ``max_associate_length``, if
    given, bounds every PDU received before the association is established (Sta6), i.e. the
    A-ASSOCIATE-RQ on the acceptor: a peer cannot make an unauthenticated connection hold a
    PDU of ``max_pdu_length``; a longer one is a framing error (A-ABORT, Evt19).
    """

    __slots__ = (
        "_artim_timeout",
        "_close_requested",
        "_deadline",
        "_desync",
        "_events",
        "_finished",
        "_max_pdu_length",
        "_out",
        "_plan",
        "_plan_unacceptable",
        "_rq",
        "_rx",
        "_state",
        "requestor",
    )

    def __init__(
        self,
        *,
        requestor: bool,
        max_pdu_length: int = 1 << 20,
        artim_timeout: float = 30.0,
        staging_size: int = 4096,
        max_associate_length: int | None = None,
    ) -> None:
        self.requestor = requestor
        """True on the association-requestor (it decides AR-8 in a release collision)."""
        self._plan = _PLANS[requestor, True]
        self._plan_unacceptable = _PLANS[requestor, False]
        self._state = _STA1
        self._max_pdu_length = max_pdu_length
        first = max_pdu_length
        if max_associate_length is not None:
            first = min(max_pdu_length, max_associate_length)
        self._rx = ReceiveBuffer(first, staging_size)
        self._events: list[Primitive] = []  # a few at a time: a deque's block is ~700 B
        self._out: list[ReadableBuffer] = []
        self._close_requested = False
        self._artim_timeout = artim_timeout
        self._deadline: float | None = None
        self._rq: AAssociateRQ | None = None
        self._finished = False
        self._desync = False

    # -- state and outputs ------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def close_requested(self) -> bool:
        """True once an action closed the transport: write `data_to_send`, then close."""
        return self._close_requested

    def next_event(self) -> Primitive | None:
        """The oldest primitive not yet taken, or None."""
        return self._events.pop(0) if self._events else None

    def data_to_send(self) -> list[ReadableBuffer]:
        """Everything to write, in order (for ``writelines``); the list is handed over."""
        out, self._out = self._out, []
        return out

    def get_timer(self) -> float | None:
        """ARTIM's deadline on the shell's monotonic clock, or None when it is not running."""
        return self._deadline

    def handle_timer(self, now: float) -> None:
        """Inject Evt18 (ARTIM expired) if the deadline has passed; otherwise do nothing."""
        if self._deadline is not None and now >= self._deadline:
            self._fire(Event.EVT18, now)

    # -- transport ----------------------------------------------------------------------------

    def connection_made(self, now: float) -> None:
        """The transport is open: Evt5 on the acceptor (AE-5, ARTIM starts), Evt2 on the
        requestor (AE-2 sends the A-ASSOCIATE-RQ given to `request_association`)."""
        self._check_usable()
        self._fire(Event.EVT2 if self.requestor else Event.EVT5, now)

    def connection_lost(self, now: float) -> None:
        """The transport closed (Evt17). Harmless in Sta1, e.g. after we asked to close."""
        if self._state is not State.STA1:
            self._fire(Event.EVT17, now)

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        """Where the transport should write received bytes (``BufferedProtocol.get_buffer``)."""
        if self._dropping_input():
            return _SCRATCH
        return self._rx.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int, now: float) -> None:
        """``nbytes`` arrived in the last `get_buffer` view; runs the state machine on every
        PDU they complete. Never raises on peer input."""
        if self._dropping_input():
            return
        try:
            self._rx.buffer_updated(nbytes)
        except InvalidPDU as exc:
            self._process(now, exc)
        else:
            self._process(now, None)

    def receive_data(self, data: ReadableBuffer, now: float) -> None:
        """Copy ``data`` in and run the state machine (the path for tests and plain sockets)."""
        if self._dropping_input():
            return
        try:
            self._rx.feed(data)
        except InvalidPDU as exc:
            self._process(now, exc)
        else:
            self._process(now, None)

    # -- local requests (PS3.8 §7) ------------------------------------------------------------

    def request_association(self, rq: AAssociateRQ) -> None:
        """A-ASSOCIATE request (Evt1, AE-1): the RQ is sent when the transport opens."""
        if not self.requestor:
            raise LocalProtocolError(
                "request_association() is for the association-requestor; this UpperLayer "
                "was made with requestor=False"
            )
        self._check(Event.EVT1)
        self._rq = rq
        self._fire(Event.EVT1, None)

    def accept(self, ac: AAssociateAC, encoded: bytes | None = None) -> None:
        """A-ASSOCIATE response, accept (Evt7, AE-7): sends the A-ASSOCIATE-AC.

        ``encoded``, if given, must be ``encode_pdu(ac)`` (the shell's set-up memo keeps it).
        """
        self._check(_EVT7)
        self._fire(_EVT7, None, out=[encode_pdu(ac) if encoded is None else encoded])

    def reject(self, rj: AAssociateRJ, now: float) -> None:
        """A-ASSOCIATE response, reject (Evt8, AE-8): sends the RJ and starts ARTIM."""
        self._check(Event.EVT8)
        self._fire(Event.EVT8, now, out=[encode_pdu(rj)])

    def send_data(self, buffers: Sequence[ReadableBuffer]) -> None:
        """P-DATA request (Evt9: DT-1 in Sta6, AR-7 in Sta8).

        ``buffers`` hold one or more complete, already framed P-DATA-TF PDUs; they are
        queued as they are (no copy, not re-encoded), so leave them unchanged until written.
        """
        self._check_usable()
        self._fire(_EVT9, None, out=buffers)

    def send_pdata(self, pdata: PDataTF) -> None:
        """`send_data` for a `PDataTF` value, encoded here."""
        self._check(Event.EVT9)
        self._fire(Event.EVT9, None, out=[encode_pdu(pdata)])

    def release_request(self) -> None:
        """A-RELEASE request (Evt11, AR-1): sends A-RELEASE-RQ."""
        self._check_usable()
        self._fire(Event.EVT11, None)

    def release_response(self, now: float) -> None:
        """A-RELEASE response (Evt14): AR-4 in Sta8/Sta12 (RP, ARTIM), AR-9 in Sta9 (RP)."""
        self._check_usable()
        self._fire(Event.EVT14, now)

    def abort(self, now: float) -> None:
        """A-ABORT request (Evt15): AA-1 sends A-ABORT (source 0) and starts ARTIM; in Sta4,
        AA-2 just closes. Not allowed in Sta1, Sta2 or Sta13 (PS3.8 Table 9-10)."""
        self._check_usable()
        self._fire(Event.EVT15, now)

    # -- internals ----------------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._finished:
            raise LocalProtocolError(
                "this connection is finished (ConnectionClosed was emitted); "
                "use a new UpperLayer for a new connection"
            )

    def _check(self, event: Event) -> None:
        """Raise `LocalProtocolError` unless ``event`` is allowed now; changes nothing."""
        self._check_usable()
        if (self._state, event) not in self._plan:
            step(self._state, event, requestor=self.requestor)  # raises, naming the cell

    def _dropping_input(self) -> bool:
        if self._finished or self._desync:
            return True
        if self._state is _STA1 or self._state is _STA4:
            raise LocalProtocolError(
                f"bytes received in {self._state} ({self._state.definition}): there is no "
                "transport connection yet; call connection_made() first"
            )
        return False

    def _process(self, now: float, framing_error: InvalidPDU | None) -> None:
        """Run every complete PDU through the table, then the framing error if any."""
        rx = self._rx
        while (raw := rx.next_pdu()) is not None:
            if self._finished:
                continue  # drain: nothing after Sta1 matters
            try:
                if raw.pdu_type == _RQ_TYPE:
                    pdu = decode_associate_rq_memo(raw.body)
                else:
                    pdu = decode_pdu(raw.pdu_type, raw.body)
            except InvalidPDU as exc:  # malformed, or an unknown type (reason 1)
                self._fire(_EVT19, now, error=exc)
                continue
            acceptable = not isinstance(pdu, AAssociateRQ) or bool(pdu.protocol_version & 1)
            self._fire(_PDU_EVENT[type(pdu)], now, received=pdu, acceptable=acceptable)
        if framing_error is not None:
            self._desync = True  # the stream can no longer be framed: drop what follows
            if not self._finished:
                self._fire(Event.EVT19, now, error=framing_error)

    def _fire(
        self,
        event: Event,
        now: float | None,
        *,
        out: Sequence[ReadableBuffer] | None = None,
        received: PDU | None = None,
        error: RemoteProtocolError | None = None,
        acceptable: bool = True,
    ) -> None:
        """Look ``event`` up in Table 9-10 and apply the action's effects, in order."""
        state = self._state
        cell = (self._plan if acceptable else self._plan_unacceptable).get((state, event))
        if cell is None:
            step(state, event, requestor=self.requestor, acceptable=acceptable)  # raises
            raise AssertionError("unreachable")  # pragma: no cover
        action, nxt, fx, peer_fault = cell
        if error is None and peer_fault:
            error = RemoteProtocolError(
                f"unexpected {event.definition.split(' (')[0]} in {state} "
                f"({state.definition})",
                reason=AbortReason.UNEXPECTED_PDU,
            )
        if fx.send is not None:
            self._send(fx.send, out, error)
        if fx.indicate is not None:
            self._events.append(self._indication(fx.indicate, action, received, error))
        elif action is _AA_1 and error is not None:
            # AA-1 answering a bad PDU in Sta2: tell the user why the connection ends.
            self._events.append(_p_abort(error))
        artim = fx.artim
        if artim is _START:
            assert now is not None, f"{action} starts ARTIM and needs the time"
            self._deadline = now + self._artim_timeout
        elif artim is _STOP:
            self._deadline = None
        if fx.transport is _CLOSE:
            self._close_requested = True
        self._state = nxt
        if nxt is _STA6 and state is not _STA6:
            self._rx.max_body = self._max_pdu_length
        if nxt is _STA1 and state is not _STA1:
            self._finished = True
            self._deadline = None
            self._events.append(ConnectionClosed())

    def _send(
        self,
        kind: PDUType,
        out: Sequence[ReadableBuffer] | None,
        error: RemoteProtocolError | None,
    ) -> None:
        if out is not None:  # AC, RJ (AE-8) and P-DATA-TF come encoded from the caller
            self._out.extend(out)
            return
        pdu: PDU
        if kind is _T_ABORT:
            if error is None:  # AA-1 on the user's A-ABORT request
                pdu = AAbort(source=AbortSource.SERVICE_USER, reason=0)
            else:
                pdu = AAbort(source=AbortSource.SERVICE_PROVIDER, reason=error.reason)
        elif kind is _T_RELEASE_RQ:
            pdu = AReleaseRQ()
        elif kind is _T_RELEASE_RP:
            pdu = AReleaseRP()
        elif kind is _RQ_TYPE:
            assert self._rq is not None, "Sta4 is only reached through request_association()"
            pdu = self._rq
        else:  # A-ASSOCIATE-RJ from AE-6: the provider cannot accept the RQ
            pdu = _PROVIDER_REJECT
        self._out.append(encode_pdu(pdu))

    def _indication(
        self,
        kind: Indication,
        action: Action,
        received: PDU | None,
        error: RemoteProtocolError | None,
    ) -> Primitive:
        if kind is _I_P_DATA and isinstance(received, PDataTF):
            return DataIndication(pdata=received)
        if kind is _I_ASSOCIATE and isinstance(received, AAssociateRQ):
            return AssociateIndication(request=received)
        if kind is _I_ACCEPTED and isinstance(received, AAssociateAC):
            return AssociateAccepted(response=received)
        if kind is _I_REJECTED and isinstance(received, AAssociateRJ):
            return AssociateRejected(response=received)
        if kind is _I_RELEASE:
            return ReleaseIndication(collision=action is _AR_8)
        if kind is _I_RELEASE_CONFIRMED:
            return ReleaseConfirmed()
        if kind is _I_ABORT and isinstance(received, AAbort):
            return AbortIndication(
                source=received.source, reason=received.reason, error=None, local=False
            )
        if kind is _I_P_ABORT:
            if error is None:  # AA-4: the transport closed under us
                return AbortIndication(
                    source=AbortSource.SERVICE_PROVIDER,
                    reason=AbortReason.NOT_SPECIFIED,
                    error=None,
                    local=True,
                )
            return _p_abort(error)
        raise AssertionError(f"{action} issued {kind} for {received!r}")  # pragma: no cover


def _p_abort(error: RemoteProtocolError) -> AbortIndication:
    """The A-P-ABORT indication for a peer fault we answered with A-ABORT (source 2)."""
    return AbortIndication(
        source=AbortSource.SERVICE_PROVIDER, reason=error.reason, error=error, local=True
    )
