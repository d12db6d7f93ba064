"""Fuzz an acceptor `UpperLayer` (PS3.8 §9, Table 9-10) driven like the asyncio shell drives it.

The fuzzer's bytes arrive as the peer's stream, at fuzzer-chosen splits and times; a small
shell answers the events as a server would: it negotiates an `AssociateIndication` (accept,
or reject when the input says so), reassembles P-DATA with `MessageAssembler` and answers
a C-ECHO-RQ, answers a release, and may request release or abort itself. A valid
A-ASSOCIATE-RQ is prepended (as its own chunk) when the input asks, so the fuzzer's bytes
start in Sta6 (or Sta13 after a reject).
Properties:

- peer input never raises, whatever the state; local requests made in a state where the
  table allows them never raise either;
- the state is a `State`; ARTIM runs exactly in Sta2 and Sta13 (PS3.8 §9.1.5);
- `ConnectionClosed` comes once, last; after `close_requested` nothing more is sent;
- everything written is a sequence of whole PDUs that decode, with at most one AC or RJ,
  and only A-ABORTs after an A-ABORT.

Run: ``python fuzz/fuzz_upper_layer.py [libFuzzer flags] fuzz/corpus/fuzz_upper_layer``.
Replay: ``fuzz_upper_layer.one_input(data)``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from fuzz_reader import Provider, Tail, chunks, instrumented, provider, read_sizes, run_fuzzer

with instrumented():
    from aiodicom.core.dimse import (
        CEchoRQ,
        CEchoRSP,
        CommandReceived,
        MessageAssembler,
        encode_message,
        fragment_command,
    )
    from aiodicom.core.fsm import State
    from aiodicom.core.negotiation import (
        IMPLICIT_VR_LITTLE_ENDIAN,
        VERIFICATION_SOP_CLASS,
        AcceptorPolicy,
        build_request,
        conclude_as_acceptor,
        negotiate_as_acceptor,
    )
    from aiodicom.core.pdu import AAbort, AAssociateAC, AAssociateRJ, decode_pdu_bytes, encode_pdu
    from aiodicom.core.primitives import (
        AbortIndication,
        AssociateIndication,
        ConnectionClosed,
        DataIndication,
        Primitive,
        ReleaseConfirmed,
        ReleaseIndication,
    )
    from aiodicom.core.upper_layer import UpperLayer
    from aiodicom.errors import DimseError, RemoteProtocolError

PREPEND_RQ, REJECT, BUFFERED, RELEASE, ABORT, STRICT_POLICY, EXPIRE = (1 << i for i in range(7))
"""Flag bits of the first control value."""

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
VALID_RQ = encode_pdu(
    build_request(
        called_ae="FUZZ-SCP",
        calling_ae="FUZZ-SCU",
        contexts=[
            (VERIFICATION_SOP_CLASS, [IMPLICIT_VR_LITTLE_ENDIAN]),
            (CT_IMAGE_STORAGE, ["1.2.840.10008.1.2.1", IMPLICIT_VR_LITTLE_ENDIAN]),
        ],
        max_pdu_length=16384,
    )
)
"""An A-ASSOCIATE-RQ our policies accept: Verification and CT Image Storage."""

_OPEN_POLICY = AcceptorPolicy(accept_any_abstract_syntax=True, max_pdu_length=16384)
_STRICT_POLICY = AcceptorPolicy(
    ae_title="FUZZ-SCP",
    calling_ae_titles=frozenset({"FUZZ-SCU"}),
    abstract_syntaxes={VERIFICATION_SOP_CLASS: (IMPLICIT_VR_LITTLE_ENDIAN,)},
    max_pdu_length=0,
)
_ARTIM = 30.0
_TIMER_STATES = frozenset({State.STA2, State.STA13})
_RELEASE_ANSWER_STATES = frozenset({State.STA8, State.STA9, State.STA12})
_NO_ABORT_STATES = frozenset({State.STA1, State.STA2, State.STA13})
_DATA_STATES = frozenset({State.STA6, State.STA8})


@dataclass
class Shell:
    """The acceptor's side of one connection, answering events as the asyncio server does."""

    flags: int
    ul: UpperLayer = field(default_factory=lambda: UpperLayer(requestor=False))
    assembler: MessageAssembler = field(default_factory=MessageAssembler)
    sent: bytearray = field(default_factory=bytearray)
    events: list[Primitive] = field(default_factory=list)
    owe_release: bool = False
    released: bool = False
    aborted: bool = False

    def receive(self, piece: bytes, now: float, sizes: Sequence[int]) -> None:
        if self.flags & BUFFERED:  # asyncio.BufferedProtocol: write into get_buffer() views
            pos, i = 0, 0
            while pos < len(piece):
                target = self.ul.get_buffer(-1)
                n = min(len(target), len(piece) - pos, sizes[i % len(sizes)] if sizes else 1 << 30)
                target[:n] = piece[pos : pos + n]
                pos, i = pos + n, i + 1
                self.ul.buffer_updated(n, now)
        else:
            self.ul.receive_data(piece, now)

    def service(self, now: float) -> None:
        """Take every event and answer it; then flush and check the invariants."""
        while (event := self.ul.next_event()) is not None:
            assert not any(isinstance(e, ConnectionClosed) for e in self.events), event
            self.events.append(event)
            self._answer(event, now)
        if self.ul.state is State.STA6 and self.flags & RELEASE and not self.released:
            self.released = True
            self.ul.release_request()
        if self.owe_release and self.ul.state in _RELEASE_ANSWER_STATES:
            self.owe_release = False
            self.ul.release_response(now)
        self.flush()

    def _answer(self, event: Primitive, now: float) -> None:
        ul = self.ul
        if isinstance(event, AssociateIndication):
            if ul.state is State.STA3:  # else a later PDU in the same chunk ended it
                self._negotiate(event, now)
        elif isinstance(event, DataIndication):
            self._data(event, now)
        elif isinstance(event, ReleaseIndication):
            self.owe_release = True
        elif isinstance(event, AbortIndication):
            assert event.error is None or isinstance(event.error, RemoteProtocolError)
            assert event.local or event.error is None
        else:
            assert isinstance(event, ConnectionClosed | ReleaseConfirmed), event

    def _negotiate(self, event: AssociateIndication, now: float) -> None:
        policy = _STRICT_POLICY if self.flags & STRICT_POLICY else _OPEN_POLICY
        try:
            answer = negotiate_as_acceptor(event.request, policy)
        except RemoteProtocolError:
            self.ul.abort(now)
            return
        if isinstance(answer, AAssociateAC) and not self.flags & REJECT:
            conclude_as_acceptor(event.request, answer)
            self.ul.accept(answer)
        else:
            self.ul.reject(answer if isinstance(answer, AAssociateRJ) else _reject(), now)

    def _data(self, event: DataIndication, now: float) -> None:
        ul = self.ul
        try:
            received = self.assembler.feed(event.pdata)
        except DimseError:
            if ul.state not in _NO_ABORT_STATES:
                ul.abort(now)
            return
        for item in received:
            if not isinstance(item, CommandReceived) or not isinstance(item.message, CEchoRQ):
                continue
            if ul.state in _DATA_STATES:
                rsp = CEchoRSP(message_id_being_responded_to=item.message.message_id)
                for pdu in fragment_command(item.context_id, encode_message(rsp), 16384):
                    ul.send_data(pdu)
        if self.flags & ABORT and not self.aborted and ul.state not in _NO_ABORT_STATES:
            self.aborted = True
            ul.abort(now)

    def flush(self) -> None:
        for buf in self.ul.data_to_send():
            self.sent += buf

    def check(self) -> None:
        ul = self.ul
        assert isinstance(ul.state, State), ul.state
        finished = any(isinstance(e, ConnectionClosed) for e in self.events)
        if not finished:
            timer = ul.get_timer() is not None
            assert timer == (ul.state in _TIMER_STATES), (ul.state, ul.get_timer())


def _reject() -> AAssociateRJ:
    return AAssociateRJ(result=1, source=1, reason=1)


def check_output(sent: bytes) -> None:
    """What we wrote is whole PDUs that decode; one AC/RJ at most; after an A-ABORT, only
    A-ABORTs (AA-7 answers a bad PDU in Sta13 with another one, PS3.8 Table 9-10)."""
    pos, answers, aborted = 0, 0, False
    while pos < len(sent):
        assert len(sent) - pos >= 6, f"{len(sent) - pos} stray bytes at the end of the output"
        length = int.from_bytes(sent[pos + 2 : pos + 6], "big")
        pdu = decode_pdu_bytes(sent[pos : pos + 6 + length])
        assert not aborted or isinstance(pdu, AAbort), f"{pdu!r} sent after an A-ABORT"
        answers += isinstance(pdu, AAssociateAC | AAssociateRJ)
        aborted = aborted or isinstance(pdu, AAbort)
        pos += 6 + length
    assert answers <= 1, f"{answers} A-ASSOCIATE answers sent"


def run(
    stream: bytes, flags: int, max_pdu: int, sizes: Sequence[int], steps: Sequence[int]
) -> Shell:
    """Drive one connection; returns the shell for inspection (tests use this)."""
    shell = Shell(flags=flags, ul=UpperLayer(requestor=False, max_pdu_length=max_pdu))
    ul = shell.ul
    now = 1000.0
    ul.connection_made(now)
    shell.service(now)
    pieces = list(chunks(stream, sizes))
    if flags & PREPEND_RQ:  # a chunk of its own, answered before the peer goes on
        pieces.insert(0, VALID_RQ)
    for i, piece in enumerate(pieces):
        now += steps[i % len(steps)] if steps else 0
        ul.handle_timer(now)
        shell.service(now)
        if ul.close_requested:
            break
        shell.receive(piece, now, sizes)
        shell.service(now)
        shell.check()
        if ul.close_requested:
            break
    closed_at = len(shell.sent) if ul.close_requested else None
    if flags & EXPIRE and closed_at is None:
        now += _ARTIM + 1
        ul.handle_timer(now)
        shell.service(now)
    ul.connection_lost(now)  # the transport closes, by us or by the peer
    shell.service(now)
    shell.check()
    assert closed_at is None or len(shell.sent) == closed_at, "sent after close_requested"
    assert ul.state is State.STA1, ul.state
    assert isinstance(shell.events[-1], ConnectionClosed), shell.events[-1:]
    check_output(bytes(shell.sent))
    return shell


def make_input(
    stream: bytes,
    *,
    flags: int = 0,
    max_pdu: int = 1 << 16,
    sizes: Sequence[int] = (),
    steps: Sequence[int] = (),
) -> bytes:
    """The fuzzer input `one_input` decodes into these parameters (for seeds and tests)."""
    tail = Tail().int(flags, 0, 255).int(max_pdu, 4, 1 << 17).int(len(sizes), 0, 15)
    for size in sizes:
        tail.int(size, 1, 4096)
    tail.int(len(steps), 0, 7)
    for step in steps:
        tail.int(step, 0, 40)
    return tail.build(stream)


def _read(fdp: Provider) -> tuple[int, int, list[int], list[int]]:
    flags = fdp.ConsumeIntInRange(0, 255)
    max_pdu = fdp.ConsumeIntInRange(4, 1 << 17)
    sizes = read_sizes(fdp)
    steps = [fdp.ConsumeIntInRange(0, 40) for _ in range(fdp.ConsumeIntInRange(0, 7))]
    return flags, max_pdu, sizes, steps


def one_input(data: bytes) -> None:
    """One fuzz case; raises AssertionError (or anything unexpected) on a bug."""
    fdp = provider(data)
    flags, max_pdu, sizes, steps = _read(fdp)
    run(fdp.ConsumeBytes(fdp.remaining_bytes()), flags, max_pdu, sizes, steps)


def main(argv: list[str]) -> None:
    run_fuzzer(argv, one_input)


if __name__ == "__main__":
    main(sys.argv)
