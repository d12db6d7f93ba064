"""The requestor: `connect(...)` gives an association with echo, store, find, get, move,
release and abort; `RemoteAE` names a peer to connect to (a C-MOVE destination, say)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiodicom.aio._window import OperationsWindow
from aiodicom.aio.association import Association, AssociationInfo, IncomingData
from aiodicom.aio.client_qr import FindQuery, RetrieveResult, answer_store, retrieve
from aiodicom.aio.commitment import CommitResult, CommitWaiters, Reference, request_commitment
from aiodicom.aio.protocol import DicomProtocol
from aiodicom.aio.requests import StoreHandler, StoreRequest
from aiodicom.core.dimse import (
    CCancelRQ,
    CEchoRQ,
    CEchoRSP,
    CStoreRQ,
    Message,
    NEventReportRQ,
    Status,
)
from aiodicom.core.negotiation import (
    IMPLICIT_VR_LITTLE_ENDIAN,
    VERIFICATION_SOP_CLASS,
    NegotiatedAssociation,
    build_request,
    conclude_as_requestor,
    find_context,
)
from aiodicom.core.part10 import Part10Info, read_part10_info
from aiodicom.core.pdu import AAssociateRQ
from aiodicom.core.primitives import AssociateAccepted, AssociateRejected
from aiodicom.core.qr import UNCOMPRESSED_SYNTAXES, QRModel
from aiodicom.core.upper_layer import UpperLayer
from aiodicom.core.user_items import RoleSelection, UserIdentityRQ
from aiodicom.errors import (
    AcseTimeout,
    AssociationAborted,
    AssociationRejected,
    CertificateRejected,
    ConfigurationError,
    ConnectError,
    DimseError,
    DimseTimeout,
    NetworkTimeout,
    TLSError,
    fresh_error,
)
from aiodicom.settings import AssociationSettings

__all__ = ["ClientAssociation", "RemoteAE", "connect", "open_association", "storage_contexts_for"]


Contexts = Sequence[tuple[str, Sequence[str]]]


class ClientAssociation(Association):
    """An association we requested."""

    def __init__(self, settings: AssociationSettings) -> None:
        super().__init__(settings)
        self.store_handler: StoreHandler | None = None
        """Answers C-STORE-RQs the peer sends us (C-GET sub-operations, PS3.4 C.4.3)."""
        self._get_handler: StoreHandler | None = None
        self._get_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._answer: asyncio.Future[AssociateAccepted | AssociateRejected | AssociationAborted]
        self._answer = asyncio.get_running_loop().create_future()
        self.request_pdu: AAssociateRQ | None = None
        self._commit_waiters = CommitWaiters()

    def _on_associate_answer(self, primitive: AssociateAccepted | AssociateRejected) -> None:
        if not self._answer.done():
            self._answer.set_result(primitive)

    def _on_release_indication(self) -> None:
        # The peer asked to release (or a collision): answer once nothing is outstanding.
        protocol = self.protocol
        assert protocol is not None
        protocol.release_response()

    def _on_end(self, exc: AssociationAborted) -> None:
        for task in list(self._tasks):
            task.cancel()
        self._commit_waiters.fail(exc)
        if not self._answer.done():
            self._answer.set_result(exc)  # a value: `_establish` raises a copy (fresh_error)

    # -- establishment ---------------------------------------------------------------------------

    async def _establish(self, rq: AAssociateRQ) -> NegotiatedAssociation:
        protocol = self.protocol
        assert protocol is not None
        self.request_pdu = rq
        timeout = self.settings.timeouts.acse
        try:
            answer = await asyncio.wait_for(asyncio.shield(self._answer), timeout)
        except asyncio.CancelledError:  # the caller gave up (a C-MOVE's C-CANCEL): no leak
            self.abort()
            raise
        except TimeoutError:
            self.abort()
            raise AcseTimeout(
                f"no answer to A-ASSOCIATE-RQ within {timeout} s: is the peer a DICOM "
                "service on that port (and TLS on both sides or neither)?"
            ) from None
        if isinstance(answer, AssociationAborted):
            raise fresh_error(answer)
        if isinstance(answer, AssociateRejected):
            rj = answer.response
            raise AssociationRejected(rj.result, rj.source, rj.reason)
        try:
            negotiated = conclude_as_requestor(rq, answer.response)
        except Exception:
            # We cannot use what the peer accepted (a transfer syntax we never proposed...):
            # abort (AA-1) and close at once, rather than leave Sta6 and the socket behind.
            self.abort()
            protocol.close_transport()
            raise
        self.negotiated = negotiated
        window = negotiated.max_operations_invoked  # PS3.7 D.3.3.3: 0 = unlimited
        self._invoked = OperationsWindow(window) if window > 0 else None
        self.info = AssociationInfo(
            id=self.id,
            calling_ae_title=rq.calling_ae_title,
            called_ae_title=rq.called_ae_title,
            peer_address=protocol.extra("peername"),
            negotiated=negotiated,
        )
        return negotiated

    # -- services --------------------------------------------------------------------------------

    async def echo(self) -> Status:
        """C-ECHO (PS3.7 §9.1.5): the status the peer answered."""
        ctx = find_context(self.require_established(), VERIFICATION_SOP_CLASS)
        mid = self.next_message_id()
        rq = CEchoRQ(message_id=mid, affected_sop_class_uid=VERIFICATION_SOP_CLASS)
        rsp, data = await self.request(ctx.context_id, rq, message_id=mid)
        if data is not None:
            await data.discard()
        if not isinstance(rsp, CEchoRSP):
            raise DimseError(f"expected a C-ECHO-RSP, got {type(rsp).__name__}")
        return rsp.status

    async def store(self, source: Path | str | Any, *, priority: int = 0) -> Status:
        """C-STORE a Part 10 file (streamed, never loaded whole) or a pydicom Dataset."""
        return await self.send_store(source, priority=priority)

    async def commit(self, references: Sequence[Reference], *, timeout: float | None = None,
                     transaction_uid: str | None = None) -> CommitResult:
        """Storage commitment (PS3.4 J): N-ACTION-RQ, then the SCP's N-EVENT-REPORT on this
        association within ``timeout`` (default: the DIMSE timeout). Propose
        `aiodicom.aio.commitment.commitment_context()` and `commitment_role()`."""
        return await request_commitment(self, self._commit_waiters, references,
                                        transaction_uid=transaction_uid, timeout=timeout)

    # -- query/retrieve (PS3.4 Annex C): see aiodicom.aio.client_qr ---------------------------

    def find(self, identifier: Any, *, model: QRModel = "study", priority: int = 0) -> FindQuery:
        """C-FIND: an async iterator of matching identifiers (pydicom Datasets).

        The final status is ``.status`` once it ends; ``aclose()`` before the end sends
        C-CANCEL-RQ (PS3.7 §9.3.2.3). Use ``async with assoc.find(ds) as matches:``.
        """
        return FindQuery(self, identifier, model=model, priority=priority)

    async def get(
        self, identifier: Any, *, model: QRModel = "study",
        on_store: StoreHandler | None = None, priority: int = 0,
    ) -> RetrieveResult:
        """C-GET: the C-STORE sub-operations come back on this association, to ``on_store``
        (else `store_handler`; PS3.4 C.4.3); the association must have proposed the SCP role
        for their classes.

        A C-STORE sub-operation does not say which C-GET it serves, so the C-GETs of one
        association run one at a time, each with its own handler. A C-GET whose caller is
        cancelled is cancelled on the wire too (C-CANCEL-RQ); until its final response the
        next C-GET waits and stray sub-operations are refused, never handed to another
        caller's handler. No response within the DIMSE timeout aborts the association: what
        the peer is still sending is unknown.
        """
        await self._get_lock.acquire()
        started: list[tuple[int, int]] = []
        self._get_handler = on_store
        task = asyncio.ensure_future(retrieve(self, identifier, model=model, priority=priority,
                                              started=started.append))

        def done(_: object) -> None:
            self._get_handler = None
            self._get_lock.release()

        task.add_done_callback(done)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            self._get_handler = _refuse_store
            if not task.done() and started and self.is_established:
                context_id, message_id = started[0]
                cancel = asyncio.ensure_future(self.send_message(
                    context_id, CCancelRQ(message_id_being_responded_to=message_id)))
                cancel.add_done_callback(_consume)
            task.add_done_callback(_consume)
            raise
        except DimseTimeout:
            self.abort()
            raise
        finally:
            del task  # it holds the error raised here, whose traceback holds this frame

    async def move(
        self, identifier: Any, destination_ae: str, *, model: QRModel = "study",
        priority: int = 0,
    ) -> RetrieveResult:
        """C-MOVE: the peer stores the matches on ``destination_ae`` (PS3.4 C.4.2)."""
        return await retrieve(self, identifier, model=model, priority=priority,
                              destination=destination_ae)

    def _dispatch_request(self, context_id: int, msg: Message, data: IncomingData | None) -> None:
        if isinstance(msg, CStoreRQ) and data is not None:
            task = asyncio.get_running_loop().create_task(
                answer_store(self, self._get_handler or self.store_handler, context_id, msg,
                             data))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        if isinstance(msg, NEventReportRQ):  # a storage commitment report (PS3.4 J.3.3)
            task = self._commit_waiters.answer(self, context_id, msg, data)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        super()._dispatch_request(context_id, msg, data)

    async def release(self) -> None:
        """A-RELEASE: waits for the peer's answer within the ACSE timeout, else aborts."""
        protocol = self.protocol
        if protocol is None or self._ended:
            return
        protocol.release_request()
        timeout = self.settings.timeouts.acse
        try:
            self.input_wait_begins()  # an unfinished C-FIND's queue must not hold the RP back
            try:
                await asyncio.wait_for(asyncio.shield(self._released), timeout)
            finally:
                self.input_wait_ends()
        except TimeoutError:
            self.abort()
            raise AcseTimeout(f"no A-RELEASE-RP within {timeout} s; aborted") from None
        except AssociationAborted:
            pass
        try:
            await asyncio.wait_for(asyncio.shield(protocol.closed), timeout)
        except TimeoutError:
            protocol.abort_transport()


@dataclass(frozen=True, slots=True)
class RemoteAE:
    """A peer we can open associations to: its address and, for mutual TLS, our client
    context. As a C-MOVE destination of a `Server`, it opens the sub-association.

    ``server_hostname`` is the name its certificate must carry (and the TLS SNI) when it is
    not ``host``, e.g. a destination dialled by IP address whose certificate names its host.
    """

    host: str
    port: int
    tls: ssl.SSLContext | None = None
    server_hostname: str | None = None

    async def open(self, *, called_ae_title: str, contexts: Contexts,
                   settings: AssociationSettings) -> ClientAssociation:
        return await open_association(self.host, self.port, called_ae_title=called_ae_title,
                                      contexts=contexts, settings=settings, tls=self.tls,
                                      server_hostname=self.server_hostname)


async def _refuse_store(request: StoreRequest) -> Status:
    """C-STORE sub-operations of a C-GET nobody waits for any more: refused."""
    return Status.OUT_OF_RESOURCES


def _consume(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


def storage_contexts_for(paths: Sequence[Path]) -> list[tuple[str, list[str]]]:
    """One context per SOP class (each file's own syntax plus the uncompressed ones), and
    Verification, so the same association can C-ECHO."""
    wanted: dict[str, list[str]] = {VERIFICATION_SOP_CLASS: [IMPLICIT_VR_LITTLE_ENDIAN]}
    for path in paths:
        info: Part10Info = read_part10_info(path)
        syntaxes = wanted.setdefault(info.sop_class_uid, [])
        for ts in (info.transfer_syntax_uid, *UNCOMPRESSED_SYNTAXES):
            if ts not in syntaxes:
                syntaxes.append(ts)
    return list(wanted.items())


@asynccontextmanager
async def connect(
    host: str,
    port: int,
    *,
    called_ae_title: str = "ANY-SCP",
    contexts: Contexts | None = None,
    settings: AssociationSettings | None = None,
    tls: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    user_identity: UserIdentityRQ | None = None,
    role_selections: Sequence[RoleSelection] = (),
    max_operations_invoked: int | None = None,
) -> AsyncIterator[ClientAssociation]:
    """Open a connection, negotiate, and yield the association; released on exit.

    An exception inside the block aborts the association instead of releasing it.
    ``user_identity`` sends a user identity sub-item (PS3.7 D.3.3.7); the server's answer
    is ``assoc.negotiated.user_identity_response``. ``role_selections`` propose roles per
    SOP class (PS3.7 D.3.3.4), e.g. the SCP role for the storage classes of a C-GET.
    ``max_operations_invoked`` (1-65535) proposes an asynchronous operations window of that
    many outstanding requests we invoke, one we perform (PS3.7 D.3.3.3); None proposes none
    (synchronous). Either way the association never has more requests outstanding than
    ``assoc.negotiated.max_operations_invoked``: concurrent calls wait for a place, except
    a request made by a task that already has one outstanding (a request inside a C-FIND
    loop), which goes out rather than wait for itself (see `aiodicom.aio._window`).
    """
    assoc = await open_association(
        host,
        port,
        called_ae_title=called_ae_title,
        contexts=contexts,
        settings=settings,
        tls=tls,
        server_hostname=server_hostname,
        user_identity=user_identity,
        role_selections=role_selections,
        max_operations_invoked=max_operations_invoked,
    )
    try:
        yield assoc
    except BaseException:
        assoc.abort()
        raise
    await assoc.release()


async def open_association(
    host: str,
    port: int,
    *,
    called_ae_title: str = "ANY-SCP",
    contexts: Contexts | None = None,
    settings: AssociationSettings | None = None,
    tls: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    user_identity: UserIdentityRQ | None = None,
    role_selections: Sequence[RoleSelection] = (),
    max_operations_invoked: int | None = None,
) -> ClientAssociation:
    """Like `connect` without the context manager: the caller must release or abort."""
    if max_operations_invoked is not None and not 1 <= max_operations_invoked <= 0xFFFF:
        raise ConfigurationError(
            f"max_operations_invoked must be 1-65535 (None: synchronous), got "
            f"{max_operations_invoked!r}")
    settings = settings or AssociationSettings()
    limits = settings.limits
    rq = build_request(
        called_ae=called_ae_title,
        calling_ae=settings.ae_title,
        contexts=list(contexts or [(VERIFICATION_SOP_CLASS, [IMPLICIT_VR_LITTLE_ENDIAN])]),
        # 0 would promise "no limit", but we never buffer more than the hard cap: advertise
        # the cap itself, so a peer that takes us at our word is never aborted (PS3.8 D.1).
        max_pdu_length=limits.max_pdu_length or limits.hard_max_pdu_length,
        user_identity=user_identity,
        role_selections=role_selections,
        async_ops=None if max_operations_invoked is None else (max_operations_invoked, 1),
    )
    loop = asyncio.get_running_loop()
    assoc = ClientAssociation(settings)
    ul = UpperLayer(
        requestor=True,
        max_pdu_length=limits.receive_cap,
        artim_timeout=settings.timeouts.artim,
        staging_size=limits.receive_staging,
    )
    ul.request_association(rq)

    def factory() -> DicomProtocol:
        protocol = DicomProtocol(ul, assoc.on_primitive)
        assoc.protocol = protocol
        return protocol

    timeouts = settings.timeouts
    try:
        await asyncio.wait_for(
            loop.create_connection(
                factory,
                host,
                port,
                ssl=tls,
                server_hostname=(server_hostname or host) if tls else None,
                ssl_handshake_timeout=timeouts.tls_handshake if tls else None,
            ),
            timeouts.connect,
        )
    except TimeoutError:
        raise NetworkTimeout(
            f"connecting to {host}:{port} took over {timeouts.connect} s"
        ) from None
    except ssl.SSLCertVerificationError as exc:
        raise CertificateRejected(
            f"the server at {host}:{port} presented a certificate we do not trust: "
            f"{exc.verify_message}; check --ca and the server name"
        ) from exc
    except ssl.SSLError as exc:
        raise TLSError(
            f"TLS handshake with {host}:{port} failed ({exc.reason or exc}); does the server "
            "require a client certificate, and does our CA trust its chain?"
        ) from exc
    except ConnectionRefusedError as exc:
        raise ConnectError(f"{host}:{port} refused the connection: is the server running?") from exc
    except (ConnectionResetError, ConnectionAbortedError, EOFError) as exc:
        if tls is None:
            raise ConnectError(f"{host}:{port} closed the connection at once") from exc
        # TCP was up: the peer dropped us mid-handshake (it refused our TLS version, suites or
        # certificate, or it does not speak TLS on that port).
        raise TLSError(
            f"{host}:{port} closed the connection during the TLS handshake: it refused our TLS "
            "version or ciphers, or it does not speak TLS on that port"
        ) from exc
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise ConnectError(f"cannot connect to {host}:{port}: {reason}") from exc
    try:
        await assoc._establish(rq)
    except AssociationAborted as exc:
        if tls is not None:
            raise TLSError(
                f"the connection to {host}:{port} closed during association: the server may "
                "have refused our client certificate (wrong CA, revoked or expired)"
            ) from exc
        reset = assoc.protocol.close_error if assoc.protocol is not None else None
        if isinstance(reset, ConnectionResetError | ConnectionAbortedError):
            # TCP connect succeeds before a peer's RST arrives: still a failure to connect.
            raise ConnectError(
                f"{host}:{port} reset the connection before answering A-ASSOCIATE-RQ: is it a "
                "DICOM service, does it accept our address, does it expect TLS (--tls)?"
            ) from reset
        raise AssociationAborted(
            exc.source, exc.reason,
            f"{exc}: {host}:{port} ended the connection instead of answering A-ASSOCIATE-RQ; "
            "is it a DICOM service, and does it expect TLS on that port (--tls)?",
        ) from exc
    return assoc
