"""Byte cursors for decoding and encoding, and the incremental PDU receive buffer.

Theory of operation
-------------------
Decoding reads a memoryview through a `Reader` cursor that checks every length against
what is left of the enclosing structure and raises `InvalidPDU` (with the offset from the
PDU start) on any underrun: nothing is sliced out of ``bytes``, nothing is trusted.

Encoding writes into one bytearray through a `Writer`; a structure's length field is
reserved first and back-patched when the structure ends (aioquic's ``push_block``).

Receiving: `ReceiveBuffer` turns a byte stream in any chunking into whole PDUs. An asyncio
``BufferedProtocol`` asks it where to put the next bytes (`get_buffer`) and tells it how
many arrived (`buffer_updated`); tests and fuzzers call `feed`. Bytes land first in a
small staging area that is reused. As soon as a 6-byte header is complete, its length is
checked against our maximum, before any storage for the body exists; then the body gets
its own storage, which is never reused or resized while views of it may live, so P-DATA
values can go up as memoryviews over it. A P-DATA-TF that arrived whole in the staging
area and fills at least 1/8 of it is handed up as a view of it (no copy): that staging
area is then never written again (a partial header after it moves to a new one); a smaller
one is copied out, so a kept value never pins more than 8 times its PDU. Body storage
grows only as bytes arrive (geometrically, from the staging size), so a peer that only
*claims* a large PDU makes us allocate nothing for it: storage is at most 16 times the
body bytes received, or the staging size, except that a body whose first bytes are at
least 1/64 of it gets its whole declared length at once (a 128 KiB PDU after a 4 KiB first
read: no 64 KiB step, no copy of it, one read fewer). While a large body is outstanding,
`get_buffer` returns a view straight into that body, so the kernel (or the TLS layer)
writes it in place: the only copies of a large PDU are the part that arrived with its
header and the growth steps.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import NoReturn

from aiodicom.errors import AbortReason, InvalidPDU

__all__ = [
    "PDU_HEADER_LENGTH",
    "RawPDU",
    "ReadableBuffer",
    "Reader",
    "ReceiveBuffer",
    "Writer",
]

ReadableBuffer = bytes | bytearray | memoryview

PDU_HEADER_LENGTH = 6
_HEADER = struct.Struct(">BxL")

_BODY_GROWTH = 16
"""Body storage starts at the staging size and grows by this factor as bytes arrive: a
1 MiB PDU is read into 4 KiB, 64 KiB, then 1 MiB (68 KiB copied), in large reads."""
_EXACT_RATIO = 64
"""A body whose first bytes are at least 1/64 of its declared length is allocated whole."""
_SHARE_RATIO = 8
"""A P-DATA-TF whole in the staging area goes up as a view of it only if it is at least 1/8
of it; a smaller one is copied out: a peer sending tiny PDUs one per read would otherwise
pin a whole staging area per few bytes with each value a consumer keeps (a pending command
fragment, a queued data-set fragment: tests/core/test_stage_pinning.py)."""
_P_DATA_TF = 0x04
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">L")


class Reader:
    """A bounds-checked cursor over a memoryview; offsets are reported from the PDU start."""

    __slots__ = ("_end", "_pos", "_view", "base")

    def __init__(self, data: ReadableBuffer, base: int = 0) -> None:
        view = data if isinstance(data, memoryview) else memoryview(data)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        self._view = view
        self._pos = 0
        self._end = len(view)
        self.base = base
        """Offset of this view's first byte within the PDU, for error messages."""

    @property
    def offset(self) -> int:
        """Absolute offset (from the PDU start) of the next byte to read."""
        return self.base + self._pos

    @property
    def remaining(self) -> int:
        return self._end - self._pos

    def at_end(self) -> bool:
        return self._pos >= self._end

    def _short(self, n: int, what: str) -> NoReturn:
        raise InvalidPDU(
            f"{what} needs {n} bytes but only {self._end - self._pos} remain",
            offset=self.offset,
        )

    # The common case inline (no call); _short words the refusal.

    def u8(self, what: str = "byte") -> int:
        pos = self._pos
        if pos >= self._end:
            self._short(1, what)
        self._pos = pos + 1
        return self._view[pos]

    def u16(self, what: str = "16-bit field") -> int:
        pos = self._pos
        if self._end - pos < 2:
            self._short(2, what)
        self._pos = pos + 2
        return int(_U16.unpack_from(self._view, pos)[0])

    def u32(self, what: str = "32-bit field") -> int:
        pos = self._pos
        if self._end - pos < 4:
            self._short(4, what)
        self._pos = pos + 4
        return int(_U32.unpack_from(self._view, pos)[0])

    def skip(self, n: int, what: str = "reserved bytes") -> None:
        if n > self._end - self._pos:
            self._short(n, what)
        self._pos += n

    def take(self, n: int, what: str = "field") -> memoryview:
        """The next ``n`` bytes as a view (no copy)."""
        if n < 0:
            raise InvalidPDU(f"{what} has a negative length", offset=self.offset)
        pos = self._pos
        if n > self._end - pos:
            self._short(n, what)
        self._pos = pos + n
        return self._view[pos : pos + n]

    def sub(self, n: int, what: str = "item") -> Reader:
        """A reader over the next ``n`` bytes, keeping absolute offsets."""
        start = self.base + self._pos
        view = self.take(n, what)  # a slice of a 1-D byte view: no format check needed
        reader = Reader.__new__(Reader)
        reader._view, reader._pos, reader._end, reader.base = view, 0, len(view), start
        return reader

    def rest(self) -> memoryview:
        return self.take(self._end - self._pos, "rest")


class Writer:
    """Builds a PDU in one bytearray, back-patching length fields."""

    __slots__ = ("buf",)

    def __init__(self) -> None:
        self.buf = bytearray()

    def u8(self, value: int) -> None:
        self.buf.append(value)

    def u16(self, value: int) -> None:
        self.buf += _U16.pack(value)

    def u32(self, value: int) -> None:
        self.buf += _U32.pack(value)

    def write(self, data: ReadableBuffer) -> None:
        self.buf += data

    def zeros(self, n: int) -> None:
        self.buf += bytes(n)

    def reserve_u16(self) -> int:
        """Reserve a 16-bit length; returns the position to pass to `patch_u16`."""
        pos = len(self.buf)
        self.buf += b"\0\0"
        return pos

    def reserve_u32(self) -> int:
        pos = len(self.buf)
        self.buf += b"\0\0\0\0"
        return pos

    def patch_u16(self, pos: int) -> None:
        """Fill the length at ``pos`` with the number of bytes written after it."""
        length = len(self.buf) - pos - 2
        if length > 0xFFFF:
            raise ValueError(f"item of {length} bytes does not fit a 16-bit length")
        _U16.pack_into(self.buf, pos, length)

    def patch_u32(self, pos: int) -> None:
        length = len(self.buf) - pos - 4
        if length > 0xFFFFFFFF:  # pragma: no cover - needs a 4 GiB PDU in memory
            raise ValueError(f"PDU of {length} bytes does not fit a 32-bit length")
        _U32.pack_into(self.buf, pos, length)

    def getvalue(self) -> bytes:
        return bytes(self.buf)


@dataclass(frozen=True, slots=True)
class RawPDU:
    """A complete PDU as received: its type byte and a view of its body (after the header)."""

    pdu_type: int
    body: memoryview


_new_object = object.__new__
_set_raw_type = RawPDU.__dict__["pdu_type"].__set__
_set_raw_body = RawPDU.__dict__["body"].__set__


def _raw_pdu(pdu_type: int, body: memoryview) -> RawPDU:
    """``RawPDU(pdu_type, body)`` without the frozen ``__init__`` (a third of its cost)."""
    pdu: RawPDU = _new_object(RawPDU)
    _set_raw_type(pdu, pdu_type)
    _set_raw_body(pdu, body)
    return pdu


class ReceiveBuffer:
    """Assembles PDUs from a byte stream in any chunking (see the module docstring).

    ``max_body`` is the largest PDU body (the 4-byte length field) we accept; a header
    claiming more is refused before anything is allocated for it.
    """

    __slots__ = (
        "_body",
        "_body_fill",
        "_body_len",
        "_body_type",
        "_max_body",
        "_ready",
        "_ready_at",
        "_stage",
        "_stage_fill",
        "_stage_view",
        "_staging_size",
        "_stream_offset",
    )

    def __init__(self, max_body: int, staging_size: int = 4096) -> None:
        if max_body < 4:
            raise ValueError("max_body must be at least 4")
        self._max_body = max_body
        self._staging_size = max(staging_size, PDU_HEADER_LENGTH)
        self._stage: bytearray | None = None  # allocated per read, dropped when drained
        self._stage_view: memoryview | None = None
        self._stage_fill = 0
        self._body: bytearray | None = None
        self._body_fill = 0
        self._body_len = 0
        self._body_type = 0
        self._ready: list[RawPDU] | None = None  # made per batch: an idle connection holds none
        self._ready_at = 0  # the next one to hand out
        self._stream_offset = 0

    @property
    def max_body(self) -> int:
        """The largest PDU body accepted now; changing it applies to the next header."""
        return self._max_body

    @max_body.setter
    def max_body(self, value: int) -> None:
        if value < 4:
            raise ValueError("max_body must be at least 4")
        self._max_body = value

    @property
    def buffered(self) -> int:
        """Bytes held that are not yet part of a complete PDU."""
        return self._stage_fill + self._body_fill

    def has_partial(self) -> bool:
        return self._stage_fill > 0 or self._body is not None

    # -- the BufferedProtocol side -------------------------------------------------------

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        """Where the next received bytes should go; valid until `buffer_updated`."""
        body = self._body
        if body is not None:
            if self._body_fill == len(body):
                body = self._grow_body(self._body_fill + 1)
            return memoryview(body)[self._body_fill :]
        if self._stage_view is None:
            self._stage = bytearray(self._staging_size)
            self._stage_view = memoryview(self._stage)
        return self._stage_view[self._stage_fill :]

    def buffer_updated(self, nbytes: int) -> None:
        """``nbytes`` were written into the view `get_buffer` returned; may raise InvalidPDU."""
        if self._body is not None:
            self._body_fill += nbytes
            if self._body_fill == self._body_len:
                self._finish_body()
            return
        self._stage_fill += nbytes
        self._drain_stage()

    def feed(self, data: ReadableBuffer) -> None:
        """Copy ``data`` in (the sans-I/O path for tests, fuzzers and plain sockets)."""
        view = data if isinstance(data, memoryview) else memoryview(data)
        view = view.cast("B") if view.format != "B" else view
        pos, end = 0, len(view)
        while pos < end:
            target = self.get_buffer()
            n = min(len(target), end - pos)
            target[:n] = view[pos : pos + n]
            pos += n
            self.buffer_updated(n)

    def next_pdu(self) -> RawPDU | None:
        """The oldest complete PDU, or None."""
        ready = self._ready
        if ready is None:
            return None
        at = self._ready_at
        pdu = ready[at]
        at += 1
        if at == len(ready):
            self._ready = None
            self._ready_at = 0
        else:
            self._ready_at = at
        return pdu

    def __iter__(self) -> ReceiveBuffer:
        return self

    def __next__(self) -> RawPDU:
        pdu = self.next_pdu()
        if pdu is None:
            raise StopIteration
        return pdu

    def _complete(self, pdu: RawPDU) -> None:
        ready = self._ready
        if ready is None:
            self._ready = [pdu]
        else:
            ready.append(pdu)

    # -- internals ------------------------------------------------------------------------

    def _drain_stage(self) -> None:
        stage = self._stage_view
        assert stage is not None
        pos, fill = 0, self._stage_fill
        shared = False  # a P-DATA-TF went up as a view of this stage: never write it again
        stage_size = self._staging_size
        while fill - pos >= PDU_HEADER_LENGTH:
            pdu_type, length = _HEADER.unpack_from(stage, pos)
            if length > self._max_body:
                self._stage_fill = 0  # and a new stage: views of this one may have gone up
                self._stage = None
                self._stage_view = None
                raise InvalidPDU(
                    f"PDU type 0x{pdu_type:02X} declares a length of {length} bytes, "
                    f"over our limit of {self._max_body}",
                    offset=self._stream_offset + 2,  # already counts PDUs drained above
                    reason=AbortReason.INVALID_PDU_PARAMETER_VALUE,
                )
            start = pos + PDU_HEADER_LENGTH
            have = fill - start
            if have >= length:
                # Whole PDU in the staging area. A P-DATA-TF of 1/8 of it or more goes up as
                # a view of it (the stage is dropped or replaced below, never reused); the
                # rest is copied out, so nothing kept of it can pin a whole stage.
                end = start + length
                if pdu_type == _P_DATA_TF and length * _SHARE_RATIO >= stage_size:
                    body_view = stage[start:end]
                    shared = True
                else:
                    body_view = memoryview(bytearray(stage[start:end]))
                raw = _new_object(RawPDU)  # _raw_pdu and _complete, inline: once per PDU
                _set_raw_type(raw, pdu_type)
                _set_raw_body(raw, body_view)
                ready = self._ready
                if ready is None:
                    self._ready = [raw]
                else:
                    ready.append(raw)
                pos = end
                self._stream_offset += PDU_HEADER_LENGTH + length
                continue
            # Start a body: take what arrived, then let the transport write the rest in place.
            self._body_type = pdu_type
            self._body_len = length
            # As big as 16x what arrived (as every growth step): the next read can take the
            # rest of a moderate PDU in place, and a mere claim still allocates little. If
            # what arrived is 1/64 of the PDU or more, the whole of it at once.
            if length <= have * _EXACT_RATIO:
                body = bytearray(length)
            else:
                body = bytearray(min(length, max(self._staging_size, have * _BODY_GROWTH)))
            memoryview(body)[:have] = stage[start:fill]  # one copy (a bytearray slice: two)
            self._body = body
            self._body_fill = have
            self._stream_offset += PDU_HEADER_LENGTH
            self._stage_fill = 0
            self._stage = None
            self._stage_view = None
            return
        # Keep a partial header at the front of the staging area.
        rest = fill - pos
        if rest and shared:
            fresh = bytearray(self._staging_size)
            fresh[:rest] = stage[pos:fill]
            self._stage = fresh
            self._stage_view = memoryview(fresh)
        elif rest and pos:
            stage[:rest] = stage[pos:fill]
        self._stage_fill = rest
        if not rest:  # drained: an idle connection holds no buffer at all
            self._stage = None
            self._stage_view = None

    def _grow_body(self, need: int) -> bytearray:
        old = self._body
        assert old is not None
        size = min(self._body_len, max(need, len(old) * _BODY_GROWTH))
        new = bytearray(size)
        fill = self._body_fill
        memoryview(new)[:fill] = memoryview(old)[:fill]  # one copy (a bytearray slice: two)
        self._body = new
        return new

    def _finish_body(self) -> None:
        body = self._body
        assert body is not None
        view = memoryview(body)
        if len(body) != self._body_len:  # pragma: no cover - grow always ends exact
            view = view[: self._body_len]
        self._complete(_raw_pdu(self._body_type, view))
        self._stream_offset += self._body_len
        self._body = None
        self._body_fill = 0
        self._body_len = 0
