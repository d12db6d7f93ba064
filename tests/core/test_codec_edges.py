"""Edge paths of the codecs: views of other formats, ignored and malformed elements."""

from __future__ import annotations

import array
import struct

import pytest

from aiodicom.core.dimse import CEchoRQ, decode_command_set, encode_message
from aiodicom.core.dimse.commands import encode_command_set
from aiodicom.core.pdu import AReleaseRQ, decode_pdu_bytes, encode_pdu
from aiodicom.errors import DimseError


def test_command_set_from_a_non_byte_view() -> None:
    raw = encode_message(CEchoRQ(message_id=7))
    words = array.array("H", raw)  # same bytes, item size 2
    assert decode_command_set(memoryview(words))[0x0110] == 7


def test_group_length_given_by_the_caller_is_recomputed() -> None:
    encoded = encode_command_set({0x0000: 999, 0x0100: 0x0030, 0x0110: 1, 0x0800: 0x0101})
    assert struct.unpack_from("<L", encoded, 8)[0] == len(encoded) - 12


def test_us_element_of_the_wrong_length() -> None:
    group = struct.pack("<HHL", 0, 0x1021, 4) + struct.pack("<L", 1)  # US with 4 bytes
    msg = struct.pack("<HHLL", 0, 0, 4, len(group)) + group
    with pytest.raises(DimseError, match="expected 2"):
        decode_command_set(msg)


def test_pdu_from_a_non_byte_view() -> None:
    raw = encode_pdu(AReleaseRQ())
    assert isinstance(decode_pdu_bytes(memoryview(array.array("H", raw))), AReleaseRQ)
