"""`aiodicom pki`: a small certificate authority for DICOM over mutual TLS (PS3.15 B.12).

The library API lives beside it (`ca`, `files`, `revoke`, `bundle`) and is re-exported by
the package; this module is the command line. The command names are a contract (PRODUCT.md).
Every `aiodicom` command builds this parser, so the library (and cryptography, ~8 MB of
RSS) is imported by the command that runs, not here.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from aiodicom.app.pki._defaults import CRL_DAYS, DICOM_TLS_PORT, KEY_TYPES, LEAF_DAYS
from aiodicom.errors import ConfigurationError

__all__ = ["add_subparsers", "main"]

Handler = Callable[[argparse.Namespace], int]
_FMT = argparse.RawDescriptionHelpFormatter


def _guarded(handler: Handler) -> Handler:
    """Print a ConfigurationError as one line on stderr and return exit status 1."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except ConfigurationError as exc:
            print(f"aiodicom pki: error: {exc}", file=sys.stderr)
            return 1

    run.__name__ = handler.__name__
    run.__doc__ = handler.__doc__
    return run


@_guarded
def _cmd_init(args: argparse.Namespace) -> int:
    from aiodicom.app.pki.ca import init_ca

    orgs: list[str | None] = list(args.org) if args.org else [None]
    ca = None
    for i, org in enumerate(orgs):
        ca = init_ca(args.dir, org=org, key_type=args.key_type, force=args.force and i == 0)
    assert ca is not None
    print(f"CA {ca.subject} in {ca.directory} (valid until {ca.not_after:%Y-%m-%d})")
    print(f"  trust anchor: {ca.cert}\n  private key:  {ca.key} (keep it offline if you can)")
    for org in ca.organizations:
        print(f"  organization {org}: {args.dir / 'orgs' / org / 'ca.crt'}")
    return 0


@_guarded
def _cmd_issue(args: argparse.Namespace) -> int:
    from aiodicom.app.pki.ca import issue_client, issue_server

    if args.kind == "server":
        issued = issue_server(
            args.dir, name=args.name, ips=args.ip or (), out=args.out,
            key_type=args.key_type, days=args.days, force=args.force,
        )
    else:
        issued = issue_client(
            args.dir, ae_titles=args.ae_title, org=args.org, groups=args.group or (),
            out=args.out, key_type=args.key_type, days=args.days, force=args.force,
        )
    rec = issued.record
    print(f"issued {rec.kind} certificate {rec.subject} serial {rec.serial:X}")
    if rec.ae_titles:
        print(f"  AE titles: {', '.join(rec.ae_titles)}")
    if rec.dns_names or rec.ip_addresses:
        print(f"  names: {', '.join(rec.dns_names + rec.ip_addresses)}")
    print(f"  certificate: {issued.cert}\n  private key: {issued.key} (mode 0600)")
    print(f"  valid until {rec.not_after:%Y-%m-%d}; signed by "
          f"{'the ' + rec.signed_by + ' intermediate' if rec.signed_by else 'the root CA'}")
    return 0


@_guarded
def _cmd_revoke(args: argparse.Namespace) -> int:
    from aiodicom.app.pki.revoke import revoke, write_crl

    record = revoke(args.dir, args.certfile)
    crl = write_crl(args.dir)
    print(f"revoked {record.subject} serial {record.serial:X} at {record.revoked_at}")
    print(f"  wrote {crl}; servers reading it with --crl refuse this certificate once they "
          "reload it (within seconds, or on SIGHUP)")
    return 0


@_guarded
def _cmd_crl(args: argparse.Namespace) -> int:
    from aiodicom.app.pki.revoke import list_certs, write_crl

    path = write_crl(args.dir, days=args.days)
    revoked = sum(1 for r in list_certs(args.dir) if r.revoked)
    print(f"wrote {path}: {revoked} revoked certificate(s), valid for {args.days} days; "
          "publish it again before then")
    return 0


@_guarded
def _cmd_publish(args: argparse.Namespace) -> int:
    from aiodicom.app.pki.publish import publish

    done = publish(args.dir, args.url)
    for url in done.urls:
        print(f"wrote {url}")
    print(f"  {done.revoked} revoked certificate(s); servers reading --crl "
          f"{done.urls[0]} refuse them within their poll interval (2 s by default)")
    return 0


@_guarded
def _cmd_list(args: argparse.Namespace) -> int:
    from aiodicom.app.pki.files import utcnow
    from aiodicom.app.pki.revoke import list_certs

    now = utcnow()
    rows = [("SERIAL", "KIND", "STATUS", "NOT AFTER", "SUBJECT", "AE TITLES / NAMES")]
    for r in list_certs(args.dir):
        status = "revoked" if r.revoked else ("expired" if r.not_after <= now else "valid")
        names = ", ".join(r.ae_titles or r.dns_names + r.ip_addresses)
        rows.append((f"{r.serial:X}"[:16], r.kind.value, status, f"{r.not_after:%Y-%m-%d}",
                     r.subject, names))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row[:5], widths, strict=True)), row[5])
    return 0


@_guarded
def _cmd_export(args: argparse.Namespace) -> int:
    from aiodicom.app.pki.bundle import export_bundle

    bundle = export_bundle(
        args.dir, args.certfile, args.out, key=args.key, host=args.host, port=args.port,
        called_ae=args.called_ae, force=args.force,
    )
    print(f"wrote client bundle {bundle.directory}:")
    for path in (bundle.cert, bundle.key, bundle.ca, bundle.readme):
        print(f"  {path}")
    print(f"see {bundle.readme} for ready aiodicom and DCMTK command lines")
    return 0


def _common(p: argparse.ArgumentParser, *, force: str) -> None:
    p.add_argument("--force", action="store_true", help=force)


def _add_issue(sub: Any) -> None:
    issue = sub.add_parser(
        "issue", help="issue a server or client certificate", formatter_class=_FMT,
        description="Issue a certificate signed by the CA in DIR: writes PREFIX.crt and "
        "PREFIX.key (mode 0600). EC P-256 keys unless --key-type rsa (RSA 3072).",
    )
    issue.add_argument("dir", type=Path, metavar="DIR", help="the CA directory")
    kinds = issue.add_subparsers(dest="kind", required=True, metavar="{server,client}")
    server = kinds.add_parser(
        "server", help="a TLS server certificate (serverAuth)", formatter_class=_FMT,
        description="Issue a server certificate for host --name (subject CN and SAN DNS name; "
        "an IP literal becomes a SAN IP) and every --ip.",
        epilog="example:\n  aiodicom pki issue ca/ server --name pacs.example.org "
        "--ip 10.0.0.5 --out pacs",
    )
    server.add_argument("--name", required=True, metavar="HOST", help="host name clients use")
    server.add_argument("--ip", action="append", metavar="ADDR", help="an IP address (repeat)")
    client = kinds.add_parser(
        "client", help="a TLS client certificate bound to AE titles (clientAuth)",
        formatter_class=_FMT,
        description="Issue a client certificate: subject CN = the first AE title, O = --org, "
        "OU = each --group; each AE title is bound as a SAN URI dicom-ae:<AE>. A server "
        "accepts the certificate only with a calling AE title it names. With --org, the "
        "organization's intermediate CA signs it if `pki init DIR --org ORG` created one.",
        epilog="example:\n  aiodicom pki issue ca/ client --ae-title CT01 --org "
        "'Radiology East' --group ct --out ct01",
    )
    client.add_argument("--ae-title", action="append", required=True, metavar="AE",
                        help="a calling AE title this client may use (repeat for several)")
    client.add_argument("--org", metavar="ORG", help="the client's organization (subject O)")
    client.add_argument("--group", action="append", metavar="G",
                        help="a group the client belongs to (subject OU; repeat)")
    for p in (server, client):
        p.add_argument("--out", required=True, type=Path, metavar="PREFIX",
                       help="write PREFIX.crt and PREFIX.key")
        p.add_argument("--key-type", choices=KEY_TYPES, default="ec",
                       help="ec (P-256, default) or rsa (3072 bits)")
        p.add_argument("--days", type=int, default=LEAF_DAYS,
                       help=f"validity in days (default {LEAF_DAYS}; capped at the CA's)")
        _common(p, force="replace PREFIX.crt/PREFIX.key if they exist")
    issue.set_defaults(func=_cmd_issue)


def add_subparsers(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the `pki` command and its subcommands; each sets ``func`` to a handler -> exit code."""
    pki = subparsers.add_parser(
        "pki", help="certificate authority: enrol servers and modalities for DICOM TLS",
        formatter_class=_FMT,
        description="A certificate authority for DICOM over mutual TLS (PS3.15). Typical use:\n"
        "  aiodicom pki init ca/\n"
        "  aiodicom pki issue ca/ server --name pacs.example.org --out pacs\n"
        "  aiodicom pki issue ca/ client --ae-title CT01 --org Hospital --out ct01\n"
        "  aiodicom pki export ca/ ct01.crt --out ct01-bundle/\n"
        "  aiodicom pki revoke ca/ ct01.crt      (also rewrites ca/crl.pem)",
    )
    sub = pki.add_subparsers(dest="pki_command", required=True, metavar="SUBCOMMAND")

    init = sub.add_parser(
        "init", help="create a CA (and per-organization intermediates)", formatter_class=_FMT,
        description="Create a root CA in DIR (DIR/ca.crt, DIR/ca.key mode 0600, DIR/index.json). "
        "--org NAME also creates DIR/orgs/NAME/ca.crt, an intermediate CA that signs that "
        "organization's clients; on an existing CA, --org only adds the intermediate.",
    )
    init.add_argument("dir", type=Path, metavar="DIR", help="the CA directory (created)")
    init.add_argument("--org", action="append", metavar="NAME",
                      help="create an intermediate CA for organization NAME (repeat)")
    init.add_argument("--key-type", choices=KEY_TYPES, default="ec",
                      help="ec (P-256, default) or rsa (3072 bits)")
    _common(init, force="replace an existing CA (everything it issued stops working)")
    init.set_defaults(func=_cmd_init)

    _add_issue(sub)

    rev = sub.add_parser(
        "revoke", help="revoke a certificate and rewrite DIR/crl.pem",
        description="Revoke CERTFILE (it must have been issued by the CA in DIR) and write a "
        "new DIR/crl.pem. Servers started with --crl DIR/crl.pem refuse it after reloading.",
    )
    rev.add_argument("dir", type=Path, metavar="DIR", help="the CA directory")
    rev.add_argument("certfile", type=Path, metavar="CERTFILE", help="the certificate (PEM)")
    rev.set_defaults(func=_cmd_revoke)

    crl = sub.add_parser(
        "crl", help="publish the certificate revocation list DIR/crl.pem",
        description="Write DIR/crl.pem: one CRL per CA in DIR (root and intermediates). A server "
        "refuses every client once its CRL is past next-update, so run this regularly.",
    )
    crl.add_argument("dir", type=Path, metavar="DIR", help="the CA directory")
    crl.add_argument("--days", type=int, default=CRL_DAYS,
                     help=f"validity of the CRL (next-update) in days (default {CRL_DAYS})")
    crl.set_defaults(func=_cmd_crl)

    pub = sub.add_parser(
        "publish", help="write DIR's ca.crt and crl.pem to an object store for every node",
        formatter_class=_FMT,
        description="Write DIR/crl.pem and DIR/ca.crt to URL/crl.pem and URL/ca.crt (one PUT "
        "each, visible only when complete; the CRL first). Servers started with --ca "
        "URL/ca.crt --crl URL/crl.pem poll them by ETag and apply a new CRL within seconds. "
        "Credentials and endpoints come from the environment (AZURE_STORAGE_*, AWS_*).",
        epilog="example:\n  aiodicom pki revoke ca/ ct01.crt\n"
        "  aiodicom pki publish ca/ az://trust/site",
    )
    pub.add_argument("dir", type=Path, metavar="DIR", help="the CA directory")
    pub.add_argument("url", metavar="URL", help="az://container/prefix or s3://bucket/prefix")
    pub.set_defaults(func=_cmd_publish)

    lst = sub.add_parser("list", help="list issued certificates and their status",
                         description="List every certificate issued by the CA in DIR.")
    lst.add_argument("dir", type=Path, metavar="DIR", help="the CA directory")
    lst.set_defaults(func=_cmd_list)

    exp = sub.add_parser(
        "export", help="export a client bundle (cert, key, CA, commands)", formatter_class=_FMT,
        description="Copy what a client needs into DIR2: its certificate (with intermediate), "
        "its key (mode 0600), the root CA and README.txt with ready aiodicom and DCMTK "
        "command lines.",
        epilog="example:\n  aiodicom pki export ca/ ct01.crt --out ct01-bundle/ "
        "--host pacs.example.org",
    )
    exp.add_argument("dir", type=Path, metavar="DIR", help="the CA directory")
    exp.add_argument("certfile", type=Path, metavar="CERTFILE", help="the client's PREFIX.crt")
    exp.add_argument("--out", required=True, type=Path, metavar="DIR2",
                     help="the bundle directory (created)")
    exp.add_argument("--key", type=Path, metavar="KEYFILE",
                     help="the client's key (default: CERTFILE with .key for .crt)")
    exp.add_argument("--host", default="HOST", help="server host for the example commands")
    exp.add_argument("--port", type=int, default=DICOM_TLS_PORT,
                     help=f"server port for the example commands (default {DICOM_TLS_PORT})")
    exp.add_argument("--called-ae", default="AIODICOM",
                     help="the server's AE title for the example commands (default AIODICOM)")
    _common(exp, force="replace files that exist in DIR2")
    exp.set_defaults(func=_cmd_export)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``pki ...`` alone (for tests and ``python -m aiodicom.app.pki``)."""
    parser = argparse.ArgumentParser(prog="aiodicom")
    sub = parser.add_subparsers(dest="command", required=True)
    add_subparsers(sub)
    args = parser.parse_args(argv)
    func: Handler = args.func
    return func(args)


if __name__ == "__main__":
    sys.exit(main())
