"""Caps on unauthenticated work: TLS handshakes in progress and connections not yet associated.

Before its A-ASSOCIATE-RQ has arrived, a peer has proved nothing, yet each connection costs
memory: a TLS handshake holds OpenSSL state and the loop's TLS buffers (~70-100 KiB), a
connection waiting for its A-ASSOCIATE-RQ holds up to `ConnectionLimits.max_associate_length`
bytes for the ARTIM timeout. Each kind is counted per server and per peer address. Over the
per-peer cap a new connection is closed at once; at the server-wide cap the *oldest* pending
one is dropped, so a flood of stalled connections from many addresses delays legitimate peers
(whose handshakes take milliseconds) instead of locking them out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from aiodicom.errors import ConfigurationError

__all__ = ["ConnectionLimits", "PendingGate"]

log = logging.getLogger("aiodicom.server")

MAX_ASSOCIATE_LENGTH = 128 * 1024
"""The longest A-ASSOCIATE-RQ body accepted. Real ones are a few KiB: 128 presentation
contexts with 10 transfer syntaxes each are ~40 KiB; the bound leaves room for a user
identity sub-item (up to 64 KiB, PS3.7 D.3.3.7) besides."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionLimits:
    """How much unauthenticated work a `Server` takes on (docs/security.md, threat model)."""

    max_pending_handshakes: int = 256
    """TLS handshakes in progress, server-wide; at the cap the oldest is dropped."""
    max_pending_handshakes_per_peer: int = 64
    """TLS handshakes in progress from one IP address; more are closed at once. A client
    opening a burst of associations at once (a router, a gateway behind NAT) needs room."""
    max_pre_association: int = 1024
    """Connections waiting for their A-ASSOCIATE-RQ, server-wide; the oldest is dropped."""
    max_pre_association_per_peer: int = 64
    """Connections from one IP address waiting for their A-ASSOCIATE-RQ."""
    max_associate_length: int = MAX_ASSOCIATE_LENGTH
    """The longest PDU accepted before the association is established (A-ABORT beyond)."""

    def __post_init__(self) -> None:
        for name in ("max_pending_handshakes", "max_pending_handshakes_per_peer",
                     "max_pre_association", "max_pre_association_per_peer"):
            if getattr(self, name) < 1:
                raise ConfigurationError(f"{name} must be at least 1")
        if self.max_associate_length < 4096:
            raise ConfigurationError("max_associate_length must be at least 4096")


class PendingGate:
    """Counts pending items per peer address; refuses over the per-peer cap, evicts the oldest
    over the total. `drop` is how an evicted item is ended (it must not call `release`)."""

    def __init__(self, *, total: int, per_peer: int, what: str) -> None:
        self.total = total
        self.per_peer = per_peer
        self.what = what
        self._items: dict[Hashable, tuple[str, Callable[[], None]]] = {}
        self._peers: dict[str, int] = {}  # a plain dict: Counter's __missing__ and
        # __delitem__ are Python functions, called per connection
        self.refused = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._items)

    def count(self, peer: str) -> int:
        return self._peers.get(peer, 0)

    def admit(self, key: Hashable, peer: str, drop: Callable[[], None]) -> bool:
        """Count `key` from `peer`; False (caller closes it) when `peer` is at its cap."""
        pending = self._peers.get(peer, 0)
        if pending >= self.per_peer:
            self.refused += 1
            if self.refused == 1 or self.refused % 100 == 0:
                log.warning("%s from %s refused: %d in progress is the per-address limit "
                            "(%d refused so far)", self.what, peer, self.per_peer, self.refused)
            return False
        while len(self._items) >= self.total:
            old_key, (_, old_drop) = next(iter(self._items.items()))
            self.release(old_key)
            self.evicted += 1
            if self.evicted == 1 or self.evicted % 100 == 0:
                log.warning("%d %s in progress is the limit: dropped the oldest (%d so far)",
                            self.total, self.what, self.evicted)
            try:
                old_drop()
            except Exception:  # pragma: no cover - a drop must never stop the accept path
                log.exception("could not drop a pending %s", self.what)
        self._items[key] = (peer, drop)
        self._peers[peer] = self._peers.get(peer, 0) + 1  # eviction may have lowered it
        return True

    def release(self, key: Hashable) -> None:
        """`key` is no longer pending (done, failed or gone); unknown keys are ignored."""
        entry = self._items.pop(key, None)
        if entry is None:
            return
        peer = entry[0]
        left = self._peers.get(peer, 0) - 1
        if left <= 0:
            self._peers.pop(peer, None)
        else:
            self._peers[peer] = left

    def drop_all(self) -> None:
        for key, (_, drop) in list(self._items.items()):
            self.release(key)
            try:
                drop()
            except Exception:  # pragma: no cover
                log.exception("could not drop a pending %s", self.what)
