"""C-STORE-RSP as a patched template: the commonest response costs a copy, not an encode.

A C-STORE-RSP the server sends (PS3.7 §9.3.1.2: message ID answered, SOP class and
instance, status; no error details) differs from the next one of the same SOP class and
instance UID length only in the presentation context ID, the message ID, the status and
the instance UID's characters. The bytes of that shape are built once through the general
encoder (`encode_message`, `fragment_command`: implicit VR little endian, one PDV) and those
four fields are patched into a copy, so what goes on the wire is what the encoder makes
(tests/aio/test_response_templates.py holds them byte for byte equal). Anything else (a UID
the encoder would refuse, a PDU limit the command does not fit in one fragment of) returns
None: the caller encodes it the general way, which decides what is valid.
"""

from __future__ import annotations

import functools
import struct

from aiodicom.core.dimse import CStoreRSP, Status, encode_message, fragment_command
from aiodicom.core.dimse.fragments import fragment_length

__all__ = ["store_response_pdu"]

_U16 = struct.Struct("<H")
_CONTEXT_ID_OFFSET = 10  # P-DATA-TF header (6) + PDV item length (4)
_MESSAGE_ID_TAG = b"\x00\x00\x20\x01\x02\x00\x00\x00"  # (0000,0120) US, length 2
_STATUS_TAG = b"\x00\x00\x00\x09\x02\x00\x00\x00"  # (0000,0900) US, length 2
_INSTANCE_TAG = b"\x00\x00\x00\x10"  # (0000,1000) Affected SOP Instance UID, then UL length


def _encodable_uid(value: str) -> bool:
    """The encoder's rule for a UI value: 1-64 digits and dots, no empty component (leading
    zeros pass, as they do there); what fails it goes the general way and is refused there."""
    return (0 < len(value) <= 64 and value.isascii()
            and not value.encode("ascii").translate(None, b"0123456789.")
            and value[0] != "." and value[-1] != "." and ".." not in value)


@functools.lru_cache(maxsize=64)
def _template(sop_class_uid: str, instance_length: int) -> tuple[bytes, int, int, int]:
    """(PDU bytes, offset of the message ID, of the status, of the instance UID)."""
    placeholder = "1" * instance_length
    command = encode_message(CStoreRSP(
        message_id_being_responded_to=0, affected_sop_class_uid=sop_class_uid,
        affected_sop_instance_uid=placeholder, status=Status.SUCCESS))
    (pdu,) = fragment_command(1, command, 0)
    wire = b"".join(bytes(part) for part in pdu)
    message_id = wire.index(_MESSAGE_ID_TAG) + len(_MESSAGE_ID_TAG)
    status = wire.index(_STATUS_TAG) + len(_STATUS_TAG)
    instance = wire.index(_INSTANCE_TAG) + len(_INSTANCE_TAG) + 4
    return wire, message_id, status, instance


def store_response_pdu(
    context_id: int, message_id: int, sop_class_uid: str, sop_instance_uid: str,
    status: int, max_pdu_length: int,
) -> bytes | None:
    """The whole P-DATA-TF carrying this C-STORE-RSP, or None: encode it the general way.

    ``max_pdu_length`` is the peer's (0: no limit); the command must fit one fragment.
    """
    if not (_encodable_uid(sop_class_uid) and _encodable_uid(sop_instance_uid)
            and 0 <= message_id <= 0xFFFF and 0 <= status <= 0xFFFF
            and 1 <= context_id <= 255 and context_id & 1):
        return None
    wire, mid_at, status_at, uid_at = _template(sop_class_uid, len(sop_instance_uid))
    if max_pdu_length and fragment_length(max_pdu_length) < len(wire) - 12:
        return None
    pdu = bytearray(wire)
    pdu[_CONTEXT_ID_OFFSET] = context_id
    _U16.pack_into(pdu, mid_at, message_id)
    _U16.pack_into(pdu, status_at, status)
    pdu[uid_at:uid_at + len(sop_instance_uid)] = sop_instance_uid.encode("ascii")
    return bytes(pdu)
