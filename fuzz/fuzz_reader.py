"""Fuzz `ReceiveBuffer`: PDU framing must not depend on how the stream is chunked.

The input is a byte stream plus a trailer of control values (read from the end, as
libFuzzer's FuzzedDataProvider does): the PDU size limit, the staging size, the feeding
path (`feed` or the ``BufferedProtocol`` pair `get_buffer`/`buffer_updated`) and the chunk
sizes. Properties:

- the stream fed in fuzzer-chosen chunks (and whole) yields exactly the PDUs a 20-line
  reference framer finds (type and body), and `InvalidPDU` for a length over the limit
  exactly when the reference refuses it (see `CHECK_REFUSED_OFFSET` for its offset);
- ``buffered`` never exceeds ``max_body + 6`` and body storage never exceeds the declared
  length: a peer that only claims a large PDU makes us allocate nothing for it.

Run: ``python fuzz/fuzz_reader.py [libFuzzer flags] fuzz/corpus/fuzz_reader``.
Replay without atheris: ``import fuzz_reader; fuzz_reader.one_input(data)``.

This module also holds `Provider` and `Tail`, shared by the other harnesses.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import struct
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any


def _fuzzing() -> bool:
    """True when a harness runs as the main script: then coverage hooks are worth the cost."""
    main = sys.modules.get("__main__")
    name = os.path.basename(getattr(main, "__file__", None) or "")
    return name.startswith("fuzz_") and name.endswith(".py")


def instrumented() -> contextlib.AbstractContextManager[Any]:
    """atheris' coverage hooks around the aiodicom imports when fuzzing, nothing otherwise.

    Plain imports (tests replaying the corpus) neither need atheris nor get instrumented.
    """
    if _fuzzing():
        import atheris

        return atheris.instrument_imports(include=["aiodicom"])  # type: ignore[no-any-return]
    return contextlib.nullcontext()


with instrumented():
    from aiodicom.core.buffer import PDU_HEADER_LENGTH, ReceiveBuffer
    from aiodicom.errors import InvalidPDU

_HEADER = struct.Struct(">BxL")


class Provider:
    """The part of atheris.FuzzedDataProvider the harnesses use, in pure Python.

    Same semantics as libFuzzer's: integers are taken from the END of the data (big bytes
    first, then reduced modulo the range), bytes from the front. So a replay without
    atheris sees exactly what the fuzzer saw (tests/core/test_fuzz_regressions.py checks
    it against atheris when installed).
    """

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._front = 0
        self._end = len(data)

    def remaining_bytes(self) -> int:
        return self._end - self._front

    def ConsumeIntInRange(self, low: int, high: int) -> int:  # noqa: N802 - atheris' name
        span = high - low
        result = 0
        shift = 0
        while shift < 64 and (span >> shift) > 0 and self._end > self._front:
            self._end -= 1
            result = (result << 8) | self._data[self._end]
            shift += 8
        if span != (1 << 64) - 1:
            result %= span + 1
        return low + result

    def ConsumeBytes(self, count: int) -> bytes:  # noqa: N802 - atheris' name
        count = max(0, min(count, self.remaining_bytes()))
        out = self._data[self._front : self._front + count]
        self._front += count
        return out


def provider(data: bytes) -> Provider:
    """atheris' provider under the fuzzer (fast, native), the pure-Python one otherwise."""
    atheris = sys.modules.get("atheris")
    if atheris is not None and _fuzzing():
        native: Provider = atheris.FuzzedDataProvider(data)
        return native
    return Provider(data)


class Tail:
    """Builds the trailer `Provider.ConsumeIntInRange` reads, for seeds (make_corpus.py)."""

    def __init__(self) -> None:
        self._consumed: list[int] = []

    def int(self, value: int, low: int, high: int) -> Tail:
        """Append a value that ``ConsumeIntInRange(low, high)`` will read back as ``value``."""
        assert low <= value <= high
        span, raw = high - low, value - low
        nbytes = 0
        while nbytes < 8 and (span >> (8 * nbytes)) > 0:
            nbytes += 1
        self._consumed.extend((raw >> (8 * i)) & 0xFF for i in reversed(range(nbytes)))
        return self

    def build(self, front: bytes) -> bytes:
        """``front`` (what ConsumeBytes reads) followed by the trailer."""
        return front + bytes(reversed(self._consumed))


def chunks(data: bytes, sizes: Sequence[int]) -> Iterator[bytes]:
    """``data`` cut in pieces of ``sizes``, cycling through them (one piece if empty)."""
    if not sizes:
        yield data
        return
    pos, i = 0, 0
    while pos < len(data):
        size = sizes[i % len(sizes)]
        yield data[pos : pos + size]
        pos += size
        i += 1


def read_sizes(fdp: Provider, most: int = 15, largest: int = 4096) -> list[int]:
    """A fuzzer-chosen list of chunk sizes (0..``most`` sizes of 1..``largest`` bytes)."""
    return [fdp.ConsumeIntInRange(1, largest) for _ in range(fdp.ConsumeIntInRange(0, most))]


Framed = tuple[list[tuple[int, bytes]], int | None]
"""PDUs as (type, body) and the offset of a refused length (None if none)."""


def reference_frames(stream: bytes, max_body: int) -> Framed:
    """The obvious framer: header, length check, body; stops at a partial PDU."""
    pdus: list[tuple[int, bytes]] = []
    pos = 0
    while len(stream) - pos >= PDU_HEADER_LENGTH:
        pdu_type, length = _HEADER.unpack_from(stream, pos)
        if length > max_body:
            return pdus, pos + 2
        end = pos + PDU_HEADER_LENGTH + length
        if end > len(stream):
            break
        pdus.append((pdu_type, stream[pos + PDU_HEADER_LENGTH : end]))
        pos = end
    return pdus, None


def _feed_buffered(rb: ReceiveBuffer, piece: bytes, fdp_sizes: list[int]) -> None:
    """Deliver ``piece`` the way asyncio's BufferedProtocol does: into get_buffer() views."""
    pos, i = 0, 0
    while pos < len(piece):
        target = rb.get_buffer(-1)
        assert len(target) > 0, "get_buffer returned an empty view"
        want = fdp_sizes[i % len(fdp_sizes)] if fdp_sizes else len(piece)
        i += 1
        n = min(len(target), len(piece) - pos, want)
        target[:n] = piece[pos : pos + n]
        pos += n
        rb.buffer_updated(n)


def _check_bounded(rb: ReceiveBuffer, max_body: int) -> None:
    assert rb.buffered <= max_body + PDU_HEADER_LENGTH, (rb.buffered, max_body)
    body = rb._body  # the storage of a partial body, if any
    if body is not None:
        assert len(body) <= rb._body_len, (len(body), rb._body_len)
        assert rb._body_fill <= len(body)


def frame(
    stream: bytes, max_body: int, staging: int, sizes: Sequence[int], buffered_path: bool
) -> Framed:
    """Run ``stream`` through a ReceiveBuffer in ``sizes`` chunks; PDUs and refused offset."""
    rb = ReceiveBuffer(max_body, staging)
    pdus: list[tuple[int, bytes]] = []
    refused: int | None = None
    try:
        for piece in chunks(stream, sizes):
            if buffered_path:
                _feed_buffered(rb, piece, list(sizes))
            else:
                rb.feed(piece)
            _check_bounded(rb, max_body)
            pdus.extend((raw.pdu_type, bytes(raw.body)) for raw in rb)
    except InvalidPDU as exc:
        refused = exc.offset
    pdus.extend((raw.pdu_type, bytes(raw.body)) for raw in rb)
    return pdus, refused


def make_input(
    stream: bytes,
    *,
    max_body: int = 65536,
    staging: int = 4096,
    sizes: Sequence[int] = (),
    buffered_path: bool = False,
) -> bytes:
    """The fuzzer input `one_input` decodes into these parameters (for seeds and tests)."""
    tail = Tail().int(int(buffered_path), 0, 1).int(max_body, 4, 1 << 17)
    tail.int(staging, 6, 8192).int(len(sizes), 0, 15)
    for size in sizes:
        tail.int(size, 1, 4096)
    return tail.build(stream)


def one_input(data: bytes) -> None:
    """One fuzz case; raises AssertionError (or anything unexpected) on a bug."""
    fdp = provider(data)
    buffered_path = fdp.ConsumeIntInRange(0, 1) == 1
    max_body = fdp.ConsumeIntInRange(4, 1 << 17)
    staging = fdp.ConsumeIntInRange(6, 8192)
    sizes = read_sizes(fdp)
    stream = fdp.ConsumeBytes(fdp.remaining_bytes())
    expected = _comparable(reference_frames(stream, max_body))
    got = _comparable(frame(stream, max_body, staging, sizes, buffered_path))
    assert got == expected, (got, expected)
    whole = _comparable(frame(stream, max_body, 4096, (), False))
    assert whole == expected, (whole, expected)


CHECK_REFUSED_OFFSET = True
"""Compare the offset `InvalidPDU` reports for a refused length (finding F2 of
fuzz/README.md, fixed in core/buffer.py: the offset counted complete PDUs twice when they
preceded the refused header in one staging pass)."""


def _comparable(framed: Framed) -> Framed:
    pdus, refused = framed
    if CHECK_REFUSED_OFFSET or refused is None:
        return framed
    return pdus, -1


def run_fuzzer(argv: list[str], target: Callable[[bytes], None]) -> None:
    """Hand ``target`` to libFuzzer. argv[0] becomes ``python harness.py`` because libFuzzer
    re-runs argv[0] through the shell for -merge, -fork and -minimize_crash."""
    import atheris

    me = f"{shlex.quote(sys.executable)} {shlex.quote(os.path.abspath(argv[0]))}"
    atheris.Setup([me, *argv[1:]], target)
    atheris.Fuzz()


def main(argv: list[str]) -> None:
    run_fuzzer(argv, one_input)


if __name__ == "__main__":
    main(sys.argv)
