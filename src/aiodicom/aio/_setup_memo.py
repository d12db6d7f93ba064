"""The acceptor's set-up memo: a repeated A-ASSOCIATE-RQ is negotiated once per policy.

A fleet's clients send the same A-ASSOCIATE-RQ every time. `UpperLayer` hands the same
decoded RQ object out for the same body bytes (`core.upper_layer.decode_associate_rq_memo`);
here, what follows from that RQ and the negotiation policy alone is kept by identity:
`negotiate_as_acceptor(rq, policy)`, then (for an accept) the advertised maximum length
fixed to the server's hard cap, `conclude_as_acceptor` and the encoded A-ASSOCIATE-AC.

Only the negotiation is memoized: everything decided per call or per peer (the server's
limits, the certificate binding of the calling AE title, the authorization hook, the user
identity and its response) runs every time, before it, in `Admission`. An RQ with a user
identity sub-item is never kept (its answer carries a per-call response), nor one the RQ
memo does not hold (`rq_memo_holds`: an oversized RQ is a new object every time). Entries hold
their RQ and policy and are checked with ``is``: a reloaded or other policy, or an RQ object
that merely reuses an id, is a miss. Bounded to `ENTRIES` (least recently used goes first):
a peer sending distinct RQs costs only misses; the memory is that of the RQ memo's values
plus an answer and a `NegotiatedAssociation` each (a few KiB for one context, ~100 KiB for
128).
"""

from __future__ import annotations

import dataclasses

from aiodicom.core.negotiation import (
    AcceptorPolicy,
    NegotiatedAssociation,
    conclude_as_acceptor,
    negotiate_as_acceptor,
)
from aiodicom.core.pdu import AAssociateAC, AAssociateRJ, AAssociateRQ, encode_pdu
from aiodicom.core.upper_layer import rq_memo_holds

__all__ = ["ENTRIES", "Accepted", "accepted", "clear", "negotiate"]

ENTRIES = 16
"""Negotiations kept (the same bound as the RQ memo's, whose values they hold)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Accepted:
    """What an accept sends and agrees: the AC as sent, its bytes, the negotiated terms."""

    answer: AAssociateAC
    encoded: bytes
    negotiated: NegotiatedAssociation


@dataclasses.dataclass(slots=True)
class _Entry:
    rq: AAssociateRQ
    policy: AcceptorPolicy
    answer: AAssociateAC | AAssociateRJ
    hard_max: int = 0
    accepted: Accepted | None = None


_MEMO: dict[int, _Entry] = {}


def clear() -> None:
    """Forget every entry (tests)."""
    _MEMO.clear()


def negotiate(rq: AAssociateRQ, policy: AcceptorPolicy) -> AAssociateAC | AAssociateRJ:
    """`negotiate_as_acceptor(rq, policy)` without an identity response, memoized.

    A `RemoteProtocolError` (a malformed RQ) is raised every time and nothing is kept.
    """
    entry = _MEMO.pop(id(rq), None)
    if entry is None or entry.rq is not rq or entry.policy is not policy:
        answer = negotiate_as_acceptor(rq, policy)
        if rq.user_information.user_identity_rq is not None or not rq_memo_holds(rq):
            return answer  # an RQ decoded afresh each time could never hit: not kept
        entry = _Entry(rq=rq, policy=policy, answer=answer)
        if len(_MEMO) >= ENTRIES:
            del _MEMO[next(iter(_MEMO))]
    _MEMO[id(rq)] = entry
    return entry.answer


def accepted(rq: AAssociateRQ, answer: AAssociateAC, hard_max: int) -> Accepted:
    """The AC to send for ``answer`` (a "no limit" maximum length becomes ``hard_max``: we
    never buffer more), its encoding and the negotiated association.

    Taken from the memo when ``answer`` is the very object `negotiate` kept for ``rq``;
    otherwise (an identity response, a hook's own answer) computed and not kept.
    """
    entry = _MEMO.get(id(rq))
    if entry is not None and entry.rq is rq and entry.answer is answer:
        if entry.accepted is None or entry.hard_max != hard_max:
            entry.accepted = _accepted(rq, answer, hard_max)
            entry.hard_max = hard_max
        return entry.accepted
    return _accepted(rq, answer, hard_max)


def _accepted(rq: AAssociateRQ, answer: AAssociateAC, hard_max: int) -> Accepted:
    ui = answer.user_information
    if ui.maximum_length == 0:
        # PS3.8 D.1: promising "no limit" would be a lie a peer could take us at.
        answer = dataclasses.replace(answer, user_information=dataclasses.replace(
            ui, maximum_length=hard_max))
    return Accepted(answer=answer, encoded=encode_pdu(answer),
                    negotiated=conclude_as_acceptor(rq, answer))
