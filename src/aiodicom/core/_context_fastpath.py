"""A-ASSOCIATE-RQ presentation contexts of the common shape, decoded by position (issue 18).

Private helper of `aiodicom.core._item_codec`, like `aiodicom.core.dimse._fastpath` is of the
DIMSE decoder: the fast path handles only what is plainly well formed and returns None for
anything else, so the general decoder alone decides (and words) every refusal and every
lenient skip. tests/core/test_context_fastpath.py and fuzz_pdu check that the two agree.
"""

from __future__ import annotations

from typing import Final

from aiodicom.core._uid_cache import wire_uid
from aiodicom.core.buffer import Reader
from aiodicom.core.items import ItemType, PresentationContextRQ

__all__ = ["context_rq_common"]

ABSTRACT: Final = int(ItemType.ABSTRACT_SYNTAX)
TRANSFER: Final = int(ItemType.TRANSFER_SYNTAX)


def context_rq_common(r: Reader) -> PresentationContextRQ | None:
    """The well-formed context of every proposal, walked by position; None for anything else.

    A storescu proposal is ~120 contexts of 4-5 sub-items, and a `Reader` per sub-item was
    most of its decode. Here each sub-item is read in place; the first thing that is not the
    plain shape (odd ID, one sub-item 0x30 and one or more 0x40, each a UID under the wire rule)
    returns None without moving ``r``, and the general decoder decides and words it.
    """
    view, pos, end = r._view, r._pos, r._end  # the codec's own cursor, read in place
    cid = view[pos] if pos < end else 0
    if not cid & 1:
        return None
    p = pos + 4
    abstract: str | None = None
    transfer: list[str] = []
    while p < end:
        if end - p < 4:
            return None
        item_type = view[p]
        length = (view[p + 2] << 8) | view[p + 3]
        p += 4
        if not 0 < length <= end - p:
            return None
        uid = wire_uid(bytes(view[p : p + length]))
        p += length
        if uid is None:
            return None
        if item_type == TRANSFER:
            transfer.append(uid)
        elif item_type == ABSTRACT and abstract is None:
            abstract = uid
        else:
            return None
    if abstract is None or not transfer:
        return None
    r._pos = end
    return PresentationContextRQ(
        context_id=cid, abstract_syntax=abstract, transfer_syntaxes=tuple(transfer)
    )
