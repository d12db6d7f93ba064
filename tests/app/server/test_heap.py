"""keep_heap: freed PDU buffers stop costing page faults per instance (issue 18).

Counted in minor page faults (getrusage), not time: a subprocess allocates and frees, per
"instance", the buffers a 512 KiB C-STORE arrives in (4 x 128 KiB + one 64 KiB growth step)
and touches them as the kernel would; with glibc's defaults the heap top is trimmed after
every instance and faulted in again, with keep_heap it is kept.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from aiodicom.app.server import heap

PROBE = """
import resource, sys
from aiodicom.app.server.heap import keep_heap
applied = keep_heap() if sys.argv[1] == "keep" else False
def instance():
    if sys.argv[2] == "one-pdu":  # a peer that sends the image as one 512 KiB PDU
        bufs = [bytearray((512 << 10) + 200)]
    else:  # DCMTK's storescu: 128 KiB PDUs
        bufs = [bytearray(128 << 10) for _ in range(4)] + [bytearray(64 << 10)]
    for b in bufs:
        b[::4096] = b"x" * len(b[::4096])
    del bufs
for _ in range(20):
    instance()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(200):
    instance()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str, shape: str = "dcmtk") -> tuple[bool, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode, shape], capture_output=True,
                         text=True, check=True, env={"PATH": "/usr/bin:/bin"}).stdout.split()
    return out[0] == "True", int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_freed_pdu_buffers_are_not_faulted_in_again_per_instance() -> None:
    applied, kept = faults("keep")
    _, default = faults("default")
    assert applied
    assert default >= 200 * 20  # glibc's default: ~150 faults per instance here
    assert kept < default / 10


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_an_image_in_one_large_pdu_is_not_mapped_and_faulted_in_per_instance() -> None:
    """The mmap threshold is above a 1 MiB PDU: a 512 KiB image in one PDU (our client,
    pynetdicom) reuses heap pages; mapped, each instance faults ~129 pages in again."""
    applied, kept = faults("keep", "one-pdu")
    assert applied
    assert kept < 200  # under one fault per instance (128 pages touched in each)


def test_an_operators_own_malloc_tuning_is_left_alone() -> None:
    assert heap.keep_heap({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1"}) is False
    assert heap.keep_heap({"MALLOC_TRIM_THRESHOLD_": "1"}) is False


def test_nothing_is_changed_off_linux(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(heap.sys, "platform", "darwin")
    assert heap.keep_heap({}) is False
