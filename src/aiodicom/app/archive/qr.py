"""The bundled server's query/retrieve over its SQLite index (PS3.4 Annex C).

C-FIND matches the identifier's keys at its Query/Retrieve Level (PATIENT, STUDY, SERIES or
IMAGE) with `Index.query` and answers each match with the keys that were asked for (keys the
index does not hold come back empty, as PS3.4 C.2.2.1.2 allows). C-GET and C-MOVE run the
same match at IMAGE level and hand the stored files to the server, which streams them as
C-STORE sub-operations. SQLite calls run in a worker thread so the event loop never waits
on the disk.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from aiodicom.aio.client import RemoteAE
from aiodicom.aio.requests import FindRequest, GetRequest, MoveRequest
from aiodicom.app.archive.index import LEVELS, Index
from aiodicom.core.dimse import Status
from aiodicom.core.negotiation import RoleSupport
from aiodicom.core.qr import qr_contexts
from aiodicom.errors import ConfigurationError

__all__ = [
    "QueryRetrieve",
    "parse_move_destinations",
    "qr_role_selection",
    "qr_sop_classes",
    "storage_sop_classes",
]

log = logging.getLogger("aiodicom.qr_scp")

_ORDER = ("PATIENT", "STUDY", "SERIES", "IMAGE")
_SKIP = frozenset({"QueryRetrieveLevel", "SpecificCharacterSet"})
_IDENTIFIER_MISMATCH = Status.DATASET_MISMATCH


def qr_sop_classes() -> list[str]:
    """FIND, GET and MOVE of the Patient Root and Study Root models."""
    return [uid for uid, _ in qr_contexts()]


def storage_sop_classes() -> list[str]:
    """Every storage SOP class pydicom knows (PS3.4 Annex B), for C-GET role selection."""
    from pydicom._uid_dict import UID_dictionary

    return sorted(uid for uid, entry in UID_dictionary.items()
                  if entry[1] == "SOP Class" and "Storage" in entry[0]
                  and "Commitment" not in entry[0])


def qr_role_selection() -> dict[str, RoleSupport]:
    """Let a C-GET requestor be SCP for every storage class (we then send it the C-STOREs)."""
    return {uid: RoleSupport(requestor_scu=True, requestor_scp=True)
            for uid in storage_sop_classes()}


def parse_move_destinations(table: Mapping[str, Any]) -> dict[str, RemoteAE]:
    """``{"DEST": "host:port"}`` (TOML ``move_destinations``) as a `RemoteAE` by AE title."""
    from aiodicom.core._negotiation_model import check_ae_title

    found: dict[str, RemoteAE] = {}
    for title, address in table.items():
        name = check_ae_title(title, "move_destinations key")
        if not isinstance(address, str):
            raise ConfigurationError(
                f"move_destinations[{title!r}] must be \"host:port\", got {address!r}")
        host, sep, port = address.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
            raise ConfigurationError(
                f"move_destinations[{title!r}] must be \"host:port\" with a port 1-65535, "
                f"got {address!r}")
        found[name] = RemoteAE(host.strip("[]"), int(port))
    return found


def _key_text(value: Any) -> str:
    """A key's value as index.query takes it; a multi-valued UID list is joined with "\\"
    (PS3.4 C.2.2.2.2)."""
    from pydicom.multival import MultiValue

    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("ascii", "replace").strip()
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(str(v) for v in value)
    return str(value).strip()


class QueryRetrieve:
    """C-FIND, C-GET and C-MOVE handlers over one storage root's index."""

    def __init__(self, root: Path, index: Index | None = None) -> None:
        self.root = Path(root)
        self._index = index

    @property
    def index(self) -> Index:
        """Opened on first use: the storage root may not exist before the first store."""
        if self._index is None:
            self.root.mkdir(parents=True, exist_ok=True)
            self._index = Index.for_root(self.root)
        return self._index

    def _filters(self, identifier: Any, level: str) -> tuple[dict[str, str], list[Any]]:
        """The matching keys the index holds at or above ``level``, and every requested
        element (to echo back)."""
        known = {k for each in _ORDER[: _ORDER.index(level) + 1] for k in LEVELS[each][1]}
        filters: dict[str, str] = {}
        requested = []
        for elem in identifier:
            keyword = elem.keyword
            if keyword in _SKIP or elem.tag.group == 0x0002:
                continue
            requested.append(elem)
            if keyword in known and elem.VR != "SQ":
                filters[keyword] = _key_text(elem.value)
        return filters, requested

    async def _match(self, identifier: Any, level: str,
                     rows_at: str | None = None) -> list[dict[str, str]] | Status:
        """Rows matching the keys of ``level`` (listed at ``rows_at``, default ``level``)."""
        if level not in LEVELS:
            log.warning("C-FIND/GET/MOVE with Query/Retrieve Level %r", level)
            return _IDENTIFIER_MISMATCH
        filters, _ = self._filters(identifier, level)
        try:
            return await asyncio.to_thread(self.index.query, rows_at or level, filters)
        except ValueError as exc:
            log.warning("query refused: %s", exc)
            return _IDENTIFIER_MISMATCH

    async def find(self, request: FindRequest) -> AsyncIterator[Any]:
        """C-FIND: one pending response per match, with the requested keys."""
        from pydicom.dataset import Dataset

        level = request.level
        rows = await self._match(request.identifier, level)
        if isinstance(rows, Status):
            yield rows, None
            return
        _, requested = self._filters(request.identifier, level)
        charset = request.identifier.get("SpecificCharacterSet")
        key = LEVELS[level][1][0]
        for row in rows:
            ds = Dataset()
            if charset:
                ds.SpecificCharacterSet = charset
            ds.QueryRetrieveLevel = level
            for elem in requested:
                if elem.keyword in row:
                    setattr(ds, elem.keyword, row[elem.keyword])
                else:
                    ds.add_new(elem.tag, elem.VR, [] if elem.VR == "SQ" else None)
            setattr(ds, key, row[key])
            yield ds

    async def _files(self, identifier: Any, level: str) -> AsyncIterator[Any]:
        rows = await self._match(identifier, level, rows_at="IMAGE")
        if isinstance(rows, Status):
            yield rows
            return
        for row in rows:
            path = Path(row["path"])
            yield path if path.is_absolute() else self.root / path

    def get(self, request: GetRequest) -> AsyncIterator[Any]:
        """C-GET: the stored files that match, sent back on the same association."""
        return self._files(request.identifier, request.level)

    def move(self, request: MoveRequest) -> AsyncIterator[Any]:
        """C-MOVE: the stored files that match, sent to the destination."""
        return self._files(request.identifier, request.level)
