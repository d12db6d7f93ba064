"""Raw-socket attackers against a live in-process `Server`, and leak accounting.

Each attack opens a plain ``asyncio.open_connection`` to 127.0.0.1, writes crafted bytes
and reads back whatever the server answers until it closes (bounded by a timeout), so a
test can decode what PS3.8 says must come back (A-ABORT source 2 and its reason).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aiodicom.aio.client import connect
from aiodicom.aio.requests import StoreRequest
from aiodicom.aio.server import Handlers, Server
from aiodicom.app.archive.storage import INCOMING_DIR, Storage, StorageError, StorageSettings
from aiodicom.core.dimse import CStoreRQ, Message, Status, encode_message, fragment_command
from aiodicom.core.negotiation import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    VERIFICATION_SOP_CLASS,
    AcceptorPolicy,
    build_request,
)
from aiodicom.core.pdu import PDU, AAbort, AAssociateAC, AReleaseRP, decode_pdu_bytes, encode_pdu
from aiodicom.settings import AssociationSettings, Limits, Timeouts

CT = "1.2.840.10008.5.1.4.1.1.2"
MAX_PDU = 16384
"""What our raw attackers advertise and the server accepts: small, so PDUs are cheap."""


def policy() -> AcceptorPolicy:
    return AcceptorPolicy(
        abstract_syntaxes={
            VERIFICATION_SOP_CLASS: (IMPLICIT_VR_LITTLE_ENDIAN,),
            CT: (EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN),
        },
        max_pdu_length=MAX_PDU,
    )


def rq_bytes(**kw: object) -> bytes:
    """A valid A-ASSOCIATE-RQ: context 1 Verification, context 3 CT (explicit VR LE)."""
    args: dict[str, object] = {
        "called_ae": "ANY-SCP",
        "calling_ae": "ATTACKER",
        "contexts": [(VERIFICATION_SOP_CLASS, [IMPLICIT_VR_LITTLE_ENDIAN]),
                     (CT, [EXPLICIT_VR_LITTLE_ENDIAN])],
        "max_pdu_length": MAX_PDU,
    }
    args.update(kw)
    return encode_pdu(build_request(**args))  # type: ignore[arg-type]


def pdata(context_id: int, control: int, value: bytes) -> bytes:
    """One P-DATA-TF with one PDV (control: bit 0 command, bit 1 last)."""
    return struct.pack(">BxLLBB", 4, len(value) + 6, len(value) + 2, context_id, control) + value


def command_pdus(msg: Message, context_id: int = 3) -> bytes:
    return b"".join(
        b"".join(bytes(p) for p in pdu)
        for pdu in fragment_command(context_id, encode_message(msg), MAX_PDU)
    )


def store_rq(uid: str = "1.2.3.4", message_id: int = 1) -> CStoreRQ:
    return CStoreRQ(message_id=message_id, affected_sop_class_uid=CT,
                    affected_sop_instance_uid=uid)


@dataclass
class Harness:
    server: Server
    host: str
    port: int
    storage: Storage
    root: Path
    results: list[Status | str] = field(default_factory=list)

    async def open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(self.host, self.port)

    async def associate(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A raw connection in Sta6: RQ sent, AC received."""
        reader, writer = await self.open()
        writer.write(rq_bytes())
        pdu = await read_pdu(reader)
        assert isinstance(pdu, AAssociateAC), pdu
        return reader, writer

    async def attack(self, payload: bytes, *, associate: bool = False,
                     timeout: float = 3.0) -> list[PDU]:
        """Send ``payload`` (after an association if asked); the PDUs back until close."""
        reader, writer = await (self.associate() if associate else self.open())
        try:
            writer.write(payload)
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            return await read_until_closed(reader, timeout)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def echo_ok(self) -> None:
        """A legitimate client still gets its C-ECHO answered."""
        async with connect(self.host, self.port) as assoc:
            assert await assoc.echo() == Status.SUCCESS

    async def settle(self, limit: float = 2.0) -> None:
        """Wait (bounded) until the server holds no association."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while self.server.active and loop.time() < deadline:
            await asyncio.sleep(0.01)
        for _ in range(5):
            await asyncio.sleep(0)
        assert self.server.active == 0, f"{self.server.active} associations still active"

    def incoming(self) -> list[str]:
        path = self.root / INCOMING_DIR
        return sorted(os.listdir(path)) if path.exists() else []

    def stored(self) -> list[Path]:
        return sorted(p for p in self.root.rglob("*") if p.is_file()
                      and INCOMING_DIR not in p.parts and p.name != "index.sqlite")


async def read_pdu(reader: asyncio.StreamReader, timeout: float = 3.0) -> PDU:
    header = await asyncio.wait_for(reader.readexactly(6), timeout)
    (length,) = struct.unpack(">L", header[2:])
    assert length < (1 << 20), f"server sent a PDU of {length} bytes"
    body = await asyncio.wait_for(reader.readexactly(length), timeout)
    return decode_pdu_bytes(header + body)


async def read_until_closed(reader: asyncio.StreamReader, timeout: float, *,
                            stop_at_abort: bool = True) -> list[PDU]:
    """Every PDU the server sends until it closes (or, by default, sends an A-ABORT or
    A-RELEASE-RP: a polite peer closes then, and the server would wait ARTIM for that);
    fails on timeout."""
    pdus: list[PDU] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            header = await asyncio.wait_for(reader.readexactly(6), deadline - loop.time())
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            partial = getattr(exc, "partial", b"")
            assert not partial, f"server sent a partial header {partial!r}"
            return pdus
        (length,) = struct.unpack(">L", header[2:])
        body = await asyncio.wait_for(reader.readexactly(length), deadline - loop.time())
        pdus.append(decode_pdu_bytes(header + body))
        if stop_at_abort and isinstance(pdus[-1], AAbort | AReleaseRP):
            return pdus


def make_store_handler(storage: Storage, results: list[Status | str]):  # type: ignore[no-untyped-def]
    async def on_store(request: StoreRequest) -> Status:
        try:
            await request.save(storage)
        except StorageError as exc:
            results.append(f"{exc.failure.name}: {exc}")
            return Status(0xC000)
        results.append(Status.SUCCESS)
        return Status.SUCCESS

    return on_store


@contextlib.asynccontextmanager
async def harness(root: Path, *, artim: float = 0.5, max_pdu: int = MAX_PDU,
                  timeouts: Timeouts | None = None, **limits: int) -> AsyncIterator[Harness]:
    storage = Storage(StorageSettings(root=root))
    results: list[Status | str] = []
    server = Server(
        admission=policy(),
        handlers=Handlers(store=make_store_handler(storage, results)),
        settings=AssociationSettings(
            timeouts=timeouts or Timeouts(artim=artim),
            limits=Limits(max_pdu_length=max_pdu, **limits),
        ),
    )
    host, port = await server.listen()
    h = Harness(server=server, host=host, port=port, storage=storage, root=root,
                results=results)
    try:
        yield h
    finally:
        await server.close(drain_timeout=1.0)


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def task_count() -> int:
    return len(asyncio.all_tasks())


def aborts(pdus: Sequence[PDU]) -> list[tuple[int, int]]:
    return [(p.source, p.reason) for p in pdus if isinstance(p, AAbort)]
