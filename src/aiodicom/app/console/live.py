"""Connected now: the live associations of the `Server` running in this process.

`LiveAssociations.attach` chains an observer in front of the server's own (logs, metrics,
audit keep theirs) to note when each association was accepted and count its completed
operations; the list itself is the server's set of active associations, so it never drifts
from what the server holds. Aborting one sends an A-ABORT and drops the connection.
"""

from __future__ import annotations

import time
from typing import Any

from aiodicom.aio.events import AssociationAccepted, AssociationEnded, RequestCompleted

__all__ = ["LiveAssociations"]


class LiveAssociations:
    """A view of ``server.stats.active``, with per-association since/operations."""

    def __init__(self, server: Any | None) -> None:
        self.server = server
        self._since: dict[int, float] = {}
        self._operations: dict[int, int] = {}
        if server is not None:
            self.attach(server)

    def attach(self, server: Any) -> None:
        inner = server.observer

        def observe(event: Any) -> None:
            self.note(event)
            if inner is not None:
                inner(event)

        server.observer = observe

    def note(self, event: Any) -> None:
        if isinstance(event, AssociationAccepted):
            self._since[event.info.id] = time.time()
        elif isinstance(event, RequestCompleted):
            ident = event.info.id
            self._operations[ident] = self._operations.get(ident, 0) + 1
        elif isinstance(event, AssociationEnded) and event.info is not None:
            self._since.pop(event.info.id, None)
            self._operations.pop(event.info.id, None)

    def rows(self) -> list[dict[str, Any]]:
        if self.server is None:
            return []
        rows = []
        for assoc in list(self.server.stats.active):
            info = getattr(assoc, "info", None)
            if info is None:  # still negotiating
                continue
            identity = info.identity
            protocol = getattr(assoc, "protocol", None)
            since = self._since.get(info.id)
            rows.append({
                "id": info.id,
                "peer": f"{info.peer_address[0]}:{info.peer_address[1]}"
                if info.peer_address else "",
                "calling_ae": info.calling_ae_title.strip(),
                "called_ae": info.called_ae_title.strip(),
                "subject": getattr(identity, "subject", None),
                "organization": getattr(identity, "organization", None),
                "serial": format(identity.serial, "X") if identity is not None else None,
                "user": info.user,
                "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(since))
                if since else None,
                "bytes_received": int(getattr(protocol, "bytes_received", 0) or 0),
                "operations": self._operations.get(info.id, 0),
                "in_progress": len(getattr(assoc, "operations", {}) or {}),
            })
        rows.sort(key=lambda r: r["id"])
        return rows

    def abort(self, assoc_id: int) -> dict[str, Any] | None:
        """A-ABORT the association `assoc_id`; its row (before) or None if it is gone."""
        if self.server is None:
            return None
        for row in self.rows():
            if row["id"] == assoc_id:
                for assoc in list(self.server.stats.active):
                    info = getattr(assoc, "info", None)
                    if info is not None and info.id == assoc_id:
                        assoc.abort()
                        return row
        return None

    def abort_serial(self, serial_hex: str) -> list[dict[str, Any]]:
        """Abort every live association authenticated by the certificate `serial_hex`."""
        aborted = []
        for row in self.rows():
            if row["serial"] == serial_hex:
                done = self.abort(row["id"])
                if done is not None:
                    aborted.append(done)
        return aborted
