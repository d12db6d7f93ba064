"""Hypothesis strategies for aiodicom's values: AE titles, UIDs, every item, sub-item and PDU.

Every strategy is a function returning a `SearchStrategy` (like ``st.integers()``); import
them as ``from tests.strategies import pdus, ae_titles, uids``. Generated values are the
canonical form the codec decodes to (AE titles stripped, UIDs unpadded), so
``decode(encode(x)) == x`` holds for all of them.
"""

from __future__ import annotations

from hypothesis import strategies as st

from aiodicom.core.items import (
    APPLICATION_CONTEXT_NAME,
    PresentationContextAC,
    PresentationContextRQ,
    PresentationResult,
)
from aiodicom.core.pdu import (
    PDU,
    AAbort,
    AAssociateAC,
    AAssociateRJ,
    AAssociateRQ,
    AReleaseRP,
    AReleaseRQ,
    PDataTF,
    PresentationDataValue,
)
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

__all__ = [
    "a_abort",
    "a_associate_ac",
    "a_associate_rj",
    "a_associate_rq",
    "a_release_rp",
    "a_release_rq",
    "ae_titles",
    "async_operations_windows",
    "common_extended_negotiations",
    "context_id_lists",
    "context_ids",
    "extended_negotiations",
    "implementation_version_names",
    "p_data_tf",
    "pdus",
    "pdvs",
    "presentation_contexts_ac",
    "presentation_contexts_rq",
    "role_selections",
    "uids",
    "user_identities_ac",
    "user_identities_rq",
    "user_information",
]

AE_ALPHABET = "".join(chr(c) for c in range(0x20, 0x7F) if c != 0x5C)
"""ISO 646 G0 without backslash: the characters an AE title may hold (PS3.5 AE VR)."""

VERSION_NAME_ALPHABET = "".join(chr(c) for c in range(0x21, 0x7F) if c != 0x5C)

WELL_KNOWN_UIDS = (
    APPLICATION_CONTEXT_NAME,
    "1.2.840.10008.1.1",  # Verification
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
    "1.2.840.10008.5.1.4.1.2.1.1",  # Patient Root Q/R FIND
    "1.2.276.0.7230010.3.0.3.6.7",  # DCMTK 3.6.7 implementation class
)


def ae_titles() -> st.SearchStrategy[str]:
    """Valid AE titles as decoded: 1-16 characters, no leading or trailing spaces."""
    return (
        st.text(alphabet=AE_ALPHABET, min_size=1, max_size=16)
        .map(lambda s: s.strip(" "))
        .filter(bool)
    )


def _uid_component() -> st.SearchStrategy[str]:
    return st.one_of(st.just("0"), st.integers(1, 10**12).map(str))


def uids() -> st.SearchStrategy[str]:
    """Valid UIDs (PS3.5 §9.1): dotted numbers without leading zeros, 1-64 characters."""
    structured = st.builds(
        lambda first, rest: ".".join([first, *rest]),
        st.sampled_from(["0", "1", "2"]),
        st.lists(_uid_component(), min_size=1, max_size=10),
    ).filter(lambda u: len(u) <= 64)
    full_length = st.integers(10**59, 10**60 - 1).map(lambda n: f"1.2.{n}")  # exactly 64
    return st.one_of(st.sampled_from(WELL_KNOWN_UIDS), structured, full_length)


def context_ids() -> st.SearchStrategy[int]:
    """Presentation context IDs: odd, 1-255 (PS3.8 §9.3.2.2)."""
    return st.integers(0, 127).map(lambda n: 2 * n + 1)


def context_id_lists(min_size: int = 1, max_size: int = 6) -> st.SearchStrategy[list[int]]:
    return st.lists(context_ids(), min_size=min_size, max_size=max_size, unique=True)


def presentation_contexts_rq(context_id: int | None = None) -> st.SearchStrategy[
    PresentationContextRQ
]:
    return st.builds(
        PresentationContextRQ,
        context_id=context_ids() if context_id is None else st.just(context_id),
        abstract_syntax=uids(),
        transfer_syntaxes=st.lists(uids(), min_size=1, max_size=4).map(tuple),
    )


@st.composite
def presentation_contexts_ac(
    draw: st.DrawFn, context_id: int | None = None
) -> PresentationContextAC:
    """An answer for one context; a rejected one may carry a transfer syntax or not."""
    cid = draw(context_ids()) if context_id is None else context_id
    result = draw(st.sampled_from(PresentationResult))
    if result == PresentationResult.ACCEPTANCE:
        ts: str | None = draw(uids())
    else:
        ts = draw(st.none() | uids())
    return PresentationContextAC(context_id=cid, result=result, transfer_syntax=ts)


def implementation_version_names() -> st.SearchStrategy[str]:
    """1-16 ISO 646 characters (PS3.7 D.3.3.2.3), here without spaces or backslash."""
    return st.text(alphabet=VERSION_NAME_ALPHABET, min_size=1, max_size=16)


def async_operations_windows() -> st.SearchStrategy[AsyncOperationsWindow]:
    return st.builds(
        AsyncOperationsWindow,
        max_operations_invoked=st.integers(0, 0xFFFF),
        max_operations_performed=st.integers(0, 0xFFFF),
    )


def role_selections() -> st.SearchStrategy[RoleSelection]:
    return st.builds(
        RoleSelection, sop_class_uid=uids(), scu_role=st.booleans(), scp_role=st.booleans()
    )


def extended_negotiations() -> st.SearchStrategy[SOPClassExtendedNegotiation]:
    return st.builds(
        SOPClassExtendedNegotiation,
        sop_class_uid=uids(),
        application_information=st.binary(max_size=32),
    )


def common_extended_negotiations() -> st.SearchStrategy[SOPClassCommonExtendedNegotiation]:
    return st.builds(
        SOPClassCommonExtendedNegotiation,
        sop_class_uid=uids(),
        service_class_uid=uids(),
        related_general_sop_classes=st.lists(uids(), max_size=3).map(tuple),
    )


@st.composite
def user_identities_rq(draw: st.DrawFn) -> UserIdentityRQ:
    kind = draw(st.sampled_from(UserIdentityType))
    secondary = (
        draw(st.binary(min_size=1, max_size=32))
        if kind == UserIdentityType.USERNAME_AND_PASSCODE
        else b""
    )
    return UserIdentityRQ(
        identity_type=kind,
        positive_response_requested=draw(st.booleans()),
        primary_field=draw(st.binary(min_size=1, max_size=64)),
        secondary_field=secondary,
    )


def user_identities_ac() -> st.SearchStrategy[UserIdentityAC]:
    return st.builds(UserIdentityAC, server_response=st.binary(max_size=64))


def user_information(*, is_rq: bool) -> st.SearchStrategy[UserInformation]:
    """Item 0x50 for an RQ (may hold 0x57/0x58) or an AC (may hold 0x59)."""
    return st.builds(
        UserInformation,
        maximum_length=st.none() | st.integers(0, 0xFFFFFFFF),
        implementation_class_uid=st.none() | uids(),
        implementation_version_name=st.none() | implementation_version_names(),
        async_operations_window=st.none() | async_operations_windows(),
        role_selections=st.lists(role_selections(), max_size=3).map(tuple),
        extended_negotiations=st.lists(extended_negotiations(), max_size=2).map(tuple),
        common_extended_negotiations=(
            st.lists(common_extended_negotiations(), max_size=2).map(tuple)
            if is_rq
            else st.just(())
        ),
        user_identity_rq=(st.none() | user_identities_rq()) if is_rq else st.none(),
        user_identity_ac=st.none() if is_rq else (st.none() | user_identities_ac()),
    )


def _protocol_versions() -> st.SearchStrategy[int]:
    return st.one_of(st.just(1), st.integers(0, 0xFFFF))


def _application_contexts() -> st.SearchStrategy[str]:
    return st.one_of(st.just(APPLICATION_CONTEXT_NAME), uids())


@st.composite
def a_associate_rq(draw: st.DrawFn) -> AAssociateRQ:
    ids = draw(context_id_lists(min_size=1))
    return AAssociateRQ(
        called_ae_title=draw(ae_titles()),
        calling_ae_title=draw(ae_titles()),
        presentation_contexts=tuple(draw(presentation_contexts_rq(i)) for i in ids),
        user_information=draw(user_information(is_rq=True)),
        application_context=draw(_application_contexts()),
        protocol_version=draw(_protocol_versions()),
    )


@st.composite
def a_associate_ac(draw: st.DrawFn) -> AAssociateAC:
    ids = draw(context_id_lists(min_size=0))
    return AAssociateAC(
        called_ae_title=draw(ae_titles()),
        calling_ae_title=draw(ae_titles()),
        presentation_contexts=tuple(draw(presentation_contexts_ac(i)) for i in ids),
        user_information=draw(user_information(is_rq=False)),
        application_context=draw(_application_contexts()),
        protocol_version=draw(_protocol_versions()),
    )


def a_associate_rj() -> st.SearchStrategy[AAssociateRJ]:
    return st.builds(
        AAssociateRJ,
        result=st.sampled_from([1, 2]),
        source=st.sampled_from([1, 2, 3]),
        reason=st.sampled_from([1, 2, 3, 7]),
    )


def pdvs(max_data: int = 64) -> st.SearchStrategy[PresentationDataValue]:
    return st.builds(
        PresentationDataValue,
        context_id=context_ids(),
        is_command=st.booleans(),
        is_last=st.booleans(),
        data=st.binary(max_size=max_data),
    )


def p_data_tf(max_pdvs: int = 4) -> st.SearchStrategy[PDataTF]:
    return st.builds(PDataTF, pdvs=st.lists(pdvs(), min_size=1, max_size=max_pdvs).map(tuple))


def a_release_rq() -> st.SearchStrategy[AReleaseRQ]:
    return st.just(AReleaseRQ())


def a_release_rp() -> st.SearchStrategy[AReleaseRP]:
    return st.just(AReleaseRP())


def a_abort() -> st.SearchStrategy[AAbort]:
    return st.builds(AAbort, source=st.sampled_from([0, 1, 2]), reason=st.integers(0, 6))


def pdus() -> st.SearchStrategy[PDU]:
    """Any of the seven PDUs."""
    return st.one_of(
        a_associate_rq(),
        a_associate_ac(),
        a_associate_rj(),
        p_data_tf(),
        a_release_rq(),
        a_release_rp(),
        a_abort(),
    )
