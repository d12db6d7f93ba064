"""One cluster: HAProxy (mode tcp, send-proxy-v2) -> 3 `aiodicom serve` nodes sharing a
PostgreSQL index, an object store for the instances and trust published to the object store."""

from __future__ import annotations

import concurrent.futures
import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.cluster.harness import CALLED_AE, PROXY_SOURCE, Node, Pki, cli, make_pki
from tests.services.haproxy import HAProxyServer, start_haproxy, tcp_config
from tests.services.postgres import PostgresServer

CLIENTS = ("STORESCU", "FINDSCU", "REVOKED")
NODES = 3


@dataclass(kw_only=True)
class Cluster:
    workdir: Path
    pki: Pki
    nodes: list[Node]
    proxy: HAProxyServer
    storage_url: str
    trust_url: str
    index_dsn: str
    env: dict[str, str]
    postgres: PostgresServer
    list_objects: Callable[[], list[str]]
    """Every object key under the storage prefix (the instances written)."""

    @property
    def port(self) -> int:
        """HAProxy's frontend: where modalities connect."""
        return self.proxy.port

    def index_uids(self) -> list[str]:
        """SOP Instance UIDs in the shared index, one per row (duplicates would repeat)."""
        out = self.postgres.psql('SELECT "SOPInstanceUID" FROM instance',
                                 self.index_dsn.rsplit("/", 1)[1])
        return [line for line in out.splitlines() if line]

    def publish_trust(self) -> None:
        """`aiodicom pki publish CA_DIR TRUST_URL`: the CA bundle and CRL to every node."""
        cli("pki", "publish", self.pki.ca_dir, self.trust_url, env=self.env)


@contextlib.contextmanager
def start_cluster(workdir: Path, *, postgres: PostgresServer, database: str, storage_url: str,
                  trust_url: str, env: dict[str, str],
                  list_objects: Callable[[], list[str]]) -> Iterator[Cluster]:
    """Start everything (PKI, trust publication, nodes, HAProxy); stop it all on exit."""
    pki = make_pki(workdir, CLIENTS)
    cli("pki", "crl", pki.ca_dir)
    cli("pki", "publish", pki.ca_dir, trust_url, env=env)
    ca, crl = f"{trust_url}/ca.crt", f"{trust_url}/crl.pem"
    dsn = postgres.create_database(database)
    # The nodes get the password from PGPASSWORD, as docs/deployment.md advises (not in ps).
    node_dsn = dsn.replace(f":{postgres.password}@", "@")
    # The index journal (acknowledged, not yet indexed) in the run's own directory, never
    # the user's ~/.local/state: a test leaves nothing behind.
    env = {**env, "PGPASSWORD": postgres.password,
           "AIODICOM_INDEX_JOURNAL": str(workdir / "index-journal")}
    common = ["--ae-title", CALLED_AE, "--cert", str(pki.server.cert),
              "--key", str(pki.server.key), "--ca", ca, "--crl", crl, "--require-ae-binding",
              "--storage", storage_url, "--index", node_dsn, "--proxy-protocol",
              "--proxy-from", f"{PROXY_SOURCE}/32", "--drain-timeout", "2",
              "--log-level", "info"]
    nodes = [Node(name=f"node{i}", workdir=workdir, args=common, env=env)
             for i in range(1, NODES + 1)]
    with contextlib.ExitStack() as stack:
        for node in nodes:
            stack.callback(node.stop)
        # In parallel: each start is mostly interpreter and TLS/index set-up (seconds).
        with concurrent.futures.ThreadPoolExecutor(len(nodes)) as pool:
            for future in [pool.submit(node.start) for node in nodes]:
                future.result()

        def config(port: int) -> str:
            return tcp_config(port, [("127.0.0.1", n.port) for n in nodes],
                              source=PROXY_SOURCE)

        proxy = stack.enter_context(start_haproxy(workdir, config))
        yield Cluster(workdir=workdir, pki=pki, nodes=nodes, proxy=proxy,
                      storage_url=storage_url, trust_url=trust_url, index_dsn=dsn, env=env,
                      postgres=postgres, list_objects=list_objects)
