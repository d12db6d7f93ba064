"""Fuzz the PROXY protocol v2 header parser (core/proxy_header.py): what a node behind
HAProxy reads first on every connection, before any authentication.

Properties:

- `header_bytes_needed` on any prefix returns a count in 0..16+MAX_V2_LENGTH or raises
  `ProxyHeaderError`; any other exception is a bug;
- read as the aio shell reads (exactly the bytes asked for), the reader never takes a byte
  past the header, and a whole header parses to a `ProxyHeader` whose ``length`` is the
  bytes taken;
- a PROXY header re-encodes (`encode_proxy_header` with the same addresses and its TLVs as
  opaque bytes) to exactly the bytes read; a LOCAL one has no addresses.

Run: ``python fuzz/fuzz_proxy.py [libFuzzer flags] fuzz/corpus/fuzz_proxy``.
Replay: ``fuzz_proxy.one_input(data)``.
"""

from __future__ import annotations

import sys

from fuzz_reader import instrumented, run_fuzzer

with instrumented():
    from aiodicom.core.proxy_header import (
        FIXED_LENGTH,
        MAX_V2_LENGTH,
        ProxyCommand,
        ProxyHeaderError,
        encode_proxy_header,
        header_bytes_needed,
        parse_proxy_header,
    )


def one_input(data: bytes) -> None:
    """One fuzz case; raises AssertionError (or anything unexpected) on a bug."""
    taken = b""
    try:
        while need := header_bytes_needed(taken):
            assert 0 < need <= FIXED_LENGTH + MAX_V2_LENGTH, need
            if len(taken) >= len(data):
                return  # the stream ended first: the shell waits, then times out
            taken += data[len(taken):len(taken) + need]
        header = parse_proxy_header(taken)
    except ProxyHeaderError:
        return
    assert data.startswith(taken) and header.length == len(taken) <= FIXED_LENGTH + MAX_V2_LENGTH
    if header.command == ProxyCommand.LOCAL:
        assert header.source is None and header.destination is None
        return
    assert header.source is not None and header.destination is not None
    block = 12 if ":" not in header.source[0] else 36
    again = encode_proxy_header(header.source, header.destination,
                                tlvs=taken[FIXED_LENGTH + block:])
    assert again == taken, (again.hex(), taken.hex())


def main(argv: list[str]) -> None:
    run_fuzzer(argv, one_input)


if __name__ == "__main__":
    main(sys.argv)
