"""Precomputed wire bytes for the commonest response, so C-ECHO costs a patch, not an encode.

A C-ECHO-RSP PDU differs from another only in its presentation context ID and the message
ID it answers (PS3.7 §9.3.5.2): the bytes are built once per SOP class through the normal
encoder and fragmenter, and those two fields are patched into a copy.
"""

from __future__ import annotations

import functools
import struct

from aiodicom.core.dimse.fragments import fragment_command
from aiodicom.core.dimse.messages import CEchoRSP, encode_message
from aiodicom.core.dimse.status import Status

__all__ = ["echo_response_pdu"]

_U16 = struct.Struct("<H")
_MESSAGE_ID_TAG = b"\x00\x00\x20\x01\x02\x00\x00\x00"  # (0000,0120) US, length 2
_CONTEXT_ID_OFFSET = 10  # P-DATA header (6) + PDV item length (4)


@functools.lru_cache(maxsize=16)
def _echo_template(sop_class_uid: str) -> tuple[bytes, int]:
    command = encode_message(
        CEchoRSP(message_id_being_responded_to=0, affected_sop_class_uid=sop_class_uid,
                 status=Status.SUCCESS)
    )
    (pdu,) = fragment_command(1, command, 0)
    wire = b"".join(bytes(part) for part in pdu)
    offset = wire.index(_MESSAGE_ID_TAG) + len(_MESSAGE_ID_TAG)
    return wire, offset


def echo_response_pdu(context_id: int, message_id: int, sop_class_uid: str) -> bytes:
    """The whole P-DATA-TF carrying a successful C-ECHO-RSP, ready for the transport."""
    wire, offset = _echo_template(sop_class_uid)
    pdu = bytearray(wire)
    pdu[_CONTEXT_ID_OFFSET] = context_id
    _U16.pack_into(pdu, offset, message_id)
    return bytes(pdu)
