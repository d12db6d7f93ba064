"""`aiodicom serve`: the bundled storage and verification server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiodicom.aio.admission import Admission
from aiodicom.aio.events import FanOut, Observer
from aiodicom.aio.requests import Handlers, StoreRequest
from aiodicom.aio.server import Server
from aiodicom.app.server.audit import AuditTrail
from aiodicom.app.server.config import ServeOptions
from aiodicom.app.server.logs import (
    LogObserver,
    association_fields,
    configure_logging,
    info_line,
    installed_context,
)
from aiodicom.app.server.metrics import (
    MetricsObserver,
    parse_listen_address,
    register_crl_metrics,
    register_proxy_metrics,
    serve_metrics,
)
from aiodicom.core.dimse import Status
from aiodicom.core.negotiation import VERIFICATION_SOP_CLASS, AcceptorPolicy, RoleSupport
from aiodicom.errors import ConfigurationError
from aiodicom.settings import AssociationSettings, Limits, Timeouts

if TYPE_CHECKING:
    from aiodicom.app.archive.backend import StorageBackend

__all__ = ["configure_logging", "run_server", "serve_main"]

log = logging.getLogger("aiodicom.serve")


def open_storage(options: ServeOptions) -> StorageBackend:
    """The storage backend --storage names: a directory, or an object store (app/archive/
    backend.py); raises ConfigurationError for an unusable one."""
    from aiodicom.app.archive.backend import open_backend
    from aiodicom.app.archive.storage import DuplicatePolicy

    try:
        return open_backend(options.storage, fsync=options.fsync,
                            duplicates=DuplicatePolicy[options.duplicates.upper()])
    except ValueError as exc:
        raise ConfigurationError(f"--storage {options.storage}: {exc}") from exc


def make_store_handler(options: ServeOptions, audit: AuditTrail | None = None,
                       backend: StorageBackend | None = None) -> Callable[[StoreRequest], Any]:
    """The default C-STORE handler: Part 10 files under the storage root (or objects in the
    object store, `backend`), then indexed.

    Success is answered once the file is renamed into place (fsynced when configured): the
    file is the durable record, the index is derived from it (`aiodicom index rebuild`).
    The index update is journaled, then queued to a writer thread (`index_writer`), so an
    SQLite write or a busy wait never stalls the event loop; a C-FIND or retrieve in this
    process waits for the updates queued before it.
    """
    from aiodicom.app.archive.index_writer import writer_for_index
    from aiodicom.app.archive.storage import StorageError, StorageFailure

    storage = backend if backend is not None else open_storage(options)
    # --index, or STORAGE's; each acknowledged instance is journaled (fsynced with --fsync)
    # until indexed, and a restart replays what a killed process left (index_journal)
    index = writer_for_index(options.index, options.storage, fsync=options.fsync,
                             store=getattr(storage, "store", None))
    statuses = {
        StorageFailure.MISMATCH: Status.DATASET_MISMATCH,
        StorageFailure.OUT_OF_RESOURCES: Status.OUT_OF_RESOURCES,
    }


    async def handle_store(request: StoreRequest) -> Status:
        info = request.association
        try:
            stored = await storage.save(request)
        except StorageError as exc:
            log.warning("association %d: C-STORE of %s from %r failed: %s", info.id,
                        request.sop_instance_uid[:64], info.calling_ae_title, exc,
                        extra=association_fields(info))
            return statuses.get(exc.failure, Status.CANNOT_UNDERSTAND)
        # The file is renamed into place (durable) before we answer; the index is derived
        # from it, so it is updated in the writer thread, off the loop and the round trip.
        def failed(stored: Any, exc: BaseException) -> None:  # the file is safe on disk
            log.error("association %d: index update failed for %s: %s", info.id, stored.path,
                      exc, extra=association_fields(info))

        index.submit(stored, failed)
        if audit is not None:
            audit.note_stored(info, stored.sop_instance_uid, stored.study_instance_uid)
        info_line(log, "association %d: stored %s from %r (%d bytes)",
                  (info.id, stored.sop_instance_uid, info.calling_ae_title, stored.size),
                  association_fields(info))
        return Status.SUCCESS

    return handle_store


def storage_acceptor_policy(ae_title: str, *, max_pdu_length: int) -> AcceptorPolicy:
    """Verification plus any storage SOP class, uncompressed or as the modality compressed it,
    and query/retrieve (FIND, GET, MOVE; Patient and Study Root) with the SCP role for storage
    classes granted to a C-GET requestor (PS3.7 D.3.3.4).

    The called AE title is not checked: modalities are often configured with another one,
    and access is decided by the certificate and policy, not by a name the peer chooses.
    """
    from aiodicom.core import negotiation as n

    common = (
        n.EXPLICIT_VR_LITTLE_ENDIAN, n.IMPLICIT_VR_LITTLE_ENDIAN,
        n.DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, n.EXPLICIT_VR_BIG_ENDIAN,
        *n.COMPRESSED_TRANSFER_SYNTAXES,
    )
    from aiodicom.aio.commitment import STORAGE_COMMITMENT_PUSH_MODEL
    from aiodicom.app.archive.qr import qr_role_selection, qr_sop_classes

    native = (n.EXPLICIT_VR_LITTLE_ENDIAN, n.IMPLICIT_VR_LITTLE_ENDIAN)
    # Storage commitment: the requestor may take the SCP role too (the report comes back).
    commit_roles = {STORAGE_COMMITMENT_PUSH_MODEL: RoleSupport(requestor_scp=True)}
    return AcceptorPolicy(
        ae_title=None,
        abstract_syntaxes={VERIFICATION_SOP_CLASS: (n.IMPLICIT_VR_LITTLE_ENDIAN,
                                                    n.EXPLICIT_VR_LITTLE_ENDIAN),
                           STORAGE_COMMITMENT_PUSH_MODEL: native,
                           **{uid: native for uid in qr_sop_classes()}},
        role_selection={**qr_role_selection(), **commit_roles},
        accept_any_abstract_syntax=True,
        default_transfer_syntaxes=tuple(dict.fromkeys(common)),
        max_pdu_length=max_pdu_length,
        max_operations_performed=8,
    )


def build_observers(
    options: ServeOptions,
) -> tuple[Observer, MetricsObserver | None, AuditTrail | None]:
    """One observer fanning out to logs, metrics (--metrics) and the audit trail (--audit-log)."""
    log_observer = LogObserver(context=installed_context())
    metrics = MetricsObserver() if options.metrics is not None else None
    audit = None
    if options.audit_log is not None:
        audit = AuditTrail(options.audit_log, source_id=options.ae_title,
                           syslog=options.audit_syslog, ae_title=options.ae_title)
    observers: list[Observer] = [o for o in (log_observer, metrics, audit) if o is not None]
    if len(observers) == 1:  # the usual case: no fan-out (Server.notify catches a failure)
        return observers[0], metrics, audit
    # requests only to those that want them (the log observer at INFO does not)
    return FanOut(observers, log), metrics, audit


def build_server(options: ServeOptions, observer: Observer | None = None,
                 audit: AuditTrail | None = None,
                 backend: StorageBackend | None = None) -> tuple[Server, Any]:
    """The Server and, when TLS is on, the reloading TLS context (for SIGHUP); ``backend``
    defaults to what --storage names (the caller closes it: `run_server` does)."""
    settings = AssociationSettings(
        ae_title=options.ae_title,
        timeouts=Timeouts(
            network=options.idle_timeout, acse=options.acse_timeout,
            dimse=options.dimse_timeout, artim=options.artim_timeout,
            tls_handshake=options.tls_handshake_timeout,
        ),
        limits=Limits(
            max_pdu_length=options.max_pdu_length, max_associations=options.max_associations
        ),
    )
    policy = storage_acceptor_policy(options.ae_title, max_pdu_length=options.max_pdu_length)
    reloading: Any = None
    identify = None
    if options.tls_port is not None:
        import aiodicom.aio.tls as tls

        assert options.cert and options.key and options.ca
        reloading = tls.ReloadingServerContext(
            cert=Path(options.cert), key=Path(options.key), ca=Path(options.ca),
            crl=Path(options.crl) if options.crl else None, profile=options.tls_profile,
        )
        identify = tls.identity_from_ssl_object
    authorize = request_filter = None
    if options.policy is not None:
        from aiodicom.app.server.policy import PolicyFile, make_authorizer, make_request_filter

        policy_file = PolicyFile(options.policy)
        authorize, request_filter = make_authorizer(policy_file), make_request_filter(policy_file)
        reloading = _Reloaders(reloading, policy_file)
    from aiodicom.app.server.users import build_verifier

    users = Path(options.users) if options.users is not None else None  # a URL's mirror
    verify_identity = build_verifier(users, options.jwt_key, options.jwt_algorithm,
                                     jwt_audience=options.jwt_audience,
                                     jwt_issuer=options.jwt_issuer)
    if verify_identity is not None:
        reloading = _Reloaders(reloading, verify_identity)
    # opened now: an index that cannot be opened (a PostgreSQL server down) fails the start
    from aiodicom.app.archive.backend import LocalStorage
    from aiodicom.app.archive.index_writer import writer_for_index
    from aiodicom.app.archive.qr import QueryRetrieve
    from aiodicom.app.server.destinations import parse_move_destinations

    backend = backend if backend is not None else open_storage(options)
    remote = not isinstance(backend, LocalStorage)  # an object store: fetch, then send
    qr = QueryRetrieve(Path(options.storage),
                       writer_for_index(options.index, options.storage).index,
                       fetch=backend.retrieve_file if remote else None)
    server = Server(
        admission=Admission(
            policy=policy,
            identify=identify,
            require_ae_binding=options.require_ae_binding,
            authorize=authorize,
            request_filter=request_filter,
            verify_identity=verify_identity,
            require_user_identity=options.require_user_identity,
        ),
        handlers=_handlers(options, qr, audit, backend),
        settings=settings,
        observer=observer,
        connection_limits=options.connection_limits(),
        proxy_protocol=options.proxy(),
        move_destinations=parse_move_destinations(
            options.move_destinations, listener=options.listener_files(),
            profile=options.tls_profile),
    )
    return server, reloading


def _handlers(options: ServeOptions, qr: Any, audit: AuditTrail | None,
              backend: StorageBackend | None = None) -> Handlers:
    """Store and Q/R handlers; with an audit trail, C-FIND is audited as a Query and the
    files C-GET/C-MOVE hand out as Instances Transferred (PS3.15 A.5.3)."""
    backend = backend if backend is not None else open_storage(options)
    store = make_store_handler(options, audit, backend)
    commit = backend.commit_handler(lambda: qr.index)
    if audit is None:
        return Handlers(store=store, find=qr.find, get=qr.get, move=qr.move, commit=commit)
    trail = audit

    async def find(request: Any) -> AsyncIterator[Any]:
        trail.query(request.association, request.command.affected_sop_class_uid,
                    _identifier_bytes(request.identifier))
        async for item in qr.find(request):
            yield item

    def retrieve(inner: Callable[[Any], AsyncIterator[Any]], move: bool) -> Any:
        async def handler(request: Any) -> AsyncIterator[Any]:
            files: list[tuple[str, str, str]] = []
            try:
                async for item in inner(request):
                    if isinstance(item, Path):
                        files.append(_file_ids(item))
                    yield item
            finally:  # a C-CANCEL or an abort part way still leaves a record of what went
                trail.instances_sent(request.association, request.destination if move else "",
                                     files)

        return handler

    return Handlers(store=store, find=find, get=retrieve(qr.get, False),
                    move=retrieve(qr.move, True), commit=commit)


def _identifier_bytes(identifier: Any) -> bytes:
    """The C-FIND identifier, Explicit VR Little Endian, for the audit's query element."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    try:
        fp = DicomBytesIO()
        fp.is_little_endian, fp.is_implicit_VR = True, False
        write_dataset(fp, identifier)
        return fp.getvalue()
    except Exception:  # an identifier pydicom cannot re-encode: audit the query anyway
        return b""


def _file_ids(path: Path) -> tuple[str, str, str]:
    """(study, SOP class, SOP instance) of a stored file: ROOT/study/series/instance.dcm."""
    from aiodicom.core.part10 import read_part10_info

    try:
        sop_class = read_part10_info(path).sop_class_uid
    except Exception:
        sop_class = ""
    return path.parent.parent.name, sop_class, path.stem


async def run_server(
    options: ServeOptions,
    *,
    started: Callable[[list[tuple[str, str, int]]], None] | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """Run until SIGTERM/SIGINT (or ``stop``), then drain; SIGHUP reloads trust files.

    Trust given as object URLs (--ca/--crl/--policy/--users) is fetched into local mirrors
    first and polled while the server runs (app/server/trust_source.py)."""
    from aiodicom.app.server.trust_source import open_mirrors

    options, mirrors = await open_mirrors(options)
    try:
        return await _run_server(options, mirrors, started=started, stop=stop)
    finally:
        if mirrors is not None:
            mirrors.close()


async def _run_server(
    options: ServeOptions,
    mirrors: Any,
    *,
    started: Callable[[list[tuple[str, str, int]]], None] | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    observer, metrics, audit = build_observers(options)
    backend = open_storage(options)
    server, reloading = build_server(options, observer, audit, backend)
    if metrics is not None and reloading is not None:  # CRL age / next update gauges
        register_crl_metrics(metrics.metrics, getattr(reloading, "tls", reloading))
    if metrics is not None and server.proxy is not None:  # --proxy-protocol refusals
        register_proxy_metrics(metrics.metrics, server.proxy_stats)
    if mirrors is not None:
        from aiodicom.app.server.trust_source import attach_mirrors

        attach_mirrors(mirrors, reloading, metrics.metrics if metrics is not None else None)
    bound: list[tuple[str, str, int]] = []
    supervisor = os.environ.get("AIODICOM_WORKER", "")
    reuse = supervisor.isdigit()  # a worker of `serve --workers N`: the supervisor's pid
    if options.port is not None:
        host, port = await server.listen(options.host, options.port, reuse_port=reuse)
        bound.append(("dicom", host, port))
    if options.tls_port is not None and reloading is not None:
        host, port = await server.listen(options.host, options.tls_port, tls=reloading.context,
                                         reuse_port=reuse)
        bound.append(("dicom+tls", host, port))
    metrics_server = None
    if metrics is not None and options.metrics is not None and not metrics.metrics.shared:
        metrics_server = await serve_metrics(*parse_listen_address(options.metrics),
                                             metrics.metrics)
        host, port = metrics_server.sockets[0].getsockname()[:2]
        bound.append(("metrics", host, port))
    console = None
    if options.console is not None:  # aiohttp and jinja2 are imported only here
        from aiodicom.app.console.service import start_for_server

        console = await start_for_server(options, server, reloading, audit, bound)
        bound.append(("console", *console.address))
    for kind, host, port in bound:
        log.info("listening for %s on %s:%d as %r", kind, host, port, options.ae_title)
    if audit is not None:
        audit.application_started()
    if started is not None:
        started(bound)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if reloading is not None or mirrors is not None:
        loop.add_signal_handler(signal.SIGHUP, _on_hup(reloading, mirrors))
    watcher = asyncio.create_task(_watch(reloading)) if reloading is not None else None
    poller = asyncio.create_task(mirrors.run()) if mirrors is not None else None
    refresher = (asyncio.create_task(_refresh_shared(metrics.metrics))
                 if metrics is not None and metrics.metrics.shared else None)
    orphan_guard = (asyncio.create_task(_exit_with_supervisor(int(supervisor), stop))
                    if reuse else None)
    try:
        await stop.wait()
    finally:
        log.info("shutting down: draining %d association(s) for up to %.0f s",
                 server.active, options.drain_timeout)
        for task in (watcher, orphan_guard, refresher, poller):
            if task is not None:
                task.cancel()
        if console is not None:
            await console.close()
        await server.close(drain_timeout=options.drain_timeout)
        await backend.close()  # object store: aborts finish, retrieve staging removed
        if metrics_server is not None:
            metrics_server.close()
            with contextlib.suppress(Exception):
                await metrics_server.wait_closed()
        if audit is not None:
            audit.application_stopped()
            audit.close()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
    return 0


async def _exit_with_supervisor(parent: int, stop: asyncio.Event) -> None:
    """A worker whose supervisor died (even by SIGKILL, even before this worker started
    serving) drains and exits: no orphans."""
    while os.getppid() == parent:
        await asyncio.sleep(1.0)
    log.warning("the supervisor (pid %d) is gone: this worker drains and exits", parent)
    stop.set()


class _Reloaders:
    """The TLS trust files (if any), the policy file and the user identity files, reloaded
    together (poll and SIGHUP)."""

    def __init__(self, tls: Any, other: Any) -> None:
        earlier: list[Any] = tls.parts if isinstance(tls, _Reloaders) else [tls]
        self.tls: Any = tls.tls if isinstance(tls, _Reloaders) else tls
        self.parts: list[Any] = [p for p in (*earlier, other) if p is not None]

    @property
    def context(self) -> Any:
        return self.tls.context

    def reload(self) -> None:
        self._each("reload")

    def maybe_reload(self) -> None:
        self._each("maybe_reload")

    def reload_changed(self) -> None:
        self._each("reload_changed")

    def _each(self, method: str) -> None:
        for part in self.parts:  # a failure in one never stops the other
            try:
                getattr(part, method)()
            except ConfigurationError as exc:
                log.warning("trust files not reloaded: %s", exc)


def _on_hup(reloading: Any, mirrors: Any) -> Callable[[], None]:
    """SIGHUP: reload the files that changed, once per burst of signals, and fetch the
    trust objects now (then reload again if one changed): `reloading.CoalescedReload`."""
    from aiodicom.app.server.reloading import CoalescedReload

    return CoalescedReload(reloading.reload_changed if reloading is not None else None,
                           mirrors.wake if mirrors is not None else None)


async def _watch(reloading: Any) -> None:
    """Poll the trust files so a change applies to new connections within seconds."""
    while True:
        await asyncio.sleep(2.0)
        try:
            reloading.maybe_reload()
        except ConfigurationError as exc:
            log.warning("trust files not reloaded: %s", exc)


async def _refresh_shared(metrics: Any) -> None:
    """A worker's computed gauges (CRL age) into the files the supervisor scrapes."""
    while True:
        metrics.refresh()
        await asyncio.sleep(2.0)


def serve_main(options: ServeOptions) -> int:
    configure_logging(options.log_format, options.log_level)
    from aiodicom.aio.loop import limit_default_loop_tls_buffers, run, uvloop_available

    if not uvloop_available():  # our own process: idle TLS associations stay small
        limit_default_loop_tls_buffers()
    from aiodicom.app.server.heap import keep_heap

    keep_heap()  # our own process: large PDUs do not fault their pages in again per instance
    status = run(run_server(options))
    from aiodicom.app.objstore import is_store_url

    if isinstance(options.storage, str) and is_store_url(options.storage):
        _exit_after_object_store(options, status)
    return status


def _exit_after_object_store(options: ServeOptions, status: int) -> None:
    """End the process with ``status`` once the stores are closed and the index writes
    committed: obstore's runtime threads can abort (SIGABRT) during interpreter
    finalization (../shared/REFERENCE.md), which must not decide the exit status."""
    import sys

    from aiodicom.app.archive.index_writer import writer_for_index

    try:
        writer_for_index(options.index, options.storage).flush(timeout=30.0)
    except Exception:
        log.exception("index updates not flushed at exit")
        status = status or 1
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)
