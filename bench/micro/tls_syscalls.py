"""Per-echo kernel-side counts of a C-ECHO loop on one association: ours vs storescp, plain vs TLS.

Load-independent counts (syscalls by name, epoll/poll rounds, voluntary context switches =
times the server blocked and was woken) and the load-dependent ones (task-clock, involuntary
switches) for `echoscu --repeat N` against `aiodicom serve` and DCMTK `storescp`, both as
bench/macro/servers.py starts them (TLS: the `aiodicom pki` certificates, mutual TLS).

Per echo = (run of N echoes - run of BASE echoes) / (N - BASE): association set-up, the TLS
handshake and release cancel out. The server is counted with `perf stat -p` (all its
threads), echoscu with `perf stat` around it; tracepoints `syscalls:sys_enter_*` give the
calls by name. No hardware counters in this VM (instructions/cycles: <not supported>); use
callgrind for instructions (2026-12-04-tls-attribution.md).

    .venv/bin/python bench/micro/tls_syscalls.py --n 4000 --reps 5   # the table
    .venv/bin/python bench/micro/tls_syscalls.py --n 2000 --no-stat --strace  # bytes per call
    .venv/bin/python bench/micro/tls_syscalls.py --n 4000 --no-stat --trace --split --reps 5
    .venv/bin/python bench/micro/tls_syscalls.py --n 4000 --no-stat --record

The table also counts, in the server's context, packets sent (net:net_dev_xmit: data and
pure ACKs), softirqs run and wakeups performed (sched:sched_waking). `--strace` launches the
server under `strace -f` (never attaches) for a bounded run and counts return values of the
data syscalls; `--trace`: time inside each syscall (perf trace -s); `--split`: sampled CPU
by object (perf record, no call graphs); `--record`: one call-graph profile per
configuration, by object, kernel entry point and kernel function. `--pin same|none` puts
server and echoscu on one core / leaves them unpinned (default: different cores).
All runs use 127.0.0.1 and ports from free_port(); TCP_NODELAY=1 for DCMTK.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from macro.procs import CLIENT_CPU, CLIENT_ENV, SERVER_CPU, pinned, tree_pids  # noqa: E402
from macro.servers import SERVERS, Certs, make_certs, running  # noqa: E402

PERF = shutil.which("perf") or "/usr/bin/perf"
BASIC = ("task-clock", "context-switches", "cpu-migrations", "page-faults", "instructions",
         "cycles")
NET_EVENTS = ("net:net_dev_xmit", "net:netif_rx", "sched:sched_waking", "irq:softirq_entry",
              "skb:consume_skb", "skb:kfree_skb", "tcp:tcp_retransmit_skb")
"""Packets the server sends (data and pure ACKs; on loopback the peer's receive processing
of them runs in the sender's softirq), wakeups it performs, softirqs run in its context."""
SYSCALL_EVENTS = "syscalls:sys_enter_*," + ",".join(NET_EVENTS)
NOT_CALLS = ("voluntary", "involuntary", "threads", "clock_range", "user_ms", "sys_ms")
POLLS = ("epoll_wait", "epoll_pwait", "epoll_pwait2", "poll", "ppoll", "select", "pselect6")


def echo_argv(spec_name: str, port: int, certs: Certs | None, repeat: int) -> list[str]:
    argv = ["/usr/bin/echoscu", "-aet", "STORESCU", "-aec", SERVERS[spec_name].ae_title]
    if certs is not None:
        argv += ["+tls", str(certs.client_key), str(certs.client_cert), "+cf", str(certs.ca)]
    if repeat > 1:
        argv += ["--repeat", str(repeat)]
    return [*argv, "127.0.0.1", str(port)]


def parse_perf(path: Path) -> dict[str, float]:
    """perf stat -x, output: value,unit,event,... ; '<not supported>' kept as NaN."""
    out: dict[str, float] = {}
    for line in path.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        parts = line.split(",")
        if len(parts) < 3:
            continue
        value, event = parts[0], parts[2]
        event = event.removeprefix("syscalls:sys_enter_")
        if ":" in event:
            event = "[" + event + "]"  # not a syscall: kept out of the syscall total
        try:
            out[event] = out.get(event, 0.0) + float(value)
        except ValueError:
            out[event] = float("nan")
    return out


TICK = os.sysconf("SC_CLK_TCK")


def ticks(pids: list[int]) -> tuple[int, int]:
    """(utime, stime) in clock ticks, summed over `pids` (all their threads)."""
    u = k = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        u, k = u + int(fields[11]), k + int(fields[12])
    return u, k


def ctxt(pids: list[int]) -> tuple[int, int, int]:
    """(voluntary, involuntary, threads) summed over every thread of `pids`."""
    vol = invol = threads = 0
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                text = (task / "status").read_text()
            except OSError:
                continue
            threads += 1
            vol += int(re.search(r"voluntary_ctxt_switches:\s+(\d+)", text).group(1))  # type: ignore[union-attr]
            invol += int(re.search(r"nonvoluntary_ctxt_switches:\s+(\d+)", text).group(1))  # type: ignore[union-attr]
    return vol, invol, threads


def one_run(name: str, port: int, pids: list[int], certs: Certs | None, repeat: int,
            work: Path, events: str) -> dict[str, dict[str, float]]:
    srv, cli = work / "server.csv", work / "client.csv"
    echo = pinned(echo_argv(name, port, certs, repeat), CLIENT_CPU)
    argv = [PERF, "stat", "-x,", "-o", str(srv), "-e", events, "-p", ",".join(map(str, pids)),
            "--", PERF, "stat", "-x,", "-o", str(cli), "-e", events, "--", *echo]
    t0 = ticks(pids)
    v0 = ctxt(pids)
    run = subprocess.run(argv, env=CLIENT_ENV, capture_output=True, text=True, timeout=600)
    v1 = ctxt(pids)
    t1 = ticks(pids)
    if run.returncode != 0 or "E:" in run.stdout + run.stderr:
        raise RuntimeError(f"{name} echoscu failed: {run.stdout[-500:]} {run.stderr[-500:]}")
    server = parse_perf(srv)
    server["voluntary"] = v1[0] - v0[0]
    server["involuntary"] = v1[1] - v0[1]
    server["threads"] = v1[2]
    server["user_ms"] = (t1[0] - t0[0]) * 1000 / TICK
    server["sys_ms"] = (t1[1] - t0[1]) * 1000 / TICK
    return {"server": server, "client": parse_perf(cli)}


def per_echo(big: dict[str, float], small: dict[str, float], n: int) -> dict[str, float]:
    keys = set(big) | set(small)
    out = {k: (big.get(k, 0.0) - small.get(k, 0.0)) / n for k in keys}
    out["threads"] = big.get("threads", 0.0)
    return out


def measure_all(configs: list[tuple[str, bool]], certs: Certs, workdir: Path, n: int,
                base: int, reps: int) -> dict[str, dict[str, dict[str, float]]]:
    """Every server up at once (idle ones cost nothing); the timed repetitions interleaved
    over the configurations so that a change in the machine's load hits all of them."""
    label = {c: f"{c[0]} {'TLS' if c[1] else 'plain'}" for c in configs}
    per: dict[tuple[str, bool], list[dict[str, dict[str, float]]]] = {c: [] for c in configs}
    calls: dict[tuple[str, bool], dict[str, dict[str, float]]] = {}
    with contextlib.ExitStack() as stack:
        up = {}
        for name, tls in configs:
            use = certs if tls else None
            server = stack.enter_context(running(SERVERS[name], workdir,
                                                 f"{name}-{'tls' if tls else 'plain'}", use))
            subprocess.run(echo_argv(name, server.port, use, 20), env=CLIENT_ENV, check=True,
                           capture_output=True, timeout=120)  # warm-up (lazy imports, threads)
            up[(name, tls)] = (server.port, tree_pids(server.pid), use)
        # Syscall counts once; the clock in separate runs without the tracepoints, since
        # 300+ enabled tracepoints cost time on every syscall.
        for c, (port, pids, use) in up.items():
            small = one_run(c[0], port, pids, use, base, workdir, SYSCALL_EVENTS)
            big = one_run(c[0], port, pids, use, base + n, workdir, SYSCALL_EVENTS)
            calls[c] = {side: per_echo(big[side], small[side], n) for side in big}
        for _ in range(reps):
            for c, (port, pids, use) in up.items():
                small = one_run(c[0], port, pids, use, base, workdir, ",".join(BASIC))
                big = one_run(c[0], port, pids, use, base + n, workdir, ",".join(BASIC))
                per[c].append({side: per_echo(big[side], small[side], n) for side in big})
    out: dict[str, dict[str, dict[str, float]]] = {}
    for c in configs:
        runs = per[c]
        merged: dict[str, dict[str, float]] = {}
        for side in runs[0]:
            keys = set().union(*(r[side].keys() for r in runs))
            med = {k: sorted(r[side].get(k, 0.0) for r in runs)[len(runs) // 2] for k in keys}
            clocks = sorted(r[side]["task-clock"] * 1000 for r in runs)
            med["clock_range"] = (clocks[0], clocks[-1])  # type: ignore[assignment]
            merged[side] = {**calls[c][side], **med}
            merged[side]["threads"] = calls[c][side].get("threads", 0.0)
        out[label[c]] = merged
    return out


def table(res: dict[str, dict[str, dict[str, float]]], side: str) -> str:
    cols = list(res)
    rows: list[str] = []
    names = set()
    net = sorted({k for col in cols for k in res[col][side] if k.startswith("[")})
    for col in cols:
        names |= {k for k, v in res[col][side].items()
                  if k not in BASIC and not k.startswith("[") and k not in NOT_CALLS
                  and abs(v) >= 0.05}
    order = ["task-clock", "clock_range", "user_ms", "sys_ms", "context-switches", "voluntary",
             "involuntary", "cpu-migrations", "page-faults", "instructions", "threads",
             "__all__", "__polls__",
             *sorted(names), *net]
    head = "| per echo (" + side + ") | " + " | ".join(cols) + " |"
    rows += [head, "|---" * (len(cols) + 1) + "|"]
    for key in order:
        cells = []
        for col in cols:
            d = res[col][side]
            if key == "__all__":
                v = sum(d.get(k, 0.0) for k in names)
            elif key == "__polls__":
                v = sum(d.get(k, 0.0) for k in POLLS)
            elif key == "clock_range":
                lo, hi = d.get(key, (float("nan"), float("nan")))  # type: ignore[misc]
                cells.append(f"{lo:.0f}-{hi:.0f}")
                continue
            elif key in ("user_ms", "sys_ms"):
                v = d.get(key, float("nan")) * 1000  # ms per echo -> µs
                cells.append("n/a" if v != v else f"{v:.0f}")
                continue
            elif key == "task-clock":
                v = d.get(key, 0.0) * 1000  # msec -> µs
            else:
                v = d.get(key, float("nan"))
            cells.append("n/a" if v != v else (f"{v:.1f}" if key == "task-clock" else f"{v:.2f}"))
        label = {"clock_range": "  task-clock range over reps µs",
                 "user_ms": "  user µs (/proc ticks, median)",
                 "sys_ms": "  system µs (/proc ticks, median)", "__all__": "syscalls (all)",
                 "__polls__": "poll rounds (epoll/poll/select)",
                 "task-clock": "task-clock µs", "voluntary": "  voluntary (blocked+woken)",
                 "involuntary": "  involuntary (preempted)",
                 "threads": "threads in process"}.get(key, key)
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def strace_run(name: str, tls: bool, certs: Certs, workdir: Path, n: int) -> str:
    """Launch the server under strace -f, run n echoes, count data-syscall return values."""
    spec = SERVERS[name]
    use = certs if tls else None
    from macro.procs import free_port, listening, stop_process
    port = free_port()
    out = workdir / f"strace-{name}-{'tls' if tls else 'plain'}.txt"
    storage = workdir / f"st-{name}-{tls}"
    storage.mkdir(exist_ok=True)
    import macro.servers
    argv = ["strace", "-f", "-qq", "-o", str(out), "-s", "0", *spec.build(port, storage, use)]
    proc = subprocess.Popen(pinned(argv, macro.servers.SERVER_CPU), env=CLIENT_ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        for _ in range(600):
            if listening(port):
                break
            subprocess.run(["sleep", "0.05"])
        mark = out.stat().st_size
        subprocess.run(pinned(echo_argv(name, port, use, n), CLIENT_CPU), env=CLIENT_ENV,
                       check=True, capture_output=True, timeout=600)
    finally:
        stop_process(proc)
    text = out.read_bytes()[mark:].decode(errors="replace")
    calls: collections.Counter[str] = collections.Counter()
    sizes: collections.Counter[tuple[str, str]] = collections.Counter()
    pat = re.compile(r"^\d+\s+(?:<\.\.\. )?(\w+)(?:\(| resumed>)(.*)=\s+(-?\d+|\?)")
    for line in text.splitlines():
        m = pat.match(line)
        if not m or "unfinished" in line:
            continue
        call, ret = m.group(1), m.group(3)
        calls[call] += 1
        if call in ("read", "write", "recvfrom", "sendto", "recvmsg", "sendmsg", "writev",
                    "readv", "epoll_wait", "epoll_pwait", "poll"):
            sizes[(call, ret if not ret.startswith("-") else "err")] += 1
    lines = [f"### strace -f at launch, {name} {'TLS' if tls else 'plain'}, {n} echoes "
             "(whole echoscu run incl. association)"]
    lines.append("calls per echo: " + ", ".join(f"{k} {v / n:.2f}" for k, v in calls.most_common()))
    lines.append("return values (count per echo): " + ", ".join(
        f"{c}={r}: {v / n:.2f}" for (c, r), v in sorted(sizes.items(), key=lambda x: -x[1])
        if v / n >= 0.02))
    return "\n".join(lines)


def record_run(name: str, tls: bool, certs: Certs, workdir: Path, n: int) -> str:
    use = certs if tls else None
    tag = f"rec-{name}-{'tls' if tls else 'plain'}"
    data = workdir / f"{tag}.data"
    with running(SERVERS[name], workdir, tag, use) as server:
        subprocess.run(echo_argv(name, server.port, use, 20), env=CLIENT_ENV, check=True,
                       capture_output=True, timeout=120)
        pids = ",".join(map(str, tree_pids(server.pid)))
        subprocess.run([PERF, "record", "-q", "-e", "cpu-clock", "-F", "20000", "-g", "-o",
                        str(data), "-p", pids, "--",
                        *pinned(echo_argv(name, server.port, use, n), CLIENT_CPU)],
                       env=CLIENT_ENV, check=True, capture_output=True, timeout=600)
    dso = subprocess.run([PERF, "report", "-i", str(data), "--no-children", "--sort", "dso",
                          "--stdio", "-g", "none", "--percent-limit", "1"],
                         capture_output=True, text=True).stdout
    sysc = subprocess.run([PERF, "report", "-i", str(data), "--children", "--sort", "sym",
                           "--stdio", "-g", "none"], capture_output=True, text=True).stdout
    m = re.search(r"Event count \(approx\.\): (\d+)", dso)
    per = int(m.group(1)) / 1000 / n if m else float("nan")  # cpu-clock ns -> µs per echo

    def us(line: str) -> str:
        pct = re.match(r"\s*([\d.]+)%", line)
        return f"{float(pct.group(1)) * per / 100:6.1f} µs  {line.strip()}" if pct else line

    keep = [us(ln) for ln in sysc.splitlines()
            if re.search(r"\[k\] (__x64_sys_\w+|do_syscall_64|tcp_sendmsg|tcp_recvmsg|"
                         r"do_epoll_wait|__schedule|try_to_wake_up|__local_bh_enable_ip|"
                         r"asm_sysvec\w*)$", ln)]
    body = [us(ln) for ln in dso.splitlines() if ln.strip() and not ln.startswith("#")]
    ksyms = subprocess.run([PERF, "report", "-i", str(data), "--no-children", "--sort", "sym",
                            "--stdio", "-g", "none", "--dsos", "[kernel.kallsyms]"],
                           capture_output=True, text=True).stdout
    kself = [us(ln) for ln in ksyms.splitlines() if "[k]" in ln][:22]
    return (f"### perf record -e cpu-clock -g, {name} {'TLS' if tls else 'plain'}, {n} echoes:"
            f" {per:.1f} µs sampled per echo (incl. one association)\n"
            "by object (self):\n" + "\n".join(body) + "\nkernel (children, inclusive):\n"
            + "\n".join(keep[:14]) + "\nkernel functions (self, top):\n" + "\n".join(kself))


def split_all(configs: list[tuple[str, bool]], certs: Certs, workdir: Path, n: int,
              reps: int) -> str:
    """User/kernel split by object: perf record -F 10000 -e cpu-clock (no call graphs, so
    less sampling overhead), all servers up at once, repetitions interleaved; medians."""
    per: dict[tuple[str, bool], list[dict[str, float]]] = {c: [] for c in configs}
    with contextlib.ExitStack() as stack:
        up = {}
        for name, tls in configs:
            use = certs if tls else None
            server = stack.enter_context(running(SERVERS[name], workdir,
                                                 f"split-{name}-{'tls' if tls else 'plain'}", use))
            subprocess.run(echo_argv(name, server.port, use, 20), env=CLIENT_ENV, check=True,
                           capture_output=True, timeout=120)
            up[(name, tls)] = (server.port, tree_pids(server.pid), use)
        data = workdir / "split.data"
        for _ in range(reps):
            for c, (port, pids, use) in up.items():
                subprocess.run([PERF, "record", "-q", "-e", "cpu-clock", "-F", "10000", "-o",
                                str(data), "-p", ",".join(map(str, pids)), "--",
                                *pinned(echo_argv(c[0], port, use, n), CLIENT_CPU)],
                               env=CLIENT_ENV, check=True, capture_output=True, timeout=600)
                rep = subprocess.run([PERF, "report", "-i", str(data), "--sort", "dso",
                                      "--stdio"], capture_output=True, text=True).stdout
                m = re.search(r"Event count \(approx\.\): (\d+)", rep)
                total = int(m.group(1)) / 1000 / n if m else float("nan")
                row = {"total": total}
                for ln in rep.splitlines():
                    hit = re.match(r"\s*([\d.]+)%\s+(\S+)", ln)
                    if hit:
                        obj = hit.group(2).split(".so")[0].split(".cpython")[0]
                        row[obj] = row.get(obj, 0.0) + float(hit.group(1)) * total / 100
                per[c].append(row)
    labels = [f"{c[0]} {'TLS' if c[1] else 'plain'}" for c in configs]
    objs = sorted({k for c in configs for r in per[c] for k in r if k != "total"},
                  key=lambda k: -max(r.get(k, 0.0) for c in configs for r in per[c]))
    lines = [f"sampled CPU per echo by object, µs (perf record -F 10000 cpu-clock, n={n}, "
             f"median of {reps})", "| object | " + " | ".join(labels) + " |",
             "|---" * (len(labels) + 1) + "|"]
    for obj in ["total", *objs]:
        cells = []
        for c in configs:
            vals = sorted(r.get(obj, 0.0) for r in per[c])
            cells.append(f"{vals[len(vals) // 2]:.1f}")
        if any(float(x) >= 0.5 for x in cells):
            lines.append(f"| {obj} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def trace_all(configs: list[tuple[str, bool]], certs: Certs, workdir: Path, n: int,
              reps: int) -> str:
    """Time inside each syscall (entry to exit; for the blocking ones it includes the sleep):
    perf trace -s on the server, all servers up at once, repetitions interleaved; medians."""
    per: dict[tuple[str, bool], list[dict[str, tuple[float, float]]]] = {c: [] for c in configs}
    with contextlib.ExitStack() as stack:
        up = {}
        for name, tls in configs:
            use = certs if tls else None
            server = stack.enter_context(running(SERVERS[name], workdir,
                                                 f"trace-{name}-{'tls' if tls else 'plain'}", use))
            subprocess.run(echo_argv(name, server.port, use, 20), env=CLIENT_ENV, check=True,
                           capture_output=True, timeout=120)
            up[(name, tls)] = (server.port, tree_pids(server.pid), use)
        out = workdir / "trace.txt"
        for _ in range(reps):
            for c, (port, pids, use) in up.items():
                subprocess.run([PERF, "trace", "-s", "-o", str(out), "-p",
                                ",".join(map(str, pids)), "--",
                                *pinned(echo_argv(c[0], port, use, n), CLIENT_CPU)],
                               env=CLIENT_ENV, check=True, capture_output=True, timeout=600)
                row: dict[str, tuple[float, float]] = {}
                for ln in out.read_text().splitlines():
                    hit = re.match(r"\s+(\w+)\s+(\d+)\s+\d+\s+([\d.]+)\s", ln)
                    if hit:
                        calls, msec = int(hit.group(2)), float(hit.group(3))
                        old = row.get(hit.group(1), (0.0, 0.0))
                        row[hit.group(1)] = (old[0] + calls / n, old[1] + msec * 1000 / n)
                per[c].append(row)
    labels = [f"{c[0]} {'TLS' if c[1] else 'plain'}" for c in configs]
    names = sorted({k for c in configs for r in per[c] for k, v in r.items() if v[0] >= 0.05})
    lines = [f"time in syscalls per echo, µs (perf trace -s, n={n}, median of {reps}; "
             "calls per echo x µs per call)", "| syscall | " + " | ".join(labels) + " |",
             "|---" * (len(labels) + 1) + "|"]
    for sc in names:
        cells = []
        for c in configs:
            tot = sorted(r.get(sc, (0.0, 0.0))[1] for r in per[c])[len(per[c]) // 2]
            cnt = sorted(r.get(sc, (0.0, 0.0))[0] for r in per[c])[len(per[c]) // 2]
            cells.append(f"{tot:.1f} ({cnt:.2f} x {tot / cnt:.1f})" if cnt else "-")
        lines.append(f"| {sc} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--base", type=int, default=100)
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--servers", default="aiodicom,dcmtk")
    parser.add_argument("--modes", default="plain,tls")
    parser.add_argument("--strace", action="store_true")
    parser.add_argument("--record", action="store_true")
    parser.add_argument("--no-stat", action="store_true")
    parser.add_argument("--trace", action="store_true",
                        help="time inside each syscall (perf trace -s, interleaved reps)")
    parser.add_argument("--split", action="store_true",
                        help="user/kernel split by object (perf record, interleaved reps)")
    parser.add_argument("--pin", choices=("split", "same", "none"), default="split",
                        help="server and echoscu on different cores (default), one core, unpinned")
    args = parser.parse_args()
    global CLIENT_CPU
    if args.pin == "same":
        CLIENT_CPU = SERVER_CPU
    elif args.pin == "none":
        import macro.servers
        macro.servers.SERVER_CPU = CLIENT_CPU = None  # type: ignore[assignment]
    workdir = Path(tempfile.mkdtemp(prefix="tls-syscalls-", dir="/dev/shm"))
    try:
        certs = make_certs(workdir / "pki")
        configs = [(s, m == "tls") for s in args.servers.split(",") for m in args.modes.split(",")]
        if not args.no_stat:
            res = measure_all(configs, certs, workdir, args.n, args.base, args.reps)
            print(f"n={args.n} (minus base {args.base}), reps={args.reps} (median)\n")
            print(table(res, "server"))
            print()
            print(table(res, "client"))
        if args.trace:
            print("\n" + trace_all(configs, certs, workdir, args.n, args.reps))
        if args.split:
            print("\n" + split_all(configs, certs, workdir, args.n, args.reps))
        for s, t in configs:
            if args.strace:
                print("\n" + strace_run(s, t, certs, workdir, args.n))
            if args.record:
                print("\n" + record_run(s, t, certs, workdir, args.n))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
