"""Run every fuzz harness for a fixed time on a scratch copy of its corpus (``make fuzz-smoke``).

Each harness gets fuzz/corpus/<harness>/ plus its regression vectors
(tests/vectors/regressions/<harness>-*.bin) copied to a temporary directory, so the
repository stays clean, and runs under libFuzzer with ``-max_total_time=N
-rss_limit_mb=2048``. Prints executions, coverage and corpus size per harness; exits
non-zero if any harness crashed, leaked, timed out or could not start, after naming the
crashing input (kept with ``--keep DIR``, else printed as hex).

    python fuzz/run_all.py --seconds 10 [--harness fuzz_pdu ...] [--keep DIR]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

FUZZ = Path(__file__).resolve().parent
ROOT = FUZZ.parent
REGRESSIONS = ROOT / "tests" / "vectors" / "regressions"
HARNESSES = ("fuzz_pdu", "fuzz_reader", "fuzz_upper_layer", "fuzz_dimse", "fuzz_store",
             "fuzz_proxy")

_DONE = re.compile(r"#(\d+)\s+DONE\s+cov: (\d+) ft: (\d+) corp: (\d+)")
_PROGRESS = re.compile(r"#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)")
_EXECS = re.compile(r"stat::number_of_executed_units: (\d+)")
_ARTIFACT = re.compile(r"Test unit written to (\S+)")


@dataclass
class Result:
    harness: str
    returncode: int
    executions: int
    cov: int
    ft: int
    corpus: int
    seconds: float
    artifacts: list[str]
    log_tail: str


def _seed(harness: str, corpus: Path) -> int:
    """Copy the checked-in seeds and the harness's regression vectors; returns the count."""
    corpus.mkdir(parents=True, exist_ok=True)
    count = 0
    source = FUZZ / "corpus" / harness
    if source.is_dir():
        for path in source.iterdir():
            if path.is_file():
                shutil.copy(path, corpus / path.name)
                count += 1
    if REGRESSIONS.is_dir():
        for path in REGRESSIONS.glob(f"{harness}-*.bin"):
            shutil.copy(path, corpus / f"regression-{path.name}")
            count += 1
    return count


def run(harness: str, seconds: int, scratch: Path, extra: list[str]) -> Result:
    corpus = scratch / harness / "corpus"
    artifacts = scratch / harness / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    _seed(harness, corpus)
    cmd = [
        sys.executable,
        str(FUZZ / f"{harness}.py"),
        f"-max_total_time={seconds}",
        "-rss_limit_mb=2048",
        "-timeout=20",
        "-print_final_stats=1",
        f"-artifact_prefix={artifacts}/",
        f"-dict={FUZZ / 'dicom.dict'}",
        *extra,
        str(corpus),
    ]
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, errors="replace")
    elapsed = time.monotonic() - start
    log = proc.stderr + proc.stdout
    done = _DONE.findall(log) or _PROGRESS.findall(log)
    execs = _EXECS.findall(log)
    last = done[-1] if done else ("0", "0", "0", "0")
    return Result(
        harness=harness,
        returncode=proc.returncode,
        executions=int(execs[-1]) if execs else int(last[0]),
        cov=int(last[1]),
        ft=int(last[2]),
        corpus=int(last[3]),
        seconds=elapsed,
        artifacts=_ARTIFACT.findall(log),
        log_tail="\n".join(line[:300] for line in log.splitlines()[-30:]),
    )


def report(results: list[Result]) -> None:
    print(f"{'harness':<18} {'execs':>10} {'exec/s':>8} {'cov':>6} {'ft':>7} {'corp':>6}  result")
    for r in results:
        rate = r.executions / r.seconds if r.seconds else 0.0
        status = "ok" if r.returncode == 0 else f"FAILED (exit {r.returncode})"
        print(
            f"{r.harness:<18} {r.executions:>10} {rate:>8.0f} {r.cov:>6} {r.ft:>7} "
            f"{r.corpus:>6}  {status}"
        )


def _explain(r: Result, keep: Path | None) -> None:
    print(f"\n=== {r.harness} failed (exit {r.returncode}); last lines of its log:")
    print(r.log_tail)
    for artifact in r.artifacts:
        data = Path(artifact).read_bytes() if Path(artifact).exists() else b""
        where = artifact if keep is not None else "(scratch, deleted)"
        shown = data.hex() if len(data) <= 2048 else data[:2048].hex() + "..."
        print(f"crashing input {where} ({len(data)} bytes): {shown}")
        print(
            f"reproduce: python fuzz/{r.harness}.py {artifact}  -- then save it as "
            f"tests/vectors/regressions/{r.harness}-<id>.bin (see fuzz/README.md)"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=int, default=10, help="time per harness")
    parser.add_argument(
        "--harness", action="append", choices=HARNESSES, help="only these (repeatable)"
    )
    parser.add_argument("--keep", type=Path, help="keep corpora and crash artifacts here")
    parser.add_argument("extra", nargs="*", help="more libFuzzer flags, after --")
    args = parser.parse_args(argv)
    harnesses = args.harness or list(HARNESSES)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="aiodicom-fuzz-") as tmp:
        scratch = Path(tmp) if args.keep is None else args.keep
        for harness in harnesses:
            print(f"{harness}: fuzzing for {args.seconds} s ...", flush=True)
            r = run(harness, args.seconds, scratch, args.extra)
            results.append(r)
            print(
                f"{harness}: {r.executions} executions, cov {r.cov}, ft {r.ft}, "
                f"corpus {r.corpus}, exit {r.returncode}",
                flush=True,
            )
        report(results)
        failed = [r for r in results if r.returncode != 0]
        for r in failed:
            _explain(r, args.keep)
    print(f"fuzz: {len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
