"""Starting the console: `start_console` (in the loop of `aiodicom serve --console`) and
`aiodicom console --pki DIR [HOST:]PORT` (alone, without a DICOM listener).

Loopback addresses are served over plain HTTP; any other address only over HTTPS with the
server's certificate and key (``--cert``/``--key``), else start-up fails: a session cookie
and a CA's keys are not to cross a network in clear.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import signal
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiodicom.errors import ConfigurationError

__all__ = ["Console", "ConsoleSettings", "add_subparser", "parse_console_address",
           "start_console"]

log = logging.getLogger("aiodicom.console")

SWEEP_SECONDS = 60.0
"""How often unclaimed downloads past their 10 minutes are forgotten (keys included)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsoleSettings:
    pki: Path
    host: str = "127.0.0.1"
    port: int = 0
    cert: Path | None = None
    """HTTPS certificate (the DICOM server's); required beyond loopback."""
    key: Path | None = None
    users: Path | None = None
    """Console users (TOML, `aiodicom user hash` hashes); the login link works without."""
    audit_log: Path | None = None
    """Where changes are audited; default PKI/console/audit.log."""
    policy: Path | None = None
    dicom_host: str = "HOST"
    dicom_port: int = 2762
    called_ae: str = "AIODICOM"
    public_host: str | None = None
    """Another name the console is reached by (added to the Host allow-list)."""
    publish: str | None = None
    """Object-store URL to publish ca.crt and crl.pem to after each change (shared trust)."""
    operator: str = "admin"
    """The name the printed login link signs in as (what the audit trail names)."""


def operator_name(name: str) -> str:
    """An operator's name for a login link: 1-64 printable characters (it lands in the
    audit trail, the journal and log lines as is)."""
    if not name or len(name) > 64 or not name.isprintable() or name != name.strip():
        raise ValueError(f"operator name {name!r}: 1 to 64 printable characters, no "
                         "surrounding spaces")
    return name


def parse_console_address(text: str) -> tuple[str, int]:
    """"[HOST:]PORT" -> (host, port); the host defaults to 127.0.0.1."""
    host, sep, port_text = text.strip().rpartition(":")
    host = host.strip("[]") if sep else "127.0.0.1"
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535 or (sep and not host):
        raise ConfigurationError(f"console address {text!r} is not [HOST:]PORT (e.g. 8443 or "
                                 "127.0.0.1:8443)")
    return host, int(port_text)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _tls(settings: ConsoleSettings) -> ssl.SSLContext | None:
    if (settings.cert is None) != (settings.key is None):
        raise ConfigurationError("HTTPS needs both --cert and --key (only "
                                 f"--{'cert' if settings.key is None else 'key'} was given)")
    if settings.cert is None or settings.key is None:
        if not is_loopback(settings.host):
            raise ConfigurationError(
                f"the console listens on {settings.host}, beyond loopback: it needs HTTPS, so "
                "give the server's certificate and key (--cert/--key; `aiodicom serve` uses "
                "its own), or listen on 127.0.0.1 and reach it through an SSH tunnel")
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(settings.cert, settings.key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(f"console HTTPS certificate {settings.cert}: {exc}") from exc
    return ctx


def _certificate_names(settings: ConsoleSettings) -> set[str]:
    """The DNS names and addresses of the HTTPS certificate: the names browsers use to
    reach the console beyond loopback (the Host allow-list)."""
    if settings.cert is None:
        return set()
    from cryptography import x509

    from aiodicom.app.pki.files import read_certificates

    try:
        san = read_certificates(settings.cert)[0].extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    addresses = {str(a) for a in san.get_values_for_type(x509.IPAddress)}
    return {*san.get_values_for_type(x509.DNSName),
            *(f"[{a}]" if ":" in a else a for a in addresses)}


class Console:
    """A running console: its URL, a fresh login link, `close`."""

    def __init__(self, runner: Any, site: Any, url: str, context: Any,
                 own_trail: Any) -> None:
        self._runner, self._site, self.url, self.context = runner, site, url, context
        self._own_trail = own_trail
        self.address: tuple[str, int] = ("", 0)
        """(host, port) the console listens on."""
        self._sweeper = asyncio.get_running_loop().create_task(
            _sweep_downloads(context), name="console download sweeper")

    def login_link(self, name: str = "admin") -> str:
        """A new one-time login link (consumed on first use, valid 24 hours) that signs in
        as `name`, the administrator the audit trail names for what is done in that
        session (ValueError: empty, over 64 characters, or with control characters)."""
        token = self.context.sessions.login_link_token(operator_name(name))
        return f"{self.url}/login?token={token}"

    async def close(self) -> None:
        self._sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._sweeper
        await self._runner.cleanup()
        if self._own_trail is not None:
            self._own_trail.close()


async def _sweep_downloads(context: Any) -> None:
    """Every SWEEP_SECONDS, forget the downloads nobody claimed in time: a key made by the
    console does not stay in memory because nobody downloads anything afterwards."""
    while True:
        await asyncio.sleep(SWEEP_SECONDS)
        for gone in context.pki.sweep_downloads(time.monotonic()):
            log.info("console: the download of certificate %s was not claimed in time; its "
                     "key is forgotten (revoke it, enrol again)", gone.serial)


async def start_console(settings: ConsoleSettings, *, server: Any = None,
                        reload_trust: Callable[[], object] | None = None,
                        audit: Any = None) -> Console:
    """Serve the console in the running loop. `server` (an `aiodicom.aio.Server`) feeds
    Connected now; `reload_trust` is called after the CRL changed; `audit` is the server's
    `AuditTrail` (else one is opened at ``settings.audit_log``)."""
    from aiohttp import web

    from aiodicom.app.console.audit import ConsoleAudit
    from aiodicom.app.console.auth import Sessions, load_console_users
    from aiodicom.app.console.live import LiveAssociations
    from aiodicom.app.console.pki_ops import PKI
    from aiodicom.app.console.web import ConsoleContext, make_app
    from aiodicom.app.objstore import is_store_url
    from aiodicom.app.pki.ca import require_ca
    from aiodicom.app.server.audit import AuditTrail

    require_ca(settings.pki)
    tls = _tls(settings)
    if settings.policy is not None and not is_store_url(str(settings.policy)):
        from aiodicom.app.console.policy_view import policy_rows

        problem = policy_rows(settings.policy)["error"]
        if problem:
            raise ConfigurationError(f"console --policy {settings.policy}: {problem}")
    users = load_console_users(settings.users) if settings.users is not None else {}
    pki = PKI(settings.pki, dicom_host=settings.dicom_host, dicom_port=settings.dicom_port,
              called_ae=settings.called_ae)
    own_trail = None
    if audit is None:
        own_trail = audit = AuditTrail(settings.audit_log or pki.state / "audit.log",
                                       source_id="AIODICOM-CONSOLE")
    ctx = ConsoleContext(pki=pki, sessions=Sessions(users), audit=ConsoleAudit(audit),
                         live=LiveAssociations(server), https=tls is not None,
                         allowed_hosts=frozenset(), policy_path=settings.policy,
                         reload_trust=reload_trust, publish_url=settings.publish)
    runner = web.AppRunner(make_app(ctx), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port, ssl_context=tls,
                       reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigurationError(f"console cannot listen on {settings.host}:{settings.port}: "
                                 f"{exc}") from exc
    port = int(runner.addresses[0][1])  # port 0 picks a free one
    names = {settings.host, "localhost", "127.0.0.1", "[::1]", *_certificate_names(settings)}
    if settings.public_host:
        names.add(settings.public_host)
    hosts = {n.lower() for n in names} | {f"{n}:{port}".lower() for n in names}
    ctx.allowed_hosts = frozenset(hosts)
    shown = f"[{settings.host}]" if ":" in settings.host else settings.host
    url = f"{'https' if tls else 'http'}://{shown}:{port}"
    console = Console(runner, site, url, ctx, own_trail)
    console.address = (settings.host, port)
    return console


def announce(console: Console, name: str = "admin") -> None:
    """Print the console's address and a one-time login link (as Jupyter does) that signs in
    as `name`. Under systemd this lands in the journal: whoever reads it can use the link
    once, within 24 hours."""
    print(f"aiodicom console at {console.url}", flush=True)
    print(f"  log in (once) with: {console.login_link(name)}", flush=True)
    print(f"  (valid 24 hours; signs in as {name}, the name the audit trail records)",
          flush=True)


async def _run(settings: ConsoleSettings, stop: asyncio.Event | None = None) -> int:
    console = await start_console(settings)
    announce(console, settings.operator)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await console.close()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    return 0


def cmd_console(args: argparse.Namespace) -> int:
    host, port = parse_console_address(args.address)
    settings = ConsoleSettings(
        pki=args.pki, host=host, port=port, cert=args.cert, key=args.key, users=args.users,
        audit_log=args.audit_log, policy=args.policy, dicom_host=args.dicom_host,
        dicom_port=args.dicom_port, called_ae=args.called_ae, public_host=args.public_host,
        publish=args.publish, operator=args.operator)
    try:
        operator_name(args.operator)
    except ValueError as exc:
        print(f"aiodicom console: error: --operator: {exc}", file=sys.stderr)
        return 1
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(_run(settings))
    except ConfigurationError as exc:
        print(f"aiodicom console: error: {exc}", file=sys.stderr)
        return 1


def add_subparser(sub: Any) -> None:
    """``aiodicom console --pki DIR [HOST:]PORT``."""
    p = sub.add_parser(
        "console", help="web console: enrol, revoke and list certificates",
        description="Serve the certificate console for the CA in --pki DIR, without a DICOM "
        "listener (`aiodicom serve --console` runs it beside the server). Prints a one-time "
        "login link. Beyond loopback it serves HTTPS only (--cert/--key).")
    p.add_argument("address", metavar="[HOST:]PORT", help="where to listen (host 127.0.0.1)")
    p.add_argument("--pki", type=Path, required=True, metavar="DIR", help="the CA directory")
    p.add_argument("--cert", type=Path, help="HTTPS certificate (PEM)")
    p.add_argument("--key", type=Path, help="HTTPS private key (PEM)")
    p.add_argument("--users", type=Path, metavar="FILE",
                   help="console users: TOML [users] name = HASH (`aiodicom user hash`)")
    p.add_argument("--audit-log", type=Path, metavar="FILE",
                   help="audit trail for changes (default DIR/console/audit.log)")
    p.add_argument("--policy", type=Path, metavar="FILE", help="the servers' policy file")
    p.add_argument("--dicom-host", default="HOST", help="DICOM server host for command lines")
    p.add_argument("--dicom-port", type=int, default=2762, help="its TLS port (default 2762)")
    p.add_argument("--called-ae", default="AIODICOM", help="its AE title (default AIODICOM)")
    p.add_argument("--public-host", metavar="NAME",
                   help="another host name the console is reached by")
    p.add_argument("--publish", metavar="URL",
                   help="after each change, publish ca.crt and crl.pem to this object-store "
                   "URL (az://, s3://, gs://; as `aiodicom pki publish`) for every node")
    p.add_argument("--operator", default="admin", metavar="NAME",
                   help="who the printed login link signs in as, in the audit trail "
                   "(default admin)")
    p.set_defaults(func=cmd_console)


async def start_for_server(options: Any, server: Any, reloading: Any, audit: Any,
                           bound: list[tuple[str, str, int]]) -> Console:
    """The console of `aiodicom serve --console` (`ServeOptions`): beside `server` in this
    loop, HTTPS with the server's certificate beyond loopback, the revocations applied to
    the server at once through its trust reload (`reloading.reload`)."""
    host, port = parse_console_address(options.console)
    tls_port = next((p for kind, _h, p in bound if kind == "dicom+tls"), 2762)
    dicom_host = options.host if options.host not in ("0.0.0.0", "::", "") else "HOST"
    pki = options.console_pki_dir()
    assert pki is not None
    crl = pki / "crl.pem"
    from aiodicom.app.objstore import is_store_url

    publish = None
    if isinstance(options.crl, str) and is_store_url(options.crl):
        publish = options.crl.rsplit("/", 1)[0]  # nodes read URL/crl.pem: publish there
    elif options.crl is None or Path(options.crl).resolve() != crl.resolve():
        log.warning("the console publishes revocations to %s but this server reads --crl %s: "
                    "revocations made in the console do not reach it", crl, options.crl)
    settings = ConsoleSettings(
        pki=pki, host=host, port=port,
        cert=options.cert if not is_loopback(host) else None,
        key=options.key if not is_loopback(host) else None,
        users=options.console_users, policy=options.policy, dicom_host=dicom_host,
        dicom_port=tls_port, called_ae=options.ae_title, publish=publish)
    console = await start_console(settings, server=server,
                                  reload_trust=reloading.reload if reloading else None,
                                  audit=audit)
    announce(console)
    return console
