"""Storage commitment for the bundled server: answered from the files it really holds.

An instance is committed when its Part 10 file is under the storage root with the SOP
class the requester names; otherwise it fails with 0x0112 (no such object instance) or
0x0119 (class/instance conflict; PS3.4 J.3.3.1.1). The index finds the file; an instance
it does not list (yet: its row is written just after the C-STORE success) is looked for
in the tree itself, ROOT/{Study}/{Series}/{SOP}.dcm, so what was stored is never reported
as missing.

An instance is committed only to the AE title that sent it (the file's Source Application
Entity Title, written from the C-STORE's calling AE): anyone else asking about it is told
0x0112, as for an instance we do not hold. Commitment must not become a way for a peer
allowed to store to learn which instances (and SOP classes) other sites sent.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from aiodicom.aio.commitment import (
    CommitFailure,
    CommitHandler,
    CommitRequest,
    CommitResult,
    FailureReason,
    Reference,
)
from aiodicom.app.archive.index import Index
from aiodicom.core.part10 import FileMeta, NotPart10Error, read_file_meta

__all__ = ["check_meta", "check_references", "make_commit_handler"]


def make_commit_handler(root: Path, index: Callable[[], Index]) -> CommitHandler:
    """The bundled server's commitment handler over ``root`` and its index (opened lazily
    by ``index()``); the disk work runs in a thread."""

    async def commit(request: CommitRequest) -> CommitResult:
        committed, failed = await asyncio.to_thread(
            check_references, Path(root), index(), request.references,
            request.association.calling_ae_title)
        return CommitResult(transaction_uid=request.transaction_uid,
                            committed=tuple(committed), failed=tuple(failed))

    return commit


def check_references(
    root: Path, index: Index | None, references: Iterable[Reference],
    requester: str | None = None,
) -> tuple[list[Reference], list[CommitFailure]]:
    """(committed, failed) for ``references``, from the files under ``root``; with
    ``requester``, only files that AE title sent count."""
    refs = list(references)
    paths: dict[str, Path] = {}
    if index is not None:
        for ref in refs:
            found = index.locate(ref.sop_instance_uid)
            if found is not None:
                paths[ref.sop_instance_uid] = found if found.is_absolute() else root / found
    missing = {r.sop_instance_uid for r in refs if r.sop_instance_uid not in paths}
    if missing:
        paths.update(_scan(root, missing))
    committed: list[Reference] = []
    failed: list[CommitFailure] = []
    for ref in refs:
        reason = _check(paths.get(ref.sop_instance_uid), ref, requester)
        if reason is None:
            committed.append(ref)
        else:
            failed.append(CommitFailure(reference=ref, reason=reason))
    return committed, failed


def _check(path: Path | None, ref: Reference, requester: str | None) -> FailureReason | None:
    if path is None:
        return FailureReason.NO_SUCH_OBJECT_INSTANCE
    try:
        with path.open("rb") as fp:
            meta = read_file_meta(fp)
    except (NotPart10Error, OSError):
        return FailureReason.NO_SUCH_OBJECT_INSTANCE
    return check_meta(meta, ref, requester)


def check_meta(meta: FileMeta | None, ref: Reference,
               requester: str | None) -> FailureReason | None:
    """Why the instance with File Meta ``meta`` (None: not held) is not committed to
    ``requester``, or None; the one rule for files and objects (app/archive/object_reads.py)."""
    if meta is None:
        return FailureReason.NO_SUCH_OBJECT_INSTANCE
    if meta.text(0x00020003) != ref.sop_instance_uid or (
        requester is not None and meta.text(0x00020016) != requester.strip()
    ):
        return FailureReason.NO_SUCH_OBJECT_INSTANCE
    if meta.text(0x00020002) != ref.sop_class_uid:
        return FailureReason.CLASS_INSTANCE_CONFLICT
    return None


def _scan(root: Path, wanted: set[str]) -> dict[str, Path]:
    """Files named {SOP Instance UID}.dcm two levels under ``root``, for the UIDs wanted.
    Names come from the directory listing, never from the peer's UIDs."""
    names = {f"{uid}.dcm": uid for uid in wanted}
    found: dict[str, Path] = {}
    try:
        studies = [e for e in os.scandir(root) if e.is_dir() and not e.name.startswith(".")]
    except OSError:
        return found
    for study in studies:
        try:
            series_dirs = [e for e in os.scandir(study.path) if e.is_dir()]
        except OSError:
            continue
        for series in series_dirs:
            try:
                entries = list(os.scandir(series.path))
            except OSError:
                continue
            for entry in entries:
                uid = names.get(entry.name)
                if uid is not None:
                    found[uid] = Path(entry.path)
                    if len(found) == len(names):
                        return found
    return found
