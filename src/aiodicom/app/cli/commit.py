"""Storage commitment on the command line (PS3.4 J): `aiodicom commit HOST PORT PATH...`
for files already sent, and the tally behind `aiodicom store ... --commit`.

Exit 0 only when the peer reports every instance committed; a failed instance is named
with its file and the peer's failure reason, like a failed C-STORE.
"""

from __future__ import annotations

import argparse
import ssl
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiodicom.aio.commitment import (
    CommitResult,
    Reference,
    commitment_context,
    commitment_role,
)
from aiodicom.aio.loop import run
from aiodicom.core.part10 import NotPart10Error, read_part10_info
from aiodicom.errors import AssociationRejected, DicomError
from aiodicom.settings import AssociationSettings

__all__ = ["CommitTally", "add_commit_parser", "commit_main"]

DEFAULT_TIMEOUT = 60.0
"""Seconds we wait for the N-EVENT-REPORT after the N-ACTION-RSP."""


@dataclass(slots=True)
class CommitTally:
    """What was asked and what the peer reported, by file; shared by every association."""

    timeout: float = DEFAULT_TIMEOUT
    asked: dict[str, Path] = field(default_factory=dict)
    """SOP Instance UID -> the file it came from."""
    committed: set[str] = field(default_factory=set)
    failed: dict[str, str] = field(default_factory=dict)
    """SOP Instance UID -> why (failure reason or the error of the request)."""

    async def commit(self, assoc: Any, paths: list[Path]) -> None:
        """Ask commitment of ``paths`` on ``assoc`` and record the report; an error of the
        request fails each of them with its message."""
        refs = []
        for path in paths:
            info = read_part10_info(path)
            refs.append(Reference(sop_class_uid=info.sop_class_uid,
                                  sop_instance_uid=info.sop_instance_uid))
            self.asked[info.sop_instance_uid] = path
        if not refs:
            return
        try:
            result: CommitResult = await assoc.commit(refs, timeout=self.timeout)
        except DicomError as exc:
            for ref in refs:
                self.failed[ref.sop_instance_uid] = f"commitment not reported: {exc}"
            return
        self.committed.update(r.sop_instance_uid for r in result.committed)
        for failure in result.failed:
            self.failed[failure.reference.sop_instance_uid] = (
                f"not committed: 0x{failure.reason:04X} ({failure.description})")
        for ref in refs:  # neither listed as committed nor as failed: not committed
            uid = ref.sop_instance_uid
            if uid not in self.committed and uid not in self.failed:
                self.failed[uid] = "not committed: absent from the peer's report"

    def report(self, expected: int) -> bool:
        """Print the outcome; True when all ``expected`` instances are committed."""
        print(f"committed {len(self.committed - set(self.failed))} of {expected} instance(s)")
        for uid, why in sorted(self.failed.items(), key=lambda kv: str(self.asked.get(kv[0]))):
            print(f"  NOT COMMITTED {self.asked.get(uid, uid)}: {why}")
        return not self.failed and len(self.committed) >= expected


def add_commit_parser(sub: Any, ae_flags: Any, tls_flags: Any, func: Any) -> None:
    """`aiodicom commit HOST PORT PATH...` (the flags helpers and handler come from main)."""
    p = sub.add_parser(
        "commit", help="storage commitment of files already sent",
        description="Ask the peer to commit (keep safely) the instances of these files "
        "(folders recursively) with Storage Commitment Push Model (PS3.4 J); exit 0 only "
        "when it reports every instance committed.")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                   help=f"wait this long for the report (default {DEFAULT_TIMEOUT:g})")
    ae_flags(p)
    tls_flags(p)
    p.set_defaults(func=func)


def commit_main(args: argparse.Namespace, tls: ssl.SSLContext | None) -> int:
    from aiodicom.aio.client import connect  # not at import: every command builds this parser
    from aiodicom.app.cli.client import iter_files

    files: list[Path] = []
    for path in iter_files(args.paths):
        try:
            read_part10_info(path)
        except (NotPart10Error, OSError) as exc:
            print(f"aiodicom commit: {path}: {exc}", file=sys.stderr)
            return 1
        files.append(path)
    tally = CommitTally(timeout=args.timeout)
    settings = AssociationSettings(ae_title=args.calling_ae)

    async def go() -> None:
        async with connect(
            args.host, args.port, called_ae_title=args.called_ae,
            contexts=[commitment_context()], role_selections=[commitment_role()],
            settings=settings, tls=tls, server_hostname=args.server_name,
            user_identity=getattr(args, "user_identity", None),
        ) as assoc:
            await tally.commit(assoc, files)

    try:
        run(go())
    except (AssociationRejected, DicomError) as exc:
        print(f"aiodicom commit: error: {exc}", file=sys.stderr)
        return 1
    return 0 if tally.report(len(files)) else 1
