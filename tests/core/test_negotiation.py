"""Association negotiation (PS3.8 §9.3.2-9.3.4, PS3.7 D.3.3): acceptor, requestor, agreement."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiodicom.core.items import (
    APPLICATION_CONTEXT_NAME,
    PresentationContextAC,
    PresentationContextRQ,
    PresentationResult,
)
from aiodicom.core.negotiation import (
    DEFAULT_MAX_PDU_LENGTH,
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    IMPLICIT_VR_LITTLE_ENDIAN,
    JPEG_2000_LOSSLESS,
    JPEG_BASELINE_8BIT,
    VERIFICATION_SOP_CLASS,
    AcceptorPolicy,
    NegotiatedAssociation,
    RoleSupport,
    build_request,
    conclude_as_acceptor,
    conclude_as_requestor,
    find_context,
    negotiate_as_acceptor,
    reject,
    reject_called_ae_not_recognized,
    reject_calling_ae_not_recognized,
    reject_local_limit_exceeded,
    reject_no_reason,
    reject_temporary_congestion,
)
from aiodicom.core.pdu import AAssociateAC, AAssociateRJ, AAssociateRQ
from aiodicom.core.uids import is_valid_uid
from aiodicom.core.user_items import (
    AsyncOperationsWindow,
    RoleSelection,
    SOPClassCommonExtendedNegotiation,
    SOPClassExtendedNegotiation,
    UserIdentityAC,
    UserIdentityRQ,
    UserIdentityType,
    UserInformation,
)
from aiodicom.errors import (
    AbortReason,
    AssociationRejected,
    ConfigurationError,
    LocalProtocolError,
    NoPresentationContext,
    RejectResult,
    RejectSource,
    RemoteProtocolError,
)

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
SC = "1.2.840.10008.5.1.4.1.1.7"
PRIVATE = "1.2.3.4.5"
LE = (EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN)


def _policy(**kw: Any) -> AcceptorPolicy:
    kw.setdefault("abstract_syntaxes", {VERIFICATION_SOP_CLASS: LE, CT: LE})
    return AcceptorPolicy(**kw)


def _request(**kw: Any) -> AAssociateRQ:
    kw.setdefault("called_ae", "STORESCP")
    kw.setdefault("calling_ae", "STORESCU")
    kw.setdefault("contexts", [(VERIFICATION_SOP_CLASS, [IMPLICIT_VR_LITTLE_ENDIAN])])
    return build_request(**kw)


def _accept(rq: AAssociateRQ, policy: AcceptorPolicy | None = None, **kw: Any) -> AAssociateAC:
    answer = negotiate_as_acceptor(rq, policy or _policy(), **kw)
    assert isinstance(answer, AAssociateAC), answer
    return answer


def _rj(answer: AAssociateAC | AAssociateRJ) -> tuple[int, int, int]:
    assert isinstance(answer, AAssociateRJ), answer
    return (answer.result, answer.source, answer.reason)


def _both(
    rq: AAssociateRQ, policy: AcceptorPolicy | None = None, **kw: Any
) -> tuple[AAssociateAC, NegotiatedAssociation, NegotiatedAssociation]:
    ac = _accept(rq, policy, **kw)
    return ac, conclude_as_requestor(rq, ac), conclude_as_acceptor(rq, ac)


# --- constants -----------------------------------------------------------------------------


def test_implementation_identity_is_a_uuid_derived_uid() -> None:
    assert IMPLEMENTATION_CLASS_UID.startswith("2.25.")
    assert is_valid_uid(IMPLEMENTATION_CLASS_UID)
    assert int(IMPLEMENTATION_CLASS_UID[5:]) < 2**128
    assert IMPLEMENTATION_VERSION_NAME == "AIODICOM_010"
    assert DEFAULT_MAX_PDU_LENGTH == 1024 * 1024


# --- rejection -----------------------------------------------------------------------------


@pytest.mark.parametrize("version", [0, 2, 0x8000])
def test_protocol_version_bit0_unset_is_rejected_by_acse(version: int) -> None:
    rq = dataclasses.replace(_request(), protocol_version=version)
    assert _rj(negotiate_as_acceptor(rq, _policy())) == (1, 2, 2)


def test_protocol_version_other_bits_are_not_tested() -> None:
    rq = dataclasses.replace(_request(), protocol_version=0x0003)
    _accept(rq)


def test_unknown_application_context_is_rejected_by_user() -> None:
    rq = dataclasses.replace(_request(), application_context="1.2.3.4")
    assert _rj(negotiate_as_acceptor(rq, _policy())) == (1, 1, 2)


def test_application_context_padding_is_tolerated() -> None:
    _accept(dataclasses.replace(_request(), application_context=APPLICATION_CONTEXT_NAME + "\0"))


def test_called_ae_mismatch_is_rejected_reason_7() -> None:
    answer = negotiate_as_acceptor(_request(called_ae="OTHER"), _policy(ae_title="STORESCP"))
    assert _rj(answer) == (1, 1, 7)
    assert "called AE title not recognized" in str(AssociationRejected(*_rj(answer)))


@pytest.mark.parametrize("ours", [None, "", "   "])
def test_no_ae_title_accepts_any_called_ae(ours: str | None) -> None:
    _accept(_request(called_ae="ANYTHING"), _policy(ae_title=ours))


def test_called_ae_compare_ignores_padding() -> None:
    rq = dataclasses.replace(_request(), called_ae_title="STORESCP  ")
    _accept(rq, _policy(ae_title=" STORESCP"))


def test_calling_ae_not_known_is_rejected_reason_3() -> None:
    policy = _policy(calling_ae_titles=frozenset({"MODALITY1 "}))
    assert _rj(negotiate_as_acceptor(_request(calling_ae="INTRUDER"), policy)) == (1, 1, 3)
    _accept(_request(calling_ae="MODALITY1"), policy)


def test_refused_identity_is_a_permanent_user_rejection_no_reason() -> None:
    assert _rj(negotiate_as_acceptor(_request(), _policy(), identity_accepted=False)) == (1, 1, 1)


def test_checks_run_in_order_version_then_context_then_ae_then_identity() -> None:
    rq = dataclasses.replace(
        _request(called_ae="OTHER"), protocol_version=2, application_context="1.2.3"
    )
    policy = _policy(ae_title="ME")
    assert _rj(negotiate_as_acceptor(rq, policy, identity_accepted=False)) == (1, 2, 2)
    rq = dataclasses.replace(rq, protocol_version=1)
    assert _rj(negotiate_as_acceptor(rq, policy, identity_accepted=False)) == (1, 1, 2)
    rq = dataclasses.replace(rq, application_context=APPLICATION_CONTEXT_NAME)
    assert _rj(negotiate_as_acceptor(rq, policy, identity_accepted=False)) == (1, 1, 7)


def test_named_rejections() -> None:
    assert _rj(reject_called_ae_not_recognized()) == (1, 1, 7)
    assert _rj(reject_calling_ae_not_recognized()) == (1, 1, 3)
    assert _rj(reject_no_reason()) == (1, 1, 1)
    assert _rj(reject_temporary_congestion()) == (2, 3, 1)
    assert _rj(reject_local_limit_exceeded()) == (2, 3, 2)
    assert "temporary congestion" in str(AssociationRejected(*_rj(reject_temporary_congestion())))


def test_reject_refuses_triples_table_9_21_does_not_define() -> None:
    assert _rj(reject(RejectResult.TRANSIENT, RejectSource.SERVICE_PROVIDER_ACSE, 1)) == (2, 2, 1)
    with pytest.raises(LocalProtocolError, match="not defined"):
        reject(RejectResult.PERMANENT, RejectSource.SERVICE_USER, 4)
    with pytest.raises(LocalProtocolError):
        reject(RejectResult.PERMANENT, RejectSource.SERVICE_PROVIDER_PRESENTATION, 0)
    with pytest.raises(ValueError):
        reject(3, RejectSource.SERVICE_USER, 1)  # type: ignore[arg-type]


# --- malformed requests: A-ABORT, not negotiation -------------------------------------------


def _raw_rq(*ids: int) -> AAssociateRQ:
    contexts = tuple(
        PresentationContextRQ(
            context_id=i, abstract_syntax=CT, transfer_syntaxes=(IMPLICIT_VR_LITTLE_ENDIAN,)
        )
        for i in ids
    )
    return dataclasses.replace(_request(), presentation_contexts=contexts)


@pytest.mark.parametrize(
    ("ids", "match"),
    [((), "no presentation context"), ((2,), "odd"), ((0,), "odd"), ((257,), "odd"),
     ((1, 3, 1), "twice")],
)
def test_bad_context_ids_raise_remote_protocol_error(ids: tuple[int, ...], match: str) -> None:
    with pytest.raises(RemoteProtocolError, match=match) as info:
        negotiate_as_acceptor(_raw_rq(*ids), _policy())
    assert info.value.reason == AbortReason.INVALID_PDU_PARAMETER_VALUE


def test_max_context_id_255_is_fine() -> None:
    ac = _accept(_raw_rq(1, 255))
    assert [c.context_id for c in ac.presentation_contexts] == [1, 255]


# --- presentation contexts -----------------------------------------------------------------


def _results(ac: AAssociateAC) -> list[tuple[int, PresentationResult, str | None]]:
    return [(c.context_id, c.result, c.transfer_syntax) for c in ac.presentation_contexts]


def test_our_transfer_syntax_preference_wins() -> None:
    rq = _request(contexts=[(CT, LE[::-1]), (CT, [IMPLICIT_VR_LITTLE_ENDIAN, JPEG_BASELINE_8BIT])])
    assert _results(_accept(rq)) == [
        (1, PresentationResult.ACCEPTANCE, EXPLICIT_VR_LITTLE_ENDIAN),
        (3, PresentationResult.ACCEPTANCE, IMPLICIT_VR_LITTLE_ENDIAN),
    ]


def test_result_codes_3_and_4_echo_the_first_offered_syntax() -> None:
    rq = _request(
        contexts=[
            (MR, [EXPLICIT_VR_LITTLE_ENDIAN]),
            (CT, [JPEG_BASELINE_8BIT, JPEG_2000_LOSSLESS]),
            (VERIFICATION_SOP_CLASS, [IMPLICIT_VR_LITTLE_ENDIAN]),
        ]
    )
    assert _results(_accept(rq)) == [
        (1, PresentationResult.ABSTRACT_SYNTAX_NOT_SUPPORTED, EXPLICIT_VR_LITTLE_ENDIAN),
        (3, PresentationResult.TRANSFER_SYNTAXES_NOT_SUPPORTED, JPEG_BASELINE_8BIT),
        (5, PresentationResult.ACCEPTANCE, IMPLICIT_VR_LITTLE_ENDIAN),
    ]


def test_accept_any_abstract_syntax_uses_default_list_but_explicit_entries_win() -> None:
    policy = _policy(
        abstract_syntaxes={CT: (JPEG_BASELINE_8BIT,)},
        accept_any_abstract_syntax=True,
        default_transfer_syntaxes=(JPEG_2000_LOSSLESS, IMPLICIT_VR_LITTLE_ENDIAN),
    )
    offered = [IMPLICIT_VR_LITTLE_ENDIAN, JPEG_2000_LOSSLESS, JPEG_BASELINE_8BIT]
    rq = _request(contexts=[(PRIVATE, offered), (CT, offered), (MR, [EXPLICIT_VR_BIG_ENDIAN])])
    assert _results(_accept(rq, policy)) == [
        (1, PresentationResult.ACCEPTANCE, JPEG_2000_LOSSLESS),
        (3, PresentationResult.ACCEPTANCE, JPEG_BASELINE_8BIT),
        (5, PresentationResult.TRANSFER_SYNTAXES_NOT_SUPPORTED, EXPLICIT_VR_BIG_ENDIAN),
    ]


def test_all_contexts_rejected_is_still_an_ac() -> None:
    _, req, acc = _both(_request(contexts=[(MR, [IMPLICIT_VR_LITTLE_ENDIAN])]))
    assert req.contexts == {} and acc.contexts == {}
    assert req.rejected_contexts[1].result == PresentationResult.ABSTRACT_SYNTAX_NOT_SUPPORTED


def test_empty_transfer_syntax_list_from_peer_is_result_4() -> None:
    rq = dataclasses.replace(
        _request(),
        presentation_contexts=(
            PresentationContextRQ(context_id=1, abstract_syntax=CT, transfer_syntaxes=()),
        ),
    )
    assert _results(_accept(rq)) == [(1, PresentationResult.TRANSFER_SYNTAXES_NOT_SUPPORTED, None)]


def test_ac_echoes_ae_titles_and_carries_our_identity() -> None:
    rq = dataclasses.replace(_request(), called_ae_title="STORESCP", calling_ae_title="MOD 1")
    ac, req, acc = _both(rq)
    assert (ac.called_ae_title, ac.calling_ae_title) == ("STORESCP", "MOD 1")
    ui = ac.user_information
    assert ui.implementation_class_uid == IMPLEMENTATION_CLASS_UID
    assert ui.implementation_version_name == IMPLEMENTATION_VERSION_NAME
    assert req.peer_implementation_class_uid == IMPLEMENTATION_CLASS_UID
    assert acc.peer_implementation_class_uid == IMPLEMENTATION_CLASS_UID  # we built the RQ too
    assert (req.local_ae_title, req.peer_ae_title) == ("MOD 1", "STORESCP")
    with pytest.raises(TypeError):
        req.contexts[99] = req.contexts[1]  # type: ignore[index]
    assert (acc.local_ae_title, acc.peer_ae_title) == ("STORESCP", "MOD 1")


# --- maximum length ------------------------------------------------------------------------


@pytest.mark.parametrize(("theirs", "ours"), [(0, 0), (0, 16384), (16384, 0), (4096, 1 << 20)])
def test_max_pdu_length_each_side_fragments_to_the_peer(theirs: int, ours: int) -> None:
    ac, req, acc = _both(_request(max_pdu_length=theirs), _policy(max_pdu_length=ours))
    assert ac.user_information.maximum_length == ours
    assert (req.our_max_pdu_length, req.peer_max_pdu_length) == (theirs, ours)
    assert (acc.our_max_pdu_length, acc.peer_max_pdu_length) == (ours, theirs)


def test_missing_maximum_length_counts_as_no_limit() -> None:
    rq = _request()
    ac = _accept(rq)
    ac = dataclasses.replace(ac, user_information=UserInformation())
    assert conclude_as_requestor(rq, ac).peer_max_pdu_length == 0


# --- asynchronous operations window --------------------------------------------------------


@pytest.mark.parametrize(
    ("proposed", "ours", "answer"),
    [
        ((1, 1), (1, 1), (1, 1)),
        ((5, 3), (2, 10), (2, 5)),
        ((0, 0), (1, 4), (1, 4)),  # the peer's "unlimited" never makes ours unbounded
        ((0, 7), (3, 2), (3, 2)),
        ((9, 0), (1, 16), (1, 9)),
    ],
)
def test_async_window(
    proposed: tuple[int, int], ours: tuple[int, int], answer: tuple[int, int]
) -> None:
    rq = dataclasses.replace(
        _request(),
        user_information=dataclasses.replace(
            _request().user_information,
            async_operations_window=AsyncOperationsWindow(
                max_operations_invoked=proposed[0], max_operations_performed=proposed[1]
            ),
        ),
    )
    policy = _policy(max_operations_invoked=ours[0], max_operations_performed=ours[1])
    ac, req, acc = _both(rq, policy)
    window = ac.user_information.async_operations_window
    assert window == AsyncOperationsWindow(
        max_operations_invoked=answer[0], max_operations_performed=answer[1]
    )
    assert (acc.max_operations_invoked, acc.max_operations_performed) == answer
    assert (req.max_operations_invoked, req.max_operations_performed) == answer[::-1]
    assert 1 <= acc.max_operations_performed <= ours[1]


def test_no_window_proposed_means_none_returned_and_synchronous() -> None:
    ac, req, acc = _both(_request(), _policy(max_operations_performed=8))
    assert ac.user_information.async_operations_window is None
    assert (req.max_operations_invoked, req.max_operations_performed) == (1, 1)
    assert (acc.max_operations_invoked, acc.max_operations_performed) == (1, 1)


def test_requestor_keeps_its_bound_when_a_peer_answers_zero() -> None:
    rq = _request(async_ops=(4, 2))
    ac = dataclasses.replace(
        _accept(rq),
        user_information=UserInformation(
            maximum_length=0,
            async_operations_window=AsyncOperationsWindow(
                max_operations_invoked=0, max_operations_performed=0
            ),
        ),
    )
    req = conclude_as_requestor(rq, ac)
    assert (req.max_operations_invoked, req.max_operations_performed) == (4, 2)


@pytest.mark.parametrize("ops", [(0, 1), (1, 0), (1, 65536), (-1, 1)])
def test_build_request_refuses_unbounded_or_out_of_range_window(ops: tuple[int, int]) -> None:
    with pytest.raises(ConfigurationError, match="async_ops"):
        _request(async_ops=ops)


@pytest.mark.parametrize("field", ["max_operations_invoked", "max_operations_performed"])
def test_policy_window_must_be_bounded(field: str) -> None:
    with pytest.raises(ConfigurationError, match=field):
        kwargs: dict[str, Any] = {field: 0}
        AcceptorPolicy(**kwargs)


# --- role selection ------------------------------------------------------------------------

BOOLS = [False, True]


@pytest.mark.parametrize("p_scu", BOOLS)
@pytest.mark.parametrize("p_scp", BOOLS)
@pytest.mark.parametrize("s_scu", BOOLS)
@pytest.mark.parametrize("s_scp", BOOLS)
def test_role_selection_matrix(p_scu: bool, p_scp: bool, s_scu: bool, s_scp: bool) -> None:
    rq = _request(
        contexts=[(CT, [IMPLICIT_VR_LITTLE_ENDIAN])],
        role_selections=[RoleSelection(sop_class_uid=CT, scu_role=p_scu, scp_role=p_scp)],
    )
    policy = _policy(role_selection={CT: RoleSupport(requestor_scu=s_scu, requestor_scp=s_scp)})
    ac, req, acc = _both(rq, policy)
    scu, scp = p_scu and s_scu, p_scp and s_scp  # never 1 unless proposed (D.3.3.4)
    assert ac.user_information.role_selections == (
        RoleSelection(sop_class_uid=CT, scu_role=scu, scp_role=scp),
    )
    if not (scu or scp):
        assert ac.presentation_contexts[0].result == PresentationResult.USER_REJECTION
        assert req.contexts == {} and acc.contexts == {}
        return
    assert (req.contexts[1].scu_role, req.contexts[1].scp_role) == (scu, scp)
    assert (acc.contexts[1].scu_role, acc.contexts[1].scp_role) == (scp, scu)


@pytest.mark.parametrize(("p_scu", "p_scp"), [(True, False), (False, True), (True, True)])
def test_role_proposal_without_policy_entry_gets_default_roles_only(
    p_scu: bool, p_scp: bool
) -> None:
    rq = _request(
        contexts=[(CT, [IMPLICIT_VR_LITTLE_ENDIAN])],
        role_selections=[RoleSelection(sop_class_uid=CT, scu_role=p_scu, scp_role=p_scp)],
    )
    ac = _accept(rq)
    reply = ac.user_information.role_selections[0]
    assert (reply.scu_role, reply.scp_role) == (p_scu, False)


def test_no_role_item_means_no_reply_and_default_roles() -> None:
    policy = _policy(role_selection={CT: RoleSupport(requestor_scu=True, requestor_scp=True)})
    ac, req, acc = _both(_request(contexts=[(CT, [IMPLICIT_VR_LITTLE_ENDIAN])]), policy)
    assert ac.user_information.role_selections == ()
    assert (req.contexts[1].scu_role, req.contexts[1].scp_role) == (True, False)
    assert (acc.contexts[1].scu_role, acc.contexts[1].scp_role) == (False, True)


def test_every_role_item_gets_one_reply_even_if_repeated_or_unproposed() -> None:
    rq = dataclasses.replace(
        _request(),
        user_information=dataclasses.replace(
            _request().user_information,
            role_selections=(
                RoleSelection(sop_class_uid=MR, scu_role=True, scp_role=True),
                RoleSelection(sop_class_uid=MR, scu_role=False, scp_role=True),
                RoleSelection(sop_class_uid=CT, scu_role=False, scp_role=True),
            ),
        ),
    )
    policy = _policy(role_selection={MR: RoleSupport(requestor_scu=True, requestor_scp=True)})
    assert _accept(rq, policy).user_information.role_selections == (
        RoleSelection(sop_class_uid=MR, scu_role=True, scp_role=True),
        RoleSelection(sop_class_uid=CT, scu_role=False, scp_role=False),
    )


def test_requestor_ignores_roles_it_did_not_propose_and_defaults_without_reply() -> None:
    rq = _request(
        contexts=[(CT, [IMPLICIT_VR_LITTLE_ENDIAN]), (MR, [IMPLICIT_VR_LITTLE_ENDIAN])],
        role_selections=[
            RoleSelection(sop_class_uid=CT, scu_role=False, scp_role=True),
            RoleSelection(sop_class_uid=MR, scu_role=False, scp_role=True),
        ],
    )
    accepted = tuple(
        PresentationContextAC(
            context_id=i, result=PresentationResult.ACCEPTANCE,
            transfer_syntax=IMPLICIT_VR_LITTLE_ENDIAN,
        )
        for i in (1, 3)
    )
    ac = AAssociateAC(
        called_ae_title="X",
        calling_ae_title="Y",
        presentation_contexts=accepted,
        user_information=UserInformation(
            maximum_length=0,
            role_selections=(RoleSelection(sop_class_uid=CT, scu_role=True, scp_role=True),),
        ),
    )
    req = conclude_as_requestor(rq, ac)
    assert (req.contexts[1].scu_role, req.contexts[1].scp_role) == (False, True)
    assert (req.contexts[3].scu_role, req.contexts[3].scp_role) == (True, False)  # no reply


# --- extended negotiation and user identity ------------------------------------------------


def test_extended_negotiation_answers_only_known_and_requested_classes() -> None:
    rq = _request(
        contexts=[(CT, LE), (MR, LE)],
        extended_negotiations=[
            SOPClassExtendedNegotiation(sop_class_uid=CT, application_information=b"\x01"),
            SOPClassExtendedNegotiation(sop_class_uid=MR, application_information=b"\x01\x01"),
        ],
    )
    policy = _policy(extended_negotiation={CT: b"\x00", SC: b"\x01"})
    ac, req, acc = _both(rq, policy)
    assert ac.user_information.extended_negotiations == (
        SOPClassExtendedNegotiation(sop_class_uid=CT, application_information=b"\x00"),
    )
    for side in (req, acc):
        assert side.extended_negotiation == {CT: b"\x00"}
        assert side.requested_extended_negotiation == {CT: b"\x01", MR: b"\x01\x01"}


def test_requestor_drops_extended_answers_it_did_not_ask_for() -> None:
    rq = _request()
    ac = _accept(rq)
    extra = (SOPClassExtendedNegotiation(sop_class_uid=CT, application_information=b"\x01"),)
    ac = dataclasses.replace(
        ac,
        user_information=dataclasses.replace(ac.user_information, extended_negotiations=extra),
    )
    assert conclude_as_requestor(rq, ac).extended_negotiation == {}


def test_common_extended_negotiation_has_no_response_item() -> None:
    item = SOPClassCommonExtendedNegotiation(
        sop_class_uid=CT, service_class_uid="1.2.840.10008.4.2", related_general_sop_classes=(SC,)
    )
    ac, req, acc = _both(_request(common_extended_negotiations=[item]))
    assert ac.user_information.common_extended_negotiations == ()
    assert req.common_extended_negotiation == acc.common_extended_negotiation == (item,)


@pytest.mark.parametrize("positive", BOOLS)
@pytest.mark.parametrize("response", [None, b"", b"kerberos-ticket"])
def test_user_identity_response(positive: bool, response: bytes | None) -> None:
    identity = UserIdentityRQ(
        identity_type=UserIdentityType.USERNAME_AND_PASSCODE,
        positive_response_requested=positive,
        primary_field=b"alice",
        secondary_field=b"secret",
    )
    ac, req, acc = _both(_request(user_identity=identity), identity_response=response)
    expected = response if positive else None
    assert ac.user_information.user_identity_ac == (
        None if expected is None else UserIdentityAC(server_response=expected)
    )
    assert req.user_identity_response == acc.user_identity_response == expected
    assert acc.user_identity == identity


def test_identity_response_without_identity_request_is_not_sent() -> None:
    ac = _accept(_request(), identity_response=b"x")
    assert ac.user_information.user_identity_ac is None


# --- build_request ---------------------------------------------------------------------------


def test_context_ids_are_odd_and_128_is_the_limit() -> None:
    rq = _request(contexts=[(CT, [IMPLICIT_VR_LITTLE_ENDIAN])] * 128)
    assert [pc.context_id for pc in rq.presentation_contexts] == list(range(1, 256, 2))
    with pytest.raises(ValueError, match="129 presentation contexts.*at most 128"):
        _request(contexts=[(CT, [IMPLICIT_VR_LITTLE_ENDIAN])] * 129)


def test_build_request_fills_user_information() -> None:
    rq = _request(max_pdu_length=0, async_ops=(3, 1))
    ui = rq.user_information
    assert ui.maximum_length == 0
    assert ui.async_operations_window == AsyncOperationsWindow(
        max_operations_invoked=3, max_operations_performed=1
    )
    assert ui.implementation_class_uid == IMPLEMENTATION_CLASS_UID
    assert ui.implementation_version_name == IMPLEMENTATION_VERSION_NAME
    assert (rq.called_ae_title, rq.calling_ae_title) == ("STORESCP", "STORESCU")
    assert rq.application_context == APPLICATION_CONTEXT_NAME


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"contexts": []}, "at least one"),
        ({"contexts": [(CT, IMPLICIT_VR_LITTLE_ENDIAN)]}, "not one string"),
        ({"contexts": [(CT, [])]}, "at least one transfer syntax"),
        ({"contexts": [("CT Image Storage", LE)]}, "must be a UID"),
        ({"contexts": [(CT, ["1.2.840.10008.01.2"])]}, "must be a UID"),
        ({"called_ae": ""}, "called_ae"),
        ({"called_ae": "    "}, "called_ae"),
        ({"called_ae": b"STORESCP"}, "called_ae must be a str"),
        ({"calling_ae": "A" * 17}, "calling_ae"),
        ({"calling_ae": "BACK\\SLASH"}, "calling_ae"),
        ({"calling_ae": "TAB\tAE"}, "calling_ae"),
        ({"max_pdu_length": -1}, "max_pdu_length"),
        ({"max_pdu_length": 2**32}, "max_pdu_length"),
        ({"implementation_version_name": "X" * 17}, "implementation_version_name"),
        ({"role_selections": [RoleSelection(sop_class_uid=CT, scu_role=True, scp_role=True)] * 2},
         "twice"),
    ],
)
def test_build_request_refuses_bad_arguments(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        _request(**kw)


def test_policy_validates_and_freezes_its_mappings() -> None:
    syntaxes = {CT: [IMPLICIT_VR_LITTLE_ENDIAN]}
    policy = AcceptorPolicy(abstract_syntaxes=syntaxes)  # type: ignore[arg-type]
    syntaxes[MR] = [IMPLICIT_VR_LITTLE_ENDIAN]
    assert policy.transfer_syntaxes_for(MR) is None
    assert policy.transfer_syntaxes_for(CT) == (IMPLICIT_VR_LITTLE_ENDIAN,)
    with pytest.raises(TypeError):
        policy.abstract_syntaxes[MR] = LE  # type: ignore[index]
    with pytest.raises(ConfigurationError, match="abstract_syntaxes"):
        AcceptorPolicy(abstract_syntaxes={CT: ()})
    with pytest.raises(ConfigurationError, match="ae_title"):
        AcceptorPolicy(ae_title="X" * 17)
    with pytest.raises(ConfigurationError, match="max_pdu_length"):
        AcceptorPolicy(max_pdu_length=-5)
    with pytest.raises(ConfigurationError, match="implementation_version_name"):
        AcceptorPolicy(implementation_version_name="")


# --- requestor-side validation of the AC -----------------------------------------------------


def _bad_ac(rq: AAssociateRQ, *contexts: PresentationContextAC) -> AAssociateAC:
    return dataclasses.replace(_accept(rq), presentation_contexts=contexts)


def _ok(cid: int, ts: str = IMPLICIT_VR_LITTLE_ENDIAN) -> PresentationContextAC:
    return PresentationContextAC(
        context_id=cid, result=PresentationResult.ACCEPTANCE, transfer_syntax=ts
    )


@pytest.mark.parametrize(
    ("answers", "match"),
    [
        ((_ok(3),), "context 3, which the A-ASSOCIATE-RQ did not propose"),
        ((_ok(1, EXPLICIT_VR_BIG_ENDIAN),), "not offered"),
        ((_ok(1), _ok(1)), "twice"),
    ],
)
def test_requestor_rejects_an_ac_that_does_not_answer_the_rq(
    answers: tuple[PresentationContextAC, ...], match: str
) -> None:
    rq = _request()
    with pytest.raises(RemoteProtocolError, match=match) as info:
        conclude_as_requestor(rq, _bad_ac(rq, *answers))
    assert info.value.reason == AbortReason.INVALID_PDU_PARAMETER_VALUE
    with pytest.raises(LocalProtocolError, match=match):
        conclude_as_acceptor(rq, _bad_ac(rq, *answers))


def test_accepted_context_without_transfer_syntax_is_invalid() -> None:
    rq = _request()
    answer = PresentationContextAC(
        context_id=1, result=PresentationResult.ACCEPTANCE, transfer_syntax=None
    )
    with pytest.raises(RemoteProtocolError, match="not offered"):
        conclude_as_requestor(rq, _bad_ac(rq, answer))


def test_rejected_context_transfer_syntax_is_not_tested_and_missing_counts_as_rejected() -> None:
    rq = _request(contexts=[(CT, LE), (MR, LE)])
    junk = PresentationContextAC(
        context_id=3, result=PresentationResult.USER_REJECTION, transfer_syntax="9.9"
    )
    req = conclude_as_requestor(rq, _bad_ac(rq, junk))
    assert req.contexts == {}
    assert req.rejected_contexts[1].result == PresentationResult.NO_REASON
    assert req.rejected_contexts[3].result == PresentationResult.USER_REJECTION


# --- find_context ----------------------------------------------------------------------------


def _negotiated() -> NegotiatedAssociation:
    rq = _request(
        contexts=[
            (CT, [JPEG_BASELINE_8BIT]),
            (CT, [IMPLICIT_VR_LITTLE_ENDIAN]),
            (CT, [EXPLICIT_VR_LITTLE_ENDIAN]),
            (VERIFICATION_SOP_CLASS, [IMPLICIT_VR_LITTLE_ENDIAN]),
        ]
    )
    return conclude_as_requestor(rq, _accept(rq))


def test_find_context_picks_lowest_id_and_filters_by_transfer_syntax() -> None:
    negotiated = _negotiated()
    assert find_context(negotiated, CT).context_id == 3
    found = find_context(negotiated, CT, EXPLICIT_VR_LITTLE_ENDIAN)
    assert (found.context_id, found.transfer_syntax) == (5, EXPLICIT_VR_LITTLE_ENDIAN)


def test_find_context_explains_what_was_accepted_instead() -> None:
    negotiated = _negotiated()
    with pytest.raises(NoPresentationContext) as info:
        find_context(negotiated, CT, JPEG_BASELINE_8BIT)
    text = str(info.value)
    assert "CT Image Storage" in text and "JPEG Baseline" in text
    assert "context 3 accepted in Implicit VR Little Endian" in text
    assert "context 1 rejected (transfer syntaxes not supported)" in text
    with pytest.raises(NoPresentationContext, match="where we act as SCP"):
        find_context(negotiated, CT, role="scp")


def test_find_context_for_an_unproposed_class_lists_the_accepted_ones() -> None:
    with pytest.raises(NoPresentationContext, match="not proposed.*Verification SOP Class"):
        find_context(_negotiated(), MR)
    with pytest.raises(ConfigurationError, match="role"):
        find_context(_negotiated(), CT, role="both")  # type: ignore[arg-type]


def test_find_context_on_the_acceptor_side_uses_our_roles() -> None:
    rq = _request(contexts=[(CT, [IMPLICIT_VR_LITTLE_ENDIAN])])
    acc = conclude_as_acceptor(rq, _accept(rq))
    assert find_context(acc, CT, role="scp").context_id == 1
    with pytest.raises(NoPresentationContext):
        find_context(acc, CT, role="scu")


# --- properties: both sides agree ------------------------------------------------------------

SOPS = [VERIFICATION_SOP_CLASS, CT, MR, SC, PRIVATE]
TSS = [
    IMPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
    JPEG_BASELINE_8BIT,
    JPEG_2000_LOSSLESS,
]
ts_lists = st.lists(st.sampled_from(TSS), min_size=1, max_size=4, unique=True)
windows = st.integers(min_value=1, max_value=6)


@st.composite
def policies(draw: st.DrawFn) -> AcceptorPolicy:
    return AcceptorPolicy(
        abstract_syntaxes=draw(
            st.dictionaries(st.sampled_from(SOPS), ts_lists.map(tuple), max_size=4)
        ),
        accept_any_abstract_syntax=draw(st.booleans()),
        default_transfer_syntaxes=tuple(draw(ts_lists)),
        max_pdu_length=draw(st.sampled_from([0, 16384, DEFAULT_MAX_PDU_LENGTH])),
        max_operations_invoked=draw(windows),
        max_operations_performed=draw(windows),
        role_selection=draw(
            st.dictionaries(
                st.sampled_from(SOPS),
                st.builds(RoleSupport, requestor_scu=st.booleans(), requestor_scp=st.booleans()),
            )
        ),
        extended_negotiation=draw(
            st.dictionaries(st.sampled_from(SOPS), st.binary(max_size=4), max_size=3)
        ),
    )


@st.composite
def requests(draw: st.DrawFn) -> AAssociateRQ:
    roles = draw(st.dictionaries(st.sampled_from(SOPS), st.tuples(st.booleans(), st.booleans())))
    ext = draw(st.dictionaries(st.sampled_from(SOPS), st.binary(max_size=4), max_size=3))
    identity = draw(
        st.none()
        | st.builds(
            UserIdentityRQ,
            identity_type=st.sampled_from(UserIdentityType),
            positive_response_requested=st.booleans(),
            primary_field=st.binary(min_size=1, max_size=8),
        )
    )
    return build_request(
        called_ae="SCP",
        calling_ae="SCU",
        contexts=draw(
            st.lists(st.tuples(st.sampled_from(SOPS), ts_lists), min_size=1, max_size=12)
        ),
        max_pdu_length=draw(st.sampled_from([0, 4096, DEFAULT_MAX_PDU_LENGTH])),
        async_ops=draw(st.none() | st.tuples(windows, windows)),
        role_selections=[
            RoleSelection(sop_class_uid=uid, scu_role=scu, scp_role=scp)
            for uid, (scu, scp) in roles.items()
        ],
        extended_negotiations=[
            SOPClassExtendedNegotiation(sop_class_uid=uid, application_information=info)
            for uid, info in ext.items()
        ],
        user_identity=identity,
    )


@settings(max_examples=150, deadline=None)
@given(rq=requests(), policy=policies(), response=st.none() | st.binary(max_size=6))
def test_both_sides_agree(rq: AAssociateRQ, policy: AcceptorPolicy, response: bytes | None) -> None:
    ac = _accept(rq, policy, identity_response=response)
    req, acc = conclude_as_requestor(rq, ac), conclude_as_acceptor(rq, ac)
    assert [c.context_id for c in ac.presentation_contexts] == [
        c.context_id for c in rq.presentation_contexts
    ]
    for pc, answer in zip(rq.presentation_contexts, ac.presentation_contexts, strict=True):
        ours = policy.transfer_syntaxes_for(pc.abstract_syntax)
        if answer.result == PresentationResult.ACCEPTANCE:
            assert ours is not None
            assert answer.transfer_syntax == next(t for t in ours if t in pc.transfer_syntaxes)
    assert req.contexts.keys() == acc.contexts.keys()
    assert req.rejected_contexts == acc.rejected_contexts
    assert set(req.contexts) | set(req.rejected_contexts) == {
        pc.context_id for pc in rq.presentation_contexts
    }
    for cid, mine in req.contexts.items():
        theirs = acc.contexts[cid]
        assert (mine.abstract_syntax, mine.transfer_syntax) == (
            theirs.abstract_syntax,
            theirs.transfer_syntax,
        )
        assert (mine.scu_role, mine.scp_role) == (theirs.scp_role, theirs.scu_role)
        assert mine.scu_role or mine.scp_role
    assert (req.our_max_pdu_length, req.peer_max_pdu_length) == (
        acc.peer_max_pdu_length,
        acc.our_max_pdu_length,
    )
    assert (req.max_operations_invoked, req.max_operations_performed) == (
        acc.max_operations_performed,
        acc.max_operations_invoked,
    )
    assert 1 <= acc.max_operations_performed <= policy.max_operations_performed
    assert 1 <= acc.max_operations_invoked <= policy.max_operations_invoked
    assert req.user_identity_response == acc.user_identity_response
    assert req.extended_negotiation == acc.extended_negotiation
    assert set(acc.extended_negotiation) <= set(policy.extended_negotiation)


# --- cross-check against pynetdicom's acceptor -----------------------------------------------


@settings(max_examples=60, deadline=None)
@given(rq=requests(), policy=policies())
def test_results_match_pynetdicom(rq: AAssociateRQ, policy: AcceptorPolicy) -> None:
    from pynetdicom.presentation import PresentationContext
    from pynetdicom.presentation import negotiate_as_acceptor as pnd_negotiate

    rq = dataclasses.replace(
        rq, user_information=dataclasses.replace(rq.user_information, role_selections=())
    )
    policy = dataclasses.replace(policy, accept_any_abstract_syntax=False)
    theirs_rq = []
    for pc in rq.presentation_contexts:
        cx = PresentationContext()
        cx.context_id = pc.context_id
        cx.abstract_syntax = pc.abstract_syntax
        cx.transfer_syntax = list(pc.transfer_syntaxes)
        theirs_rq.append(cx)
    theirs_ac = []
    for sop, tss in policy.abstract_syntaxes.items():
        cx = PresentationContext()
        cx.abstract_syntax = sop
        cx.transfer_syntax = list(tss)
        theirs_ac.append(cx)
    expected, _ = pnd_negotiate(theirs_rq, theirs_ac)
    got = _accept(rq, policy).presentation_contexts
    assert [(c.context_id, c.result) for c in got] == [
        (c.context_id, c.result) for c in expected
    ]
    for mine, their in zip(got, expected, strict=True):
        if mine.result == PresentationResult.ACCEPTANCE:
            assert [mine.transfer_syntax] == their.transfer_syntax
