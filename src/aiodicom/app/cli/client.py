"""`aiodicom echo` and `aiodicom store`: the client side of the command line."""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiodicom.aio.client import ClientAssociation, connect, storage_contexts_for
from aiodicom.aio.loop import run
from aiodicom.core.dimse import Status
from aiodicom.core.part10 import NotPart10Error, read_part10_info
from aiodicom.errors import AssociationRejected, DicomError
from aiodicom.settings import AssociationSettings

__all__ = ["build_identifier", "echo_main", "iter_files", "qr_main", "store_main"]


def _settings(args: argparse.Namespace) -> AssociationSettings:
    return AssociationSettings(ae_title=args.calling_ae)


def echo_main(args: argparse.Namespace, tls: ssl.SSLContext | None) -> int:
    async def go() -> int:
        start = time.perf_counter()
        async with connect(
            args.host, args.port, called_ae_title=args.called_ae, settings=_settings(args),
            tls=tls, server_hostname=args.server_name,
            user_identity=getattr(args, "user_identity", None),
        ) as assoc:
            connected = time.perf_counter()
            worst = Status.SUCCESS
            t0 = time.perf_counter()
            for _ in range(max(1, args.repeat)):
                status = await assoc.echo()
                if status != Status.SUCCESS:
                    worst = status
            rtt = (time.perf_counter() - t0) / max(1, args.repeat)
        print(
            f"C-ECHO {args.host}:{args.port} ({args.called_ae}): status 0x{int(worst):04X} "
            f"({worst.description}); association {1000 * (connected - start):.1f} ms, "
            f"round trip {1000 * rtt:.2f} ms"
        )
        return 0 if worst == Status.SUCCESS else 1

    try:
        return run(go())
    except AssociationRejected as exc:
        print(f"aiodicom echo: error: {_explain(exc, args)}", file=sys.stderr)
        return 1


def _explain(exc: BaseException, args: argparse.Namespace) -> str:
    """The error, plus a hint when a permanent "no reason given" answered a user identity
    (PS3.7 D.3.3.7 has no code for a refused identity: aiodicom servers send that one)."""
    if isinstance(exc, AssociationRejected) and (exc.result, exc.source, exc.reason) == (1, 1, 1):
        if getattr(args, "user_identity", None) is not None:
            return f"{exc} (the server may have refused the user identity)"
        return f"{exc} (the server may require a user identity: --username or --jwt)"
    return str(exc)


def _commit_tally(args: argparse.Namespace, contexts: list[Any]) -> Any:
    """With --commit: the storage commitment context is proposed too, and a tally kept."""
    if not getattr(args, "commit", False):
        return None
    from aiodicom.aio.commitment import commitment_context
    from aiodicom.app.cli.commit import CommitTally

    contexts.append(commitment_context())
    return CommitTally(timeout=args.commit_timeout)


def _commit_roles(tally: Any) -> list[Any]:
    from aiodicom.aio.commitment import commitment_role

    return [] if tally is None else [commitment_role()]


def iter_files(paths: list[Path]) -> Iterator[Path]:
    """Files named, and every file under folders named (sorted, hidden ones skipped)."""
    for path in paths:
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if not name.startswith("."):
                        yield Path(root) / name
        elif path.exists():
            yield path
        else:
            raise DicomError(f"{path}: no such file or directory")


@dataclass(slots=True)
class _Progress:
    total_files: int
    total_bytes: int
    show: bool
    sent: int = 0
    bytes: int = 0
    failed: list[tuple[Path, str]] = field(default_factory=list)
    stored: list[Path] = field(default_factory=list)
    """Stored and not yet asked to commit (--commit)."""
    start: float = field(default_factory=time.perf_counter)

    def done(self, path: Path, size: int, error: str | None) -> None:
        self.sent += error is None
        if error is None:
            self.stored.append(path)
        self.bytes += size
        if error is not None:
            self.failed.append((path, error))
        if self.show:
            elapsed = max(time.perf_counter() - self.start, 1e-6)
            n = self.sent + len(self.failed)
            width = 30
            filled = int(width * n / max(self.total_files, 1))
            sys.stderr.write(
                f"\r[{'#' * filled}{'.' * (width - filled)}] {n}/{self.total_files} files "
                f"{self.bytes / 1e6:.1f}/{self.total_bytes / 1e6:.1f} MB "
                f"{self.bytes / 1e6 / elapsed:.1f} MB/s"
            )
            sys.stderr.flush()


def store_main(args: argparse.Namespace, tls: ssl.SSLContext | None) -> int:
    files: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    named = {p for p in args.paths if not p.is_dir()}
    refused_named = False  # a file named on the command line that is not DICOM: exit 1
    for path in iter_files(args.paths):
        try:
            read_part10_info(path)
        except (NotPart10Error, OSError) as exc:
            skipped.append((path, str(exc)))
            refused_named = refused_named or path in named
            continue
        files.append(path)
    if not files:
        print("aiodicom store: no DICOM Part 10 files to send", file=sys.stderr)
        for path, why in skipped:
            print(f"  skipped {path}: {why}", file=sys.stderr)
        return 1
    contexts = storage_contexts_for(files)
    tally = _commit_tally(args, contexts)
    if len(contexts) > 128:
        print("aiodicom store: more than 128 SOP classes in one run; split the folders",
              file=sys.stderr)
        return 1
    total = sum(p.stat().st_size for p in files)
    show = sys.stderr.isatty() and not args.quiet
    progress = _Progress(total_files=len(files), total_bytes=total, show=show)
    n = max(1, min(args.associations, len(files)))

    window: int | None = getattr(args, "window", None)
    windows: list[int] = []  # the window each association negotiated

    async def lane(assoc: ClientAssociation, queue: asyncio.Queue[Path]) -> None:
        while not queue.empty():
            path = queue.get_nowait()
            size = path.stat().st_size
            try:
                status = await assoc.store(path)
            except DicomError as exc:
                if not assoc.is_established:
                    progress.done(path, size, str(exc))
                    while not queue.empty():
                        rest = queue.get_nowait()
                        progress.done(rest, 0, "not sent: the association ended")
                    raise
                progress.done(path, size, str(exc))
                continue
            error = None if status.category.name in ("SUCCESS", "WARNING") else (
                f"status 0x{int(status):04X} ({status.description})")
            progress.done(path, size, error)

    async def worker(queue: asyncio.Queue[Path]) -> None:
        async with connect(
            args.host, args.port, called_ae_title=args.called_ae, contexts=contexts,
            settings=_settings(args), tls=tls, server_hostname=args.server_name,
            user_identity=getattr(args, "user_identity", None),
            max_operations_invoked=window,
            role_selections=_commit_roles(tally),
        ) as assoc:
            # --window N: as many C-STOREs in flight as the peer granted (PS3.7 D.3.3.3);
            # the association's own window bounds them whatever runs here.
            granted = assoc.require_established().max_operations_invoked
            lanes = min(window, granted or window) if window else 1
            windows.append(lanes)
            results = await asyncio.gather(*(lane(assoc, queue) for _ in range(lanes)),
                                           return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    raise result
            if tally is not None:  # --commit: what is stored so far, on this association
                stored, progress.stored = progress.stored, []
                await tally.commit(assoc, stored)

    async def go() -> list[BaseException]:
        queue: asyncio.Queue[Path] = asyncio.Queue()
        for path in files:
            queue.put_nowait(path)
        results = await asyncio.gather(*(worker(queue) for _ in range(n)),
                                       return_exceptions=True)
        return [r for r in results if isinstance(r, BaseException)]

    errors = run(go())
    if show:
        sys.stderr.write("\n")
    elapsed = max(time.perf_counter() - progress.start, 1e-6)
    print(
        f"sent {progress.sent} of {len(files)} file(s), {progress.bytes / 1e6:.1f} MB in "
        f"{elapsed:.2f} s ({progress.bytes / 1e6 / elapsed:.1f} MB/s) over {n} association(s)"
        + (f", window {'/'.join(map(str, windows))} granted of {window}" if window else "")
    )
    for path, why in skipped:
        print(f"  skipped {path}: {why}")
    for path, why in progress.failed:
        print(f"  FAILED {path}: {why}")
    for error in errors:
        print(f"  association error: {_explain(error, args)}", file=sys.stderr)
    # Like storescu: a file named on the command line that could not be sent is a failure,
    # so a script deleting what it stored never deletes it; files under folders are skipped.
    ok = not progress.failed and not errors and progress.sent == len(files) and not refused_named
    if tally is not None:
        ok = tally.report(len(files)) and ok
    return 0 if ok else 1


# -- find / get / move (PS3.4 Annex C) -----------------------------------------------------

_GET_STORAGE_CLASSES = (
    "CTImageStorage", "EnhancedCTImageStorage", "MRImageStorage", "EnhancedMRImageStorage",
    "ComputedRadiographyImageStorage", "DigitalXRayImageStorageForPresentation",
    "DigitalXRayImageStorageForProcessing", "DigitalMammographyXRayImageStorageForPresentation",
    "DigitalMammographyXRayImageStorageForProcessing", "UltrasoundImageStorage",
    "UltrasoundMultiFrameImageStorage", "SecondaryCaptureImageStorage",
    "MultiFrameGrayscaleByteSecondaryCaptureImageStorage",
    "MultiFrameGrayscaleWordSecondaryCaptureImageStorage",
    "MultiFrameTrueColorSecondaryCaptureImageStorage", "NuclearMedicineImageStorage",
    "PositronEmissionTomographyImageStorage", "EnhancedPETImageStorage",
    "XRayAngiographicImageStorage", "XRayRadiofluoroscopicImageStorage", "RTImageStorage",
    "RTDoseStorage", "RTStructureSetStorage", "RTPlanStorage", "RTIonPlanStorage",
    "BasicTextSRStorage", "EnhancedSRStorage", "ComprehensiveSRStorage",
    "KeyObjectSelectionDocumentStorage", "EncapsulatedPDFStorage",
    "GrayscaleSoftcopyPresentationStateStorage", "SegmentationStorage", "RawDataStorage",
    "VLPhotographicImageStorage", "VLEndoscopicImageStorage", "BreastTomosynthesisImageStorage",
    "OphthalmicPhotography8BitImageStorage", "SpatialRegistrationStorage",
    "XRayRadiationDoseSRStorage", "TwelveLeadECGWaveformStorage",
    "VLWholeSlideMicroscopyImageStorage", "ParametricMapStorage",
)
"""The storage classes `aiodicom get` offers to receive (128 contexts is the PS3.8 limit)."""
_LEVEL_KEYS = {"PATIENT": "PatientID", "STUDY": "StudyInstanceUID",
               "SERIES": "SeriesInstanceUID", "IMAGE": "SOPInstanceUID"}


def build_identifier(keys: list[str], level: str) -> Any:
    """A query identifier from findscu-style ``Key=Value`` (keyword or ``gggg,eeee``)."""
    from pydicom.datadict import dictionary_VR, tag_for_keyword
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for item in keys:
        name, _, value = item.partition("=")
        name = name.strip()
        tag = tag_for_keyword(name)
        if tag is None:
            try:
                group, _, elem = name.partition(",")
                tag = (int(group.strip("() "), 16) << 16) | int(elem.strip("() "), 16)
            except ValueError:
                raise DicomError(f"-k {item}: {name!r} is neither a DICOM keyword nor "
                                 "gggg,eeee") from None
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            raise DicomError(f"-k {item}: unknown attribute {name}") from None
        if vr in ("IS", "DS") and ("*" in value or "?" in value):
            raise DicomError(f"-k {item}: {name} is a number ({vr}): wildcards do not apply "
                             "to it (PS3.4 C.2.2.2.4); give a value, or none to return it")
        with warnings.catch_warnings():  # wildcards and ranges are not valid VR values
            warnings.simplefilter("ignore")
            try:
                ds.add_new(tag, vr, [] if vr == "SQ" else (value or None))
            except (ValueError, TypeError, OverflowError) as exc:
                raise DicomError(f"-k {item}: not a valid {vr} value: {exc}") from None
    if "QueryRetrieveLevel" in ds:
        level = str(ds.QueryRetrieveLevel).upper()
    unique = _LEVEL_KEYS.get(level)
    if unique is not None and unique not in ds:
        ds.add_new(unique, dictionary_VR(unique), None)
    return ds


def _format_match(ds: Any) -> str:
    parts = []
    for elem in ds:
        if elem.keyword in ("QueryRetrieveLevel", "SpecificCharacterSet"):
            continue
        value = "" if elem.value is None else (
            "\\".join(map(str, elem.value)) if elem.VM > 1 else str(elem.value))
        parts.append(f"{elem.keyword or elem.tag}={value}")
    return "  ".join(parts)


def qr_main(args: argparse.Namespace, tls: ssl.SSLContext | None) -> int:
    """`aiodicom find|get|move`: one association, one query, the outcome on stdout."""
    from aiodicom.core.qr import qr_contexts, retrieve_contexts

    identifier = build_identifier(args.keys, args.level)
    if args.command in ("get", "move") and not args.allow_broad:
        _check_unique_keys(identifier, args.model)
    roles: Any = ()
    contexts: Any = qr_contexts()
    if args.command == "get":
        from pydicom._uid_dict import UID_dictionary

        by_keyword = {entry[4]: uid for uid, entry in UID_dictionary.items()}
        contexts, roles = retrieve_contexts([by_keyword[k] for k in _GET_STORAGE_CLASSES])

    async def go() -> int:
        async with connect(
            args.host, args.port, called_ae_title=args.called_ae, contexts=contexts,
            settings=_settings(args), tls=tls, server_hostname=args.server_name,
            user_identity=getattr(args, "user_identity", None), role_selections=roles,
        ) as assoc:
            if args.command == "find":
                async with assoc.find(identifier, model=args.model) as matches:
                    count = 0
                    async for ds in matches:
                        count += 1
                        print(_format_match(ds))
                status = matches.status
                if status is None:  # pragma: no cover - iteration ends at the final status
                    status = Status.PROCESSING_FAILURE
                print(f"C-FIND: {count} match(es); status 0x{int(status):04X} "
                      f"({status.description})", file=sys.stderr)
                return 0 if status == Status.SUCCESS else 1
            if args.command == "get":
                result = await assoc.get(identifier, model=args.model,
                                         on_store=_saver(args.out))
            else:
                result = await assoc.move(identifier, args.destination, model=args.model)
        print(f"C-{args.command.upper()}: status 0x{int(result.status):04X} "
              f"({result.status.description}); completed {result.completed}, failed "
              f"{result.failed}, warning {result.warning}")
        for uid in result.failed_sop_instances:
            print(f"  FAILED {uid}")
        return 0 if result.status == Status.SUCCESS else 1

    try:
        return run(go())
    except AssociationRejected as exc:
        print(f"aiodicom {args.command}: error: {_explain(exc, args)}", file=sys.stderr)
        return 1


def _check_unique_keys(identifier: Any, model: str) -> None:
    """Refuse to send a retrieve that does not name its unique keys (PS3.4 C.4.2.2.1):
    a peer may answer it by sending every match, or everything it holds."""
    from aiodicom.app.archive.qr_keys import IdentifierRefused, check_retrieve, read_keys

    level = str(identifier.get("QueryRetrieveLevel", "")).upper()
    try:
        check_retrieve(read_keys(identifier).texts, model, level)
    except IdentifierRefused as exc:
        raise DicomError(f"not sent: {exc}. Name the unique key(s) with -k, e.g. -k "
                         "StudyInstanceUID=1.2.3, or pass --allow-broad to send it anyway") \
            from None


def _saver(out: Path) -> Any:
    """A C-STORE handler writing Part 10 files under ``out`` (streamed, renamed when whole)."""
    from aiodicom.aio.requests import StoreRequest
    from aiodicom.app.archive.storage import Storage, StorageError, StorageSettings

    storage = Storage(StorageSettings(root=out))

    async def save(request: StoreRequest) -> Status:
        try:
            stored = await request.save(storage)
        except StorageError as exc:
            print(f"  FAILED {request.sop_instance_uid}: {exc}", file=sys.stderr)
            return Status.OUT_OF_RESOURCES
        print(f"  received {stored.path}")
        return Status.SUCCESS

    return save
