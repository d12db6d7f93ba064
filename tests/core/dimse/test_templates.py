"""The C-ECHO-RSP template gives the same bytes as the general encoder, for any IDs."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from aiodicom.core.dimse import CEchoRSP, Status, encode_message, fragment_command
from aiodicom.core.dimse._templates import echo_response_pdu


@given(
    context_id=st.integers(min_value=0, max_value=127).map(lambda n: 2 * n + 1),
    message_id=st.integers(min_value=0, max_value=0xFFFF),
    sop=st.sampled_from(["1.2.840.10008.1.1", "1.2.3.4.5", "1.2.840.10008.1.1.1"]),
)
def test_template_matches_encoder(context_id: int, message_id: int, sop: str) -> None:
    command = encode_message(
        CEchoRSP(message_id_being_responded_to=message_id, affected_sop_class_uid=sop,
                 status=Status.SUCCESS)
    )
    (pdu,) = fragment_command(context_id, command, 0)
    assert echo_response_pdu(context_id, message_id, sop) == b"".join(bytes(p) for p in pdu)
