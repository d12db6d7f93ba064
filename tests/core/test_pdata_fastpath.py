"""core/pdu.py P-DATA-TF decoding: the one-PDV shortcut agrees with the PDV loop on every body.

`_decode_pdata` takes a body holding exactly one valid PDV without its loop, and builds the
PDVs without their frozen ``__init__``. The reference below is the loop as it stood before
either (the general decoder): values, errors, offsets and reasons must all agree.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiodicom.core.pdu import PDataTF, PresentationDataValue, decode_pdu, encode_pdu
from aiodicom.errors import AbortReason, InvalidPDU

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _reference(body: bytes) -> PDataTF:
    view = memoryview(body)
    pdvs: list[PresentationDataValue] = []
    end, pos = len(view), 0
    while pos < end:
        at = 6 + pos
        if end - pos < 6:
            raise InvalidPDU(
                f"PDV item needs at least 6 bytes but only {end - pos} remain",
                offset=at,
                reason=AbortReason.INVALID_PDU_PARAMETER_VALUE,
            )
        length, cid, control = struct.unpack_from(">LBB", view, pos)
        if length < 2 or length > end - pos - 4:
            raise InvalidPDU(
                f"PDV item length {length} is not within 2..{end - pos - 4}",
                offset=at,
                reason=AbortReason.INVALID_PDU_PARAMETER_VALUE,
            )
        if not cid & 1:
            raise InvalidPDU(
                f"PDV context ID {cid} is not odd",
                offset=at + 4,
                reason=AbortReason.INVALID_PDU_PARAMETER_VALUE,
            )
        pdvs.append(
            PresentationDataValue(
                context_id=cid,
                is_command=bool(control & 1),
                is_last=bool(control & 2),
                data=view[pos + 6 : pos + 4 + length],
            )
        )
        pos += 4 + length
    if not pdvs:
        raise InvalidPDU(
            "P-DATA-TF carries no PDV item", offset=2, reason=AbortReason.UNEXPECTED_PDU_PARAMETER
        )
    return PDataTF(pdvs=tuple(pdvs))


def _outcome(decode: Callable[[bytes], object], body: bytes) -> tuple[Any, ...]:
    try:
        result = decode(body)
    except InvalidPDU as exc:
        return ("refused", str(exc), exc.offset, exc.reason)
    assert isinstance(result, PDataTF)
    rows = [(type(p), p.context_id, p.is_command, p.is_last, bytes(p.data)) for p in result.pdvs]
    return ("pdata", rows, result)


@st.composite
def _pdv_bodies(draw: st.DrawFn) -> bytes:
    parts = []
    for _ in range(draw(st.integers(1, 3))):
        value = draw(st.binary(max_size=40))
        length = len(value) + 2 + draw(st.sampled_from([0, 0, 0, 0, 1, -1, -2, -3, 1000]))
        cid = draw(st.sampled_from([1, 3, 255, 0, 2]))
        control = draw(st.integers(0, 255))
        parts.append(struct.pack(">LBB", max(length, 0), cid, control) + value)
    body = b"".join(parts)
    cut = draw(st.sampled_from([None, None, None, 0, 1, 5, 6, 7]))
    return body if cut is None else body[:cut]


@FAST
@given(st.one_of(_pdv_bodies(), st.binary(max_size=30)))
def test_pdata_decode_agrees_with_the_pdv_loop(body: bytes) -> None:
    fast = _outcome(lambda b: decode_pdu(0x04, b), body)
    ref = _outcome(_reference, body)
    if fast[0] == "pdata":
        assert ref[0] == "pdata"
        assert fast[1] == ref[1]
        assert fast[2] == ref[2]  # dataclass equality: same class, same fields
        assert all(type(p.is_command) is bool for p in fast[2].pdvs)
    else:
        assert fast == ref


def test_pdvs_built_without_init_are_ordinary_frozen_dataclasses() -> None:
    pdu = decode_pdu(0x04, b"\x00\x00\x00\x04\x05\x03\xab\xcd")
    assert isinstance(pdu, PDataTF) and type(pdu) is PDataTF
    (pdv,) = pdu.pdvs
    assert type(pdv) is PresentationDataValue
    got = (pdv.context_id, pdv.is_command, pdv.is_last, bytes(pdv.data))
    assert got == (5, True, True, b"\xab\xcd")
    assert pdv.is_command is True and pdv.is_last is True  # bools, not ints
    assert pdv == PresentationDataValue(context_id=5, is_command=True, is_last=True,
                                        data=b"\xab\xcd")
    with pytest.raises(dataclasses.FrozenInstanceError):
        pdv.context_id = 7  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        pdu.pdvs = ()  # type: ignore[misc]
    assert "context_id=5" in repr(pdv)
    assert encode_pdu(pdu)[6:] == b"\x00\x00\x00\x04\x05\x03\xab\xcd"
