"""The C-STORE-RSP template is byte for byte what the general encoder sends, or declines."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from aiodicom.aio._response_templates import store_response_pdu
from aiodicom.core.dimse import CStoreRSP, Status, encode_message, fragment_command
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
