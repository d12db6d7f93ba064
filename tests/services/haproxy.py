"""HAProxy 2.6 in the foreground (``-db``) with a configuration given as text.

``tcp_config`` renders the layout the cluster tests use: one ``mode tcp`` frontend on
127.0.0.1, round-robin to the backends, each with ``send-proxy-v2`` (PROXY protocol v2, so the
nodes see the client's real address) and a health check. TLS passes through untouched.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ._process import (
    ServiceError,
    ServiceProcess,
    listens_on,
    port_answers,
    require_binary,
    retry_on_port_in_use,
)

HAPROXY = Path("/usr/sbin/haproxy")
DEFAULT_CHECK = "check inter 500ms fall 2 rise 2"
_BIND = re.compile(r"^\s*bind\s+[\d.]*:(\d+)", re.MULTILINE)


def tcp_config(frontend_port: int, backends: Sequence[tuple[str, int]], *,
               send_proxy_v2: bool = True, check: bool | str = True,
               balance: str = "roundrobin", maxconn: int = 2000,
               source: str | None = None, extra_backend: str = "") -> str:
    """A complete haproxy.cfg: TCP frontend on 127.0.0.1:frontend_port to ``backends``.

    ``check``: True = a TCP health check every 500 ms (``fall 2 rise 2``: a dead node is out in
    about a second); a string = the server's check options verbatim; False = no check.
    ``source``: the address HAProxy connects to the backends from (e.g. 127.0.0.3, so on
    loopback the proxy's address differs from the client's).
    ``extra_backend`` is appended to the backend section (e.g. ``option tcp-check`` rules).
    """
    if not backends:
        raise ValueError("tcp_config needs at least one backend")
    check_opts = DEFAULT_CHECK if check is True else (check or "")
    proxy = "send-proxy-v2" if send_proxy_v2 else ""
    servers = "\n".join(
        f"    server node{i} {host}:{port} {proxy} {check_opts}".rstrip()
        for i, (host, port) in enumerate(backends, 1))
    # maxconn must fit the file-descriptor limit or HAProxy refuses to start.
    return f"""global
    maxconn {maxconn}
    log stdout format raw local0 info

defaults
    mode tcp
    log global
    option tcplog
    option dontlognull
    timeout connect 2s
    timeout client 5m
    timeout server 5m
    retries 2
    option redispatch

frontend dicom
    bind 127.0.0.1:{frontend_port}
    default_backend nodes

backend nodes
    balance {balance}
{f"    source {source}" if source else ""}
{extra_backend}
{servers}
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class HAProxyServer:
    process: ServiceProcess
    config_path: Path
    ports: tuple[int, ...]

    @property
    def port(self) -> int:
        """The first ``bind`` port of the configuration (the frontend)."""
        return self.ports[0]

    @property
    def pid(self) -> int:
        return self.process.pid


def _launch(workdir: Path, text: str, tag: str) -> HAProxyServer:
    ports = tuple(int(p) for p in _BIND.findall(text))
    cfg = workdir / f"haproxy-{tag}.cfg"
    cfg.write_text(text)
    check = ServiceProcess("haproxy -c", [str(HAPROXY), "-c", "-q", "-f", str(cfg)],
                           workdir / f"haproxy-{tag}-check.log")
    status = check.popen.wait(30)
    check.stop()
    if status != 0:
        raise ServiceError(f"haproxy rejects {cfg}:\n{check.log_tail()}")
    proc = ServiceProcess("haproxy", [str(HAPROXY), "-f", str(cfg), "-db"],
                          workdir / f"haproxy-{tag}.log")
    proc.wait_ready(lambda: all(listens_on(proc.pid, p) and port_answers(p) for p in ports),
                    bind_failure=("cannot bind socket", "Address already in use"))
    return HAProxyServer(process=proc, config_path=cfg, ports=ports)


@contextlib.contextmanager
def start_haproxy(workdir: Path,
                  config_text: str | Callable[[int], str]) -> Iterator[HAProxyServer]:
    """Run HAProxy on ``config_text`` until the block ends (then the process group dies).

    With a callable, it is called with a free port for the frontend and called again with
    another one if HAProxy cannot bind it; with a text, its ``bind`` ports are used as given.
    """
    require_binary(HAPROXY, hint="install Debian's haproxy (make peers)")
    workdir.mkdir(parents=True, exist_ok=True)
    if callable(config_text):
        render = config_text
        server = retry_on_port_in_use(lambda port: _launch(workdir, render(port), str(port)))
    else:
        server = _launch(workdir, config_text, "static")
    try:
        yield server
    finally:
        server.process.stop()
