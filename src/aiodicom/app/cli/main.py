"""The `aiodicom` command line (its names are a contract: see PRODUCT.md)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiodicom import __version__
from aiodicom.errors import ConfigurationError, DicomError

__all__ = ["main"]


def _add_tls_client_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("TLS (PS3.15 mutual authentication)")
    g.add_argument("--tls", action="store_true", help="connect over TLS (port 2762 usually)")
    g.add_argument("--cert", type=Path, help="our client certificate (PEM)")
    g.add_argument("--key", type=Path, help="its private key (PEM)")
    g.add_argument("--ca", type=Path, help="CA certificate(s) that sign the server's certificate")
    g.add_argument("--server-name", help="name to verify in the server certificate "
                   "(default: HOST)")
    g.add_argument("--tls-profile", choices=("bcp195", "bcp195-modified"), default="bcp195",
                   help="PS3.15 profile: bcp195 (B.12, default) or bcp195-modified (B.13)")
    from aiodicom.app.cli.identity import add_client_flags

    add_client_flags(p)


def _add_ae_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--calling-ae", "-aet", default="AIODICOM", metavar="AE",
                   help="our AE title (default AIODICOM)")
    p.add_argument("--called-ae", "-aec", default="ANY-SCP", metavar="AE",
                   help="the peer's AE title (default ANY-SCP)")


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aiodicom",
        description="asyncio DICOM networking over mutual TLS: server, client and CA tool",
    )
    parser.add_argument("--version", action="version", version=f"aiodicom {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the storage/verification server",
                           description="Run the DICOM storage and verification server.")
    serve.add_argument("--config", type=Path, help="TOML file; flags override its keys")
    serve.add_argument("--ae-title", help="our AE title (default AIODICOM)")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="plain DICOM port (e.g. 11112)")
    serve.add_argument("--tls-port", type=int, help="mutual-TLS DICOM port (e.g. 2762)")
    serve.add_argument("--cert", type=Path, help="server certificate (PEM)")
    serve.add_argument("--key", type=Path, help="server private key (PEM)")
    serve.add_argument("--ca", type=_path_or_url, metavar="FILE|URL",
                       help="CA certificate(s) that client certificates must chain to; a file "
                       "or an object URL (az://container/ca.crt, s3://...) polled by ETag")
    serve.add_argument("--crl", type=_path_or_url, metavar="FILE|URL",
                       help="certificate revocation list (PEM), a file or an object URL "
                       "(`aiodicom pki publish`)")
    serve.add_argument("--trust-poll-interval", type=float, metavar="SECONDS",
                       help="how often trust given as URLs is re-fetched (default 2)")
    serve.add_argument("--storage", type=_path_or_url, metavar="DIR|URL",
                       help="where instances go: a directory (default ./storage) or an object "
                            "store az://container/prefix, s3://bucket/prefix, gs://bucket/prefix "
                            "(credentials from the environment: docs/operations.md)")
    serve.add_argument("--index", metavar="FILE|URL",
                       help="the index: an SQLite file or postgresql://user:pass@host:port/db "
                            "(default STORAGE/index.sqlite; required with an object store)")
    serve.add_argument("--workers", type=int, help="worker processes (default 1)")
    serve.add_argument("--require-ae-binding", action="store_true", default=None,
                       help="refuse client certificates that name no AE title")
    serve.add_argument("--policy", type=_path_or_url, metavar="FILE|URL",
                       help="access policy by organization/group (TOML; see docs/security.md)")
    serve.add_argument("--metrics", metavar="[HOST:]PORT", help="Prometheus endpoint")
    serve.add_argument("--audit-log", type=Path, help="append PS3.15 A.5 audit messages here")
    serve.add_argument("--audit-syslog", metavar="HOST:PORT",
                       help="also send audit messages as RFC 5424 syslog over UDP")
    serve.add_argument("--log-format", choices=("text", "json"))
    serve.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    serve.add_argument("--drain-timeout", type=float, metavar="SECONDS",
                       help="on SIGTERM, how long running associations may finish (default 10)")
    for name, default, what in (
        ("idle", 300, "abort an association idle this long"),
        ("acse", 30, "wait this long for A-RELEASE-RP"),
        ("dimse", 60, "abort a data set that stops arriving for this long"),
        ("artim", 30, "PS3.8 ARTIM: first A-ASSOCIATE-RQ, and the peer's close"),
        ("tls-handshake", 10, "drop a TLS handshake that stalls this long"),
    ):
        serve.add_argument(f"--{name}-timeout", type=float, metavar="SECONDS",
                           help=f"{what} (default {default})")
    serve.add_argument("--max-associations", type=int, help="per worker (default 10000)")
    serve.add_argument("--max-pdu-length", type=int, help="largest PDU we receive (default 1 MiB)")
    for name, what in (
        ("pending-handshakes", "TLS handshakes in progress, the oldest dropped (default 256)"),
        ("pending-handshakes-per-peer", "TLS handshakes in progress per address (default 64)"),
        ("pre-association", "connections awaiting their A-ASSOCIATE-RQ (default 1024)"),
        ("pre-association-per-peer", "the same, per address (default 64)"),
        ("associate-length", "longest PDU before association, bytes (default 131072)"),
    ):
        serve.add_argument(f"--max-{name}", type=int, metavar="N", help=what)
    serve.add_argument("--proxy-protocol", action="store_true", default=None,
                       help="behind HAProxy (mode tcp, send-proxy-v2): require a PROXY v2 "
                       "header on every connection; logs, audit and limits see the client")
    serve.add_argument("--proxy-from", metavar="CIDR[,CIDR...]",
                       help="addresses the proxy connects from (default 127.0.0.0/8,::1)")
    serve.add_argument("--tls-profile", metavar="PROFILE",
                       help="PS3.15 profile: bcp195 (B.12, default) or bcp195-modified (B.13)")
    serve.add_argument("--users", type=_path_or_url, metavar="FILE|URL",
                       help='user identity passwords: TOML [users] name = "hash" '
                       "(see `aiodicom user hash`)")
    serve.add_argument("--jwt-key", type=Path, metavar="FILE",
                       help="verify JWT user identities: HS* secret file or RS*/ES* public key")
    serve.add_argument("--jwt-algorithm", metavar="ALG",
                       help="HS256 (default), HS384, HS512, RS256..RS512 or ES256..ES512")
    serve.add_argument("--jwt-audience", metavar="AUD",
                       help="required JWT 'aud' (unset: tokens naming any audience are refused)")
    serve.add_argument("--jwt-issuer", metavar="ISS", help="required JWT 'iss'")
    serve.add_argument("--require-user-identity", action="store_true", default=None,
                       help="refuse associations without an accepted user identity")
    serve.add_argument("--console", metavar="[HOST:]PORT",
                       help="serve the certificate console here (docs/console.md)")
    serve.add_argument("--console-pki", type=Path, metavar="DIR",
                       help="the console's CA directory (default: the directory of --ca)")
    serve.add_argument("--console-users", type=Path, metavar="FILE",
                       help="console users: TOML [users] name = HASH")
    serve.set_defaults(func=_cmd_serve)

    echo = sub.add_parser("echo", help="C-ECHO a peer (verification)",
                          description="Send C-ECHO; exit 0 when the peer answers success.")
    echo.add_argument("host")
    echo.add_argument("port", type=int)
    _add_ae_flags(echo)
    echo.add_argument("--repeat", type=int, default=1, help="echoes on one association")
    _add_tls_client_flags(echo)
    echo.set_defaults(func=_cmd_echo)

    store = sub.add_parser("store", help="C-STORE files and folders",
                           description="Send DICOM files (folders recursively); exit 0 only "
                           "if every instance got a success status.")
    store.add_argument("host")
    store.add_argument("port", type=int)
    store.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    _add_ae_flags(store)
    store.add_argument("--associations", "-n", type=int, default=1,
                       help="parallel associations (default 1)")
    store.add_argument("--window", "-w", type=_window_size, default=None, metavar="N",
                       help="propose an asynchronous operations window of N C-STOREs in "
                       "flight per association (PS3.7 D.3.3.3) and pipeline up to what the "
                       "peer grants (default: none proposed, one at a time)")
    store.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    store.add_argument("--commit", action="store_true",
                       help="then ask storage commitment (PS3.4 J) on the same association; "
                       "exit 0 only when every instance is reported committed")
    store.add_argument("--commit-timeout", type=float, default=60.0, metavar="SECONDS",
                       help="wait this long for the commitment report (default 60)")
    _add_tls_client_flags(store)
    store.set_defaults(func=_cmd_store)

    _add_qr_parsers(sub)
    from aiodicom.app.cli.commit import add_commit_parser

    add_commit_parser(sub, _add_ae_flags, _add_tls_client_flags, _cmd_commit)

    index = sub.add_parser("index", help="the storage index",
                           description="Maintain STORAGE/index.sqlite.")
    index_sub = index.add_subparsers(dest="index_command", metavar="ACTION")
    rebuild = index_sub.add_parser("rebuild", help="rebuild the index from the stored files")
    rebuild.add_argument("storage", metavar="STORAGE",
                         help="the storage directory or object store (az://container/prefix, "
                              "s3://bucket/prefix, gs://bucket/prefix)")
    rebuild.add_argument("--index", metavar="FILE|URL",
                         help="the index to rebuild: an SQLite file or postgresql://user:pass@"
                         "host:port/db (default STORAGE/index.sqlite; required with an "
                         "object store)")
    rebuild.set_defaults(func=_cmd_index_rebuild)

    import aiodicom.app.pki as pki

    pki.add_subparsers(sub)
    from aiodicom.app.server.users import add_user_subparsers

    add_user_subparsers(sub)
    from aiodicom.app.console.service import add_subparser as add_console_subparser

    add_console_subparser(sub)
    return parser


def _path_or_url(text: str) -> Path | str:
    from aiodicom.app.objstore import path_or_url

    return path_or_url(text)


def _cmd_serve(args: argparse.Namespace) -> int:
    from aiodicom.app.server.config import load_config, merge
    from aiodicom.app.server.run import serve_main

    config = load_config(args.config) if args.config else {}
    flags = {
        k: getattr(args, k)
        for k in ("ae_title", "host", "port", "tls_port", "cert", "key", "ca", "crl", "storage",
                  "index", "workers", "require_ae_binding", "policy", "metrics", "audit_log",
                  "audit_syslog",
                  "log_format", "log_level", "drain_timeout", "max_associations", "max_pdu_length",
                  "tls_profile", "users", "jwt_key", "jwt_algorithm", "jwt_audience",
                  "jwt_issuer", "require_user_identity",
                  "idle_timeout", "acse_timeout", "dimse_timeout", "artim_timeout",
                  "tls_handshake_timeout", "trust_poll_interval", "max_pending_handshakes",
                  "max_pending_handshakes_per_peer", "max_pre_association",
                  "max_pre_association_per_peer", "max_associate_length",
                  "proxy_protocol", "proxy_from", "console", "console_pki", "console_users")
    }
    options = merge(config, flags)
    if options.workers > 1:
        from aiodicom.app.server.workers import run_workers

        return run_workers(options)
    return serve_main(options)


def _client_tls(args: argparse.Namespace) -> Any:
    if not args.tls:
        if args.cert or args.key:
            raise ConfigurationError("--cert/--key given without --tls: add --tls to use them")
        return None
    missing = [f"--{n}" for n in ("cert", "key", "ca") if getattr(args, n) is None]
    if missing:
        raise ConfigurationError(f"--tls needs {', '.join(missing)}")
    from aiodicom.aio.tls import client_context

    return client_context(cert=args.cert, key=args.key, ca=args.ca, profile=args.tls_profile)


def _cmd_echo(args: argparse.Namespace) -> int:
    from aiodicom.app.cli.client import echo_main
    from aiodicom.app.cli.identity import request_from_args

    args.user_identity = request_from_args(args)

    return echo_main(args, _client_tls(args))


def _window_size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 0xFFFF:
        raise argparse.ArgumentTypeError(f"must be 1-65535, got {text!r}")
    return value


def _cmd_store(args: argparse.Namespace) -> int:
    from aiodicom.app.cli.client import store_main
    from aiodicom.app.cli.identity import request_from_args

    args.user_identity = request_from_args(args)

    return store_main(args, _client_tls(args))


def _cmd_commit(args: argparse.Namespace) -> int:
    from aiodicom.app.cli.commit import commit_main
    from aiodicom.app.cli.identity import request_from_args

    args.user_identity = request_from_args(args)
    return commit_main(args, _client_tls(args))


def _add_qr_parsers(sub: Any) -> None:
    """find/get/move (PS3.4 Annex C), with DCMTK findscu-style -k keys."""
    specs = (
        ("find", "C-FIND: query a peer", "Print the matches of a C-FIND (one line each); exit 0 "
         "when the query ends with success."),
        ("get", "C-GET: retrieve into a folder", "Retrieve the matches over the same "
         "association into --out; exit 0 only if every sub-operation succeeded."),
        ("move", "C-MOVE: have the peer send to an AE", "Ask the peer to store the matches on "
         "DEST (an AE title it knows); exit 0 only if every sub-operation succeeded."),
    )
    for name, short, description in specs:
        p = sub.add_parser(name, help=short, description=description)
        p.add_argument("host")
        p.add_argument("port", type=int)
        if name == "move":
            p.add_argument("destination", metavar="DEST", help="the move destination AE title")
        p.add_argument("-k", dest="keys", action="append", default=[], metavar="KEY=VALUE",
                       help="a matching or return key, e.g. -k PatientName=Doe* -k StudyDate= "
                       "(keyword or gggg,eeee; repeat)")
        p.add_argument("--level", default="STUDY", type=str.upper,
                       choices=("PATIENT", "STUDY", "SERIES", "IMAGE"),
                       help="Query/Retrieve Level (default STUDY)")
        p.add_argument("--model", default="study", choices=("study", "patient"),
                       help="information model: Study Root (default) or Patient Root")
        if name == "get":
            p.add_argument("--out", "-od", type=Path, required=True, metavar="DIR",
                           help="where retrieved files go")
        if name in ("get", "move"):
            p.add_argument("--allow-broad", action="store_true",
                           help="send the retrieve even if it does not name its unique keys "
                           "(PatientID at PATIENT, StudyInstanceUID at STUDY, plus those of "
                           "the levels above, one value each; PS3.4 C.4.2.2.1): without "
                           "them a peer may send every match, or its whole archive")
        _add_ae_flags(p)
        _add_tls_client_flags(p)
        p.set_defaults(func=_cmd_qr)


def _cmd_qr(args: argparse.Namespace) -> int:
    from aiodicom.app.cli.client import qr_main
    from aiodicom.app.cli.identity import request_from_args

    args.user_identity = request_from_args(args)
    return qr_main(args, _client_tls(args))


def _cmd_index_rebuild(args: argparse.Namespace) -> int:
    from aiodicom.app.archive.index_writer import open_index
    from aiodicom.app.objstore import is_store_url

    if is_store_url(args.storage):
        from aiodicom.app.archive.index_objects import rebuild_from_store
        from aiodicom.app.archive.object_storage import store_errors

        if not args.index:
            raise ConfigurationError(
                f"{args.storage}: an object store needs --index (an SQLite file or "
                "postgresql://user:pass@host:port/db)")
        with open_index(args.index, args.storage) as index:
            try:
                count = rebuild_from_store(index, args.storage)
            except store_errors() as exc:
                raise ConfigurationError(
                    f"{args.storage}: the object store failed, nothing was pruned: "
                    f"{exc}") from None
            where = index.key
        print(f"indexed {count} instance(s) in {where}")
        return 0
    root = Path(args.storage)
    if not root.is_dir():
        raise ConfigurationError(f"{root} is not a directory")
    with open_index(args.index, root) as index:
        count = index.rebuild(root)
        where = index.key
    print(f"indexed {count} instance(s) in {where}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    code = _main(argv)
    if argv is None and "obstore" in sys.modules:  # this process's own command line
        _exit_past_obstore(code)
    return code


def _exit_past_obstore(code: int) -> None:
    """Exit with ``code`` now. obstore's runtime threads can abort the interpreter during
    its finalization (SIGABRT) after every call succeeded (../shared/REFERENCE.md): our
    status, not that race, must decide the exit status. Non-daemon threads (the index
    writer) are joined first, as the interpreter would."""
    import logging
    import os
    import threading

    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _main(argv: Sequence[str] | None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args))
    except KeyboardInterrupt:
        return 130
    except (DicomError, ValueError, OSError) as exc:
        print(f"aiodicom {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
