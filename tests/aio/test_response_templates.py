"""The C-STORE-RSP template is byte for byte what the general encoder sends, or declines."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiodicom.aio._response_templates import store_response_pdu
from aiodicom.aio.requests import Handlers
from aiodicom.aio.server import Server
from aiodicom.core.dimse import CStoreRQ, CStoreRSP, Status, encode_message, fragment_command
from aiodicom.core.negotiation import IMPLICIT_VR_LITTLE_ENDIAN, AcceptorPolicy, build_request
from aiodicom.core.pdu import PDataTF, PresentationDataValue, encode_pdu
from aiodicom.errors import DimseError

_COMPONENT = st.one_of(st.just("0"), st.from_regex(r"[1-9][0-9]{0,11}", fullmatch=True),
                       st.from_regex(r"0[0-9]{1,3}", fullmatch=True))  # leading zeros


@st.composite
def _uids(draw: st.DrawFn) -> str:
    """UIDs of every length up to 70, mostly valid, some not (empty components, stray
    characters, padding): the template must agree with the encoder either way."""
    parts = draw(st.lists(_COMPONENT, min_size=1, max_size=14))
    uid = ".".join(parts)[:draw(st.integers(1, 70))]
    if draw(st.integers(0, 4)) == 0:
        at = draw(st.integers(0, len(uid)))
        uid = uid[:at] + draw(st.sampled_from([".", "a", " ", "\0", "é", ".."])) + uid[at:]
    return uid


def _general(context_id: int, message_id: int, sop_class: str, instance: str, status: int,
             max_pdu: int) -> bytes:
    command = encode_message(CStoreRSP(
        message_id_being_responded_to=message_id, affected_sop_class_uid=sop_class,
        affected_sop_instance_uid=instance, status=Status(status)))
    return b"".join(bytes(part) for pdu in fragment_command(context_id, command, max_pdu)
                    for part in pdu)


@settings(max_examples=300, deadline=None)
@given(context_id=st.integers(0, 127).map(lambda n: 2 * n + 1),
       message_id=st.integers(0, 0xFFFF),
       sop_class=_uids(), instance=_uids(),
       status=st.one_of(st.sampled_from([0, 0xA700, 0xA900, 0xC000, 0x0107, 0x0110]),
                        st.integers(0, 0xFFFF)),
       max_pdu=st.sampled_from([0, 4096, 16384, 1 << 20]))
def test_template_equals_the_general_encoder(context_id: int, message_id: int, sop_class: str,
                                             instance: str, status: int, max_pdu: int) -> None:
    got = store_response_pdu(context_id, message_id, sop_class, instance, status, max_pdu)
    try:
        expected = _general(context_id, message_id, sop_class, instance, status, max_pdu)
    except DimseError:
        assert got is None  # the encoder refuses it: the caller's general path says why
        return
    assert got == expected


def test_declines_what_it_cannot_template() -> None:
    ct = "1.2.840.10008.5.1.4.1.1.2"
    ok = store_response_pdu(1, 7, ct, "1.2.3", 0, 0)
    assert ok == _general(1, 7, ct, "1.2.3", 0, 0)
    assert store_response_pdu(1, 7, ct, "1.02.3", 0, 0) == _general(1, 7, ct, "1.02.3", 0, 0)
    assert store_response_pdu(1, 7, ct, "1..3", 0, 0) is None
    assert store_response_pdu(1, 7, ct, "1.2.3\0", 0, 0) is None
    assert store_response_pdu(1, 7, ct + ".", "1.2.3", 0, 0) is None
    assert store_response_pdu(2, 7, ct, "1.2.3", 0, 0) is None  # context IDs are odd
    assert store_response_pdu(1, 0x10000, ct, "1.2.3", 0, 0) is None
    assert store_response_pdu(1, 7, ct, "1.2.3", 0x10000, 0) is None
    # a peer limit the command does not fit in one fragment: the general path fragments it
    assert store_response_pdu(1, 7, ct, "1.2.3", 0, 64) is None
    assert len(_general(1, 7, ct, "1.2.3", 0, 64)) > 64


# -- the wiring: a templated C-STORE-RSP keeps write flow control --------------------------

_CT = "1.2.840.10008.5.1.4.1.1.2"


class _Transport:
    """Keeps what the protocol writes; the test pauses and resumes writing itself."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closing = False

    def write(self, data: Any) -> None:
        self.written.append(bytes(data))

    def writelines(self, data: Any) -> None:
        self.written.extend(bytes(d) for d in data)

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def _feed(protocol: Any, data: bytes) -> None:
    view = memoryview(data)
    while view:
        target = protocol.get_buffer(len(view))
        n = min(len(target), len(view))
        target[:n] = view[:n]
        protocol.buffer_updated(n)
        view = view[n:]


def _store_pdus(message_id: int) -> bytes:
    instance = f"1.2.3.{message_id}"
    command = bytes(encode_message(CStoreRQ(
        message_id=message_id, affected_sop_class_uid=_CT,
        affected_sop_instance_uid=instance)))
    dataset = b"\x08\x00\x18\x00" + struct.pack("<I", 8) + b"1.2.3.1\0"
    return b"".join(
        encode_pdu(PDataTF(pdvs=(PresentationDataValue(
            context_id=1, is_command=is_command, is_last=True, data=value),)))
        for is_command, value in ((True, command), (False, dataset)))


@pytest.mark.parametrize("run", ["asyncio", "uvloop"], indirect=True)
def test_a_templated_store_response_waits_for_a_paused_transport(run: Any) -> None:
    # As send_message does: while the peer does not read (writing paused), the answered
    # store keeps its operations-window slot, so the next store is not taken on and what
    # the server buffers for a peer that never reads stays bounded (PS3.7 D.3.3.3 window).
    async def body() -> list[str]:
        stored: list[str] = []

        async def store(request: Any) -> Status:
            await request.data.discard()
            stored.append(request.command.affected_sop_instance_uid)
            return Status.SUCCESS

        policy = AcceptorPolicy(abstract_syntaxes={_CT: (IMPLICIT_VR_LITTLE_ENDIAN,)})
        server = Server(admission=policy, handlers=Handlers(store=store))
        transport = _Transport()
        protocol = server._factory()
        protocol.connection_made(transport)
        rq = build_request(called_ae="ANY", calling_ae="CT01",
                           contexts=[(_CT, [IMPLICIT_VR_LITTLE_ENDIAN])], max_pdu_length=16384)
        _feed(protocol, encode_pdu(rq))
        assert transport.written and transport.written[0][0] == 0x02  # A-ASSOCIATE-AC
        protocol.pause_writing()
        _feed(protocol, _store_pdus(1) + _store_pdus(3))
        for _ in range(50):
            await asyncio.sleep(0)
        during = list(stored)
        protocol.resume_writing()
        for _ in range(50):
            await asyncio.sleep(0)
        protocol.connection_lost(None)
        return during + ["|"] + stored

    assert run(body()) == ["1.2.3.1", "|", "1.2.3.1", "1.2.3.3"]
