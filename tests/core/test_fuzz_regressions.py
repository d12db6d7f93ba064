"""Replay every fuzz seed and every saved fuzz crash through its harness, without atheris.

tests/vectors/regressions/<harness>-<id>.bin is a crash the fuzzer found (its .txt says what
it is and what was fixed); fuzz/corpus/<harness>/ holds the seeds. Each goes through the
harness's ``one_input``, which raises on any property violation (fuzz/README.md).
"""

from __future__ import annotations

import importlib
import random
import sys
from pathlib import Path
from types import ModuleType

import pytest

from aiodicom.core.buffer import ReceiveBuffer
from aiodicom.core.dimse import CEchoRQ, encode_message
from aiodicom.errors import InvalidPDU

ROOT = Path(__file__).resolve().parents[2]
FUZZ = ROOT / "fuzz"
REGRESSIONS = ROOT / "tests" / "vectors" / "regressions"
HARNESSES = ("fuzz_pdu", "fuzz_reader", "fuzz_upper_layer", "fuzz_dimse", "fuzz_store")


def harness(name: str) -> ModuleType:
    """Import fuzz/<name>.py as a plain module (no atheris, no instrumentation)."""
    if str(FUZZ) not in sys.path:
        sys.path.insert(0, str(FUZZ))
    return importlib.import_module(name)


def _cases() -> list[tuple[str, Path]]:
    cases = [(h, p) for h in HARNESSES for p in sorted((FUZZ / "corpus" / h).glob("*"))]
    cases.extend((p.name.split("-", 1)[0], p) for p in sorted(REGRESSIONS.glob("*.bin")))
    return cases


CASES = _cases()


@pytest.mark.parametrize(
    ("name", "path"), CASES, ids=[f"{n}/{p.parent.name}/{p.name}" for n, p in CASES]
)
def test_replay(name: str, path: Path) -> None:
    harness(name).one_input(path.read_bytes())


def test_every_harness_has_seeds_and_regressions_are_documented() -> None:
    for name in HARNESSES:
        assert any((FUZZ / "corpus" / name).iterdir()), f"no seeds for {name}"
    for path in REGRESSIONS.glob("*.bin"):
        assert path.name.split("-", 1)[0] in HARNESSES, f"{path.name}: unknown harness prefix"
        assert path.with_suffix(".txt").is_file(), f"{path.name} has no .txt explaining it"


def test_provider_matches_atheris() -> None:
    """The pure-Python provider reads exactly what atheris' FuzzedDataProvider reads, so a
    replay here sees the case the fuzzer saw."""
    atheris = pytest.importorskip("atheris")
    provider = harness("fuzz_reader").Provider
    rng = random.Random(1)
    for _ in range(500):
        data = rng.randbytes(rng.randrange(0, 24))
        ours, theirs = provider(data), atheris.FuzzedDataProvider(data)
        for _ in range(6):
            if rng.random() < 0.3:
                n = rng.randrange(6)
                assert ours.ConsumeBytes(n) == theirs.ConsumeBytes(n)
            else:
                low = rng.randrange(100)
                high = low + rng.choice([0, 1, 15, 255, 256, 4095, 1 << 17, 1 << 40])
                assert ours.ConsumeIntInRange(low, high) == theirs.ConsumeIntInRange(low, high)
            assert ours.remaining_bytes() == theirs.remaining_bytes()


def test_make_input_is_what_one_input_reads() -> None:
    reader = harness("fuzz_reader")
    data = reader.make_input(b"stream", max_body=77, staging=9, sizes=[3, 4000], buffered_path=True)
    fdp = reader.Provider(data)
    assert fdp.ConsumeIntInRange(0, 1) == 1
    assert fdp.ConsumeIntInRange(4, 1 << 17) == 77
    assert fdp.ConsumeIntInRange(6, 8192) == 9
    assert reader.read_sizes(fdp) == [3, 4000]
    assert fdp.ConsumeBytes(fdp.remaining_bytes()) == b"stream"


def test_upper_layer_harness_reaches_data_transfer() -> None:
    """The seeds are worth something only if the prepended RQ gets the acceptor to Sta6."""
    ful = harness("fuzz_upper_layer")
    shell = ful.run(b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00", ful.PREPEND_RQ, 1 << 16, [], [])
    kinds = [type(e).__name__ for e in shell.events]
    assert kinds == ["AssociateIndication", "ReleaseIndication", "ConnectionClosed"]


def test_harness_flags_a_broken_property(monkeypatch: pytest.MonkeyPatch) -> None:
    """A harness that cannot fail proves nothing: a decoder returning a different message
    after re-encoding must trip the round-trip assertion."""
    dimse = harness("fuzz_dimse")
    echo = encode_message(CEchoRQ(message_id=1))
    real = dimse.decode_message
    calls: list[int] = []

    def drifting(data: bytes) -> object:
        calls.append(1)
        message = real(data)
        return message if len(calls) == 1 else CEchoRQ(message_id=2)

    monkeypatch.setattr(dimse, "decode_message", drifting)
    with pytest.raises(AssertionError):
        dimse.one_input(dimse.make_input(dimse.MODE_COMMAND, echo))


def test_refused_length_offset_counts_each_pdu_once() -> None:
    release = b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00"
    rb = ReceiveBuffer(1000)
    with pytest.raises(InvalidPDU) as info:
        rb.feed(release + release + b"\x04\x00\x00\x00\xff\xff")
    assert info.value.offset == 22  # the length field of the third PDU, which starts at 20
