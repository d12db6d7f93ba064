"""Differential test of the PDU codec against pynetdicom 3's own PDU and item classes.

Both directions: our encoding decoded by pynetdicom gives the same fields (and pynetdicom
re-encodes it to the very same bytes); pynetdicom's encoding of the same values decodes with
ours to the value we started from.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings

pdu_mod = pytest.importorskip("pynetdicom.pdu")
items_mod = pytest.importorskip("pynetdicom.pdu_items")

from aiodicom.core.items import (  # noqa: E402
    PresentationContextAC,
    PresentationContextRQ,
    PresentationResult,
)
from aiodicom.core.pdu import (  # noqa: E402
    PDU,
    AAbort,
    AAssociateAC,
    AAssociateRJ,
    AAssociateRQ,
    AReleaseRP,
    AReleaseRQ,
    PDataTF,
    PresentationDataValue,
    decode_pdu_bytes,
    encode_pdu,
)
from aiodicom.core.user_items import (  # noqa: E402
    AsyncOperationsWindow,
    RoleSelection,
    SOPClassCommonExtendedNegotiation,
    SOPClassExtendedNegotiation,
    UserIdentityAC,
    UserIdentityRQ,
    UserIdentityType,
    UserInformation,
)
from tests.strategies import pdus  # noqa: E402

DIFF = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])

PYNETDICOM_CLASS = {
    1: pdu_mod.A_ASSOCIATE_RQ,
    2: pdu_mod.A_ASSOCIATE_AC,
    3: pdu_mod.A_ASSOCIATE_RJ,
    4: pdu_mod.P_DATA_TF,
    5: pdu_mod.A_RELEASE_RQ,
    6: pdu_mod.A_RELEASE_RP,
    7: pdu_mod.A_ABORT_RQ,
}


@pytest.fixture(autouse=True)
def _quiet_pynetdicom() -> Iterator[None]:
    logger = logging.getLogger("pynetdicom")
    level, propagate = logger.level, logger.propagate
    logger.setLevel(logging.CRITICAL + 1)
    logger.propagate = False
    yield
    logger.setLevel(level)
    logger.propagate = propagate


# -- pynetdicom -> our model -----------------------------------------------------------------


def _user_info_from(pyn: object) -> UserInformation:
    fields: dict[str, object] = {}
    roles: list[RoleSelection] = []
    ext: list[SOPClassExtendedNegotiation] = []
    common: list[SOPClassCommonExtendedNegotiation] = []
    for sub in pyn.user_data:  # type: ignore[attr-defined]
        if isinstance(sub, items_mod.MaximumLengthSubItem):
            fields["maximum_length"] = sub.maximum_length_received
        elif isinstance(sub, items_mod.ImplementationClassUIDSubItem):
            fields["implementation_class_uid"] = str(sub.implementation_class_uid)
        elif isinstance(sub, items_mod.ImplementationVersionNameSubItem):
            fields["implementation_version_name"] = sub.implementation_version_name
        elif isinstance(sub, items_mod.AsynchronousOperationsWindowSubItem):
            fields["async_operations_window"] = AsyncOperationsWindow(
                max_operations_invoked=sub.maximum_number_operations_invoked,
                max_operations_performed=sub.maximum_number_operations_performed,
            )
        elif isinstance(sub, items_mod.SCP_SCU_RoleSelectionSubItem):
            roles.append(
                RoleSelection(
                    sop_class_uid=str(sub.sop_class_uid),
                    scu_role=bool(sub.scu_role),
                    scp_role=bool(sub.scp_role),
                )
            )
        elif isinstance(sub, items_mod.SOPClassExtendedNegotiationSubItem):
            ext.append(
                SOPClassExtendedNegotiation(
                    sop_class_uid=str(sub.sop_class_uid),
                    application_information=sub.service_class_application_information or b"",
                )
            )
        elif isinstance(sub, items_mod.SOPClassCommonExtendedNegotiationSubItem):
            common.append(
                SOPClassCommonExtendedNegotiation(
                    sop_class_uid=str(sub.sop_class_uid),
                    service_class_uid=str(sub.service_class_uid),
                    related_general_sop_classes=tuple(
                        str(u) for u in sub.related_general_sop_class_identification
                    ),
                )
            )
        elif isinstance(sub, items_mod.UserIdentitySubItemRQ):
            fields["user_identity_rq"] = UserIdentityRQ(
                identity_type=UserIdentityType(sub.user_identity_type),
                positive_response_requested=bool(sub.positive_response_requested),
                primary_field=sub.primary_field,
                secondary_field=sub.secondary_field or b"",
            )
        elif isinstance(sub, items_mod.UserIdentitySubItemAC):
            fields["user_identity_ac"] = UserIdentityAC(server_response=sub.server_response)
        else:  # pragma: no cover - pynetdicom knows no other sub-item
            raise AssertionError(f"unexpected sub-item {sub!r}")
    return UserInformation(
        role_selections=tuple(roles),
        extended_negotiations=tuple(ext),
        common_extended_negotiations=tuple(common),
        **fields,  # type: ignore[arg-type]
    )


def _from_pynetdicom(pyn: object) -> PDU:
    """Our model of a PDU pynetdicom decoded, read field by field."""
    p: object = pyn
    if isinstance(p, pdu_mod.A_ASSOCIATE_RQ):
        return AAssociateRQ(
            called_ae_title=p.called_ae_title,
            calling_ae_title=p.calling_ae_title,
            presentation_contexts=tuple(
                PresentationContextRQ(
                    context_id=pc.context_id,
                    abstract_syntax=str(pc.abstract_syntax),
                    transfer_syntaxes=tuple(str(ts) for ts in pc.transfer_syntax),
                )
                for pc in p.presentation_context
            ),
            user_information=_user_info_from(p.user_information),
            application_context=str(p.application_context_name),
            protocol_version=p.protocol_version,
        )
    if isinstance(p, pdu_mod.A_ASSOCIATE_AC):
        return AAssociateAC(
            called_ae_title=p.reserved_aet,
            calling_ae_title=p.reserved_aec,
            presentation_contexts=tuple(
                PresentationContextAC(
                    context_id=pc.context_id,
                    result=PresentationResult(pc.result),
                    transfer_syntax=str(pc.transfer_syntax) if pc.transfer_syntax else None,
                )
                for pc in p.presentation_context
            ),
            user_information=_user_info_from(p.user_information),
            application_context=str(p.application_context_name),
            protocol_version=p.protocol_version,
        )
    if isinstance(p, pdu_mod.A_ASSOCIATE_RJ):
        return AAssociateRJ(result=p.result, source=p.source, reason=p.reason_diagnostic)
    if isinstance(p, pdu_mod.P_DATA_TF):
        return PDataTF(
            pdvs=tuple(
                PresentationDataValue(
                    context_id=item.presentation_context_id,
                    is_command=bool(item.presentation_data_value[0] & 1),
                    is_last=bool(item.presentation_data_value[0] & 2),
                    data=item.presentation_data_value[1:],
                )
                for item in p.presentation_data_value_items
            )
        )
    if isinstance(p, pdu_mod.A_RELEASE_RQ):
        return AReleaseRQ()
    if isinstance(p, pdu_mod.A_RELEASE_RP):
        return AReleaseRP()
    assert isinstance(p, pdu_mod.A_ABORT_RQ)
    return AAbort(source=p.source, reason=p.reason_diagnostic)


# -- our model -> pynetdicom items ------------------------------------------------------------


ABSTRACT = items_mod.AbstractSyntaxSubItem
TRANSFER = items_mod.TransferSyntaxSubItem
TS_NAME = "transfer_syntax_name"


def _uid_item(cls: type, attr: str, uid: str) -> object:
    item = cls()
    setattr(item, attr, uid)
    return item


def _user_info_to(ui: UserInformation) -> object:
    subs: list[object] = []
    if ui.maximum_length is not None:
        s = items_mod.MaximumLengthSubItem()
        s.maximum_length_received = ui.maximum_length
        subs.append(s)
    if ui.implementation_class_uid is not None:
        s = items_mod.ImplementationClassUIDSubItem()
        s.implementation_class_uid = ui.implementation_class_uid
        subs.append(s)
    if ui.async_operations_window is not None:
        s = items_mod.AsynchronousOperationsWindowSubItem()
        s.maximum_number_operations_invoked = ui.async_operations_window.max_operations_invoked
        s.maximum_number_operations_performed = (
            ui.async_operations_window.max_operations_performed
        )
        subs.append(s)
    for role in ui.role_selections:
        s = items_mod.SCP_SCU_RoleSelectionSubItem()
        s.sop_class_uid = role.sop_class_uid
        s.scu_role = int(role.scu_role)
        s.scp_role = int(role.scp_role)
        subs.append(s)
    if ui.implementation_version_name is not None:
        s = items_mod.ImplementationVersionNameSubItem()
        s.implementation_version_name = ui.implementation_version_name
        subs.append(s)
    for ext in ui.extended_negotiations:
        s = items_mod.SOPClassExtendedNegotiationSubItem()
        s.sop_class_uid = ext.sop_class_uid
        s.service_class_application_information = ext.application_information
        subs.append(s)
    for common in ui.common_extended_negotiations:
        s = items_mod.SOPClassCommonExtendedNegotiationSubItem()
        s.sop_class_uid = common.sop_class_uid
        s.service_class_uid = common.service_class_uid
        s.related_general_sop_class_identification = list(common.related_general_sop_classes)
        subs.append(s)
    if ui.user_identity_rq is not None:
        s = items_mod.UserIdentitySubItemRQ()
        s.user_identity_type = int(ui.user_identity_rq.identity_type)
        s.positive_response_requested = int(ui.user_identity_rq.positive_response_requested)
        s.primary_field = ui.user_identity_rq.primary_field
        s.secondary_field = ui.user_identity_rq.secondary_field
        subs.append(s)
    if ui.user_identity_ac is not None:
        s = items_mod.UserIdentitySubItemAC()
        s.server_response = ui.user_identity_ac.server_response
        subs.append(s)
    item = items_mod.UserInformationItem()
    item.user_data = subs
    return item


def _to_pynetdicom(value: PDU) -> object:
    """The same PDU built from pynetdicom's item classes, sub-items in ascending order."""
    if isinstance(value, AAssociateRQ | AAssociateAC):
        app = _uid_item(
            items_mod.ApplicationContextItem, "application_context_name", value.application_context
        )
        contexts: list[object] = []
        if isinstance(value, AAssociateRQ):
            pyn = pdu_mod.A_ASSOCIATE_RQ()
            pyn.called_ae_title = value.called_ae_title
            pyn.calling_ae_title = value.calling_ae_title
            for rq in value.presentation_contexts:
                pc = items_mod.PresentationContextItemRQ()
                pc.presentation_context_id = rq.context_id
                pc.abstract_transfer_syntax_sub_items = [
                    _uid_item(ABSTRACT, "abstract_syntax_name", rq.abstract_syntax),
                    *(_uid_item(TRANSFER, TS_NAME, ts) for ts in rq.transfer_syntaxes),
                ]
                contexts.append(pc)
        else:
            pyn = pdu_mod.A_ASSOCIATE_AC()
            pyn.reserved_aet = value.called_ae_title
            pyn.reserved_aec = value.calling_ae_title
            for ac in value.presentation_contexts:
                pc = items_mod.PresentationContextItemAC()
                pc.presentation_context_id = ac.context_id
                pc.result_reason = int(ac.result)
                # pynetdicom cannot encode an empty transfer syntax sub-item: it leaves it out
                pc.transfer_syntax_sub_item = (
                    []
                    if ac.transfer_syntax is None
                    else [_uid_item(TRANSFER, "transfer_syntax_name", ac.transfer_syntax)]
                )
                contexts.append(pc)
        pyn.protocol_version = value.protocol_version
        pyn.variable_items = [app, *contexts, _user_info_to(value.user_information)]
        return pyn
    if isinstance(value, AAssociateRJ):
        pyn = pdu_mod.A_ASSOCIATE_RJ()
        pyn.result, pyn.source, pyn.reason_diagnostic = value.result, value.source, value.reason
        return pyn
    if isinstance(value, PDataTF):
        pyn = pdu_mod.P_DATA_TF()
        for pdv in value.pdvs:
            item = items_mod.PresentationDataValueItem()
            item.presentation_context_id = pdv.context_id
            control = (1 if pdv.is_command else 0) | (2 if pdv.is_last else 0)
            item.presentation_data_value = bytes([control]) + bytes(pdv.data)
            pyn.presentation_data_value_items.append(item)
        return pyn
    if isinstance(value, AReleaseRQ):
        return pdu_mod.A_RELEASE_RQ()
    if isinstance(value, AReleaseRP):
        return pdu_mod.A_RELEASE_RP()
    assert isinstance(value, AAbort)
    pyn = pdu_mod.A_ABORT_RQ()
    pyn.source, pyn.reason_diagnostic = value.source, value.reason
    return pyn


# -- the differential properties --------------------------------------------------------------


def _has_empty_transfer_syntax(value: PDU) -> bool:
    """A rejected context without transfer syntax: we send an empty 0x40, pynetdicom none."""
    return isinstance(value, AAssociateAC) and any(
        pc.transfer_syntax is None for pc in value.presentation_contexts
    )


@DIFF
@given(pdus())
def test_pynetdicom_decodes_what_we_encode(value: PDU) -> None:
    data = encode_pdu(value)
    pyn = PYNETDICOM_CLASS[data[0]]()
    pyn.decode(data)
    assert _from_pynetdicom(pyn) == value
    if not _has_empty_transfer_syntax(value):  # pynetdicom cannot re-encode an empty one
        assert pyn.encode() == data  # pynetdicom keeps the decoded order: the very same bytes


@DIFF
@given(pdus())
def test_we_decode_what_pynetdicom_encodes(value: PDU) -> None:
    data = _to_pynetdicom(value).encode()  # type: ignore[attr-defined]
    assert decode_pdu_bytes(data) == value
    if not _has_empty_transfer_syntax(value):
        assert encode_pdu(value) == data  # the same sub-item order gives the same bytes
