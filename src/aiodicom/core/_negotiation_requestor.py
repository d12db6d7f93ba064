"""The requestor's half of negotiation, and the outcome both sides share.

`build_request` makes an A-ASSOCIATE-RQ from plain arguments; `conclude_as_requestor`
checks the peer's AC against it and, like `conclude_as_acceptor`, yields the same
`NegotiatedAssociation` view; `find_context` picks the context to send on.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from types import MappingProxyType
from typing import Literal

from aiodicom.core._negotiation_model import (
    DEFAULT_MAX_PDU_LENGTH,
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    MAX_PRESENTATION_CONTEXTS,
    AcceptedContext,
    NegotiatedAssociation,
    RejectedContext,
    check_ae_title,
    check_range,
    check_uid,
    check_uid_tuple,
    min_window,
)
from aiodicom.core.items import PresentationContextRQ, PresentationResult
from aiodicom.core.pdu import AAssociateAC, AAssociateRQ
from aiodicom.core.user_items import (
    AsyncOperationsWindow,
    RoleSelection,
    SOPClassCommonExtendedNegotiation,
    SOPClassExtendedNegotiation,
    UserIdentityRQ,
    UserInformation,
)
from aiodicom.errors import (
    AbortReason,
    ConfigurationError,
    LocalProtocolError,
    NoPresentationContext,
    ProtocolError,
    RemoteProtocolError,
)

_DEFAULT_REQUESTOR_ROLES = (True, False)
"""Without role selection the requestor is SCU and the acceptor SCP (PS3.7 D.3.3.4)."""


def build_request(
    *,
    called_ae: str,
    calling_ae: str,
    contexts: Sequence[tuple[str, Sequence[str]]],
    max_pdu_length: int = DEFAULT_MAX_PDU_LENGTH,
    async_ops: tuple[int, int] | None = None,
    role_selections: Sequence[RoleSelection] = (),
    extended_negotiations: Sequence[SOPClassExtendedNegotiation] = (),
    common_extended_negotiations: Sequence[SOPClassCommonExtendedNegotiation] = (),
    user_identity: UserIdentityRQ | None = None,
    implementation_class_uid: str = IMPLEMENTATION_CLASS_UID,
    implementation_version_name: str | None = IMPLEMENTATION_VERSION_NAME,
) -> AAssociateRQ:
    """An A-ASSOCIATE-RQ proposing ``contexts`` as (abstract syntax, transfer syntaxes).

    Context IDs are assigned 1, 3, 5, ... in order (PS3.8 §9.3.2.2), so at most 128
    contexts fit; the same abstract syntax may appear in several contexts. ``async_ops`` is
    (max invoked, max performed), each 1-65535: 0 (unlimited) is refused to keep our own
    window bounded; None omits the item (synchronous, 1/1). Bad arguments raise
    `ConfigurationError` (a ValueError) that names the argument.
    """
    if not contexts:
        raise ConfigurationError("contexts must propose at least one presentation context")
    if len(contexts) > MAX_PRESENTATION_CONTEXTS:
        raise ConfigurationError(
            f"{len(contexts)} presentation contexts requested, but an association carries at "
            f"most {MAX_PRESENTATION_CONTEXTS} (odd IDs 1-255, PS3.8 §9.3.2.2): split them "
            "over several associations"
        )
    proposed = tuple(
        PresentationContextRQ(
            context_id=2 * index + 1,
            abstract_syntax=check_uid(sop, f"contexts[{index}] abstract syntax"),
            transfer_syntaxes=check_uid_tuple(tss, f"contexts[{index}] transfer syntaxes"),
        )
        for index, (sop, tss) in enumerate(contexts)
    )
    window = None
    if async_ops is not None:
        invoked, performed = async_ops
        window = AsyncOperationsWindow(
            max_operations_invoked=check_range(invoked, 1, 0xFFFF, "async_ops invoked"),
            max_operations_performed=check_range(performed, 1, 0xFFFF, "async_ops performed"),
        )
    _check_unique((r.sop_class_uid for r in role_selections), "role_selections")
    _check_unique((e.sop_class_uid for e in extended_negotiations), "extended_negotiations")
    if implementation_version_name is not None and not 1 <= len(implementation_version_name) <= 16:
        raise ConfigurationError(
            "implementation_version_name must have 1-16 characters, "
            f"got {implementation_version_name!r}"
        )
    return AAssociateRQ(
        called_ae_title=check_ae_title(called_ae, "called_ae"),
        calling_ae_title=check_ae_title(calling_ae, "calling_ae"),
        presentation_contexts=proposed,
        user_information=UserInformation(
            maximum_length=check_range(max_pdu_length, 0, 0xFFFFFFFF, "max_pdu_length"),
            implementation_class_uid=check_uid(
                implementation_class_uid, "implementation_class_uid"
            ),
            implementation_version_name=implementation_version_name,
            async_operations_window=window,
            role_selections=tuple(role_selections),
            extended_negotiations=tuple(extended_negotiations),
            common_extended_negotiations=tuple(common_extended_negotiations),
            user_identity_rq=user_identity,
        ),
    )


def _check_unique(uids: Iterable[str], what: str) -> None:
    seen: set[str] = set()
    for uid in uids:
        check_uid(uid, f"{what} SOP class")
        if uid in seen:
            raise ConfigurationError(f"{what} names SOP class {uid} twice (one item per class)")
        seen.add(uid)


def conclude_as_requestor(rq: AAssociateRQ, ac: AAssociateAC) -> NegotiatedAssociation:
    """What the requestor may use after receiving ``ac`` for ``rq``.

    Raises `RemoteProtocolError` (reason: invalid PDU parameter value, so the shell sends
    A-ABORT) if the AC answers a context ID we did not propose, answers one twice, or accepts
    a transfer syntax we did not offer for it. A proposed context the AC leaves out counts as
    rejected (no reason). Role replies for roles we did not propose are ignored (PS3.7
    D.3.3.4); a missing reply means the default roles.
    """
    return _conclude(rq, ac, is_requestor=True)


def conclude_as_acceptor(rq: AAssociateRQ, ac: AAssociateAC) -> NegotiatedAssociation:
    """What the acceptor may use after sending ``ac`` (from `negotiate_as_acceptor`).

    The same view as `conclude_as_requestor` with roles and windows seen from our side.
    Raises `LocalProtocolError` if ``ac`` does not answer ``rq`` (a bug of the caller).
    """
    return _conclude(rq, ac, is_requestor=False)


def _conclude(rq: AAssociateRQ, ac: AAssociateAC, *, is_requestor: bool) -> NegotiatedAssociation:
    error: type[ProtocolError] = RemoteProtocolError if is_requestor else LocalProtocolError
    accepted, rejected = _pair_contexts(rq, ac, _requestor_roles(rq, ac), is_requestor, error)
    rq_ui, ac_ui = rq.user_information, ac.user_information
    ours, theirs = (rq_ui, ac_ui) if is_requestor else (ac_ui, rq_ui)
    invoked, performed = 1, 1
    rq_window, ac_window = rq_ui.async_operations_window, ac_ui.async_operations_window
    if rq_window is not None and ac_window is not None:
        our_window, peer_window = (rq_window, ac_window) if is_requestor else (ac_window, rq_window)
        invoked = min_window(
            our_window.max_operations_invoked, peer_window.max_operations_performed
        )
        performed = min_window(
            our_window.max_operations_performed, peer_window.max_operations_invoked
        )
    requested_ext: dict[str, bytes] = {}
    for item in rq_ui.extended_negotiations:
        requested_ext.setdefault(item.sop_class_uid, item.application_information)
    answered_ext: dict[str, bytes] = {}
    for item in ac_ui.extended_negotiations:
        if item.sop_class_uid in requested_ext:
            answered_ext.setdefault(item.sop_class_uid, item.application_information)
    identity_ac = ac_ui.user_identity_ac
    return NegotiatedAssociation(
        is_requestor=is_requestor,
        called_ae_title=rq.called_ae_title.strip(" "),
        calling_ae_title=rq.calling_ae_title.strip(" "),
        contexts=MappingProxyType(accepted),
        rejected_contexts=MappingProxyType(rejected),
        our_max_pdu_length=ours.maximum_length or 0,
        peer_max_pdu_length=theirs.maximum_length or 0,
        max_operations_invoked=invoked,
        max_operations_performed=performed,
        peer_implementation_class_uid=theirs.implementation_class_uid,
        peer_implementation_version_name=theirs.implementation_version_name,
        user_identity=rq_ui.user_identity_rq,
        user_identity_response=identity_ac.server_response if identity_ac else None,
        requested_extended_negotiation=MappingProxyType(requested_ext),
        extended_negotiation=MappingProxyType(answered_ext),
        common_extended_negotiation=rq_ui.common_extended_negotiations,
    )


def _requestor_roles(rq: AAssociateRQ, ac: AAssociateAC) -> dict[str, tuple[bool, bool]]:
    """SOP class -> (requestor is SCU, requestor is SCP) where role selection took place."""
    replies: dict[str, RoleSelection] = {}
    for item in ac.user_information.role_selections:
        replies.setdefault(item.sop_class_uid, item)
    roles: dict[str, tuple[bool, bool]] = {}
    for proposal in rq.user_information.role_selections:
        uid = proposal.sop_class_uid
        reply = replies.get(uid)
        if reply is not None and uid not in roles:
            roles[uid] = (
                proposal.scu_role and reply.scu_role,
                proposal.scp_role and reply.scp_role,
            )
    return roles


def _pair_contexts(
    rq: AAssociateRQ,
    ac: AAssociateAC,
    roles: dict[str, tuple[bool, bool]],
    is_requestor: bool,
    error: type[ProtocolError],
) -> tuple[dict[int, AcceptedContext], dict[int, RejectedContext]]:
    """Match AC results to proposed contexts, validating the AC against the RQ."""
    proposed = {pc.context_id: pc for pc in rq.presentation_contexts}
    answered: set[int] = set()
    accepted: dict[int, AcceptedContext] = {}
    rejected: dict[int, RejectedContext] = {}
    for result in ac.presentation_contexts:
        cid = result.context_id
        pc = proposed.get(cid)
        if pc is None:
            raise _invalid(
                error,
                f"A-ASSOCIATE-AC answers presentation context {cid}, "
                "which the A-ASSOCIATE-RQ did not propose",
            )
        if cid in answered:
            raise _invalid(error, f"A-ASSOCIATE-AC answers presentation context {cid} twice")
        answered.add(cid)
        if result.result != PresentationResult.ACCEPTANCE:
            rejected[cid] = RejectedContext(
                context_id=cid,
                abstract_syntax=pc.abstract_syntax,
                result=PresentationResult(result.result),
            )
            continue
        ts = result.transfer_syntax
        if ts is None or ts not in pc.transfer_syntaxes:
            raise _invalid(
                error,
                f"A-ASSOCIATE-AC accepts presentation context {cid} with transfer syntax "
                f"{ts!r}, which was not offered for it (offered: "
                f"{', '.join(pc.transfer_syntaxes)})",
            )
        rq_scu, rq_scp = roles.get(pc.abstract_syntax, _DEFAULT_REQUESTOR_ROLES)
        accepted[cid] = AcceptedContext(
            context_id=cid,
            abstract_syntax=pc.abstract_syntax,
            transfer_syntax=ts,
            scu_role=rq_scu if is_requestor else rq_scp,
            scp_role=rq_scp if is_requestor else rq_scu,
        )
    for cid, pc in proposed.items():
        if cid not in answered:
            rejected[cid] = RejectedContext(
                context_id=cid,
                abstract_syntax=pc.abstract_syntax,
                result=PresentationResult.NO_REASON,
            )
    return dict(sorted(accepted.items())), dict(sorted(rejected.items()))


def _invalid(error: type[ProtocolError], message: str) -> ProtocolError:
    if issubclass(error, RemoteProtocolError):
        return error(message, reason=AbortReason.INVALID_PDU_PARAMETER_VALUE)
    return error(message)


def find_context(
    negotiated: NegotiatedAssociation,
    abstract_syntax: str,
    transfer_syntax: str | None = None,
    role: Literal["scu", "scp"] = "scu",
) -> AcceptedContext:
    """The accepted context with the lowest ID for this SOP class (and transfer syntax)
    in which WE hold ``role``.

    Raises `NoPresentationContext` whose message names the SOP class and what was accepted
    or rejected for it instead.
    """
    if role not in ("scu", "scp"):
        raise ConfigurationError(f"role must be 'scu' or 'scp', got {role!r}")
    for ctx in negotiated.contexts.values():
        if ctx.abstract_syntax != abstract_syntax:
            continue
        if transfer_syntax is not None and ctx.transfer_syntax != transfer_syntax:
            continue
        if ctx.scu_role if role == "scu" else ctx.scp_role:
            return ctx
    why = _explain_missing(negotiated, abstract_syntax, transfer_syntax, role)
    raise NoPresentationContext(why)


def _explain_missing(
    negotiated: NegotiatedAssociation, sop: str, ts: str | None, role: str
) -> str:
    wanted = f"no accepted presentation context for {_name(sop)}"
    if ts is not None:
        wanted += f" in {_name(ts)}"
    wanted += f" where we act as {role.upper()}"
    same = [c for c in negotiated.contexts.values() if c.abstract_syntax == sop]
    refused = [c for c in negotiated.rejected_contexts.values() if c.abstract_syntax == sop]
    facts = [
        f"context {c.context_id} accepted in {_name(c.transfer_syntax)} with our roles "
        f"{_roles(c)}"
        for c in same
    ]
    facts += [
        f"context {c.context_id} rejected ({c.result.name.lower().replace('_', ' ')})"
        for c in refused
    ]
    if not facts:
        others = sorted({_name(c.abstract_syntax) for c in negotiated.contexts.values()})
        accepted = "; ".join(others) if others else "nothing"
        return (
            f"{wanted}: it was not proposed (accepted: {accepted}); "
            "propose it when opening the association"
        )
    return f"{wanted}: " + "; ".join(facts) + "; propose it with a fitting transfer syntax/role"


def _roles(ctx: AcceptedContext) -> str:
    names = [name for name, held in (("SCU", ctx.scu_role), ("SCP", ctx.scp_role)) if held]
    return "+".join(names) or "none"


def _name(uid: str) -> str:
    """``Name (uid)`` when pydicom knows the UID, else the UID."""
    from pydicom.uid import UID  # only on the error path: keeps the import cost off startup

    name = str(UID(uid).name)
    return uid if name == uid else f"{name} ({uid})"
