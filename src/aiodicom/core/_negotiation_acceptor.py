"""The acceptor's half of negotiation: A-ASSOCIATE-RQ + policy -> AC or RJ.

Rejection constructors sit here too, so an upper layer refusing an association for its own
reasons (too many associations, shutting down) uses the same codes (PS3.8 Table 9-21).
"""

from __future__ import annotations

from collections.abc import Sequence

from aiodicom.core._negotiation_model import (
    DEFAULT_ROLE_SUPPORT,
    AcceptorPolicy,
    min_window,
)
from aiodicom.core.items import (
    APPLICATION_CONTEXT_NAME,
    PresentationContextAC,
    PresentationContextRQ,
    PresentationResult,
)
from aiodicom.core.pdu import AAssociateAC, AAssociateRJ, AAssociateRQ
from aiodicom.core.user_items import (
    AsyncOperationsWindow,
    RoleSelection,
    SOPClassExtendedNegotiation,
    UserIdentityAC,
    UserInformation,
)
from aiodicom.errors import (
    AbortReason,
    LocalProtocolError,
    RejectResult,
    RejectSource,
    RemoteProtocolError,
)

_VALID_REASONS: dict[RejectSource, frozenset[int]] = {
    RejectSource.SERVICE_USER: frozenset({1, 2, 3, 7}),
    RejectSource.SERVICE_PROVIDER_ACSE: frozenset({1, 2}),
    RejectSource.SERVICE_PROVIDER_PRESENTATION: frozenset({1, 2}),
}


def reject(result: RejectResult, source: RejectSource, reason: int) -> AAssociateRJ:
    """An A-ASSOCIATE-RJ; raises `LocalProtocolError` for a triple Table 9-21 does not define."""
    result = RejectResult(result)
    source = RejectSource(source)
    if reason not in _VALID_REASONS[source]:
        raise LocalProtocolError(
            f"reject reason {reason} is not defined for source {source.name} "
            f"(PS3.8 Table 9-21 allows {sorted(_VALID_REASONS[source])})"
        )
    return AAssociateRJ(result=int(result), source=int(source), reason=reason)


def reject_no_reason() -> AAssociateRJ:
    """Permanent, service-user, reason 1 "no reason given".

    Used when the user identity is refused: PS3.7 D.3.3.7 names no code for it. The
    decision is the called application's (service user, not provider: pynetdicom's
    transient/ACSE choice blames the wrong layer) and retrying the same credentials cannot
    succeed (permanent). Reason 1 discloses nothing to a guessing peer.
    """
    return reject(RejectResult.PERMANENT, RejectSource.SERVICE_USER, 1)


def reject_application_context_not_supported() -> AAssociateRJ:
    """Permanent, service-user, reason 2 (PS3.8 Table 9-21)."""
    return reject(RejectResult.PERMANENT, RejectSource.SERVICE_USER, 2)


def reject_calling_ae_not_recognized() -> AAssociateRJ:
    """Permanent, service-user, reason 3 (PS3.8 Table 9-21)."""
    return reject(RejectResult.PERMANENT, RejectSource.SERVICE_USER, 3)


def reject_called_ae_not_recognized() -> AAssociateRJ:
    """Permanent, service-user, reason 7 (PS3.8 Table 9-21)."""
    return reject(RejectResult.PERMANENT, RejectSource.SERVICE_USER, 7)


def reject_protocol_version_not_supported() -> AAssociateRJ:
    """Permanent, service-provider (ACSE), reason 2 (PS3.8 Table 9-21)."""
    return reject(RejectResult.PERMANENT, RejectSource.SERVICE_PROVIDER_ACSE, 2)


def reject_temporary_congestion() -> AAssociateRJ:
    """Transient, service-provider (presentation), reason 1: too many associations now."""
    return reject(RejectResult.TRANSIENT, RejectSource.SERVICE_PROVIDER_PRESENTATION, 1)


def reject_local_limit_exceeded() -> AAssociateRJ:
    """Transient, service-provider (presentation), reason 2: a configured limit is reached."""
    return reject(RejectResult.TRANSIENT, RejectSource.SERVICE_PROVIDER_PRESENTATION, 2)


def negotiate_as_acceptor(
    rq: AAssociateRQ,
    policy: AcceptorPolicy,
    *,
    identity_response: bytes | None = None,
    identity_accepted: bool = True,
) -> AAssociateAC | AAssociateRJ:
    """Answer an A-ASSOCIATE-RQ under ``policy`` (PS3.8 §9.3.2-9.3.4, PS3.7 D.3.3).

    Checks, in order: protocol version bit 0 (else RJ permanent/ACSE/2), the application
    context name (else RJ permanent/user/2), the called AE title (user/7), the calling AE
    title (user/3), then ``identity_accepted`` (the shell's verdict on the user identity;
    False gives `reject_no_reason`). Each presentation context then gets result 0 with the
    first of OUR preferred transfer syntaxes that the requestor offers, 3 (abstract syntax
    not supported), 4 (no transfer syntax in common) or 1 (user rejection: the role
    selection left the requestor no role, as pynetdicom does).

    An AC in which every context is rejected is still an AC, as PS3.8 allows; the upper
    layer may choose to reject or release instead.

    Raises `RemoteProtocolError` (A-ABORT, invalid PDU parameter value) when the RQ has no
    presentation context or a context ID that is even, out of 1-255 or repeated
    (PS3.8 §9.3.2.2): such a PDU is malformed, not something to negotiate.
    """
    if not rq.protocol_version & 1:
        return reject_protocol_version_not_supported()
    _check_proposed_contexts(rq.presentation_contexts)
    if rq.application_context.rstrip("\x00 ") != APPLICATION_CONTEXT_NAME:
        return reject_application_context_not_supported()
    if policy.ae_title is not None and rq.called_ae_title.strip(" ") != policy.ae_title:
        return reject_called_ae_not_recognized()
    calling = rq.calling_ae_title.strip(" ")
    if policy.calling_ae_titles is not None and calling not in policy.calling_ae_titles:
        return reject_calling_ae_not_recognized()
    if not identity_accepted:
        return reject_no_reason()

    ui = rq.user_information
    roles = _role_replies(ui.role_selections, policy)
    results = tuple(_negotiate_context(pc, policy, roles) for pc in rq.presentation_contexts)
    identity = ui.user_identity_rq
    identity_ac = None
    # Only on request and with a response, which may be empty (types 1 and 2, D.3.3.7.2).
    wanted = identity is not None and identity.positive_response_requested
    if wanted and identity_response is not None:
        identity_ac = UserIdentityAC(server_response=bytes(identity_response))
    answer = UserInformation(
        maximum_length=policy.max_pdu_length,
        implementation_class_uid=policy.implementation_class_uid,
        implementation_version_name=policy.implementation_version_name,
        async_operations_window=_window_reply(ui.async_operations_window, policy),
        role_selections=tuple(roles.values()),
        extended_negotiations=_extended_replies(ui.extended_negotiations, policy),
        user_identity_ac=identity_ac,
    )
    return AAssociateAC(
        called_ae_title=rq.called_ae_title,
        calling_ae_title=rq.calling_ae_title,
        presentation_contexts=results,
        user_information=answer,
    )


def _check_proposed_contexts(contexts: Sequence[PresentationContextRQ]) -> None:
    if not contexts:
        raise RemoteProtocolError(
            "A-ASSOCIATE-RQ proposes no presentation context (PS3.8 §9.3.2 requires one)",
            reason=AbortReason.INVALID_PDU_PARAMETER_VALUE,
        )
    seen: set[int] = set()
    for pc in contexts:
        cid = pc.context_id
        if not 1 <= cid <= 255 or not cid & 1:
            raise RemoteProtocolError(
                f"presentation context ID {cid} is not an odd number in 1-255 "
                "(PS3.8 §9.3.2.2)",
                reason=AbortReason.INVALID_PDU_PARAMETER_VALUE,
            )
        if cid in seen:
            raise RemoteProtocolError(
                f"presentation context ID {cid} is proposed twice (PS3.8 §9.3.2.2)",
                reason=AbortReason.INVALID_PDU_PARAMETER_VALUE,
            )
        seen.add(cid)


def _negotiate_context(
    pc: PresentationContextRQ, policy: AcceptorPolicy, roles: dict[str, RoleSelection]
) -> PresentationContextAC:
    """One context's result (PS3.8 Table 9-18).

    A rejected context echoes the first proposed transfer syntax: PS3.8 says the sub-item
    is present but not tested, and some peers choke on an empty one (pynetdicom #342).
    """
    offered = pc.transfer_syntaxes
    echo = offered[0] if offered else None
    ours = policy.transfer_syntaxes_for(pc.abstract_syntax)
    if ours is None:
        result = PresentationResult.ABSTRACT_SYNTAX_NOT_SUPPORTED
        return PresentationContextAC(context_id=pc.context_id, result=result, transfer_syntax=echo)
    chosen = next((ts for ts in ours if ts in offered), None)
    if chosen is None:
        result = PresentationResult.TRANSFER_SYNTAXES_NOT_SUPPORTED
        return PresentationContextAC(context_id=pc.context_id, result=result, transfer_syntax=echo)
    role = roles.get(pc.abstract_syntax)
    if role is not None and not (role.scu_role or role.scp_role):
        result = PresentationResult.USER_REJECTION
        return PresentationContextAC(context_id=pc.context_id, result=result, transfer_syntax=echo)
    return PresentationContextAC(
        context_id=pc.context_id, result=PresentationResult.ACCEPTANCE, transfer_syntax=chosen
    )


def _role_replies(
    proposals: Sequence[RoleSelection], policy: AcceptorPolicy
) -> dict[str, RoleSelection]:
    """One reply per proposed SOP class, in proposal order (PS3.7 D.3.3.4).

    Each proposed role is kept only if the policy allows it; a role not proposed is never
    returned as 1. A repeated item for the same SOP class is ignored (one per SOP class).
    """
    replies: dict[str, RoleSelection] = {}
    for proposal in proposals:
        uid = proposal.sop_class_uid
        if uid in replies:
            continue
        support = policy.role_selection.get(uid, DEFAULT_ROLE_SUPPORT)
        replies[uid] = RoleSelection(
            sop_class_uid=uid,
            scu_role=proposal.scu_role and support.requestor_scu,
            scp_role=proposal.scp_role and support.requestor_scp,
        )
    return replies


def _window_reply(
    proposed: AsyncOperationsWindow | None, policy: AcceptorPolicy
) -> AsyncOperationsWindow | None:
    """The AC window, from the acceptor's side (PS3.7 D.3.3.3); absent if not proposed.

    We perform at most what the requestor invokes and what we support; we invoke at most
    what it performs and what we allow. 0 (unlimited) from the peer yields our own bound,
    never 0: an unbounded window is how fo-dicom's sample dead-looped.
    """
    if proposed is None:
        return None
    return AsyncOperationsWindow(
        max_operations_invoked=min_window(
            proposed.max_operations_performed, policy.max_operations_invoked
        ),
        max_operations_performed=min_window(
            proposed.max_operations_invoked, policy.max_operations_performed
        ),
    )


def _extended_replies(
    proposals: Sequence[SOPClassExtendedNegotiation], policy: AcceptorPolicy
) -> tuple[SOPClassExtendedNegotiation, ...]:
    """Replies only for SOP classes the requestor sent and we have information for."""
    replies: dict[str, SOPClassExtendedNegotiation] = {}
    for proposal in proposals:
        uid = proposal.sop_class_uid
        info = policy.extended_negotiation.get(uid)
        if info is not None and uid not in replies:
            replies[uid] = SOPClassExtendedNegotiation(
                sop_class_uid=uid, application_information=info
            )
    return tuple(replies.values())
