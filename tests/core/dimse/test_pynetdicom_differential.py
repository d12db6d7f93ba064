"""Differential tests against pynetdicom 3 and pydicom: their bytes decode with ours, and ours
decode with theirs, field by field (PS3.7 §6.3.1 command sets, PS3.8 Annex E fragments)."""

from __future__ import annotations

from io import BytesIO
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pynetdicom import dimse_messages as pnd
from pynetdicom.dimse_primitives import C_ECHO, C_FIND, C_MOVE, C_STORE, N_ACTION
from pynetdicom.dsutils import decode as pydicom_decode
from pynetdicom.dsutils import encode as pydicom_encode
from pynetdicom.pdu_primitives import P_DATA

from aiodicom.core.buffer import ReadableBuffer
from aiodicom.core.dimse import (
    COMMAND_ELEMENTS,
    FIELD_TAGS,
    CEchoRQ,
    CMoveRSP,
    CommandReceived,
    CStoreRQ,
    DatasetFragment,
    Message,
    MessageAssembler,
    NActionRQ,
    Status,
    encode_message,
    encode_message_pdus,
    message_name,
)
from aiodicom.core.pdu import PDataTF, PresentationDataValue
from tests.dimse_strategies import messages


def _pnd_class(msg: Message) -> type[Any]:
    cls: type[Any] = getattr(pnd, message_name(msg).replace("-", "_"))
    return cls


def _fields(msg: Message) -> dict[str, Any]:
    """keyword -> value of the command fields set on ``msg`` (what pydicom should see)."""
    out: dict[str, Any] = {}
    for name, tag in FIELD_TAGS.items():
        value = getattr(msg, name, None)
        if value is not None:
            out[COMMAND_ELEMENTS[tag][0]] = value
    return out


_AT_KEYWORDS = {"OffendingElement", "AttributeIdentifierList"}


def _normalise(keyword: str, value: Any) -> Any:
    if keyword in _AT_KEYWORDS:  # pydicom: a Tag for one value, a MultiValue for several
        return (int(value),) if isinstance(value, int) else tuple(int(v) for v in value)
    if isinstance(value, str):
        return value.strip(" \0")
    return int(value)


def _pnd_to_ours(pdatas: list[P_DATA]) -> list[Any]:
    assembler = MessageAssembler()
    events: list[Any] = []
    for pdata in pdatas:
        pdvs = tuple(
            PresentationDataValue(
                context_id=ctx,
                is_command=bool(raw[0] & 1),
                is_last=bool(raw[0] & 2),
                data=memoryview(raw)[1:],
            )
            for ctx, raw in pdata.presentation_data_value_list
        )
        events.extend(assembler.feed(PDataTF(pdvs=pdvs)))
    assert assembler.idle
    return events


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages(), st.sampled_from([0, 20, 21, 64, 16384]), st.binary(min_size=1, max_size=300))
def test_pynetdicom_encoded_decodes_with_ours(msg: Message, max_pdu: int, data: bytes) -> None:
    data += b"\0" * (len(data) % 2)  # pynetdicom sends no data PDV for an empty data set
    pnd_msg = _pnd_class(msg)()
    command_set = Dataset()
    for keyword, value in _fields(msg).items():
        setattr(command_set, keyword, list(value) if isinstance(value, tuple) else value)
    command_set.CommandField = type(msg).COMMAND_FIELD
    command_set.CommandDataSetType = 0x0001 if msg.has_dataset else 0x0101
    command_set.CommandGroupLength = 0
    pnd_msg.command_set = command_set
    pnd_msg._set_command_group_length()
    pnd_msg.data_set = BytesIO(data) if msg.has_dataset else None
    events = _pnd_to_ours(list(pnd_msg.encode_msg(7, max_pdu)))
    assert events[0] == CommandReceived(context_id=7, message=msg)
    received = b"".join(bytes(e.data) for e in events[1:] if isinstance(e, DatasetFragment))
    assert received == (data if msg.has_dataset else b"")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages())
def test_our_command_sets_decode_with_pydicom(msg: Message) -> None:
    raw = encode_message(msg)
    ds = pydicom_decode(BytesIO(raw), True, True)
    assert ds.CommandGroupLength == len(raw) - 12
    assert ds.CommandField == type(msg).COMMAND_FIELD
    assert (ds.CommandDataSetType != 0x0101) is msg.has_dataset
    theirs = {
        elem.keyword: _normalise(elem.keyword, elem.value)
        for elem in ds
        if elem.keyword not in ("CommandGroupLength", "CommandField", "CommandDataSetType")
    }
    ours = {keyword: _normalise(keyword, value) for keyword, value in _fields(msg).items()}
    assert theirs == ours
    # pydicom re-encodes the same bytes (same order, same padding).
    assert pydicom_encode(ds, True, True) == raw


def _pdus_to_pdata(pdus: list[list[ReadableBuffer]]) -> list[P_DATA]:
    out = []
    for header, *parts in pdus:
        pdata = P_DATA()
        raw = bytes(header[11:12]) + b"".join(bytes(p) for p in parts)
        pdata.presentation_data_value_list.append((header[10], raw))
        out.append(pdata)
    return out


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages(), st.sampled_from([0, 8, 30, 4096]), st.binary(min_size=2, max_size=300))
def test_our_pdus_decode_with_pynetdicom(msg: Message, max_pdu: int, data: bytes) -> None:
    data = data[: len(data) & ~1]
    dataset = data if msg.has_dataset else None
    pdus = list(encode_message_pdus(5, msg, dataset, max_pdu))
    pnd_msg = pnd.DIMSEMessage()
    done = [pnd_msg.decode_msg(pdata) for pdata in _pdus_to_pdata(pdus)]
    assert done[-1] is True and not any(done[:-1])
    assert type(pnd_msg) is _pnd_class(msg)
    assert pnd_msg.context_id == 5
    if msg.has_dataset:
        assert pnd_msg.data_set.getvalue() == data


def _their_pdata(primitive: Any, cls: type[Any], max_pdu: int) -> list[P_DATA]:
    msg = cls()
    msg.primitive_to_message(primitive)
    return list(msg.encode_msg(1, max_pdu))


def test_pynetdicom_primitives() -> None:
    """Messages built the way pynetdicom's own SCU/SCP builds them."""
    echo = C_ECHO()
    echo.MessageID = 12
    echo.AffectedSOPClassUID = "1.2.840.10008.1.1"
    (event,) = _pnd_to_ours(_their_pdata(echo, pnd.C_ECHO_RQ, 16384))
    assert event.message == CEchoRQ(message_id=12)

    dataset = Dataset()
    dataset.PatientName = "Test^Patient"
    dataset.SOPInstanceUID = "1.2.3.4"
    encoded = pydicom_encode(dataset, True, True)
    store = C_STORE()
    store.MessageID = 3
    store.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    store.AffectedSOPInstanceUID = "1.2.3.4"
    store.Priority = 2
    store.MoveOriginatorApplicationEntityTitle = "MOVER"
    store.MoveOriginatorMessageID = 99
    store.DataSet = BytesIO(encoded)
    events = _pnd_to_ours(_their_pdata(store, pnd.C_STORE_RQ, 32))
    assert events[0].message == CStoreRQ(
        message_id=3,
        affected_sop_class_uid="1.2.840.10008.5.1.4.1.1.7",
        affected_sop_instance_uid="1.2.3.4",
        priority=2,
        move_originator_ae_title="MOVER",
        move_originator_message_id=99,
    )
    assert b"".join(bytes(e.data) for e in events[1:]) == encoded
    assert all(len(e.data) <= 32 - 6 for e in events[1:])

    move = C_MOVE()
    move.MessageIDBeingRespondedTo = 8
    move.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.2.2.2"
    move.Status = 0xFF00
    move.NumberOfRemainingSuboperations = 4
    move.NumberOfCompletedSuboperations = 1
    move.NumberOfFailedSuboperations = 0
    move.NumberOfWarningSuboperations = 2
    (event,) = _pnd_to_ours(_their_pdata(move, pnd.C_MOVE_RSP, 0))
    assert event.message == CMoveRSP(
        message_id_being_responded_to=8,
        affected_sop_class_uid="1.2.840.10008.5.1.4.1.2.2.2",
        status=Status.PENDING,
        number_of_remaining_suboperations=4,
        number_of_completed_suboperations=1,
        number_of_failed_suboperations=0,
        number_of_warning_suboperations=2,
    )

    action = N_ACTION()
    action.MessageID = 5
    action.RequestedSOPClassUID = "1.2.840.10008.1.20.1"
    action.RequestedSOPInstanceUID = "1.2.840.10008.1.20.1.1"
    action.ActionTypeID = 1
    action.ActionInformation = BytesIO(encoded)
    events = _pnd_to_ours(_their_pdata(action, pnd.N_ACTION_RQ, 100))
    assert events[0].message == NActionRQ(
        message_id=5,
        requested_sop_class_uid="1.2.840.10008.1.20.1",
        requested_sop_instance_uid="1.2.840.10008.1.20.1.1",
        action_type_id=1,
        has_dataset=True,
    )


@pytest.mark.parametrize("status", [0x0000, 0xFF01, 0xA700, 0xC211])
def test_pynetdicom_find_response_status(status: int) -> None:
    find = C_FIND()
    find.MessageIDBeingRespondedTo = 1
    find.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.2.1.1"
    find.Status = status
    find.ErrorComment = "Nope" if status >= 0xA000 else None
    (event, *_rest) = _pnd_to_ours(_their_pdata(find, pnd.C_FIND_RSP, 16384))
    assert event.message.status == status
    assert event.message.status.category is Status(status).category
    assert event.message.error_comment == find.ErrorComment
