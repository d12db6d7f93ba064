"""The bundled server's query/retrieve over its SQLite index (PS3.4 Annex C).

C-FIND checks the identifier against its information model (qr_keys: the levels, the
unique keys above the Query/Retrieve Level), matches its keys with the index a page at a
time (matching), and answers each match with the keys asked for, the unique keys of its
level and the levels above, Retrieve AE Title and a Specific Character Set that holds the
text; keys the index neither holds nor computes come back empty with 0xFF01. C-GET and
C-MOVE match only the unique keys (a retrieve without them is refused, 0xA900), give the
server a count of the matches first (a `RetrievePlan`: one paged pass, no rows held), then
the stored files one at a time as it sends each C-STORE sub-operation: with an object store
each one is fetched to staging just before its sub-operation and removed after. SQLite calls
run in a worker thread so the event loop never waits on the disk. docs/conformance.md
("Query/Retrieve") states all of it for users.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from aiodicom.aio.qr_service import RetrievePlan
from aiodicom.aio.requests import FindRequest, GetRequest, MoveRequest
from aiodicom.app.archive.index import LEVELS, Index
from aiodicom.app.archive.index_writer import settled
from aiodicom.app.archive.matching import COMPUTED
from aiodicom.app.archive.qr_keys import (
    UNIQUE_KEYS,
    IdentifierRefused,
    QueryKeys,
    check_query,
    check_retrieve,
    levels_of,
    read_keys,
    response_charset,
)
from aiodicom.app.archive.storage import StorageError
from aiodicom.core.dimse import Status
from aiodicom.core.negotiation import RoleSupport
from aiodicom.core.qr import qr_contexts

__all__ = [
    "QueryRetrieve",
    "qr_role_selection",
    "qr_sop_classes",
    "storage_sop_classes",
]

log = logging.getLogger("aiodicom.qr_scp")

_ORDER = ("PATIENT", "STUDY", "SERIES", "IMAGE")
_IDENTIFIER_MISMATCH = Status.DATASET_MISMATCH
_UNABLE_TO_PROCESS = Status.CANNOT_UNDERSTAND
"""0xC000, "unable to process" for C-FIND/GET/MOVE (PS3.4 C.4.1.1.4): the index is down."""


def qr_sop_classes() -> list[str]:
    """FIND, GET and MOVE of the Patient Root and Study Root models."""
    return [uid for uid, _ in qr_contexts()]


def storage_sop_classes() -> list[str]:
    """Every storage SOP class pydicom knows (PS3.4 Annex B), for C-GET role selection."""
    from aiodicom.app.archive._storage_classes import STORAGE_SOP_CLASSES

    return list(STORAGE_SOP_CLASSES)


def qr_role_selection() -> dict[str, RoleSupport]:
    """Let a C-GET requestor be SCP for every storage class (we then send it the C-STOREs)."""
    return {uid: RoleSupport(requestor_scu=True, requestor_scp=True)
            for uid in storage_sop_classes()}


def _plan(index: Index, filters: Mapping[str, str]) -> tuple[int, dict[str, list[str]]]:
    """How many instances match, and their SOP classes' stored transfer syntaxes: one pass
    over the index's pages, holding one page at a time."""
    total = 0
    contexts: dict[str, list[str]] = {}
    for page in index.pages("IMAGE", filters):
        total += len(page)
        for row in page:
            syntaxes = contexts.setdefault(row["SOPClassUID"], [])
            if row["TransferSyntaxUID"] not in syntaxes:
                syntaxes.append(row["TransferSyntaxUID"])
    return total, contexts


def _modalities(text: str) -> list[str]:
    return sorted({m for m in text.split(",") if m})


class QueryRetrieve:
    """C-FIND, C-GET and C-MOVE handlers over one storage root's index.

    ``ae_title`` is returned as Retrieve AE Title (0008,0054); by default the AE title the
    requestor called us by.
    """

    def __init__(self, root: Path, index: Index | None = None, *,
                 ae_title: str | None = None,
                 fetch: Callable[[str], Awaitable[Path]] | None = None) -> None:
        self.root = Path(root)
        self._index = index
        self.ae_title = ae_title
        self._fetch = fetch
        """For an object store: the index's key -> a local copy to send (backend.py)."""

    @property
    def index(self) -> Index:
        """Opened on first use: the storage root may not exist before the first store."""
        if self._index is None:
            self.root.mkdir(parents=True, exist_ok=True)
            self._index = Index.for_root(self.root)
        return self._index

    async def find(self, request: FindRequest) -> AsyncIterator[Any]:
        """C-FIND: one pending response per match, with the requested keys (PS3.4 C.4.1).

        0xFF01 when a key could not be matched or returned (C.2.2.1.2); 0xA900 for a level
        the model lacks or a missing unique key above the level (C.4.1.2.1).
        """
        level, model = request.level, request.model
        try:
            keys = read_keys(request.identifier)
            levels = levels_of(model, level)
            check_query(keys.texts, model, level)
        except IdentifierRefused as exc:
            log.warning("C-FIND refused: %s", exc)
            yield _IDENTIFIER_MISMATCH, None
            return
        included = _ORDER[: _ORDER.index(level) + 1]
        held = {k for each in included for k in LEVELS[each][1]}
        computable = {k for each in included for k in COMPUTED[each]}
        filters = {k: v for k, v in keys.texts.items() if k in held or (
            k == "ModalitiesInStudy" and k in computable)}
        computed = tuple(k for k in keys.texts if k in computable)
        unmatched = [k for k, v in keys.texts.items()
                     if k != "RetrieveAETitle" and (k not in held | computable or (
                         v and k in computable and k not in filters))]
        if unmatched:
            log.info("C-FIND: keys not matched or not held, answered 0xFF01: %s",
                     ", ".join(unmatched))
        status = Status.PENDING_WARNING if unmatched else Status.PENDING
        retrieve_ae = self.ae_title or request.association.called_ae_title
        await settled(self.index.key)  # the stores already answered are in the index
        try:
            pages = await asyncio.to_thread(self.index.pages, level, filters, computed)
        except ValueError as exc:
            log.warning("query refused: %s", exc)
            yield _IDENTIFIER_MISMATCH, None
            return
        try:
            while (page := await asyncio.to_thread(next, pages, None)) is not None:
                for row in page:
                    yield status, _response(row, keys, level, levels, retrieve_ae)
        except StorageError as exc:  # the index server is down: say so, never hang
            log.error("C-FIND failed: %s", exc)
            yield _UNABLE_TO_PROCESS, None

    async def _files(self, request: GetRequest | MoveRequest) -> AsyncIterator[Any]:
        """The stored files a retrieve names by its unique keys (PS3.4 C.4.2.2.1), else
        0xA900: without one, a retrieve would move whatever matched, or all."""
        level, model = request.level, request.model
        try:
            keys = read_keys(request.identifier)
            filters = check_retrieve(keys.texts, model, level)
        except IdentifierRefused as exc:
            log.warning("C-%s refused: %s", "MOVE" if isinstance(request, MoveRequest)
                        else "GET", exc)
            yield _IDENTIFIER_MISMATCH
            return
        what = "MOVE" if isinstance(request, MoveRequest) else "GET"
        await settled(self.index.key)
        try:  # a count first: nothing is held or fetched before the first sub-operation
            total, contexts = await asyncio.to_thread(_plan, self.index, filters)
        except StorageError as exc:  # the index server is down: say so, never hang
            log.error("C-%s failed: %s", what, exc)
            yield _UNABLE_TO_PROCESS
            return
        yield RetrievePlan(total, contexts, lambda: self._uids(filters))
        pages = await asyncio.to_thread(self.index.pages, "IMAGE", filters)
        while True:
            try:
                page = await asyncio.to_thread(next, pages, None)
            except StorageError as exc:  # the index server is down: say so, never hang
                log.error("C-%s failed: %s", what, exc)
                yield _UNABLE_TO_PROCESS
                return
            if page is None:
                return
            for n in range(len(page)):  # each row dropped once it is sent
                row, page[n] = page[n], {}
                if self._fetch is not None:  # staged now, removed once sent
                    yield await self._fetch(row["path"])
                    continue
                path = Path(row["path"])
                yield path if path.is_absolute() else self.root / path

    async def _uids(self, filters: Mapping[str, str]) -> AsyncIterator[str]:
        """The SOP Instance UIDs a retrieve matches, a page at a time."""
        pages = await asyncio.to_thread(self.index.pages, "IMAGE", filters)
        while (page := await asyncio.to_thread(next, pages, None)) is not None:
            for row in page:
                yield row["SOPInstanceUID"]

    def get(self, request: GetRequest) -> AsyncIterator[Any]:
        """C-GET: the stored files that match, sent back on the same association."""
        return self._files(request)

    def move(self, request: MoveRequest) -> AsyncIterator[Any]:
        """C-MOVE: the stored files that match, sent to the destination."""
        return self._files(request)


def _response(row: Mapping[str, str], keys: QueryKeys, level: str, levels: tuple[str, ...],
              retrieve_ae: str) -> Any:
    """One C-FIND match: the requested keys, the unique keys of its level and the levels
    above (C.4.1.2.1), Retrieve AE Title, and a character set that holds the text."""
    from pydicom.dataset import Dataset
    from pydicom.multival import MultiValue

    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for elem in keys.requested:
        keyword = elem.keyword
        if keyword == "ModalitiesInStudy" and keyword in row:
            ds.ModalitiesInStudy = _modalities(row[keyword])
        elif keyword in row and row[keyword] != "":
            setattr(ds, keyword, row[keyword])
        elif keyword != "RetrieveAETitle":
            ds.add_new(elem.tag, elem.VR, [] if elem.VR == "SQ" else None)
    for each in levels:
        setattr(ds, UNIQUE_KEYS[each], row[UNIQUE_KEYS[each]])
    ds.RetrieveAETitle = retrieve_ae
    charset = response_charset(  # of the answer's own text, not the whole row's
        str(v) for e in ds if e.VR not in ("SQ", "UI") and e.value is not None
        for v in (e.value if isinstance(e.value, list | MultiValue) else [e.value]))
    if charset is not None:
        ds.SpecificCharacterSet = charset
    return ds
