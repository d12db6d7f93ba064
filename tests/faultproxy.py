"""A fault-injecting TCP proxy for network tests (the asyncpg idea, for DICOM).

`FaultProxy` listens on 127.0.0.1:0 and forwards each accepted connection to a target,
applying one `Fault` per direction: client->server (``c2s``) and server->client (``s2c``).
A fault fires once ``after`` bytes have gone through in its direction, even in the middle
of a chunk (and so in the middle of a PDU):

- PASS      forward everything.
- DELAY     sleep ``delay`` seconds before forwarding each chunk (from the start).
- STALL     forward nothing more and stop reading that side; the connection stays open.
- DROP      close both sides (FIN) at once.
- RESET     SO_LINGER 0 then close both sides: the peers see a TCP RST.
- TRUNCATE  half-close the destination (it sees EOF); later bytes from the source are read
            and thrown away, the other direction goes on.

The plan is chosen per connection (a `Plan`, or a callable given the connection index), and
a live connection's faults can be replaced with `ProxyConnection.apply`. Everything is
bounded: a connection limit, 64 KiB reads, and `aclose` cancels every task and closes every
socket it opened.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Direction", "Fault", "FaultKind", "FaultProxy", "Plan", "ProxyConnection"]

CHUNK = 64 * 1024


class FaultKind(enum.Enum):
    PASS = "pass"
    DELAY = "delay"
    STALL = "stall"
    DROP = "drop"
    RESET = "reset"
    TRUNCATE = "truncate"


class Direction(enum.Enum):
    C2S = "c2s"
    S2C = "s2c"


@dataclass(frozen=True, slots=True, kw_only=True)
class Fault:
    """What to do to one direction of a connection, after ``after`` bytes went through."""

    kind: FaultKind = FaultKind.PASS
    after: int = 0
    delay: float = 0.0

    @classmethod
    def passthrough(cls) -> Fault:
        return cls()

    @classmethod
    def delayed(cls, delay: float) -> Fault:
        return cls(kind=FaultKind.DELAY, delay=delay)

    @classmethod
    def stall(cls, after: int = 0) -> Fault:
        return cls(kind=FaultKind.STALL, after=after)

    @classmethod
    def drop(cls, after: int = 0) -> Fault:
        return cls(kind=FaultKind.DROP, after=after)

    @classmethod
    def reset(cls, after: int = 0) -> Fault:
        return cls(kind=FaultKind.RESET, after=after)

    @classmethod
    def truncate(cls, after: int = 0) -> Fault:
        return cls(kind=FaultKind.TRUNCATE, after=after)


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    c2s: Fault = field(default_factory=Fault)
    s2c: Fault = field(default_factory=Fault)


class _Stop(Exception):
    """A direction's pump ends here (a fault closed it)."""


@dataclass(eq=False)
class ProxyConnection:
    """One proxied connection: its plan, bytes forwarded each way, when a fault fired."""

    index: int
    c2s: Fault
    s2c: Fault
    forwarded: dict[Direction, int] = field(
        default_factory=lambda: {Direction.C2S: 0, Direction.S2C: 0})
    fired: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when a fault other than PASS/DELAY fired in either direction."""
    done: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when both sides are closed."""
    _base: dict[Direction, int] = field(
        default_factory=lambda: {Direction.C2S: 0, Direction.S2C: 0})
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def fault(self, direction: Direction) -> Fault:
        return self.c2s if direction is Direction.C2S else self.s2c

    def apply(self, direction: Direction, fault: Fault) -> None:
        """Replace a direction's fault now; its ``after`` counts from the bytes sent so far."""
        if direction is Direction.C2S:
            self.c2s = fault
        else:
            self.s2c = fault
        self._base[direction] = self.forwarded[direction]
        self._changed.set()

    def remaining(self, direction: Direction) -> int:
        """Bytes that may still go through before the fault fires."""
        return self._base[direction] + self.fault(direction).after - self.forwarded[direction]

    def close(self, *, reset: bool = False) -> None:
        for writer in self._writers:
            if reset:
                _linger_zero(writer)
                writer.transport.abort()
            else:
                writer.close()


def _linger_zero(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class FaultProxy:
    """Listens on 127.0.0.1:0 and forwards to ``target`` under a fault plan."""

    def __init__(self, target_host: str, target_port: int, *,
                 plan: Plan | Callable[[int], Plan] | None = None,
                 max_connections: int = 64) -> None:
        self.target = (target_host, target_port)
        self.plan: Plan | Callable[[int], Plan] = plan or Plan()
        self.max_connections = max_connections
        self.connections: list[ProxyConnection] = []
        self.refused = 0
        self.host = "127.0.0.1"
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aenter__(self) -> FaultProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop listening, close every proxied connection, wait for every task."""
        if self._server is not None:
            self._server.close()
        for conn in self.connections:
            conn.close(reset=False)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None

    async def wait_connection(self, index: int = 0, timeout: float = 5.0) -> ProxyConnection:
        """The ``index``-th connection, once accepted."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.connections) <= index:
            if loop.time() > deadline:
                raise TimeoutError(f"no connection {index} through the proxy in {timeout} s")
            await asyncio.sleep(0.005)
        return self.connections[index]

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self.connections) >= self.max_connections:
            self.refused += 1
            writer.transport.abort()
            return
        index = len(self.connections)
        plan = self.plan(index) if callable(self.plan) else self.plan
        conn = ProxyConnection(index=index, c2s=plan.c2s, s2c=plan.s2c)
        conn._writers.append(writer)
        self.connections.append(conn)
        task = asyncio.get_running_loop().create_task(self._serve(conn, reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, conn: ProxyConnection, client_r: asyncio.StreamReader,
                     client_w: asyncio.StreamWriter) -> None:
        try:
            if _fires_at_once(conn.c2s) or _fires_at_once(conn.s2c):
                # A reset or drop before anything is forwarded: do not bother the target.
                reset = FaultKind.RESET in (conn.c2s.kind, conn.s2c.kind)
                conn.fired.set()
                conn.close(reset=reset)
                return
            try:
                server_r, server_w = await asyncio.open_connection(*self.target)
            except OSError:
                conn.close(reset=True)
                return
            conn._writers.append(server_w)
            pumps = [
                asyncio.ensure_future(self._pump(conn, Direction.C2S, client_r, server_w)),
                asyncio.ensure_future(self._pump(conn, Direction.S2C, server_r, client_w)),
            ]
            try:  # the first direction to end (EOF, drop, reset) ends the connection
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pump in pumps:
                    pump.cancel()
                await asyncio.wait(pumps)
                for pump in pumps:
                    exc = None if pump.cancelled() else pump.exception()
                    if exc is not None and not isinstance(exc, _Stop):
                        raise exc
        finally:
            conn.close()
            for writer in conn._writers:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(writer.wait_closed(), 1)
            conn.done.set()

    async def _pump(self, conn: ProxyConnection, direction: Direction,
                    src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        """Forward ``src`` to ``dst`` under the direction's (changeable) fault."""
        discarding = False
        while True:
            fault = conn.fault(direction)
            if fault.kind not in (FaultKind.PASS, FaultKind.DELAY) and conn.remaining(
                    direction) <= 0 and not discarding:
                discarding = await self._fire(conn, direction, fault, dst)
                continue
            try:
                data = await src.read(CHUNK)
            except OSError:
                data = b""
            if not data:
                return
            if discarding:
                continue
            fault = conn.fault(direction)
            if fault.kind is FaultKind.DELAY:
                await asyncio.sleep(fault.delay)
            elif fault.kind is not FaultKind.PASS:
                room = conn.remaining(direction)
                if room < len(data):
                    head, rest = data[:max(room, 0)], data[max(room, 0):]
                    await self._write(conn, direction, dst, head)
                    discarding = await self._fire(conn, direction, fault, dst)
                    if not discarding:  # a stall released by `apply`: forward the rest
                        await self._write(conn, direction, dst, rest)
                    continue
            await self._write(conn, direction, dst, data)

    async def _write(self, conn: ProxyConnection, direction: Direction,
                     dst: asyncio.StreamWriter, data: bytes) -> None:
        if not data:
            return
        dst.write(data)
        conn.forwarded[direction] += len(data)
        try:
            await dst.drain()
        except OSError:
            raise _Stop from None

    async def _fire(self, conn: ProxyConnection, direction: Direction, fault: Fault,
                    dst: asyncio.StreamWriter) -> bool:
        """Apply ``fault``; True when later bytes from the source are to be thrown away."""
        conn.fired.set()
        if fault.kind is FaultKind.STALL:
            conn._changed.clear()
            await conn._changed.wait()  # until `apply` changes the plan, or aclose
            return False
        if fault.kind is FaultKind.TRUNCATE:
            with contextlib.suppress(OSError, RuntimeError):
                if dst.can_write_eof():
                    dst.write_eof()
            return True
        conn.close(reset=fault.kind is FaultKind.RESET)
        raise _Stop


def _fires_at_once(fault: Fault) -> bool:
    return fault.kind in (FaultKind.DROP, FaultKind.RESET) and fault.after <= 0
