"""Choosing the event loop: uvloop where installed, the default loop otherwise."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["limit_default_loop_tls_buffers", "loop_factory", "run", "uvloop_available"]

T = TypeVar("T")


def uvloop_available() -> bool:
    if os.environ.get("AIODICOM_LOOP", "") == "asyncio":
        return False
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def loop_factory() -> Any:
    """uvloop's loop when available (more than twice the TLS throughput), else asyncio's.

    ``AIODICOM_LOOP=asyncio`` forces the default loop. On the default loop, the SSL read
    buffer (256 KiB per connection by default) is the memory of an idle TLS association;
    callers that hold many should lower ``asyncio.sslproto.SSLProtocol.max_size`` themselves.
    """
    if uvloop_available():
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


def limit_default_loop_tls_buffers(size: int = 16 * 1024) -> None:
    """Give each TLS connection of the default loop a ``size`` read buffer, not 256 KiB.

    asyncio's SSL transport allocates ``SSLProtocol.max_size`` (256 KiB) per connection for
    decrypted data: with thousands of idle mutual-TLS associations that buffer is most of
    the memory (~280 KB per connection at 3,000 held, ~67 KB with 32 KiB, ~52 KB with the
    default 16 KiB, one TLS record; bulk reads then take twice the recv_into calls). It is a class
    attribute, so this changes the whole process: the bundled server calls it for its own
    process; a program embedding aiodicom decides for itself. uvloop is not affected.
    """
    import asyncio.sslproto

    asyncio.sslproto.SSLProtocol.max_size = size


def run(coro: Coroutine[Any, Any, T]) -> T:
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(coro)
