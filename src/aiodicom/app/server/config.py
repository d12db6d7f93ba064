"""`aiodicom serve` options: one frozen dataclass, filled from TOML and then from flags.

Every option is a top-level TOML key named as the long flag with ``_`` for ``-``. An
unknown key or a wrong type is a `ConfigurationError` that names the key.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiodicom.errors import ConfigurationError

if TYPE_CHECKING:
    from aiodicom.aio.server import ConnectionLimits, ProxyProtocol
    from aiodicom.app.server.destinations import TLSFiles

__all__ = ["ServeOptions", "load_config"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ServeOptions:
    """Everything `aiodicom serve` needs; defaults are a working plain listener."""

    ae_title: str = "AIODICOM"
    host: str = "127.0.0.1"
    port: int | None = None
    """Plain DICOM listener (e.g. 11112)."""
    tls_port: int | None = None
    """Mutual-TLS listener (2762, PS3.15)."""
    cert: Path | None = None
    key: Path | None = None
    ca: Path | str | None = None
    crl: Path | str | None = None
    """--ca, --crl, --policy and --users take a path or an object URL (``az://container/key``,
    ``s3://bucket/key``), polled by ETag every `trust_poll_interval` (app/server/trust_source)."""
    trust_poll_interval: float = 2.0
    """Seconds between conditional GETs of trust objects given as URLs."""
    storage: Path | str = Path("storage")
    """A directory, or an object store: ``az://container/prefix``, ``s3://bucket/prefix``,
    ``gs://bucket/prefix`` (credentials from the environment; app/objstore.py)."""
    index: str | None = None
    """The index: an SQLite file path, or ``postgresql://...``; default STORAGE/index.sqlite
    for a directory storage, required for an object store."""
    workers: int = 1
    require_ae_binding: bool = False
    policy: Path | str | None = None
    """Access policy file (TOML, see docs/security.md), reloaded while the server runs."""
    metrics: str | None = None
    """Prometheus endpoint, "[HOST:]PORT" (host defaults to 127.0.0.1)."""
    audit_log: Path | None = None
    """Append PS3.15 A.5 audit messages here, one XML line each."""
    audit_syslog: str | None = None
    """Also send them as RFC 5424 syslog over UDP to "HOST:PORT"."""
    log_format: str = "text"
    log_level: str = "info"
    drain_timeout: float = 10.0
    idle_timeout: float = 300.0
    """An association with no traffic for this long is aborted."""
    acse_timeout: float = 30.0
    """Waiting for an A-RELEASE-RP (and, as a client, an A-ASSOCIATE-AC)."""
    dimse_timeout: float = 60.0
    """A data set that stops arriving mid-transfer for this long is aborted."""
    artim_timeout: float = 30.0
    """PS3.8 ARTIM: the first A-ASSOCIATE-RQ, and the peer's close after RJ/RP/A-ABORT."""
    tls_handshake_timeout: float = 10.0
    """A TLS handshake that stalls longer is dropped (it never holds up other clients)."""
    max_associations: int = 10_000
    max_pdu_length: int = 1 << 20
    fsync: bool = False
    duplicates: str = "overwrite"
    tls_profile: str = "bcp195"
    """PS3.15 secure transport profile: "bcp195" (B.12) or "bcp195-modified" (B.13)."""
    users: Path | str | None = None
    """User identity passwords: TOML ``[users] name = "hash"`` (`aiodicom user hash`)."""
    jwt_key: Path | None = None
    """JWT verification key: the HS* shared secret file or an RS*/ES* public key PEM."""
    jwt_algorithm: str = "HS256"
    jwt_audience: str | None = None
    """Required ``aud`` of a JWT (this server's name at the IdP). Unset: a token that names
    any audience is refused (RFC 7519 §4.1.3)."""
    jwt_issuer: str | None = None
    """Required ``iss`` of a JWT (the IdP)."""
    require_user_identity: bool = False
    max_pending_handshakes: int | None = None
    max_pending_handshakes_per_peer: int | None = None
    max_pre_association: int | None = None
    max_pre_association_per_peer: int | None = None
    max_associate_length: int | None = None
    """Caps on unauthenticated work (`aiodicom.aio.server.ConnectionLimits`, whose defaults
    apply when unset: 256, 64, 1024, 64, 128 KiB; docs/security.md, threat model)."""
    proxy_protocol: bool = False
    """Behind HAProxy (``mode tcp``, ``send-proxy-v2``): every connection, on both listeners,
    must start with a PROXY protocol v2 header; its client address is the peer's."""
    proxy_from: str | None = None
    """Addresses the proxy connects from, "CIDR[,CIDR...]" (default 127.0.0.0/8,::1/128);
    any other source is refused."""

    console: str | None = None
    """Serve the certificate console on "[HOST:]PORT" (host 127.0.0.1; HTTPS with --cert and
    --key beyond loopback), in this process's event loop (docs/console.md)."""
    console_pki: Path | None = None
    """The CA directory the console manages (default: the directory of --ca)."""
    console_users: Path | None = None
    """Console users: TOML ``[users] name = "hash"`` (the login link works without)."""

    move_destinations: Mapping[str, Any] = field(default_factory=dict)
    """C-MOVE destinations: ``[move_destinations] DEST = "host:port"`` (plain TCP), or a
    table ``[move_destinations.DEST]`` with ``address``, ``tls`` ("listener" or
    ``{ ca, cert, key }``) and ``server_name`` (mutual TLS; see app/server/destinations.py)."""

    def connection_limits(self) -> ConnectionLimits:
        """The ``max_pending_*``/``max_pre_association*``/``max_associate_length`` options."""
        from aiodicom.aio.server import ConnectionLimits

        names = ("max_pending_handshakes", "max_pending_handshakes_per_peer",
                 "max_pre_association", "max_pre_association_per_peer", "max_associate_length")
        given = {n: getattr(self, n) for n in names if getattr(self, n) is not None}
        return ConnectionLimits(**given)

    def proxy(self) -> ProxyProtocol | None:
        """The ``proxy_protocol``/``proxy_from`` options (None: no PROXY header expected)."""
        if not self.proxy_protocol:
            if self.proxy_from is not None:
                raise ConfigurationError("proxy_from needs proxy_protocol (--proxy-protocol)")
            return None
        from aiodicom.aio.server import ProxyProtocol

        return ProxyProtocol.from_cidrs(self.proxy_from)

    def console_pki_dir(self) -> Path | None:
        """The CA directory of the console: --console-pki, else the directory of --ca."""
        if self.console is None:
            return None
        return Path(self.console_pki) if self.console_pki else Path(self.ca or ".").parent

    def listener_files(self) -> TLSFiles | None:
        """The listener's --cert/--key/--ca, what a destination's ``tls = "listener"`` uses.
        An object-store --ca is used through its local mirror: `run_server` puts the
        mirror's path in --ca before building the server; until then ``ca`` is None."""
        from aiodicom.app.server.destinations import TLSFiles

        if self.cert is None or self.key is None or self.ca is None:
            return None
        ca = None if _url("ca", self.ca) else Path(self.ca)
        return TLSFiles(cert=Path(self.cert), key=Path(self.key), ca=ca)

    def check(self) -> ServeOptions:
        """Cross-field rules; returns self so it chains."""
        if self.port is None and self.tls_port is None:
            raise ConfigurationError(
                "nothing to listen on: give --port N (plain DICOM), --tls-port N (mutual TLS), "
                "or both"
            )
        if self.tls_port is not None:
            missing = [n for n in ("cert", "key", "ca") if getattr(self, n) is None]
            if missing:
                raise ConfigurationError(
                    "--tls-port needs " + ", ".join(f"--{n}" for n in missing)
                    + " (create them with `aiodicom pki init` and `aiodicom pki issue`)"
                )
            for name in ("cert", "key", "ca", "crl"):
                path = getattr(self, name)
                if path is not None and not _url(name, path) and not Path(path).is_file():
                    raise ConfigurationError(f"--{name} {path}: no such file")
        for name in ("policy", "users", "jwt_key"):
            path = getattr(self, name)
            if path is not None and not _url(name, path) and not Path(path).is_file():
                raise ConfigurationError(f"--{name.replace('_', '-')} {path}: no such file")
        from aiodicom.aio.tls import PROFILES

        if self.tls_profile not in PROFILES:
            raise ConfigurationError(
                f"tls_profile must be one of {', '.join(PROFILES)}, got {self.tls_profile!r}"
            )
        for name in ("jwt_audience", "jwt_issuer"):
            if getattr(self, name) == "":
                raise ConfigurationError(f"{name} must not be empty")
            if getattr(self, name) is not None and self.jwt_key is None:
                raise ConfigurationError(f"{name} needs --jwt-key FILE")
        if self.require_user_identity and self.users is None and self.jwt_key is None:
            raise ConfigurationError("require_user_identity needs --users FILE or --jwt-key FILE")
        for name in ("port", "tls_port"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 65535:
                raise ConfigurationError(f"{name} must be a port number (0-65535), got {value}")
        if self.log_format not in ("text", "json"):
            raise ConfigurationError(
                f"log_format must be 'text' or 'json', got {self.log_format!r}"
            )
        if self.metrics is not None:
            from aiodicom.app.server.metrics import parse_listen_address

            parse_listen_address(self.metrics)
        for name in ("drain_timeout", "idle_timeout", "acse_timeout", "dimse_timeout",
                     "artim_timeout", "tls_handshake_timeout", "trust_poll_interval"):
            if getattr(self, name) <= 0:
                raise ConfigurationError(f"{name} must be a positive number of seconds")
        if self.console is not None:
            from aiodicom.app.console.service import parse_console_address

            parse_console_address(self.console)
            if self.workers > 1:
                raise ConfigurationError("console runs in a single-process server: use it "
                                         "with workers = 1")
            if self.console_pki is None and self.ca is None:
                raise ConfigurationError("console needs the CA directory: --console-pki DIR")
        if self.workers < 1:
            raise ConfigurationError(f"workers must be at least 1, got {self.workers}")
        self.connection_limits()  # ConfigurationError naming the key below its floor
        self.proxy()  # ConfigurationError naming a bad --proxy-from entry
        from aiodicom.app.server.destinations import parse_move_destinations

        parse_move_destinations(self.move_destinations, listener=self.listener_files(),
                                profile=self.tls_profile)
        self._check_storage()
        if self.duplicates not in ("overwrite", "keep", "reject"):
            raise ConfigurationError(
                f"duplicates must be 'overwrite', 'keep' or 'reject', got {self.duplicates!r}"
            )
        return self

    def _check_storage(self) -> None:
        """An object-store URL must parse and needs --index (nodes share the index, and a
        bucket is no place for SQLite)."""
        from aiodicom.app.objstore import is_store_url, parse_store_url

        if not isinstance(self.storage, str) or not is_store_url(self.storage):
            return
        try:
            parse_store_url(self.storage)
        except ValueError as exc:
            raise ConfigurationError(f"--storage: {exc}") from None
        if self.index is None:
            raise ConfigurationError(
                f"--storage {self.storage} is an object store: give --index too, an SQLite "
                "file (e.g. /var/lib/aiodicom/index.sqlite) or postgresql://user:pass@host/db "
                "(several nodes share one PostgreSQL index)")


def _url(name: str, value: object) -> bool:
    """True if an option that may be an object URL is one (and a valid one)."""
    if name not in ("ca", "crl", "policy", "users") or not isinstance(value, str):
        return False
    from aiodicom.app.objstore import is_store_url, parse_store_url

    if not is_store_url(value):
        return False
    try:
        parse_store_url(value)
    except ValueError as exc:
        raise ConfigurationError(f"--{name}: {exc}") from None
    return True


def _expected(name: str) -> tuple[type, ...]:
    annotation = {f.name: f.type for f in fields(ServeOptions)}[name]
    text = str(annotation)
    kinds: list[type] = []
    for word, kind in (("int", int), ("str", str), ("bool", bool), ("float", float),
                       ("Path", str)):
        if word in text:
            kinds.append(kind)
    if float in kinds:
        kinds.append(int)
    return tuple(kinds)


def load_config(path: Path) -> dict[str, Any]:
    """Read a TOML file into ServeOptions field values, naming any bad key."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigurationError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"config file {path} is not valid TOML: {exc}") from exc
    from aiodicom.app.objstore import is_store_url

    known = {f.name for f in fields(ServeOptions)}
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key not in known:
            raise ConfigurationError(
                f"{path}: unknown key {key!r}; known keys: {', '.join(sorted(known))}"
            )
        if key == "move_destinations":
            if not isinstance(value, dict):
                raise ConfigurationError(
                    f'{path}: move_destinations must be a table of AE = "host:port" (or of '
                    f"tables with address and tls), got "
                    f"{type(value).__name__} {value!r}")
            values[key] = value
            continue
        kinds = _expected(key)
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            names = " or ".join(sorted({k.__name__ for k in kinds}))
            raise ConfigurationError(
                f"{path}: key {key!r} must be {names}, got {type(value).__name__} {value!r}"
            )
        field_type = str({f.name: f.type for f in fields(ServeOptions)}[key])
        values[key] = (Path(value) if "Path" in field_type and isinstance(value, str)
                       and not is_store_url(value) else value)
    return values


def merge(config: dict[str, Any], flags: dict[str, Any]) -> ServeOptions:
    """Flags given on the command line override the file; then the cross-field check."""
    merged = {**config, **{k: v for k, v in flags.items() if v is not None}}
    try:
        return dataclasses.replace(ServeOptions(), **merged).check()
    except TypeError as exc:  # pragma: no cover - keys are validated above
        raise ConfigurationError(str(exc)) from exc
