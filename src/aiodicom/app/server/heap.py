"""Keep glibc from returning the top of the heap to the kernel after every large PDU (issue 18).

A 512 KiB C-STORE arrives as a few 64-128 KiB PDU buffers that are freed together when the
instance is written; glibc then trims the heap top (its default trim threshold is 128 KiB)
and the next instance faults the same pages in again: ~80 page faults and ~190 µs of server
CPU per image, measured against storescp's ~1.5 faults (bench/results/2026-12-04-store-
attribution.md). Raising the trim threshold and fixing the mmap threshold keeps those pages
(at most a few MiB held between instances). An operator's own malloc tuning (GLIBC_TUNABLES,
MALLOC_*_) is left alone.

The mmap threshold stays above the largest PDU we announce (1 MiB by default): our own
client and pynetdicom send a 512 KiB image as one PDU, and a mapped buffer faults every page
in again per PDU (a 256 KiB threshold measured 129 faults per such image, 0 at 4 MiB). The
price: uvloop's 256 KiB TLS read buffers come from the heap too, and a server holding only
idle mutual-TLS associations holds ~5 KB more per association (47-48 against 43 KB;
bench/results/2026-12-04-release-cycles.md).
"""

from __future__ import annotations

import ctypes
import os
import sys
from typing import Final

__all__ = ["keep_heap"]

TRIM_THRESHOLD: Final = 64 << 20
MMAP_THRESHOLD: Final = 4 << 20
_M_TRIM_THRESHOLD: Final = -1  # glibc malloc.h
_M_MMAP_THRESHOLD: Final = -3


def _operator_tuned(environ: dict[str, str] | os._Environ[str]) -> bool:
    return "malloc" in environ.get("GLIBC_TUNABLES", "") or any(
        name.startswith("MALLOC_") and name.endswith("_") for name in environ
    )


def keep_heap(environ: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    """Apply the thresholds on Linux with glibc; False (nothing changed) anywhere else."""
    if not sys.platform.startswith("linux") or _operator_tuned(environ):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # pragma: no cover - a libc without mallopt
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # glibc answers 1 when it took the value; musl's stub answers 0 and changes nothing.
    return bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
                and mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1)
