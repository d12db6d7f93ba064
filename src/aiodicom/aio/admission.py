"""Admission: an A-ASSOCIATE-RQ and who sent it in, an A-ASSOCIATE-AC or -RJ out.

One step, in a fixed order, each able to refuse: the server's limits (decided by the
server, passed in), the certificate binding of the calling AE title, the authorization
hook (the access policy), the user identity sub-item (PS3.7 D.3.3.7), and finally the
negotiation of presentation contexts and user information (PS3.8 §9.3.3). Nothing here
sends: the server applies the `Decision`.

The negotiation of a repeated RQ is memoized (`aiodicom.aio._setup_memo`); every check
before it runs per call.

Most requests need nothing awaited (no hook, no user identity to verify): `decide_now`
answers them inside the callback that received the request, without a task.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiodicom.aio import _setup_memo
from aiodicom.aio.association import AssociationInfo
from aiodicom.aio.requests import Authorizer, RequestFilter
from aiodicom.aio.tls import PeerIdentity, ae_title_allowed
from aiodicom.aio.user_identity import IdentityVerifier
from aiodicom.core.negotiation import (
    AcceptorPolicy,
    negotiate_as_acceptor,
    reject_calling_ae_not_recognized,
    reject_no_reason,
)
from aiodicom.core.pdu import AAssociateAC, AAssociateRJ, AAssociateRQ
from aiodicom.core.user_items import UserIdentityRQ
from aiodicom.errors import ConfigurationError

__all__ = ["Admission", "Decision"]

log = logging.getLogger("aiodicom.server")


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to send, and the user identity verification established (if any)."""

    answer: AAssociateAC | AAssociateRJ
    user: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Admission:
    """Who may associate with a `Server`, and on what terms."""

    policy: AcceptorPolicy
    """Presentation contexts, roles and user information we accept (the negotiation)."""
    authorize: Authorizer | None = None
    """Called before negotiation; an A-ASSOCIATE-RJ refuses (e.g. the access policy)."""
    identify: Callable[[Any], Any] | None = None
    """TLS: the peer's identity from its SSL object (`tls.identity_from_ssl_object`)."""
    require_ae_binding: bool = False
    """Refuse a certificate that binds no AE title (docs/security.md)."""
    verify_identity: IdentityVerifier | None = None
    """Verifies a user identity sub-item (PS3.7 D.3.3.7)."""
    require_user_identity: bool = False
    """Refuse a request without a user identity sub-item (needs ``verify_identity``)."""
    request_filter: RequestFilter | None = None
    """Checked for each request once associated: a Status refuses it (e.g. 0x0124)."""

    def __post_init__(self) -> None:
        if self.require_user_identity and self.verify_identity is None:
            raise ConfigurationError("require_user_identity needs verify_identity (a verifier)")

    def needs_await(self, rq: AAssociateRQ) -> bool:
        """True if deciding may wait (a hook, or a user identity to verify)."""
        return self.authorize is not None or (
            self.verify_identity is not None and rq.user_information.user_identity_rq is not None
        )

    def decide_now(self, info: AssociationInfo, rq: AAssociateRQ,
                   refusal: AAssociateRJ | None) -> Decision:
        """`decide` for a request that `needs_await` says needs nothing awaited."""
        answer = refusal or self._check_binding(info, rq) or self._identity_required(info, rq)
        return Decision(answer or _setup_memo.negotiate(rq, self.policy))

    async def decide(self, info: AssociationInfo, rq: AAssociateRQ,
                     refusal: AAssociateRJ | None) -> Decision:
        """Limits (``refusal``, the server's) -> binding -> authorize -> user identity ->
        negotiation; the first refusal is the answer."""
        answer = refusal or self._check_binding(info, rq)
        if answer is None and self.authorize is not None:
            answer = await self.authorize(info, rq)
        if answer is not None:
            return Decision(answer)
        rejected, identity_response, user = await self._check_user_identity(info, rq)
        if rejected is not None:
            return Decision(rejected)
        if identity_response is None:  # nothing per call in the answer: memoized
            return Decision(_setup_memo.negotiate(rq, self.policy), user)
        return Decision(negotiate_as_acceptor(rq, self.policy,
                                              identity_response=identity_response), user)

    def _check_binding(self, info: AssociationInfo, rq: AAssociateRQ) -> AAssociateRJ | None:
        """The calling AE title against the certificate (the rule is `tls.ae_title_allowed`)."""
        identity = info.identity
        if not isinstance(identity, PeerIdentity) or ae_title_allowed(
            identity, rq.calling_ae_title, require_binding=self.require_ae_binding
        ):
            return None
        if identity.ae_titles:
            why = f"(it names {', '.join(identity.ae_titles)})"
        else:
            why = "(it names no AE title and --require-ae-binding is set)"
        log.warning("association %d refused: calling AE %r is not bound to certificate %s %s",
                    info.id, rq.calling_ae_title, identity.subject, why)
        return reject_calling_ae_not_recognized()

    def _identity_required(self, info: AssociationInfo,
                           rq: AAssociateRQ) -> AAssociateRJ | None:
        """A refusal if a user identity is required and the request carries none."""
        if rq.user_information.user_identity_rq is None and self.require_user_identity:
            log.warning("association %d from %s refused: calling AE %r sent no user "
                        "identity and one is required", info.id, info.peer_address,
                        rq.calling_ae_title)
            return reject_no_reason()
        return None

    async def _check_user_identity(
        self, info: AssociationInfo, rq: AAssociateRQ
    ) -> tuple[AAssociateRJ | None, bytes | None, str | None]:
        """The verifier's verdict on the user identity sub-item (PS3.7 D.3.3.7), if any:
        (a rejection or None, the 0x59 server response, the verified user)."""
        request: UserIdentityRQ | None = rq.user_information.user_identity_rq
        if request is None or self.verify_identity is None:
            return self._identity_required(info, rq), None, None
        try:
            verdict = await self.verify_identity(info, request)
        except Exception:
            log.exception("association %d: the user identity verifier failed", info.id)
            return reject_no_reason(), None, None
        if not verdict.accepted:
            log.warning("association %d from %s refused: user identity (type %d) from calling "
                        "AE %r: %s", info.id, info.peer_address, int(request.identity_type),
                        rq.calling_ae_title, verdict.why or "not accepted")
            return reject_no_reason(), None, None
        return None, verdict.server_response, verdict.user
