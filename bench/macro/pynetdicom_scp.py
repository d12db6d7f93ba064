"""A pynetdicom 3 storage + verification SCP as its users would write it, plain or mutual TLS.

Stores with pynetdicom's fast path (`event.encoded_dataset()`: no decode, Part 10 bytes) to
STORAGE/{SOPInstanceUID}.dcm. Default AE settings (16 KiB max PDU, 10 associations).

    python pynetdicom_scp.py --port N --storage DIR [--cert C --key K --ca CA]
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import ssl
import sys
from pathlib import Path
from types import FrameType
from typing import Any

from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--storage", type=Path, required=True)
    parser.add_argument("--ae-title", default="PYNETDICOM")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--ca")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    storage: Path = args.storage
    storage.mkdir(parents=True, exist_ok=True)

    def on_store(event: Any) -> int:
        name = str(event.request.AffectedSOPInstanceUID)
        part = storage / f".{name}.part"
        with part.open("wb") as f:
            f.write(event.encoded_dataset())
        os.replace(part, storage / f"{name}.dcm")
        return 0x0000

    ae = AE(ae_title=args.ae_title)
    ae.supported_contexts = AllStoragePresentationContexts
    ae.add_supported_context(Verification)
    context = None
    if args.cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=args.ca)
        context.load_cert_chain(args.cert, args.key)
        context.verify_mode = ssl.CERT_REQUIRED
        context.minimum_version = ssl.TLSVersion.TLSv1_2

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_term)
    try:
        ae.start_server(
            ("127.0.0.1", args.port), block=True, ssl_context=context,
            evt_handlers=[(evt.EVT_C_STORE, on_store)],
        )
    except SystemExit:
        ae.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
