"""Bounded caches of UIDs as the PDU codec decodes and encodes them (issue 18).

Every association repeats the same few hundred UIDs (the application context, SOP classes,
transfer syntaxes, implementation class UIDs). A hit skips the wire-rule check and the
conversion, and hands the negotiation a str whose hash is already computed. Only values
the wire rule (`aiodicom.core.uids.uid_from_wire` / `is_uid_syntax`) accepts are cached,
so a hit answers exactly what the rule would; each cache is emptied when full, so a peer
sending random UIDs costs only misses and at most `UID_CACHE_SIZE` entries (~150 KB).
"""

from __future__ import annotations

from typing import Final

from aiodicom.core.uids import is_uid_syntax, uid_from_wire

__all__ = ["UID_CACHE_SIZE", "uid_bytes", "wire_uid"]

UID_CACHE_SIZE: Final = 1024
_DECODED: Final[dict[bytes, str]] = {}
_ENCODED: Final[dict[str, bytes]] = {}


def wire_uid(raw: bytes) -> str | None:
    """`uid_from_wire` of a received value (one trailing NUL allowed); None if refused."""
    uid = _DECODED.get(raw)
    if uid is None:
        uid = uid_from_wire(raw)
        if uid is not None:
            if len(_DECODED) >= UID_CACHE_SIZE:
                _DECODED.clear()
            _DECODED[raw] = uid
    return uid


def uid_bytes(uid: str) -> bytes | None:
    """The bytes to send for ``uid``, or None if it breaks the wire rule (`is_uid_syntax`)."""
    raw = _ENCODED.get(uid)
    if raw is None:
        if not is_uid_syntax(uid):
            return None
        raw = uid.encode("ascii")
        if len(_ENCODED) >= UID_CACHE_SIZE:
            _ENCODED.clear()
        _ENCODED[uid] = raw
    return raw
