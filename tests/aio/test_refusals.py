"""Requests the server does not perform get the matching response type, never a crash."""

from __future__ import annotations

from typing import Any

from aiodicom.aio.server_association import _refusal
from aiodicom.core.dimse import (
    CCancelRQ,
    CFindRQ,
    CFindRSP,
    CStoreRQ,
    CStoreRSP,
    NActionRQ,
    NActionRSP,
    NEventReportRQ,
    NEventReportRSP,
    Status,
)

CT = "1.2.840.10008.5.1.4.1.1.2"
COMMIT = "1.2.840.10008.1.20.1"


def test_refusal_types() -> None:
    cases: list[tuple[Any, type]] = [
        (CFindRQ(message_id=3, affected_sop_class_uid=CT), CFindRSP),
        (CStoreRQ(message_id=4, affected_sop_class_uid=CT, affected_sop_instance_uid="1.2.3"),
         CStoreRSP),
        (NActionRQ(message_id=5, requested_sop_class_uid=COMMIT,
                   requested_sop_instance_uid="1.2.840.10008.1.20.1.1", action_type_id=1),
         NActionRSP),
        (NEventReportRQ(message_id=6, affected_sop_class_uid=COMMIT,
                        affected_sop_instance_uid="1.2.840.10008.1.20.1.1", event_type_id=1),
         NEventReportRSP),
    ]
    for request, expected in cases:
        response = _refusal(request, Status(0x0124))
        assert type(response) is expected
        assert response is not None
        assert response.message_id_being_responded_to == request.message_id
        assert response.status == 0x0124
        assert response.affected_sop_class_uid in (CT, COMMIT)


def test_cancel_has_no_response() -> None:
    assert _refusal(CCancelRQ(message_id_being_responded_to=3), Status(0x0211)) is None
